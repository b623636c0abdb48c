// test_tls_sll.c — the per-thread lists (tls_sll_box), their refill and flush.
// Each test uses a size class no other test of this program touches.
#include "unit_util.h"
#include "full_list_past_growth.h"
#include "tiny/free_batch_box.h"

// Free `n` blocks of `size` one by one; return the longest the TLS list got.
static uint32_t longest_list_while_freeing(size_t size, size_t n) {
  unsigned cls = size_class_of(size);
  void **v = calloc(n, sizeof *v);
  for (size_t i = 0; i < n; i++) v[i] = hak_malloc(size);
  uint32_t longest = 0;
  for (size_t i = 0; i < n; i++) {
    hak_free(v[i]);
    uint32_t len = tls_list_len(cls);
    if (len > longest) longest = len;
  }
  free(v);
  return longest;
}

static void test_tls_list_never_exceeds_its_cap_when_freeing_many_blocks(void **state) {
  (void)state;
  unsigned cls = size_class_of(64);
  uint32_t cap = g_size_class[cls].tls_cap;
  assert_true(longest_list_while_freeing(64, 3 * (size_t)cap + 7) <= cap);
}

static void test_tls_list_reaches_its_cap_before_it_flushes(void **state) {
  (void)state;
  unsigned cls = size_class_of(320);
  uint32_t cap = g_size_class[cls].tls_cap;
  assert_int_equal(longest_list_while_freeing(320, 3 * (size_t)cap + 7), cap);
}

static void test_tls_list_length_plus_room_is_the_cap(void **state) {
  (void)state;
  unsigned cls = size_class_of(96);
  uint32_t cap = g_size_class[cls].tls_cap;
  size_t n = 2 * (size_t)cap + 3;
  void **v = calloc(n, sizeof *v);
  for (size_t i = 0; i < n; i++) {
    v[i] = hak_malloc(96);
    assert_int_equal(tls_list_len(cls) + t_tls_cache.lists[cls].room, cap);
  }
  for (size_t i = 0; i < n; i++) {
    hak_free(v[i]);
    assert_int_equal(tls_list_len(cls) + t_tls_cache.lists[cls].room, cap);
  }
  free(v);
}

// A thread that has not allocated yet: every list is the end block, every
// room 0 (the TLS image), and the fast pop of an empty list misses without
// touching it.
static void *fresh_thread_lists(void *arg) {
  (void)arg;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    if (!tls_sll_is_end(t_tls_cache.lists[c].head) || t_tls_cache.lists[c].room != 0) return (void *)1;
    if (!hak_base_is_null(tls_sll_pop_fast(&t_tls_cache, size_class_tls_slot(c)))) return (void *)2;
    if (!tls_sll_is_end(t_tls_cache.lists[c].head) || t_tls_cache.lists[c].room != 0) return (void *)3;
  }
  return NULL;
}

static void test_a_new_thread_starts_with_every_list_at_the_end_block(void **state) {
  (void)state;
  assert_null(run_in_thread(fresh_thread_lists, NULL));
}

// The end block's link is never plausible, so a list emptied by pops ends
// the fast path without a corruption report and the refill takes over.
static void test_popping_a_list_to_its_end_misses_then_refills(void **state) {
  (void)state;
  unsigned cls = size_class_of(272);
  void *p = hak_malloc(272);   // a refill: the rest of what it carved stays on the list
  assert_non_null(p);
  uint32_t n = tls_list_len(cls);
  assert_true(n > 0);
  void *popped[TLS_CACHE_MAX_BLOCKS];
  assert_true(n <= TLS_CACHE_MAX_BLOCKS);
  for (uint32_t i = 0; i < n; i++) {
    popped[i] = hak_base_raw(tls_sll_pop_fast(&t_tls_cache, size_class_tls_slot(cls)));
    assert_non_null(popped[i]);
  }
  assert_true(tls_list_empty(cls));
  assert_true(hak_base_is_null(tls_sll_pop_fast(&t_tls_cache, size_class_tls_slot(cls))));
  assert_int_equal(t_tls_cache.lists[cls].room, g_size_class[cls].tls_cap);
  void *q = hak_malloc(272);   // a refill, not a report (a report aborts here)
  assert_non_null(q);
  hak_free(q);
  hak_free(p);
  for (uint32_t i = 0; i < n; i++) hak_free(popped[i]);
}

// A refill from new memory carves a page's worth of blocks (at most a batch,
// at least one): tiny_refill.c, CARVE_BYTES.
static uint32_t carved_per_refill(unsigned cls) {
  uint32_t n = 4096u / g_size_class[cls].size;
  if (n == 0) n = 1;
  return n < g_size_class[cls].batch ? n : g_size_class[cls].batch;
}

// The thread's first refill of a class (FIRST_REFILL_BLOCKS) taken by
// mallocs into v, so that the next refill is one of a batch.
static void take_first_refill(size_t size, void *v[FIRST_REFILL_BLOCKS]) {
  for (unsigned i = 0; i < FIRST_REFILL_BLOCKS; i++) {
    v[i] = hak_malloc(size);
    assert_non_null(v[i]);
  }
  assert_true(tls_list_empty(size_class_of(size)));
}
static void free_all(void *v[FIRST_REFILL_BLOCKS]) {
  for (unsigned i = 0; i < FIRST_REFILL_BLOCKS; i++) hak_free(v[i]);
}

