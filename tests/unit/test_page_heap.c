// test_page_heap.c — large blocks (src/large/page_heap.*): runs of pages in
// 64 MiB regions, reused and coalesced without system calls, grown in place,
// and given back.
#include "unit_util.h"
#include "config/config.h"
#include "large/huge.h"
#include "large/page_heap.h"

#define KIB (1u << 10)
#define MIB (1u << 20)

static void test_a_freed_large_block_is_reused_by_the_next_of_its_size(void **state) {
  (void)state;
  void *p = hak_malloc(3 * MIB);
  hak_free(p);
  void *q = hak_malloc(3 * MIB);
  assert_ptr_equal(q, p);
  hak_free(q);
}

static void test_large_blocks_are_page_aligned_and_usable_to_their_size(void **state) {
  (void)state;
  size_t sizes[] = {HAK_SLAB_MAX + 1, 300 * KIB, MIB + 1, 7 * MIB + 5, PAGE_HEAP_MAX};
  for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    char *p = hak_malloc(sizes[i]);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 4096, 0);
    assert_true(hak_usable_size(p) >= sizes[i]);
    p[sizes[i] - 1] = 1;
    hak_free(p);
  }
}

static void test_two_freed_neighbours_merge_into_one_run(void **state) {
  (void)state;
  char *a = hak_malloc(2 * MIB);
  char *b = hak_malloc(2 * MIB);
  char *guard = hak_malloc(2 * MIB);            // keeps the run after b in use
  assert_ptr_equal(b, a + 2 * MIB);             // carved one after the other
  hak_free(a);
  hak_free(b);
  char *c = hak_malloc(4 * MIB);                // fits only in the merged run
  assert_ptr_equal(c, a);
  hak_free(c);
  hak_free(guard);
}

static void test_realloc_grows_a_large_block_in_place_into_a_free_neighbour(void **state) {
  (void)state;
  char *a = hak_malloc(MIB);
  char *b = hak_malloc(MIB);
  assert_ptr_equal(b, a + MIB);
  memset(a, 0x5a, MIB);
  hak_free(b);
  char *g = hak_realloc(a, 2 * MIB);
  assert_ptr_equal(g, a);
  assert_true(hak_usable_size(g) >= 2 * MIB);
  for (size_t i = 0; i < MIB; i += 4096) assert_int_equal((unsigned char)g[i], 0x5a);
  hak_free(g);
}

static void test_calloc_of_a_reused_large_block_reads_zero(void **state) {
  (void)state;
  unsigned char *p = hak_malloc(MIB);
  memset(p, 0xff, MIB);
  hak_free(p);
  unsigned char *q = hak_calloc(1, MIB);
  assert_ptr_equal(q, p);
  for (size_t i = 0; i < MIB; i++)
    if (q[i] != 0) fail_msg("byte %zu of a calloc'ed reused block is %u", i, q[i]);
  hak_free(q);
}

static void test_large_blocks_count_in_the_stats(void **state) {
  (void)state;
  size_t before = stats_now().large_count;
  void *p = hak_malloc(5 * MIB);
  assert_int_equal(stats_now().large_count, before + 1);
  assert_true(stats_now().large_bytes >= 5 * MIB);
  hak_free(p);
  assert_int_equal(stats_now().large_count, before);
}

static void test_trim_unmaps_regions_with_no_live_block(void **state) {
  (void)state;
  void *p = hak_malloc(8 * MIB);
  assert_true(stats_now().large_regions >= 1);
  hak_free(p);
  hak_trim();
  assert_int_equal(stats_now().large_count, 0);
  assert_int_equal(stats_now().large_regions, 0);
  assert_false(page_heap_contains(p));
}

static void test_an_interior_address_of_a_large_block_is_owned_and_not_a_block(void **state) {
  (void)state;
  char *p = hak_malloc(3 * MIB);
  assert_true(hak_owns(p + MIB + 17));
  assert_true(page_heap_owns(p + MIB));
  assert_int_equal(page_heap_usable_size(p + MIB), 0);
  hak_free(p);
  assert_false(hak_owns(p));
}

