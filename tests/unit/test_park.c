// test_park.c — heaps parked at a thread's exit (tiny/tiny_thread.c): a small
// heap waits in its record, slabs, lists and counters as they were, for the
// next thread that starts; a big one, one past HAKMEM_PARK_THREADS, one that
// waited its delay and every one at malloc_trim are given back as an exit
// gave them back before. (The other unit groups run with HAKMEM_PARK_THREADS=0,
// tests/unit/unit.mk; this one turns it on.)
#include "unit_util.h"

#include <time.h>

#include "tiny/free_batch_box.h"
#include "tiny/thread_record.h"

enum { PARK_MAX = 16 };

static int park_on(void **state) {
  (void)state;
  hak_free(hak_malloc(16));   // the process set up (its options read) and the main thread LIVE
  g_hak_config.park_threads = PARK_MAX;
  return 0;
}

// Give back every parked heap (a test starts and ends with none).
static int park_none(void **state) {
  thread_parked_expire(1);
  assert_int_equal(thread_records_parked(), 0);
  return validate_engine(state);
}

// What a thread saw of its heap.
typedef struct heap_seen {
  tiny_heap_t  *heap;           // its heap (its id)
  slab_meta_t  *slab;           // the slab of its first block
  void         *block;          // a block it freed last (on its list at exit)
  void         *first;          // its first block of PARK_SIZE
  uint64_t      refills;        // its refills of the class while it ran
  int           owner_ok;       // the slab's owner was its heap
  int           no_refill;      // its first malloc took a block without a refill
} heap_seen_t;

#define PARK_SIZE 64u

// Take 3 blocks of PARK_SIZE and free them: they stay on the list (a first
// refill takes 4), the slab stays the heap's current one. (Set up first by a
// block of another class: the counters are the heap's from then on.)
static void *takes_a_few_and_exits(void *arg) {
  heap_seen_t *s = arg;
  unsigned cls = size_class_of(PARK_SIZE);
  hak_free(hak_malloc(16));
  uint64_t before = hak_counters()->cls[cls].refills;
  void *p[3];
  for (unsigned i = 0; i < 3; i++) p[i] = hak_malloc(PARK_SIZE);
  s->no_refill = hak_counters()->cls[cls].refills == before;
  s->first = p[0];
  s->heap = t_heap_p;
  s->slab = slab_of(p[0]);
  s->owner_ok = atomic_load(&s->slab->owner) == (uintptr_t)t_heap_p;
  for (unsigned i = 0; i < 3; i++) hak_free(p[i]);
  s->block = p[2];
  s->refills = hak_counters()->cls[cls].refills - before;
  return NULL;
}

// The heap of a thread that took a few blocks is parked at its exit, and the
// next thread takes it: the same heap (the slab's owner all along), and its
// first malloc of the class is the block the other freed last, from the list,
// with no refill.
static void test_a_small_heap_is_parked_and_the_next_thread_takes_it_as_it_was(void **state) {
  (void)state;
  heap_seen_t a = {0}, b = {0};
  run_in_thread(takes_a_few_and_exits, &a);
  assert_true(a.owner_ok);
  assert_int_equal(a.refills, 1);
  assert_int_equal(thread_records_parked(), 1);
  assert_int_equal(slab_state(a.slab), SLAB_ACTIVE);   // not abandoned
  assert_int_equal(atomic_load(&a.slab->owner), (uintptr_t)a.heap);
  assert_int_equal(stats_now().threads_live, 1);          // the main thread: a parked heap is no thread
  run_in_thread(takes_a_few_and_exits, &b);
  assert_ptr_equal(b.heap, a.heap);
  assert_true(b.owner_ok);
  assert_ptr_equal(b.slab, a.slab);
  assert_true(b.no_refill);
  assert_ptr_equal(b.first, a.block);                     // the head of the list it left
  assert_int_equal(b.refills, 0);
  assert_int_equal(thread_records_parked(), 1);           // parked again at its exit
}

