// init.c — process start-up and shutdown (see init.h).
#include "core/init.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "config/config.h"
#include "core/hardened.h"
#include "core/stats_report.h"
#include "large/huge.h"
#include "large/page_heap.h"
#include "os/os.h"
#include "shared_pool/shared_pool.h"
#include "stats/stats.h"
#include "tiny/thread_record.h"
#include "tiny/tiny_thread.h"
#include "tiny/transfer_box.h"

// Not started, running, done. Not started is not 0, so the word lies in
// .data, on the page the loader's relocations have already written: a load
// is the first access to it, and on a page of .bss that load mapped the zero
// page and the CAS after it copied it, two page faults at every process start
// where the page's first write is one (perf -e page-faults -d: /bin/true's
// two faults at g_init_state).
enum { INIT_NOT_STARTED = 1, INIT_RUNNING = 2, INIT_DONE = 3 };
static _Atomic int g_init_state = INIT_NOT_STARTED;
static _Atomic uintptr_t g_init_thread;

// fork(): every lock, in one order — the thread records' pool (a new chunk
// of records may be mapped under it, and a refused mapping gives back what
// the pools below keep), the class exchange's, the Shared Pool's (purge, then each
// kind's pool lock, then the registry's), the page heap's, the huge table's,
// then the counters' live list — released in reverse in the parent; the
// child, whose only thread took them, releases them the same way. That is
// 52 mutexes held at once (41 of them the class exchange's: the classes it
// takes, up to HAK_MEDIUM_MAX; 63 while every class's lock was taken), under
// the 64 ThreadSanitizer's deadlock detector follows (make test-stress-tsan
// stopped on a CHECK at 64): a new lock that fork must hold needs room there.
//
// A process that never started a thread (glibc's __libc_single_threaded: a
// shell, make, a Python script forking its subprocesses) skips all of it:
// no other thread can hold a lock, and the child's state is the parent's. A
// fork write-protects every private page of the parent, so each page the
// handlers write after it is a page fault in the parent and one in the
// child: when the locks sat on ~9 pages, a fork and a child that exits at
// once took 37 faults against glibc's 19, and bench/spawn 1.31x the time.
// (A threaded process's forks still take the locks, on 3 pages since: the
// small variables', the arenas' gates, the class exchange's; test_process
// --threaded-fork.)
// (A fork from a signal handler that interrupted malloc then goes through,
// where the prepare handler deadlocked on the interrupted call's lock; a
// child that needs that lock hangs on it instead: tests/stress/faults.c.)
static int g_fork_locked;   // fork_prepare took the locks (read, never written, after the fork;
                            // before it, written only when it changes)

static void fork_prepare(void) {
  // Stored only when it changes: the page it lies on is write-protected by
  // every fork, so a store at each one was a page fault a fork in the parent
  // (3 a fork and a child that exits at once, glibc's malloc 2; bench/spawn
  // 1.1x glibc's time).
  int locked = !os_process_single_threaded();
  if (g_fork_locked != locked) g_fork_locked = locked;
  if (!locked) return;
  thread_record_fork_prepare();
  transfer_fork_prepare();
  shared_pool_fork_prepare();
  page_heap_fork_prepare();
  huge_fork_prepare();
  hak_counters_fork_prepare();
}
int hak_locks_settle(unsigned ms) {
  struct timespec by;
  clock_gettime(CLOCK_REALTIME, &by);
  by.tv_sec += ms / 1000u;
  by.tv_nsec += (long)(ms % 1000u) * 1000000L;
  if (by.tv_nsec >= 1000000000L) { by.tv_sec++; by.tv_nsec -= 1000000000L; }
  return thread_record_locks_settle(&by) && transfer_locks_settle(&by) && shared_pool_locks_settle(&by) &&
         page_heap_locks_settle(&by) && huge_locks_settle(&by) && hak_counters_locks_settle(&by);
}

static void fork_parent(void) {
  if (!g_fork_locked) return;
  hak_counters_fork_parent();
  huge_fork_parent();
  page_heap_fork_parent();
  shared_pool_fork_parent();
  transfer_fork_parent();
  thread_record_fork_parent();
}
static void fork_child(void) {
  if (!g_fork_locked) return;
  thread_fork_child();            // releases the counters' lock and the records' pool
  huge_fork_child();
  page_heap_fork_child();
  shared_pool_fork_child();
  transfer_fork_child();
  superslab_fork_child();
}

// Out of address space (os_map_aligned refused): the page heap's empty regions,
// kept mapped until a purge pass, and the hardened build's freed huge
// mappings kept PROT_NONE go back. Neither waits for a lock.
static int release_address_space(void) {
  int released = page_heap_release_empty();
#if HAK_HARDENED
  released |= huge_release_graves();
#endif
  return released;
}

void hak_init_once(void) {
  // acquire: a thread that sees INIT_DONE sees everything the initialiser wrote.
  if (HAK_LIKELY(atomic_load_explicit(&g_init_state, memory_order_acquire) == INIT_DONE)) return;
  int expected = INIT_NOT_STARTED;
  if (!atomic_compare_exchange_strong(&g_init_state, &expected, INIT_RUNNING)) {
    // Running: a recursive call from inside init (pthread_atfork may
    // allocate) goes on; another thread waits for it to finish.
    if (atomic_load(&g_init_thread) == hak_thread_pointer()) return;
    while (atomic_load_explicit(&g_init_state, memory_order_acquire) != INIT_DONE) sched_yield();
    return;
  }
  atomic_store(&g_init_thread, hak_thread_pointer());
  hak_config_load();
  hak_stats_keep_stderr();
  tls_sll_seed_cookie(os_random_seed());
  tls_sll_init_offsets();
  thread_key_init();
#if HAK_HARDENED
  hak_hardened_init();
#endif
  os_on_address_pressure(release_address_space);
  pthread_atfork(fork_prepare, fork_parent, fork_child);
  // release: pairs with the acquire loads above.
  atomic_store_explicit(&g_init_state, INIT_DONE, memory_order_release);
}

__attribute__((constructor)) static void hak_constructor(void) { hak_init_once(); }

__attribute__((destructor)) static void hak_destructor(void) {
#if HAK_HARDENED
  hak_hardened_at_exit();
#endif
  hak_stats_at_exit();
}
