// tiny_thread.c — thread set-up and tear-down (see tiny_thread.h).
#include "tiny/tiny_thread.h"

#include <pthread.h>

#include "os/os.h"
#include "stats/stats.h"
#include "tiny/free_batch_box.h"
#include "tiny/hardened_box.h"
#include "tiny/thread_record.h"
#include "tiny/tiny_refill.h"

static pthread_key_t g_thread_key;
static _Atomic uint32_t g_threads_live;   // LIVE threads (set up, not torn down)
// Whether this thread is in g_threads_live (not after a set-up past its exit hook).
static __thread uint8_t t_counted_live __attribute__((tls_model("initial-exec")));

uint32_t tiny_threads_live(void) { return atomic_load_explicit(&g_threads_live, memory_order_relaxed); }

unsigned tiny_cache_share(void) {
  uint32_t n = tiny_threads_live();
  return n <= TINY_CACHE_FULL_THREADS ? 0u : n <= 2u * TINY_CACHE_FULL_THREADS ? 1u : 2u;
}

void tiny_cache_rescale(void) {
  tls_cache_t *tc = &t_tls_cache;
  unsigned share = tiny_cache_share();
  if (HAK_LIKELY(share == tc->cap_share) || t_thread_status != THREAD_LIVE) return;
  tc->cap_share = (uint8_t)share;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    tls_set_cap(tc, c, tls_class_cap(tc, c, share));
    if (tc->lists[c].room < 0) tiny_flush(c, (uint32_t)-tc->lists[c].room);
  }
}

static void thread_key_destructor(void *value) {
  (void)value;
  if (t_thread_status == THREAD_LIVE) thread_teardown();
}

void thread_teardown(void) {
  // The exchange keeps a chain per live thread and class at most: the
  // chains over the count of those that stay go home (before this thread's
  // slabs are given up, so its own blocks land on its own free lists).
  tiny_exchange_trim(tiny_threads_live() - (t_counted_live ? 1u : 0u));
  thread_release_all();
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    t_tls_cache.lists[c].room = 0;
    t_tls_cache.lists[c].owner_key = 0;
  }
  t_tls_cache.self = 0;
  t_thread_status = THREAD_DONE;
  // The thread that leaves one behind sends the whole exchange home (after
  // its decrement, so a thread that left at the same time put its last
  // chains before): the one that stays has nobody to exchange with and
  // finds the blocks in its own slabs or in the gone threads' it adopts (a
  // chain per class kept after prodcons -t 8 of 1-32 KiB: 1 234 blocks
  // holding 57 MB of the producers' abandoned slabs resident).
  if (t_counted_live && atomic_fetch_sub_explicit(&g_threads_live, 1, memory_order_relaxed) == 2u)
    tiny_flush_exchange();
  t_counted_live = 0;
  hak_counters_detach();
  // Last: no slab names this thread as its owner any more, so no remote
  // freer reads t_heap_p (tiny_heap_of_owner).
  thread_record_t *r = thread_record_of(t_heap_p);
  t_heap_p = NULL;
  thread_record_give_back(r);
}

void thread_key_init(void) { pthread_key_create(&g_thread_key, thread_key_destructor); }

int thread_setup(void) {
  if (t_thread_status == THREAD_LIVE) return 1;
  int again = t_thread_status == THREAD_DONE;
  thread_record_t *r = thread_record_take();
  if (HAK_UNLIKELY(r == NULL)) return 0;   // no memory for it: the thread stays as it was
  // Lists are empty here: a thread that is not LIVE has room 0, so nothing
  // was pushed since it started or since its lists were flushed at teardown.
  tls_cache_t *tc = &t_tls_cache;
  if (!again) {
    atomic_fetch_add_explicit(&g_threads_live, 1, memory_order_relaxed);
    t_counted_live = 1;
  }
  t_heap_p = &r->heap;
  // The idle classes' first look a look's time from now (tiny_refill.c
  // note_slow_path), not at the first slow path: a new thread has no class
  // to give back (churn -c 16 -k 16: 0.9 k instructions a thread).
  r->heap.left_look_ms = os_now_ms();
  unsigned share = tiny_cache_share();
  tc->cap_share = (uint8_t)share;
  tc->self = thread_self_id();
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    HAK_ASSERT(tls_sll_empty(tc, c));
    tc->cap_shift[c] = 0;
    tc->overflows[c] = 0;
    tc->cap_grow[c] = 0;
    tc->local_overflow[c] = 0;
    tc->cap[c] = tls_cap_for(c, share);
    tc->lists[c].room = tc->cap[c];
    tc->lists[c].owner_key = tls_owner_key_of_class(tc, c);
  }
  t_thread_status = THREAD_LIVE;
  // Also for a thread set up again after its exit hook (a malloc from a
  // later key destructor): the record outlives the thread, so the live list
  // never points into a gone thread's memory, and the caller's teardown
  // sums and unlinks it again.
  hak_counters_attach(&r->counters);
  // May allocate for keys past the first 32: we are LIVE already. (Set up
  // again past the exit hook, the caller tears the thread down itself.)
  if (!again) pthread_setspecific(g_thread_key, (void *)1);
  return 1;
}

void thread_release_all(void) {
  if (t_free_batch.active) free_batch_set_active(0);   // the held blocks go home with the rest
#if HAK_HARDENED
  hardened_quarantine_drain();   // quarantined blocks go home with the rest
#endif
  tiny_flush_all();
  for (unsigned c = 0; c < TINY_REMOTE_CLASSES; c++) tiny_flush_remote(c);
  shared_pool_maybe_purge();
  tiny_heap_abandon_all(t_heap_p);
#if HAK_DEBUG
  tiny_heap_validate(t_heap_p);
#endif
}

void thread_fork_child(void) {
  // The other threads' heaps are gone with them; their slabs stay owned by
  // ids nobody has (as after any fork, their memory is not the child's to use).
  if (t_heap_p != NULL) tiny_heap_fork_child(t_heap_p);
  thread_record_fork_child();
  atomic_store_explicit(&g_threads_live, t_counted_live, memory_order_relaxed);   // this thread alone
  hak_counters_fork_child();
}
