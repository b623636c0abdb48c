// unit_util.h — helpers shared by the cmocka unit tests of the engine's boxes.
//
// The tests link libhakmem_core.a (hak_* only, malloc is glibc's) and look at the
// engine's internals: slab metadata, TLS lists, the registry and the Shared Pool.
// cmocka's assertions must run on the main thread (they longjmp to the runner), so
// worker threads only compute and the test asserts on what they return.
#ifndef HAK_UNIT_UTIL_H
#define HAK_UNIT_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hakmem.h"
#include "config/config.h"
#include "shared_pool/shared_pool_internal.h"
#include "superslab/ss_registry.h"
#include "superslab/superslab.h"
#include "tiny/remote_free_box.h"
#include "tiny/tiny_flush.h"
#include "stats/stats.h"
#include "superslab/size_class.h"
#include "tiny/slab_validate.h"
#include "tiny/tiny_refill.h"
#include "tiny/tiny_thread.h"
#include "tiny/tls_sll_box.h"

// Run fn(arg) on a new thread and wait for it (and for its exit hooks) to finish.
static inline void *run_in_thread(void *(*fn)(void *), void *arg) {
  pthread_t t;
  void *ret = NULL;
  if (pthread_create(&t, NULL, fn, arg) != 0) abort();
  pthread_join(t, &ret);
  return ret;
}

// A thread that is set up (LIVE, counted) and waits until unparked: one
// more live thread, so a thread's exit does not leave the main one alone
// (the exchange goes home whole then, tiny_thread.c thread_teardown).
static pthread_mutex_t g_park_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_park_cond = PTHREAD_COND_INITIALIZER;
static int g_parked, g_unpark;
static pthread_t g_park_thread;

static inline void *parked(void *arg) {
  (void)arg;
  hak_free(hak_malloc(16));
  pthread_mutex_lock(&g_park_lock);
  g_parked = 1;
  pthread_cond_broadcast(&g_park_cond);
  while (!g_unpark) pthread_cond_wait(&g_park_cond, &g_park_lock);
  pthread_mutex_unlock(&g_park_lock);
  return NULL;
}
static inline void park_a_thread(void) {
  g_parked = g_unpark = 0;
  if (pthread_create(&g_park_thread, NULL, parked, NULL) != 0) abort();
  pthread_mutex_lock(&g_park_lock);
  while (!g_parked) pthread_cond_wait(&g_park_cond, &g_park_lock);
  pthread_mutex_unlock(&g_park_lock);
}
static inline void unpark(void) {
  pthread_mutex_lock(&g_park_lock);
  g_unpark = 1;
  pthread_cond_broadcast(&g_park_cond);
  pthread_mutex_unlock(&g_park_lock);
  pthread_join(g_park_thread, NULL);
}

// A crowd of CROWD threads past TINY_CACHE_FULL_THREADS, each set up (LIVE)
// and waiting until released: the live count that halves a thread's small
// lists (tiny_cache_share) and stops its small classes' populate-ahead.
#define CROWD (TINY_CACHE_FULL_THREADS + 1)
typedef struct crowd {
  pthread_barrier_t up, down;
  pthread_t t[CROWD];
} crowd_t;
static inline void *crowd_member(void *arg) {
  crowd_t *c = arg;
  hak_free(hak_malloc(32));    // set up: LIVE
  pthread_barrier_wait(&c->up);
  pthread_barrier_wait(&c->down);
  return NULL;
}
static inline void crowd_gather(crowd_t *c) {
  pthread_barrier_init(&c->up, NULL, CROWD + 1);
  pthread_barrier_init(&c->down, NULL, CROWD + 1);
  for (unsigned i = 0; i < CROWD; i++)
    if (pthread_create(&c->t[i], NULL, crowd_member, c) != 0) abort();
  pthread_barrier_wait(&c->up);
}
static inline void crowd_release(crowd_t *c) {
  pthread_barrier_wait(&c->down);
  for (unsigned i = 0; i < CROWD; i++) pthread_join(c->t[i], NULL);
  pthread_barrier_destroy(&c->up);
  pthread_barrier_destroy(&c->down);
}

// Run bad() in a forked child (no core file) whose stderr goes to a pipe;
// returns the signal that ended it and what it wrote. reported(): a line
// starting "hakmem: " that contains `what`.
typedef struct child_result {
  int  signal;          // the signal that ended the child, 0 if it exited
  char err[4096];       // what it wrote on stderr
} child_result_t;

