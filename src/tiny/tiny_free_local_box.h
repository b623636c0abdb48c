// tiny_free_local_box.h — the owner gives blocks back to its own slab.
//
// Used when a thread's TLS list overflows and the blocks belong to a slab the
// thread owns: they go onto the slab's local free list without atomics (a
// chain, tls_sll_box.h: a refill takes it back whole); `used` counts the free
// list too, so it does not change (superslab.h). Returns 1 if the slab is
// now EMPTY (every block free), so the caller can recycle it.
#ifndef HAK_TINY_FREE_LOCAL_BOX_H
#define HAK_TINY_FREE_LOCAL_BOX_H

#include "debug/ptr_types.h"
#include "stats/stats.h"
#include "superslab/superslab.h"
#include "tiny/tls_sll_box.h"

HAK_INLINE int tiny_free_local_box(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n) {
  if (BLOCK_CHAIN_RECORDS) block_set_chain(m, first, last, n, hak_base_from_raw(m->freelist));
  slab_list_push(m, first, last, n);
  return slab_live(m) == 0;
}

#endif
