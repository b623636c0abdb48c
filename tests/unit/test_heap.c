// test_heap_p->c — a thread's slabs (tiny_heap): the full list and its wake-up,
// abandonment at thread exit and adoption by another thread, remote frees in
// batches, and thread exit with slabs on every list.
#include "unit_util.h"
#include <sys/mman.h>
#include "config/config.h"
#include "os/os.h"
#include "stats/stats.h"
#include "tiny/free_batch_box.h"
#include "tiny/transfer_box.h"

// Fill one slab of `size` on the calling thread and make it retire: every
// block held in *h, the next malloc (kept in *extra) comes from a new slab.
static slab_meta_t *full_slab(size_t size, held_blocks_t *h, void **extra) {
  slab_meta_t *m = fill_one_slab(size, h);
  if (m == NULL) return NULL;
  *extra = hak_malloc(size);
  return slab_of(*extra) != m ? m : NULL;
}

static void *held_pop(held_blocks_t *h) {
  void *p = h->head;
  h->head = *(void **)p;
  h->count--;
  return p;
}

static void test_an_exhausted_slab_waits_on_its_owners_full_list(void **state) {
  (void)state;
  held_blocks_t h = {NULL, 0};
  void *extra = NULL;
  slab_meta_t *m = full_slab(64, &h, &extra);
  assert_non_null(m);
  assert_int_equal(m->where, SLAB_IN_FULL);
  assert_int_equal(slab_state(m), SLAB_ACTIVE);
  assert_int_equal(atomic_load(&m->owner), thread_self_id());
  assert_int_equal(atomic_load(&m->notify), SLAB_NOTIFY_ARMED);
  held_free_all(&h);
  hak_free(extra);
  hak_thread_flush();
}

static void test_owner_free_into_a_full_slab_brings_it_back_without_a_remote_push(void **state) {
  (void)state;
  held_blocks_t h = {NULL, 0};
  void *extra = NULL;
  unsigned cls = size_class_of(64);
  slab_meta_t *m = full_slab(64, &h, &extra);
  assert_non_null(m);
  void *one = h.head;
  h.head = *(void **)one;
  h.count--;
  hak_free(one);                        // onto our TLS list ...
  tiny_flush(cls, UINT32_MAX);          // ... and home through the local box
  assert_int_equal(m->where, SLAB_IN_PARTIAL);
  assert_int_equal(atomic_load(&m->notify), SLAB_NOTIFY_IDLE);
  assert_false(remote_word_has_list(atomic_load(&m->remote_head)));
  assert_ptr_equal(m->freelist, one);
  assert_int_equal(slab_census_live(m), m->capacity - 1);
  held_free_all(&h);
  hak_free(extra);
  hak_thread_flush();
}

// A list holding blocks of more of this thread's slabs than a flush has
// ways, interleaved block by block (a big structure freed in random order):
// each run goes home to its own slab at once, so every live count and free
// list is exact, and the slabs the flush empties go back to the pool.
enum { MANY_SLABS = 24, MANY_EACH = 3, MANY_BLOCKS = 8192 };
static void *many_block[MANY_BLOCKS];
static void test_blocks_of_many_own_slabs_interleaved_each_go_home(void **state) {
  (void)state;
  const size_t size = 256;
  unsigned cls = size_class_of(size);
  slab_meta_t *m[MANY_SLABS + 1];
  uint32_t first[MANY_SLABS + 1], k = 0, n = 0;
  hak_thread_flush();                   // (abandons what the thread has: nothing of ours)
  // Blocks until MANY_SLABS slabs are handed out whole, each slab's blocks in
  // a row of many_block (a new thread's refills carve one slab at a time).
  while (k < MANY_SLABS) {
    assert_true(n < MANY_BLOCKS);
    void *p = hak_malloc(size);
    assert_non_null(p);
    many_block[n] = p;
    if (k == 0 || slab_of(p) != m[k - 1] || n - first[k - 1] == m[k - 1]->capacity) {
      if (k > 0) assert_int_equal(n - first[k - 1], m[k - 1]->capacity);
      m[k] = slab_of(p);
      first[k++] = n;
      for (uint32_t j = 0; j + 1 < k; j++) assert_ptr_not_equal(m[j], m[k - 1]);
    }
    n++;
  }
  while (n - first[k - 1] < m[k - 1]->capacity) many_block[n++] = hak_malloc(size);
  assert_int_equal(slab_census_live(m[k - 1]), m[k - 1]->capacity);
  first[k] = n;
  // The first half's slabs keep MANY_EACH blocks out, the rest freed and flushed.
  for (k = 0; k < MANY_SLABS / 2; k++) {
    for (uint32_t i = first[k] + MANY_EACH; i < first[k + 1]; i++) hak_free(many_block[i]);
    tiny_flush(cls, UINT32_MAX);
    assert_int_equal(atomic_load(&m[k]->owner), thread_self_id());
    assert_int_equal(slab_census_live(m[k]), MANY_EACH);
  }
  // MANY_EACH blocks of every slab onto the list, one of each in turn, then one flush.
  uint64_t flushes = hak_counters()->cls[cls].flushes;
  for (uint32_t i = 0; i < MANY_EACH; i++)
    for (k = 0; k < MANY_SLABS; k++) hak_free(many_block[first[k] + i]);
  assert_int_equal(hak_counters()->cls[cls].flushes, flushes);   // all of them on the list
  tiny_flush(cls, UINT32_MAX);
  assert_true(tls_list_empty(cls));
  for (k = 0; k < MANY_SLABS / 2; k++) {
    assert_int_equal(m[k]->where, SLAB_IN_NONE);       // emptied: released ...
    assert_int_equal(slab_state(m[k]), SLAB_FREE);     // ... to the stash or the pool
  }
  for (k = MANY_SLABS / 2; k < MANY_SLABS; k++) {
    assert_true(m[k]->where == SLAB_IN_PARTIAL || m[k]->where == SLAB_IN_CURRENT);   // (full before)
    assert_int_equal(atomic_load(&m[k]->owner), thread_self_id());
    assert_int_equal(slab_census_live(m[k]), m[k]->capacity - MANY_EACH);
    assert_int_equal(m[k]->free_n, MANY_EACH);
    uint32_t on_list = 0;               // its free list holds its MANY_EACH blocks
    for (hak_base_ptr_t b = hak_base_from_raw(m[k]->freelist); !slab_list_is_end(b); b = block_next(b)) {
      assert_ptr_equal(slab_of(hak_base_raw(b)), m[k]);
      assert_true(++on_list <= MANY_EACH);
    }
    assert_int_equal(on_list, MANY_EACH);
    for (uint32_t i = first[k] + MANY_EACH; i < first[k + 1]; i++) hak_free(many_block[i]);
  }
  hak_thread_flush();
}

typedef struct free_list_arg {
  held_blocks_t *h;
  uint64_t remote_blocks;              // the freeing thread's count of remote blocks
} free_list_arg_t;

static void *free_all_then_exit(void *arg) {
  free_list_arg_t *a = arg;
  held_free_all(a->h);                 // onto this thread's TLS lists; home at exit
  hak_thread_flush();
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) a->remote_blocks += hak_counters()->cls[c].remote_free_blocks;
  return NULL;
}

static void test_remote_frees_that_empty_a_full_slab_wake_its_owner_once(void **state) {
  (void)state;
  held_blocks_t h = {NULL, 0};
  void *extra = NULL;
  slab_meta_t *m = full_slab(64, &h, &extra);
  assert_non_null(m);
  uint32_t cap = m->capacity;
  free_list_arg_t a = {&h, 0};
  run_in_thread(free_all_then_exit, &a);
  assert_int_equal(a.remote_blocks, cap);               // every block went home remotely ...
  assert_int_equal(remote_list_len(m), cap);            // ... onto m's remote list
  assert_int_equal(slab_census_live(m), 0);
  assert_int_equal(atomic_load(&m->notify), SLAB_NOTIFY_NOTIFIED);
  assert_ptr_equal(atomic_load(&t_heap_p->wake), m);       // pushed on our wake list once
  assert_null(atomic_load(&m->wake_next));
  assert_int_equal(slab_state(m), SLAB_ACTIVE);         // still ours until we look
  hak_free(extra);
  hak_thread_flush();                                   // takes the wake list: m is EMPTY
  assert_int_equal(slab_state(m), SLAB_FREE);
  assert_null(atomic_load(&t_heap_p->wake));
}

static void *store_notified_later(void *arg) {
  slab_meta_t *m = arg;
  struct timespec ts = {0, 100 * 1000 * 1000};
  nanosleep(&ts, NULL);                                 // the owner takes its wake list meanwhile
  atomic_store(&m->notify, SLAB_NOTIFY_NOTIFIED);       // the freer's second store
  return NULL;
}

