// test_remote_free.c — frees by threads that do not own the slab (remote_free_box)
// and the owner's drain (ss_remote_drain_to_freelist).
#include "unit_util.h"

#define NTHREADS 8

static void *free_one(void *p) {
  hak_free(p);
  return NULL;
}

typedef struct free_share {
  void   **blocks;
  size_t   n;
  unsigned first, step;
  pthread_barrier_t *start;
} free_share_t;

static void *free_share(void *arg) {
  free_share_t *s = arg;
  pthread_barrier_wait(s->start);
  for (size_t i = s->first; i < s->n; i += s->step) hak_free(s->blocks[i]);
  return NULL;
}

// The state the tests start from: the main thread owns slab m (class of `size`),
// and holds every block of it in blocks[0..n).
typedef struct owned_slab {
  size_t       size;
  slab_meta_t *m;
  void       **blocks;
  size_t       n;
} owned_slab_t;

static owned_slab_t g_slab;

static int setup_owned_slab(size_t size) {
  held_blocks_t h = {NULL, 0};
  g_slab.size = size;
  g_slab.m = fill_one_slab(size, &h);
  if (g_slab.m == NULL) return -1;
  g_slab.n = h.count;
  g_slab.blocks = calloc(h.count, sizeof(void *));
  for (size_t i = 0; h.head != NULL; i++) {
    g_slab.blocks[i] = h.head;
    h.head = *(void **)h.head;
  }
  return 0;
}

static int setup_slab_of_48(void **state) { (void)state; return setup_owned_slab(48); }
static int setup_slab_of_16(void **state) { (void)state; return setup_owned_slab(16); }

static int teardown_slab(void **state) {
  (void)state;
  free(g_slab.blocks);
  memset(&g_slab, 0, sizeof g_slab);
  hak_thread_flush();
  return validate_engine(state);
}

