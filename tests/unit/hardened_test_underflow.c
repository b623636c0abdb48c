// hardened_test_underflow.c — the hardened engine's check of the 4 bytes
// before a tiny block (hard_below_fast_ok): what passes it must be freed like
// any block, never judged by the guesses of a failed check.
#include "unit_util.h"
#include "debug/report.h"
#include "tiny/hardened_box.h"

_Static_assert(HAK_HARDENED, "built against the hardened engine");

// The canary byte is odd (never 0) and never the fill's byte, for every
// process key byte. With the fill's byte (one process in 128), a live block's
// canary inside bytes 16-63 read as an intact fill.
static void test_the_canary_byte_is_never_zero_nor_the_fill_byte(void **state) {
  (void)state;
  for (uint64_t b = 0; b < 256; b++) {
    uint8_t c = hard_canary_byte_of(b << 16);
    assert_int_not_equal(c, 0);
    assert_int_not_equal(c, HARD_FILL_BYTE);
    assert_int_equal(c & 1u, 1u);
  }
}

// A slab's first block: the 4 bytes before it are not a size word, so its
// free leaves the common path. With its own checks passed it is freed as
// usual: it went to the failed-check path, which took a live block whose
// bytes 16-63 read as the fill (48 bytes asked for and never written, its
// canary at 48-63 of the fill's byte) for one freed before, and reported a
// double free (the contract suite under the hardened library, one CI run).
static void free_a_slabs_first_block_whose_canary_is_the_fill(void) {
  uint64_t fill = 0x0101010101010101ull * HARD_FILL_BYTE;
  g_hard_keys.canary[0] = g_hard_keys.canary[1] = fill;   // the collision, forced
  for (int i = 0; i < 50000; i++) {
    unsigned char *p = hak_malloc(48);     // never written: bytes 16-47 keep the carve's fill
    if (p == NULL) { fputs("no such block: out of memory\n", stderr); _exit(3); }
    slab_meta_t *m = slab_of(p);          // its slab's first, the word before not a size word
    if ((char *)p == m->base && !hard_below_fast_ok(((const uint32_t *)p)[-1], m->block_size)) {
      hak_free(p);
      _exit(0);
    }
  }
  fputs("no such block\n", stderr);       // (the exit status is not read: the parent checks stderr)
  _exit(9);
}

static void test_a_slabs_first_block_passing_its_checks_is_freed_without_a_report(void **state) {
  (void)state;
  child_result_t r = run_in_child(free_a_slabs_first_block_whose_canary_is_the_fill);
  assert_int_equal(r.signal, 0);
  assert_null(strstr(r.err, "hakmem: "));
  assert_null(strstr(r.err, "no such block"));
}
// Another thread's malloc of the block below writes its canary window (which
// may cover its size word: a request within 16 bytes of the class) and then
// its size word: for a moment the word before this block is the canary's
// bytes. A free of this block at that moment is no underflow (sh8bench's
// shape under the hardened library, 1 run in a few hundred: "heap buffer
// underflow before ... (or an overflow past the 80-byte block below it)").
static void free_above_a_block_being_armed(void) {
  for (int i = 0; i < 4096; i++) {
    unsigned char *q = hak_malloc(64), *p = hak_malloc(64);   // 80-byte blocks: the window covers the word
    slab_meta_t *m = slab_of(p);
    if (p != q + m->block_size) continue;
    uint32_t *word = (uint32_t *)(q + m->block_size) - 1;
    uint32_t size = *word;
    *word = (uint32_t)hard_canary_word();        // q's arm between its two stores
    hak_free(p);
    *word = size;
    hak_write_str(2, "freed\n");
    _exit(0);
  }
  hak_write_str(2, "no such pair\n");
  _exit(9);
}
// The same for a request 17-19 bytes under the class: its window ends inside
// the size word, so for that moment the word's low 1-3 bytes are the canary's
// and the rest what it held before: a free block's fill or size key, or (in
// place) a live size word. Seen once in CI (stress_malloc -t 8, "heap buffer
// underflow before P (or an overflow past the 224-byte block below it)").
static void free_above_a_block_being_armed_partly(void) {
  uint32_t canary = (uint32_t)hard_canary_word(), key = hard_size_key();
  int done = 0;
  for (int i = 0; i < 4096 && done < 9; i++) {
    unsigned char *q = hak_malloc(200), *p = hak_malloc(200);   // 224-byte blocks
    slab_meta_t *m = slab_of(p);
    if (p != q + m->block_size) continue;
    uint32_t *word = (uint32_t *)(q + m->block_size) - 1;
    uint32_t size = *word, k = 1 + (uint32_t)done % 3, lo = (1u << (8 * k)) - 1u;
    uint32_t before[3] = {(uint32_t)HARD_FILL_WORD, key, 190u ^ key};   // freed, fresh, live
    *word = (canary & lo) | (before[done / 3] & ~lo);   // q's arm between its two stores
    hak_free(p);
    *word = size;
    done++;
  }
  hak_write_str(2, done == 9 ? "freed\n" : "no such pair\n");
  _exit(done == 9 ? 0 : 9);
}
static void test_a_free_above_a_block_armed_to_within_its_size_word_is_no_underflow(void **state) {
  (void)state;
  child_result_t r = run_in_child(free_above_a_block_being_armed_partly);
  if (r.signal != 0 || strstr(r.err, "freed\n") == NULL) fail_msg("signal %d, stderr: \"%s\"", r.signal, r.err);
  assert_null(strstr(r.err, "hakmem: "));
}

static void test_a_free_above_a_block_being_armed_is_no_underflow(void **state) {
  (void)state;
  child_result_t r = run_in_child(free_above_a_block_being_armed);
  if (r.signal != 0 || strstr(r.err, "freed\n") == NULL) fail_msg("signal %d, stderr: \"%s\"", r.signal, r.err);
  assert_null(strstr(r.err, "hakmem: "));
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_the_canary_byte_is_never_zero_nor_the_fill_byte),
    HAK_UNIT_TEST(test_a_slabs_first_block_passing_its_checks_is_freed_without_a_report),
    HAK_UNIT_TEST(test_a_free_above_a_block_being_armed_is_no_underflow),
    HAK_UNIT_TEST(test_a_free_above_a_block_armed_to_within_its_size_word_is_no_underflow),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
