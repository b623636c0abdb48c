// hardened_test_free_batch.c — the hardened engine (HAK_HARDENED=1) batches a
// consumer thread's frees too (tiny/free_batch_box.h): every held block gets
// the checks its free would have made (mark, size word, the size a sized delete
// gave, canary), each reported by its batch, and then its fill and quarantine.
// Before, the hardened build never batched: its cross-thread rows ran at
// 2.2-2.5x the default's time.
#include "unit_util.h"
#include "core/hakmem_fast.h"
#include "debug/report.h"
#include "stats/stats.h"
#include "tiny/free_batch_box.h"
#include "big_heap_batching.h"

_Static_assert(HAK_HARDENED, "built against the hardened engine");

#define NBLOCKS 4096
#define SIZE 200            // a tiny class, with room past the request for the canary
static void *g_blocks[NBLOCKS];
#define MEDIUM 3000         // a medium class: its size word in its slab's table
static void *g_medium;

static void *alloc_blocks(void *arg) {
  (void)arg;
  for (int i = 0; i < NBLOCKS; i++) g_blocks[i] = hak_malloc(SIZE);
  g_medium = hak_malloc(MEDIUM);
  return NULL;
}

typedef struct consumer { int active_after; uint32_t held_after; } consumer_t;

static void *free_blocks(void *arg) {
  consumer_t *c = arg;
  for (int i = 0; i < NBLOCKS; i++) hak_free(g_blocks[i]);
  c->active_after = (int)t_free_batch_active;
  c->held_after = t_free_batch_p->n;
  return NULL;
}

// A thread freeing another thread's blocks batches; at its exit every block
// has been through its checks into the quarantine and home: marked free.
static void test_a_consumer_thread_batches_and_every_block_is_freed(void **state) {
  (void)state;
  uint64_t batched = batched_frees_so_far();
  run_in_thread(alloc_blocks, NULL);
  consumer_t c = {0};
  run_in_thread(free_blocks, &c);
  assert_int_equal(c.active_after, 1);
  assert_true(c.held_after < FREE_BATCH_N);
  for (int i = 0; i < NBLOCKS; i++) assert_true(block_is_free(hak_base_from_raw(g_blocks[i])));
  assert_true(batched_frees_so_far() - batched > NBLOCKS / 2);
  hak_thread_flush();
}

// ---- misuse on a batching thread, each reported by its batch (children) ----

// Frees half the blocks; 1 if the thread batches now, its batch empty.
static int start_batching(void) {
  int i = 0;
  while (i < NBLOCKS / 2) hak_free(g_blocks[i++]);
  if (!t_free_batch_active) return 0;
  while (t_free_batch_p->n != 0) hak_free(g_blocks[i++]);
  return 1;
}
// Frees a batch's worth of the second half (after `start_batching`).
static void free_a_batch(void) {
  for (unsigned k = 0; k < FREE_BATCH_N; k++) hak_free(g_blocks[NBLOCKS - 1 - k]);
}

static void *double_free_in_a_batch(void *arg) {
  (void)arg;
  if (!start_batching()) return NULL;
  hak_free(g_blocks[0]);                        // freed already: held, not yet reported
  hak_write_str(2, "held\n");
  free_a_batch();
  hak_write_str(2, "after a batch\n");          // never reached
  return NULL;
}

static void *overflow_in_a_batch(void *arg) {
  (void)arg;
  char *p = g_blocks[NBLOCKS - 100];
  p[SIZE] = 'x';                                // one byte past the request: the canary
  if (!start_batching()) return NULL;
  hak_free(p);
  hak_write_str(2, "held\n");
  free_a_batch();
  hak_write_str(2, "after a batch\n");
  return NULL;
}

// A medium block is held too (to 32 KiB): its canary is checked by the batch.
static void *medium_overflow_in_a_batch(void *arg) {
  (void)arg;
  char *p = g_medium;
  p[MEDIUM] = 'x';
  if (!start_batching()) return NULL;
  hak_free(p);
  if (t_free_batch_p->n == 1) hak_write_str(2, "held\n");
  free_a_batch();
  hak_write_str(2, "after a batch\n");
  return NULL;
}

static void *wrong_sized_delete_in_a_batch(void *arg) {
  (void)arg;
  if (!start_batching()) return NULL;
  hak_free_fast_sized(g_blocks[NBLOCKS - 100], SIZE + 8, 1);   // delete with a wrong size
  hak_write_str(2, "held\n");
  free_a_batch();
  hak_write_str(2, "after a batch\n");
  return NULL;
}

static void *(*g_misuse)(void *);
static void misuse_on_a_batching_thread(void) {
  run_in_thread(alloc_blocks, NULL);
  run_in_thread(g_misuse, NULL);
}