// A remote freer pushes a full slab on its owner's wake list, then stores
// NOTIFIED. An owner that took the list between the two stores used to make
// the slab IDLE first, and the late NOTIFIED then stuck to a slab on no wake
// list: never woken again, and heap_disarm spun on it forever (seen as a hang
// of ring at 16 threads).
static void test_the_owner_waits_for_a_wake_push_in_flight_before_it_takes_the_slab(void **state) {
  (void)state;
  held_blocks_t h = {NULL, 0};
  void *extra = NULL;
  unsigned cls = size_class_of(64);
  slab_meta_t *m = full_slab(64, &h, &extra);
  assert_non_null(m);
  assert_null(t_heap_p->partial[cls]);
  // A freer between its two stores: one block on m's remote list, m pushed
  // on our wake list, notify still NOTIFYING.
  void *one = held_pop(&h);
  hak_base_ptr_t b = hak_user_to_base(hak_user_from_raw(one));
  block_set_free(b);
  block_set_next(b, HAK_BASE_NULL);
  // (Its chain record as a push writes it: m may be a slab an earlier test
  // emptied, rebound to this class with the records of that life's chains.)
  if (BLOCK_CHAIN_RECORDS) block_set_chain(m, b, b, 1, HAK_BASE_NULL);
  // (m is armed: its word asks for attention, so the push counts nothing on
  // the list and the freer lowers `used` itself.)
  assert_true(atomic_load(&m->remote_head) & REMOTE_ATTEND);
  atomic_store(&m->remote_head, (uintptr_t)one | REMOTE_ATTEND);
  atomic_fetch_sub(&m->used, 1);
  atomic_store(&m->notify, SLAB_NOTIFY_NOTIFYING);
  atomic_store(&m->wake_next, NULL);
  atomic_store(&t_heap_p->wake, m);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, store_notified_later, m), 0);
  slab_meta_t *got = tiny_heap_partial_with_free(t_heap_p, cls);   // takes the wake list
  pthread_join(t, NULL);
  assert_ptr_equal(got, m);
  assert_int_equal(m->where, SLAB_IN_PARTIAL);
  assert_int_equal(atomic_load(&m->notify), SLAB_NOTIFY_IDLE);
  held_free_all(&h);
  hak_free(extra);
  hak_thread_flush();
}

// Reuse before new memory: a refill takes the blocks freed into a partial
// slab before it carves the current slab's never-used end (carving first let
// every thread's slabs grow while the blocks that came back sat unused).
static void test_a_refill_reuses_a_partial_slab_before_it_carves_the_current_one(void **state) {
  (void)state;
  held_blocks_t h = {NULL, 0}, h2 = {NULL, 0};
  void *extra = NULL;
  unsigned cls = size_class_of(64);
  slab_meta_t *s1 = full_slab(64, &h, &extra);
  assert_non_null(s1);
  slab_meta_t *s2 = slab_of(extra);                     // the current slab now
  assert_int_equal(s2->where, SLAB_IN_CURRENT);
  while (!tls_list_empty(cls)) held_push(&h2, hak_malloc(64));   // its refill batch handed out
  assert_null(s2->freelist);
  char *carve2 = slab_carve(s2);
  assert_true(carve2 < slab_end(s2));                   // it could still carve
  void *one = held_pop(&h);
  hak_free(one);
  tiny_flush(cls, UINT32_MAX);                          // s1: partial, one block free
  assert_int_equal(s1->where, SLAB_IN_PARTIAL);
  void *p = hak_malloc(64);
  assert_ptr_equal(p, one);
  assert_ptr_equal(slab_carve(s2), carve2);
  held_push(&h, p);
  held_free_all(&h);
  held_free_all(&h2);
  hak_free(extra);
  hak_thread_flush();
}

typedef struct three_blocks {
  void *p[3];
} three_blocks_t;

static void *free_three_then_exit(void *arg) {
  three_blocks_t *t = arg;
  for (int i = 0; i < 3; i++) hak_free(t->p[i]);        // other threads' blocks: home at exit
  return NULL;
}

static void *malloc_64_on_a_new_thread(void *arg) {
  (void)arg;
  return hak_malloc(64);
}

// A thread keeps at most HEAP_PARTIAL_KEEP partial slabs per class: a full
// slab woken by a remote free beyond that is given up to the class's
// abandoned stack, and the next thread that needs a slab of the class adopts
// it (its freed block is reused) instead of taking new memory.
static void test_a_woken_slab_beyond_the_partial_keep_is_given_up_and_adopted(void **state) {
  (void)state;
  _Static_assert(HEAP_PARTIAL_KEEP == 2, "the test wakes one slab more than the heap keeps");
  held_blocks_t h[3] = {{NULL, 0}, {NULL, 0}, {NULL, 0}};
  slab_meta_t *s[3];
  three_blocks_t t;
  unsigned cls = size_class_of(64);
  s[0] = fill_one_slab(64, &h[0]);
  assert_non_null(s[0]);
  for (int i = 1; i < 3; i++) {        // the next two without a flush (which would abandon s[0])
    void *p = hak_malloc(64);
    s[i] = slab_of(p);
    held_push(&h[i], p);
    while (slab_census_live(s[i]) < s[i]->capacity || !tls_list_empty(cls)) held_push(&h[i], hak_malloc(64));
    assert_true(s[i] != s[i - 1]);
  }
  void *extra = hak_malloc(64);        // s[2] retires too
  for (int i = 0; i < 3; i++) {
    assert_int_equal(s[i]->where, SLAB_IN_FULL);
    t.p[i] = held_pop(&h[i]);
  }
  run_in_thread(free_three_then_exit, &t);              // three wake pushes
  assert_null(t_heap_p->partial[cls]);
  slab_meta_t *got = tiny_heap_partial_with_free(t_heap_p, cls);   // takes the wake list
  assert_non_null(got);
  int kept = 0, given = -1;
  for (int i = 0; i < 3; i++) {
    if (atomic_load(&s[i]->owner) == thread_self_id()) {
      assert_int_equal(s[i]->where, SLAB_IN_PARTIAL);
      kept++;
    } else {
      assert_int_equal(atomic_load(&s[i]->owner), 0);
      assert_int_equal(slab_state(s[i]), SLAB_LISTED);
      given = i;
    }
  }
  assert_int_equal(kept, 2);
  assert_true(given >= 0);
  void *q = run_in_thread(malloc_64_on_a_new_thread, NULL);
  assert_ptr_equal(q, t.p[given]);                      // adopted: its freed block reused
  hak_free(q);
  for (int i = 0; i < 3; i++) held_free_all(&h[i]);
  hak_free(extra);
  hak_thread_flush();
}

typedef struct fill_arg {
  size_t size;
  held_blocks_t h;
  slab_meta_t *m;
} fill_arg_t;

static void *fill_then_exit(void *arg) {
  fill_arg_t *f = arg;
  f->m = fill_one_slab(f->size, &f->h);
  return NULL;
}

// The remote frees some tests make come from this thread, which must not
// batch them then: a batching thread keeps other threads' blocks on its
// lists, small ones included (free_batch_drain), and they go home later.
static int batching_off(void) {
  int saved = g_hak_config.free_batch;
  g_hak_config.free_batch = 0;
  free_batch_set_active(0);
  return saved;
}
static void batching_back(int saved) { g_hak_config.free_batch = saved; }

// A slab of `size` a thread filled and then exited holding none of its blocks
// (DETACHED, every block in f->h); the caller frees them.
static slab_meta_t *detached_slab(size_t size, fill_arg_t *f) {
  *f = (fill_arg_t){size, {NULL, 0}, NULL};
  run_in_thread(fill_then_exit, f);
  assert_non_null(f->m);
  assert_int_equal(slab_state(f->m), SLAB_DETACHED);
  return f->m;
}

static void *malloc_one_of_size(void *arg) {
  fill_arg_t *f = arg;
  void *p = hak_malloc(f->size);
  slab_meta_t *got = slab_of(p);
  uint32_t small = got->block_size < HAK_CACHE_LINE ? (uint32_t)thread_self_id() : 0u;   // free's copy of the owner
  f->m = (atomic_load(&got->owner) == thread_self_id() && atomic_load(&got->owner_small) == small &&
          got->where == SLAB_IN_CURRENT) ? got : NULL;
  held_push(&f->h, p);
  hak_thread_flush();
  return p;
}

static void test_an_abandoned_slab_is_adopted_by_another_thread(void **state) {
  (void)state;
  fill_arg_t f = {32, {NULL, 0}, NULL};   // under a cache line: frees by others are buffered
  run_in_thread(fill_then_exit, &f);    // the thread exits holding none of its blocks
  slab_meta_t *m = f.m;
  assert_non_null(m);
  assert_int_equal(slab_state(m), SLAB_DETACHED);       // abandoned with no free block
  assert_int_equal(atomic_load(&m->owner), 0);
  assert_int_equal(atomic_load(&m->owner_small), 0);    // free's copy follows
  void *one = f.h.head;
  f.h.head = *(void **)one;
  hak_free(one);                                        // into our remote buffer ...
  tiny_flush_remote(size_class_of(32));                 // ... home: a remote free lists it
  assert_int_equal(slab_state(m), SLAB_LISTED);
  fill_arg_t g = {32, {NULL, 0}, NULL};
  void *p = run_in_thread(malloc_one_of_size, &g);
  assert_ptr_equal(g.m, m);                             // the new thread adopted m ...
  assert_ptr_equal(p, one);                             // ... and got the freed block back
  held_free_all(&g.h);
  held_free_all(&f.h);
  hak_thread_flush();
  hak_trim();                           // m back to the pool (its SuperSlab may be unmapped)
  assert_true(!ss_registry_contains(m) || slab_state(m) == SLAB_FREE);
}

