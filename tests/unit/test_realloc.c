// test_realloc.c — realloc's growth policy: a block that grows by less than a
// quarter moves into one a quarter larger than it was (tcmalloc's hysteresis),
// so a buffer grown in small steps moves about every 1.25x; a larger growth
// takes the size asked; the contents move with the block either way.
#include <string.h>

#include "unit_util.h"

static void fill(unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 7 + 3);
}
static void check(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (unsigned char)(i * 7 + 3)) fail_msg("byte %zu lost in the move", i);
}

// For each block size from 1 KiB to 32 KiB (the classes there are a quarter
// of a power of two apart, some steps less than a quarter of the block), one
// byte past the block: the new block holds at least a quarter more.
static void test_a_small_growth_moves_to_a_block_a_quarter_larger(void **state) {
  (void)state;
  for (size_t n = 1024; n <= 32768; n += 256) {
    unsigned char *p = hak_malloc(n);
    assert_non_null(p);
    size_t old = hak_usable_size(p);
    fill(p, old);
    unsigned char *q = hak_realloc(p, old + 1);
    assert_non_null(q);
    if (hak_usable_size(q) < old + old / 4)
      fail_msg("realloc(%zu-byte block, %zu): a %zu-byte block", old, old + 1, hak_usable_size(q));
    check(q, old);
    hak_free(q);
  }
}

// Growing by a quarter or more: the block holds the request, and not the
// quarter on top of it (a block of the request's own class).
static void test_a_large_growth_takes_the_size_asked(void **state) {
  (void)state;
  unsigned char *p = hak_malloc(1000);
  assert_non_null(p);
  fill(p, 1000);
  unsigned char *q = hak_realloc(p, 4096);
  assert_non_null(q);
  assert_int_equal(hak_usable_size(q), g_size_class[size_class_of(4096)].block);   // (4096 and its pad)
  check(q, 1000);
  hak_free(q);
}

// A shrink, and a growth that fits the block, keep it where it is.
static void test_a_growth_within_the_block_stays_in_place(void **state) {
  (void)state;
  unsigned char *p = hak_malloc(1500);
  assert_non_null(p);
  size_t old = hak_usable_size(p);
  assert_ptr_equal(hak_realloc(p, old), p);
  assert_ptr_equal(hak_realloc(p, old - 100), p);
  hak_free(p);
}

// A buffer resized across 256 KiB and back: the growth moves it once to the
// page heap, and from then on it stays where it is both ways, the shrink to
// a slab's size included while it keeps more than half the block (it copied
// 256 KiB into a slab block each time, 29x jemalloc's time; a helper's probe).
static void test_a_buffer_resized_across_256_kib_and_back_stays_in_place(void **state) {
  (void)state;
  size_t a = 256u << 10, b = a + 1;
  char *p = hak_malloc(a);
  assert_non_null(p);
  p = hak_realloc(p, b);
  assert_non_null(p);
  p[b - 1] = 7;
  char *moved = p;
  for (int i = 0; i < 8; i++) {
    p = hak_realloc(p, (i & 1) ? b : a);
    assert_ptr_equal(p, moved);
    p[((i & 1) ? b : a) - 1] = 7;
  }
  fill((unsigned char *)p, 100);
  p = hak_realloc(p, 100);            // well under half: to a slab block, its bytes with it
  assert_ptr_not_equal(p, moved);
  check((unsigned char *)p, 100);
  hak_free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_a_small_growth_moves_to_a_block_a_quarter_larger),
    HAK_UNIT_TEST(test_a_large_growth_takes_the_size_asked),
    HAK_UNIT_TEST(test_a_growth_within_the_block_stays_in_place),
    HAK_UNIT_TEST(test_a_buffer_resized_across_256_kib_and_back_stays_in_place),
  };
  return cmocka_run_group_tests_name("realloc", tests, NULL, NULL);
}