static void test_refill_from_new_memory_after_one_miss_leaves_a_page_of_blocks_minus_one(void **state) {
  (void)state;
  unsigned cls = size_class_of(160);   // never used before here: the slab is fresh
  hak_thread_flush();
  void *first[FIRST_REFILL_BLOCKS];
  take_first_refill(160, first);
  void *p = hak_malloc(160);
  assert_non_null(p);
  assert_int_equal(tls_list_len(cls), carved_per_refill(cls) - 1u);
  hak_free(p);
  free_all(first);
}

// A thread's first refill of a class moves FIRST_REFILL_BLOCKS, its next
// ones a batch: a thread that took a block or two of a dozen classes and
// exited carved a page of each, and its exit walked them all back.
static void *first_and_second_refill(void *arg) {
  uint32_t *len = arg;
  unsigned cls = size_class_of(48);
  void *first[FIRST_REFILL_BLOCKS];
  first[0] = hak_malloc(48);
  len[0] = tls_list_len(cls);
  for (unsigned i = 1; i < FIRST_REFILL_BLOCKS; i++) first[i] = hak_malloc(48);
  void *p = hak_malloc(48);
  len[1] = tls_list_len(cls);
  hak_free(p);
  free_all(first);
  return NULL;
}
static void test_a_threads_first_refill_of_a_class_takes_a_few_blocks_its_next_a_batch(void **state) {
  (void)state;
  uint32_t len[2] = {0, 0};
  run_in_thread(first_and_second_refill, len);
  assert_int_equal(len[0], FIRST_REFILL_BLOCKS - 1u);
  assert_true(len[1] > FIRST_REFILL_BLOCKS);
}

// ... and counts the bytes of the blocks it took toward the look at left
// classes (idle_class_box.h note_slow_path), not those of its batch: a refill
// carving one 64 KiB block (a page's worth at most) counted four, so a
// thread cycling through a few classes of 4-128 KiB in bursts looked every
// few refills, gave each class back between its bursts and refilled it one
// block a malloc (tcmalloc 0.13-0.3x our time).
static void *refill_one_large_block(void *arg) {
  uint64_t *r = arg;
  unsigned cls = size_class_of(64 << 10);
  uint64_t blocks = hak_counters()->cls[cls].refill_blocks;
  void *p = hak_malloc(64 << 10);
  r[0] = t_heap_p->left_bytes;
  r[1] = (hak_counters()->cls[cls].refill_blocks - blocks) * g_size_class[cls].size;
  hak_free(p);
  return NULL;
}
static void test_a_refill_counts_the_bytes_it_took_toward_the_look_at_left_classes(void **state) {
  (void)state;
  uint64_t r[2] = {0, 1};
  run_in_thread(refill_one_large_block, r);
  assert_int_not_equal(r[1], 0);
  assert_int_equal(r[0], r[1]);
}

static void test_refill_counts_every_block_it_moves_in_the_slab_used_count(void **state) {
  (void)state;
  unsigned cls = size_class_of(192);   // never used before here: the slab is fresh
  void *first[FIRST_REFILL_BLOCKS];
  take_first_refill(192, first);
  assert_int_equal(slab_census_live(slab_of(first[0])), FIRST_REFILL_BLOCKS);
  void *p = hak_malloc(192);
  assert_non_null(p);
  assert_ptr_equal(slab_of(p), slab_of(first[0]));
  assert_int_equal(slab_census_live(slab_of(p)), FIRST_REFILL_BLOCKS + tls_list_len(cls) + 1u);
  assert_int_equal(slab_census_live(slab_of(p)), FIRST_REFILL_BLOCKS + carved_per_refill(cls));
  hak_free(p);
  free_all(first);
}

static void test_refilled_blocks_all_come_from_the_current_slab(void **state) {
  (void)state;
  unsigned cls = size_class_of(224);
  hak_thread_flush();
  void *p = hak_malloc(224);
  assert_non_null(p);
  slab_meta_t *m = slab_of(p);
  assert_ptr_equal(t_heap_p->cur[cls], m);
  for (hak_base_ptr_t b = t_tls_cache.lists[cls].head; !tls_sll_is_end(b); b = block_next(b))
    assert_ptr_equal(slab_of(hak_base_raw(b)), m);
  hak_free(p);
}

static void test_most_recently_freed_block_is_handed_out_next(void **state) {
  (void)state;
  void *p = hak_malloc(48);
  hak_free(p);
  assert_ptr_equal(hak_malloc(48), p);
  hak_free(p);
}

static void test_calloc_zeroes_a_reused_block(void **state) {
  (void)state;
  static const size_t sizes[] = {16, 48, 100, 1000, 5000, 100000};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    size_t n = sizes[i];
    unsigned char *p = hak_malloc(n);
    memset(p, 0xab, n);
    hak_free(p);
    unsigned char *q = hak_calloc(1, n);
    assert_ptr_equal(q, p);            // the same block came back ...
    for (size_t k = 0; k < n; k++) assert_int_equal(q[k], 0);   // ... zeroed
    hak_free(q);
  }
}

static void test_calloc_zeroes_a_reused_huge_mapping(void **state) {
  (void)state;
  size_t n = 1u << 20;
  unsigned char *p = hak_malloc(n);
  memset(p, 0xcd, n);
  hak_free(p);                         // kept in the huge cache
  unsigned char *q = hak_calloc(1, n);
  assert_non_null(q);
  for (size_t k = 0; k < n; k += 1) if (q[k] != 0) fail_msg("byte %zu is %u", k, q[k]);
  hak_free(q);
}

