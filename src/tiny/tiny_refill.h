// tiny_refill.h — the slow halves of the tls_sll_box: refill a class's list
// from the thread's current slab (local free list, then carving, then its
// drained remote list; a new slab from the Shared Pool when it is exhausted),
// and flush part of a full list back to the slabs the blocks came from.
#ifndef HAK_TINY_REFILL_H
#define HAK_TINY_REFILL_H

#include "debug/ptr_types.h"
#include "superslab/superslab.h"

// Move a batch into the TLS list of cls; 0 when out of memory.
int  tiny_refill(unsigned cls);
// Give up to n blocks of the TLS list of cls back to their slabs.
void tiny_flush(unsigned cls, uint32_t n);
// Free one block of a slab owned by another thread (remote free).
void tiny_free_remote(slab_meta_t *m, hak_base_ptr_t b);

// Report a double free of b (a block of slab m) and abort.
void tiny_report_double_free(hak_base_ptr_t b, const slab_meta_t *m) __attribute__((cold));

#endif