// A parked heap's counters say its lists as they were at the park, not at
// its thread's last slow path: the frees after that, onto its lists, were
// counted as blocks the program held (128 of 1 000 freed 64 B blocks in
// the statistics at exit; a helper's probe).
#define PARK_COUNT_SIZE 176u
static void *takes_many_frees_all_and_exits(void *arg) {
  (void)arg;
  enum { N = 200 };
  void *p[N];
  for (unsigned i = 0; i < N; i++) p[i] = hak_malloc(PARK_COUNT_SIZE);
  for (unsigned i = 0; i < N; i++) hak_free(p[i]);
  return NULL;
}

static void test_a_parked_heaps_freed_blocks_are_not_counted_in_use(void **state) {
  (void)state;
  unsigned cls = size_class_of(PARK_COUNT_SIZE);
  hak_class_stats_t before[HAK_NUM_CLASSES], after[HAK_NUM_CLASSES];
  hak_get_class_stats(before, HAK_NUM_CLASSES);
  run_in_thread(takes_many_frees_all_and_exits, NULL);
  assert_int_equal(thread_records_parked(), 1);
  hak_get_class_stats(after, HAK_NUM_CLASSES);
  assert_int_equal(after[cls].blocks_in_use, before[cls].blocks_in_use);
  assert_true(after[cls].cached > before[cls].cached);   // on the parked lists
}

// ... and malloc_trim gives it back: its blocks home, its slabs to the
// Shared Pool, its record to the pool's free list.
static void test_malloc_trim_gives_back_every_parked_heap(void **state) {
  (void)state;
  heap_seen_t a = {0};
  run_in_thread(takes_a_few_and_exits, &a);
  assert_int_equal(thread_records_parked(), 1);
  uint32_t used = slab_census_live(a.slab);
  hak_trim();
  assert_int_equal(thread_records_parked(), 0);
  assert_int_not_equal(atomic_load(&a.slab->owner), (uintptr_t)a.heap);
  assert_true(slab_census_live(a.slab) < used || used == 0);   // its cached blocks went home
  assert_int_equal(stats_now().threads_live, 1);
}

// A heap parked longer than THREAD_PARK_DELAYS purge delays goes back at the
// next thread's start (and at a look at idle classes).
static void test_a_parked_heap_goes_back_after_its_delay(void **state) {
  (void)state;
  uint32_t delay = g_hak_config.purge_delay_ms;
  g_hak_config.purge_delay_ms = 1;                        // a 10 ms wait
  heap_seen_t a = {0};
  run_in_thread(takes_a_few_and_exits, &a);
  assert_int_equal(thread_records_parked(), 1);
  thread_parked_expire(0);                                // not yet: still parked
  assert_int_equal(thread_records_parked(), 1);
  struct timespec nap = {0, 30 * 1000000};
  nanosleep(&nap, NULL);
  thread_parked_expire(0);
  g_hak_config.purge_delay_ms = delay;
  assert_int_equal(thread_records_parked(), 0);
  assert_int_not_equal(atomic_load(&a.slab->owner), (uintptr_t)a.heap);
}

// A heap that holds more than THREAD_PARK_BYTES (its slabs carved 2 MiB of
// blocks the program still uses) is given back at its exit.
typedef struct big_seen {
  heap_seen_t   seen;
  held_blocks_t held;
} big_seen_t;
static void *takes_2_mib_and_exits(void *arg) {
  big_seen_t *s = arg;
  for (unsigned i = 0; i < (2u << 20) / 1024u; i++) held_push(&s->held, hak_malloc(1024));
  s->seen.heap = t_heap_p;
  s->seen.slab = slab_of(s->held.head);
  return NULL;
}
static void test_a_big_heap_is_given_back_at_exit(void **state) {
  (void)state;
  big_seen_t a = {{0}, {NULL, 0}};
  run_in_thread(takes_2_mib_and_exits, &a);
  assert_int_equal(thread_records_parked(), 0);
  assert_int_not_equal(atomic_load(&a.seen.slab->owner), (uintptr_t)a.seen.heap);
  held_free_all(&a.held);
  hak_thread_flush();
}