static void expect_reported_by_the_batch(void *(*misuse)(void *), const char *what) {
  g_misuse = misuse;
  child_result_t r = run_in_child(misuse_on_a_batching_thread);
  assert_int_equal(r.signal, SIGABRT);
  if (!reported(&r, what)) fail_msg("stderr: \"%s\"", r.err);
  if (strstr(r.err, "held\n") == NULL || strstr(r.err, "after a batch") != NULL) fail_msg("stderr: \"%s\"", r.err);
}

static void test_a_double_free_on_a_batching_thread_is_reported_by_its_batch(void **state) {
  (void)state;
  expect_reported_by_the_batch(double_free_in_a_batch, "double free");
}

static void test_an_overflow_into_the_canary_is_reported_by_the_batch(void **state) {
  (void)state;
  expect_reported_by_the_batch(overflow_in_a_batch, "heap buffer overflow past");
}

static void test_an_overflow_of_a_medium_block_is_reported_by_the_batch(void **state) {
  (void)state;
  expect_reported_by_the_batch(medium_overflow_in_a_batch, "heap buffer overflow past");
}

static void test_a_sized_delete_with_the_wrong_size_is_reported_by_the_batch(void **state) {
  (void)state;
  expect_reported_by_the_batch(wrong_sized_delete_in_a_batch, "sized delete with the wrong size");
}

// ---- a big heap batches its own frees (as in the default build) ----
// Each free's mark, size word and canary loads wait on lines a heap of
// FREE_BATCH_HEAP_LINES blocks seldom has in a cache: `ws8192 -w 262144` of
// 16-128 B took 1.88x the default's time unbatched, 1.42x batched.
static void test_a_thread_with_a_big_heap_batches_its_own_frees_until_it_shrinks(void **state) {
  (void)state;
  expect_big_heap_batching_until_it_shrinks();
}

// A write after free on a batching big heap: the block went through its
// batch into the quarantine (filled) before the write, so the fill's check
// reports it before the block is handed out again.
static void big_heap_write_after_free(void) {
  void **v = malloc(HEAP_BLOCKS * sizeof *v);
  for (uint32_t i = 0; i < HEAP_BLOCKS; i++) v[i] = hak_malloc(48);
  if (!t_free_batch_active) _exit(3);
  char *p = v[7];
  hak_free(p);
  for (uint32_t i = 100; i < 100 + FREE_BATCH_N; i++) hak_free(v[i]);   // p's batch drains
  p[20] = 'x';                                                        // in the fill
  hak_write_str(2, "written\n");
  for (uint32_t i = 200; i < 200 + 4 * HARD_QUAR_SLOTS; i++) hak_free(v[i]);   // p leaves the quarantine
  for (uint32_t i = 0; i < 8 * HARD_QUAR_SLOTS; i++) v[i] = hak_malloc(48);   // the class's list, p on it
  hak_write_str(2, "handed out\n");
  _exit(0);
}
static void test_a_write_after_free_on_a_big_heap_is_reported(void **state) {
  (void)state;
  child_result_t r = run_in_child(big_heap_write_after_free);
  if (r.signal != SIGABRT) fail_msg("signal %d, stderr: \"%s\"", r.signal, r.err);
  if (!reported(&r, "write after free of")) fail_msg("stderr: \"%s\"", r.err);
  if (strstr(r.err, "written\n") == NULL || strstr(r.err, "handed out") != NULL) fail_msg("stderr: \"%s\"", r.err);
}

// A double free there: reported by its batch.
static void test_a_double_free_on_a_big_heap_is_reported_by_its_batch(void **state) {
  (void)state;
  expect_big_heap_double_free_reported_by_its_batch();
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_a_consumer_thread_batches_and_every_block_is_freed),
    HAK_UNIT_TEST(test_a_double_free_on_a_batching_thread_is_reported_by_its_batch),
    HAK_UNIT_TEST(test_an_overflow_into_the_canary_is_reported_by_the_batch),
    HAK_UNIT_TEST(test_an_overflow_of_a_medium_block_is_reported_by_the_batch),
    HAK_UNIT_TEST(test_a_sized_delete_with_the_wrong_size_is_reported_by_the_batch),
    HAK_UNIT_TEST(test_a_thread_with_a_big_heap_batches_its_own_frees_until_it_shrinks),
    HAK_UNIT_TEST(test_a_write_after_free_on_a_big_heap_is_reported),
    HAK_UNIT_TEST(test_a_double_free_on_a_big_heap_is_reported_by_its_batch),
  };
  return cmocka_run_group_tests_name("hardened_free_batch", tests, NULL, NULL);
}
