// test_free_batch.c — a thread whose frees are mostly other threads' blocks
// checks them in batches (tiny/free_batch_box.h): when it starts and stops,
// that no held block is lost, and that a double free is still reported,
// before the block can be handed out twice.
#include "unit_util.h"
#include "debug/report.h"
#include "stats/stats.h"
#include "tiny/free_batch_box.h"
#include "big_heap_batching.h"
#include "tiny/tiny_heap.h"

#define NBLOCKS 2048
#define SIZE 256
static void *g_blocks[NBLOCKS];

static void *alloc_blocks(void *arg) {
  (void)arg;
  for (int i = 0; i < NBLOCKS; i++) g_blocks[i] = hak_malloc(SIZE);
  return NULL;
}

// What a consumer thread saw of its own batching.
typedef struct consumer {
  int first;            // blocks g_blocks[first ..] it frees (from)
  int active_after;     // batching after its frees
  uint32_t held_after;  // blocks held after them
  int active_after_local;   // batching after a while of freeing its own blocks
  int local_rounds;     // 0: no local churn
} consumer_t;

static void *free_blocks(void *arg) {
  consumer_t *c = arg;
  for (int i = c->first; i < NBLOCKS; i++) hak_free(g_blocks[i]);
  c->active_after = (int)t_free_batch_active;
  c->held_after = t_free_batch_p->n;
  if (c->local_rounds > 0) {
    static __thread void *mine[512];
    for (int r = 0; r < c->local_rounds; r++) {
      for (int i = 0; i < 512; i++) mine[i] = hak_malloc(SIZE);
      for (int i = 0; i < 512; i++) hak_free(mine[i]);
    }
    c->active_after_local = (int)t_free_batch_active;
  }
  return NULL;
}

static void test_a_thread_freeing_other_threads_blocks_batches_and_loses_none(void **state) {
  (void)state;
  uint64_t batched = batched_frees_so_far();
  run_in_thread(alloc_blocks, NULL);
  consumer_t c = {0};
  run_in_thread(free_blocks, &c);
  assert_int_equal(c.active_after, 1);
  // 2048 frees, batching from an early flush on: some are held at the end,
  // fewer than a batch. They were tested and freed when the thread exited:
  // every block is marked free now (a held block is not, until then).
  assert_true(c.held_after > 0 && c.held_after < FREE_BATCH_N);
  for (int i = 0; i < NBLOCKS; i++) assert_true(block_is_free(hak_user_to_base(hak_user_from_raw(g_blocks[i]))));
  // The statistics count them (HAKMEM_STATS: "frees tested in batches").
  assert_true(batched_frees_so_far() - batched > NBLOCKS / 2);
  hak_thread_flush();   // the class exchange's chains go home
}

// A thread that frees only other threads' medium blocks starts batching too:
// its medium lists' overflows send them home (medium classes have no class
// exchange), and those flushes count (ring -t 8 of 1-16 KiB blocks never
// batched before: every free waited on its mark's line).
static void *alloc_medium_blocks(void *arg) {
  (void)arg;
  for (int i = 0; i < NBLOCKS; i++) g_blocks[i] = hak_malloc(2000);
  return NULL;
}
static void test_a_thread_freeing_other_threads_medium_blocks_batches(void **state) {
  (void)state;
  run_in_thread(alloc_medium_blocks, NULL);
  consumer_t c = {0};
  run_in_thread(free_blocks, &c);
  assert_int_equal(c.active_after, 1);
  hak_thread_flush();
}

