// hardened_test_dirty_budget.c — the hardened engine (HAK_HARDENED=1) counts a
// FREE slab in the purge budget by the pages its blocks and size table reached,
// not the whole slab. It counted every slab whole (its size table sits at the
// slab's end): one 2 MiB slab filled the 2 MiB budget, so every thread that
// left a few slabs made the next ones fault their memory in again (mstress -t
// 8: 1 316 purge calls against the default build's ~60, 1.9x its time).
#include "unit_util.h"
#include "config/config.h"
#include "tiny/hardened_box.h"

_Static_assert(HAK_HARDENED, "built against the hardened engine");

typedef struct purge_knobs { uint32_t delay, keep; size_t dirty_max; } purge_knobs_t;

static purge_knobs_t purge_knobs_set(uint32_t delay, uint32_t keep, size_t dirty_max) {
  purge_knobs_t old = {g_hak_config.purge_delay_ms, g_hak_config.keep_empty_superslabs,
                       g_hak_config.purge_dirty_max};
  g_hak_config.purge_delay_ms = delay;
  g_hak_config.keep_empty_superslabs = keep;
  g_hak_config.purge_dirty_max = dirty_max;
  return old;
}

static size_t pool_dirty_bytes(void) {
  size_t d = 0;
  for (unsigned k = 0; k < HAK_SLAB_KINDS; k++) d += atomic_load(&g_pool[k].dirty_bytes);
  return d;
}

// A thread takes four blocks of *arg bytes, frees them and exits: its slab,
// carved a refill deep, waits EMPTY on the abandoned stack. The quarantine's
// blocks go home at the thread's exit.
static void *use_a_slab_lightly(void *arg) {
  size_t size = *(size_t *)arg;
  void *p[4];
  for (int i = 0; i < 4; i++) p[i] = hak_malloc(size);
  slab_meta_t *m = slab_of(p[0]);
  for (int i = 0; i < 4; i++) hak_free(p[i]);
  return m;
}

// The slab a thread used lightly for blocks of `size`, given to the pool FREE
// and dirty; *added: what the pool's dirty bytes grew by.
static slab_meta_t *free_slab_used_lightly(size_t size, size_t *added) {
  size_t before = pool_dirty_bytes();
  slab_meta_t *m = run_in_thread(use_a_slab_lightly, &size);
  pool_collect_abandoned_empty();
  assert_int_equal(slab_state(m), SLAB_FREE);
  assert_true(atomic_load(&m->dirty));
  *added = pool_dirty_bytes() - before;
  assert_int_equal(*added, slab_dirty_bytes(m));
  return m;
}

// A tiny class keeps each block's size word in the block: nothing at the
// slab's end, so the slab counts, and a purge gives back, what was carved.
static void test_a_tiny_slab_counts_the_pages_its_blocks_reached(void **state) {
  (void)state;
  hak_trim();
  purge_knobs_t old = purge_knobs_set(60000, 1000, (size_t)1 << 40);
  size_t added, size = 100;
  slab_meta_t *m = free_slab_used_lightly(size, &added);
  size_t slab_bytes = ss_slab_bytes(ss_of_meta(m), m->index);
  assert_true(added >= 4 * size);
  assert_true(added <= slab_bytes / 4);            // a refill's pages, not the slab (was: all of it)
  assert_false(m->dirty_table);
  assert_int_equal(slab_purge_bytes(m), added);
  purge_knobs_set(old.delay, old.keep, old.dirty_max);
  hak_trim();
  assert_int_equal(pool_dirty_bytes(), 0);
}

// A medium class's size table sits at the slab's end: the slab counts its
// carved pages and the table's two, and a purge gives back the whole slab (one
// call; the pages between were never touched).
static void test_a_medium_slab_counts_its_carved_pages_and_its_size_table(void **state) {
  (void)state;
  hak_trim();
  purge_knobs_t old = purge_knobs_set(60000, 1000, (size_t)1 << 40);
  size_t added, size = 5000;
  slab_meta_t *m = free_slab_used_lightly(size, &added);
  size_t slab_bytes = ss_slab_bytes(ss_of_meta(m), m->index);
  assert_true(m->dirty_table);
  assert_true(added >= 4 * size + SLAB_TABLE_DIRTY_BYTES);
  assert_true(added <= slab_bytes / 2);            // was: all 512 KiB
  assert_int_equal(slab_purge_bytes(m), slab_bytes);
  purge_knobs_set(old.delay, old.keep, old.dirty_max);
  hak_trim();
  assert_int_equal(pool_dirty_bytes(), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_a_tiny_slab_counts_the_pages_its_blocks_reached),
    HAK_UNIT_TEST(test_a_medium_slab_counts_its_carved_pages_and_its_size_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