typedef struct every_list {
  slab_meta_t *full, *partial, *cur;
  uint32_t stash;
  slab_meta_t *stashed[SLAB_STASH_MAX];
  held_blocks_t keep;                  // blocks handed to the main thread
} every_list_t;

static void *exit_with_slabs_on_every_list(void *arg) {
  every_list_t *e = arg;
  unsigned cls = size_class_of(96);
  held_blocks_t h1 = {NULL, 0}, h2 = {NULL, 0};
  void *x1 = NULL, *x2 = NULL;
  e->full = full_slab(96, &h1, &x1);     // m1: full
  hak_free(x1);                          // (fill_one_slab flushes the list first)
  e->partial = full_slab(96, &h2, &x2);  // m2: full, then one local free: partial
  if (e->full == NULL || e->partial == NULL) return NULL;
  void *one = h2.head;
  h2.head = *(void **)one;
  hak_free(one);
  tiny_flush(cls, UINT32_MAX);
  e->cur = slab_of(x2);                  // m3: current
  e->stash = t_heap_p->stash[HAK_KIND_SMALL].n;
  for (uint32_t i = 0; i < e->stash; i++) e->stashed[i] = t_heap_p->stash[HAK_KIND_SMALL].slab[i];
  held_push(&h1, x2);
  while (h2.head != NULL) {              // hand every held block to the caller
    void *p = h2.head;
    h2.head = *(void **)p;
    held_push(&h1, p);
  }
  e->keep = h1;
  return NULL;
}

static void test_thread_exit_abandons_slabs_on_every_list_and_returns_its_stash(void **state) {
  (void)state;
  every_list_t e;
  memset(&e, 0, sizeof e);
  run_in_thread(exit_with_slabs_on_every_list, &e);
  assert_non_null(e.full);
  assert_non_null(e.partial);
  assert_true(e.full->where == SLAB_IN_NONE && e.partial->where == SLAB_IN_NONE && e.cur->where == SLAB_IN_NONE);
  assert_int_equal(slab_state(e.full), SLAB_DETACHED);   // no free block: waits for a remote free
  assert_int_equal(slab_state(e.partial), SLAB_LISTED);  // free blocks: on the abandoned stack
  assert_int_equal(slab_state(e.cur), SLAB_LISTED);      // uncarved space: likewise
  assert_int_equal(atomic_load(&e.full->owner), 0);
  assert_true(e.stash > 0);                              // it had FREE slabs in its stash ...
  for (uint32_t i = 0; i < e.stash; i++) {               // ... and they are back in the pool
    slab_meta_t *m = e.stashed[i];
    assert_int_equal(slab_state(m), SLAB_FREE);
    assert_true(ss_of(m)->free_mask & (1u << m->index));
  }
  held_free_all(&e.keep);
  hak_thread_flush();
  hak_trim();                           // all back to the pool (SuperSlabs may be unmapped)
  slab_meta_t *all[3] = {e.full, e.partial, e.cur};
  for (int i = 0; i < 3; i++) assert_true(!ss_registry_contains(all[i]) || slab_state(all[i]) == SLAB_FREE);
}

static void *free_then_malloc_same_size(void *p) {
  hak_free(p);                         // another thread's block, sharing lines with its neighbours ...
  void *q = hak_malloc(48);            // ... must not come back here
  hak_free(q);
  hak_thread_flush();
  return q;
}

static void test_a_small_block_freed_by_another_thread_is_not_handed_out_by_it(void **state) {
  (void)state;
  void *p = hak_malloc(48);
  void *q = run_in_thread(free_then_malloc_same_size, p);
  assert_ptr_not_equal(q, p);          // its neighbours are ours: no false sharing
  hak_thread_flush();
}

static void test_hak_owns_is_true_for_a_live_block_and_false_once_it_is_freed(void **state) {
  (void)state;
  char *p = hak_malloc(48);
  assert_true(hak_owns(p));
  assert_true(hak_owns(p + 47));                        // interior of a live block
  hak_free(p);
  assert_false(hak_owns(p));                            // on our TLS list now
  assert_false(hak_owns(p + 47));
  hak_thread_flush();
}

static void test_hak_owns_is_false_for_slab_space_never_handed_out(void **state) {
  (void)state;
  char *p = hak_malloc(48);
  slab_meta_t *m = slab_of(p);
  char *beyond = slab_carve(m);                         // never carved yet
  assert_true(beyond < slab_end(m));
  assert_false(hak_owns(beyond));
  assert_false(hak_owns(slab_end(m) - 1));
  hak_free(p);
  hak_thread_flush();
}

// An abandoned slab that a free empties goes to the pool at once, with a new
// generation, for any class; the other slabs on its class's abandoned stack
// stay there for adopters. (It waited EMPTY_LISTED on the stack for the purge
// pass or the class's next refill: bench/drift -t 2 wrote a sixth of its
// bytes into memory last written an L3's worth of writes before.)
static void test_an_abandoned_slab_emptied_remotely_goes_to_the_pool_at_once(void **state) {
  (void)state;
  purge_knobs_t old = purge_knobs_set(3600000u, 1024u, (size_t)1 << 30);   // no purge pass does it
  int batch = batching_off();
  unsigned cls = size_class_of(16);
  fill_arg_t f, g;
  slab_meta_t *m = detached_slab(16, &f);      // every block with us
  slab_meta_t *other = detached_slab(16, &g);          // and a second one, that stays listed:
  void *one = g.h.head;
  g.h.head = *(void **)one;
  g.h.count--;
  hak_free(one);
  tiny_flush_remote(cls);
  assert_int_equal(slab_state(other), SLAB_LISTED);     // one block free, the rest live
  void *pin = hak_malloc(224);                          // (another class: may keep the SuperSlab mapped)
  uint32_t gen = SLAB_GEN(atomic_load(&m->state));
  shared_pool_purge_stats_t ps;
  shared_pool_get_purge_stats(&ps);
  int64_t waiting = ps.empty_waiting_bytes;
  held_free_all(&f.h);                                  // all of them, from a thread that does not own m
  tiny_flush_remote(cls);
  assert_int_equal(slab_census_live(m), 0);
  assert_int_equal(slab_state(m), SLAB_FREE);           // listed by the first push, FREE at the last
  assert_int_equal(SLAB_GEN(atomic_load(&m->state)), gen + 0x100u);
  assert_true(ss_registry_contains(m));
  shared_pool_get_purge_stats(&ps);
  assert_true(ps.empty_waiting_bytes <= waiting);       // not counted as waiting on a stack
  assert_int_equal(slab_state(other), SLAB_LISTED);     // pushed back ...
  assert_ptr_equal(shared_pool_adopt_slab(cls, 12345), other);   // ... and adopted from there
  shared_pool_detach_slab(other);                       // (abandoned again: "12345" is no thread)
  held_free_all(&g.h);
  tiny_flush_remote(cls);
  assert_int_equal(slab_state(other), SLAB_FREE);
  purge_knobs_restore(old);
  batching_back(batch);
  hak_free(pin);
  hak_thread_flush();
}

// A free that empties an abandoned slab while another thread holds its
// class's stack (a collection under way) leaves it EMPTY_LISTED there; the
// purge pass collects it, a new generation (g_pool_recycle_at_empty 0 plays
// that free).
static void test_an_abandoned_slab_emptied_remotely_is_empty_listed_then_freed_with_a_new_generation(void **state) {
  (void)state;
  // No purge pass before we ask for one (an EMPTY slab's frees may call one).
  purge_knobs_t old = purge_knobs_set(3600000u, 1024u, (size_t)1 << 30);
  int batch = batching_off();
  g_pool_recycle_at_empty = 0;
  fill_arg_t f;
  slab_meta_t *m = detached_slab(16, &f);      // every block with us
  void *pin = hak_malloc(224);                      // (another class: may keep the SuperSlab mapped)
  uint32_t gen = SLAB_GEN(atomic_load(&m->state));
  held_free_all(&f.h);                                  // all of them, from a thread that does not own m
  tiny_flush_remote(size_class_of(16));
  assert_int_equal(slab_census_live(m), 0);
  assert_int_equal(slab_state(m), SLAB_EMPTY_LISTED);   // listed by the first push, empty by the last
  g_pool_recycle_at_empty = 1;
  g_hak_config.purge_delay_ms = 0;                      // the next purge pass is due at once ...
  shared_pool_maybe_purge();                            // ... and gives m to the pool (kept mapped:
  purge_knobs_restore(old);                             // all-FREE SuperSlabs up to the hysteresis)
  batching_back(batch);
  assert_true(ss_registry_contains(m));
  assert_int_equal(slab_state(m), SLAB_FREE);
  assert_int_equal(SLAB_GEN(atomic_load(&m->state)), gen + 0x100u);
  hak_free(pin);
  hak_thread_flush();
}

