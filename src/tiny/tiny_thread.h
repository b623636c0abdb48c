// tiny_thread.h — a thread's life in the allocator: set up on its first slow
// path (TLS list bounds, counters, exit hook), torn down by a pthread key
// destructor when it exits (every cached block flushed, every slab abandoned
// to the Shared Pool, the stash given back; or, for a small heap, all of it
// parked in its record for the next thread that starts: tiny_thread.c). Free and malloc keep working
// after the teardown (glibc and later key destructors call them): a free goes
// straight home, a malloc sets the thread up for that one block and tears it
// down again (core/hakmem.c: alloc_after_exit), so nothing stays cached or
// owned by a thread that no hook will visit again.
#ifndef HAK_TINY_THREAD_H
#define HAK_TINY_THREAD_H

#include "tiny/tiny_heap.h"
#include "tiny/tls_sll_box.h"

// Process start-up (core/init.c) creates the key whose destructor calls
// thread_teardown.
void thread_key_init(void);

// Make the calling thread LIVE (a thread record, TLS bounds, counters, exit
// hook): 1, or 0 when no memory for its record could be mapped (the thread
// stays as it was). The process is initialised first by the caller
// (core/init.h: thread_ready).
int thread_setup(void);
// Give every cached block and owned slab back (thread exit, hak_thread_flush).
void thread_release_all(void);
// thread_release_all, then DONE: off the live count and the counters' list
// (the exit hook, and after a malloc past it).
void thread_teardown(void);

// Give back the heaps parked at threads' exits (tiny_thread.c) that waited
// THREAD_PARK_DELAYS purge delays, or every one (`all`: malloc_trim); the
// calling thread must be LIVE (else nothing happens).
void thread_parked_expire(int all);

// fork() child: the calling thread is the only one left (also releases the
// record pool's lock, thread_record_fork_prepare).
void thread_fork_child(void);

// Per-thread caches hold more of the process's memory the more threads there
// are: ring at 16 threads held ~5 MB on its lists (peak RSS 1.13-1.22x
// mimalloc's with the class exchange, 1.04x at half the small classes'
// bound). A thread's small classes get 1/2^share of TLS_CACHE_BYTES, share 0
// up to TINY_CACHE_FULL_THREADS live threads, 1 up to twice that, 2 beyond.
// (A list's random walk hits its ends four times as often at half the bound:
// 16 workers and a main thread at a quarter took 16x the refills and flushes
// of ws-small; 12 keeps such a process at half.)
#define TINY_CACHE_FULL_THREADS 12u
unsigned tiny_cache_share(void);
// Threads LIVE now (set up, not torn down).
uint32_t tiny_threads_live(void);
// Refill and flush call this first: when the share changed since the thread
// last looked, its bounds follow (a list over its new bound is flushed).
void tiny_cache_rescale(void);

#endif