static void test_thread_flush_empties_every_tls_list(void **state) {
  (void)state;
  void *p = hak_malloc(64), *q = hak_malloc(700);
  hak_free(p);
  hak_free(q);
  hak_thread_flush();
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) assert_true(tls_list_empty(c));
}

// More live threads, smaller bounds: past TINY_CACHE_FULL_THREADS live threads
// a small class's list holds half as many blocks, and a thread that was over
// its new bound gives the surplus back at its next slow path; the full bound
// comes back when the threads are gone. Classes above 1 KiB keep theirs.
static void test_lists_of_small_classes_halve_with_many_threads_and_grow_back(void **state) {
  (void)state;
  unsigned small = size_class_of(256), medium = size_class_of(4096);
  uint32_t full = g_size_class[small].tls_cap;
  void *fill[256];
  for (uint32_t i = 0; i < full; i++) fill[i] = hak_malloc(256);
  for (uint32_t i = 0; i < full; i++) hak_free(fill[i]);   // the list of 256 B at its full bound
  assert_int_equal(tls_list_len(small), full);
  uint32_t medium_before = t_tls_cache.cap[medium];
  crowd_t c;
  crowd_gather(&c);
  tiny_cache_rescale();        // what this thread's next refill or flush does first
  uint32_t half = t_tls_cache.cap[small];
  uint32_t medium_cap = t_tls_cache.cap[medium];
  uint32_t len_rescaled = tls_list_len(small);   // was over the new bound: flushed
  for (uint32_t i = 0; i < full; i++) fill[i] = hak_malloc(256);
  for (uint32_t i = 0; i < full; i++) hak_free(fill[i]);
  uint32_t len_crowded = tls_list_len(small);
  crowd_release(&c);
  assert_int_equal(half, full / 2);
  assert_true(len_rescaled <= half);
  assert_true(len_crowded <= half);
  assert_int_equal(medium_cap, medium_before);
  tiny_cache_rescale();        // the crowd is gone: the full bound is back
  assert_int_equal(t_tls_cache.cap[small], full);
  assert_int_equal(t_tls_cache.lists[small].room + tls_list_len(small), full);
}

// A thread that frees more of a medium class than it takes (a consumer)
// keeps fewer of its blocks: every TLS_SHRINK_STREAK overflows of the list with
// no refill between halve the bound, down to an eighth, and each refill
// doubles it back. Before, a consumer hoarded up to 512 KiB per medium class while
// its producers carved new memory (8 producers and 8 consumers of 8 B-32 KiB
// blocks: 2.2x tcmalloc's time, 270 k page faults).
typedef struct medium_caps {
  uint32_t full, after_frees, after_takes;
  int sums_after_frees;        // length + room == bound after the shrinks
} medium_caps_t;
#define MEDIUM_BLOCKS 4096
static void *free_many_then_take_again(void *arg) {
  medium_caps_t *r = arg;
  static void *blk[MEDIUM_BLOCKS];
  unsigned cls = size_class_of(2048);
  for (int i = 0; i < MEDIUM_BLOCKS; i++) blk[i] = hak_malloc(2048);
  r->full = t_tls_cache.cap[cls];
  for (int i = 0; i < MEDIUM_BLOCKS; i++) hak_free(blk[i]);
  r->after_frees = t_tls_cache.cap[cls];
  r->sums_after_frees = t_tls_cache.lists[cls].room + tls_list_len(cls) == t_tls_cache.cap[cls];
  for (int i = 0; i < MEDIUM_BLOCKS; i++) blk[i] = hak_malloc(2048);
  r->after_takes = t_tls_cache.cap[cls];
  for (int i = 0; i < MEDIUM_BLOCKS; i++) hak_free(blk[i]);
  return NULL;
}
static void test_a_medium_list_shrinks_while_the_thread_only_frees_and_grows_back(void **state) {
  (void)state;
  medium_caps_t r = {0};
  run_in_thread(free_many_then_take_again, &r);
  unsigned cls = size_class_of(2048);
  assert_int_equal(r.full, g_size_class[cls].tls_cap);
  assert_int_equal(r.after_frees, r.full >> TLS_SHRINK_MAX);
  assert_true(r.sums_after_frees);
  assert_true(r.after_takes >= r.full);   // back, or grown: its own blocks came back
}

// A thread that only frees blocks of medium classes other threads allocated
// (a consumer) holds at most an eighth of each class's bound from its first
// free: a new thread's medium bounds start shrunk (tiny_thread.c) and double
// back at each refill. Before, each consumer held up to the whole 512 KiB of
// each class until its overflows shrank the bound: 1 producer and 32
// consumers of 4-32 KiB peaked at 117 MB (tcmalloc 18.6, mimalloc 14.3).
#define CONSUMER_SIZES 6
#define CONSUMER_BLOCKS 96
static const size_t g_consumer_size[CONSUMER_SIZES] = {2048, 3072, 4096, 6144, 8192, 12288};
static void *only_free_medium_blocks(void *arg) {
  void **v = arg;
  for (int i = 0; i < CONSUMER_SIZES * CONSUMER_BLOCKS; i++) hak_free(v[i]);
  int within = 1;
  for (int k = 0; k < CONSUMER_SIZES; k++) {
    unsigned cls = size_class_of(g_consumer_size[k]);
    uint32_t eighth = (uint32_t)tls_cap_for(cls, t_tls_cache.cap_share) >> TLS_SHRINK_MAX;
    if (eighth < TLS_CACHE_MIN_BLOCKS) eighth = TLS_CACHE_MIN_BLOCKS;
    within &= t_tls_cache.cap[cls] == eighth && tls_list_len(cls) <= eighth;
  }
  return (void *)(uintptr_t)within;
}
static void test_a_thread_that_only_frees_medium_blocks_holds_an_eighth_of_each_bound(void **state) {
  (void)state;
  static void *v[CONSUMER_SIZES * CONSUMER_BLOCKS];
  for (int k = 0; k < CONSUMER_SIZES; k++)
    for (int i = 0; i < CONSUMER_BLOCKS; i++) assert_non_null(v[k * CONSUMER_BLOCKS + i] = hak_malloc(g_consumer_size[k]));
  assert_true((uintptr_t)run_in_thread(only_free_medium_blocks, v));
}