// A batching thread keeps other threads' blocks under a cache line on its
// list as it keeps larger ones, and its mallocs reuse them (tcmalloc's and
// jemalloc's way): sending them home (the false-sharing rule of the free fast
// path, for a thread that frees a few of them) made the owner's mallocs wait
// on lines this thread wrote, and a ring of threads handing on half of each
// batch of 1-111 B blocks (sh8bench's shape) ran at 1.3-1.4x jemalloc's time.
#define SMALL 32
typedef struct small_reuse { int active; int reused; } small_reuse_t;
static void *free_small_blocks_then_malloc(void *arg) {
  small_reuse_t *r = arg;
  for (int i = 0; i < NBLOCKS; i++) hak_free(g_blocks[i]);
  r->active = (int)t_free_batch_active;
  free_batch_drain();
  void *got[64];
  for (int k = 0; k < 64; k++) {
    got[k] = hak_malloc(SMALL);
    for (int i = 0; i < NBLOCKS; i++)
      if (got[k] == g_blocks[i]) { r->reused++; break; }
  }
  for (int k = 0; k < 64; k++) hak_free(got[k]);
  return NULL;
}
static void test_a_batching_thread_reuses_other_threads_blocks_under_a_line(void **state) {
  (void)state;
  for (int i = 0; i < NBLOCKS; i++) g_blocks[i] = hak_malloc(SMALL);   // this thread's slab, alive
  small_reuse_t r = {0};
  run_in_thread(free_small_blocks_then_malloc, &r);
  assert_int_equal(r.active, 1);
  if (r.reused < 48) fail_msg("%d of 64 mallocs reused the blocks it freed", r.reused);
  hak_thread_flush();
}

static void test_a_thread_freeing_its_own_blocks_never_batches(void **state) {
  (void)state;
  uint64_t batched = batched_frees_so_far();
  for (int r = 0; r < 50; r++) {
    alloc_blocks(NULL);
    for (int i = 0; i < NBLOCKS; i++) hak_free(g_blocks[i]);
    assert_int_equal(t_free_batch_active, 0);
  }
  assert_int_equal(batched_frees_so_far(), batched);
}

static void test_batching_stops_when_the_frees_turn_local(void **state) {
  (void)state;
  run_in_thread(alloc_blocks, NULL);
  consumer_t c = {.local_rounds = 20};
  run_in_thread(free_blocks, &c);
  assert_int_equal(c.active_after, 1);
  assert_int_equal(c.active_after_local, 0);
  hak_thread_flush();
}

// The same with the thread that allocated the blocks still alive and idle (a
// main thread that built the data and waits for the worker; larson -t 1). The
// worker's overflows put the main thread's blocks in the class exchange, and
// its refills took them back (its own chains): every flush held a fifth
// other threads' blocks, for ever, and the worker batched 95% of its frees
// (1.13x the time). A refill takes only other threads' chains now.
static void test_batching_stops_when_the_frees_turn_local_while_their_owner_lives(void **state) {
  (void)state;
  alloc_blocks(NULL);   // this thread's blocks: it lives on and frees nothing
  consumer_t c = {.local_rounds = 20};
  run_in_thread(free_blocks, &c);
  assert_int_equal(c.active_after, 1);
  assert_int_equal(c.active_after_local, 0);
  hak_thread_flush();
}

// A list holds runs of blocks in the order they were freed, so one overflow's
// flush shows one run: a batching thread's flush of its own run of frees
// between flushes of half other threads' blocks does not stop it; a window of
// FREE_BATCH_STOP_WINDOW blocks of its own does. (Stopped at the first such
// flush, two threads handing each other half of every batch of 1-111 B
// started batching 1 684 times in 40 M frees, each other thread's block freed
// in between waiting on its mark's line: 1.4x the time.)
static void test_a_batching_thread_keeps_batching_through_a_run_of_its_own_frees(void **state) {
  (void)state;
  void *p = hak_malloc(SIZE);   // the thread is set up
  uint64_t starts = hak_counters()->batch_starts;
  free_batch_set_active(1);
  for (int r = 0; r < 16; r++) {
    free_batch_note_flush(128, 0);    // its own run of frees on top of its list
    assert_int_equal(t_free_batch_active, 1);
    free_batch_note_flush(128, 64);   // then half other threads' blocks
    assert_int_equal(t_free_batch_active, 1);
  }
  assert_int_equal(hak_counters()->batch_starts - starts, 1);
  for (uint32_t moved = 0; moved < FREE_BATCH_STOP_WINDOW; moved += 128) {
    assert_int_equal(t_free_batch_active, 1);
    free_batch_note_flush(128, 15);   // under an eighth
  }
  assert_int_equal(t_free_batch_active, 0);
  hak_free(p);
}

static void test_HAKMEM_FREE_BATCH_0_keeps_every_check_at_the_free(void **state) {
  (void)state;
  int saved = g_hak_config.free_batch;
  g_hak_config.free_batch = 0;
  run_in_thread(alloc_blocks, NULL);
  consumer_t c = {0};
  run_in_thread(free_blocks, &c);
  g_hak_config.free_batch = saved;
  assert_int_equal(c.active_after, 0);
  assert_int_equal(c.held_after, 0);
  hak_thread_flush();
}

