// test_populate.c — a slab's carve faults the pages ahead of it in with one
// call where the program writes what it mallocs (tiny/tiny_refill.c,
// slab_populate_ahead), and leaves them to the program's first writes where
// it does not, or where it used the slab lightly.
#include "unit_util.h"

#include "os/os.h"

#define KIB 1024u
#define PAGE 4096u

typedef struct slab_use {
  size_t size;        // block size
  unsigned blocks;    // how many to take (all from one slab)
  int whole;          // write each block whole, or its first byte only
  slab_meta_t *m;     // (mapped only while the thread runs)
  size_t carved;      // carve point, bytes from base
  size_t reach;       // dirty_end: how far pages were faulted in
  size_t ahead;       // resident pages between the carve point and the slab's end
  size_t reach_pages; // pages between the carve point and the reach
  size_t interior;    // resident pages below the carve point
  uint8_t populate;
  uint64_t calls;     // the thread's populate count (HAKMEM_STATS) over the run
} slab_use_t;

static size_t resident(const char *from, const char *to) {
  uintptr_t a = ((uintptr_t)from + PAGE - 1) & ~(uintptr_t)(PAGE - 1), b = (uintptr_t)to & ~(uintptr_t)(PAGE - 1);
  if (b <= a) return 0;
  size_t n = os_resident_pages((void *)a, (b - a) / PAGE);
  assert_int_not_equal(n, SIZE_MAX);
  return n;
}

static void *use_one_slab(void *arg) {
  slab_use_t *u = arg;
  void *p[64];
  assert_true(u->blocks <= 64);
  uint64_t calls = hak_counters()->populate_calls;
  for (unsigned i = 0; i < u->blocks; i++) {
    p[i] = hak_malloc(u->size);
    if (i == 0) u->m = slab_of(p[0]);
    assert_ptr_equal(slab_of(p[i]), u->m);
    memset(p[i], 1, u->whole ? u->size : 1);
  }
  slab_meta_t *m = u->m;
  char *carve = slab_carve(m);
  u->carved = (size_t)(carve - m->base);
  u->reach = m->dirty_end;
  u->ahead = resident(carve, slab_end(m));
  u->reach_pages = (((uintptr_t)m->base + m->dirty_end) / PAGE) - (((uintptr_t)carve + PAGE - 1) / PAGE);
  u->interior = resident(m->base, carve);
  u->populate = m->populate;
  u->calls = hak_counters()->populate_calls - calls;
  for (unsigned i = 0; i < u->blocks; i++) hak_free(p[i]);
  return NULL;
}

// Fresh slabs (hak_trim purges every FREE one: no reach from a past life).
static slab_use_t use(size_t size, unsigned blocks, int whole) {
  hak_trim();
  slab_use_t u = {size, blocks, whole, NULL, 0, 0, 0, 0, 0, 0, 0};
  run_in_thread(use_one_slab, &u);
  hak_trim();
  return u;
}

// 20 KiB blocks written whole: the first 64 KiB carved fault as the program
// writes them, the kernel then says they are all resident, and from there
// the carve faults the pages ahead in (half as far again as it carved).
static void test_a_slab_whose_blocks_are_written_whole_has_its_pages_faulted_in_ahead(void **state) {
  (void)state;
  if (thp_always()) { print_message("skipped: transparent huge pages are 'always'\n"); return; }
  slab_use_t u = use(20 * KIB, 10, 1);
  assert_int_equal(u.populate, SLAB_POP_DENSE);
  assert_true(u.reach >= u.carved + 16 * KIB);
  assert_int_equal(u.ahead, u.reach_pages);     // all of them resident
  assert_true(u.calls > 0);                     // counted for HAKMEM_STATS
}

// 20 KiB blocks of which the program writes the first byte: the kernel says
// one page in five is resident, and the slab is left to fault page by page
// (populated whole, ws-medium's peak RSS was 2.4x).
static void test_a_slab_whose_blocks_are_written_sparsely_is_not_faulted_in_ahead(void **state) {
  (void)state;
  if (thp_always()) { print_message("skipped: transparent huge pages are 'always'\n"); return; }
  slab_use_t u = use(20 * KIB, 10, 0);
  assert_int_equal(u.populate, SLAB_POP_SPARSE);
  assert_int_equal(u.ahead, 0);
  assert_int_equal(u.calls, 0);
  assert_true(u.interior <= 2 * 10);           // each block's first page (and the next block's mark)
}