static inline child_result_t run_in_child(void (*bad)(void)) {
  child_result_t r;
  memset(&r, 0, sizeof r);
  int fd[2];
  if (pipe(fd) != 0) abort();
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    close(fd[0]);
    dup2(fd[1], 2);
    bad();
    _exit(0);
  }
  close(fd[1]);
  size_t n = 0;
  ssize_t k;
  while ((k = read(fd[0], r.err + n, sizeof r.err - 1 - n)) > 0) n += (size_t)k;
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  return r;
}

static inline int reported(const child_result_t *r, const char *what) {
  const char *line = strstr(r->err, "hakmem: ");
  return line != NULL && (line == r->err || line[-1] == '\n') && strstr(line, what) != NULL;
}

// bad() in a child aborted with a report naming `what`, after writing
// `reached` and before writing `never`.
static inline void expect_abort_between(void (*bad)(void), const char *what, const char *reached,
                                        const char *never) {
  child_result_t r = run_in_child(bad);
  if (r.signal != SIGABRT) fail_msg("signal %d, stderr: \"%s\"", r.signal, r.err);
  if (!reported(&r, what)) fail_msg("stderr: \"%s\"", r.err);
  assert_non_null(strstr(r.err, reached));
  assert_null(strstr(r.err, never));
}

static inline hak_stats_t stats_now(void) {
  hak_stats_t s;
  hak_get_stats(&s);
  return s;
}

static inline slab_meta_t *slab_of(const void *p) { return ss_slab_of(ss_of(p), p); }


static inline unsigned slab_state(const slab_meta_t *m) {
  return SLAB_STATE(atomic_load((_Atomic uint32_t *)&m->state));
}

// Length of the calling thread's TLS list of cls (walks the chain, bounded).
static inline uint32_t tls_list_len(unsigned cls) {
  uint32_t n = 0;
  for (hak_base_ptr_t b = t_tls_cache.lists[cls].head; !tls_sll_is_end(b) && n < 100000; b = block_next(b)) n++;
  return n;
}

static inline int tls_list_empty(unsigned cls) { return tls_sll_empty(&t_tls_cache, cls); }

// Length of a slab's remote-free list (only meaningful while nobody drains it).
static inline uint32_t remote_list_len(slab_meta_t *m) {
  // Every block, through the chains (a 16-byte chain's first block holds its
  // record in its link word: tls_sll_box.h, block_set_chain).
  uint32_t n = 0, left = 0;
  int chains = BLOCK_CHAIN_RECORDS;
  for (hak_base_ptr_t b = hak_base_from_raw(remote_word_first(atomic_load(&m->remote_head))), next; !hak_base_is_null(b) && n <= m->capacity;
       b = next, n++) {
    next = block_next(b);
    if (chains && left == 0) {
      block_chain_info_t ci = block_chain(m, b);
      left = ci.n;
      if (ci.n >= 2) next = ci.second;
    }
    if (chains) left--;
  }
  return n;
}

// Resident set size of this process in bytes (/proc/self/statm, second field).
static inline size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long size = 0, resident = 0;
  if (f == NULL) return 0;
  if (fscanf(f, "%lu %lu", &size, &resident) != 2) resident = 0;
  fclose(f);
  return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

// A block list built from blocks themselves (first word = next), so tests that
// hold millions of blocks need no side table.
typedef struct held_blocks {
  void  *head;
  size_t count;
} held_blocks_t;

static inline void held_push(held_blocks_t *h, void *p) {
  *(void **)p = h->head;
  h->head = p;
  h->count++;
}

static inline void held_free_all(held_blocks_t *h) {
  while (h->head != NULL) {
    void *p = h->head;
    h->head = *(void **)p;
    hak_free(p);
  }
  h->count = 0;
}

// Allocate blocks of `size` on the calling thread until one whole slab (the one
// the first block comes from) is handed out: every block of it is held by the
// caller, none sits in the TLS list. The blocks go onto *h; returns the slab, or
// NULL if the slab stopped being the thread's current one (some of its blocks
// are held elsewhere).
// Refills of class cls (blocks of `size`) until its bound is whole again (a
// new thread's medium bound starts at an eighth, tiny_thread.c, and each
// refill doubles it back), those blocks freed home: the calling thread took
// the class before it became a consumer.
static inline void consumer_takes_class_first(unsigned cls, size_t size) {
  static __thread void *own[512];
  unsigned n = 0;
  do own[n++] = hak_malloc(size);   // (the first sets the thread up)
  while (t_tls_cache.cap_shift[cls] != 0 && n < 512);
  while (n > 0) hak_free(own[--n]);
  tiny_flush(cls, UINT32_MAX);
}