// ---- double frees on a batching thread (forked children) -----------------

static void *double_free_then_a_batch(void *arg) {
  (void)arg;
  int i = 0;
  while (i < NBLOCKS / 2) hak_free(g_blocks[i++]);
  if (!t_free_batch_active) return NULL;          // the child then exits without a report
  while (t_free_batch_p->n != 0) hak_free(g_blocks[i++]);   // an empty batch
  hak_free(g_blocks[0]);                          // freed above: held, not yet reported
  hak_write_str(2, "held\n");
  for (unsigned k = 0; k < FREE_BATCH_N; k++) hak_free(g_blocks[i++]);
  hak_write_str(2, "after a batch\n");            // never reached: the batch reported it
  return NULL;
}
// In a child: one thread allocates the blocks, another runs `misuse` on them;
// expected: a double-free report and abort after "held" and before "after a
// batch".
static void *(*g_misuse)(void *);
static void misuse_on_a_batching_thread(void) {
  run_in_thread(alloc_blocks, NULL);
  run_in_thread(g_misuse, NULL);
}
static void expect_double_free_reported_by_the_batch(void *(*misuse)(void *)) {
  g_misuse = misuse;
  child_result_t r = run_in_child(misuse_on_a_batching_thread);
  assert_int_equal(r.signal, SIGABRT);
  if (!reported(&r, "double free")) fail_msg("stderr: \"%s\"", r.err);
  assert_non_null(strstr(r.err, "held\n"));
  assert_null(strstr(r.err, "after a batch"));
}

static void test_a_double_free_on_a_batching_thread_aborts_within_a_batch(void **state) {
  (void)state;
  expect_double_free_reported_by_the_batch(double_free_then_a_batch);
}

static void *double_free_then_exit(void *arg) {
  (void)arg;
  int i = 0;
  while (i < NBLOCKS / 2) hak_free(g_blocks[i++]);
  if (!t_free_batch_active) return NULL;
  while (t_free_batch_p->n != 0) hak_free(g_blocks[i++]);   // an empty batch
  hak_free(g_blocks[1]);   // the thread exits with it held
  return NULL;
}
static void double_free_then_thread_exit(void) {
  run_in_thread(alloc_blocks, NULL);
  run_in_thread(double_free_then_exit, NULL);
  hak_write_str(2, "joined\n");   // never reached
}

static void test_a_double_free_held_at_thread_exit_aborts_there(void **state) {
  (void)state;
  child_result_t r = run_in_child(double_free_then_thread_exit);
  assert_int_equal(r.signal, SIGABRT);
  if (!reported(&r, "double free")) fail_msg("stderr: \"%s\"", r.err);
  assert_null(strstr(r.err, "joined"));
}

// Reports without aborting: the block freed twice comes back from malloc at
// most once, however many blocks of its class the thread then takes.
static void *double_free_then_reuse(void *arg) {
  int *twice = arg;
  for (int i = 0; i < NBLOCKS / 2; i++) hak_free(g_blocks[i]);
  if (!t_free_batch_active) return NULL;
  hak_free(g_blocks[2]);
  hak_free(g_blocks[2]);
  for (int i = NBLOCKS / 2; i < NBLOCKS; i++) hak_free(g_blocks[i]);
  hak_thread_flush();
  static void *got[4 * NBLOCKS];
  int seen = 0;
  for (int i = 0; i < 4 * NBLOCKS; i++) {
    got[i] = hak_malloc(SIZE);
    seen += got[i] == g_blocks[2];
  }
  *twice = seen > 1;
  for (int i = 0; i < 4 * NBLOCKS; i++) hak_free(got[i]);
  return NULL;
}
static void double_free_reported_without_abort(void) {
  hak_report_set_abort(0);
  run_in_thread(alloc_blocks, NULL);
  int twice = -1;
  run_in_thread(double_free_then_reuse, &twice);
  hak_write_str(2, twice == 0 ? "handed out once\n" : twice == 1 ? "handed out twice\n" : "not batching\n");
}

