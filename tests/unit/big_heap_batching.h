// big_heap_batching.h — the scenario both engines' tests share (default:
// test_free_batch.c, hardened: hardened_test_free_batch.c): a thread whose
// slabs hold FREE_BATCH_HEAP_LINES blocks of 16 B or more tests its own frees in
// batches (free_batch_note_heap), and stops once its slabs hold under half.
#ifndef HAK_TEST_BIG_HEAP_BATCHING_H
#define HAK_TEST_BIG_HEAP_BATCHING_H

#include "unit_util.h"
#include "debug/report.h"
#include "tiny/free_batch_box.h"
#include "tiny/tiny_heap.h"

#define HEAP_BLOCKS (FREE_BATCH_HEAP_LINES + (16u << 10))

typedef struct heap_batching {
  int active_big, heap_big;     // after the mallocs
  int active_small;             // after the frees, a flush and a few mallocs
  uint32_t owned_big, owned_small;
} heap_batching_t;

// Thread body: HEAP_BLOCKS blocks of 16 bytes, then all freed, then 64.
static inline void *big_heap_then_small(void *arg) {
  heap_batching_t *r = arg;
  void **v = malloc(HEAP_BLOCKS * sizeof *v);
  for (uint32_t i = 0; i < HEAP_BLOCKS; i++) v[i] = hak_malloc(16);
  r->active_big = (int)t_free_batch_active;
  r->heap_big = (int)t_free_batch_p->heap;
  r->owned_big = t_heap_p->owned_lines;
  for (uint32_t i = 0; i < HEAP_BLOCKS; i++) hak_free(v[i]);
  hak_thread_flush();                      // the lists' blocks (and a quarantine) home: the slabs go back
  for (int i = 0; i < 64; i++) v[i] = hak_malloc(16);
  r->active_small = (int)t_free_batch_active;
  r->owned_small = t_heap_p->owned_lines;
  for (int i = 0; i < 64; i++) hak_free(v[i]);
  free(v);
  return NULL;
}

static inline void expect_big_heap_batching_until_it_shrinks(void) {
  heap_batching_t r = {0};
  run_in_thread(big_heap_then_small, &r);
  if (!r.active_big || !r.heap_big) fail_msg("not batching with %u lines in its slabs", r.owned_big);
  assert_true(r.owned_big >= FREE_BATCH_HEAP_LINES);
  if (r.active_small) fail_msg("still batching with %u lines in its slabs", r.owned_small);
}

// A double free on a batching big heap is reported by its batch (before the
// batch's next FREE_BATCH_N frees are done): run in a child.
static inline void big_heap_double_free(void) {
  void **v = malloc(HEAP_BLOCKS * sizeof *v);
  for (uint32_t i = 0; i < HEAP_BLOCKS; i++) v[i] = hak_malloc(16);
  if (!t_free_batch_active) _exit(3);
  hak_free(v[7]);
  hak_free(v[7]);
  hak_write_str(2, "held\n");
  for (uint32_t i = 100; i < 100 + FREE_BATCH_N; i++) hak_free(v[i]);   // the batch drains within these
  hak_write_str(2, "after a batch\n");
  _exit(0);
}
static inline void expect_big_heap_double_free_reported_by_its_batch(void) {
  child_result_t r = run_in_child(big_heap_double_free);
  assert_int_equal(r.signal, SIGABRT);
  if (!reported(&r, "double free")) fail_msg("stderr: \"%s\"", r.err);
  if (strstr(r.err, "held\n") == NULL || strstr(r.err, "after a batch") != NULL) fail_msg("stderr: \"%s\"", r.err);
}

#endif
