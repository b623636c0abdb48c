// hardened_test_tiny_tail.c — a tiny block's tail is 16 bytes (HARD_TAIL_BYTES:
// a 12-byte canary and the 4-byte size word), so a request of bs - 16 bytes
// takes the class of bs; its canary's 16-byte window then reaches the size
// word, and neither malloc nor free may take one for the other.
#include "unit_util.h"
#include "tiny/hardened_box.h"

_Static_assert(HAK_HARDENED, "built against the hardened engine");

// With a 20-byte tail every request of bs - 19 .. bs - 16 bytes went a class
// up: mstress's requests of 16, 32, 64 and 128 bytes took 48, 64, 96 and 160
// (its peak RSS 1.61x the default's by their sizes; 1.42x now).
static void test_a_tiny_request_takes_the_class_16_bytes_above_it(void **state) {
  (void)state;
  unsigned checked = 0;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    uint32_t bs = g_size_class[c].size;
    if (bs < 32 || bs > HAK_TINY_MAX) continue;
    unsigned char *p = hak_malloc(bs - 16);   // the largest request of the class
    unsigned char *q = hak_malloc(bs - 15);   // a byte more: the next class (or a medium one)
    assert_non_null(p);
    assert_non_null(q);
    assert_int_equal(slab_of(p)->block_size, bs);
    assert_true(slab_of(q)->block_size > bs);
    assert_int_equal(hak_usable_size(p), bs - 16);
    memset(p, 0xa5, bs - 16);                 // every requested byte, up to the canary
    hak_free(p);
    hak_free(q);
    checked++;
  }
  assert_true(checked >= 18);
}

// A block written to its last requested byte frees with no report, in every
// tiny class: the free checks the canary's 12 bytes, not the size word after
// them (a check of the whole window reported every such block).
static void free_full_tiny_blocks(void) {
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    uint32_t bs = g_size_class[c].size;
    if (bs < 32 || bs > HAK_TINY_MAX) continue;
    for (uint32_t spare = 16; spare <= 20; spare++) {
      unsigned char *p = hak_malloc(bs - spare);
      if (p == NULL) abort();
      memset(p, 0x5a, bs - spare);
      hak_free(p);
    }
  }
}

static void test_full_tiny_blocks_free_quietly(void **state) {
  (void)state;
  child_result_t r = run_in_child(free_full_tiny_blocks);
  assert_int_equal(r.signal, 0);
  assert_null(strstr(r.err, "hakmem: "));
}

// An overflow of 1 or 8 bytes past the largest request of a class is
// reported at the free (the canary's first bytes), and one of 12 (its last).
static size_t g_over;
static void overflow_a_full_block(void) {
  unsigned char *p = hak_malloc(48 - 16);
  if (p == NULL || slab_of(p)->block_size != 48) abort();   // not the report asked for
  memset(p, 7, 48 - 16);
  for (size_t i = 0; i < g_over; i++) p[32 + i] ^= 0x5a;
  hak_free(p);
}

static void test_an_overflow_past_a_full_block_is_reported(void **state) {
  (void)state;
  static const size_t overs[] = {1, 8, 12};
  for (unsigned i = 0; i < sizeof overs / sizeof overs[0]; i++) {
    g_over = overs[i];
    child_result_t r = run_in_child(overflow_a_full_block);
    assert_int_equal(r.signal, SIGABRT);
    assert_true(reported(&r, "heap buffer overflow past"));
  }
}

// realloc in place to the largest request keeps the bytes and the check: the
// canary moves to the new end (and stops at the size word).
static void test_realloc_in_place_to_a_full_block_keeps_the_bytes(void **state) {
  (void)state;
  unsigned char *p = hak_malloc(100);
  assert_non_null(p);
  uint32_t bs = slab_of(p)->block_size;
  memset(p, 3, 100);
  unsigned char *q = hak_realloc(p, bs - 16);
  assert_ptr_equal(q, p);
  for (size_t i = 0; i < 100; i++) assert_int_equal(q[i], 3);
  memset(q, 4, bs - 16);
  hak_free(q);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_a_tiny_request_takes_the_class_16_bytes_above_it),
    HAK_UNIT_TEST(test_full_tiny_blocks_free_quietly),
    HAK_UNIT_TEST(test_an_overflow_past_a_full_block_is_reported),
    HAK_UNIT_TEST(test_realloc_in_place_to_a_full_block_keeps_the_bytes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