// The thread that gives a parked heap back lends it its TLS lists and takes
// its own back as they were: its cached blocks, bounds and owner keys (a
// batching thread's are FREE_BATCH_KEY, not its id's).
static void test_giving_a_parked_heap_back_leaves_the_callers_lists_as_they_were(void **state) {
  (void)state;
  heap_seen_t a = {0};
  run_in_thread(takes_a_few_and_exits, &a);
  assert_int_equal(thread_records_parked(), 1);
  void *mine[5];
  for (unsigned i = 0; i < 5; i++) mine[i] = hak_malloc(PARK_SIZE);
  hak_free(mine[4]);                                      // one on the list
  free_batch_set_active(1);
  tls_cache_t before;
  memcpy(&before, &t_tls_cache, sizeof before);
  tiny_heap_t *heap = t_heap_p;
  thread_parked_expire(1);
  int same = memcmp(&before, &t_tls_cache, sizeof before) == 0 && t_heap_p == heap;
  free_batch_set_active(0);
  for (unsigned i = 0; i < 4; i++) hak_free(mine[i]);
  hak_thread_flush();
  assert_int_equal(thread_records_parked(), 0);
  assert_int_equal(before.lists[size_class_of(PARK_SIZE)].owner_key, FREE_BATCH_KEY);
  assert_true(same);
}

// No more than HAKMEM_PARK_THREADS wait; with 0 none does.
typedef struct gate {
  pthread_barrier_t *all_up;
} gate_t;
static void *waits_for_the_others_then_exits(void *arg) {
  gate_t *g = arg;
  hak_free(hak_malloc(PARK_SIZE));
  pthread_barrier_wait(g->all_up);   // every thread set up before the first exits
  return NULL;
}
static void exit_together(unsigned n) {
  pthread_barrier_t b;
  pthread_barrier_init(&b, NULL, n);
  gate_t g = {&b};
  pthread_t t[PARK_MAX + 4];
  for (unsigned i = 0; i < n; i++) assert_int_equal(pthread_create(&t[i], NULL, waits_for_the_others_then_exits, &g), 0);
  for (unsigned i = 0; i < n; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&b);
}
static void test_at_most_park_threads_heaps_wait(void **state) {
  (void)state;
  exit_together(PARK_MAX + 4);
  assert_int_equal(thread_records_parked(), PARK_MAX);
  thread_parked_expire(1);
  g_hak_config.park_threads = 0;
  exit_together(3);
  g_hak_config.park_threads = PARK_MAX;
  assert_int_equal(thread_records_parked(), 0);
}

// A block of a parked heap's full slab freed by another thread wakes the
// slab onto the parked heap's wake list; the thread that takes the heap
// next reuses the block before it carves.
typedef struct full_seen {
  held_blocks_t held;           // every block of the slab, handed to the main thread
  slab_meta_t  *slab;
  tiny_heap_t  *heap;
  int           armed;          // the slab waited on the full list, armed
} full_seen_t;
static void *fills_a_slab_and_exits(void *arg) {
  full_seen_t *s = arg;
  hak_free(hak_malloc(16));
  s->slab = fill_one_slab(PARK_SIZE, &s->held);
  if (s->slab == NULL) return NULL;
  void *extra = hak_malloc(PARK_SIZE);                    // the slab goes to the full list
  s->armed = s->slab->where == SLAB_IN_FULL && atomic_load(&s->slab->notify) == SLAB_NOTIFY_ARMED;
  hak_free(extra);
  s->heap = t_heap_p;
  return NULL;
}
typedef struct reuse_seen {
  void *want, *got;
  tiny_heap_t *heap;
} reuse_seen_t;
static void *mallocs_until_the_block(void *arg) {
  reuse_seen_t *r = arg;
  held_blocks_t h = {NULL, 0};
  for (unsigned i = 0; i < 4096 && r->got == NULL; i++) {   // (its list first: a batch of the other slab)
    void *p = hak_malloc(PARK_SIZE);
    r->heap = t_heap_p;   // (set up by its first malloc)
    if (p == r->want) r->got = p;
    else held_push(&h, p);
  }
  if (r->got != NULL) hak_free(r->got);
  held_free_all(&h);
  return NULL;
}
static void test_a_remote_free_into_a_parked_heaps_full_slab_reaches_the_next_thread(void **state) {
  (void)state;
  full_seen_t s = {{NULL, 0}, NULL, NULL, 0};
  run_in_thread(fills_a_slab_and_exits, &s);
  assert_non_null(s.slab);
  assert_true(s.armed);
  assert_int_equal(thread_records_parked(), 1);
  void *p = s.held.head;
  s.held.head = *(void **)p;
  s.held.count--;
  hak_free(p);                                            // another thread's block: remote, wakes the slab
  hak_thread_flush();                                     // (a batching or buffering free sends it now)
  assert_ptr_equal(atomic_load(&s.heap->wake), s.slab);
  reuse_seen_t r = {p, NULL, NULL};
  run_in_thread(mallocs_until_the_block, &r);
  assert_ptr_equal(r.heap, s.heap);
  assert_ptr_equal(r.got, p);
  held_free_all(&s.held);
  hak_thread_flush();
}

