// test_threads.c — thread life: cached blocks given back at exit, thread churn,
// frees after the allocating thread has gone, and four threads exchanging blocks
// with verified contents.
#include "unit_util.h"
#include "tiny/thread_record.h"

static void *alloc_free_many(void *arg) {
  (void)arg;
  static const size_t sizes[] = {16, 64, 200, 1000, 3000, 20000};
  void *v[600];
  for (int i = 0; i < 600; i++) v[i] = hak_malloc(sizes[i % 6]);
  for (int i = 0; i < 600; i++) hak_free(v[i]);   // all sit in this thread's TLS lists
  return NULL;
}

static void *thread_live_count(void *arg) {
  (void)arg;
  hak_free(hak_malloc(32));
  return (void *)stats_now().threads_live;
}

static void test_a_thread_counts_as_live_while_it_runs(void **state) {
  (void)state;
  size_t before = stats_now().threads_live;
  assert_int_equal((size_t)run_in_thread(thread_live_count, NULL), before + 1);
}

// A thread whose only blocks are large is a live thread like any other (its
// exit hook runs; in the STATS build its counters are summed).
static void *large_blocks_only(void *arg) {
  (void)arg;
  void *p = hak_malloc(1 << 20);
  size_t live = stats_now().threads_live;
  hak_free(p);
  return (void *)live;
}

static void test_a_thread_with_only_large_blocks_counts_as_live_and_goes_at_exit(void **state) {
  (void)state;
  size_t before = stats_now().threads_live;
  assert_int_equal((size_t)run_in_thread(large_blocks_only, NULL), before + 1);
  assert_int_equal(stats_now().threads_live, before);
}

static void test_threads_live_drops_when_a_thread_exits(void **state) {
  (void)state;
  size_t before = stats_now().threads_live;
  run_in_thread(alloc_free_many, NULL);
  assert_int_equal(stats_now().threads_live, before);
}

// A free after the allocator's exit hook has run for good: pthread runs key
// destructors in at most 4 rounds, and glibc frees its own per-thread state
// (resolver, dlerror buffers) after the last one. A key of the program whose
// destructor re-arms itself frees a block in each of the 4 rounds, the last
// one after ours. That free must not set the thread up again: nothing would
// tear it down, and its counters record (in the thread's TLS, freed with it)
// stayed on the live list: python3 with 16 threads passing bytes through
// queues crashed in hak_counters_detach when a new thread reused that TLS.
static pthread_key_t g_late_key;
static void *g_late_blocks[8];
static int g_late_round;
static void late_free_destructor(void *value) {
  (void)value;
  if (g_late_round < 8) hak_free(g_late_blocks[g_late_round++]);
  pthread_setspecific(g_late_key, (void *)1);   // again in the next round, while there is one
}
static void *free_in_every_destructor_round(void *arg) {
  (void)arg;
  for (int i = 0; i < 8; i++) g_late_blocks[i] = hak_malloc(100);
  pthread_setspecific(g_late_key, (void *)1);
  return NULL;
}
static void test_a_free_after_the_last_key_destructor_leaves_no_live_thread(void **state) {
  (void)state;
#if defined(HAK_TSAN)
  // ThreadSanitizer finishes a thread in its own key destructor, kept for the
  // last round: instrumented code after it (this test's last free) faults.
  skip();
#endif
  size_t before = stats_now().threads_live;
  assert_int_equal(pthread_key_create(&g_late_key, late_free_destructor), 0);   // after hakmem's key
  g_late_round = 0;
  run_in_thread(free_in_every_destructor_round, NULL);
  pthread_key_delete(g_late_key);
  assert_true(g_late_round >= 4);                  // it freed in the last round too
  assert_int_equal(stats_now().threads_live, before);
  for (int i = g_late_round; i < 8; i++) hak_free(g_late_blocks[i]);
}