static void test_a_double_free_on_a_batching_thread_never_hands_the_block_out_twice(void **state) {
  (void)state;
  child_result_t r = run_in_child(double_free_reported_without_abort);
  assert_int_equal(r.signal, 0);
  if (!reported(&r, "double free")) fail_msg("stderr: \"%s\"", r.err);
  if (strstr(r.err, "handed out once\n") == NULL) fail_msg("stderr: \"%s\"", r.err);
}

// A block above FREE_BATCH_MAX_BLOCK (a slab class of the large kind) is not
// held: its double free is reported at the free, batching or not.
static void *big_double_free(void *arg) {
  (void)arg;
  for (int i = 0; i < NBLOCKS / 2; i++) hak_free(g_blocks[i]);
  if (!t_free_batch_active) return NULL;
  void *p = hak_malloc(FREE_BATCH_MAX_BLOCK + 1);
  hak_free(p);
  hak_free(p);
  hak_write_str(2, "after the second free\n");   // never reached
  return NULL;
}
static void big_double_free_on_a_batching_thread(void) {
  run_in_thread(alloc_blocks, NULL);
  run_in_thread(big_double_free, NULL);
}

static void test_a_double_free_of_a_block_over_the_held_size_aborts_at_the_free(void **state) {
  (void)state;
  child_result_t r = run_in_child(big_double_free_on_a_batching_thread);
  assert_int_equal(r.signal, SIGABRT);
  if (!reported(&r, "double free")) fail_msg("stderr: \"%s\"", r.err);
  assert_null(strstr(r.err, "after the second free"));
}

// A medium block (here 4 KiB) is held like a tiny one: its double free is
// reported within the batch, before the block could be handed out twice.
static void *medium_double_free_then_a_batch(void *arg) {
  (void)arg;
  int i = 0;
  while (i < NBLOCKS / 2) hak_free(g_blocks[i++]);
  if (!t_free_batch_active) return NULL;
  void *p = hak_malloc(4096);
  while (t_free_batch_p->n != 0) hak_free(g_blocks[i++]);   // an empty batch
  hak_free(p);
  hak_free(p);                                    // held, not yet reported
  if (t_free_batch_p->n == 2) hak_write_str(2, "held\n");
  for (unsigned k = 0; k < FREE_BATCH_N; k++) hak_free(g_blocks[i++]);
  hak_write_str(2, "after a batch\n");            // never reached: the batch reported it
  return NULL;
}
static void test_a_medium_double_free_on_a_batching_thread_aborts_within_a_batch(void **state) {
  (void)state;
  expect_double_free_reported_by_the_batch(medium_double_free_then_a_batch);
}

// A thread whose slabs hold FREE_BATCH_HEAP_LINES blocks or more tests its
// own frees in batches too (each free's mark load waits on a line that a heap
// that large seldom has in a cache), and stops once its slabs hold under half
// of that; a double free there is still reported within a batch.
static void test_a_thread_with_a_big_heap_batches_its_own_frees_until_it_shrinks(void **state) {
  (void)state;
  expect_big_heap_batching_until_it_shrinks();
}

// A heap's size counts a tiny block over a cache line once a line
// (tiny_heap_slab_lines): an eighth of FREE_BATCH_HEAP_LINES blocks of 512 B
// batch, as many of 64 B or of 2 000 B (a medium block counts one) do not.
typedef struct heap_of { size_t size; uint32_t blocks; int batching; uint32_t lines; } heap_of_t;
static void *heap_of_blocks(void *arg) {
  heap_of_t *r = arg;
  void **v = malloc(r->blocks * sizeof *v);
  for (uint32_t i = 0; i < r->blocks; i++) v[i] = hak_malloc(r->size);
  r->batching = (int)(t_free_batch_active && t_free_batch_p->heap);
  r->lines = t_heap_p->owned_lines;
  for (uint32_t i = 0; i < r->blocks; i++) hak_free(v[i]);
  free(v);
  return NULL;
}
static void test_a_heaps_size_counts_a_tiny_blocks_lines(void **state) {
  (void)state;
  uint32_t blocks = FREE_BATCH_HEAP_LINES / 8u + (4u << 10);
  heap_of_t big = {.size = 512, .blocks = blocks}, small = {.size = 64, .blocks = blocks},
            medium = {.size = 2000, .blocks = blocks};
  run_in_thread(heap_of_blocks, &big);
  run_in_thread(heap_of_blocks, &small);
  run_in_thread(heap_of_blocks, &medium);
  if (!big.batching) fail_msg("512 B: not batching at %u lines", big.lines);
  assert_true(big.lines >= 8u * blocks);
  if (small.batching) fail_msg("64 B: batching at %u lines", small.lines);
  if (medium.batching) fail_msg("2000 B: batching at %u lines", medium.lines);
  assert_true(small.lines < FREE_BATCH_HEAP_LINES && medium.lines < FREE_BATCH_HEAP_LINES);
}

