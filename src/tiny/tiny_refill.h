// tiny_refill.h — the slow halves of the tls_sll_box. The refill (here):
// a class's list takes blocks freed before, then new ones (the current slab's
// local free list and drained remote list, a partial slab's, an adopted
// abandoned slab's, and only then the current slab's uncarved end; the next
// slab of the thread's heap, or one from the Shared Pool, when it is
// exhausted). The flush (tiny_flush.h): part of a full list back to the slabs
// the blocks came from, gathered per slab, and the remote buffers of blocks
// freed into other threads' slabs. Tickets (ticket_box.h) and the classes a
// thread gives back (idle_class_box.h) serve both. Included for all of them.
#ifndef HAK_TINY_REFILL_H
#define HAK_TINY_REFILL_H

#include "debug/ptr_types.h"
#include "stats/stats.h"
#include "superslab/superslab.h"
#include "tiny/idle_class_box.h"
#include "tiny/ticket_box.h"
#include "tiny/tiny_flush.h"
#include "tiny/tiny_heap.h"
#include "tiny/tls_sll_box.h"

// Move a batch into the TLS list of cls; 0 when out of memory.
int  tiny_refill(unsigned cls);
// A thread's first refill of a class moves at most this many blocks (its
// later refills a batch): a thread that takes one or two blocks of each of a
// dozen classes and exits carved or took a page's worth of each, and its exit
// walked them all back (churn -c 16 -k 16: 38.4 k -> 33.5 k instructions a
// thread under callgrind; 2 and 8 blocks 34.5 k and 34.4 k). A class a thread
// does use pays one more refill. Not in the hardened build, whose refill
// shuffles the blocks it takes (randomised reuse: the next address would be
// one of 4).
#define FIRST_REFILL_BLOCKS 4u
// A refill of n blocks in this thread's counters (tiny/ only: the refill,
// a ticket's, a hand-over chain taken back).
HAK_INLINE void count_refill(const tls_cache_t *tc, unsigned cls, uint32_t n) {
  t_heap_p->left_bytes += (uint64_t)n * g_size_class[cls].size;   // what it took (note_slow_path)
  hak_class_counters_t *k = &hak_counters()->cls[cls];
  k->refills++;
  k->refill_blocks += n;
  k->cached = tls_cached(tc, cls);
}

#endif
