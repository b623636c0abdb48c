// shared_pool_internal.h — state shared by the acquire and release halves of
// the Shared Pool. Lock order: g_purge_lock, then g_alloc_lock.
#ifndef HAK_SHARED_POOL_INTERNAL_H
#define HAK_SHARED_POOL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "shared_pool/shared_pool.h"
#include "superslab/ss_registry.h"

extern pthread_mutex_t g_alloc_lock;   // pool lists, free masks, registry changes
extern pthread_mutex_t g_purge_lock;   // one purge pass at a time

// Per-class partial stacks: low 32 bits the top slab id, high 32 an ABA tag.
extern _Atomic uint64_t g_partial[HAK_NUM_CLASSES];
// Per-kind list of SuperSlabs with FREE slabs, and how many are all FREE.
extern superslab_t *g_pool_head[HAK_SLAB_KINDS];
extern uint32_t g_empty_ss_count[HAK_SLAB_KINDS];
extern _Atomic size_t g_dirty_bytes;     // EMPTY slab bytes not yet purged
extern _Atomic size_t g_ss_live, g_ss_mapped_total, g_ss_unmapped_total;

HAK_INLINE uint32_t ss_all_slabs_mask(const superslab_t *ss) {
  return ss->nslabs == 32 ? 0xffffffffu : ((1u << ss->nslabs) - 1u);
}

// Pop the top of a class's partial stack (exclusive ownership of the slab).
slab_meta_t *partial_pop(unsigned cls);
// Push a chain of slab ids first..last (already linked through g_slab_next).
void partial_push_chain(unsigned cls, uint32_t first, uint32_t last);

// Mark an EMPTY slab's pages as possibly resident / no longer so.
void slab_mark_dirty(slab_meta_t *m);
void slab_clear_dirty(slab_meta_t *m);

// pool list maintenance (alloc_lock held)
void pool_list_add(superslab_t *ss);
void pool_list_remove(superslab_t *ss);

#endif
