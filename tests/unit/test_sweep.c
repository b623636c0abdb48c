// test_sweep.c — a slab whose blocks came home in random order hands them
// out again in address order (tiny/slab_sweep_box.h), and a sweep whose
// marks do not match the slab's free list leaves the list as it was: no
// block is handed out twice, none is lost; the slab is then not swept again
// until blocks come home (SLAB_SWEEP_RETRY_DEN).
#include "unit_util.h"

#include "tiny/slab_sweep_box.h"
#include "tiny/tiny_flush.h"
#include "tiny/tiny_heap.h"

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
  int again;             // then: the mark unforged, the blocks taken again freed at random, a second build
  unsigned batch;         // the class's refill batch
  unsigned listed2, taken2, in_order2;
  uint64_t sweeps2, unmatched2;
} sweep_run_t;

static int addr_cmp(const void *a, const void *b) {
  uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
  return x < y ? -1 : x > y;
}

// a[from .. n) shuffled (xorshift, state *x).
static void shuffle(void **a, unsigned from, unsigned n, uint64_t *x) {
  for (unsigned i = n - 1; i > from; i--) {
    *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
    unsigned j = from + (unsigned)(*x % (i - from + 1u));
    void *t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
}

// Are the first of a[0 .. n) in ascending order, and how many? (n >= 1)
static unsigned ascending_prefix(const uintptr_t *a, unsigned n) {
  unsigned k = 1;
  while (k < n && a[k] > a[k - 1u]) k++;
  return k;
}

// A thread takes `blocks` blocks of one slab, frees all but the first (or one
// in `freed_every` of them) in a shuffled order and sends its list home (the
// slab's list then lies in that order), and takes as many again.
// With `again`: then the mark is unforged, the blocks taken again come home
// at random, and a second build takes the list.
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
  r->batch = g_size_class[cls].batch;
  uint64_t x = 0x9e3779b97f4a7c15u;
  shuffle(p, 1, n, &x);                    // p[1..n-1]
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
  if (r->again) {
    // As after an overflow's flush (a thread that frees as it takes): the
    // class's bound back to its own and no refill streak, so the refills
    // take the list batch by batch (tiny_refill.c WHOLE_STREAK), each
    // before the sweep's wait.
    t_heap_p->refill_streak[cls] = 0;
    tiny_class_ungrow(cls);
  }
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
  r->in_order = taken != 0 ? ascending_prefix(sorted, taken) : 0;
  qsort(sorted, taken, sizeof sorted[0], addr_cmp);
  for (unsigned i = 1; i < taken; i++)
    if (sorted[i] == sorted[i - 1u]) r->duplicate = 1;
  if (r->forge_mark) block_clear_free(live);
  if (r->again) {
    // The blocks just taken come home at random: the slab's list is long
    // again, the marks match it now, and the next build sweeps.
    shuffle(q, 0, f, &x);
    for (unsigned i = 0; i < f; i++) hak_free(q[i]);
    tiny_flush(cls, UINT32_MAX);
    f = m->free_n;
    r->listed2 = f;
    sweeps = hak_counters()->sweeps, unmatched = hak_counters()->sweeps_unmatched;
    taken = 0;
    for (unsigned i = 0; i < f; i++) {
      q[i] = hak_malloc(r->size);
      assert_non_null(q[i]);
      if (slab_of(q[i]) == m) sorted[taken++] = (uintptr_t)q[i];
    }
    r->sweeps2 = hak_counters()->sweeps - sweeps;
    r->unmatched2 = hak_counters()->sweeps_unmatched - unmatched;
    r->taken2 = taken;
    r->in_order2 = taken != 0 ? ascending_prefix(sorted, taken) : 0;
  }
  for (unsigned i = 0; i < f; i++) hak_free(q[i]);
  for (unsigned i = 0; i <= kept; i++) hak_free(p[i]);
  return NULL;
}

static sweep_run_t run_freeing(size_t size, unsigned blocks, int forge_mark, unsigned freed_every) {
  sweep_run_t r = {.size = size, .blocks = blocks, .forge_mark = forge_mark, .freed_every = freed_every};
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

// After a sweep that did not match, the refills that take the rest of the
// list batch by batch sweep no more (each would read every carved block's
// mark again: a block held on another thread's list stays there meanwhile);
// once blocks have come home, the next refill sweeps, and the list comes
// out in address order.
static void test_a_sweep_that_did_not_match_waits_for_blocks_to_come_home(void **state) {
  (void)state;
  if (HAK_SANITIZED) { print_message("skipped: no sweep under a sanitizer\n"); return; }
  sweep_run_t r = {.size = 32, .blocks = 1500, .forge_mark = 1, .again = 1};
  hak_trim();
  run_in_thread(free_shuffled_then_build, &r);
  hak_trim();
  assert_true(r.listed > 4u * r.batch);   // several refills from the list
  assert_int_equal(r.unmatched, 1);
  assert_int_equal(r.sweeps, 0);
  assert_int_equal(r.taken_again, r.listed);
  assert_false(r.live_taken);
  assert_false(r.duplicate);
  assert_int_equal(r.unmatched2, 0);
  assert_int_equal(r.sweeps2, 1);
  assert_int_equal(r.taken2, r.listed2);
  assert_int_equal(r.in_order2, r.listed2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_a_slab_freed_at_random_hands_its_blocks_out_in_address_order),
      cmocka_unit_test(test_the_16_byte_class_is_swept_into_address_order),
      cmocka_unit_test(test_a_slab_a_third_freed_at_random_is_swept_too),
      cmocka_unit_test(test_a_sweep_whose_marks_do_not_match_the_list_changes_nothing),
      cmocka_unit_test(test_a_sweep_that_did_not_match_waits_for_blocks_to_come_home),
  };
  return cmocka_run_group_tests_name("sweep", tests, NULL, NULL);
}
