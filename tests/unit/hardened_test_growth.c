// hardened_test_growth.c — the hardened engine's lists grow as the default
// build's do (tiny_refill.c class_grow), while every refill still takes at
// most what its shuffle holds (hardened_shuffle_chain's array of
// TLS_CACHE_MAX_BLOCKS): before, the hardened build never grew a list, and a
// thread cycling through a few sizes of 16-64 KiB in bursts (bench/bursts)
// took 4.8x the default build's time (1.7x with growth), random 32-128 KiB
// blocks 3.0x (2.2x).
#include <semaphore.h>

#include "unit_util.h"
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

// A block leaving the quarantine for a full list whose overflow gives a
// grown bound back (the flush held another thread's block: class_ungrow)
// found the list full again and its push failed (hardened_release_slow
// pushed after tiny_flush_overflow as the default build's free did,
// test_tls_sll): on no list, counted in use by its slab for good. Each free
// here drains the quarantine, so its block reaches the list at once; nothing
// may stay in use after the threads are gone and a trim.
#define LOST_SIZE (40u << 10)
typedef struct holder { void *two[2]; sem_t ready, done; } holder_t;
static void *hold_two_blocks(void *arg) {   // a live thread owns their slab
  holder_t *h = arg;
  h->two[0] = hak_malloc(LOST_SIZE);
  h->two[1] = hak_malloc(LOST_SIZE);
  sem_post(&h->ready);
  sem_wait(&h->done);
  return NULL;
}
static void free_now(void *p) {
  hak_free(p);
  hardened_quarantine_drain();
}
typedef struct full_past_growth { void *other[2]; int grew, full; } full_past_growth_t;
static void *release_into_a_full_grown_list(void *arg) {
  full_past_growth_t *r = arg;
  tls_cache_t *tc = &t_tls_cache;
  static void *blk[128];
  for (int round = 0; round < 8; round++) {   // the bound grows to hold 64
    for (int i = 0; i < 64; i++) blk[i] = hak_malloc(LOST_SIZE);
    for (int i = 0; i < 64; i++) free_now(blk[i]);
  }
  unsigned cls = slab_of(r->other[0])->cls;
  r->grew = tc->cap_grow[cls] != 0;
  int n = tc->cap[cls] < 128 ? tc->cap[cls] : 128;
  for (int i = 0; i < n; i++) blk[i] = hak_malloc(LOST_SIZE);
  for (int i = 0; i < n && tc->lists[cls].room != 1; i++) free_now(blk[i]);   // to one short of full
  free_now(r->other[0]);                                                     // another thread's on top: full
  r->full = tc->lists[cls].room == 0;
  free_now(r->other[1]);   // the overflow's flush holds other[0]: the grown bound goes
  for (int i = 0; i < n; i++)
    if (!block_is_free(hak_user_to_base(hak_user_from_raw(blk[i])))) free_now(blk[i]);
  return NULL;
}
static void test_a_release_into_a_full_list_past_a_grown_bound_keeps_its_block(void **state) {
  (void)state;
  hak_trim();
  size_t before = stats_now().in_use_bytes;
  full_past_growth_t r = {0};
  holder_t h;
  sem_init(&h.ready, 0, 0);
  sem_init(&h.done, 0, 0);
  pthread_t holder;
  assert_int_equal(pthread_create(&holder, NULL, hold_two_blocks, &h), 0);
  sem_wait(&h.ready);
  r.other[0] = h.two[0];
  r.other[1] = h.two[1];
  run_in_thread(release_into_a_full_grown_list, &r);
  sem_post(&h.done);
  pthread_join(holder, NULL);
  assert_true(r.grew);
  assert_true(r.full);
  hak_trim();   // (a quarantined block is marked free: only the count tells a lost one)
  assert_int_equal(stats_now().in_use_bytes, before);
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