// A big heap freed in the order it was built stops batching at its first
// batch's drain (each block's line is the prefetcher's next: the batch only
// costs), and the heap's size does not start it again for a while; freed in a
// scattered order it keeps batching.
typedef struct heap_order { int scattered, active_big, active_after; } heap_order_t;
static void *big_heap_freed_in_an_order(void *arg) {
  heap_order_t *r = arg;
  void **v = malloc(HEAP_BLOCKS * sizeof *v);
  for (uint32_t i = 0; i < HEAP_BLOCKS; i++) v[i] = hak_malloc(16);
  r->active_big = (int)(t_free_batch_active && t_free_batch_p->heap);
  uint32_t k = 0;
  for (uint32_t i = 0; i < 4 * FREE_BATCH_N; i++) {
    k = r->scattered ? (k + 40503u) % HEAP_BLOCKS : i;   // a stride of 40 503 blocks (640 KB)
    hak_free(v[k]);
    v[k] = NULL;
  }
  r->active_after = (int)t_free_batch_active;
  for (uint32_t i = 0; i < 64; i++) hak_free(hak_malloc(16));   // refills, the heap still big
  for (uint32_t i = 0; i < HEAP_BLOCKS; i++) hak_free(v[i]);
  free(v);
  return NULL;
}
static void test_a_big_heap_freed_in_the_order_it_was_built_stops_batching(void **state) {
  (void)state;
  heap_order_t in_order = {0}, scattered = {.scattered = 1};
  run_in_thread(big_heap_freed_in_an_order, &in_order);
  run_in_thread(big_heap_freed_in_an_order, &scattered);
  assert_int_equal(in_order.active_big, 1);
  assert_int_equal(in_order.active_after, 0);
  assert_int_equal(scattered.active_big, 1);
  assert_int_equal(scattered.active_after, 1);
}

// A big heap's batch times the mark load of the last block of every
// FREE_BATCH_PROBE_EVERY-th batch, at its drain (free_batch_probe):
// FREE_BATCH_PROBES of them make a window, counted here, whatever the loads
// took.
typedef struct heap_probes { int active_big; uint32_t probes; } heap_probes_t;
static void *big_heap_probed(void *arg) {
  heap_probes_t *r = arg;
  void **v = malloc(HEAP_BLOCKS * sizeof *v);
  for (uint32_t i = 0; i < HEAP_BLOCKS; i++) v[i] = hak_malloc(16);
  r->active_big = (int)(t_free_batch_active && t_free_batch_p->heap);
  uint32_t k = 0, frees = FREE_BATCH_N * FREE_BATCH_PROBE_EVERY * (FREE_BATCH_PROBES - 1);
  for (uint32_t i = 0; i < frees; i++) {
    k = (k + 40503u) % HEAP_BLOCKS;   // scattered: the batch goes on
    hak_free(v[k]);
    v[k] = NULL;
  }
  r->probes = t_free_batch_p->probes;
  for (uint32_t i = 0; i < HEAP_BLOCKS; i++) hak_free(v[i]);
  free(v);
  return NULL;
}
static void test_a_big_heaps_batch_probes_every_few_batches(void **state) {
  (void)state;
  heap_probes_t r = {0};
  run_in_thread(big_heap_probed, &r);
  assert_int_equal(r.active_big, 1);
  assert_int_equal(r.probes, FREE_BATCH_PROBES - 1);
}