// A thread that takes as much of a medium class as it frees keeps its bound
// at the end of every round of frees, or a grown one, never a halved one
// (before, the second overflow with no refill between halved it, and the next
// round's refills doubled it back: ws-medium did that 4 595 times in 4 M
// operations).
static void *take_and_free_in_rounds(void *arg) {
  int *kept = arg;
  static void *blk[600];
  unsigned cls = size_class_of(2048);
  *kept = 1;
  for (int r = 0; r < 50; r++) {
    for (int i = 0; i < 600; i++) blk[i] = hak_malloc(2048);
    for (int i = 0; i < 600; i++) hak_free(blk[i]);
    if (t_tls_cache.cap[cls] < g_size_class[cls].tls_cap) *kept = 0;
  }
  return NULL;
}
static void test_a_medium_list_keeps_its_bound_while_the_thread_takes_as_much_as_it_frees(void **state) {
  (void)state;
  int kept = 0;
  run_in_thread(take_and_free_in_rounds, &kept);
  assert_true(kept);
}

// Small classes keep their bound whatever the thread does with them.
static void *free_many_small(void *arg) {
  uint32_t *cap = arg;
  static void *blk[MEDIUM_BLOCKS];
  for (int i = 0; i < MEDIUM_BLOCKS; i++) blk[i] = hak_malloc(512);
  for (int i = 0; i < MEDIUM_BLOCKS; i++) hak_free(blk[i]);
  *cap = t_tls_cache.cap[size_class_of(512)];
  return NULL;
}
static void test_a_small_list_keeps_its_bound_while_the_thread_only_frees(void **state) {
  (void)state;
  uint32_t cap = 0;
  run_in_thread(free_many_small, &cap);
  assert_int_equal(cap, g_size_class[size_class_of(512)].tls_cap);
}

// A thread that builds and frees batches of its own blocks past a small
// class's bound (1 000 blocks of 40 bytes, a tree built and freed) sent them
// home at every overflow and took them back at every refill: each round
// walked its blocks twice (a glibc bench-malloc-simple shape took 1.4x
// mimalloc's time). The bound now doubles at each refill after such an
// overflow, within TLS_GROWN_BYTES, until a round fits the list.
#define BATCH_BLOCKS 1000
// `rounds` rounds of n mallocs of `size` bytes (into blk) and their frees;
// returns the flushes of the class's list in the last round.
static uint64_t last_round_flushes(size_t size, void **blk, int n, int rounds) {
  unsigned cls = size_class_of(size);
  uint64_t flushes = 0;
  for (int round = 0; round < rounds; round++) {
    uint64_t before = hak_counters()->cls[cls].flushes;
    for (int i = 0; i < n; i++) blk[i] = hak_malloc(size);
    for (int i = 0; i < n; i++) hak_free(blk[i]);
    flushes = hak_counters()->cls[cls].flushes - before;
  }
  return flushes;
}
// `rounds` rounds of n blocks of `size` bytes in a thread of its own: the
// class's bound after them, the last round's flushes, length + room == bound.
typedef struct grown_caps {
  size_t size;                 // in: the blocks' size
  int n, rounds;               // in: blocks per round, rounds
  uint32_t cap;                // the bound after the rounds
  uint64_t last_round_flushes; // flushes of the list in the last round
  int sums;                    // length + room == bound at the end
} grown_caps_t;
static void *build_and_free_batches(void *arg) {
  grown_caps_t *r = arg;
  void **blk = malloc((size_t)r->n * sizeof(void *));
  unsigned cls = size_class_of(r->size);
  r->last_round_flushes = last_round_flushes(r->size, blk, r->n, r->rounds);
  r->cap = t_tls_cache.cap[cls];
  r->sums = t_tls_cache.lists[cls].room + tls_list_len(cls) == t_tls_cache.cap[cls];
  free(blk);
  return NULL;
}
// The rounds fit the grown list: no flush in the last, within its class's limit
// (tls_grown_bytes_of).
static void assert_grown_to_fit(size_t size, int n, int rounds) {
  grown_caps_t r = {.size = size, .n = n, .rounds = rounds};
  run_in_thread(build_and_free_batches, &r);
  unsigned cls = size_class_of(size);
  assert_true(g_size_class[cls].tls_cap < (uint32_t)n);   // the class's own bound is too small
  assert_true(r.cap >= (uint32_t)n);
  assert_true(r.cap <= tls_grown_bytes_of(g_size_class[cls].size) / g_size_class[cls].size);
  assert_int_equal(r.last_round_flushes, 0);
  assert_true(r.sums);
}
static void test_a_small_list_grows_while_the_thread_frees_and_takes_back_batches(void **state) {
  (void)state;
  assert_grown_to_fit(40, BATCH_BLOCKS, 8);
}

