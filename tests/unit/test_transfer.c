// test_transfer.c — the class exchange (transfer_box): a thread whose list
// overflows with other threads' blocks hands them to the exchange, and another
// thread's refill takes them before it turns to new memory.
#include "unit_util.h"
#include "tiny/transfer_box.h"

#define SIZE   256u    // 64 bytes or more: another thread's block stays on the freer's list
#define BLOCKS 1000u   // more than the list holds: six overflows of a 256-block list
#define CHAINS 2u      // the exchange's limit while two threads live: this one and the freer
// With a third thread parked (park_a_thread): the limit while the freer lives,
// and after its exit: one chain per class per live thread. When one thread
// is left, the exchange goes home whole: nobody is there to exchange with.
#define CHAINS_PARKED 3u
#define CHAINS_AFTER  2u

typedef struct block_set {
  void  *p[BLOCKS];
  size_t n;
} block_set_t;

static block_set_t g_set;
static uint32_t g_exchange_before_exit;   // what free_all's thread saw in the exchange last
static uint32_t g_chains_before_exit;     // ... in chains

static unsigned cls_of_size(void) { return size_class_of(SIZE); }

static void *free_all(void *arg) {
  block_set_t *s = arg;
  for (size_t i = 0; i < s->n; i++) hak_free(s->p[i]);
  g_exchange_before_exit = s->n > 0 ? transfer_blocks(slab_of(s->p[0])->cls) : 0;
  g_chains_before_exit = s->n > 0 ? transfer_chains(slab_of(s->p[0])->cls) : 0;
  return NULL;
}

static int in_set(const void *q) {
  for (size_t i = 0; i < g_set.n; i++)
    if (g_set.p[i] == q) return 1;
  return 0;
}

static uint64_t used_of_set_slabs(void) {
  uint64_t used = 0;
  slab_meta_t *seen[64];
  unsigned nseen = 0;
  for (size_t i = 0; i < g_set.n; i++) {
    slab_meta_t *m = slab_of(g_set.p[i]);
    unsigned j = 0;
    while (j < nseen && seen[j] != m) j++;
    if (j < nseen) continue;
    if (nseen == 64) return UINT64_MAX;
    seen[nseen++] = m;
    used += slab_census_live(m);
  }
  return used;
}

// The main thread holds BLOCKS blocks of SIZE; the exchange starts empty.
static int setup_main_holds_blocks(void **state) {
  (void)state;
  tiny_flush_exchange();
  if (transfer_blocks(cls_of_size()) != 0) return -1;
  g_set.n = BLOCKS;
  for (size_t i = 0; i < BLOCKS; i++)
    if ((g_set.p[i] = hak_malloc(SIZE)) == NULL) return -1;
  return 0;
}

static int teardown_exchange(void **state) {
  tiny_flush_exchange();
  hak_thread_flush();
  memset(&g_set, 0, sizeof g_set);
  return validate_engine(state);
}

static void test_overflow_of_another_threads_blocks_fills_the_exchange_then_goes_home(void **state) {
  (void)state;
  unsigned cls = cls_of_size();
  uint32_t batch = g_size_class[cls].batch;
  uint64_t used_before = used_of_set_slabs();   // BLOCKS, and what the main thread's list holds
  park_a_thread();
  run_in_thread(free_all, &g_set);   // its list overflows six times, then it exits
  assert_int_equal(g_exchange_before_exit, CHAINS_PARKED * batch);
  // Its exit left one chain per live thread (the main and the parked one):
  // everything else went home, so of the BLOCKS the slabs count only what
  // the exchange holds.
  assert_int_equal(transfer_blocks(cls), CHAINS_AFTER * batch);
  assert_int_equal(used_of_set_slabs(), used_before - BLOCKS + CHAINS_AFTER * batch);
  unpark();
}

// The last but one thread's exit sends the exchange home whole: the one
// left has its own slabs, or adopts the gone threads' (prodcons -t 8 of
// 1-32 KiB: a chain per class kept 635 blocks, which held 40 MB of slabs
// resident after the run).
static void test_when_one_thread_is_left_the_exchange_goes_home_whole(void **state) {
  (void)state;
  unsigned cls = cls_of_size();
  uint32_t batch = g_size_class[cls].batch;
  uint64_t used_before = used_of_set_slabs();
  run_in_thread(free_all, &g_set);
  assert_int_equal(g_exchange_before_exit, CHAINS * batch);
  assert_int_equal(transfer_blocks(cls), 0);
  assert_int_equal(used_of_set_slabs(), used_before - BLOCKS);
}

typedef struct taken {
  void    *p[128];
  unsigned n;
  uint32_t exchange_after;
} taken_t;