// A malloc after the allocator's exit hook in the last round of key
// destructors set the thread up again for good: the refill's other blocks
// stayed cached and its slabs owned by a thread that no hook would visit
// again (a set-up in an earlier round was torn down by the next one). A key
// whose destructor re-arms itself mallocs in every round, the last one after
// ours; each such malloc now tears the thread down after it.
static pthread_key_t g_late_malloc_key;
static void *g_late_kept[8];
static int g_late_malloc_round;
static void late_malloc_destructor(void *value) {
  (void)value;
  void *small = hak_malloc(100), *medium = hak_malloc(5000), *aligned = hak_aligned_alloc(256, 300);
  assert_non_null(small);
  assert_non_null(medium);
  assert_non_null(aligned);
  assert_int_equal((uintptr_t)aligned % 256, 0);
  memset(small, 1, 100);
  memset(medium, 2, 5000);
  hak_free(small);
  hak_free(aligned);
  if (g_late_malloc_round < 8) g_late_kept[g_late_malloc_round++] = medium;   // freed by the main thread
  pthread_setspecific(g_late_malloc_key, (void *)1);   // again in the next round, while there is one
}
static void *arm_late_malloc(void *arg) {
  (void)arg;
  hak_free(hak_malloc(100));                      // set up (the exit hook is armed)
  pthread_setspecific(g_late_malloc_key, (void *)1);
  return NULL;
}
static void test_a_malloc_after_the_exit_hook_leaves_nothing_cached(void **state) {
  (void)state;
#if defined(HAK_TSAN)
  skip();   // as above: ThreadSanitizer's own destructor finishes the thread in the last round
#endif
  hak_thread_flush();                             // this thread's cache counts as in use
  hak_stats_t before = stats_now();
  assert_int_equal(pthread_key_create(&g_late_malloc_key, late_malloc_destructor), 0);   // after hakmem's key
  for (int t = 0; t < 10; t++) {
    g_late_malloc_round = 0;
    run_in_thread(arm_late_malloc, NULL);
    assert_true(g_late_malloc_round >= 4);        // it allocated in the last round too
    for (int i = 0; i < g_late_malloc_round; i++) hak_free(g_late_kept[i]);
  }
  pthread_key_delete(g_late_malloc_key);
  hak_thread_flush();                             // the kept blocks it freed, other threads' blocks
  hak_stats_t after = stats_now();
  assert_int_equal(after.threads_live, before.threads_live);
  assert_int_equal(after.in_use_bytes, before.in_use_bytes);   // nothing cached by the gone threads
}

// A thread's heap and counters are in a record out of static TLS
// (tiny/thread_record.h): taken at its set-up, given back at its exit, and
// the next thread's set-up takes the one given back last, clean: no slab of
// the exited thread on its lists, its counts summed and not counted again.
typedef struct record_seen {
  tiny_heap_t *before, *heap;         // t_heap_p before and after the first malloc
  hak_thread_counters_t *counters;
  uint64_t refills;                   // of the class of 200 bytes, after one malloc
  uint32_t owned_lines;
  int other_classes_empty;
  uint32_t capacity;                  // of the slab its block came from (tiny_heap_slab_lines)
} record_seen_t;

static void *see_record(void *arg) {
  record_seen_t *r = arg;
  unsigned cls = size_class_of(200);
  r->before = t_heap_p;
  void *p = hak_malloc(200);
  r->heap = t_heap_p;
  r->counters = hak_counters();
  r->refills = hak_counters()->cls[cls].refills;
  r->owned_lines = t_heap_p->owned_lines;
  r->capacity = tiny_heap_slab_lines(slab_of(p));
  r->other_classes_empty = 1;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++)
    if (c != cls && (t_heap_p->cur[c] != NULL || t_heap_p->partial[c] != NULL || t_heap_p->full[c] != NULL))
      r->other_classes_empty = 0;
  hak_free(p);
  return NULL;
}

static void *hold_many_classes(void *arg) {
  (void)arg;
  static const size_t sizes[] = {16, 48, 200, 1000, 3000, 20000};
  void *v[6];
  for (int i = 0; i < 6; i++) v[i] = hak_malloc(sizes[i]);
  for (int i = 0; i < 6; i++) hak_free(v[i]);
  return t_heap_p;
}