// ... to 2 MiB of blocks for a small class too: glibc's bench-malloc-simple
// takes and frees rounds of up to 1 600 blocks of one size; at 1 MiB a class
// the list of 1 KiB blocks stopped at 1 024, and each round of 1 600 went
// home and came back (a refill every 28 mallocs, tcmalloc 0.78x our time).
static void test_a_1k_list_grows_to_a_round_of_1600_blocks(void **state) {
  (void)state;
  assert_grown_to_fit(1024, 1600, 8);
}

// ... and so does a medium class's (1-32 KiB): at 128 blocks of 4 KiB, 200
// taken and freed in rounds went home and came back through the slabs at
// every round (random 1-32 KiB blocks in a working set of 8192: 150 k refills
// in 16 M operations, 1.11x the time).
static void test_a_medium_list_grows_while_the_thread_frees_and_takes_back_batches(void **state) {
  (void)state;
  assert_grown_to_fit(4096, 200, 6);
}

// ... to 2 MiB of blocks: 60 of 32 KiB against a bound of 16 (at 1 MiB the
// list stopped at 32, and bench/bursts refilled the class 18 times a round).
static void test_a_32k_list_grows_to_60_blocks(void **state) {
  (void)state;
  assert_grown_to_fit(32 << 10, 60, 8);
}

// ... and a class of the 512 KiB slabs above 32 KiB, to 4 MiB of blocks: 40
// of 96 KiB against a bound of 8 (random 32-128 KiB blocks: 1.12x the time
// with 1 MiB a class, 1.08x more with 2, 0.73x with 4 and a total of their
// own; at 2 MiB the list stopped at 21 blocks).
static void test_a_96k_list_grows_while_the_thread_frees_and_takes_back_batches(void **state) {
  (void)state;
  assert_grown_to_fit(96 << 10, 40, 8);
}

// A tree of 10 000 nodes freed and built again grew its class's bound one
// doubling per tree (six trees of walks before it fitted, 1.4x mimalloc's
// time in a tree-shaped probe): a refill after many overflows now doubles as
// often as their batches need, so the third round fits.
#define TREE_BLOCKS 10000
static void *build_and_free_a_big_batch(void *arg) {
  uint64_t *third_round_flushes = arg;
  static void *blk[TREE_BLOCKS];
  *third_round_flushes = last_round_flushes(48, blk, TREE_BLOCKS, 3);
  return NULL;
}
static void test_a_list_grows_to_a_big_batch_after_one_round(void **state) {
  (void)state;
  uint64_t flushes = UINT64_MAX;
  run_in_thread(build_and_free_a_big_batch, &flushes);
  assert_int_equal(flushes, 0);
}

// A free into a full list past a grown bound keeps its block
// (full_list_past_growth.h).
static void test_a_free_into_a_full_list_past_a_grown_bound_keeps_its_block(void **state) {
  (void)state;
  expect_a_free_into_a_full_grown_list_keeps_its_block(hak_free);
}

// Grown bounds hold the thread's own blocks, which no other class or thread
// can take while they wait: all of a thread's together add at most
// TLS_GROWN_TOTAL_BYTES over their classes' bounds.
#define BUDGET_CLASSES 8
static const size_t budget_sizes[BUDGET_CLASSES] = {256, 320, 384, 448, 512, 640, 1536, 3072};
// The bytes the grown bound of the class of `size` adds over its bound.
static uint64_t grown_bytes_of(size_t size) {
  unsigned cls = size_class_of(size);
  uint32_t base = tls_cap_for(cls, t_tls_cache.cap_share);
  return t_tls_cache.cap[cls] > base ? (uint64_t)(t_tls_cache.cap[cls] - base) * g_size_class[cls].size : 0;
}
// Rounds of each budget class's most growth (into blk); returns what their
// grown bounds add, and how many grew in *grew. Together they could add 10
// MiB, more than the total. The threads that call it do not batch their frees
// (budget_threads_batching_off): their slabs then hold over
// FREE_BATCH_HEAP_LINES lines of blocks (2 MiB of each of six classes of
// 256-640 B), and a heap's batch gives every grown bound back when it starts
// (free_batch_set_active, tiny_cache_ungrow), which is not what these tests
// measure.
static int budget_threads_batching_off(void) {
  int saved = g_hak_config.free_batch;
  g_hak_config.free_batch = 0;
  return saved;
}
static uint64_t grow_budget_classes(void **blk, uint64_t *grew) {
  for (int round = 0; round < 3; round++) {
    for (int k = 0; k < BUDGET_CLASSES; k++) {
      size_t n = tls_grown_bytes_of((uint32_t)budget_sizes[k]) / budget_sizes[k];
      if (n > TREE_BLOCKS) n = TREE_BLOCKS;
      for (size_t i = 0; i < n; i++) blk[i] = hak_malloc(budget_sizes[k]);
      for (size_t i = 0; i < n; i++) hak_free(blk[i]);
    }
  }
  uint64_t sum = 0;
  *grew = 0;
  for (int k = 0; k < BUDGET_CLASSES; k++) {
    sum += grown_bytes_of(budget_sizes[k]);
    *grew += t_tls_cache.cap_grow[size_class_of(budget_sizes[k])] != 0;
  }
  return sum;
}
static void *grow_many_classes(void *arg) {
  uint64_t *grown = arg;
  int saved = budget_threads_batching_off();
  void **blk = malloc(TREE_BLOCKS * sizeof(void *));
  grown[0] = grow_budget_classes(blk, &grown[1]);
  free(blk);
  g_hak_config.free_batch = saved;
  return NULL;
}
static void test_a_threads_grown_bounds_stay_within_its_total(void **state) {
  (void)state;
  uint64_t grown[2] = {UINT64_MAX, 0};
  run_in_thread(grow_many_classes, grown);
  assert_true(grown[0] <= TLS_GROWN_TOTAL_BYTES);
  assert_true(grown[0] >= TLS_GROWN_TOTAL_BYTES / 2);   // they did grow, up to the total
  assert_true(grown[1] >= 2);
  // Past 4 MiB: with that total, random 1-32 KiB blocks refilled 2.3x as often.
  assert_true(grown[0] > (4u << 20));
}

