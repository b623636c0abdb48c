// hardened_test_dirty_budget.c — the hardened engine (HAK_HARDENED=1) counts a
// FREE slab in the purge budget by the pages its blocks and size table reached,
// not the whole slab. It counted every slab whole (its size table sits at the
// slab's end): one 2 MiB slab filled the 2 MiB budget, so every thread that
// left a few slabs made the next ones fault their memory in again (mstress -t
// 8: 1 316 purge calls against the default build's ~60, 1.9x its time).
#include "unit_util.h"

_Static_assert(HAK_HARDENED, "built against the hardened engine");

// A tiny class keeps each block's size word in the block: nothing at the
// slab's end, so the slab counts, and a purge gives back, what was carved
// (was: all 64 KiB).
static void test_a_tiny_slab_counts_the_pages_its_blocks_reached(void **state) {
  (void)state;
  check_a_lightly_used_slab(100, 0, 4);
}

// A medium class's size table sits at the slab's end: the slab counts its
// carved pages and the table's two, and a purge gives back the whole slab (one
// call; the pages between were never touched). Was: all 512 KiB counted.
static void test_a_medium_slab_counts_its_carved_pages_and_its_size_table(void **state) {
  (void)state;
  check_a_lightly_used_slab(5000, 1, 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_a_tiny_slab_counts_the_pages_its_blocks_reached),
    HAK_UNIT_TEST(test_a_medium_slab_counts_its_carved_pages_and_its_size_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
