// tiny_free_local_box.h — the owner gives blocks back to its own slab.
//
// Used when a thread's TLS list overflows and the blocks belong to a slab the
// thread owns: they go onto the slab's local free list without atomics on the
// list; the live count drops with one atomic per chain. Returns 1 if the slab
// is now EMPTY (every block free), so the caller can decide to recycle it.
#ifndef HAK_TINY_FREE_LOCAL_BOX_H
#define HAK_TINY_FREE_LOCAL_BOX_H

#include "debug/ptr_types.h"
#include "superslab/superslab.h"

HAK_INLINE int tiny_free_local_box(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n) {
  *(void **)hak_base_raw(last) = m->freelist;
  m->freelist = hak_base_raw(first);
  return atomic_fetch_sub_explicit(&m->used, n, memory_order_acq_rel) == n;
}

#endif