static void test_freed_large_memory_goes_back_past_the_dirty_budget(void **state) {
  (void)state;
  enum { N = 192 };                              // 192 MiB live, then freed
  static char *blocks[N];
  for (int i = 0; i < N; i++) {
    blocks[i] = hak_malloc(MIB);
    memset(blocks[i], 1, MIB);
  }
  size_t peak = rss_bytes();
  for (int i = 0; i < N; i++) hak_free(blocks[i]);
  size_t after = rss_bytes();
  // The dirty budget is max(64 MiB, twice the live bytes): with nothing
  // live, at most 64 MiB of freed pages may stay resident.
  if (!(after + 96 * (size_t)MIB < peak)) fail_msg("rss peak %zu MiB, after freeing %zu MiB", peak >> 20, after >> 20);
  hak_trim();
}

#define AN_HOUR_MS (3600u * 1000u)

// Free a fresh 2 MiB block with HAKMEM_LARGE_DIRTY_MB = dirty_min and a purge
// delay of an hour that starts now; returns the page heap's dirty bytes then.
static size_t dirty_after_free(size_t dirty_min) {
  size_t keep_min = g_hak_config.large_dirty_min;
  uint32_t keep_delay = g_hak_config.large_purge_delay_ms;
  hak_trim();                                    // starts the purge delay now
  g_hak_config.large_dirty_min = dirty_min;
  g_hak_config.large_purge_delay_ms = AN_HOUR_MS;
  hak_free(hak_malloc(2 * MIB));
  page_heap_stats_t st;
  page_heap_get_stats(&st);
  g_hak_config.large_dirty_min = keep_min;
  g_hak_config.large_purge_delay_ms = keep_delay;
  hak_trim();
  return st.dirty_bytes;
}

static void test_a_freed_large_block_stays_resident_below_the_dirty_budget_before_the_delay(void **state) {
  (void)state;
  assert_int_equal(dirty_after_free((size_t)1 << 30), 2 * MIB);
}

static void test_a_freed_large_block_past_the_dirty_minimum_is_purged_at_once(void **state) {
  (void)state;
  assert_int_equal(dirty_after_free(0), 0);      // nothing live, no minimum: no budget
}

// After every test: the page heap and the huge table/cache hold their
// invariants in full (debug builds; the validators are no-ops in release).
static int teardown_validate(void **state) {
  (void)state;
  page_heap_validate();
  huge_validate();
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_teardown(test_a_freed_large_block_is_reused_by_the_next_of_its_size, teardown_validate),
    cmocka_unit_test_teardown(test_large_blocks_are_page_aligned_and_usable_to_their_size, teardown_validate),
    cmocka_unit_test_teardown(test_two_freed_neighbours_merge_into_one_run, teardown_validate),
    cmocka_unit_test_teardown(test_realloc_grows_a_large_block_in_place_into_a_free_neighbour, teardown_validate),
    cmocka_unit_test_teardown(test_calloc_of_a_reused_large_block_reads_zero, teardown_validate),
    cmocka_unit_test_teardown(test_large_blocks_count_in_the_stats, teardown_validate),
    cmocka_unit_test_teardown(test_trim_unmaps_regions_with_no_live_block, teardown_validate),
    cmocka_unit_test_teardown(test_an_interior_address_of_a_large_block_is_owned_and_not_a_block, teardown_validate),
    cmocka_unit_test_teardown(test_freed_large_memory_goes_back_past_the_dirty_budget, teardown_validate),
    cmocka_unit_test_teardown(test_a_freed_large_block_stays_resident_below_the_dirty_budget_before_the_delay,
                              teardown_validate),
    cmocka_unit_test_teardown(test_a_freed_large_block_past_the_dirty_minimum_is_purged_at_once, teardown_validate),
  };
  return cmocka_run_group_tests_name("page_heap", tests, NULL, NULL);
}
