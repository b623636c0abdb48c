// thread_record.h — the per-thread state only slow paths touch (a thread's
// heap and its counters), in a record taken from a process-wide pool when the
// thread is set up and given back when it is torn down.
//
// Static TLS is what glibc copies and clears in every new thread, in a fresh
// stack mapping unless its stack cache had one: with the heap (3 KB) and the
// counters (3.2 KB) there, hakmem's 9.6 KB made each thread start touch ~1.5
// more pages than glibc's malloc (1 600 threads started 16 at a time: 4 930
// page faults against 2 480, 1.2x the time). What stays in static TLS is what
// the fast paths read (the TLS lists, tls_sll_box.h; the free batch's flag)
// and the pointers to the record; a record from an exited thread is already
// resident when the next thread takes it.
//
// Records are carved one at a time from mappings of THREAD_RECORD_CHUNK
// records and never unmapped (a remote freer may read a record's wake list
// while its owner is LIVE; the owner waits for it before it gives the record
// back, tiny_heap.h). Invariants: a record on the pool's free list has an empty
// heap (no slab, no stash, no remote block, wake list NULL), no ticket and
// zeroed counters; a LIVE thread owns exactly one record (t_heap_p, t_counters_p).
#ifndef HAK_THREAD_RECORD_H
#define HAK_THREAD_RECORD_H

#include "stats/stats.h"
#include "tiny/tiny_heap.h"
#include "tiny/tls_sll_box.h"

typedef struct thread_record {
  tiny_heap_t              heap;        // cache-line aligned (its wake list)
  hak_thread_counters_t    counters;
  struct thread_record    *next_free;   // the pool's free list (its lock)
  // While parked (tiny_thread.c thread_park): the t_tls_cache its thread
  // left, lists and bounds, put back by the thread that takes the record
  // (owner keys and id set anew), and when it was parked.
  tls_cache_t              parked;
  uint64_t                 parked_ms;
  // Per class, a block kept back from a chain sent to another thread's slab
  // whose remote list waited stale (remote_free_box.h), or NULL: the heap's
  // next refill of the class takes it and a batch of that list
  // (ticket_box.c). Marked free and counted out of its slab, as a block on a
  // TLS list is; a whole flush sends it home, or parks it (the thread's
  // exit). Past the counters: written only then.
  hak_base_ptr_t           ticket[HAK_NUM_CLASSES];
} thread_record_t;
_Static_assert(offsetof(thread_record_t, heap) == 0, "a thread's heap pointer is its record's (thread_record_of)");
// What a thread's set-up and first refills write lies on the record's first
// two pages of three (each page of a fresh record is a fault at a program's
// or a thread's start): the heap's fields up to its remote buffer on the
// first, the counters' links and used classes' counts on the second. The
// remote buffer and the wake line (only cross-thread frees write them), the
// STATS build's sites and the pool's link (written only when a record is
// given back) lie past them.
_Static_assert(offsetof(thread_record_t, heap.remote_buf) <= 4096 &&
               offsetof(tiny_heap_t, wake) - offsetof(tiny_heap_t, remote_buf) < sizeof(((tiny_heap_t *)0)->remote_buf) + 64,
               "the heap's set-up fields on the first page, the remote buffer after them");
_Static_assert(offsetof(thread_record_t, counters.linked) < 8192 &&
               offsetof(thread_record_t, counters.cls) + HAK_NUM_CLASSES * sizeof(hak_class_counters_t) <= 8192,
               "the counters a thread writes on the second page");

// The record whose heap h is.
HAK_INLINE thread_record_t *thread_record_of(tiny_heap_t *h) { return (thread_record_t *)(void *)h; }

// Records mapped at once when the pool's free list is empty.
#define THREAD_RECORD_CHUNK 16u

// A clean record for the calling thread's set-up: the most recently given
// back (the likeliest to be in a cache), else a new one. NULL when no memory
// can be mapped.
thread_record_t *thread_record_take(void);
// r (its heap emptied, its counters summed and zeroed) back to the pool.
void thread_record_give_back(thread_record_t *r);

// Parked records (tiny_thread.c): a thread's exit may leave its record with
// everything in it, its heap's slabs (owned by the heap's id all along) and
// its lists, for the next thread that starts. At most `max` wait, the latest
// taken first; each keeps its counters on the live list.
// A place for one more parked record, held until thread_record_park puts it
// there: 1, or 0 when `max` are parked or held.
int thread_record_park_reserve(uint32_t max);
// r (its lists in r->parked, its time in r->parked_ms) in the place reserved for it.
void thread_record_park(thread_record_t *r);
// The latest parked record, out of the pool; NULL if none is.
thread_record_t *thread_record_take_parked(void);
// The parked record that waited longest, out of the pool, when it was parked
// at `before` or earlier (UINT64_MAX: whenever); NULL if none did.
thread_record_t *thread_record_take_parked_since(uint64_t before);
// Records parked now (a relaxed read).
uint32_t thread_records_parked(void);

// fork(): the pool's lock around fork; the records of the parent's other
// threads stay taken in the child (as their TLS stayed before).
void thread_record_fork_prepare(void);
struct timespec;
// The records' lock free by `by` (os_mutex_settles; the exit report's check).
int thread_record_locks_settle(const struct timespec *by);
void thread_record_fork_parent(void);
void thread_record_fork_child(void);

#endif