// A window of probes whose loads hit a cache (the program read each block
// before its free: mimalloc-bench's alloc-test, 256 k blocks summed before
// each delete[], ran at 1.07x the time batched) stops a heap's batch, and the
// heap's size does not start it again for FREE_BATCH_HEAP_REST refills; a
// window with an eighth of misses or more keeps it; probes never stop a
// batch of other threads' blocks. The loads' times are given here.
static void probe_window(uint32_t cold) {
  for (uint32_t i = 0; i < FREE_BATCH_PROBES; i++)
    free_batch_probe_note(i < cold ? 40u + FREE_BATCH_COLD_TICKS + 1u : 45u, 40u);
}
static void test_a_big_heaps_batch_stops_when_its_blocks_are_in_a_cache(void **state) {
  (void)state;
  void *p = hak_malloc(SIZE);   // the thread is set up
  uint64_t stops = hak_counters()->batch_probe_stops;
  free_batch_note_heap(FREE_BATCH_HEAP_LINES);
  assert_int_equal(t_free_batch_active, 1);
  assert_int_equal(t_free_batch_p->heap, 1);
  probe_window(FREE_BATCH_PROBES / 8);   // an eighth missed
  assert_int_equal(t_free_batch_active, 1);
  probe_window(FREE_BATCH_PROBES / 8 - 1);
  assert_int_equal(t_free_batch_active, 0);
  assert_int_equal(hak_counters()->batch_probe_stops - stops, 1);
  for (uint32_t i = 0; i < FREE_BATCH_HEAP_REST; i++) {
    free_batch_note_heap(FREE_BATCH_HEAP_LINES);
    assert_int_equal(t_free_batch_active, 0);
  }
  free_batch_note_heap(FREE_BATCH_HEAP_LINES);
  assert_int_equal(t_free_batch_active, 1);
  free_batch_note_heap(0);   // shrunk: stops
  assert_int_equal(t_free_batch_active, 0);
  free_batch_set_active(1);  // other threads' blocks (a flush's count)
  probe_window(0);
  assert_int_equal(t_free_batch_active, 1);
  free_batch_set_active(0);
  hak_free(p);
}

static void test_a_double_free_on_a_big_heap_aborts_within_a_batch(void **state) {
  (void)state;
  expect_big_heap_double_free_reported_by_its_batch();
}

// A held block is one word: its address and its class's list (the drain
// pushes it there without finding its slab again). Every class that is held
// packs and unpacks to itself; an address with a bit set where the class goes
// (a wild pointer that passed free's block-start test) is not held.
static void test_a_held_block_keeps_its_address_and_its_class(void **state) {
  (void)state;
  for (unsigned c = 0; c < HAK_NUM_CLASSES && g_size_class[c].size <= FREE_BATCH_MAX_BLOCK; c++) {
    void *p = hak_malloc(g_size_class[c].size);
    assert_non_null(p);
    hak_base_ptr_t b = hak_user_to_base(hak_user_from_raw(p));
    assert_true(free_batch_holdable(b));
    free_batch_held_t h = free_batch_held(b, c);
    assert_ptr_equal(hak_base_raw(free_batch_held_block(h)), hak_base_raw(b));
    assert_int_equal(free_batch_held_class(h), c);
    assert_int_equal((int32_t)free_batch_held_list(h), tls_list_tp_offset(c) - tls_list_tp_offset(0));
    hak_free(p);
  }
  assert_false(free_batch_holdable(hak_base_from_raw((void *)(((uintptr_t)1 << FREE_BATCH_CLASS_SHIFT) | 4096u))));
  assert_false(free_batch_holdable(hak_base_from_raw((void *)(~(uintptr_t)0 << 60))));
}

// While a thread batches, the classes it may hold take the batching key and
// every larger class keeps its own, so free tests such a block at once and
// the hold never sees one; stopping gives every class its key back.
static void test_batching_keys_only_the_classes_it_holds(void **state) {
  (void)state;
  void *p = hak_malloc(SIZE);   // the thread is set up
  free_batch_set_active(1);
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    uint32_t want = g_size_class[c].size <= FREE_BATCH_MAX_BLOCK ? FREE_BATCH_KEY
                                                                 : tls_owner_key_of_class(&t_tls_cache, c);
    assert_int_equal(t_tls_cache.lists[c].owner_key, want);
  }
  void *big = hak_malloc(FREE_BATCH_MAX_BLOCK + 1);
  unsigned big_cls = size_class_of(FREE_BATCH_MAX_BLOCK + 1);
  uint32_t held = t_free_batch_p->n;
  hak_free(big);   // pushed at once: on its list's head, nothing held
  assert_int_equal(t_free_batch_p->n, held);
  assert_ptr_equal(hak_base_raw(t_tls_cache.lists[big_cls].head), hak_base_raw(hak_user_to_base(hak_user_from_raw(big))));
  free_batch_set_active(0);
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++)
    assert_int_equal(t_tls_cache.lists[c].owner_key, tls_owner_key_of_class(&t_tls_cache, c));
  hak_free(p);
}

