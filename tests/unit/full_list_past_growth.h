// full_list_past_growth.h — the scenario both engines' tests share (default:
// test_tls_sll.c, hardened: hardened_test_growth.c). A free into a full list
// whose overflow's flush gives a grown bound back (the flush held another
// thread's block: class_ungrow, or batching's start in the flush,
// tiny_cache_ungrow) found the list full again, flushed only down to the
// class's bound, and its push failed (tiny_free_checked, and the hardened
// build's hardened_release_slow, pushed after tiny_flush_overflow): the block
// was on no list and its slab counted it in use for good (test_threads'
// exchanging threads, 1 run in 10-60 under load; a 48-64 KiB block a time).
// Nothing may stay in use after the threads are gone and a trim.
#ifndef HAK_TEST_FULL_LIST_PAST_GROWTH_H
#define HAK_TEST_FULL_LIST_PAST_GROWTH_H

#include <semaphore.h>

#include "unit_util.h"
#include "tiny/tiny_heap.h"

#define LOST_SIZE (40u << 10)   // above the class exchange and the batches: home through the flush

// The two blocks from a thread that lives (and owns their slab) until the
// test is done: an exited thread's slab would be adopted by the freeing
// thread's refills, its blocks that thread's own.
typedef struct lost_holder { void *two[2]; sem_t ready, done; } lost_holder_t;
static inline void *hold_two_blocks(void *arg) {
  lost_holder_t *h = arg;
  h->two[0] = hak_malloc(LOST_SIZE);
  h->two[1] = hak_malloc(LOST_SIZE);
  sem_post(&h->ready);
  sem_wait(&h->done);
  return NULL;
}

// free_now: the engine's free, its block on its list when it returns.
typedef struct full_past_growth { void *other[2]; void (*free_now)(void *); int grew, full; } full_past_growth_t;
static inline void *free_into_a_full_grown_list(void *arg) {
  full_past_growth_t *r = arg;
  tls_cache_t *tc = &t_tls_cache;
  static void *blk[128];
  for (int round = 0; round < 8; round++) {   // the bound grows to hold 64
    for (int i = 0; i < 64; i++) blk[i] = hak_malloc(LOST_SIZE);
    for (int i = 0; i < 64; i++) r->free_now(blk[i]);
  }
  unsigned cls = slab_of(r->other[0])->cls;
  r->grew = tc->cap_grow[cls] != 0;
  int n = tc->cap[cls] < 128 ? tc->cap[cls] : 128;
  for (int i = 0; i < n; i++) blk[i] = hak_malloc(LOST_SIZE);
  for (int i = 0; i < n && tc->lists[cls].room != 1; i++) r->free_now(blk[i]);   // to one short of full
  r->free_now(r->other[0]);                                                     // another thread's on top: full
  r->full = tc->lists[cls].room == 0;
  r->free_now(r->other[1]);   // the overflow's flush holds other[0]: the grown bound goes
  for (int i = 0; i < n; i++)
    if (!block_is_free(hak_user_to_base(hak_user_from_raw(blk[i])))) r->free_now(blk[i]);
  return NULL;
}

static inline void expect_a_free_into_a_full_grown_list_keeps_its_block(void (*free_now)(void *)) {
  hak_trim();
  size_t before = stats_now().in_use_bytes;
  full_past_growth_t r = {.free_now = free_now};
  lost_holder_t h;
  sem_init(&h.ready, 0, 0);
  sem_init(&h.done, 0, 0);
  pthread_t holder;
  assert_int_equal(pthread_create(&holder, NULL, hold_two_blocks, &h), 0);
  sem_wait(&h.ready);
  r.other[0] = h.two[0];
  r.other[1] = h.two[1];
  run_in_thread(free_into_a_full_grown_list, &r);
  sem_post(&h.done);
  pthread_join(holder, NULL);
  assert_true(r.grew);
  assert_true(r.full);
  hak_trim();   // (a hardened quarantined block is marked free: only the count tells a lost one)
  assert_int_equal(stats_now().in_use_bytes, before);
}

#endif
