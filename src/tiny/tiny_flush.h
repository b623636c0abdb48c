// tiny_flush.h — the flush half of the tls_sll_box: part of a full TLS list
// (an overflow's batch) or all of a class's (an exit, a trim, an idle class)
// goes back to the slabs its blocks came from, gathered per slab: a run of
// the thread's own slab onto its local free list at once (no atomic), one
// chain per other thread's slab onto its remote list (one CAS), other
// threads' blocks of 1 KiB or less to the class exchange while it has room.
// Also the remote buffers (another thread's blocks under a cache line, sent
// home in batches) and the hand-over chains of a batching consumer.
// Only the owning thread touches its lists and buffers.
#ifndef HAK_TINY_FLUSH_H
#define HAK_TINY_FLUSH_H

#include <stdint.h>

#include "debug/ptr_types.h"
#include "superslab/superslab.h"
#include "tiny/tiny_heap.h"
#include "tiny/tls_sll_box.h"

// Give up to n blocks of the TLS list of cls back to their slabs. A flush of
// an overflowing list (n <= the class's batch) hands the other threads' blocks
// of 1 KiB or less to the class exchange instead, while it has room
// (transfer_box.h), and tiny_refill takes a chain from there before it turns
// to partial slabs or carves.
// A whole flush (n = UINT32_MAX: exit, trim, an idle class) sends the
// class's hand-over chain (tiny_handover) too.
// Returns how many of the blocks were other threads' (to the exchange or
// their slabs' remote lists).
uint32_t tiny_flush(unsigned cls, uint32_t n);
// A whole flush of every class, with no look at the purge budget: the
// caller looks once after (shared_pool_maybe_purge).
void tiny_flush_all(void);
// Push b onto the list of cls (the calling LIVE thread's), first flushing a
// batch when the list is full (tiny_flush_overflow). A medium
// class's bound halves first (at most TLS_SHRINK_MAX times) at the
// TLS_SHRINK_STREAK-th overflow with no refill between: a thread that only
// frees the class (a consumer) hoarded up to 512 KiB of it per class, blocks
// its producers then carved new memory for (tls_sll_box.h, cap_shift). A
// thread that takes as much as it frees overflows twice in a row half the
// time (its list's length is a random walk): halving at the second overflow
// made ws-medium halve and double back 4 595 times in 4 M operations, at the
// eighth 37 times.
void tiny_push_flushing(unsigned cls, hak_base_ptr_t b);
// A batching thread's drain found the list of tiny class cls full (room 0)
// and holds a block of its own slab: what an overflow's flush looks at (the
// bound, the idle classes, the purge clock) without the flush, whose walk
// would read every block it sends home a second time. Returns how many such
// blocks may go straight to their slabs (tiny_free_local_one) before the
// next look: a batch; 0 if the list has room again.
uint32_t tiny_overflow_home(unsigned cls) HAK_NOINLINE;
// Every grown bound back to its class's (tls_sll_box.h cap_grow), the lists
// flushed down to it: a thread that starts batching its frees
// (free_batch_box.h), whose own classes' overflows then tell it when to stop.
void tiny_cache_ungrow(void);
// ... the same for one class of the calling thread.
void tiny_class_ungrow(unsigned cls);
// Send every hand-over chain of the calling thread home (tiny_handover; a
// heap parked at its thread's exit, tiny_thread.c).
void tiny_handover_send_all(void);
// Send every chain in the class exchanges home (hak_trim, hak_thread_flush).
void tiny_flush_exchange(void);
// Send chains of the class exchange home until each class holds at most
// `limit` (at least 1): a thread's exit, with the threads that stay.
void tiny_exchange_trim(uint32_t limit);
// Free a block of a slab another thread owns (or nobody does): it waits in
// this thread's remote buffer of its class, never handed out here (no
// false sharing between threads), and goes home with the buffer's next
// flush, gathered per slab: one CAS per slab and batch.
void tiny_free_remote(unsigned cls, hak_base_ptr_t b);
// Send the remote buffer of cls (< TINY_REMOTE_CLASSES) home now.
void tiny_flush_remote(unsigned cls);
// Does a freed block of slab m go on the calling thread's TLS list: its own
// slab's, or another thread's of a cache line or more (tcmalloc: it stays in
// this core's cache). Another thread's smaller block shares its line with
// blocks that thread uses (passive false sharing, bench fs-scratch): it waits
// in the remote buffer and goes home in a batch. (A block of 64 bytes or more
// shares at most its two edge lines: measured as the better trade on cross-2,
// see CURRENT_TASK.) The free fast path makes the same test with owner keys;
// a batching thread's drain keeps them all (free_batch_drain).
HAK_INLINE int tiny_block_stays_here(const slab_meta_t *m, uintptr_t self) {
  return m->block_size >= HAK_SEND_HOME_BELOW || atomic_load_explicit(&m->owner, memory_order_relaxed) == self;
}
// Free b, a block start of slab m that is not marked free (the mark tested),
// when the free fast path cannot push it: another thread's block of less
// than a cache line (to the remote buffer), a full list (flushed first), a
// thread not set up yet or past its exit hook. Also the batched frees'
// way in (free_batch_box.h).
void tiny_free_checked(slab_meta_t *m, hak_base_ptr_t b) __attribute__((noinline));
// On a batching thread's drain: b, a checked block of another thread's slab
// of medium class cls that this thread only frees (its bound shrunk), joins
// the class's hand-over chain, marked free, which goes to the class exchange
// (or home) when it holds the class's batch; a refill of cls takes it back.
// A consumer's list overflows walked blocks pushed many frees before, most
// of them out of its cache by then (80% of flush_gather's samples on the
// link's load): prodcons -t 4 of 1-32 KiB 0.66x the time (CURRENT_TASK,
// twenty-seventh session).
void tiny_handover(unsigned cls, hak_base_ptr_t b);
// Free b, a checked block of slab m, for a thread past its exit hook (THREAD_DONE):
// straight onto the slab's remote list, nothing cached in the thread.
void tiny_free_after_exit(slab_meta_t *m, hak_base_ptr_t b);

// Inside tiny/: a run of blocks of slab m (the calling thread's own),
// first..last, n of them linked in order, onto its local free list; the slab
// leaves the heap's lists for the pool if that emptied it.
void flush_deliver_own(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n);
// A chain first..last of cls (linked, marked free) home, gathered per slab.
void send_chain_home(unsigned cls, hak_base_ptr_t first, hak_base_ptr_t last);
// Every chain of cls's exchange home (an idle class).
void exchange_send_home(unsigned c);
// A refill of cls takes this thread's own hand-over chain first, when the
// list has room for it (else the chain goes to the exchange); 1 if it did.
int handover_take(tls_cache_t *tc, tiny_heap_t *h, unsigned cls, uint32_t room);

#endif