// ... and the classes above 32 KiB have a total of their own
// (TLS_GROWN_TOTAL_BYTES_LARGE): with the smaller classes grown to half their
// total or more, a list of 40 KiB blocks still grows to 100 (3.6 MiB over its
// bound of 8), and theirs stay as they were. With one total for all, and at
// most 2 MiB a class, it stopped short.
static void *grow_small_classes_then_a_40k_one(void *arg) {
  uint64_t *r = arg, grew;
  int saved = budget_threads_batching_off();
  void **blk = malloc(TREE_BLOCKS * sizeof(void *));
  r[0] = grow_budget_classes(blk, &grew);
  last_round_flushes(40 << 10, blk, 100, 8);
  r[1] = grown_bytes_of(40 << 10);
  r[2] = 0;
  for (int k = 0; k < BUDGET_CLASSES; k++) r[2] += grown_bytes_of(budget_sizes[k]);
  free(blk);
  g_hak_config.free_batch = saved;
  return NULL;
}
static void test_grown_classes_above_32k_have_a_total_of_their_own(void **state) {
  (void)state;
  uint64_t r[3] = {0, 0, UINT64_MAX};
  run_in_thread(grow_small_classes_then_a_40k_one, r);
  assert_true(r[0] >= TLS_GROWN_TOTAL_BYTES / 2);
  assert_true(r[1] > TLS_GROWN_TOTAL_BYTES - r[0]);    // past what the smaller classes left ...
  assert_true(r[1] > (3u << 20));
  assert_true(r[1] <= TLS_GROWN_BYTES_LARGE);           // ... within its class's limit
  assert_int_equal(r[2], r[0]);                         // theirs unchanged
}

// A grown bound is for a thread's own blocks: an overflow whose flush holds
// other threads' blocks (blocks of a cache line or more go on the freeing
// thread's list) puts it back to the class's.
static void *malloc_batch_of_128(void *arg) {
  void **v = arg;
  for (int i = 0; i < BATCH_BLOCKS; i++) v[i] = hak_malloc(128);
  return NULL;
}
static void *grow_then_free_others(void *arg) {
  uint32_t *caps = arg;
  static void *own[BATCH_BLOCKS], *others[BATCH_BLOCKS];
  unsigned cls = size_class_of(128);
  for (int round = 0; round < 8; round++) {
    for (int i = 0; i < BATCH_BLOCKS; i++) own[i] = hak_malloc(128);
    for (int i = 0; i < BATCH_BLOCKS; i++) hak_free(own[i]);
  }
  caps[0] = t_tls_cache.cap[cls];
  run_in_thread(malloc_batch_of_128, others);
  for (int i = 0; i < BATCH_BLOCKS; i++) hak_free(others[i]);
  caps[1] = t_tls_cache.cap[cls];
  return NULL;
}
static void test_a_grown_list_goes_back_when_it_flushes_other_threads_blocks(void **state) {
  (void)state;
  uint32_t caps[2] = {0, 0};
  run_in_thread(grow_then_free_others, caps);
  unsigned cls = size_class_of(128);
  assert_true(caps[0] > g_size_class[cls].tls_cap);
  assert_int_equal(caps[1], g_size_class[cls].tls_cap);
}

// A thread that starts batching its frees (most of a flush was other threads'
// blocks: free_batch_box.h) puts its grown bounds back: their overflows are
// its signal to stop, and a grown list overflowed rarely (a sh8bench shape,
// two threads handing each other half of every batch, batched 3x the frees).
static void *malloc_batch_of_40(void *arg) {
  void **v = arg;
  for (int i = 0; i < BATCH_BLOCKS; i++) v[i] = hak_malloc(40);
  return NULL;
}
static void *grow_then_start_batching(void *arg) {
  uint32_t *caps = arg;
  static void *own[BATCH_BLOCKS], *others[BATCH_BLOCKS];
  unsigned cls = size_class_of(40);
  for (int round = 0; round < 8; round++) {
    for (int i = 0; i < BATCH_BLOCKS; i++) own[i] = hak_malloc(40);
    for (int i = 0; i < BATCH_BLOCKS; i++) hak_free(own[i]);
  }
  caps[0] = t_tls_cache.cap[cls];
  run_in_thread(malloc_batch_of_40, others);
  for (int i = 0; i < BATCH_BLOCKS; i++) hak_free(others[i]);   // blocks under a cache line: the remote buffer
  caps[1] = t_tls_cache.cap[cls];
  caps[2] = t_free_batch_active;
  caps[3] = t_tls_cache.lists[cls].room + tls_list_len(cls) == t_tls_cache.cap[cls];
  return NULL;
}
static void test_a_thread_that_starts_batching_puts_its_grown_bounds_back(void **state) {
  (void)state;
  uint32_t caps[4] = {0, 0, 0, 0};
  run_in_thread(grow_then_start_batching, caps);
  unsigned cls = size_class_of(40);
  assert_true(caps[0] > g_size_class[cls].tls_cap);
  assert_int_equal(caps[2], 1);
  assert_int_equal(caps[1], g_size_class[cls].tls_cap);
  assert_true(caps[3]);
}

