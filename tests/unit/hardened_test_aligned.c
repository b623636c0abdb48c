// hardened_test_aligned.c — where the hardened engine puts aligned blocks:
// slabs up to a slab class's size (alignment up to a page), the page heap
// for larger ones and for small blocks aligned past a page (up to
// PAGE_HEAP_ALIGN_MAX), each block still ending at its guard page or canary.
// Each was a mapping and a guard page before (two of vm.max_map_count's
// 65 530 a live block: 32 000 live posix_memalign(64, 40000) reached it).
#include <errno.h>

#include "unit_util.h"
#include "debug/report.h"
#include "large/page_heap.h"
#include "superslab/ss_registry.h"

_Static_assert(HAK_HARDENED, "built against the hardened engine");

#define HELD 64

static void check_block(void *p, size_t align, size_t size) {
  if (p == NULL) fail_msg("no block for alignment %zu size %zu", align, size);
  if (((uintptr_t)p & (align - 1)) != 0) fail_msg("alignment %zu size %zu: %p", align, size, p);
  if (hak_usable_size(p) != size) fail_msg("alignment %zu size %zu: usable %zu", align, size, hak_usable_size(p));
}

// Fill HELD blocks of (align, size) whole, check that none is a huge mapping
// and each lies where `in_slab` says, then check their bytes and free them.
static void hold_aligned(size_t align, size_t size, int in_slab) {
  static unsigned char *held[HELD];
  hak_trim();
  hak_stats_t before = stats_now();
  for (int i = 0; i < HELD; i++) {
    assert_int_equal(hak_posix_memalign((void **)&held[i], align, size), 0);
    check_block(held[i], align, size);
    if (in_slab != ss_registry_contains(held[i]))
      fail_msg("alignment %zu size %zu: %s a slab", align, size, in_slab ? "not in" : "in");
    if (!in_slab && !page_heap_contains(held[i])) fail_msg("alignment %zu size %zu: not in the page heap", align, size);
    memset(held[i], i + 1, size);
  }
  assert_int_equal(stats_now().huge_count, before.huge_count);
  for (int i = 0; i < HELD; i++) {
    assert_int_equal(held[i][0], i + 1);
    assert_int_equal(held[i][size - 1], i + 1);
    hak_free(held[i]);
  }
  hak_trim();
}

static void test_aligned_blocks_up_to_the_largest_slab_class_come_from_slabs(void **state) {
  (void)state;
  static const size_t sizes[] = {40000, 100000, 250000};
  for (size_t a = 32; a <= 4096; a <<= 1)
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) hold_aligned(a, sizes[i], 1);
}

static void test_small_blocks_aligned_past_a_page_come_from_the_page_heap(void **state) {
  (void)state;
  for (size_t a = 8192; a <= PAGE_HEAP_ALIGN_MAX; a <<= 1) hold_aligned(a, 64, 0);
  hold_aligned(65536, 100000, 0);
}

static void test_larger_blocks_aligned_up_to_a_page_come_from_the_page_heap(void **state) {
  (void)state;
  hold_aligned(64, 300000, 0);
  hold_aligned(4096, 1000000, 0);
}

// The byte past the request of an aligned page-heap block: the guard page's
// when the alignment allows, else the tail canary's (up to the alignment
// less one byte), which free checks.
static void overflow_past_a_64_aligned_large_block(void) {
  unsigned char *p = NULL;
  if (hak_posix_memalign((void **)&p, 64, 300001) != 0) _exit(3);
  p[300001] = 0;                       // 47 bytes before the guard page: the tail
  hak_free(p);
  hak_write_str(2, "freed\n");
  _exit(0);
}

static void overflow_past_a_page_aligned_small_block(void) {
  unsigned char *p = NULL;
  if (hak_posix_memalign((void **)&p, 65536, 100) != 0) _exit(3);
  p[100] = 0;                          // a page less 100 bytes before the guard
  hak_free(p);
  hak_write_str(2, "freed\n");
  _exit(0);
}

static void test_an_overflow_past_an_aligned_large_block_is_reported(void **state) {
  (void)state;
  child_result_t r = run_in_child(overflow_past_a_64_aligned_large_block);
  assert_true(reported(&r, "heap buffer overflow past a large block"));
  r = run_in_child(overflow_past_a_page_aligned_small_block);
  assert_true(reported(&r, "heap buffer overflow past a large block"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_aligned_blocks_up_to_the_largest_slab_class_come_from_slabs),
    HAK_UNIT_TEST(test_small_blocks_aligned_past_a_page_come_from_the_page_heap),
    HAK_UNIT_TEST(test_larger_blocks_aligned_up_to_a_page_come_from_the_page_heap),
    HAK_UNIT_TEST(test_an_overflow_past_an_aligned_large_block_is_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