// A slab's `used` counts its owner's free list while it is owned, and not
// while it is abandoned (superslab.h): here a thread fills a slab, frees half
// of it home and exits holding the rest (LISTED, its free list counted out);
// another thread adopts it (counted in again), takes a block and gives it
// back, and exits; the first half's frees from a third thread then empty it.
// Counted in at the exit or out at the adoption, the slab was EMPTY with
// blocks live, or never EMPTY.
static void *fill_free_half_then_exit(void *arg) {
  fill_arg_t *f = arg;
  f->m = fill_one_slab(f->size, &f->h);
  for (uint32_t half = f->h.count / 2; f->h.count > half;) hak_free(held_pop(&f->h));
  return NULL;                          // (its exit flushes them home and abandons the slab)
}
static void *adopt_one_then_exit(void *arg) {
  fill_arg_t *f = arg;
  void *p = hak_malloc(f->size);
  slab_meta_t *got = slab_of(p);
  f->m = got == f->m && atomic_load(&got->owner) == thread_self_id() ? got : NULL;
  hak_free(p);
  return NULL;
}
static void test_a_slab_abandoned_with_a_free_list_is_counted_by_its_live_blocks(void **state) {
  (void)state;
  purge_knobs_t old = purge_knobs_set(3600000u, 1024u, (size_t)1 << 30);
  int batch = batching_off();
  fill_arg_t f = {48, {NULL, 0}, NULL};
  run_in_thread(fill_free_half_then_exit, &f);
  slab_meta_t *m = f.m;
  assert_non_null(m);
  assert_int_equal(slab_state(m), SLAB_LISTED);       // free blocks: on the abandoned stack
  assert_int_equal(atomic_load(&m->used), f.h.count);  // the live half alone
  fill_arg_t a = {48, {NULL, 0}, m};
  run_in_thread(adopt_one_then_exit, &a);
  assert_ptr_equal(a.m, m);                            // adopted (the class's abandoned slab)
  assert_int_equal(slab_state(m), SLAB_LISTED);       // abandoned again, the half still live
  assert_int_equal(atomic_load(&m->used), f.h.count);
  held_free_all(&f.h);                                 // from a thread that does not own m
  tiny_flush_remote(size_class_of(48));
  assert_int_equal(atomic_load(&m->used), 0);
  assert_int_equal(slab_state(m), SLAB_FREE);          // emptied: to the pool
  purge_knobs_restore(old);
  batching_back(batch);
  hak_thread_flush();
}

// A thread whose free took an abandoned slab's used count to 0 reads the
// state (LISTED), then the count, then swaps the state to EMPTY_LISTED. If it
// stalls after the count, another thread may adopt the slab, take blocks and
// exit, abandoning it LISTED again: the late swap must fail, or the slab is
// EMPTY with live blocks, the next adopter binds it afresh, and their frees
// are reported as never handed out (bench/churn aborted in ~2% of its runs,
// "free of invalid pointer ... beyond the slab's carve point"). An adoption
// starts a new generation of the state word.
static void test_a_stale_empty_check_does_not_empty_a_slab_adopted_and_abandoned_since(void **state) {
  (void)state;
  purge_knobs_t old = purge_knobs_set(3600000u, 1024u, (size_t)1 << 30);
  fill_arg_t f;
  slab_meta_t *m = detached_slab(16, &f);      // every block with us
  unsigned cls = size_class_of(16);
  void *one = f.h.head;
  f.h.head = *(void **)one;
  hak_free(one);
  tiny_flush_remote(cls);                               // a remote free lists it
  assert_int_equal(slab_state(m), SLAB_LISTED);
  uint32_t seen = atomic_load(&m->state);               // a freer's look, then it stalls
  assert_ptr_equal(shared_pool_adopt_slab(cls, 12345), m);   // another thread adopts m ...
  assert_int_not_equal(SLAB_GEN(atomic_load(&m->state)), SLAB_GEN(seen));
  shared_pool_detach_slab(m);                           // ... and exits: LISTED again
  assert_int_equal(slab_state(m), SLAB_LISTED);
  shared_pool_slab_empty_seen(m, seen);                 // the stalled freer's swap
  assert_int_equal(slab_state(m), SLAB_LISTED);         // refused: its blocks are live
  held_free_all(&f.h);
  hak_thread_flush();
  purge_knobs_restore(old);
  hak_trim();
}

// An EMPTY slab adopted from an abandoned stack starts afresh but keeps the
// reach of its last life: when it next goes FREE, the purge returns every
// page its blocks ever reached. (Its carve reset lost the reach, so the purge
// stopped at the new life's carve and the pages beyond stayed resident.)
static void test_a_slab_adopted_empty_is_purged_as_far_as_its_last_life_reached(void **state) {
  (void)state;
  purge_knobs_t old = purge_knobs_set(3600000u, 1024u, (size_t)1 << 30);   // no purge pass before ours
  fill_arg_t f;
  slab_meta_t *m = detached_slab(96, &f);      // every block with us
  unsigned cls = size_class_of(96);
  size_t reach = (size_t)(slab_carve(m) - m->base);
  assert_true(reach > 8 * 4096u);
  void *pin = hak_malloc(224);                          // (another class: may keep the SuperSlab mapped)
  g_pool_recycle_at_empty = 0;                          // (a free that found the stack taken)
  held_free_all(&f.h);                                  // (some kept on our list: we reuse what we free)
  hak_thread_flush();
  g_pool_recycle_at_empty = 1;
  assert_int_equal(slab_state(m), SLAB_EMPTY_LISTED);
  shared_pool_purge_stats_t ps;
  shared_pool_get_purge_stats(&ps);
  int64_t waiting = ps.empty_waiting_bytes;             // m's pages count as dirty while it waits ...
  assert_true(waiting >= (int64_t)reach);
  slab_meta_t *got = shared_pool_adopt_slab(cls, 12345); // bound afresh by "another thread" ...
  assert_ptr_equal(got, m);
  shared_pool_get_purge_stats(&ps);
  assert_true(ps.empty_waiting_bytes <= waiting - (int64_t)reach);   // ... and no longer once adopted
  assert_ptr_equal(slab_carve(m), m->base);
  slab_stash_t stash = {{NULL}, 0};
  shared_pool_release_owned(m, &stash);                 // ... which gives it back unused
  shared_pool_stash_release(&stash);
  assert_int_equal(slab_state(m), SLAB_FREE);
  assert_true(slab_purge_bytes(m) >= reach);            // what the purge will return
  purge_knobs_set(0, 1024, 0);                          // due at once; all-FREE SuperSlabs kept
  shared_pool_maybe_purge();
  purge_knobs_restore(old);
  assert_true(ss_registry_contains(m));
  unsigned char vec[1024];
  size_t pages = reach / 4096u;
  assert_true(pages <= sizeof vec);
  assert_int_equal(mincore(m->base, pages * 4096u, vec), 0);
  size_t resident = 0;
  for (size_t i = 0; i < pages; i++) resident += vec[i] & 1u;
  assert_int_equal(resident, 0);                        // every page it reached went back
  hak_free(pin);
  hak_thread_flush();
}

// A refill that must take new memory carves about a page of it, not a whole
// batch: the carved part of a thread's slabs is resident, and at 16 threads
// the rest of 32 KiB batches per class was 3 MiB of ws-small's peak RSS
// (47.2 -> 44.5 MiB) and 3 MiB of larson's (21.3 -> 18.4).
static void test_a_refill_from_new_memory_carves_one_page_not_a_whole_batch(void **state) {
  (void)state;
  unsigned cls = size_class_of(1000);                   // no other test uses this class
  assert_true(g_size_class[cls].batch * g_size_class[cls].size > 4096u);
  hak_thread_flush();
  void *p = hak_malloc(1000);
  slab_meta_t *m = slab_of(p);
  assert_int_equal(slab_carve(m) - m->base, 4096);      // 4 blocks of 1 KiB: one in p ...
  assert_int_equal(g_size_class[cls].tls_cap - t_tls_cache.lists[cls].room, 3);   // ... 3 on the list
  hak_free(p);
  hak_thread_flush();
}

// A class above a page taken refill after refill, with no overflow between
// (a burst of one size), carves 1, 2, 4, then 8 blocks a refill, not one
// block each (every malloc of `bursts -k 8 -b 100` was a refill). The
// carve points after the 1st, 2nd, 4th and 8th mallocs, each a refill.
typedef struct carve_ramp {
  size_t carved[4];
  uint64_t refills;
} carve_ramp_t;

static void *take_a_burst(void *arg) {
  carve_ramp_t *r = arg;
  enum { N = 15, SIZE = 20000 };
  unsigned cls = size_class_of(SIZE);
  void *p[N];
  uint64_t refills = hak_counters()->cls[cls].refills;
  unsigned k = 0;
  slab_meta_t *m = NULL;
  for (unsigned i = 0; i < N; i++) {
    p[i] = hak_malloc(SIZE);
    assert_non_null(p[i]);
    if (i == 0) m = slab_of(p[0]);
    assert_ptr_equal(slab_of(p[i]), m);
    if (i + 1 == 1u || i + 1 == 2u || i + 1 == 4u || i + 1 == 8u) r->carved[k++] = (size_t)(slab_carve(m) - m->base);
  }
  r->refills = hak_counters()->cls[cls].refills - refills;
  for (unsigned i = 0; i < N; i++) hak_free(p[i]);
  return NULL;
}

