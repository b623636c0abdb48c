// test_huge.c — blocks above PAGE_HEAP_MAX (src/large/huge.*): direct mappings,
// grown and shrunk with mremap, content kept; and realloc across the tiers.
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "unit_util.h"
#include "config/config.h"
#include "large/huge.h"
#include "large/page_heap.h"
#include "os/os.h"

#define MIB (1u << 20)
#define HUGE (PAGE_HEAP_MAX + MIB)    // the smallest size class that is a direct mapping

static void fill(unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 131u + seed + (i >> 12));
}

static size_t first_mismatch(const unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (unsigned char)(i * 131u + seed + (i >> 12))) return i;
  return n;
}

static void test_huge_realloc_grow_keeps_content(void **state) {
  (void)state;
  unsigned char *p = hak_malloc(MIB);
  fill(p, MIB, 1);
  unsigned char *q = hak_realloc(p, 16 * MIB);
  assert_non_null(q);
  assert_int_equal(first_mismatch(q, MIB, 1), MIB);
  hak_free(q);
}

static void test_huge_realloc_grow_gives_the_new_size(void **state) {
  (void)state;
  unsigned char *p = hak_malloc(MIB);
  unsigned char *q = hak_realloc(p, 16 * MIB);
  assert_true(hak_usable_size(q) >= 16 * MIB);
  q[16 * MIB - 1] = 1;
  hak_free(q);
}

static void test_huge_realloc_grow_moves_no_mapping_to_the_cache(void **state) {
  (void)state;
  hak_trim();                          // empty the huge cache
  unsigned char *p = hak_malloc(HUGE);
  unsigned char *q = hak_realloc(p, 3 * HUGE);   // mremap, not malloc + copy + free
  assert_int_equal(stats_now().huge_cached_bytes, 0);
  assert_int_equal(stats_now().huge_count, 1);
  hak_free(q);
}

// A huge block grown by less than a quarter is remapped a quarter larger, so
// the next small steps stay in place: a buffer grown 64 KiB at a time past
// 32 MiB made an mremap at every step (3 840 in ten buffers of 64 MiB; 30
// now), each one moving the page tables when the address space after the
// mapping was taken.
static void test_huge_realloc_by_a_little_takes_a_quarter_more(void **state) {
  (void)state;
  unsigned char *p = hak_malloc(HUGE);
  fill(p, 64 << 10, 7);
  unsigned char *q = hak_realloc(p, HUGE + (64 << 10));
  assert_non_null(q);
  assert_true(hak_usable_size(q) >= (size_t)HUGE + HUGE / 4);
  unsigned char *r = hak_realloc(q, HUGE + (128 << 10));   // within it: in place
  assert_ptr_equal(r, q);
  assert_int_equal(first_mismatch(r, 64 << 10, 7), 64 << 10);
  hak_free(r);
}

static void test_huge_realloc_shrink_keeps_content(void **state) {
  (void)state;
  unsigned char *p = hak_malloc(8 * MIB);
  fill(p, 8 * MIB, 2);
  unsigned char *q = hak_realloc(p, MIB + 123);
  assert_non_null(q);
  assert_int_equal(first_mismatch(q, MIB + 123, 2), MIB + 123);
  hak_free(q);
}

static void test_huge_realloc_shrink_releases_the_tail(void **state) {
  (void)state;
  unsigned char *p = hak_malloc(8 * MIB);
  unsigned char *q = hak_realloc(p, MIB);
  size_t usable = hak_usable_size(q);
  assert_true(usable >= MIB);
  assert_true(usable < 2 * MIB);
  hak_free(q);
}

static void test_realloc_from_huge_to_slab_size_keeps_content(void **state) {
  (void)state;
  unsigned char *p = hak_malloc(2 * MIB);
  fill(p, 2 * MIB, 3);
  unsigned char *q = hak_realloc(p, 100000);
  assert_non_null(q);
  assert_true(ss_registry_contains(q));
  assert_int_equal(first_mismatch(q, 100000, 3), 100000);
  hak_free(q);
}

