// tiny_free_local_box.h — the owner gives blocks back to its own slab.
//
// Used when a thread's TLS list overflows and the blocks belong to a slab the
// thread owns: they go onto the slab's local free list without atomics (a
// chain, tls_sll_box.h: a refill takes it back whole); `used` counts the free
// list too, so it does not change (superslab.h). Returns 1 if the slab is
// now EMPTY (every block free: on its free list or counted on its remote
// list), so the caller can recycle it.
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
// chain of one. The same list as tiny_free_local_box(m, b, b, 1) leaves, with
// m's list read once, before the block's words are written (the general push
// loads it again after each: ~35 instructions a block, ~23 here with the
// mark; a batching thread's drain sends each block of a big heap freed at
// random this way, free_batch_box.c).
HAK_INLINE int tiny_free_local_one(slab_meta_t *m, hak_base_ptr_t b) {
  void *head = m->freelist;
  uint32_t had = slab_free_count(m);
  block_set_free(b);
  if (BLOCK_CHAIN_RECORDS) block_set_chain(m, b, b, 1, hak_base_from_raw(head));
  slab_list_push_onto(m, b, b, 1, head, had);
  uintptr_t w = slab_remote_word(m, memory_order_acquire);   // (slab_live's reads)
  return atomic_load_explicit(&m->used, memory_order_acquire) - remote_word_counted(w) == had + 1u;
}

#endif