static inline slab_meta_t *fill_one_slab(size_t size, held_blocks_t *h) {
  unsigned cls = size_class_of(size);
  hak_thread_flush();                     // start from an empty TLS list
  void *p = hak_malloc(size);
  if (p == NULL) return NULL;
  slab_meta_t *m = slab_of(p);
  held_push(h, p);
  while (slab_census_live(m) < m->capacity || !tls_list_empty(cls)) {
    void *q = hak_malloc(size);
    if (q == NULL) return NULL;
    if (slab_of(q) != m) {
      hak_free(q);
      return NULL;
    }
    held_push(h, q);
  }
  return m;
}

// Slow paths of another class than the ones a test looks at (refills and
// overflows of 100 KB blocks, whose lists hold a few: the class's own bound,
// 8, kept by tiny_class_ungrow each round; grown to 2 MiB of blocks,
// TLS_GROWN_BYTES_LARGE, its list held a whole round of 16, no slow path came
// and the loop never ended) until they have moved
// enough bytes for `looks` looks at idle classes (idle_class_box.h), with no
// look by the clock meanwhile (the clock's looks would give the classes
// back on their own).
static inline void slow_path_bytes_elsewhere(unsigned looks) {
  unsigned other = size_class_of(100000);
  size_t size = size_class_size(other);
  const hak_class_counters_t *k = &hak_counters()->cls[other];
  uint64_t start = k->refill_blocks + k->flush_blocks;
  uint32_t delay = g_hak_config.purge_delay_ms;
  g_hak_config.purge_delay_ms = 3600000;
  while ((k->refill_blocks + k->flush_blocks - start) * size < (uint64_t)(looks + 1) * LEFT_LOOK_BYTES) {
    void *p[16];
    tiny_class_ungrow(other);
    for (unsigned i = 0; i < 16; i++) p[i] = hak_malloc(100000);
    for (unsigned i = 0; i < 16; i++) hak_free(p[i]);
  }
  g_hak_config.purge_delay_ms = delay;
}

// Every structure of the small-block engine checked against its invariants
// (debug builds; the validators do not exist in release builds): the calling
// thread's heap and TLS lists, every SuperSlab and every slab, counted
// exactly (no other thread may be running).
static inline int validate_engine(void **state) {
  (void)state;
#if HAK_DEBUG
  if (t_heap_p != NULL) tiny_heap_validate(t_heap_p);   // NULL: the thread is not LIVE, it owns nothing
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) tls_sll_validate(c);
  uint32_t hw = ss_registry_high_water();
  for (uint32_t i = 0; i < hw; i++) {
    superslab_t *ss = atomic_load(&g_ss_table[i]);
    if (ss == NULL) continue;
    pool_lock(ss->kind);
    ss_validate(ss);
    pool_unlock(ss->kind);
    for (unsigned k = 0; k < ss->nslabs; k++) slab_validate_at(ss_slab(ss, k), 1);
  }
  for (unsigned k = 0; k < HAK_SLAB_KINDS; k++) pool_lock(k);
  shared_pool_validate_pools();
  for (unsigned k = HAK_SLAB_KINDS; k-- > 0;) pool_unlock(k);
#endif
  return 0;
}

// The purge's knobs, set for a test and put back after it (purge_knobs_restore).
// The budget is dirty_max alone: no share of the memory out (HAKMEM_PURGE_OUT_MB
// 0), which the slabs earlier tests left out would make up.
typedef struct purge_knobs { uint32_t delay, keep; size_t dirty_max, out_max; } purge_knobs_t;

