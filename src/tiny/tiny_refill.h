// tiny_refill.h — the slow halves of the tls_sll_box: refill a class's list
// from the thread's current slab (local free list, then carving, then its
// drained remote list; the next slab of the thread's heap, or one from the
// Shared Pool, when it is exhausted), and flush part of a full list back to
// the slabs the blocks came from, gathered per slab.
#ifndef HAK_TINY_REFILL_H
#define HAK_TINY_REFILL_H

#include "debug/ptr_types.h"
#include "superslab/superslab.h"

// Move a batch into the TLS list of cls; 0 when out of memory.
int  tiny_refill(unsigned cls);
// Give up to n blocks of the TLS list of cls back to their slabs.
void tiny_flush(unsigned cls, uint32_t n);

#endif
