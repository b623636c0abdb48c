// hardened_test_park.c — the hardened engine parks a small heap at its
// thread's exit too (tiny/tiny_thread.c), and its quarantine leaves first:
// the blocks of other heaps go home (hardened_quarantine_drain_home), where
// their owners' mallocs check their fill, the heap's own onto its lists.
// Drained onto the lists as a plain drain does, another thread's block
// written after its free waited unchecked on the parked list (misuse case
// quarantine_of_free_only_thread_drains, faults' uaf_poisoned_remote_list).
// (The unit groups run with HAKMEM_PARK_THREADS=0, unit.mk; this one turns
// parking on.)
#include "unit_util.h"

#include "tiny/thread_record.h"

_Static_assert(HAK_HARDENED, "built against the hardened engine");

#define PARK_SIZE 100u   // (with its 16-byte tail: a class of 128 B, above a cache line)

static int park_on(void **state) {
  (void)state;
  hak_free(hak_malloc(16));   // the process set up (its options read) and the main thread LIVE
  g_hak_config.park_threads = 16;
  return 0;
}

static int park_none(void **state) {
  thread_parked_expire(1);
  assert_int_equal(thread_records_parked(), 0);
  return validate_engine(state);
}

typedef struct seen {
  tiny_heap_t *heap;
  void        *mine;   // a block of its own, freed before it exits (quarantined)
} seen_t;

// Free the main thread's block (into this thread's quarantine) and one of
// its own, then exit.
static void *frees_and_exits(void *arg) {
  seen_t *s = arg;
  void *own = hak_malloc(PARK_SIZE);
  s->heap = t_heap_p;
  hak_free(s->mine);   // the main thread's block
  hak_free(own);
  s->mine = own;
  return NULL;
}

static void test_a_parked_heaps_quarantine_sends_other_heaps_blocks_home(void **state) {
  (void)state;
  hak_thread_flush();
  void *p = hak_malloc(PARK_SIZE);
  slab_meta_t *m = slab_of(p);
  uint32_t before = remote_list_len(m);
  seen_t s = {NULL, p};
  run_in_thread(frees_and_exits, &s);
  assert_int_equal(thread_records_parked(), 1);
  assert_int_equal(remote_list_len(m), before + 1);                 // home, not on the parked list
  assert_int_equal(atomic_load(&slab_of(s.mine)->owner), (uintptr_t)s.heap);   // its own slab stays its heap's
  hak_thread_flush();
}

// The next thread takes the parked heap: its own block, quarantined at the
// exit, is on the heap's list.
static void *takes_the_heap(void *arg) {
  seen_t *s = arg;
  hak_free(hak_malloc(16));
  s->heap = t_heap_p;
  return NULL;
}
static void test_the_next_thread_takes_the_parked_heap(void **state) {
  (void)state;
  seen_t a = {NULL, hak_malloc(PARK_SIZE)}, b = {NULL, NULL};
  run_in_thread(frees_and_exits, &a);
  assert_int_equal(thread_records_parked(), 1);
  run_in_thread(takes_the_heap, &b);
  assert_ptr_equal(b.heap, a.heap);
  hak_thread_flush();
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_teardown(test_a_parked_heaps_quarantine_sends_other_heaps_blocks_home, park_none),
    cmocka_unit_test_teardown(test_the_next_thread_takes_the_parked_heap, park_none),
  };
  return cmocka_run_group_tests(tests, park_on, NULL);
}