// A class of a page or less writes a mark in every block it carves, so every
// page it carves is touched anyway: faulted in ahead once 16 KiB are carved.
static void test_a_small_class_slab_is_faulted_in_ahead_once_used(void **state) {
  (void)state;
  if (thp_always()) { print_message("skipped: transparent huge pages are 'always'\n"); return; }
  slab_use_t u = use(1000, 40, 0);              // 40 KB carved
  assert_int_equal(u.populate, SLAB_POP_DENSE);
  assert_true(u.reach > u.carved);
  assert_true(u.ahead > 0);
}

// With more than TINY_CACHE_FULL_THREADS threads live, a small class's slab
// is not faulted in ahead (what it would fault sits above the carve point once
// per thread and class: ws8192 -t 16's peak RSS), where a medium class's
// dense slab still is.
static void test_a_small_class_slab_is_not_faulted_in_ahead_with_many_threads_live(void **state) {
  (void)state;
  if (thp_always()) { print_message("skipped: transparent huge pages are 'always'\n"); return; }
  crowd_t c;
  crowd_gather(&c);
  slab_use_t small = use(1000, 40, 0);          // 40 KB carved, as in the test above
  slab_use_t medium = use(20 * KIB, 10, 1);
  crowd_release(&c);
  assert_true(small.reach <= ((small.carved + PAGE - 1) & ~(size_t)(PAGE - 1)));
  assert_int_equal(small.ahead, 0);
  assert_int_equal(small.calls, 0);
  assert_int_equal(medium.populate, SLAB_POP_DENSE);
  assert_true(medium.reach >= medium.carved + 16 * KIB);
  assert_true(medium.calls > 0);
}

// With more than TINY_CACHE_FULL_THREADS threads live, a medium class's dense
// slab faults in half as far ahead of its carve (the thread's share, as its
// lists' bounds): 1 000 threads holding 16 blocks of each of twelve sizes to
// 5 KB (a /tmp probe, the 64th session) peaked at 327 MB, the populate-ahead 72 MB
// of it (glibc 174, tcmalloc 207, jemalloc 242, mimalloc 282).
static void test_a_medium_class_slab_faults_in_half_as_far_ahead_with_many_threads_live(void **state) {
  (void)state;
  if (thp_always()) { print_message("skipped: transparent huge pages are 'always'\n"); return; }
  slab_use_t alone = use(20 * KIB, 10, 1);
  crowd_t c;
  crowd_gather(&c);
  slab_use_t crowd = use(20 * KIB, 10, 1);
  crowd_release(&c);
  assert_int_equal(alone.populate, SLAB_POP_DENSE);
  assert_int_equal(crowd.populate, SLAB_POP_DENSE);
  print_message("alone: carved %zu, reach %zu; with a crowd: carved %zu, reach %zu\n", alone.carved, alone.reach,
                crowd.carved, crowd.reach);
  assert_true(crowd.reach > crowd.carved);                              // still ahead ...
  assert_true(crowd.reach - crowd.carved <= (alone.reach - alone.carved) / 2 + PAGE);   // ... half as far
}

// Four blocks of 100 bytes: no page faulted in beyond the carved ones.
static void test_a_slab_used_lightly_is_not_faulted_in_ahead(void **state) {
  (void)state;
  if (thp_always()) { print_message("skipped: transparent huge pages are 'always'\n"); return; }
  slab_use_t u = use(100, 4, 1);
  assert_true(u.reach <= u.carved);
  assert_int_equal(u.ahead, 0);
}

// A thread's slabs of one class, in the order it bound them: blocks of
// `size` taken and held until `slabs` slabs were bound (the last one given
// `last` blocks, if not 0), the first `dense` slabs' blocks written whole, the
// others' first byte only; each slab's populate verdict, reach and carve
// point as they stood when the next was bound (the last one's at the end).
#define SLABS_MAX 12
typedef struct slab_run {
  size_t size;
  unsigned slabs, dense, last;
  unsigned dense_from;   // if not 0: the slabs from this one on written whole too
  uint8_t verdict[SLABS_MAX];
  size_t reach[SLABS_MAX], carved[SLABS_MAX];
} slab_run_t;

static void note_slab(slab_run_t *r, unsigned k, const slab_meta_t *m) {
  r->verdict[k] = m->populate;
  r->reach[k] = m->dirty_end;
  r->carved[k] = (size_t)(slab_carve(m) - m->base);
}

