// test_handover.c — a thread that only frees other threads' medium blocks
// (a consumer) hands them over at its batch's drain (tiny_flush.c
// tiny_handover): linked per class while their lines are in its cache, sent
// to the class exchange (or home) a class batch at a time, never put on its
// TLS list and walked again at the list's next overflow. What is checked:
// the chains go whole, the thread's list stays small, no block is lost at
// exit or malloc_trim, the thread takes its own chain back when it starts to
// allocate the class, and a double free of a block waiting in a chain is
// still reported.
#include "unit_util.h"
#include "debug/report.h"
#include "tiny/free_batch_box.h"
#include "tiny/tiny_heap.h"
#include "tiny/transfer_box.h"

// 8 000 B: class 8 KiB, a list bound of 64 and a batch of 32. Its bound
// halves at the 8th overflow with no refill between (TLS_SHRINK_STREAK), so
// after 64 + 7 * 32 = 288 frees the hand-over starts. The consumer took the
// class before (consumer_takes_class_first): a new thread's medium bound starts at
// an eighth (tiny_thread.c), 8 blocks flushed 4 at a time, and a thread
// that only ever frees the class never batches (each flush sent home).
#define SIZE    8000u
#define NBLOCKS 1024

static void *g_blocks[NBLOCKS];

static unsigned cls_of_size(void) { return size_class_of(SIZE); }

static uint64_t used_of_slabs(void) {
  uint64_t used = 0;
  slab_meta_t *seen[NBLOCKS];
  unsigned nseen = 0;
  for (int i = 0; i < NBLOCKS; i++) {
    slab_meta_t *m = slab_of(g_blocks[i]);
    unsigned j = 0;
    while (j < nseen && seen[j] != m) j++;
    if (j < nseen) continue;
    seen[nseen++] = m;
    used += slab_census_live(m);
  }
  return used;
}

// What the consumer saw after its frees, before its exit.
typedef struct consumer {
  int      upto;            // frees g_blocks[0 .. upto)
  int      batching;        // t_free_batch_active after them
  unsigned cap_shift;       // its bound's halvings of the class
  uint32_t cached;          // blocks on its list of the class
  uint32_t chain;           // blocks in its hand-over chain of the class
  uint32_t exchange;        // blocks in the class exchange
  uint32_t exchange_chain;  // the length of the exchange's top chain
  int      trim;            // 1: hak_trim() after the frees
  uint32_t chain_after_trim;
  int      retake;          // 1: then malloc the class once
  void    *retaken;         // what that malloc returned
  void    *chain_first;     // the chain's first block before it
} consumer_t;

static void *consume(void *arg) {
  consumer_t *c = arg;
  unsigned cls = cls_of_size();
  consumer_takes_class_first(cls, SIZE);
  for (int i = 0; i < c->upto; i++) hak_free(g_blocks[i]);
  free_batch_drain();   // what the batch holds, tested and handed over
  c->batching = (int)t_free_batch_active;
  c->cap_shift = t_tls_cache.cap_shift[cls];
  c->cached = tls_cached(&t_tls_cache, cls);
  c->chain = t_heap_p->handover_n[cls];
  c->exchange = transfer_blocks(cls);
  hak_base_ptr_t first, last;
  c->exchange_chain = transfer_take(cls, UINT32_MAX, &first, &last);
  if (c->exchange_chain > 0) transfer_put(cls, UINT32_MAX, first, last, c->exchange_chain);
  if (c->retake) {   // the list's blocks first, then the refill
    static __thread void *got[256];
    c->chain_first = c->chain != 0 ? hak_base_raw(t_heap_p->handover_first[cls]) : NULL;
    for (uint32_t k = 0; k <= c->cached; k++) got[k] = hak_malloc(SIZE);
    c->retaken = got[c->cached];
    for (uint32_t k = 0; k <= c->cached; k++) hak_free(got[k]);
  }
  if (c->trim) {
    hak_trim();
    c->chain_after_trim = t_heap_p->handover_n[cls];
  }
  return NULL;
}

static int setup_main_holds_blocks(void **state) {
  (void)state;
  tiny_flush_exchange();
  if (transfer_blocks(cls_of_size()) != 0) return -1;
  for (int i = 0; i < NBLOCKS; i++)
    if ((g_blocks[i] = hak_malloc(SIZE)) == NULL) return -1;
  return 0;
}

static int teardown(void **state) {
  tiny_flush_exchange();
  hak_thread_flush();
  return validate_engine(state);
}

static void test_a_consumer_hands_other_threads_blocks_over_a_class_batch_at_a_time(void **state) {
  (void)state;
  unsigned cls = cls_of_size();
  uint32_t batch = g_size_class[cls].batch;
  uint64_t handed = handed_over_so_far();
  consumer_t c = {.upto = NBLOCKS};
  run_in_thread(consume, &c);
  assert_int_equal(c.batching, 1);
  assert_true(handed_over_so_far() - handed > NBLOCKS / 2);   // HAKMEM_STATS counts them
  assert_true(c.cap_shift > 0);
  // Before: the shrunk list overflowed every 4 frees and its flushes gave
  // the exchange chains of 4 blocks; now whole batches of the class go.
  assert_int_equal(c.exchange_chain, batch);
  assert_int_equal(c.exchange % batch, 0);
  assert_true(c.chain < batch);
  // The list holds what came before the hand-over started, at most its
  // shrunk bound.
  assert_true(c.cached <= (uint32_t)g_size_class[cls].tls_cap >> c.cap_shift);
}