static void test_setup_hands_out_every_block_of_one_slab(void **state) {
  (void)state;
  assert_int_equal(g_slab.n, g_slab.m->capacity);
  assert_int_equal(atomic_load(&g_slab.m->used), g_slab.m->capacity);
  for (size_t i = 0; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

static void test_block_freed_by_another_thread_lands_on_the_slab_remote_list(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  void *p = g_slab.blocks[3];
  run_in_thread(free_one, p);
  assert_ptr_equal(atomic_load(&m->remote_head), p);
  for (size_t i = 0; i < g_slab.n; i++) if (i != 3) hak_free(g_slab.blocks[i]);
}

static void test_remote_free_drops_the_slab_used_count(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  uint32_t before = atomic_load(&m->used);
  run_in_thread(free_one, g_slab.blocks[0]);
  assert_int_equal(atomic_load(&m->used), before - 1);
  for (size_t i = 1; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

static void test_remote_free_is_counted_in_the_stats(void **state) {
  (void)state;
  size_t before = stats_now().remote_frees_total;
  run_in_thread(free_one, g_slab.blocks[0]);
  assert_int_equal(stats_now().remote_frees_total, before + 1);
  for (size_t i = 1; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

static void test_remote_drain_moves_the_remote_list_onto_the_free_list(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  void *p = g_slab.blocks[0], *q = g_slab.blocks[1];
  run_in_thread(free_one, p);
  run_in_thread(free_one, q);
  assert_int_equal(ss_remote_drain_to_freelist(m), 2);
  assert_null(atomic_load(&m->remote_head));
  assert_ptr_equal(m->freelist, q);           // LIFO: the last pushed first
  assert_ptr_equal(hak_base_raw(block_next(hak_base_from_raw(m->freelist))), p);
  for (size_t i = 2; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

static void test_remote_drain_of_an_empty_remote_list_moves_nothing(void **state) {
  (void)state;
  assert_int_equal(ss_remote_drain_to_freelist(g_slab.m), 0);
  for (size_t i = 0; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

static void test_owner_gets_a_remotely_freed_block_back_on_refill(void **state) {
  (void)state;
  void *p = g_slab.blocks[5];
  run_in_thread(free_one, p);
  void *q = hak_malloc(g_slab.size);          // TLS empty, slab exhausted: drain
  assert_ptr_equal(q, p);
  for (size_t i = 0; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

// Eight threads free the blocks of one slab at once (interleaved, so they push
// onto the same remote list concurrently).
static void free_from_eight_threads(void) {
  pthread_t t[NTHREADS];
  free_share_t s[NTHREADS];
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, NTHREADS);
  for (unsigned i = 0; i < NTHREADS; i++) {
    s[i] = (free_share_t){g_slab.blocks, g_slab.n, i, NTHREADS, &start};
    pthread_create(&t[i], NULL, free_share, &s[i]);
  }
  for (unsigned i = 0; i < NTHREADS; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&start);
}

static void test_eight_threads_freeing_at_once_lose_no_block_on_the_remote_list(void **state) {
  (void)state;
  free_from_eight_threads();
  assert_int_equal(remote_list_len(g_slab.m), g_slab.n);
}

static void test_eight_threads_freeing_at_once_bring_the_used_count_to_zero(void **state) {
  (void)state;
  free_from_eight_threads();
  assert_int_equal(atomic_load(&g_slab.m->used), 0);
}

static void test_owner_reallocates_every_block_eight_threads_freed(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  free_from_eight_threads();
  assert_int_equal(ss_remote_drain_to_freelist(m), g_slab.n);
  unsigned char *seen = calloc(m->capacity, 1);
  size_t distinct = 0;
  for (size_t i = 0; i < g_slab.n; i++) {
    char *q = hak_malloc(g_slab.size);
    assert_ptr_equal(slab_of(q), m);
    size_t idx = (size_t)(q - m->base) / m->block_size;
    if (!seen[idx]) distinct++;
    seen[idx] = 1;
    g_slab.blocks[i] = q;
  }
  free(seen);
  assert_int_equal(distinct, g_slab.n);
  for (size_t i = 0; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

// A thread gathers other threads' blocks under a cache line in its remote
// buffer (an array: the flush reads no block) and sends them home when it
// holds TINY_REMOTE_BUF_BLOCKS: nothing before, all of them at once then.
typedef struct buffered_frees {
  uint32_t before_last, after_last;
} buffered_frees_t;

static void *free_a_buffer_full(void *arg) {
  buffered_frees_t *r = arg;
  for (size_t i = 0; i + 1 < TINY_REMOTE_BUF_BLOCKS; i++) hak_free(g_slab.blocks[i]);
  r->before_last = remote_list_len(g_slab.m);
  hak_free(g_slab.blocks[TINY_REMOTE_BUF_BLOCKS - 1]);
  r->after_last = remote_list_len(g_slab.m);
  return NULL;
}

static void test_remote_buffer_sends_its_blocks_home_when_full(void **state) {
  (void)state;
  assert_true(g_slab.n > TINY_REMOTE_BUF_BLOCKS);
  buffered_frees_t r = {UINT32_MAX, UINT32_MAX};
  run_in_thread(free_a_buffer_full, &r);
  assert_int_equal(r.before_last, 0);
  assert_int_equal(r.after_last, TINY_REMOTE_BUF_BLOCKS);
  assert_int_equal(atomic_load(&g_slab.m->used), g_slab.n - TINY_REMOTE_BUF_BLOCKS);
  for (size_t i = TINY_REMOTE_BUF_BLOCKS; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

static void *free_a_few(void *arg) {
  (void)arg;
  for (size_t i = 0; i < 5; i++) hak_free(g_slab.blocks[i]);
  return NULL;   // the thread's exit sends them home
}

static void test_remote_buffer_goes_home_at_thread_exit(void **state) {
  (void)state;
  run_in_thread(free_a_few, NULL);
  assert_int_equal(remote_list_len(g_slab.m), 5);
  for (size_t i = 5; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

#define SLAB_TEST(f, s) cmocka_unit_test_setup_teardown(f, s, teardown_slab)

int main(void) {
  const struct CMUnitTest tests[] = {
    SLAB_TEST(test_setup_hands_out_every_block_of_one_slab, setup_slab_of_48),
    SLAB_TEST(test_block_freed_by_another_thread_lands_on_the_slab_remote_list, setup_slab_of_48),
    SLAB_TEST(test_remote_free_drops_the_slab_used_count, setup_slab_of_48),
    SLAB_TEST(test_remote_free_is_counted_in_the_stats, setup_slab_of_48),
    SLAB_TEST(test_remote_drain_moves_the_remote_list_onto_the_free_list, setup_slab_of_48),
    SLAB_TEST(test_remote_drain_of_an_empty_remote_list_moves_nothing, setup_slab_of_48),
    SLAB_TEST(test_owner_gets_a_remotely_freed_block_back_on_refill, setup_slab_of_48),
    SLAB_TEST(test_eight_threads_freeing_at_once_lose_no_block_on_the_remote_list, setup_slab_of_16),
    SLAB_TEST(test_eight_threads_freeing_at_once_bring_the_used_count_to_zero, setup_slab_of_16),
    SLAB_TEST(test_owner_reallocates_every_block_eight_threads_freed, setup_slab_of_16),
    SLAB_TEST(test_remote_buffer_sends_its_blocks_home_when_full, setup_slab_of_16),
    SLAB_TEST(test_remote_buffer_goes_home_at_thread_exit, setup_slab_of_48),
  };
  return cmocka_run_group_tests_name("remote_free", tests, NULL, NULL);
}