static void *malloc_a_few(void *arg) {
  taken_t *t = arg;
  for (unsigned i = 0; i < t->n; i++) t->p[i] = hak_malloc(SIZE);
  t->exchange_after = transfer_blocks(cls_of_size());
  for (unsigned i = 0; i < t->n; i++) hak_free(t->p[i]);
  return NULL;
}

static void test_a_third_threads_refill_takes_a_chain_from_the_exchange(void **state) {
  (void)state;
  unsigned cls = cls_of_size();
  uint32_t batch = g_size_class[cls].batch;
  park_a_thread();
  run_in_thread(free_all, &g_set);
  taken_t t = {.n = 8};
  run_in_thread(malloc_a_few, &t);
  unpark();
  for (unsigned i = 0; i < t.n; i++) assert_true(in_set(t.p[i]));   // no new memory
  assert_int_equal(t.exchange_after, (CHAINS_AFTER - 1) * batch);
}

// Medium blocks (to 32 KiB) go through the exchange too (before: home only,
// and in a ring of 8 threads of 1-16 KiB blocks the owners carved while the
// blocks sent home waited in slabs they were not refilling from).
#define MEDIUM 2000u
static void test_another_threads_medium_blocks_fill_the_exchange(void **state) {
  (void)state;
  block_set_t *m = malloc(sizeof *m);
  assert_non_null(m);
  m->n = BLOCKS;
  for (size_t i = 0; i < BLOCKS; i++) assert_non_null(m->p[i] = hak_malloc(MEDIUM));
  unsigned cls = size_class_of(MEDIUM);
  assert_int_equal(transfer_blocks(cls), 0);
  park_a_thread();
  run_in_thread(free_all, m);
  // (A thread that only frees a medium class flushes batches of its shrunk
  // bound, tiny_thread.c: the exchange's chains are as many, of those sizes.)
  assert_int_equal(g_chains_before_exit, CHAINS_PARKED);
  assert_true(g_exchange_before_exit >= CHAINS_PARKED);
  assert_int_equal(transfer_chains(cls), CHAINS_AFTER);
  unpark();
  free(m);
}

static void test_the_exchange_goes_home_on_hak_trim(void **state) {
  (void)state;
  park_a_thread();
  run_in_thread(free_all, &g_set);
  assert_true(transfer_blocks(cls_of_size()) > 0);
  hak_trim();   // the main thread's list and the exchange go home: nothing of the slabs is out
  assert_int_equal(transfer_blocks(cls_of_size()), 0);
  assert_int_equal(used_of_set_slabs(), 0);
  unpark();
}

// The exchange's chains of a class no thread puts or takes any more (the
// sizes moved on) go home at another thread's looks at left classes, and
// their slabs count them no more; before, they stayed until a refill of the
// class, however far off, each pinning its slab (bench/drift -t 2: a chain
// of each 1-32 KiB class the sizes had passed).
static void test_chains_nobody_moves_go_home_at_the_looks_at_left_classes(void **state) {
  (void)state;
  unsigned cls = cls_of_size();
  uint32_t kept = CHAINS_AFTER * g_size_class[cls].batch;
  park_a_thread();
  run_in_thread(free_all, &g_set);
  assert_int_equal(transfer_blocks(cls), kept);
  uint64_t used_before = used_of_set_slabs();
  slow_path_bytes_elsewhere(LEFT_LOOKS + 1);
  assert_int_equal(transfer_blocks(cls), 0);
  assert_true(used_of_set_slabs() <= used_before - kept);
  unpark();
}

static void test_a_thread_overflowing_with_its_own_blocks_leaves_the_exchange_empty(void **state) {
  (void)state;
  free_all(&g_set);   // the owner itself: its list overflows with its own blocks
  assert_int_equal(transfer_blocks(cls_of_size()), 0);
}

// transfer_take_next: the chains of the first class past `over`, in class
// order, then none (a thread's exit and the trim look at every class this way).
static void test_take_next_finds_the_classes_past_a_count_in_order(void **state) {
  (void)state;
  unsigned a = size_class_of(512), b = size_class_of(768);
  assert_true(a < b);
  void *pa[2] = {hak_malloc(512), hak_malloc(512)}, *pb = hak_malloc(768);
  assert_true(transfer_put(a, 8, hak_base_from_raw(pa[0]), hak_base_from_raw(pa[0]), 1));
  assert_true(transfer_put(a, 8, hak_base_from_raw(pa[1]), hak_base_from_raw(pa[1]), 1));
  assert_true(transfer_put(b, 8, hak_base_from_raw(pb), hak_base_from_raw(pb), 1));
  hak_base_ptr_t first, last;
  unsigned c = 0;
  assert_int_equal(transfer_take_next(&c, 1, &first, &last), 1);   // a holds 2, b 1
  assert_int_equal(c, a);
  assert_ptr_equal(hak_base_raw(first), pa[1]);
  assert_int_equal(transfer_take_next(&c, 1, &first, &last), 0);   // none holds more than one now
  assert_int_equal(c, HAK_NUM_CLASSES);
  c = 0;
  assert_int_equal(transfer_take_next(&c, 0, &first, &last), 1);
  assert_int_equal(c, a);
  assert_ptr_equal(hak_base_raw(last), pa[0]);
  assert_int_equal(transfer_take_next(&c, 0, &first, &last), 1);
  assert_int_equal(c, b);
  assert_ptr_equal(hak_base_raw(first), pb);
  assert_int_equal(transfer_take_next(&c, 0, &first, &last), 0);
  hak_free(pa[0]);
  hak_free(pa[1]);
  hak_free(pb);
}