// With many threads live each consumer's chains are shorter, as the small
// classes' bounds (tiny_cache_share): a half past TINY_CACHE_FULL_THREADS
// live threads. Every consumer holds a chain of each class it frees: 64
// consumers of 1-4 KiB peaked at 101 MB against the peers' 3-9 (the
// hand-over's chains of a whole class batch; 31-34 MB now).
static void test_with_many_threads_live_a_consumers_chains_are_shorter(void **state) {
  (void)state;
  unsigned cls = cls_of_size();
  uint32_t batch = g_size_class[cls].batch;
  crowd_t crowd;
  crowd_gather(&crowd);
  consumer_t c = {.upto = NBLOCKS};
  run_in_thread(consume, &c);
  crowd_release(&crowd);
  assert_int_equal(c.batching, 1);
  assert_true(c.exchange_chain > 0);
  assert_int_equal(c.exchange_chain, batch / 2);   // (the crowd, main and the consumer: 15 live)
  assert_true(c.exchange_chain < batch);
}

static void test_a_consumers_exit_sends_its_chains_home_and_loses_no_block(void **state) {
  (void)state;
  unsigned cls = cls_of_size();
  uint64_t used_before = used_of_slabs();   // NBLOCKS, and what the main thread's list holds
  consumer_t c = {.upto = NBLOCKS - 5};     // a chain of a few blocks left at its exit
  run_in_thread(consume, &c);
  assert_true(c.chain > 0);
  tiny_flush_exchange();
  assert_int_equal(transfer_blocks(cls), 0);
  for (int i = NBLOCKS - 5; i < NBLOCKS; i++) hak_free(g_blocks[i]);
  // Every freed block is home or on the main thread's list (the last five).
  assert_int_equal(used_of_slabs(), used_before - NBLOCKS + 5);
}

static void test_hak_trim_sends_the_chains_home(void **state) {
  (void)state;
  consumer_t c = {.upto = NBLOCKS - 5, .trim = 1};
  run_in_thread(consume, &c);
  assert_true(c.chain > 0);
  assert_int_equal(c.chain_after_trim, 0);
}

static void test_a_consumer_that_allocates_the_class_takes_its_own_chain_first(void **state) {
  (void)state;
  consumer_t c = {.upto = NBLOCKS - 5, .retake = 1};
  run_in_thread(consume, &c);
  assert_true(c.chain > 0);
  assert_ptr_equal(c.retaken, c.chain_first);
}

// A double free of a block waiting in a chain: reported at the next batch.
static void *double_free_in_a_chain(void *arg) {
  (void)arg;
  unsigned cls = cls_of_size();
  consumer_takes_class_first(cls, SIZE);
  int i = 0;
  hak_free(g_blocks[i++]);   // the thread is set up (t_heap_p)
  // Until a chain waits and the next free does not drain the batch (the
  // double free below must be held, its report at the batch's drain). A
  // batch as long as the class batch ends with the chain just sent, so once
  // the hand-over has begun one block is drained on its own.
  while (i < NBLOCKS - (int)FREE_BATCH_N &&
         (t_free_batch_p->n + 1 == FREE_BATCH_N || t_heap_p->handover_n[cls] == 0)) {
    hak_free(g_blocks[i++]);
    if (t_free_batch_p->n == 1 && t_tls_cache.cap_shift[cls] != 0 && t_heap_p->handover_n[cls] == 0)
      free_batch_drain();
  }
  if (t_heap_p->handover_n[cls] == 0) {   // no hand-over: the child exits without a report
    hak_write_str(2, "no hand-over\n");
    return NULL;
  }
  void *twice = hak_base_raw(t_heap_p->handover_first[cls]);
  hak_free(twice);
  hak_write_str(2, "freed again\n");
  for (unsigned k = 0; k < FREE_BATCH_N; k++) hak_free(g_blocks[i++]);
  hak_write_str(2, "after a batch\n");   // never reached
  return NULL;
}
static void double_free_on_a_consumer(void) {
  for (int i = 0; i < NBLOCKS; i++) g_blocks[i] = hak_malloc(SIZE);
  run_in_thread(double_free_in_a_chain, NULL);
}

static void test_a_double_free_of_a_block_in_a_chain_is_reported(void **state) {
  (void)state;
  expect_abort_between(double_free_on_a_consumer, "double free", "freed again\n", "after a batch");
}

#define HANDOVER_TEST(f) cmocka_unit_test_setup_teardown(f, setup_main_holds_blocks, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
    HANDOVER_TEST(test_a_consumer_hands_other_threads_blocks_over_a_class_batch_at_a_time),
    HANDOVER_TEST(test_with_many_threads_live_a_consumers_chains_are_shorter),
    HANDOVER_TEST(test_a_consumers_exit_sends_its_chains_home_and_loses_no_block),
    HANDOVER_TEST(test_hak_trim_sends_the_chains_home),
    HANDOVER_TEST(test_a_consumer_that_allocates_the_class_takes_its_own_chain_first),
    cmocka_unit_test(test_a_double_free_of_a_block_in_a_chain_is_reported),
  };
  return cmocka_run_group_tests_name("handover", tests, NULL, NULL);
}