static void test_a_burst_of_a_class_above_a_page_carves_more_at_each_refill(void **state) {
  (void)state;
  young_slabs_taken();                                  // the class's 512 KiB slabs
  unsigned cls = size_class_of(20000);
  assert_true(g_size_class[cls].size > 4096u && g_size_class[cls].batch >= 8u);
  hak_trim();                                           // a fresh slab: carved from its start
  carve_ramp_t r = {{0}, 0};
  run_in_thread(take_a_burst, &r);
  size_t bs = g_size_class[cls].block;
  assert_int_equal(r.carved[0], 1 * bs);
  assert_int_equal(r.carved[1], 3 * bs);                // 1 + 2
  assert_int_equal(r.carved[2], 7 * bs);                // + 4
  assert_int_equal(r.carved[3], 15 * bs);               // + 8
  assert_int_equal(r.refills, 4);
  hak_trim();
}

// With more than TINY_CACHE_FULL_THREADS threads live, the ramp stops at
// half as many blocks a refill (the thread's share, as its lists' bounds):
// each thread's last ramped carve sits on its list unused once its burst
// ends (1 000 threads holding 16 blocks of twelve sizes to 5 KB, a /tmp probe:
// 280 -> 237 MB peak RSS; glibc 174, tcmalloc 207, jemalloc 242).
static void test_a_burst_with_many_threads_live_carves_at_most_half_as_many_a_refill(void **state) {
  (void)state;
  young_slabs_taken();
  unsigned cls = size_class_of(20000);
  hak_trim();
  crowd_t c;
  crowd_gather(&c);
  carve_ramp_t r = {{0}, 0};
  run_in_thread(take_a_burst, &r);
  crowd_release(&c);
  size_t bs = g_size_class[cls].block;
  assert_int_equal(r.carved[0], 1 * bs);
  assert_int_equal(r.carved[1], 3 * bs);                // 1 + 2
  assert_int_equal(r.carved[2], 7 * bs);                // + 4
  assert_int_equal(r.carved[3], 11 * bs);               // + 4, not 8
  assert_int_equal(r.refills, 5);                       // 1 + 2 + 4 + 4 + 4 = 15
  hak_trim();
}

// With more than TINY_CACHE_FULL_THREADS threads live, a thread's first
// refill of a small class that binds a fresh slab offers the rest of the
// slab's first page in the class exchange: another thread's first malloc of
// the class, while the first still holds its block, comes from that page, in
// a cache line of its own, not from a slab of its own. Without the crowd,
// each binds its own slab.
#define SHARED_SIZE 200u
typedef struct first_holder {
  pthread_barrier_t took, done;
  void *p;
} first_holder_t;

static void *hold_a_first_block(void *arg) {
  first_holder_t *f = arg;
  f->p = hak_malloc(SHARED_SIZE);
  pthread_barrier_wait(&f->took);
  pthread_barrier_wait(&f->done);
  hak_free(f->p);
  return NULL;
}

typedef struct first_block {
  void *p;
  slab_meta_t *m;
} first_block_t;

static void *take_a_first_block(void *arg) {
  first_block_t *b = arg;
  b->p = hak_malloc(SHARED_SIZE);
  b->m = slab_of(b->p);
  hak_free(b->p);   // (its address stays as a record of where it was)
  return NULL;
}

// The first thread's block and the second's, each with its slab (looked up
// while the blocks were live: the trim after them may unmap their SuperSlabs).
static void first_blocks_of_two_threads(first_block_t *p, first_block_t *q) {
  unsigned cls = size_class_of(SHARED_SIZE);
  hak_trim();
  assert_int_equal(transfer_chains(cls), 0);
  first_holder_t f;
  pthread_barrier_init(&f.took, NULL, 2);
  pthread_barrier_init(&f.done, NULL, 2);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, hold_a_first_block, &f), 0);
  pthread_barrier_wait(&f.took);
  p->p = f.p;
  p->m = slab_of(f.p);
  run_in_thread(take_a_first_block, q);
  pthread_barrier_wait(&f.done);
  pthread_join(t, NULL);
  pthread_barrier_destroy(&f.took);
  pthread_barrier_destroy(&f.done);
  hak_trim();
}

static void test_first_blocks_share_a_page_with_many_threads_live(void **state) {
  (void)state;
  first_block_t p, q;
  first_blocks_of_two_threads(&p, &q);
  assert_ptr_not_equal(p.m, q.m);                       // few threads: a slab each
  crowd_t c;
  crowd_gather(&c);
  first_blocks_of_two_threads(&p, &q);
  crowd_release(&c);
  assert_ptr_equal(p.m, q.m);                           // many: the first one's page
  assert_true((uintptr_t)q.p / 4096u == (uintptr_t)p.p / 4096u);
  assert_true((uintptr_t)q.p / 64u != (uintptr_t)p.p / 64u);
}

// A medium class's first slab in the process is its young slab, one of the
// small kind's 64 KiB slabs; its next is a 512 KiB slab of its own kind; the
// young slab, emptied, goes back FREE to the small kind (tiny_heap.h:
// bench/spawn's parent held a dozen medium classes in 512 KiB slabs, four to a
// 2 MiB SuperSlab whose page table every fork copied).
typedef struct young_seen {
  size_t       size;
  slab_meta_t *first;
  unsigned     first_kind, next_kind;
  size_t       first_bytes, next_bytes;
  int          freed_small;     // the emptied first slab FREE in the small kind's stash or pool
  int          stashed_medium;  // ... or in the medium kind's stash (wrong)
} young_seen_t;

static int in_stash(const slab_stash_t *st, const slab_meta_t *m) {
  for (uint32_t i = 0; i < st->n; i++)
    if (st->slab[i] == m) return 1;
  return 0;
}

static void *fill_the_first_slab(void *arg) {
  young_seen_t *y = arg;
  held_blocks_t h = {NULL, 0};
  void *extra = NULL;
  y->first = full_slab(y->size, &h, &extra);
  if (y->first != NULL) {
    slab_meta_t *next = slab_of(extra);
    y->first_kind = ss_of_meta(y->first)->kind;
    y->first_bytes = ss_slab_bytes(ss_of_meta(y->first), y->first->index);
    y->next_kind = ss_of_meta(next)->kind;
    y->next_bytes = ss_slab_bytes(ss_of_meta(next), next->index);
  }
  held_free_all(&h);
  hak_free(extra);
  tiny_flush(size_class_of(y->size), UINT32_MAX);   // every block home: the first slab EMPTY, FREE
  if (y->first != NULL) {
    y->freed_small = slab_state(y->first) == SLAB_FREE &&
                     (in_stash(&t_heap_p->stash[HAK_KIND_SMALL], y->first) ||
                      (ss_of_meta(y->first)->free_mask >> y->first->index & 1u));
    y->stashed_medium = in_stash(&t_heap_p->stash[HAK_KIND_MEDIUM], y->first);
  }
  validate_engine(NULL);
  return NULL;
}

static void test_a_medium_classs_first_slab_is_a_young_small_kind_slab(void **state) {
  (void)state;
  young_seen_t y = {.size = 3000};
  uint64_t bit = (uint64_t)1 << size_class_of(y.size);
  hak_trim();                                          // no medium memory waits dirty
  atomic_fetch_and(&g_class_young_taken, ~bit);
  run_in_thread(fill_the_first_slab, &y);
  assert_non_null(y.first);
  assert_int_equal(y.first_kind, HAK_KIND_SMALL);
  assert_true(y.first_bytes <= (size_t)64 << 10);
  assert_int_equal(y.next_kind, HAK_KIND_MEDIUM);
  assert_true(y.next_bytes > (size_t)256 << 10);
  assert_true(atomic_load(&g_class_young_taken) & bit);
  assert_true(y.freed_small);                          // its stash is its SuperSlab's kind's ...
  assert_false(y.stashed_medium);                      // ... not its class's
  pool_collect_abandoned_empty();
  assert_int_equal(slab_state(y.first), SLAB_FREE);
  assert_int_equal(ss_of_meta(y.first)->kind, HAK_KIND_SMALL);
  y.first = NULL;                                      // taken once a process: the next first slab is medium
  hak_trim();                                          // (no dirty medium memory either)
  run_in_thread(fill_the_first_slab, &y);
  assert_non_null(y.first);
  assert_int_equal(y.first_kind, HAK_KIND_MEDIUM);
  hak_trim();
}

// ... but not while medium memory waits dirty in the pool: its pages are
// resident, a young slab's would be new (bench/drift: 9 053 page faults
// against 7 447). The class keeps its young slab for later.
static void *one_block_of(void *arg) {
  young_seen_t *y = arg;
  void *p = hak_malloc(y->size);
  assert_non_null(p);
  y->first = slab_of(p);
  y->first_kind = ss_of_meta(y->first)->kind;
  hak_free(p);
  return NULL;
}

