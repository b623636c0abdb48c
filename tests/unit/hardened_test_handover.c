// hardened_test_handover.c — the hardened engine's consumer hands other
// threads' medium blocks over too (tiny_flush.c tiny_handover), as they leave
// its quarantine (hardened_box.c hardened_handover): linked per class and
// sent to the class exchange a class batch at a time, not pushed on its TLS
// list and walked again at the next overflow (prodcons -t 4 of 1-32 KiB:
// hardened / default 1.44-1.60 -> 0.91-0.95). A block written in quarantine
// is still reported when it leaves.
#include "unit_util.h"
#include "debug/report.h"
#include "tiny/free_batch_box.h"
#include "tiny/tiny_heap.h"
#include "tiny/transfer_box.h"

_Static_assert(HAK_HARDENED, "built against the hardened engine");

// 8 000 B: class 8 KiB (a bound of 64, a batch of 32), a request that leaves
// the hardened canary room in the class.
#define SIZE    8000u
#define NBLOCKS 1024

static void *g_blocks[NBLOCKS];

static unsigned cls_of_size(void) { return slab_of(g_blocks[0])->cls; }

static void *alloc_blocks(void *arg) {
  (void)arg;
  for (int i = 0; i < NBLOCKS; i++) g_blocks[i] = hak_malloc(SIZE);
  return NULL;
}

typedef struct consumer {
  int batching;
  uint32_t chain, exchange_chain;
} consumer_t;

static void *consume(void *arg) {
  consumer_t *c = arg;
  unsigned cls = cls_of_size();
  consumer_takes_class_first(cls, SIZE);   // (a bound of 64, not a new thread's 8)
  for (int i = 0; i < NBLOCKS; i++) hak_free(g_blocks[i]);
  c->batching = (int)t_free_batch_active;
  c->chain = t_heap_p->handover_n[cls];
  hak_base_ptr_t first, last;
  c->exchange_chain = transfer_take(cls, UINT32_MAX, &first, &last);
  if (c->exchange_chain > 0) transfer_put(cls, UINT32_MAX, first, last, c->exchange_chain);
  return NULL;
}

static void test_a_hardened_consumer_hands_blocks_over_a_class_batch_at_a_time(void **state) {
  (void)state;
  tiny_flush_exchange();
  uint64_t handed = handed_over_so_far();
  run_in_thread(alloc_blocks, NULL);
  unsigned cls = cls_of_size();
  consumer_t c = {0};
  run_in_thread(consume, &c);
  assert_int_equal(c.batching, 1);
  // Most of them, once its bound of the class shrank (before: none; they
  // went on its list, and home or to the exchange at its overflows).
  assert_true(handed_over_so_far() - handed > NBLOCKS / 2);
  assert_int_equal(c.exchange_chain, g_size_class[cls].batch);
  assert_true(c.chain < g_size_class[cls].batch);
  hak_thread_flush();
  tiny_flush_exchange();
}

// In a child: a consumer hands blocks over, then writes into a block waiting
// in its quarantine and frees on until that block leaves: reported there.
static void *write_in_quarantine(void *arg) {
  (void)arg;
  unsigned cls = cls_of_size();
  consumer_takes_class_first(cls, SIZE);
  int i = 0;
  while (i < NBLOCKS / 2) hak_free(g_blocks[i++]);
  free_batch_drain();   // every held block filled and in quarantine
  if (!t_free_batch_active || t_tls_cache.cap_shift[cls] == 0) {
    hak_write_str(2, "no hand-over\n");
    return NULL;
  }
  ((volatile char *)g_blocks[i - 1])[0] ^= 1;   // the newest block in quarantine
  hak_write_str(2, "written\n");
  while (i < NBLOCKS) hak_free(g_blocks[i++]);
  free_batch_drain();
  hak_write_str(2, "not reported\n");
  return NULL;
}
static void write_after_free_on_a_consumer(void) {
  run_in_thread(alloc_blocks, NULL);
  run_in_thread(write_in_quarantine, NULL);
}

static void test_a_write_in_quarantine_is_reported_when_the_block_is_handed_over(void **state) {
  (void)state;
  expect_abort_between(write_after_free_on_a_consumer, "write after free", "written\n", "not reported");
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_a_hardened_consumer_hands_blocks_over_a_class_batch_at_a_time),
    cmocka_unit_test(test_a_write_in_quarantine_is_reported_when_the_block_is_handed_over),
  };
  return cmocka_run_group_tests_name("hardened_handover", tests, NULL, NULL);
}
