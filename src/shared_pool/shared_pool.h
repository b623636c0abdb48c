// shared_pool.h — the unified Shared Pool: where slabs come from and go back to.
//
// Acquire (hak_tiny_alloc_superslab_box's backend) runs three stages:
//   1. lock-free: pop a LISTED or EMPTY_LISTED slab from the class's partial
//      stack (a Treiber stack of slab ids with an ABA tag);
//   2. under alloc_lock: a FREE (EMPTY) slab of any SuperSlab of the class's
//      kind, rebound to the class;
//   3. a new SuperSlab mapped with alloc_lock RELEASED (the seed's deadlock
//      fix), then registered under it.
// Release: a slab whose live count reached zero while nobody owned it is
// returned to the pool for any class (shared_pool_release_slab); EMPTY slabs
// still on a partial stack are moved there by the purge pass. SuperSlabs whose
// slabs are all FREE are unmapped, keeping a few (hysteresis); dirty EMPTY
// memory is purged after a delay, decided on slow paths (no thread).
#ifndef HAK_SHARED_POOL_H
#define HAK_SHARED_POOL_H

#include "superslab/superslab.h"

// A slab bound to cls, ACTIVE and owned by `owner`; NULL when out of memory.
slab_meta_t *shared_pool_acquire_slab(unsigned cls, uintptr_t owner);
// Give an owned slab up (its owner moves on or exits).
void shared_pool_detach_slab(slab_meta_t *m);
// Put a slab that just became LISTED on its class's partial stack.
void shared_pool_list_partial(slab_meta_t *m);
// SLAB_TRY_RECYCLE: called by whoever saw m->used reach zero.
void shared_pool_slab_empty(slab_meta_t *m);
// Return a slab (state already FREE, exclusively held) to the pool.
void shared_pool_release_slab(slab_meta_t *m);

// Purge dirty EMPTY memory if enough has piled up or it has waited long enough
// (cheap when there is nothing to do; call from slow paths).
void shared_pool_maybe_purge(void);
// Return every unused page now; 1 if anything was released.
int  shared_pool_trim(void);

// fork(): take every pool lock (prepare), release (parent), reset (child).
void shared_pool_fork_prepare(void);
void shared_pool_fork_parent(void);
void shared_pool_fork_child(void);

typedef struct shared_pool_stats {
  size_t superslabs, superslab_bytes, slabs_in_use, slabs_free;
  size_t in_use_bytes, free_bytes, mapped_total, unmapped_total;
} shared_pool_stats_t;
void shared_pool_get_stats(shared_pool_stats_t *out);

#endif