static void test_a_young_slab_waits_while_dirty_medium_memory_does(void **state) {
  (void)state;
  hak_trim();
  purge_knobs_t old = purge_knobs_set(60000, 1000, (size_t)1 << 40);   // nothing purged meanwhile
  size_t other = 6000;
  atomic_fetch_or(&g_class_young_taken, (uint64_t)1 << size_class_of(other));
  assert_non_null(run_in_thread(use_a_slab_lightly, &other));   // a dirty medium slab ...
  pool_collect_abandoned_empty();
  assert_true(pool_dirty_bytes() > 0);                             // ... FREE in the pool
  young_seen_t y = {.size = 3000};
  uint64_t bit = (uint64_t)1 << size_class_of(y.size);
  atomic_fetch_and(&g_class_young_taken, ~bit);
  run_in_thread(one_block_of, &y);
  assert_int_equal(y.first_kind, HAK_KIND_MEDIUM);
  assert_false(atomic_load(&g_class_young_taken) & bit);
  purge_knobs_restore(old);
  hak_trim();
}

// ... and so does a class of a page or a little less (2-4 KiB: one or two
// blocks a page) once its thread takes back what it freed (its bound grown):
// rounds of 1 600 mallocs of 4 KiB and their frees (glibc's
// bench-malloc-simple) carved a block a refill past the grown list, 575 k
// refills in 3.2 M mallocs, tcmalloc 0.81x our time. A thread that only
// takes (a producer) still carves a page a refill.
static void *grow_a_page_class_then_take_more(void *arg) {
  uint64_t *refills = arg;
  enum { ROUND = 200, EXTRA = 64, SIZE = 4096 };
  unsigned cls = size_class_of(SIZE);
  static void *p[ROUND + EXTRA];
  for (int r = 0; r < 6; r++) {                         // its own blocks past the bound, taken back
    for (int i = 0; i < ROUND; i++) p[i] = hak_malloc(SIZE);
    for (int i = 0; i < ROUND; i++) hak_free(p[i]);
  }
  assert_true(t_tls_cache.cap_grow[cls] != 0);
  uint64_t before = hak_counters()->cls[cls].refills;
  for (int i = 0; i < ROUND + EXTRA; i++) p[i] = hak_malloc(SIZE);   // the last EXTRA from new memory
  *refills = hak_counters()->cls[cls].refills - before;
  for (int i = 0; i < ROUND + EXTRA; i++) hak_free(p[i]);
  return NULL;
}

static void test_a_grown_class_of_a_page_carves_more_at_each_refill(void **state) {
  (void)state;
  assert_int_equal(4096u / g_size_class[size_class_of(4096)].size, 1u);
  hak_trim();
  uint64_t refills = 0;
  run_in_thread(grow_a_page_class_then_take_more, &refills);
  assert_true(refills > 0);
  assert_true(refills <= 24);                           // a block a refill: 64 or more
  hak_trim();
}

typedef struct some_blocks {
  held_blocks_t *h;
  uint32_t n;
} some_blocks_t;

static void *free_some_then_exit(void *arg) {
  some_blocks_t *a = arg;
  for (uint32_t i = 0; i < a->n; i++) hak_free(held_pop(a->h));   // other threads' blocks: home remotely
  tiny_flush_exchange();   // with the batches its list overflowed with (transfer_box)
  return NULL;
}

// A full slab of 64 B blocks with a third of them freed (by another thread
// when `remote`, else by the owner), back on the owner's partial list.
static slab_meta_t *partial_slab_a_third_free(held_blocks_t *h, void **extra, int remote) {
  unsigned cls = size_class_of(64);
  slab_meta_t *m = full_slab(64, h, extra);
  if (m == NULL) return NULL;
  some_blocks_t a = {h, m->capacity / 3};
  if (remote) {
    run_in_thread(free_some_then_exit, &a);            // wakes m: on our wake list
    assert_ptr_equal(tiny_heap_partial_with_free(t_heap_p, cls), m);   // takes it: partial
  } else {
    for (uint32_t i = 0; i < a.n; i++) hak_free(held_pop(h));
    tiny_flush(cls, UINT32_MAX);                        // home through the local box: partial
  }
  assert_int_equal(m->where, SLAB_IN_PARTIAL);
  assert_int_equal(atomic_load(&m->notify), SLAB_NOTIFY_IDLE);
  return m;
}

// A partial slab that other threads' frees keep filling is given up at the
// owner's next refill (a ring's blocks came home to slabs their owner was
// not refilling from while other threads carved: 35 -> 28 MiB peak RSS of
// ring at 16 threads and -n 2M).
static void test_a_partial_slab_filled_by_remote_frees_is_given_up_at_a_refill(void **state) {
  (void)state;
  held_blocks_t h = {NULL, 0};
  void *extra = NULL;
  unsigned cls = size_class_of(64);
  slab_meta_t *m = partial_slab_a_third_free(&h, &extra, 1);
  assert_non_null(m);
  assert_true(remote_word_has_list(atomic_load(&m->remote_head)));
  hak_free(extra);
  tiny_flush(cls, UINT32_MAX);                          // extra: on the current slab's free list
  assert_true(tls_list_empty(cls));
  void *p = hak_malloc(64);                             // a refill from the current slab
  assert_ptr_equal(p, extra);
  assert_null(t_heap_p->partial[cls]);
  assert_int_equal(atomic_load(&m->owner), 0);
  assert_int_equal(slab_state(m), SLAB_LISTED);         // on the abandoned stack, for an adopter
  held_free_all(&h);
  hak_free(p);
  hak_thread_flush();
}

// ... but one its owner's own frees filled stays (local rows keep their slabs).
static void test_a_partial_slab_filled_by_its_owner_stays_at_a_refill(void **state) {
  (void)state;
  held_blocks_t h = {NULL, 0};
  void *extra = NULL;
  unsigned cls = size_class_of(64);
  slab_meta_t *m = partial_slab_a_third_free(&h, &extra, 0);
  assert_non_null(m);
  tiny_heap_trim_partial(t_heap_p, cls, t_heap_p->cur[cls]);
  assert_ptr_equal(t_heap_p->partial[cls], m);
  assert_int_equal(atomic_load(&m->owner), thread_self_id());
  held_free_all(&h);
  hak_free(extra);
  hak_thread_flush();
}