static void test_realloc_from_slab_to_huge_keeps_content(void **state) {
  (void)state;
  unsigned char *p = hak_malloc(200000);
  fill(p, 200000, 4);
  unsigned char *q = hak_realloc(p, 3 * MIB);
  assert_non_null(q);
  assert_int_equal(first_mismatch(q, 200000, 4), 200000);
  hak_free(q);
}

static void test_huge_free_drops_the_live_count(void **state) {
  (void)state;
  size_t before = stats_now().huge_count;
  void *p = hak_malloc(HUGE);
  assert_int_equal(stats_now().huge_count, before + 1);
  hak_free(p);
  assert_int_equal(stats_now().huge_count, before);
}

static void test_trim_empties_the_huge_cache(void **state) {
  (void)state;
  size_t keep = g_hak_config.huge_cache_max;
  g_hak_config.huge_cache_max = 8 * HUGE;     // default keeps no mapping this large
  hak_free(hak_malloc(HUGE));
  assert_true(stats_now().huge_cached_bytes > 0);
  g_hak_config.huge_cache_max = keep;
  hak_trim();
  assert_int_equal(stats_now().huge_cached_bytes, 0);
}

// Regression: a full cache evicted its oldest slot without emptying it, so the
// byte-limit loop unmapped that mapping a second time and the cached-bytes
// counter wrapped below zero.
static void test_cache_eviction_under_pressure_unmaps_each_mapping_once(void **state) {
  (void)state;
  size_t keep = g_hak_config.huge_cache_max;
  g_hak_config.huge_cache_max = 64 * HUGE;    // room for every slot, so the limit loop runs
  void *p[40];
  for (int i = 0; i < 40; i++) p[i] = hak_malloc(HUGE + (size_t)i * 4096u);
  void *big = hak_malloc(16 * HUGE);
  for (int i = 0; i < 40; i++) hak_free(p[i]);
  hak_free(big);
  hak_stats_t st;
  hak_get_stats(&st);
  assert_true(st.huge_cached_bytes <= 64 * HUGE);
  g_hak_config.huge_cache_max = keep;
  hak_trim();
  hak_get_stats(&st);
  assert_int_equal(st.huge_cached_bytes, 0);
}

static void test_interior_address_of_a_huge_block_is_owned(void **state) {
  (void)state;
  char *p = hak_malloc(3 * MIB);
  assert_true(hak_owns(p + 4096));
  hak_free(p);
}

#define AN_HOUR_MS (3600u * 1000u)

// A freed huge mapping in the cache, with HAKMEM_HUGE_CACHE_DELAY_MS = delay_ms;
// returns the cached bytes after a non-forced trim (an expiry pass).
static size_t cached_after_expiry_pass(uint32_t delay_ms) {
  size_t keep_max = g_hak_config.huge_cache_max;
  uint32_t keep_delay = g_hak_config.huge_cache_delay_ms;
  hak_trim();
  g_hak_config.huge_cache_max = 8 * HUGE;     // default keeps no mapping this large
  g_hak_config.huge_cache_delay_ms = delay_ms;
  hak_free(hak_malloc(HUGE));
  huge_trim(0);
  size_t cached = stats_now().huge_cached_bytes;
  g_hak_config.huge_cache_max = keep_max;
  g_hak_config.huge_cache_delay_ms = keep_delay;
  hak_trim();
  return cached;
}

static void test_a_cached_huge_mapping_is_kept_until_the_cache_delay_passes(void **state) {
  (void)state;
  assert_true(cached_after_expiry_pass(AN_HOUR_MS) >= HUGE);
}

static void test_a_cached_huge_mapping_past_the_cache_delay_is_unmapped(void **state) {
  (void)state;
  assert_int_equal(cached_after_expiry_pass(0), 0);
}

// A huge block above a quarter of HAKMEM_HUGE_CACHE_MB freed once goes back at
// once, as glibc's would; one the program takes and frees in a loop (a 64 MiB
// buffer a round: mapped and faulted in afresh each round, 20x tcmalloc's
// time) is kept from its second round, and the next round gets it again.
#define LOOP_BLOCK (64u * MIB)
static void test_a_huge_block_freed_once_goes_back_at_once(void **state) {
  (void)state;
  hak_trim();
  hak_free(hak_malloc(LOOP_BLOCK));
  assert_int_equal(stats_now().huge_cached_bytes, 0);
  hak_trim();
}