static void *run_slabs(void *arg) {
  slab_run_t *r = arg;
  static void *held[SLABS_MAX * 64];
  unsigned n = 0, k = 0, in_slab = 0;
  slab_meta_t *cur = NULL;
  for (;;) {
    void *p = hak_malloc(r->size);
    slab_meta_t *m = slab_of(p);
    if (m != cur) {
      if (cur != NULL) note_slab(r, k++, cur);
      if (k == r->slabs) { hak_free(p); break; }
      cur = m;
      in_slab = 0;
    }
    memset(p, 1, k < r->dense || (r->dense_from != 0 && k >= r->dense_from) ? r->size : 1);
    assert_true(n < SLABS_MAX * 64);
    held[n++] = p;
    if (k == r->slabs - 1 && ++in_slab == r->last) { note_slab(r, k, cur); break; }
  }
  while (n > 0) hak_free(held[--n]);
  return NULL;
}

// After one slab of 20 KiB blocks sampled dense, the thread's next slab of
// the class populates ahead from its first 16 KiB carved, without faulting
// 64 KiB first to sample.
static void test_the_next_slab_of_a_class_sampled_dense_populates_without_sampling(void **state) {
  (void)state;
  if (thp_always()) { print_message("skipped: transparent huge pages are 'always'\n"); return; }
  hak_trim();
  slab_run_t r = {20 * KIB, 2, 2, 2, 0, {0}, {0}, {0}};   // the second slab: 2 blocks, 40 KiB
  run_in_thread(run_slabs, &r);
  hak_trim();
  assert_int_equal(r.verdict[0], SLAB_POP_DENSE);   // sampled
  assert_int_equal(r.verdict[1], SLAB_POP_DENSE);   // carried: it had no 64 KiB to sample ...
  assert_true(r.reach[1] > r.carved[1]);           // ... and populated ahead
}

// A burst's ramped carve (several blocks of a class above a page at once)
// into a fresh slab of a class sampled dense populates ahead from the slab's
// first carve: those blocks are the burst's next mallocs, and left to fault
// page by page, `rounds --mb 32 --size 20K` took 1.17x the time in its first
// round. (A single block there still does not: a slab used lightly.)
static void test_a_ramped_carve_at_a_slabs_start_populates_ahead(void **state) {
  (void)state;
  if (thp_always()) { print_message("skipped: transparent huge pages are 'always'\n"); return; }
  hak_trim();
  slab_run_t r = {20 * KIB, 2, 2, 1, 0, {0}, {0}, {0}};   // the second slab: its first block
  run_in_thread(run_slabs, &r);
  hak_trim();
  assert_int_equal(r.verdict[1], SLAB_POP_DENSE);   // carried
  assert_true(r.carved[1] > 20 * KIB);             // the refill carved more than the block
  assert_true(r.reach[1] > r.carved[1]);           // and populated past them
}

// HAKMEM_BIND_TRIM_KB: a thread's first slab of a class above 1 KiB, bound
// afresh on a slab an earlier thread wrote whole, keeps only that much of the
// earlier pages resident (mstress's threads bind a 512 KiB slab per class
// their arrays pass through, for a block or two); off (0, the default), the
// earlier pages stay for the next life to carve without faults.
#define TRIM_SIZE   30000u      // the 32 KiB class: 8 blocks, half of a 512 KiB slab
#define TRIM_BLOCKS 8u
static void *write_a_slab_whole(void *arg) {
  slab_meta_t **out = arg;
  void *p[TRIM_BLOCKS];
  for (unsigned i = 0; i < TRIM_BLOCKS; i++) {
    p[i] = hak_malloc(TRIM_SIZE);
    memset(p[i], 1, TRIM_SIZE);
  }
  *out = slab_of(p[0]);
  for (unsigned i = 0; i < TRIM_BLOCKS; i++) hak_free(p[i]);
  return NULL;   // its exit gives the heap back: the slab goes FREE, dirty
}

typedef struct later_use {
  slab_meta_t *m;
  size_t resident_past;   // resident pages from 64 KiB on
} later_use_t;

static void *take_one_block(void *arg) {
  later_use_t *u = arg;
  void *p = hak_malloc(TRIM_SIZE);
  assert_non_null(p);
  memset(p, 2, TRIM_SIZE);
  u->m = slab_of(p);
  u->resident_past = resident(u->m->base + 64 * KIB, slab_end(u->m));
  hak_free(p);
  return NULL;
}