static void test_an_exited_threads_record_is_taken_clean_by_the_next_thread(void **state) {
  (void)state;
  record_seen_t a, b;
  run_in_thread(see_record, &a);
  tiny_heap_t *many = run_in_thread(hold_many_classes, NULL);   // slabs of six classes
  run_in_thread(see_record, &b);
  assert_null(a.before);                          // no record before the set-up
  assert_null(b.before);
  assert_non_null(a.heap);
  assert_ptr_equal(b.heap, many);                 // the record given back last
  assert_ptr_equal(b.counters, &((thread_record_t *)(void *)b.heap)->counters);
  assert_int_equal(b.refills, 1);                 // its own refill, not the earlier threads'
  assert_int_equal(a.refills, 1);
  assert_true(b.other_classes_empty);             // none of the six classes' slabs
  assert_int_equal(a.owned_lines, a.capacity);   // one slab of the class ...
  assert_int_equal(b.owned_lines, b.capacity);   // ... and no more (a slab the pool had may hold fewer blocks)
}

static void test_exiting_thread_gives_its_cached_blocks_back(void **state) {
  (void)state;
  size_t before = stats_now().in_use_bytes;
  run_in_thread(alloc_free_many, NULL);
  assert_int_equal(stats_now().in_use_bytes, before);
}

static void *short_life(void *arg) {
  (void)arg;
  void *a = hak_malloc(24), *b = hak_malloc(500), *c = hak_malloc(5000), *d = hak_malloc(100000);
  hak_free(a);
  hak_free(b);
  hak_free(c);
  hak_free(d);
  return NULL;
}

static void test_2000_short_lived_threads_leave_superslab_count_flat(void **state) {
  (void)state;
  for (int i = 0; i < 20; i++) run_in_thread(short_life, NULL);    // warm up
  size_t before = stats_now().superslab_count;
  for (int i = 0; i < 2000; i++) run_in_thread(short_life, NULL);
  assert_true(stats_now().superslab_count <= before);
}

static void test_2000_short_lived_threads_leave_threads_live_flat(void **state) {
  (void)state;
  size_t before = stats_now().threads_live;
  for (int i = 0; i < 2000; i++) run_in_thread(short_life, NULL);
  assert_int_equal(stats_now().threads_live, before);
}

#define ORPHANS 300

static void *alloc_orphans(void *arg) {
  void **v = arg;
  for (size_t i = 0; i < ORPHANS; i++) {
    size_t n = 16 + (i % 37) * 24;
    v[i] = hak_malloc(n);
    memset(v[i], (int)(i & 0xff), n);
  }
  return NULL;
}

static void test_blocks_keep_their_content_after_their_thread_exits(void **state) {
  (void)state;
  void *v[ORPHANS];
  run_in_thread(alloc_orphans, v);
  run_in_thread(alloc_free_many, NULL);           // another thread reuses what it can
  for (size_t i = 0; i < ORPHANS; i++) {
    unsigned char *p = v[i];
    for (size_t k = 0; k < 16 + (i % 37) * 24; k++) assert_int_equal(p[k], i & 0xff);
  }
  for (size_t i = 0; i < ORPHANS; i++) hak_free(v[i]);
}

static void test_blocks_of_an_exited_thread_freed_by_main_go_back(void **state) {
  (void)state;
  hak_trim();
  size_t before = stats_now().in_use_bytes;
  void *v[ORPHANS];
  run_in_thread(alloc_orphans, v);
  for (size_t i = 0; i < ORPHANS; i++) hak_free(v[i]);
  hak_trim();                                     // flushes main's TLS lists
  assert_int_equal(stats_now().in_use_bytes, before);
}

// ---- four threads exchanging blocks through a shared table -------------------

#define XCHG_THREADS 4
#define XCHG_SLOTS   4096
#define XCHG_OPS     40000

static _Atomic(uint64_t *) g_table[XCHG_SLOTS];
static _Atomic size_t g_bad_blocks;

