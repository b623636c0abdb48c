// test_os_map.c — aligned mappings (os.c): a place given back is taken again
// by the next mapping of its size, and what is mapped and unmapped over and
// over stays in one place instead of walking down the address space (under
// ASan every new place touched left its shadow resident: the fuzz target's RSS
// grew by ~200 MB per 1 000 inputs).
#include "unit_util.h"
#include "os/os.h"

#define MIB ((size_t)1 << 20)
#define REGION (64 * MIB)      // page_heap.c's region, aligned to its size
#define ROUNDS 64u

static void test_a_freed_aligned_place_is_mapped_again_by_the_next_of_its_size(void **state) {
  (void)state;
  char *a = os_map_aligned(4 * MIB, 4 * MIB);
  assert_non_null(a);
  a[0] = 1;
  os_unmap(a, 4 * MIB);
  char *b = os_map_aligned(4 * MIB, 4 * MIB);
  assert_ptr_equal(b, a);              // before: 4 MiB lower, the hint's next place
  assert_int_equal(b[0], 0);           // a fresh mapping
  os_unmap(b, 4 * MIB);
}

// SuperSlabs are unmapped one by one from their chunk: the pieces merge into
// the chunk's place, which the next chunk takes.
static void test_the_pieces_of_a_chunk_unmapped_one_by_one_make_its_place_again(void **state) {
  (void)state;
  const size_t chunk = 16 * MIB, piece = 2 * MIB;
  static const unsigned order[8] = {5, 0, 3, 6, 1, 7, 2, 4};
  char *c = os_map_aligned(chunk, chunk);
  assert_non_null(c);
  for (unsigned i = 0; i < 8; i++) os_unmap(c + order[i] * piece, piece);
  char *d = os_map_aligned(chunk, chunk);
  assert_ptr_equal(d, c);
  os_unmap(d, chunk);
}

// A small block of a large alignment (huge.c maps it alone) is placed by the
// kernel, in the gap the last one left, not an alignment below the last.
static void test_small_mappings_of_a_large_alignment_do_not_walk_down(void **state) {
  (void)state;
  uintptr_t lo = UINTPTR_MAX, hi = 0;
  for (unsigned i = 0; i < ROUNDS; i++) {
    char *p = os_map_aligned(4096, 2 * MIB);
    assert_non_null(p);
    assert_true(((uintptr_t)p & (2 * MIB - 1)) == 0);
    p[4095] = 1;
    if ((uintptr_t)p < lo) lo = (uintptr_t)p;
    if ((uintptr_t)p > hi) hi = (uintptr_t)p;
    os_unmap(p, 4096);
  }
  // Before: each one 2 MiB below the last, 126 MiB apart in all.
  assert_true(hi - lo <= 8 * MIB);
}

// A page-heap region unmapped by hak_trim and mapped again for the next large
// block: the same place, round after round.
static void test_a_region_trimmed_and_mapped_again_keeps_its_place(void **state) {
  (void)state;
  uintptr_t first = 0;
  for (unsigned i = 0; i < ROUNDS; i++) {
    char *p = hak_malloc(300 * 1024);
    assert_non_null(p);
    p[0] = 1;
    uintptr_t region = (uintptr_t)p & ~(uintptr_t)(REGION - 1);
    if (i == 0) first = region;
    assert_true(region == first);        // before: 64 MiB lower every round
    hak_free(p);
    hak_trim();
    assert_int_equal(stats_now().large_regions, 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_a_freed_aligned_place_is_mapped_again_by_the_next_of_its_size),
    HAK_UNIT_TEST(test_the_pieces_of_a_chunk_unmapped_one_by_one_make_its_place_again),
    HAK_UNIT_TEST(test_small_mappings_of_a_large_alignment_do_not_walk_down),
    HAK_UNIT_TEST(test_a_region_trimmed_and_mapped_again_keeps_its_place),
  };
  return cmocka_run_group_tests_name("os_map", tests, NULL, NULL);
}
