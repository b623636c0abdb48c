// hardened_test_medium_canary.c — a medium block's canary is the bytes after
// the request up to 16, as few as one (hard_canary_start): every medium
// request takes the class the default build gives it unless it fills the
// class exactly, an overflow of one byte is still reported however little
// the block has to spare, and realloc in place keeps the program's bytes.
#include "unit_util.h"
#include "tiny/hardened_box.h"

_Static_assert(HAK_HARDENED, "built against the hardened engine");

// With 16 bytes to spare, a request within 16 bytes under a class size went a
// class up, and the program's write of its last byte landed a page below
// where the class's other requests end: over a block's lives, half of
// ws-medium's blocks of 8 KiB and more had that page resident (47.2 MB peak
// RSS against the default build's 36.6).
static void test_a_medium_request_takes_the_smallest_class_with_a_byte_to_spare(void **state) {
  (void)state;
  unsigned checked = 0;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    uint32_t bs = g_size_class[c].size;
    if (bs <= HAK_TINY_MAX || bs > HAK_SLAB_MAX) continue;
    unsigned char *p = hak_malloc(bs - 1);   // one byte to spare: this class
    unsigned char *q = hak_malloc(bs);       // none: the next one, or the page heap
    assert_non_null(p);
    assert_non_null(q);
    assert_int_equal(slab_of(p)->block_size, bs);
    assert_true(bs == HAK_SLAB_MAX || slab_of(q)->block_size > bs);
    p[bs - 2] = 1;                           // the program's last byte
    hak_free(p);
    hak_free(q);
    checked++;
  }
  assert_true(checked >= 20);
}

// An overflow of one byte past a request that leaves 1, 5 or 15 bytes of its
// block spare is reported at the free (the canary's first byte).
static size_t g_spare;
static void overflow_one_byte_with_little_spare(void) {
  size_t n = 8192 - g_spare;
  unsigned char *p = hak_malloc(n);
  if (p == NULL || slab_of(p)->block_size != 8192) _exit(3);
  memset(p, 7, n);
  p[n] ^= 0x5a;                              // one byte past the request
  hak_free(p);
}

static void test_a_one_byte_overflow_is_reported_however_little_the_block_spares(void **state) {
  (void)state;
  static const size_t spares[] = {1, 5, 15, 16, 40};
  for (unsigned i = 0; i < sizeof spares / sizeof spares[0]; i++) {
    g_spare = spares[i];
    child_result_t r = run_in_child(overflow_one_byte_with_little_spare);
    assert_int_equal(r.signal, SIGABRT);
    assert_true(reported(&r, "heap buffer overflow past"));
  }
}

// A block made with no overflow frees with no report, and the bytes below the
// canary's window are the program's: a request of bs - 5 written to its end.
static void free_a_full_block_with_little_spare(void) {
  unsigned char *p = hak_malloc(8192 - 5);
  memset(p, 0xa5, 8192 - 5);
  hak_free(p);
}

static void test_a_block_written_to_its_last_requested_byte_frees_quietly(void **state) {
  (void)state;
  child_result_t r = run_in_child(free_a_full_block_with_little_spare);
  assert_int_equal(r.signal, 0);
  assert_null(strstr(r.err, "hakmem: "));
}

// realloc in place into the last bytes of a block keeps every byte the
// program wrote (the canary is written from the new size on, not from
// bs - 16), and the canary after the new size is checked.
static void test_realloc_in_place_with_little_spare_keeps_the_bytes_and_the_check(void **state) {
  (void)state;
  unsigned char *p = hak_malloc(8000);
  assert_non_null(p);
  for (size_t i = 0; i < 8000; i++) p[i] = (unsigned char)(i * 7u + 1u);
  unsigned char *q = hak_realloc(p, 8190);   // class 8192: two bytes spare
  assert_ptr_equal(q, p);
  for (size_t i = 0; i < 8000; i++) assert_int_equal(q[i], (unsigned char)(i * 7u + 1u));
  for (size_t i = 8000; i < 8190; i++) q[i] = 3;
  unsigned char *r = hak_realloc(q, 8100);   // down, still in place
  assert_ptr_equal(r, p);
  for (size_t i = 0; i < 8000; i++) assert_int_equal(r[i], (unsigned char)(i * 7u + 1u));
  for (size_t i = 8000; i < 8100; i++) assert_int_equal(r[i], 3);
  hak_free(r);
}

static void overflow_after_realloc_in_place(void) {
  unsigned char *p = hak_malloc(8000);
  unsigned char *q = hak_realloc(p, 8190);
  if (q != p) _exit(3);
  q[8190] = 0;                               // the one canary byte
  hak_free(q);
}

static void test_an_overflow_after_realloc_in_place_with_little_spare_is_reported(void **state) {
  (void)state;
  child_result_t r = run_in_child(overflow_after_realloc_in_place);
  assert_int_equal(r.signal, SIGABRT);
  assert_true(reported(&r, "heap buffer overflow past"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_a_medium_request_takes_the_smallest_class_with_a_byte_to_spare),
    HAK_UNIT_TEST(test_a_one_byte_overflow_is_reported_however_little_the_block_spares),
    HAK_UNIT_TEST(test_a_block_written_to_its_last_requested_byte_frees_quietly),
    HAK_UNIT_TEST(test_realloc_in_place_with_little_spare_keeps_the_bytes_and_the_check),
    HAK_UNIT_TEST(test_an_overflow_after_realloc_in_place_with_little_spare_is_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
