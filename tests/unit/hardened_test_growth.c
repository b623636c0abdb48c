// hardened_test_growth.c — the hardened engine's lists grow as the default
// build's do (tiny_refill.c class_grow), while every refill still takes at
// most what its shuffle holds (hardened_shuffle_chain's array of
// TLS_CACHE_MAX_BLOCKS): before, the hardened build never grew a list, and a
// thread cycling through a few sizes of 16-64 KiB in bursts (bench/bursts)
// took 4.8x the default build's time (1.7x with growth), random 32-128 KiB
// blocks 3.0x (2.2x).
#include "unit_util.h"
#include "full_list_past_growth.h"
#include "tiny/hardened_box.h"
#include "tiny/tiny_heap.h"

_Static_assert(HAK_HARDENED, "built against the hardened engine");

// Rounds of n blocks of `size` taken, then freed: the class's cap_grow after.
typedef struct rounds {
  size_t size;
  int n, rounds;
  unsigned grew;
  uint64_t most_a_refill;   // the largest refill, in blocks
} rounds_t;

static void *take_and_free_in_rounds(void *arg) {
  rounds_t *r = arg;
  void **blk = malloc((size_t)r->n * sizeof(void *));
  hak_free(hak_malloc(r->size));                // the thread set up: its own counters
  unsigned cls = size_class_of(r->size + 16);   // the hardened tail: the class it takes
  const hak_class_counters_t *k = &hak_counters()->cls[cls];
  for (int round = 0; round < r->rounds; round++) {
    for (int i = 0; i < r->n; i++) {
      uint64_t refills = k->refills, blocks = k->refill_blocks;
      assert_non_null(blk[i] = hak_malloc(r->size));
      if (k->refills != refills && k->refill_blocks - blocks > r->most_a_refill)
        r->most_a_refill = k->refill_blocks - blocks;
    }
    for (int i = 0; i < r->n; i++) hak_free(blk[i]);
  }
  r->grew = t_tls_cache.cap_grow[slab_of(blk[0])->cls];
  free(blk);
  return NULL;
}

// A list of 96 KiB blocks taken and freed in rounds of 60 (more than the
// medium quarantine's 2 MiB lets wait) grows past its bound of 8.
static void test_a_hardened_medium_list_grows(void **state) {
  (void)state;
  rounds_t r = {.size = 96000, .n = 60, .rounds = 8};
  run_in_thread(take_and_free_in_rounds, &r);
  assert_int_not_equal(r.grew, 0);
}

// A list of 48-byte blocks grown by rounds of 2 000 (its bound of 256 to
// thousands, a batch of half that) refills at most TLS_CACHE_MAX_BLOCKS at a
// time, each batch shuffled.
static void test_a_grown_hardened_list_refills_what_its_shuffle_holds(void **state) {
  (void)state;
  rounds_t r = {.size = 32, .n = 2000, .rounds = 8};
  run_in_thread(take_and_free_in_rounds, &r);
  assert_int_not_equal(r.grew, 0);
  assert_true(r.most_a_refill > 0);
  assert_true(r.most_a_refill <= TLS_CACHE_MAX_BLOCKS);
}

// The hardened build's first refill of a class takes a batch, not
// FIRST_REFILL_BLOCKS: its shuffle then picks the next address among them.
static void *first_refill_len(void *arg) {
  uint32_t *len = arg;
  void *p = hak_malloc(48);   // (a larger class: the canary's tail)
  *len = tls_list_len(slab_of(p)->cls);
  hak_free(p);
  return NULL;
}
static void test_a_hardened_first_refill_takes_a_batch_to_shuffle(void **state) {
  (void)state;
  uint32_t len = 0;
  run_in_thread(first_refill_len, &len);
  assert_true(len + 1u > FIRST_REFILL_BLOCKS * 4u);
}

// The same through the quarantine (full_list_past_growth.h): each free
// drains it, so its block reaches the list at once.
static void free_now(void *p) {
  hak_free(p);
  hardened_quarantine_drain();
}
static void test_a_release_into_a_full_list_past_a_grown_bound_keeps_its_block(void **state) {
  (void)state;
  expect_a_free_into_a_full_grown_list_keeps_its_block(free_now);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_a_hardened_medium_list_grows),
    HAK_UNIT_TEST(test_a_grown_hardened_list_refills_what_its_shuffle_holds),
    HAK_UNIT_TEST(test_a_hardened_first_refill_takes_a_batch_to_shuffle),
    HAK_UNIT_TEST(test_a_release_into_a_full_list_past_a_grown_bound_keeps_its_block),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