// The drain puts each held block on its own class's list: blocks of two
// classes held in turn come back from their classes' mallocs, the last held
// of each first.
static void test_a_drain_puts_each_held_block_on_its_classs_list(void **state) {
  (void)state;
  enum { N = 6 };
  void *a[N], *b[N];
  for (int i = 0; i < N; i++) {
    a[i] = hak_malloc(48);
    b[i] = hak_malloc(700);
  }
  free_batch_set_active(1);
  uint32_t held = t_free_batch_p->n;
  for (int i = 0; i < N; i++) {
    hak_free(a[i]);
    hak_free(b[i]);
  }
  assert_int_equal(t_free_batch_p->n, held + 2 * N);
  free_batch_drain();
  assert_int_equal(t_free_batch_p->n, 0);
  for (int i = N - 1; i >= 0; i--) {
    assert_ptr_equal(hak_malloc(48), a[i]);
    assert_ptr_equal(hak_malloc(700), b[i]);
  }
  free_batch_set_active(0);
  for (int i = 0; i < N; i++) {
    hak_free(a[i]);
    hak_free(b[i]);
  }
}

// A big heap's batch sends its own blocks past a full list straight home
// (tiny_free_local_one, a chain of one on the slab's list), a batch at a
// time between the overflow's looks (tiny_overflow_home), where a flush
// would have walked them again: each such block is marked free there, and
// malloc hands every block out once. For a class whose chain records sit in
// words 2 and 3 of the first block, and for the 16-byte class, whose chain
// of one is its link. Within a few batches: no probe window ends.
#define PAST_FULL 256u
typedef struct home_run {
  size_t size;
  int batching;
  uint64_t home;              // home_frees counted
  uint32_t marked;            // of the blocks past the full list, marked free after the drain
  uint32_t handed_out, twice; // the mallocs after, and blocks among them handed out while live
} home_run_t;
static int cmp_ptr(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;
  return (x > y) - (x < y);
}
static void *big_heap_past_a_full_list(void *arg) {
  home_run_t *r = arg;
  void **v = malloc(HEAP_BLOCKS * sizeof *v);
  for (uint32_t i = 0; i < HEAP_BLOCKS; i++) v[i] = hak_malloc(r->size);
  r->batching = (int)(t_free_batch_active && t_free_batch_p->heap);
  unsigned cls = size_class_of(r->size);
  uint32_t room = (uint32_t)t_tls_cache.lists[cls].room, frees = room + PAST_FULL;
  uint64_t home = hak_counters()->home_frees;
  void **freed = malloc(frees * sizeof *freed);
  uint32_t k = 0;
  for (uint32_t i = 0; i < frees; i++) {
    k = (k + 40503u) % HEAP_BLOCKS;   // scattered: the batch goes on
    freed[i] = v[k];
    hak_free(v[k]);
    v[k] = NULL;
  }
  free_batch_drain();
  r->home = hak_counters()->home_frees - home;
  for (uint32_t i = room; i < frees; i++)
    r->marked += (uint32_t)block_is_free(hak_user_to_base(hak_user_from_raw(freed[i])));
  // Every block freed comes back, each once, never one still live.
  uint32_t live = 0;
  for (uint32_t i = 0; i < HEAP_BLOCKS; i++)
    if (v[i] != NULL) v[live++] = v[i];
  for (uint32_t i = 0; i < frees; i++) v[live + i] = hak_malloc(r->size);
  r->handed_out = frees;
  qsort(v, live + frees, sizeof *v, cmp_ptr);
  for (uint32_t i = 1; i < live + frees; i++) r->twice += v[i] == v[i - 1];
  for (uint32_t i = 0; i < live + frees; i++) hak_free(v[i]);
  free(freed);
  free(v);
  return NULL;
}
static void test_a_big_heaps_own_blocks_past_a_full_list_go_straight_home(void **state) {
  (void)state;
  size_t sizes[] = {16, 32, 512};
  for (unsigned s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    home_run_t r = {.size = sizes[s]};
    run_in_thread(big_heap_past_a_full_list, &r);
    if (!r.batching) fail_msg("%zu B: not batching", r.size);
    if (r.home != PAST_FULL || r.marked != PAST_FULL)
      fail_msg("%zu B: %llu of %u sent home, %u marked free", r.size, (unsigned long long)r.home, PAST_FULL, r.marked);
    if (r.twice != 0) fail_msg("%zu B: %u blocks handed out twice", r.size, r.twice);
  }
}

