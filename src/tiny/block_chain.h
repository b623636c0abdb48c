// block_chain.h — a chain of blocks being built in order, by the refill and
// flush paths of the TLS lists (tiny_refill.c, tiny_flush.c, ticket_box.c):
// first..last, n blocks, each block's link naming the next (the last one's
// link is written by whoever puts the chain on a list). Only the thread that
// builds a chain touches it.
#ifndef HAK_BLOCK_CHAIN_H
#define HAK_BLOCK_CHAIN_H

#include "debug/ptr_types.h"
#include "tiny/tls_sll_box.h"

// A chain of blocks being built in order.
typedef struct block_chain {
  hak_base_ptr_t first, last;
  uint32_t n;
} block_chain_t;

// A chain first..last of n blocks, already linked, at the end of c.
HAK_INLINE void chain_append_chain(block_chain_t *c, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n) {
  if (c->n == 0) c->first = first;
  else block_set_next(c->last, first);
  c->last = last;
  c->n += n;
}

HAK_INLINE void chain_append(block_chain_t *c, hak_base_ptr_t b) { chain_append_chain(c, b, b, 1); }

#endif