// An overflow's flush sends each block to its own slab, a run of one slab's
// blocks extended with one compare (tiny_flush.c flush_gather): blocks of
// two slabs freed in interleaved runs of 1 to 4, with one block of each slab
// kept, leave each slab counting exactly its kept block once the lists are
// flushed. A run that took in a block of the other slab, or lost count of
// its blocks, leaves a count off by the run's length.
#define RUNS_SIZE   896u
#define RUNS_BLOCKS 400u
static void test_a_flush_of_interleaved_runs_gives_each_slab_its_own_blocks(void **state) {
  (void)state;
  hak_thread_flush();
  void **v = calloc(RUNS_BLOCKS, sizeof *v);
  for (unsigned i = 0; i < RUNS_BLOCKS; i++) v[i] = hak_malloc(RUNS_SIZE);
  // The first two slabs the blocks came from, and their blocks in order.
  slab_meta_t *slab[2] = {ss_registry_slab_of(v[0]), NULL};
  for (unsigned i = 1; i < RUNS_BLOCKS && slab[1] == NULL; i++)
    if (ss_registry_slab_of(v[i]) != slab[0]) slab[1] = ss_registry_slab_of(v[i]);
  assert_non_null(slab[1]);
  void **of[2];
  unsigned n[2] = {0, 0};
  for (unsigned k = 0; k < 2; k++) of[k] = calloc(RUNS_BLOCKS, sizeof *of[k]);
  for (unsigned i = 0; i < RUNS_BLOCKS; i++)
    for (unsigned k = 0; k < 2; k++)
      if (ss_registry_slab_of(v[i]) == slab[k]) of[k][n[k]++] = v[i];
  assert_true(n[0] > 16 && n[1] > 16);
  // Block 0 of each slab stays; the rest go in runs of 1, 2, 3, 4, 1, ...
  // taken from each slab in turn, past the list's bound (flushes on the way).
  unsigned next[2] = {1, 1}, run = 1;
  for (unsigned k = 0; next[0] < n[0] || next[1] < n[1]; k ^= 1u, run = run % 4u + 1u)
    for (unsigned j = 0; j < run && next[k] < n[k]; j++) hak_free(of[k][next[k]++]);
  hak_thread_flush();
  for (unsigned k = 0; k < 2; k++) assert_int_equal(slab_census_live(slab[k]), 1);
  for (unsigned i = 0; i < RUNS_BLOCKS; i++)
    if (ss_registry_slab_of(v[i]) != slab[0] && ss_registry_slab_of(v[i]) != slab[1]) hak_free(v[i]);
  hak_free(of[0][0]);
  hak_free(of[1][0]);
  for (unsigned k = 0; k < 2; k++) free(of[k]);
  free(v);
}