// ... and a second free of a block sent home so is a double free, reported
// by the batch that holds it.
static void big_heap_double_free_of_a_block_sent_home(void) {
  void **v = malloc(HEAP_BLOCKS * sizeof *v);
  for (uint32_t i = 0; i < HEAP_BLOCKS; i++) v[i] = hak_malloc(32);
  if (!t_free_batch_active) _exit(3);
  uint32_t frees = (uint32_t)t_tls_cache.lists[size_class_of(32)].room + PAST_FULL, k = 0;
  for (uint32_t i = 0; i < frees; i++) {
    k = (k + 40503u) % HEAP_BLOCKS;
    hak_free(v[k]);
  }
  free_batch_drain();
  if (hak_counters()->home_frees == 0) _exit(4);
  hak_write_str(2, "sent home\n");
  hak_free(v[k]);   // the last freed: past the full list, home
  free_batch_drain();
  hak_write_str(2, "after its drain\n");
  _exit(0);
}
static void test_a_double_free_of_a_block_a_batch_sent_home_aborts(void **state) {
  (void)state;
  expect_abort_between(big_heap_double_free_of_a_block_sent_home, "double free", "sent home\n", "after its drain");
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_a_thread_freeing_other_threads_blocks_batches_and_loses_none),
    HAK_UNIT_TEST(test_a_thread_freeing_other_threads_medium_blocks_batches),
    HAK_UNIT_TEST(test_a_batching_thread_reuses_other_threads_blocks_under_a_line),
    HAK_UNIT_TEST(test_a_thread_freeing_its_own_blocks_never_batches),
    HAK_UNIT_TEST(test_batching_stops_when_the_frees_turn_local),
    HAK_UNIT_TEST(test_batching_stops_when_the_frees_turn_local_while_their_owner_lives),
    HAK_UNIT_TEST(test_a_batching_thread_keeps_batching_through_a_run_of_its_own_frees),
    HAK_UNIT_TEST(test_HAKMEM_FREE_BATCH_0_keeps_every_check_at_the_free),
    HAK_UNIT_TEST(test_a_double_free_on_a_batching_thread_aborts_within_a_batch),
    HAK_UNIT_TEST(test_a_double_free_held_at_thread_exit_aborts_there),
    HAK_UNIT_TEST(test_a_double_free_on_a_batching_thread_never_hands_the_block_out_twice),
    HAK_UNIT_TEST(test_a_double_free_of_a_block_over_the_held_size_aborts_at_the_free),
    HAK_UNIT_TEST(test_a_medium_double_free_on_a_batching_thread_aborts_within_a_batch),
    HAK_UNIT_TEST(test_a_thread_with_a_big_heap_batches_its_own_frees_until_it_shrinks),
    HAK_UNIT_TEST(test_a_double_free_on_a_big_heap_aborts_within_a_batch),
    HAK_UNIT_TEST(test_a_heaps_size_counts_a_tiny_blocks_lines),
    HAK_UNIT_TEST(test_a_big_heap_freed_in_the_order_it_was_built_stops_batching),
    HAK_UNIT_TEST(test_a_big_heaps_batch_probes_every_few_batches),
    HAK_UNIT_TEST(test_a_big_heaps_batch_stops_when_its_blocks_are_in_a_cache),
    HAK_UNIT_TEST(test_a_held_block_keeps_its_address_and_its_class),
    HAK_UNIT_TEST(test_batching_keys_only_the_classes_it_holds),
    HAK_UNIT_TEST(test_a_drain_puts_each_held_block_on_its_classs_list),
    HAK_UNIT_TEST(test_a_big_heaps_own_blocks_past_a_full_list_go_straight_home),
    HAK_UNIT_TEST(test_a_double_free_of_a_block_a_batch_sent_home_aborts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
