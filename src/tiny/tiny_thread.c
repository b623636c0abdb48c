// tiny_thread.c — thread set-up and tear-down (see tiny_thread.h).
#include "tiny/tiny_thread.h"

#include <pthread.h>
#include <sched.h>

#include "config/config.h"
#include "hakmem.h"
#include "large/huge.h"
#include "large/page_heap.h"
#include "os/os.h"
#include "shared_pool/shared_pool.h"
#include "stats/stats.h"
#include "tiny/tiny_refill.h"

__thread tls_cache_t t_tls_cache __attribute__((tls_model("initial-exec")));
__thread thread_state_t t_thread __attribute__((tls_model("initial-exec")));

static pthread_key_t g_thread_key;
static _Atomic int g_init_state;          // 0 not started, 1 running, 2 done
static _Atomic uintptr_t g_init_thread;

static void thread_key_destructor(void *value) {
  (void)value;
  if (t_thread.status != THREAD_LIVE) return;
  thread_release_all();
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) t_tls_cache.room[c] = 0;
  t_thread.status = THREAD_DONE;
  atomic_fetch_sub_explicit(&g_stat_threads_live, 1, memory_order_relaxed);
}

// fork(): every lock, in one order: purge_lock, alloc_lock (shared pool), the
// page heap's lock, then huge_lock. The partial stacks and remote lists are
// lock-free.
static void fork_prepare(void) {
  shared_pool_fork_prepare();
  page_heap_fork_prepare();
  huge_fork_prepare();
}
static void fork_parent(void) {
  huge_fork_parent();
  page_heap_fork_parent();
  shared_pool_fork_parent();
}
static void fork_child(void) {
  huge_fork_child();
  page_heap_fork_child();
  shared_pool_fork_child();
  atomic_store(&g_stat_threads_live, t_thread.status == THREAD_LIVE ? 1 : 0);
}

void hak_init_once(void) {
  if (HAK_LIKELY(atomic_load_explicit(&g_init_state, memory_order_acquire) == 2)) return;
  int expected = 0;
  if (!atomic_compare_exchange_strong(&g_init_state, &expected, 1)) {
    // Running: a recursive call from inside init (pthread_atfork may
    // allocate) goes on; another thread waits for it to finish.
    if (atomic_load(&g_init_thread) == thread_self_id()) return;
    while (atomic_load_explicit(&g_init_state, memory_order_acquire) != 2) sched_yield();
    return;
  }
  atomic_store(&g_init_thread, thread_self_id());
  hak_config_load();
  g_block_cookie = (uintptr_t)os_random_seed() | 1u;
  pthread_key_create(&g_thread_key, thread_key_destructor);
  pthread_atfork(fork_prepare, fork_parent, fork_child);
  atomic_store_explicit(&g_init_state, 2, memory_order_release);
}

__attribute__((constructor)) static void hak_constructor(void) { hak_init_once(); }

void thread_setup(void) {
  hak_init_once();
  if (t_thread.status == THREAD_LIVE) return;
  // Lists are empty here: a thread that is not LIVE has room 0, so nothing
  // was pushed since it started or since its lists were flushed at teardown.
  tls_cache_t *tc = &t_tls_cache;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    HAK_ASSERT(hak_base_is_null(tc->head[c]));
    tc->room[c] = g_size_class[c].tls_cap;
  }
  t_thread.status = THREAD_LIVE;
  atomic_fetch_add_explicit(&g_stat_threads_live, 1, memory_order_relaxed);
  // May allocate for keys past the first 32: we are LIVE already.
  pthread_setspecific(g_thread_key, (void *)1);
}

void thread_release_all(void) {
  hak_stat_flush_thread();
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    tiny_flush(c, UINT32_MAX);
    slab_meta_t *m = t_thread.cur[c];
    if (m != NULL) {
      t_thread.cur[c] = NULL;
      shared_pool_detach_slab(m);
    }
  }
}

// HAKMEM_VERBOSE=1: statistics on stderr when the program ends.
__attribute__((destructor)) static void hak_destructor(void) {
  if (g_hak_config.verbose) hak_print_stats(2);
}