// A fork child may take a heap the parent parked: its thread allocates and
// frees there as anywhere.
static void test_a_fork_child_takes_a_heap_the_parent_parked(void **state) {
  (void)state;
  heap_seen_t a = {0};
  run_in_thread(takes_a_few_and_exits, &a);
  assert_int_equal(thread_records_parked(), 1);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    heap_seen_t b = {0};
    run_in_thread(takes_a_few_and_exits, &b);
    _exit(b.heap == a.heap && b.no_refill && b.owner_ok ? 0 : 1);
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
}

// A thread that frees another's small blocks keeps them on its own list
// while it batches (free_batch_box.h); its exit parks its heap. The list of
// the other thread's blocks goes home first: they are not the next thread's
// to hand out, and parked they kept their slabs from emptying (each with
// its free list in random order).
#define FOREIGN_BLOCKS 48u
static void *keeps_the_others_blocks_and_exits(void *arg) {
  void **blocks = arg;
  unsigned cls = size_class_of(32);
  hak_free(hak_malloc(16));   // set up
  for (unsigned i = 0; i < FOREIGN_BLOCKS; i++) {   // as a batching thread's drain keeps them
    hak_base_ptr_t b = hak_user_to_base(hak_user_from_raw(blocks[i]));
    block_set_free(b);
    assert_true(tls_sll_push(&t_tls_cache, cls, b));
  }
  return NULL;
}
static void test_a_parked_list_of_other_threads_small_blocks_goes_home_first(void **state) {
  (void)state;
  static void *blocks[FOREIGN_BLOCKS];
  for (unsigned i = 0; i < FOREIGN_BLOCKS; i++) blocks[i] = hak_malloc(32);
  slab_meta_t *m = slab_of(blocks[0]);
  uint32_t live = slab_census_live(m);
  run_in_thread(keeps_the_others_blocks_and_exits, blocks);
  assert_int_equal(thread_records_parked(), 1);   // its heap was parked
  // Every block is back in the main thread's slab (its remote list), none in use.
  uint32_t back = 0;
  for (unsigned i = 0; i < FOREIGN_BLOCKS; i++) back += slab_of(blocks[i]) == m;
  assert_int_equal(slab_census_live(m), live - back);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_teardown(test_a_small_heap_is_parked_and_the_next_thread_takes_it_as_it_was, park_none),
    cmocka_unit_test_teardown(test_malloc_trim_gives_back_every_parked_heap, park_none),
    cmocka_unit_test_teardown(test_a_parked_heap_goes_back_after_its_delay, park_none),
    cmocka_unit_test_teardown(test_a_big_heap_is_given_back_at_exit, park_none),
    cmocka_unit_test_teardown(test_giving_a_parked_heap_back_leaves_the_callers_lists_as_they_were, park_none),
    cmocka_unit_test_teardown(test_at_most_park_threads_heaps_wait, park_none),
    cmocka_unit_test_teardown(test_a_remote_free_into_a_parked_heaps_full_slab_reaches_the_next_thread, park_none),
    cmocka_unit_test_teardown(test_a_fork_child_takes_a_heap_the_parent_parked, park_none),
    cmocka_unit_test_teardown(test_a_parked_list_of_other_threads_small_blocks_goes_home_first, park_none),
    cmocka_unit_test_teardown(test_a_parked_heaps_freed_blocks_are_not_counted_in_use, park_none),
  };
  return cmocka_run_group_tests(tests, park_on, NULL);
}
