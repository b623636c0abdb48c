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

// One block b of m, not marked free yet, onto m's local free list: marked, a
// chain of one (its record, then its link to the list's first chain). The
// same list as tiny_free_local_box(m, b, b, 1) leaves, in ~23 instructions
// with the mark where that takes ~35 without it (a batching thread's drain
// sends each block of a big heap freed at random this way, free_batch_box.c).
HAK_INLINE int tiny_free_local_one(slab_meta_t *m, hak_base_ptr_t b) {
  uintptr_t *w = (uintptr_t *)hak_base_raw(b), key = block_link_key(b);
  void *head = m->freelist;
  uint32_t n = head != NULL ? m->free_n : 0u;
  uintptr_t link = (uintptr_t)(head != NULL ? head : hak_base_raw(slab_list_end(m)));
  w[1] = block_free_mark(b);
  if (BLOCK_CHAIN_RECORDS && !block_chain_packed(m)) {   // (a 16-byte chain of one is its link)
    w[2] = ((uintptr_t)w | (uintptr_t)1 << BLOCK_CHAIN_LEN_SHIFT) ^ key;
    w[3] = (uintptr_t)head ^ key;
  }
  w[0] = link ^ key;
  m->free_n = (uint16_t)(n + 1u);
  m->freelist = w;
  return atomic_load_explicit(&m->used, memory_order_acquire) == n + 1u;
}

#endif