static void test_a_huge_block_taken_and_freed_in_a_loop_is_kept_for_the_next_round(void **state) {
  (void)state;
  hak_trim();
  hak_free(hak_malloc(LOOP_BLOCK));
  void *second = hak_malloc(LOOP_BLOCK);
  assert_non_null(second);
  memset(second, 7, LOOP_BLOCK);
  hak_free(second);
  assert_true(stats_now().huge_cached_bytes >= LOOP_BLOCK);
  void *third = hak_malloc(LOOP_BLOCK);
  assert_ptr_equal(third, second);
  hak_free(third);
  hak_trim();
  assert_int_equal(stats_now().huge_cached_bytes, 0);
}

// calloc from a cached mapping clears it: with memset when its last block
// was written whole (stores instead of page faults), else by giving its pages
// back (a calloc of 64 MiB of which 64 KiB is used took 100x glibc's time
// when the whole mapping was cleared with memset); both read as zero.
static void *loop_to_cached(size_t write_bytes) {
  hak_trim();
  hak_free(hak_malloc(LOOP_BLOCK));           // the loop starts at the next fresh one
  unsigned char *p = hak_malloc(LOOP_BLOCK);
  memset(p, 0xa5, write_bytes);
  hak_free(p);
  assert_true(stats_now().huge_cached_bytes >= LOOP_BLOCK);
  return p;
}
static size_t first_nonzero_page(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i += 4096)
    if (p[i] != 0 || p[i + 4095] != 0) return i;
  return n;
}
static void test_calloc_of_a_cached_mapping_written_whole_reads_zero(void **state) {
  (void)state;
  void *cached = loop_to_cached(LOOP_BLOCK);
  unsigned char *q = hak_calloc(1, LOOP_BLOCK);
  assert_ptr_equal(q, cached);
  assert_int_equal(first_nonzero_page(q, LOOP_BLOCK), LOOP_BLOCK);
  hak_free(q);
  hak_trim();
}
static void test_calloc_of_a_cached_mapping_barely_written_gives_its_pages_back(void **state) {
  (void)state;
  void *cached = loop_to_cached(64u << 10);
  unsigned char *q = hak_calloc(1, LOOP_BLOCK);
  assert_ptr_equal(q, cached);
  size_t resident = os_resident_pages(q, LOOP_BLOCK / 4096);
  assert_true(resident < 64);                 // not cleared page by page
  assert_int_equal(first_nonzero_page(q, LOOP_BLOCK), LOOP_BLOCK);
  hak_free(q);
  hak_trim();
}

// The same, its pages locked as they fault in (mlock2's MLOCK_ONFAULT: the
// mapping stays mostly unpopulated), so the kernel refuses to give them back:
// cleared with memset instead. (Counted given back, they kept 0xa5.)
static void test_calloc_of_a_cached_mapping_locked_on_fault_reads_zero(void **state) {
  (void)state;
  void *cached = loop_to_cached(64u << 10);
  if (mlock2(cached, LOOP_BLOCK, MLOCK_ONFAULT) != 0) {
    print_message("skipped: mlock2 refused (%s)\n", strerror(errno));
    hak_trim();
    return;
  }
  unsigned char *q = hak_calloc(1, LOOP_BLOCK);
  assert_ptr_equal(q, cached);
  assert_int_equal(first_nonzero_page(q, LOOP_BLOCK), LOOP_BLOCK);
  munlock(q, LOOP_BLOCK);
  hak_free(q);
  hak_trim();
}

// Two loops at once (two threads, each with a buffer of its own size): each
// keeps its mapping; one loop's did not evict the other's.
static void test_two_huge_loops_of_different_sizes_keep_a_mapping_each(void **state) {
  (void)state;
  const size_t a = 40u * MIB, b = 150u * MIB;
  hak_trim();
  void *last_a = NULL, *last_b = NULL;
  for (int round = 0; round < 3; round++) {
    void *p = hak_malloc(a);
    void *q = hak_malloc(b);
    assert_non_null(p);
    assert_non_null(q);
    if (round == 2) {
      assert_ptr_equal(p, last_a);
      assert_ptr_equal(q, last_b);
    }
    last_a = p;
    last_b = q;
    hak_free(p);
    hak_free(q);
  }
  assert_true(stats_now().huge_cached_bytes >= a + b);
  hak_trim();
  assert_int_equal(stats_now().huge_cached_bytes, 0);
}