// Slow paths of another class (refills and overflows of 100 KB blocks,
// whose lists hold a few; it may take the slabs the classes looked at give
// back) for at least `ms` milliseconds and `paths` slow paths.
static void slow_paths_elsewhere(unsigned ms, unsigned paths) {
  unsigned other = size_class_of(100000);
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (unsigned done = 0;;) {
    void *p[16];
    tiny_class_ungrow(other);    // (as slow_path_bytes_elsewhere, unit_util.h: a grown list held whole rounds)
    uint64_t before = hak_counters()->cls[other].refills + hak_counters()->cls[other].flushes;
    for (unsigned i = 0; i < 16; i++) p[i] = hak_malloc(100000);
    for (unsigned i = 0; i < 16; i++) hak_free(p[i]);
    done += (unsigned)(hak_counters()->cls[other].refills + hak_counters()->cls[other].flushes - before);
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (done >= paths && (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= (long)ms) break;
    struct timespec nap = {0, 1000000};
    nanosleep(&nap, NULL);
  }
}

// A class the thread stopped using gives its list back and its EMPTY
// current slab to the pool at the next look for idle classes; before, the
// list and the slab stayed until the thread exited.
static void test_an_idle_class_gives_back_its_list_and_its_empty_current_slab(void **state) {
  (void)state;
  unsigned cls = size_class_of(20000);
  void *p = hak_malloc(20000);
  assert_non_null(p);
  slab_meta_t *m = slab_of(p);
  hak_free(p);                                   // on the TLS list; the slab is current
  assert_ptr_equal(t_heap_p->cur[cls], m);
  assert_int_not_equal(tls_list_len(cls), 0);
  uint32_t delay = g_hak_config.purge_delay_ms;
  g_hak_config.purge_delay_ms = 1;               // a look every 5 ms at most
  slow_paths_elsewhere(3 * 10, 64);              // looks: the class touched, the baseline, the second quiet one
  g_hak_config.purge_delay_ms = delay;
  assert_int_equal(tls_list_len(cls), 0);
  assert_null(t_heap_p->cur[cls]);
  assert_true(slab_state(m) == SLAB_FREE || m->cls != cls);   // gone back: FREE, or taken by the other class
  hak_thread_flush();
}

// A class in use between two looks keeps its list: one block taken per
// round moves the head every time, and no look flushes the list (one needs
// LEFT_LOOKS looks in a row with the head unmoved; between two takes come
// one look by the clock and, the slow paths moving under 2 MB, at most one
// by LEFT_LOOK_BYTES).
static void test_a_class_in_use_keeps_its_list(void **state) {
  (void)state;
  unsigned cls = size_class_of(20000);
  void *p[16];
  for (unsigned i = 0; i < 16; i++) p[i] = hak_malloc(20000);
  for (unsigned i = 0; i < 16; i++) hak_free(p[i]);
  uint64_t flushes = hak_counters()->cls[cls].flushes;
  uint32_t delay = g_hak_config.purge_delay_ms;
  g_hak_config.purge_delay_ms = 1;               // a look every 5 ms at most
  for (unsigned i = 0; i < 16; i++) {
    struct timespec nap = {0, 5000000};          // a look by the clock, or close to one, between takes
    nanosleep(&nap, NULL);
    void *q[8];
    for (unsigned j = 0; j < 8; j++) q[j] = hak_malloc(100000);
    for (unsigned j = 0; j < 8; j++) hak_free(q[j]);
    p[i] = hak_malloc(20000);
  }
  g_hak_config.purge_delay_ms = delay;
  assert_int_equal(hak_counters()->cls[cls].flushes, flushes);
  for (unsigned i = 0; i < 16; i++) hak_free(p[i]);
  hak_thread_flush();
}

// A class whose blocks come back in the order they went out (buffers whose
// size moved on) shrinks its bound, and once its list could hold every block
// of its current slab still out, it is dying: the last blocks freed, still on
// its list, go home at the next slow paths of another class, and the slabs
// they kept go back with them.
// Before, those blocks and their slabs stayed until the idle look (a second
// later): bench/drift kept a slab of every class the sizes had moved past.
static void test_a_dying_class_gives_back_its_last_blocks_at_another_classs_slow_path(void **state) {
  (void)state;
  enum { N = 200 };
  unsigned cls = size_class_of(20000);
  void *p[N];
  hak_thread_flush();
  for (unsigned i = 0; i < N; i++) assert_non_null(p[i] = hak_malloc(20000));
  slab_meta_t *slabs[N];
  unsigned nslabs = 0;
  for (unsigned i = 0; i < N; i++)
    if (nslabs == 0 || slabs[nslabs - 1] != slab_of(p[i])) slabs[nslabs++] = slab_of(p[i]);
  assert_true(nslabs >= 4);
  for (unsigned i = 0; i < N; i++) hak_free(p[i]);     // oldest first
  assert_int_not_equal(t_tls_cache.cap_shift[cls], 0);  // it only freed: its bound shrank
  assert_int_not_equal(tls_list_len(cls), 0);           // the last blocks freed are on the list
  slow_paths_elsewhere(0, 4);
  assert_int_equal(tls_list_len(cls), 0);
  assert_null(t_heap_p->cur[cls]);
  assert_null(t_heap_p->partial[cls]);
  assert_null(t_heap_p->full[cls]);
  for (unsigned i = 0; i < nslabs; i++)   // gone back: FREE, or taken by the other class
    assert_true(!ss_registry_contains(slabs[i]) || slab_state(slabs[i]) == SLAB_FREE || slabs[i]->cls != cls);
  hak_thread_flush();
}

// ... but a refill of the class ends its dying: the other class's slow
// paths leave its list alone.
static void test_a_refill_ends_a_classs_dying(void **state) {
  (void)state;
  enum { N = 200 };
  unsigned cls = size_class_of(20000);
  void *p[N];
  hak_thread_flush();
  tiny_cache_ungrow();   // a bound grown by an earlier case takes more frees to shrink
  for (unsigned i = 0; i < N; i++) p[i] = hak_malloc(20000);
  for (unsigned i = 0; i < N; i++) hak_free(p[i]);
  assert_true(t_heap_p->dying >> cls & 1u);
  uint64_t refills = hak_counters()->cls[cls].refills;
  unsigned n = 0;
  while (hak_counters()->cls[cls].refills == refills) p[n++] = hak_malloc(20000);   // the list, then a refill
  assert_false(t_heap_p->dying >> cls & 1u);
  uint64_t flushes = hak_counters()->cls[cls].flushes;
  slow_paths_elsewhere(0, 4);
  assert_int_equal(hak_counters()->cls[cls].flushes, flushes);
  for (unsigned i = 0; i < n; i++) hak_free(p[i]);
  hak_thread_flush();
}

// A partial slab of a class this thread no longer takes, emptied by another
// thread's frees, goes back when the thread takes a slab of the same kind
// from the pool for another class (before, nothing looked at it until the
// class was refilled again: bench/drift -t 2 held 110 MB against 66).
static void test_a_partial_slab_emptied_remotely_goes_back_before_the_kind_takes_a_new_slab(void **state) {
  (void)state;
  hak_thread_flush();
  unsigned cls = size_class_of(2000), other = size_class_of(7000);
  assert_int_equal(g_size_class[cls].kind, g_size_class[other].kind);
  held_blocks_t h = {NULL, 0};
  void *extra = NULL;
  slab_meta_t *m = full_slab(2000, &h, &extra);
  assert_non_null(m);
  some_blocks_t a = {&h, m->capacity / 3};
  run_in_thread(free_some_then_exit, &a);              // wakes m: on our wake list
  assert_ptr_equal(tiny_heap_partial_with_free(t_heap_p, cls), m);   // taken: partial
  assert_int_equal(m->where, SLAB_IN_PARTIAL);
  free_list_arg_t rest = {&h, 0};
  run_in_thread(free_all_then_exit, &rest);            // the rest: m is EMPTY, still on our list
  assert_int_equal(slab_census_live(m), 0);
  assert_ptr_equal(t_heap_p->partial[cls], m);
  assert_null(t_heap_p->cur[other]);
  void *q = hak_malloc(7000);                           // a slab of the kind for another class
  assert_non_null(q);
  assert_null(t_heap_p->partial[cls]);
  assert_ptr_equal(slab_of(q), m);                      // the EMPTY slab, through the stash
  hak_free(q);
  hak_free(extra);
  hak_thread_flush();
}

// An EMPTY slab on an abandoned stack (a class nobody refills, emptied by
// other threads) is taken before a new SuperSlab is mapped; before, it
// waited for the purge pass, a second later, while the kind mapped more.
static void test_an_empty_abandoned_slab_is_taken_before_a_new_superslab_is_mapped(void **state) {
  (void)state;
  purge_knobs_t old = purge_knobs_set(3600000u, 1024u, (size_t)1 << 30);   // m waits for the acquire, not a purge pass
  int batch = batching_off();
  fill_arg_t f;
  slab_meta_t *m = detached_slab(16, &f);      // every block with us
  g_pool_recycle_at_empty = 0;                          // (a free that found the stack taken)
  held_free_all(&f.h);
  tiny_flush_remote(size_class_of(16));
  g_pool_recycle_at_empty = 1;
  assert_int_equal(slab_state(m), SLAB_EMPTY_LISTED);
  unsigned kind = ss_of_meta(m)->kind;
  hak_thread_flush();                                   // our stash back to the pool ...
  slab_meta_t *held[4096];
  uint32_t nheld = 0, n;
  pool_lock(kind);                                      // ... and every FREE slab of the kind held here
  while (nheld < 4096 && (n = pool_take_locked(kind, &held[nheld], 1)) != 0) nheld += n;
  pool_unlock(kind);
  assert_true(nheld < 4096);
  uint64_t mapped = stats_now().superslabs_mapped_total;
  slab_stash_t stash = {{NULL}, 0};
  slab_meta_t *got = shared_pool_acquire_slab(size_class_of(224), kind, 12345, &stash);
  assert_non_null(got);
  assert_int_equal(stats_now().superslabs_mapped_total, mapped);   // no new SuperSlab
  assert_int_not_equal(slab_state(m), SLAB_EMPTY_LISTED);
  slab_set_owner(got, 12345, memory_order_relaxed);
  shared_pool_release_owned(got, &stash);
  shared_pool_stash_release(&stash);
  pool_lock(kind);
  for (uint32_t i = 0; i < nheld; i++) pool_put_locked(held[i], os_now_ms());
  pool_unlock(kind);
  purge_knobs_restore(old);
  batching_back(batch);
  hak_trim();
}

// A class this thread only allocates while another thread frees it (a
// collector's sweeper) gives back its current slab, which the other
// thread's frees emptied, once this thread's slow paths have moved on
// through other classes for LEFT_LOOKS looks at left classes; before, the
// slab stayed until the idle look a second later (bench/drift -t 2 held a
// 512 KiB slab for each of its 27 medium classes: 45 MB against mimalloc's 23).
static void test_a_class_left_behind_gives_back_its_current_slab_emptied_by_another_thread(void **state) {
  (void)state;
  hak_thread_flush();
  unsigned cls = size_class_of(40000);   // over 32 KiB: another thread's free sends it home, not to the exchange
  held_blocks_t h = {NULL, 0};
  for (unsigned i = 0; i < 3; i++) held_push(&h, hak_malloc(40000));
  slab_meta_t *m = slab_of(h.head);
  assert_ptr_equal(t_heap_p->cur[cls], m);
  free_list_arg_t a = {&h, 0};
  run_in_thread(free_all_then_exit, &a);
  assert_int_equal(slab_census_live(m), tls_list_len(cls));   // nothing of it out but our list
  assert_ptr_equal(t_heap_p->cur[cls], m);
  slow_path_bytes_elsewhere(LEFT_LOOKS + 1);   // the first look sees the class touched
  assert_null(t_heap_p->cur[cls]);
  assert_int_equal(tls_list_len(cls), 0);
  assert_true(slab_state(m) == SLAB_FREE || m->cls != cls);   // gone back: FREE, or taken by the other class
  hak_thread_flush();
}

// A class given back with nothing left here (no block on its list, no slab
// of it on the heap's lists) is not given back again at the looks after:
// nothing is left for later frees to reach. A thread whose every malloc was a
// refill gave every idle class back at every look (`bursts -k 8 -b 100`:
// 134 k give-backs in 100 rounds, a fifth of its instructions).
static void *give_backs_over_many_looks(void *arg) {
  uint64_t *r = arg;
  hak_free(hak_malloc(700));                   // a class used once, then left
  slow_path_bytes_elsewhere(LEFT_LOOKS + 1);   // it (and each idle class) given back
  r[0] = hak_counters()->classes_given_back;
  slow_path_bytes_elsewhere(8);                // eight looks more: nothing new to give back
  r[1] = hak_counters()->classes_given_back;
  return NULL;
}
static void test_a_class_given_back_with_nothing_left_is_not_given_back_again(void **state) {
  (void)state;
  uint64_t r[2] = {0, UINT64_MAX};
  run_in_thread(give_backs_over_many_looks, r);
  assert_true(r[0] >= 1);
  assert_int_equal(r[1], r[0]);
}

// ... but a class this thread allocates between the looks keeps its slab
// and its list, however much the other classes move.
static void test_a_class_allocated_between_looks_is_not_left_behind(void **state) {
  (void)state;
  hak_thread_flush();
  unsigned cls = size_class_of(40000);
  void *held = hak_malloc(40000), *spare = hak_malloc(40000);
  slab_meta_t *m = slab_of(held);
  assert_ptr_equal(t_heap_p->cur[cls], m);
  for (unsigned i = 0; i < 4 * LEFT_LOOKS; i++) {
    hak_free(spare);                 // the list's head: the other block each round (one
    slow_path_bytes_elsewhere(0);    // block taken and given back would leave it unmoved)
    spare = held;
    held = hak_malloc(40000);        // the block just freed
  }
  assert_ptr_equal(t_heap_p->cur[cls], m);
  hak_free(held);
  hak_free(spare);
  hak_thread_flush();
}

// A class given back as left behind forgets its grown bound and the
// overflows that grow it at the next refill: a program sweeping through sizes
// (bench/drift) grew each class again at the refill that began its next
// sweep, so its list held a grown bound's blocks when that sweep moved on
// (with 4 MiB for the classes above 32 KiB, 8.7 k -> 13.5 k page faults: the
// dirty budget purged the slabs they went back to, and the next sweep
// faulted them in again).
static void test_a_class_left_behind_forgets_its_grown_bound(void **state) {
  (void)state;
  hak_thread_flush();
  unsigned cls = size_class_of(96 << 10);
  void *blk[40];
  for (int round = 0; round < 8; round++) {
    for (int i = 0; i < 40; i++) blk[i] = hak_malloc(96 << 10);
    for (int i = 0; i < 40; i++) hak_free(blk[i]);
  }
  assert_true(t_tls_cache.cap_grow[cls] != 0);   // grown by its rounds
  slow_path_bytes_elsewhere(LEFT_LOOKS + 1);
  assert_int_equal(tls_list_len(cls), 0);         // given back
  assert_int_equal(t_tls_cache.cap_grow[cls], 0);
  assert_int_equal(t_tls_cache.local_overflow[cls], 0);
  assert_int_equal(t_tls_cache.cap[cls], tls_cap_for(cls, t_tls_cache.cap_share));
  hak_thread_flush();
}

// A thread that cycles through a few classes in bursts (each class: 40
// blocks taken, then freed, then the next class) keeps each class's list
// between its bursts. Before, every malloc of such a cycle of 16-96 KiB
// blocks was a refill of one block (tcmalloc 0.2-0.3x our time): the cycle
// moves more bytes through slow paths than two looks at left classes apart,
// so each class was given back between its bursts (as left, or as dying at
// the next class's slow path after its frees overflowed), and refilled from
// a slab carved again. Now a class given back and refilled within
// LEFT_BACK_LOOKS looks is kept through the next LEFT_KEEP_LOOKS.
#define CYCLE_CLASSES 4
static void *cycle_classes_in_bursts(void *arg) {
  uint64_t *refills = arg;
  static const size_t sizes[CYCLE_CLASSES] = {16 << 10, 40 << 10, 64 << 10, 96 << 10};
  void *p[40];
  uint64_t before = 0;
  for (int round = 0; round < 24; round++) {
    if (round == 20)
      for (int k = 0; k < CYCLE_CLASSES; k++) before += hak_counters()->cls[size_class_of(sizes[k])].refills;
    for (int k = 0; k < CYCLE_CLASSES; k++) {
      for (int i = 0; i < 40; i++) p[i] = hak_malloc(sizes[k]);
      for (int i = 0; i < 40; i++) hak_free(p[i]);
    }
  }
  uint64_t after = 0;
  for (int k = 0; k < CYCLE_CLASSES; k++) after += hak_counters()->cls[size_class_of(sizes[k])].refills;
  *refills = after - before;
  return NULL;
}
static void test_a_class_cycled_in_bursts_keeps_its_list(void **state) {
  (void)state;
  uint64_t refills = UINT64_MAX;
  run_in_thread(cycle_classes_in_bursts, &refills);
  assert_int_equal(refills, 0);   // the last 4 rounds: every burst from its list
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_an_exhausted_slab_waits_on_its_owners_full_list),
    HAK_UNIT_TEST(test_a_small_block_freed_by_another_thread_is_not_handed_out_by_it),
    HAK_UNIT_TEST(test_owner_free_into_a_full_slab_brings_it_back_without_a_remote_push),
    HAK_UNIT_TEST(test_blocks_of_many_own_slabs_interleaved_each_go_home),
    HAK_UNIT_TEST(test_remote_frees_that_empty_a_full_slab_wake_its_owner_once),
    HAK_UNIT_TEST(test_the_owner_waits_for_a_wake_push_in_flight_before_it_takes_the_slab),
    HAK_UNIT_TEST(test_a_refill_reuses_a_partial_slab_before_it_carves_the_current_one),
    HAK_UNIT_TEST(test_a_refill_from_new_memory_carves_one_page_not_a_whole_batch),
    HAK_UNIT_TEST(test_a_burst_of_a_class_above_a_page_carves_more_at_each_refill),
    HAK_UNIT_TEST(test_a_burst_with_many_threads_live_carves_at_most_half_as_many_a_refill),
    HAK_UNIT_TEST(test_first_blocks_share_a_page_with_many_threads_live),
    HAK_UNIT_TEST(test_a_medium_classs_first_slab_is_a_young_small_kind_slab),
    HAK_UNIT_TEST(test_a_young_slab_waits_while_dirty_medium_memory_does),
    HAK_UNIT_TEST(test_a_grown_class_of_a_page_carves_more_at_each_refill),
    HAK_UNIT_TEST(test_a_woken_slab_beyond_the_partial_keep_is_given_up_and_adopted),
    HAK_UNIT_TEST(test_a_partial_slab_filled_by_remote_frees_is_given_up_at_a_refill),
    HAK_UNIT_TEST(test_a_partial_slab_filled_by_its_owner_stays_at_a_refill),
    HAK_UNIT_TEST(test_an_abandoned_slab_is_adopted_by_another_thread),
    HAK_UNIT_TEST(test_thread_exit_abandons_slabs_on_every_list_and_returns_its_stash),
    HAK_UNIT_TEST(test_hak_owns_is_true_for_a_live_block_and_false_once_it_is_freed),
    HAK_UNIT_TEST(test_hak_owns_is_false_for_slab_space_never_handed_out),
    HAK_UNIT_TEST(test_an_abandoned_slab_emptied_remotely_goes_to_the_pool_at_once),
    HAK_UNIT_TEST(test_an_abandoned_slab_emptied_remotely_is_empty_listed_then_freed_with_a_new_generation),
    HAK_UNIT_TEST(test_a_slab_abandoned_with_a_free_list_is_counted_by_its_live_blocks),
    HAK_UNIT_TEST(test_an_idle_class_gives_back_its_list_and_its_empty_current_slab),
    HAK_UNIT_TEST(test_a_class_in_use_keeps_its_list),
    HAK_UNIT_TEST(test_a_dying_class_gives_back_its_last_blocks_at_another_classs_slow_path),
    HAK_UNIT_TEST(test_a_refill_ends_a_classs_dying),
    HAK_UNIT_TEST(test_a_partial_slab_emptied_remotely_goes_back_before_the_kind_takes_a_new_slab),
    HAK_UNIT_TEST(test_an_empty_abandoned_slab_is_taken_before_a_new_superslab_is_mapped),
    HAK_UNIT_TEST(test_a_slab_adopted_empty_is_purged_as_far_as_its_last_life_reached),
    HAK_UNIT_TEST(test_a_stale_empty_check_does_not_empty_a_slab_adopted_and_abandoned_since),
    HAK_UNIT_TEST(test_a_class_left_behind_gives_back_its_current_slab_emptied_by_another_thread),
    HAK_UNIT_TEST(test_a_class_allocated_between_looks_is_not_left_behind),
    HAK_UNIT_TEST(test_a_class_given_back_with_nothing_left_is_not_given_back_again),
    HAK_UNIT_TEST(test_a_class_left_behind_forgets_its_grown_bound),
    HAK_UNIT_TEST(test_a_class_cycled_in_bursts_keeps_its_list),
  };
  return cmocka_run_group_tests_name("heap", tests, NULL, NULL);
}