static later_use_t earlier_slab_then_one_block(size_t trim, slab_meta_t **earlier) {
  size_t saved = g_hak_config.bind_trim;
  hak_trim();                                   // every FREE slab clean: the earlier one is the dirty one
  run_in_thread(write_a_slab_whole, earlier);
  g_hak_config.bind_trim = trim;
  later_use_t u = {NULL, 0};
  run_in_thread(take_one_block, &u);
  g_hak_config.bind_trim = saved;
  hak_trim();
  return u;
}

static void test_a_first_slab_of_a_class_keeps_an_earlier_reach_unless_trimmed(void **state) {
  (void)state;
  if (thp_always()) { print_message("skipped: transparent huge pages are 'always'\n"); return; }
  slab_meta_t *earlier = NULL;
  later_use_t kept = earlier_slab_then_one_block(0, &earlier);
  assert_ptr_equal(kept.m, earlier);            // the class's slab again
  assert_true(kept.resident_past >= 32);        // the 192 KiB past 64 KiB the earlier thread wrote, kept
  later_use_t trimmed = earlier_slab_then_one_block(32 * KIB, &earlier);
  assert_ptr_equal(trimmed.m, earlier);
  assert_int_equal(trimmed.resident_past, 0);   // purged at the bind: the block is below 64 KiB
}

// The verdict stands for 7 slabs: a program that stops writing its blocks
// whole is seen at the 8th, which samples again.
static void test_a_dense_verdict_is_sampled_again_after_seven_slabs(void **state) {
  (void)state;
  if (thp_always()) { print_message("skipped: transparent huge pages are 'always'\n"); return; }
  hak_trim();
  slab_run_t r = {20 * KIB, 10, 1, 0, 0, {0}, {0}, {0}};
  run_in_thread(run_slabs, &r);
  hak_trim();
  assert_int_equal(r.verdict[0], SLAB_POP_DENSE);
  for (unsigned i = 1; i <= 7; i++) assert_int_equal(r.verdict[i], SLAB_POP_DENSE);   // carried
  assert_int_equal(r.verdict[8], SLAB_POP_SPARSE);  // sampled again: one byte a block
  assert_int_equal(r.verdict[9], SLAB_POP_SPARSE);  // (not carried)
}

// A sparse verdict stands for 7 slabs too, which sample nothing (each
// mincore takes the address space's lock): a program that starts writing
// its blocks whole is seen at the 8th.
static void test_a_sparse_verdict_is_carried_for_seven_slabs(void **state) {
  (void)state;
  if (thp_always()) { print_message("skipped: transparent huge pages are 'always'\n"); return; }
  hak_trim();
  slab_run_t r = {20 * KIB, 10, 0, 0, 1, {0}, {0}, {0}};   // slab 0 one byte a block, the rest whole
  run_in_thread(run_slabs, &r);
  hak_trim();
  assert_int_equal(r.verdict[0], SLAB_POP_SPARSE);
  for (unsigned i = 1; i <= 7; i++) {
    assert_int_equal(r.verdict[i], SLAB_POP_SPARSE);   // carried, not sampled ...
    assert_true(r.reach[i] <= r.carved[i]);             // ... and never populated ahead
  }
  assert_int_equal(r.verdict[8], SLAB_POP_DENSE);      // sampled again
  assert_int_equal(r.verdict[9], SLAB_POP_DENSE);      // carried
}

int main(void) {
  young_slabs_taken();   // the medium classes' slabs are 512 KiB ones from the first
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_a_slab_whose_blocks_are_written_whole_has_its_pages_faulted_in_ahead),
    HAK_UNIT_TEST(test_a_slab_whose_blocks_are_written_sparsely_is_not_faulted_in_ahead),
    HAK_UNIT_TEST(test_a_small_class_slab_is_faulted_in_ahead_once_used),
    HAK_UNIT_TEST(test_a_small_class_slab_is_not_faulted_in_ahead_with_many_threads_live),
    HAK_UNIT_TEST(test_a_medium_class_slab_faults_in_half_as_far_ahead_with_many_threads_live),
    HAK_UNIT_TEST(test_a_slab_used_lightly_is_not_faulted_in_ahead),
    HAK_UNIT_TEST(test_the_next_slab_of_a_class_sampled_dense_populates_without_sampling),
    HAK_UNIT_TEST(test_a_ramped_carve_at_a_slabs_start_populates_ahead),
    HAK_UNIT_TEST(test_a_first_slab_of_a_class_keeps_an_earlier_reach_unless_trimmed),
    HAK_UNIT_TEST(test_a_dense_verdict_is_sampled_again_after_seven_slabs),
    HAK_UNIT_TEST(test_a_sparse_verdict_is_carried_for_seven_slabs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