static inline purge_knobs_t purge_knobs_set(uint32_t delay, uint32_t keep, size_t dirty_max) {
  purge_knobs_t old = {g_hak_config.purge_delay_ms, g_hak_config.keep_empty_superslabs,
                       g_hak_config.purge_dirty_max, g_hak_config.purge_dirty_out_max};
  g_hak_config.purge_delay_ms = delay;
  g_hak_config.keep_empty_superslabs = keep;
  g_hak_config.purge_dirty_max = dirty_max;
  g_hak_config.purge_dirty_out_max = 0;
  for (unsigned k = 0; k < HAK_SLAB_KINDS; k++) {   // no budget raised by an earlier test
    pool_lock(k);
    atomic_store(&g_pool[k].regret_bytes, 0);
    pool_unlock(k);
  }
  return old;
}
static inline void purge_knobs_restore(purge_knobs_t old) {
  purge_knobs_set(old.delay, old.keep, old.dirty_max);   // (the regret back to 0)
  g_hak_config.purge_dirty_out_max = old.out_max;
}

// Frees tested in batches by every thread so far (tiny/free_batch_box.h).
static inline uint64_t batched_frees_so_far(void) {
  hak_thread_counters_t tc;
  hak_counters_sum(&tc);
  return tc.batched_frees;
}

// Blocks handed over at consumers' drains so far (tiny_flush.c tiny_handover).
static inline uint64_t handed_over_so_far(void) {
  hak_thread_counters_t tc;
  hak_counters_sum(&tc);
  return tc.handed_over;
}

// The dirty bytes of every kind's pool.
static inline size_t pool_dirty_bytes(void) {
  size_t d = 0;
  for (unsigned k = 0; k < HAK_SLAB_KINDS; k++) d += atomic_load(&g_pool[k].dirty_bytes);
  return d;
}

// A thread that takes a few blocks of *arg bytes, frees them and exits: its
// slab, carved only as deep as one refill, is abandoned EMPTY and goes to the
// pool FREE and dirty, where the next acquire of the kind takes it first; with
// g_pool_recycle_at_empty 0 it waits on the abandoned stack until
// pool_collect_abandoned_empty (threads run one after another then use a
// slab each).
static inline void *use_a_slab_lightly(void *arg) {
  size_t size = *(size_t *)arg;
  void *p[4];
  for (int i = 0; i < 4; i++) p[i] = hak_malloc(size);
  slab_meta_t *m = slab_of(p[0]);
  for (int i = 0; i < 4; i++) hak_free(p[i]);
  return m;
}

// Every medium class's young slab taken (tiny_heap.h: a class's first slab
// in the process is one of the small kind's): from here on a medium class's
// slabs are its kind's, as the tests of that kind's slabs expect.
static inline void young_slabs_taken(void) { atomic_store(&g_class_young_taken, ~(uint64_t)0); }

// A slab a thread used lightly for four blocks of `size`, given to the pool
// FREE and dirty: what it adds to the pool's dirty bytes, and what a purge of
// it gives back, against `most_of_slab` (the slab's bytes over this) and
// whether its class wrote a size table.
static inline void check_a_lightly_used_slab(size_t size, int table, size_t most_of_slab) {
  young_slabs_taken();
  hak_trim();
  purge_knobs_t old = purge_knobs_set(60000, 1000, (size_t)1 << 40);
  size_t before = pool_dirty_bytes();
  slab_meta_t *m = run_in_thread(use_a_slab_lightly, &size);
  pool_collect_abandoned_empty();
  assert_int_equal(slab_state(m), SLAB_FREE);
  assert_true(atomic_load(&m->dirty));
  size_t added = pool_dirty_bytes() - before;
  size_t slab_bytes = ss_slab_bytes(ss_of_meta(m), m->index);
  assert_int_equal(added, slab_dirty_bytes(m));
  assert_int_equal(m->dirty_table, table);
  assert_true(added >= 4 * size + (table ? SLAB_TABLE_DIRTY_BYTES : 0));   // the blocks handed out
  assert_true(added <= slab_bytes / most_of_slab);                        // not the whole slab
  assert_int_equal(slab_purge_bytes(m), table ? slab_bytes : added);
  purge_knobs_restore(old);
  hak_trim();
  assert_int_equal(pool_dirty_bytes(), 0);
}

// Transparent huge pages 'always': a touched page brings its 2 MiB neighbours
// in, so a residency check means nothing.
static inline int thp_always(void) {
  FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
  if (f == NULL) return 0;
  char line[128] = {0};
  int always = fgets(line, sizeof line, f) != NULL && strstr(line, "[always]") != NULL;
  fclose(f);
  return always;
}

// A unit test whose teardown validates the engine.
#define HAK_UNIT_TEST(f) cmocka_unit_test_teardown(f, validate_engine)

#endif
