// test_memory_return.c — "memory goes back" (DESIGN.md §2): 256 MiB of 64-byte
// blocks (4M blocks), all freed, then RSS read from /proc/self/statm. Without any
// call after the frees the purge done on the free path must already have brought
// RSS under 10% of the peak; after hak_trim() it must be close to where it started.
// The blocks are chained through their first word, so the test holds no table.
#include "unit_util.h"

#define BLOCK   64u
#define TOTAL   ((size_t)256 << 20)
#define MIB     (1u << 20)

typedef struct rss_figures { size_t start, peak, after; } rss_figures_t;

static size_t g_rss_at_program_start;   // before the allocator mapped anything

static rss_figures_t allocate_and_free_all(int trim) {
  rss_figures_t r;
  r.start = rss_bytes();
  held_blocks_t h = {NULL, 0};
  for (size_t i = 0; i < TOTAL / BLOCK; i++) {
    char *p = hak_malloc(BLOCK);
    if (p == NULL) break;
    p[BLOCK - 1] = 1;
    held_push(&h, p);
  }
  r.peak = rss_bytes();
  held_free_all(&h);
  if (trim) hak_trim();
  usleep(200 * 1000);                  // an idle program: no allocator call
  r.after = rss_bytes();
  print_message("rss: program start %zu KiB, start %zu MiB, peak %zu MiB, after free%s %zu KiB\n",
                g_rss_at_program_start / 1024, r.start / MIB, r.peak / MIB,
                trim ? " + hak_trim()" : "", r.after / 1024);
  return r;
}

static void test_rss_falls_under_a_tenth_of_the_peak_after_freeing_without_any_call(void **state) {
  (void)state;
  rss_figures_t r = allocate_and_free_all(0);
  assert_true(r.peak >= TOTAL);
  assert_true(r.after < r.peak / 10);
}

static void test_rss_falls_back_near_its_start_after_trim(void **state) {
  (void)state;
  rss_figures_t r = allocate_and_free_all(1);
  assert_true(r.peak >= TOTAL);
  assert_true(r.after <= g_rss_at_program_start + 4 * MIB);
}

// The same memory allocated by threads that exit holding every block, then
// freed by main: the slabs were abandoned, and the frees leave them EMPTY on
// the abandoned stacks, which the dirty budget did not count. An idle program
// kept all of it (72 of 72 MB with four threads' 16 MiB each).
#define THREADS 4u

static void *allocate_a_share(void *arg) {
  held_blocks_t *h = arg;
  for (size_t i = 0; i < TOTAL / THREADS / BLOCK; i++) {
    char *p = hak_malloc(BLOCK);
    if (p == NULL) break;
    p[BLOCK - 1] = 1;
    held_push(h, p);
  }
  return NULL;                         // exits holding every block: its slabs are abandoned
}

static void test_rss_falls_after_freeing_the_blocks_of_exited_threads_without_any_call(void **state) {
  (void)state;
  size_t start = rss_bytes();
  held_blocks_t h[THREADS];
  pthread_t t[THREADS];
  for (unsigned i = 0; i < THREADS; i++) {
    h[i] = (held_blocks_t){NULL, 0};
    assert_int_equal(pthread_create(&t[i], NULL, allocate_a_share, &h[i]), 0);
  }
  for (unsigned i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  size_t peak = rss_bytes();
  for (unsigned i = 0; i < THREADS; i++) held_free_all(&h[i]);
  usleep(200 * 1000);                  // an idle program: no allocator call
  size_t after = rss_bytes();
  print_message("rss: start %zu MiB, peak %zu MiB, after the frees %zu KiB\n", start / MIB, peak / MIB, after / 1024);
  assert_true(peak >= TOTAL);
  assert_true(after < peak / 10);
}

int main(void) {
  g_rss_at_program_start = rss_bytes();
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_rss_falls_under_a_tenth_of_the_peak_after_freeing_without_any_call),
    HAK_UNIT_TEST(test_rss_falls_back_near_its_start_after_trim),
    HAK_UNIT_TEST(test_rss_falls_after_freeing_the_blocks_of_exited_threads_without_any_call),
  };
  return cmocka_run_group_tests_name("memory_return", tests, NULL, NULL);
}
