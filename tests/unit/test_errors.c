// test_errors.c — bad frees are reported in one "hakmem:" line on stderr and abort
// (HAKMEM_ABORT_ON_ERROR defaults to 1). Each case runs in a forked child whose
// stderr goes to a pipe; the parent checks the signal and the line.
#include "unit_util.h"

static void double_free_most_recent(void) {
  void *p = hak_malloc(48);
  hak_free(p);
  hak_free(p);
}

static void free_interior_pointer(void) {
  char *p = hak_malloc(64);
  hak_free(p + 8);
}

static void double_free_after_flush(void) {
  void *keep = hak_malloc(32);         // keeps the slab from going back to the pool
  void *p = hak_malloc(32);
  hak_free(p);
  hak_thread_flush();                  // p is on its slab's free list now
  hak_free(p);
  hak_thread_flush();
  (void)keep;
}

// A large block (the page heap: above the slabs' 256 KiB) freed twice, and
// its size asked after its free: reported as a freed block (these said "not
// the start of a large block", as for a wild pointer).
static void double_free_large(void) {
  void *p = hak_malloc(1u << 20);
  hak_free(p);
  hak_free(p);
}

static void usable_size_of_freed_large(void) {
  void *p = hak_malloc(1u << 20);
  hak_free(p);
  (void)hak_usable_size(p);
}

static void *malloc_80(void *arg) {
  (void)arg;
  return hak_malloc(80);
}

static void free_of_block_in_a_trimmed_slab(void) {
  void *pin = hak_malloc(640);         // keeps a slab of the SuperSlab bound
  void *p = run_in_thread(malloc_80, NULL);
  hak_free(p);
  hak_trim();                          // p's slab: EMPTY, then FREE in the pool
  hak_free(p);
  (void)pin;
}

static void test_double_free_of_the_most_recent_block_aborts(void **state) {
  (void)state;
  child_result_t r = run_in_child(double_free_most_recent);
  assert_int_equal(r.signal, SIGABRT);
}

static void test_double_free_of_the_most_recent_block_is_reported(void **state) {
  (void)state;
  child_result_t r = run_in_child(double_free_most_recent);
  if (!reported(&r, "double free")) fail_msg("stderr: \"%s\"", r.err);
}

static void test_free_of_an_interior_pointer_aborts(void **state) {
  (void)state;
  child_result_t r = run_in_child(free_interior_pointer);
  assert_int_equal(r.signal, SIGABRT);
}

static void test_free_of_an_interior_pointer_is_reported(void **state) {
  (void)state;
  child_result_t r = run_in_child(free_interior_pointer);
  if (!reported(&r, "interior pointer")) fail_msg("stderr: \"%s\"", r.err);
}

static void test_double_free_of_a_block_already_flushed_to_its_slab_is_reported(void **state) {
  (void)state;
  child_result_t r = run_in_child(double_free_after_flush);
  assert_int_equal(r.signal, SIGABRT);
  if (!reported(&r, "double free")) fail_msg("stderr: \"%s\"", r.err);
}

static void test_free_of_a_block_whose_slab_went_back_to_the_pool_is_reported(void **state) {
  (void)state;
  child_result_t r = run_in_child(free_of_block_in_a_trimmed_slab);
  assert_int_equal(r.signal, SIGABRT);
  if (!reported(&r, "hakmem: ")) fail_msg("stderr: \"%s\"", r.err);
}

static void test_double_free_of_a_large_block_is_reported_as_one(void **state) {
  (void)state;
  child_result_t r = run_in_child(double_free_large);
  assert_int_equal(r.signal, SIGABRT);
  if (!reported(&r, "hakmem: double free of 0x")) fail_msg("stderr: \"%s\"", r.err);
}

static void test_usable_size_of_a_freed_large_block_is_reported_as_freed(void **state) {
  (void)state;
  child_result_t r = run_in_child(usable_size_of_freed_large);
  assert_int_equal(r.signal, SIGABRT);
  if (!reported(&r, "(a freed large block: use after free or double free)")) fail_msg("stderr: \"%s\"", r.err);
}

static void test_valid_frees_report_nothing(void **state) {
  (void)state;
  child_result_t r = run_in_child(hak_thread_flush);
  assert_int_equal(r.signal, 0);
  assert_string_equal(r.err, "");
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_double_free_of_the_most_recent_block_aborts),
    HAK_UNIT_TEST(test_double_free_of_the_most_recent_block_is_reported),
    HAK_UNIT_TEST(test_free_of_an_interior_pointer_aborts),
    HAK_UNIT_TEST(test_free_of_an_interior_pointer_is_reported),
    HAK_UNIT_TEST(test_double_free_of_a_block_already_flushed_to_its_slab_is_reported),
    HAK_UNIT_TEST(test_free_of_a_block_whose_slab_went_back_to_the_pool_is_reported),
    HAK_UNIT_TEST(test_double_free_of_a_large_block_is_reported_as_one),
    HAK_UNIT_TEST(test_usable_size_of_a_freed_large_block_is_reported_as_freed),
    HAK_UNIT_TEST(test_valid_frees_report_nothing),
  };
  return cmocka_run_group_tests_name("errors", tests, NULL, NULL);
}
