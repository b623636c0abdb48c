// superslab.h — the layout of a SuperSlab and of one slab's metadata.
//
// A SuperSlab is a 2 MiB mapping aligned to 2 MiB. Its first two pages hold this
// header (including the metadata of every slab); the rest is cut into slabs of
// one size, chosen by the SuperSlab's kind: 32 slabs of 64 KiB, 4 of 512 KiB or
// 1 of 2 MiB. Slab 0 starts after the header pages and is two pages shorter.
// free(p) finds its slab by address arithmetic: p & ~(2 MiB - 1) is the
// SuperSlab, (p - ss) >> slab_shift is the slab index. The registry
// (ss_registry.h) says whether that address is a live SuperSlab before any of
// this is trusted.
//
// Slab life cycle (slab_meta_t.state, low byte; the upper 24 bits are a
// generation bumped each time the slab goes back to the pool, so a stale CAS
// can never act on a later life of the slab):
//   FREE          in the Shared Pool, bound to no class (shared_pool_release_slab)
//   ACTIVE        bound to a class and owned by one thread (its current slab)
//   DETACHED      bound, no owner, no free block known: not in any list
//   LISTED        bound, no owner, has free blocks: on its class's partial stack
//   EMPTY_LISTED  LISTED with every block free (used == 0): reusable for the
//                 class at once, returned to the pool by the purge pass
#ifndef HAK_SUPERSLAB_H
#define HAK_SUPERSLAB_H

#include <stdatomic.h>
#include <stddef.h>

#include "debug/hak_base.h"
#include "tiny/size_class.h"

#define SS_SHIFT        21
#define SS_SIZE         ((size_t)1 << SS_SHIFT)
#define SS_MASK         (SS_SIZE - 1)
#define SS_HEADER_SIZE  8192u     // header + 32 slab metas of 128 B, in whole pages
#define SS_MAX_SLABS    32u
#define SS_MAGIC        0x48414b53u   // "HAKS"

enum slab_state {
  SLAB_FREE = 0,
  SLAB_ACTIVE = 1,
  SLAB_DETACHED = 2,
  SLAB_LISTED = 3,
  SLAB_EMPTY_LISTED = 4,
};
// Owner of a FREE slab: never a thread id, so a free into a slab that went
// back to the pool fails the fast path's owner check and is reported.
#define SLAB_OWNER_POOL    ((uintptr_t)1)

#define SLAB_STATE(w)      ((w) & 0xffu)
#define SLAB_GEN(w)        ((w) & ~0xffu)
#define SLAB_WITH(w, st)   (SLAB_GEN(w) | (uint32_t)(st))

// Two cache lines: the first is what free() reads on every call and what the
// owner writes; the second is what other threads write (remote frees, the
// live count, state changes), so their writes do not evict the first line
// from the owner's cache.
typedef struct slab_meta {
  // -- read on every free; written when the slab changes hands, or by its owner
  char              *base;        // first block of the slab (fixed)
  _Atomic uintptr_t  owner;       // owning thread's id (thread_self_id), 0, or SLAB_OWNER_POOL
  uint32_t           block_size;  // size of the class bound now
  uint32_t           size_magic;  // the class's magic (size_class.h), for the free check
  uint16_t           cls;         // size class bound now
  uint16_t           capacity;    // blocks in the slab for that class
  uint8_t            index;       // position in the SuperSlab
  _Atomic uint8_t    dirty;       // pages may be resident while the slab is EMPTY
  uint8_t            reserved0[2];
  void              *freelist;    // owner only: blocks freed back by the owner, or drained
  char              *carve;       // owner only: next never-handed-out block
  uint8_t            pad0[16];
  // -- written by other threads
  _Atomic(void *)    remote_head __attribute__((aligned(64))); // remote_free_box (LIFO)
  _Atomic uint32_t   used;        // blocks handed out (to TLS lists or the program)
  _Atomic uint32_t   state;       // generation | enum slab_state
  uint8_t            pad1[48];
} slab_meta_t;
_Static_assert(sizeof(slab_meta_t) == 128, "a slab's metadata is two cache lines");
_Static_assert(offsetof(slab_meta_t, remote_head) == 64, "what other threads write starts the second line");

typedef struct superslab {
  uint32_t           magic;       // SS_MAGIC while mapped
  uint32_t           index;       // slot in the registry's table
  uint8_t            kind;        // HAK_KIND_*
  uint8_t            slab_shift;  // log2 of the slab size
  uint8_t            nslabs;      // slabs in this SuperSlab
  uint8_t            in_pool;     // on the pool's list of SuperSlabs with FREE slabs
  uint32_t           free_mask;   // FREE slabs (alloc_lock)
  struct superslab  *pool_next;   // pool list links (alloc_lock)
  struct superslab  *pool_prev;
  uint64_t           empty_since_ms; // when every slab became FREE (alloc_lock)
  uint8_t            pad[64 - 40];
  slab_meta_t        slabs[SS_MAX_SLABS] __attribute__((aligned(64)));
} superslab_t;
_Static_assert(sizeof(superslab_t) <= SS_HEADER_SIZE, "the header fits in SS_HEADER_SIZE");
_Static_assert(SS_SIZE == (1u << SS_SHIFT), "SuperSlab size is a power of two");

extern const uint8_t g_kind_slab_shift[HAK_SLAB_KINDS];

HAK_INLINE superslab_t *ss_of(const void *p) { return (superslab_t *)((uintptr_t)p & ~(uintptr_t)SS_MASK); }
HAK_INLINE superslab_t *ss_of_meta(const slab_meta_t *m) { return ss_of(m); }
HAK_INLINE slab_meta_t *ss_slab_of(superslab_t *ss, const void *p) {
  return &ss->slabs[((uintptr_t)p - (uintptr_t)ss) >> ss->slab_shift];
}
HAK_INLINE size_t ss_slab_bytes(const superslab_t *ss, unsigned idx) {
  size_t sz = (size_t)1 << ss->slab_shift;
  return idx == 0 ? sz - SS_HEADER_SIZE : sz;
}
HAK_INLINE char *ss_slab_start(superslab_t *ss, unsigned idx) {
  return (char *)ss + (idx == 0 ? SS_HEADER_SIZE : ((size_t)idx << ss->slab_shift));
}
// Slab ids name a slab in lock-free lists: 1 + registry index * 32 + slab index.
HAK_INLINE uint32_t slab_id(const slab_meta_t *m) {
  return 1u + ss_of_meta(m)->index * SS_MAX_SLABS + m->index;
}

// Map and lay out a new SuperSlab of a kind, every slab FREE; not yet
// registered. NULL if the OS refuses. Called without alloc_lock held.
superslab_t *superslab_allocate(unsigned kind);
// Unmap a SuperSlab that the registry no longer knows.
void superslab_unmap(superslab_t *ss);

#endif