// A block carries its size and a pattern derived from its address and size.
static uint64_t pattern(const uint64_t *p, size_t i) { return ((uintptr_t)p * 0x9e3779b97f4a7c15ull) ^ (i * 0x100000001b3ull); }

static uint64_t *make_block(size_t words) {
  uint64_t *p = hak_malloc(words * 8);
  if (p == NULL) return NULL;
  p[0] = words;
  for (size_t i = 1; i < words; i++) p[i] = pattern(p, i);
  return p;
}

static int block_intact(const uint64_t *p) {
  size_t words = p[0];
  if (words < 2 || words > 8192) return 0;
  for (size_t i = 1; i < words; i++) if (p[i] != pattern(p, i)) return 0;
  return 1;
}

static void *exchanger(void *arg) {
  uint64_t x = (uintptr_t)arg * 0x2545f4914f6cdd1dull + 1;
  for (int op = 0; op < XCHG_OPS; op++) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    size_t words = 2 + (x >> 40) % ((x & 7) == 0 ? 8000 : 60);
    uint64_t *mine = make_block(words);
    if (mine == NULL) { atomic_fetch_add(&g_bad_blocks, 1); continue; }
    uint64_t *theirs = atomic_exchange(&g_table[(x >> 20) % XCHG_SLOTS], mine);
    if (theirs != NULL) {
      if (!block_intact(theirs)) atomic_fetch_add(&g_bad_blocks, 1);
      hak_free(theirs);
    }
  }
  return NULL;
}

static size_t run_exchange(void) {
  pthread_t t[XCHG_THREADS];
  atomic_store(&g_bad_blocks, 0);
  for (uintptr_t i = 0; i < XCHG_THREADS; i++) pthread_create(&t[i], NULL, exchanger, (void *)(i + 1));
  for (int i = 0; i < XCHG_THREADS; i++) pthread_join(t[i], NULL);
  for (size_t s = 0; s < XCHG_SLOTS; s++) {
    uint64_t *p = atomic_exchange(&g_table[s], NULL);
    if (p == NULL) continue;
    if (!block_intact(p)) atomic_fetch_add(&g_bad_blocks, 1);
    hak_free(p);
  }
  return atomic_load(&g_bad_blocks);
}

static void test_four_threads_exchanging_blocks_see_intact_contents(void **state) {
  (void)state;
  assert_int_equal(run_exchange(), 0);
}

static void test_four_threads_exchanging_blocks_leave_nothing_in_use(void **state) {
  (void)state;
  hak_trim();
  size_t before = stats_now().in_use_bytes;
  run_exchange();
  hak_trim();
  assert_int_equal(stats_now().in_use_bytes, before);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_a_thread_counts_as_live_while_it_runs),
    HAK_UNIT_TEST(test_a_thread_with_only_large_blocks_counts_as_live_and_goes_at_exit),
    HAK_UNIT_TEST(test_threads_live_drops_when_a_thread_exits),
    HAK_UNIT_TEST(test_a_free_after_the_last_key_destructor_leaves_no_live_thread),
    HAK_UNIT_TEST(test_a_malloc_after_the_exit_hook_leaves_nothing_cached),
    HAK_UNIT_TEST(test_an_exited_threads_record_is_taken_clean_by_the_next_thread),
    HAK_UNIT_TEST(test_exiting_thread_gives_its_cached_blocks_back),
    HAK_UNIT_TEST(test_2000_short_lived_threads_leave_superslab_count_flat),
    HAK_UNIT_TEST(test_2000_short_lived_threads_leave_threads_live_flat),
    HAK_UNIT_TEST(test_blocks_keep_their_content_after_their_thread_exits),
    HAK_UNIT_TEST(test_blocks_of_an_exited_thread_freed_by_main_go_back),
    HAK_UNIT_TEST(test_four_threads_exchanging_blocks_see_intact_contents),
    HAK_UNIT_TEST(test_four_threads_exchanging_blocks_leave_nothing_in_use),
  };
  return cmocka_run_group_tests_name("threads", tests, NULL, NULL);
}
