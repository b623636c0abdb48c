// test_sweep.c — a slab whose blocks came home in random order hands them
// out again in address order (tiny/slab_sweep_box.h), and a sweep whose
// marks do not match the slab's free list leaves the list as it was: no
// block is handed out twice, none is lost.
#include "unit_util.h"

#include "tiny/slab_sweep_box.h"
#include "tiny/tiny_flush.h"

#define MAX_BLOCKS 4096u

typedef struct sweep_run {
  size_t size;           // the request size
  unsigned blocks;       // blocks taken from one slab (the first stays live)
  int forge_mark;        // give the live block its free mark before the build again
  unsigned freed_every;  // 0: free all but the first; k: free one in k of the others (at random)
  unsigned in_order;     // of the blocks taken again, how many came in address order (from the first)
  unsigned listed;       // blocks on the slab's list before the build
  unsigned taken_again;  // blocks taken again from the slab
  int live_taken;        // the live block was handed out again
  int duplicate;         // some address was handed out twice
  uint64_t sweeps, unmatched;
} sweep_run_t;

static int addr_cmp(const void *a, const void *b) {
  uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
  return x < y ? -1 : x > y;
}

// A thread takes `blocks` blocks of one slab, frees all but the first (or one
// in `freed_every` of them) in a shuffled order and sends its list home (the
// slab's list then lies in that order), and takes as many again.
static void *free_shuffled_then_build(void *arg) {
  sweep_run_t *r = arg;
  static void *p[MAX_BLOCKS], *q[MAX_BLOCKS];
  static uintptr_t sorted[MAX_BLOCKS];
  unsigned n = r->blocks;
  assert_true(n <= MAX_BLOCKS);
  for (unsigned i = 0; i < n; i++) {
    p[i] = hak_malloc(r->size);
    assert_non_null(p[i]);
    assert_ptr_equal(slab_of(p[i]), slab_of(p[0]));   // all from the thread's first slab
  }
  slab_meta_t *m = slab_of(p[0]);
  unsigned cls = m->cls;
  uint64_t x = 0x9e3779b97f4a7c15u;
  for (unsigned i = n - 1; i > 1; i--) {   // p[1..n-1] shuffled (xorshift)
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    unsigned j = 1u + (unsigned)(x % i);
    void *t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  unsigned kept = 0;
  for (unsigned i = 1; i < n; i++) {
    if (r->freed_every != 0 && i % r->freed_every != 1u) {
      p[1u + kept++] = p[i];           // live until the end (p[1 .. kept])
      continue;
    }
    hak_free(p[i]);
  }
  tiny_flush(cls, UINT32_MAX);
  assert_true(tls_list_empty(cls));
  assert_int_equal(slab_live(m), 1u + kept);   // every other block on the slab's list (the carve's extras too)
  unsigned f = m->free_n;
  assert_true(f >= n - 1u - kept && f < MAX_BLOCKS);
  r->listed = f;
  // Not in address order as it lies: the sweep has something to do.
  hak_base_ptr_t head = hak_base_from_raw(m->freelist);
  intptr_t step = (intptr_t)hak_base_raw(slab_list_second(m, head, block_chain(m, head))) - (intptr_t)hak_base_raw(head);
  assert_true((uintptr_t)(step < 0 ? -step : step) > SLAB_SWEEP_ORDERED_STEP * m->block_size);
  hak_base_ptr_t live = hak_user_to_base(hak_user_from_raw(p[0]));
  if (r->forge_mark) block_set_free(live);   // as a program that wrote it there would
  uint64_t sweeps = hak_counters()->sweeps, unmatched = hak_counters()->sweeps_unmatched;
  unsigned taken = 0;
  for (unsigned i = 0; i < f; i++) {
    q[i] = hak_malloc(r->size);
    assert_non_null(q[i]);
    if (slab_of(q[i]) != m) continue;
    if (q[i] == p[0]) r->live_taken = 1;
    sorted[taken++] = (uintptr_t)q[i];
  }
  r->sweeps = hak_counters()->sweeps - sweeps;
  r->unmatched = hak_counters()->sweeps_unmatched - unmatched;
  r->taken_again = taken;
  r->in_order = 1;
  while (r->in_order < taken && sorted[r->in_order] > sorted[r->in_order - 1u]) r->in_order++;
  qsort(sorted, taken, sizeof sorted[0], addr_cmp);
  for (unsigned i = 1; i < taken; i++)
    if (sorted[i] == sorted[i - 1u]) r->duplicate = 1;
  if (r->forge_mark) block_clear_free(live);
  for (unsigned i = 0; i < f; i++) hak_free(q[i]);
  for (unsigned i = 0; i <= kept; i++) hak_free(p[i]);
  return NULL;
}

static sweep_run_t run_freeing(size_t size, unsigned blocks, int forge_mark, unsigned freed_every) {
  sweep_run_t r = {size, blocks, forge_mark, freed_every, 0, 0, 0, 0, 0, 0, 0};
  hak_trim();
  run_in_thread(free_shuffled_then_build, &r);
  hak_trim();
  return r;
}
static sweep_run_t run(size_t size, unsigned blocks, int forge_mark) { return run_freeing(size, blocks, forge_mark, 0); }

// One sweep put the slab's whole list in address order, and every listed
// block came back once.
static void expect_swept_in_order(sweep_run_t r) {
  assert_int_equal(r.sweeps, 1);
  assert_int_equal(r.taken_again, r.listed);
  assert_int_equal(r.in_order, r.listed);
  assert_false(r.duplicate);
}

// 1 500 blocks of 32 B freed at random, one kept: the build after takes the
// slab's listed blocks (1 499 and what the carve took ahead) again in
// address order, through one sweep.
static void test_a_slab_freed_at_random_hands_its_blocks_out_in_address_order(void **state) {
  (void)state;
  if (HAK_SANITIZED) { print_message("skipped: no sweep under a sanitizer\n"); return; }
  sweep_run_t r = run(32, 1500, 0);
  expect_swept_in_order(r);
  assert_int_equal(r.unmatched, 0);
  assert_false(r.live_taken);
}

// The 16-byte class keeps its chain records packed in a block's link word:
// 3 000 of its blocks (of 4 096 a slab) come back in order too.
static void test_the_16_byte_class_is_swept_into_address_order(void **state) {
  (void)state;
  if (HAK_SANITIZED) { print_message("skipped: no sweep under a sanitizer\n"); return; }
  expect_swept_in_order(run(16 - HAK_BLOCK_HEADER_BYTES, 3000, 0));
}

// A third of the slab's blocks freed at random, the rest live (a heap that
// churns): a list of a quarter of the carved blocks or more is swept too.
static void test_a_slab_a_third_freed_at_random_is_swept_too(void **state) {
  (void)state;
  if (HAK_SANITIZED) { print_message("skipped: no sweep under a sanitizer\n"); return; }
  expect_swept_in_order(run_freeing(32, 1500, 0, 3));
}

// A live block carrying its free mark (a program's write, or a block on
// some other list) makes the marks one more than the list: the sweep leaves
// the list as it lies, and the live block is never handed out.
static void test_a_sweep_whose_marks_do_not_match_the_list_changes_nothing(void **state) {
  (void)state;
  if (HAK_SANITIZED) { print_message("skipped: no sweep under a sanitizer\n"); return; }
  sweep_run_t r = run(32, 1500, 1);
  assert_int_equal(r.sweeps, 0);
  assert_true(r.unmatched >= 1);
  assert_int_equal(r.taken_again, r.listed);
  assert_true(r.in_order < 100);   // the shuffled order, as freed
  assert_false(r.live_taken);
  assert_false(r.duplicate);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_a_slab_freed_at_random_hands_its_blocks_out_in_address_order),
      cmocka_unit_test(test_the_16_byte_class_is_swept_into_address_order),
      cmocka_unit_test(test_a_slab_a_third_freed_at_random_is_swept_too),
      cmocka_unit_test(test_a_sweep_whose_marks_do_not_match_the_list_changes_nothing),
  };
  return cmocka_run_group_tests_name("sweep", tests, NULL, NULL);
}
