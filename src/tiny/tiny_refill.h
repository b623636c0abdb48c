// tiny_refill.h — the slow halves of the tls_sll_box: refill a class's list
// with blocks freed before, then new ones (the current slab's local free list
// and drained remote list, a partial slab's, an adopted abandoned slab's, and
// only then the current slab's uncarved end; the next slab of the thread's
// heap, or one from the Shared Pool, when it is exhausted), flush part of a
// full list back to the slabs the blocks came from, gathered per slab, and the
// remote buffers of blocks freed into other threads' slabs.
#ifndef HAK_TINY_REFILL_H
#define HAK_TINY_REFILL_H

#include "debug/ptr_types.h"
#include "superslab/superslab.h"

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
// What the calling thread's flushes do with a block of a stale remote list
// (remote_free_box.h): nothing (HOME), keep it as the thread's ticket of its
// class (KEEP: an overflow's flush, tiny_refill.c), or park it for any
// thread's next refill of the class (PARK: a thread's exit, whose tickets
// are parked too, or sent home). Returns the mode before.
enum { TICKETS_HOME = 0, TICKETS_KEEP = 1, TICKETS_PARK = 2 };
unsigned tiny_tickets_mode(unsigned mode);
// The tickets whole flushes parked (remote_free_box.h) back to their slabs:
// a trim's, so that nothing keeps a slab from its release.
void tiny_parked_tickets_home(void);
// Tickets parked now, one a class at most (a relaxed look).
uint32_t tiny_parked_tickets(void);
// Push b onto the list of cls (the calling LIVE thread's), first flushing a
// batch when the list is full (tiny_flush_overflow, tiny_refill.c). A medium
// class's bound halves first (at most TLS_SHRINK_MAX times) at the
// TLS_SHRINK_STREAK-th overflow with no refill between: a thread that only
// frees the class (a consumer) hoarded up to 512 KiB of it per class, blocks
// its producers then carved new memory for (tls_sll_box.h, cap_shift). A
// thread that takes as much as it frees overflows twice in a row half the
// time (its list's length is a random walk): halving at the second overflow
// made ws-medium halve and double back 4 595 times in 4 M operations, at the
// eighth 37 times.
void tiny_push_flushing(unsigned cls, hak_base_ptr_t b);
// Every grown bound back to its class's (tls_sll_box.h cap_grow), the lists
// flushed down to it: a thread that starts batching its frees
// (free_batch_box.h), whose own classes' overflows then tell it when to stop.
void tiny_cache_ungrow(void);
// ... the same for one class of the calling thread.
void tiny_class_ungrow(unsigned cls);
// Idle classes (tiny_refill.c look_idle_classes): every LEFT_LOOK_BYTES that
// a thread's refills take or its overflows flush (or half a second), a
// look at the classes it had no slow path of since; one whose list head and
// exchange stood still for LEFT_LOOKS looks in a row is given back.
#define LEFT_LOOK_BYTES ((uint64_t)4 << 20)
#ifndef LEFT_LOOKS
#define LEFT_LOOKS      2u
#endif
// A class given back (by that look, or as dying) that the thread refills
// within LEFT_BACK_LOOKS looks was not left: it is kept through the next
// LEFT_KEEP_LOOKS looks (tiny_refill.c note_class_back).
#define LEFT_BACK_LOOKS 2u
#define LEFT_KEEP_LOOKS 16u
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

#endif