// A flush gathers other threads' blocks into one chain per slab, for as
// many slabs as it has ways (tiny_flush.c flush_ways_t: 16, in sets of 4
// chosen by the slab's index in its SuperSlab): blocks of 16 slabs of one
// SuperSlab with consecutive indices (4 to a set), freed by another thread
// one slab after another, as a tree freed in post-order frees them, and
// flushed in one go leave one chain on each slab's remote list. A slab whose
// way another slab took would have a chain per block. (A thread's own blocks
// go home in runs, no way: flush_deliver_own.)
#define WAYS_SIZE  896u
#define WAYS_SLABS 16u
static unsigned remote_chains_on(slab_meta_t *m) {
  unsigned k = 0;
  for (hak_base_ptr_t b = hak_base_from_raw(remote_word_first(atomic_load(&m->remote_head))); !hak_base_is_null(b); k++)
    b = block_chain(m, b).next;
  return k;
}
// This thread's slab, every block of it handed out (an empty free list), with
// at least 4 of the blocks in v. (A slab an earlier test's thread left may
// hold some of v: another owner's slab takes its blocks on its remote list.)
static int usable_slab(slab_meta_t *m, void **v, size_t nv) {
  if (atomic_load(&m->owner) != thread_self_id() || m->freelist != NULL) return 0;
  size_t count = 0;
  for (size_t j = 0; j < nv; j++) count += ss_registry_slab_of(v[j]) == m;
  return count >= 4;
}
// Blocks 1-3 of each slab in turn, freed by this thread (not their slabs'
// owner): 48 blocks, within the list's bound of 73 (no overflow, so no
// flush on the way), then one flush of them all.
static void *free_round_robin_and_flush(void *arg) {
  void *(*freed)[3] = arg;
  for (unsigned j = 0; j < 3; j++)
    for (unsigned k = 0; k < WAYS_SLABS; k++) hak_free(freed[k][j]);
  tiny_flush(size_class_of(WAYS_SIZE), UINT32_MAX);
  return NULL;
}
static void *own_slabs_freed_elsewhere(void *arg) {
  unsigned *chains = arg, cls = size_class_of(WAYS_SIZE);
  uint32_t per = slab_capacity(1u << 16, g_size_class[cls].size);   // blocks of a 64 KiB slab, at most
  size_t nv = 48u * per;
  void **v = malloc(nv * sizeof *v);
  assert_non_null(v);
  for (size_t i = 0; i < nv; i++) v[i] = hak_malloc(WAYS_SIZE);
  tiny_flush(cls, UINT32_MAX);   // carved blocks not handed out go back to their slabs
  // WAYS_SLABS usable slabs of one SuperSlab at consecutive indices.
  slab_meta_t *chosen[WAYS_SLABS];
  unsigned pick = 0;
  for (size_t i = 0; i < nv && pick < WAYS_SLABS; i++) {
    slab_meta_t *m = ss_registry_slab_of(v[i]);
    superslab_t *ss = ss_of_meta(m);
    pick = 0;
    for (unsigned x = m->index; x < m->index + WAYS_SLABS && x < ss->nslabs; x++) {
      slab_meta_t *o = ss_slab(ss, x);
      if (!usable_slab(o, v, nv)) break;
      chosen[pick++] = o;
    }
  }
  assert_int_equal(pick, WAYS_SLABS);
  void *freed[WAYS_SLABS][3];   // block 0 of each stays allocated
  for (unsigned k = 0; k < WAYS_SLABS; k++) {
    unsigned got = 0, seen = 0;
    for (size_t j = 0; j < nv && got < 3; j++)
      if (ss_registry_slab_of(v[j]) == chosen[k] && seen++ > 0) freed[k][got++] = v[j];
    assert_int_equal(got, 3);
  }
  run_in_thread(free_round_robin_and_flush, freed);
  for (unsigned k = 0; k < WAYS_SLABS; k++) chains[k] = remote_chains_on(chosen[k]);
  for (size_t i = 0; i < nv; i++) {
    int done = 0;
    for (unsigned k = 0; k < WAYS_SLABS; k++)
      for (unsigned j = 0; j < 3; j++) done |= v[i] == freed[k][j];
    if (!done) hak_free(v[i]);
  }
  free(v);
  return NULL;
}
static void test_a_flush_gives_each_of_16_other_threads_slabs_one_chain(void **state) {
  (void)state;
  unsigned chains[WAYS_SLABS];
  run_in_thread(own_slabs_freed_elsewhere, chains);
  for (unsigned k = 0; k < WAYS_SLABS; k++) assert_int_equal(chains[k], 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_tls_list_never_exceeds_its_cap_when_freeing_many_blocks),
    HAK_UNIT_TEST(test_tls_list_reaches_its_cap_before_it_flushes),
    HAK_UNIT_TEST(test_tls_list_length_plus_room_is_the_cap),
    HAK_UNIT_TEST(test_a_new_thread_starts_with_every_list_at_the_end_block),
    HAK_UNIT_TEST(test_popping_a_list_to_its_end_misses_then_refills),
    HAK_UNIT_TEST(test_refill_from_new_memory_after_one_miss_leaves_a_page_of_blocks_minus_one),
    HAK_UNIT_TEST(test_a_threads_first_refill_of_a_class_takes_a_few_blocks_its_next_a_batch),
    HAK_UNIT_TEST(test_refill_counts_every_block_it_moves_in_the_slab_used_count),
    HAK_UNIT_TEST(test_a_refill_counts_the_bytes_it_took_toward_the_look_at_left_classes),
    HAK_UNIT_TEST(test_refilled_blocks_all_come_from_the_current_slab),
    HAK_UNIT_TEST(test_most_recently_freed_block_is_handed_out_next),
    HAK_UNIT_TEST(test_calloc_zeroes_a_reused_block),
    HAK_UNIT_TEST(test_calloc_zeroes_a_reused_huge_mapping),
    HAK_UNIT_TEST(test_thread_flush_empties_every_tls_list),
    HAK_UNIT_TEST(test_lists_of_small_classes_halve_with_many_threads_and_grow_back),
    HAK_UNIT_TEST(test_a_medium_list_shrinks_while_the_thread_only_frees_and_grows_back),
    HAK_UNIT_TEST(test_a_thread_that_only_frees_medium_blocks_holds_an_eighth_of_each_bound),
    HAK_UNIT_TEST(test_a_small_list_keeps_its_bound_while_the_thread_only_frees),
    HAK_UNIT_TEST(test_a_medium_list_keeps_its_bound_while_the_thread_takes_as_much_as_it_frees),
    HAK_UNIT_TEST(test_a_small_list_grows_while_the_thread_frees_and_takes_back_batches),
    HAK_UNIT_TEST(test_a_1k_list_grows_to_a_round_of_1600_blocks),
    HAK_UNIT_TEST(test_a_medium_list_grows_while_the_thread_frees_and_takes_back_batches),
    HAK_UNIT_TEST(test_a_32k_list_grows_to_60_blocks),
    HAK_UNIT_TEST(test_a_96k_list_grows_while_the_thread_frees_and_takes_back_batches),
    HAK_UNIT_TEST(test_a_list_grows_to_a_big_batch_after_one_round),
    HAK_UNIT_TEST(test_a_free_into_a_full_list_past_a_grown_bound_keeps_its_block),
    HAK_UNIT_TEST(test_a_threads_grown_bounds_stay_within_its_total),
    HAK_UNIT_TEST(test_grown_classes_above_32k_have_a_total_of_their_own),
    HAK_UNIT_TEST(test_a_grown_list_goes_back_when_it_flushes_other_threads_blocks),
    HAK_UNIT_TEST(test_a_thread_that_starts_batching_puts_its_grown_bounds_back),
    HAK_UNIT_TEST(test_a_flush_of_interleaved_runs_gives_each_slab_its_own_blocks),
    HAK_UNIT_TEST(test_a_flush_gives_each_of_16_other_threads_slabs_one_chain),
  };
  return cmocka_run_group_tests_name("tls_sll", tests, NULL, NULL);
}