// A cached mapping past HAKMEM_HUGE_CACHE_DELAY_MS goes back at a small
// block's refill: a program that frees its huge blocks and goes on with small
// ones only kept them for good.
static void test_a_cached_huge_mapping_past_its_delay_goes_back_at_a_small_refill(void **state) {
  (void)state;
  size_t keep_max = g_hak_config.huge_cache_max;
  uint32_t keep_delay = g_hak_config.huge_cache_delay_ms;
  hak_trim();
  g_hak_config.huge_cache_max = 8 * HUGE;     // a share that caches it
  g_hak_config.huge_cache_delay_ms = 20;
  hak_free(hak_malloc(HUGE));
  assert_true(stats_now().huge_cached_bytes >= HUGE);
  usleep(40 * 1000);
  enum { N = 4096 };
  static void *small[N];
  for (int i = 0; i < N; i++) small[i] = hak_malloc(200);   // (refills)
  for (int i = 0; i < N; i++) hak_free(small[i]);
  size_t cached = stats_now().huge_cached_bytes;
  g_hak_config.huge_cache_max = keep_max;
  g_hak_config.huge_cache_delay_ms = keep_delay;
  hak_trim();
  assert_int_equal(cached, 0);
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
    cmocka_unit_test_teardown(test_huge_realloc_grow_keeps_content, teardown_validate),
    cmocka_unit_test_teardown(test_a_huge_block_freed_once_goes_back_at_once, teardown_validate),
    cmocka_unit_test_teardown(test_a_huge_block_taken_and_freed_in_a_loop_is_kept_for_the_next_round, teardown_validate),
    cmocka_unit_test_teardown(test_two_huge_loops_of_different_sizes_keep_a_mapping_each, teardown_validate),
    cmocka_unit_test_teardown(test_calloc_of_a_cached_mapping_written_whole_reads_zero, teardown_validate),
    cmocka_unit_test_teardown(test_calloc_of_a_cached_mapping_barely_written_gives_its_pages_back, teardown_validate),
    cmocka_unit_test_teardown(test_calloc_of_a_cached_mapping_locked_on_fault_reads_zero, teardown_validate),
    cmocka_unit_test_teardown(test_a_cached_huge_mapping_past_its_delay_goes_back_at_a_small_refill, teardown_validate),
    cmocka_unit_test_teardown(test_huge_realloc_grow_gives_the_new_size, teardown_validate),
    cmocka_unit_test_teardown(test_huge_realloc_grow_moves_no_mapping_to_the_cache, teardown_validate),
    cmocka_unit_test_teardown(test_huge_realloc_by_a_little_takes_a_quarter_more, teardown_validate),
    cmocka_unit_test_teardown(test_huge_realloc_shrink_keeps_content, teardown_validate),
    cmocka_unit_test_teardown(test_huge_realloc_shrink_releases_the_tail, teardown_validate),
    cmocka_unit_test_teardown(test_realloc_from_huge_to_slab_size_keeps_content, teardown_validate),
    cmocka_unit_test_teardown(test_realloc_from_slab_to_huge_keeps_content, teardown_validate),
    cmocka_unit_test_teardown(test_huge_free_drops_the_live_count, teardown_validate),
    cmocka_unit_test_teardown(test_trim_empties_the_huge_cache, teardown_validate),
    cmocka_unit_test_teardown(test_cache_eviction_under_pressure_unmaps_each_mapping_once, teardown_validate),
    cmocka_unit_test_teardown(test_interior_address_of_a_huge_block_is_owned, teardown_validate),
    cmocka_unit_test_teardown(test_a_cached_huge_mapping_is_kept_until_the_cache_delay_passes, teardown_validate),
    cmocka_unit_test_teardown(test_a_cached_huge_mapping_past_the_cache_delay_is_unmapped, teardown_validate),
  };
  return cmocka_run_group_tests_name("huge", tests, NULL, NULL);
}