// A refill takes a chain another thread put before one this thread put
// itself, and says when it took its own (transfer_take_others_first): a
// thread left alone with blocks another thread allocated put them there and
// took them back for ever, each flush a fifth other threads' blocks, and
// batched its frees for the whole run (larson -t 1: 1.13x the time; the
// flushes' verdict now discounts them, free_batch_note_own_chain).
// transfer_take (an exit's, a trim's) takes the newest chain.
static void *put_a_chain(void *arg) {
  unsigned cls = size_class_of(512);
  assert_true(transfer_put(cls, 8, hak_base_from_raw(arg), hak_base_from_raw(arg), 1));
  return NULL;
}
static void test_a_refill_takes_other_threads_chains_before_its_own(void **state) {
  (void)state;
  unsigned cls = size_class_of(512);
  void *mine[3] = {hak_malloc(512), hak_malloc(512), hak_malloc(512)}, *theirs = hak_malloc(512);
  park_a_thread();   // two threads live when the putter exits: two chains a class stay
  assert_true(transfer_put(cls, 8, hak_base_from_raw(mine[0]), hak_base_from_raw(mine[0]), 1));
  run_in_thread(put_a_chain, theirs);
  assert_true(transfer_put(cls, 8, hak_base_from_raw(mine[1]), hak_base_from_raw(mine[1]), 1));
  assert_true(transfer_put(cls, 8, hak_base_from_raw(mine[2]), hak_base_from_raw(mine[2]), 1));
  assert_int_equal(transfer_chains(cls), 4);
  hak_base_ptr_t first, last;
  int own = -1;
  assert_int_equal(transfer_take_others_first(cls, UINT32_MAX, &first, &last, &own), 1);   // under its own two
  assert_ptr_equal(hak_base_raw(first), theirs);
  assert_int_equal(own, 0);
  assert_int_equal(transfer_take_others_first(cls, UINT32_MAX, &first, &last, &own), 1);   // its own are left
  assert_ptr_equal(hak_base_raw(first), mine[1]);   // (the top one took the taken chain's place)
  assert_int_equal(own, 1);
  assert_int_equal(transfer_take(cls, UINT32_MAX, &first, &last), 1);
  assert_ptr_equal(hak_base_raw(first), mine[2]);
  assert_int_equal(transfer_take(cls, UINT32_MAX, &first, &last), 1);
  assert_ptr_equal(hak_base_raw(first), mine[0]);
  assert_int_equal(transfer_chains(cls), 0);
  unpark();
  for (int k = 0; k < 3; k++) hak_free(mine[k]);
  hak_free(theirs);
}

#define EXCHANGE_TEST(f) cmocka_unit_test_setup_teardown(f, setup_main_holds_blocks, teardown_exchange)

int main(void) {
  const struct CMUnitTest tests[] = {
    EXCHANGE_TEST(test_overflow_of_another_threads_blocks_fills_the_exchange_then_goes_home),
    EXCHANGE_TEST(test_when_one_thread_is_left_the_exchange_goes_home_whole),
    EXCHANGE_TEST(test_a_third_threads_refill_takes_a_chain_from_the_exchange),
    EXCHANGE_TEST(test_the_exchange_goes_home_on_hak_trim),
    EXCHANGE_TEST(test_a_thread_overflowing_with_its_own_blocks_leaves_the_exchange_empty),
    EXCHANGE_TEST(test_another_threads_medium_blocks_fill_the_exchange),
    EXCHANGE_TEST(test_chains_nobody_moves_go_home_at_the_looks_at_left_classes),
    EXCHANGE_TEST(test_take_next_finds_the_classes_past_a_count_in_order),
    EXCHANGE_TEST(test_a_refill_takes_other_threads_chains_before_its_own),
  };
  return cmocka_run_group_tests_name("transfer", tests, NULL, NULL);
}
