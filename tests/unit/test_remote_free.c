// test_remote_free.c — frees by threads that do not own the slab (remote_free_box)
// and the owner's drain (ss_remote_drain_to_freelist); the chain records that
// blocks given back to a slab carry (tls_sll_box.h: block_set_chain), which
// the drain and the refill read instead of walking every link.
#include "unit_util.h"

#include "tiny/tiny_free_local_box.h"

#define NTHREADS 8

static void *free_one(void *p) {
  hak_free(p);
  return NULL;
}

typedef struct free_share {
  void   **blocks;
  size_t   n;
  unsigned first, step;
  pthread_barrier_t *start;
} free_share_t;

static void *free_share(void *arg) {
  free_share_t *s = arg;
  pthread_barrier_wait(s->start);
  for (size_t i = s->first; i < s->n; i += s->step) hak_free(s->blocks[i]);
  return NULL;
}

// The state the tests start from: the main thread owns slab m (class of `size`),
// and holds every block of it in blocks[0..n).
typedef struct owned_slab {
  size_t       size;
  slab_meta_t *m;
  void       **blocks;
  size_t       n;
} owned_slab_t;

static owned_slab_t g_slab;

static int setup_owned_slab(size_t size) {
  held_blocks_t h = {NULL, 0};
  g_slab.size = size;
  g_slab.m = fill_one_slab(size, &h);
  if (g_slab.m == NULL) return -1;
  g_slab.n = h.count;
  g_slab.blocks = calloc(h.count, sizeof(void *));
  for (size_t i = 0; h.head != NULL; i++) {
    g_slab.blocks[i] = h.head;
    h.head = *(void **)h.head;
  }
  return 0;
}

static int setup_slab_of_48(void **state) { (void)state; return setup_owned_slab(48); }
static int setup_slab_of_16(void **state) { (void)state; return setup_owned_slab(16); }

static int teardown_slab(void **state) {
  (void)state;
  free(g_slab.blocks);
  memset(&g_slab, 0, sizeof g_slab);
  hak_thread_flush();
  return validate_engine(state);
}

static void test_setup_hands_out_every_block_of_one_slab(void **state) {
  (void)state;
  assert_int_equal(g_slab.n, g_slab.m->capacity);
  assert_int_equal(slab_census_live(g_slab.m), g_slab.m->capacity);
  for (size_t i = 0; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

static void test_block_freed_by_another_thread_lands_on_the_slab_remote_list(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  void *p = g_slab.blocks[3];
  run_in_thread(free_one, p);
  assert_ptr_equal(remote_word_first(atomic_load(&m->remote_head)), p);
  for (size_t i = 0; i < g_slab.n; i++) if (i != 3) hak_free(g_slab.blocks[i]);
}

static void test_remote_free_drops_the_slab_used_count(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  uint32_t before = slab_census_live(m);
  run_in_thread(free_one, g_slab.blocks[0]);
  assert_int_equal(slab_census_live(m), before - 1);
  for (size_t i = 1; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

static void test_remote_free_is_counted_in_the_stats(void **state) {
  (void)state;
  size_t before = stats_now().remote_frees_total;
  run_in_thread(free_one, g_slab.blocks[0]);
  assert_int_equal(stats_now().remote_frees_total, before + 1);
  for (size_t i = 1; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

static void test_remote_drain_moves_the_remote_list_onto_the_free_list(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  void *p = g_slab.blocks[0], *q = g_slab.blocks[1];
  run_in_thread(free_one, p);
  run_in_thread(free_one, q);
  assert_int_equal(ss_remote_drain_to_freelist(m), 2);
  assert_int_equal(atomic_load(&m->remote_head), 0);
  assert_ptr_equal(m->freelist, q);           // LIFO: the last pushed first
  assert_ptr_equal(hak_base_raw(block_next(hak_base_from_raw(m->freelist))), p);
  for (size_t i = 2; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

static void test_remote_drain_of_an_empty_remote_list_moves_nothing(void **state) {
  (void)state;
  assert_int_equal(ss_remote_drain_to_freelist(g_slab.m), 0);
  for (size_t i = 0; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

static void test_owner_gets_a_remotely_freed_block_back_on_refill(void **state) {
  (void)state;
  void *p = g_slab.blocks[5];
  run_in_thread(free_one, p);
  void *q = hak_malloc(g_slab.size);          // TLS empty, slab exhausted: drain
  assert_ptr_equal(q, p);
  for (size_t i = 0; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

// A freeing thread that finds the remote list waited stale (a loaded
// machine: the threads took past REMOTE_STALE_STAMPS) parks its chain's
// first block as a ticket at its exit (ticket_box.h), counted out of the
// slab and off the list. Sent home by a thread that is not the owner, it
// joins the remote list as the other frees did (test_eight_threads_...
// failed 6 runs in 40 beside a second test run for want of this).
static void *parked_tickets_home(void *arg) {
  (void)arg;
  tiny_parked_tickets_home();
  return NULL;
}

// Eight threads free the blocks of one slab at once (interleaved, so they push
// onto the same remote list concurrently).
static void free_from_eight_threads(void) {
  pthread_t t[NTHREADS];
  free_share_t s[NTHREADS];
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, NTHREADS);
  for (unsigned i = 0; i < NTHREADS; i++) {
    s[i] = (free_share_t){g_slab.blocks, g_slab.n, i, NTHREADS, &start};
    pthread_create(&t[i], NULL, free_share, &s[i]);
  }
  for (unsigned i = 0; i < NTHREADS; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&start);
  run_in_thread(parked_tickets_home, NULL);
}

static void test_eight_threads_freeing_at_once_lose_no_block_on_the_remote_list(void **state) {
  (void)state;
  free_from_eight_threads();
  assert_int_equal(remote_list_len(g_slab.m), g_slab.n);
}

static void test_eight_threads_freeing_at_once_bring_the_used_count_to_zero(void **state) {
  (void)state;
  free_from_eight_threads();
  assert_int_equal(slab_census_live(g_slab.m), 0);
}

static void test_owner_reallocates_every_block_eight_threads_freed(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  free_from_eight_threads();
  assert_int_equal(ss_remote_drain_to_freelist(m), g_slab.n);
  unsigned char *seen = calloc(m->capacity, 1);
  size_t distinct = 0;
  for (size_t i = 0; i < g_slab.n; i++) {
    char *q = hak_malloc(g_slab.size);
    assert_ptr_equal(slab_of(q), m);
    size_t idx = (size_t)(q - m->base) / m->block_size;
    if (!seen[idx]) distinct++;
    seen[idx] = 1;
    g_slab.blocks[i] = q;
  }
  free(seen);
  assert_int_equal(distinct, g_slab.n);
  for (size_t i = 0; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

// A thread gathers other threads' blocks under a cache line in its remote
// buffer (an array: the flush reads no block) and sends them home when it
// holds TINY_REMOTE_BUF_BLOCKS: nothing before, all of them at once then.
typedef struct buffered_frees {
  uint32_t before_last, after_last;
} buffered_frees_t;

static void *free_a_buffer_full(void *arg) {
  buffered_frees_t *r = arg;
  for (size_t i = 0; i + 1 < TINY_REMOTE_BUF_BLOCKS; i++) hak_free(g_slab.blocks[i]);
  r->before_last = remote_list_len(g_slab.m);
  hak_free(g_slab.blocks[TINY_REMOTE_BUF_BLOCKS - 1]);
  r->after_last = remote_list_len(g_slab.m);
  return NULL;
}

static void test_remote_buffer_sends_its_blocks_home_when_full(void **state) {
  (void)state;
  assert_true(g_slab.n > TINY_REMOTE_BUF_BLOCKS);
  buffered_frees_t r = {UINT32_MAX, UINT32_MAX};
  run_in_thread(free_a_buffer_full, &r);
  assert_int_equal(r.before_last, 0);
  assert_int_equal(r.after_last, TINY_REMOTE_BUF_BLOCKS);
  assert_int_equal(slab_census_live(g_slab.m), g_slab.n - TINY_REMOTE_BUF_BLOCKS);
  for (size_t i = TINY_REMOTE_BUF_BLOCKS; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

static void *free_a_few(void *arg) {
  (void)arg;
  for (size_t i = 0; i < 5; i++) hak_free(g_slab.blocks[i]);
  return NULL;   // the thread's exit sends them home
}

static void test_remote_buffer_goes_home_at_thread_exit(void **state) {
  (void)state;
  run_in_thread(free_a_few, NULL);
  assert_int_equal(remote_list_len(g_slab.m), 5);
  for (size_t i = 5; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

// Chain records: blocks[from, from + n) of the owned slab linked in order,
// each marked free as a free marks it; the last block's link is the
// giver's to write (tiny_free_local_box, remote_free_push_chain).
typedef struct held_chain {
  hak_base_ptr_t first, last;
  uint32_t       n;
} held_chain_t;

static held_chain_t link_blocks(size_t from, uint32_t n) {
  held_chain_t c = {hak_base_from_raw(g_slab.blocks[from]), hak_base_from_raw(g_slab.blocks[from + n - 1]), n};
  for (uint32_t i = 0; i < n; i++) {
    hak_base_ptr_t b = hak_base_from_raw(g_slab.blocks[from + i]);
    block_set_free(b);
    if (i + 1 < n) block_set_next(b, hak_base_from_raw(g_slab.blocks[from + i + 1]));
  }
  return c;
}

static void free_blocks_from(size_t from) {
  for (size_t i = from; i < g_slab.n; i++) hak_free(g_slab.blocks[i]);
}

// c's record says next is the chain after it, and c's last block links to
// next: on a remote list the last chain's to NULL; on the slab's free list
// (assert_last_chain_record) to the list's end (slab_list_end: TLS_SLL_END
// for 48 bytes, NULL for 16), while its record says NULL.
static void assert_chain_record_linking(held_chain_t c, hak_base_ptr_t next, hak_base_ptr_t link) {
  block_chain_info_t ci = block_chain(g_slab.m, c.first);
  assert_ptr_equal(hak_base_raw(ci.last), hak_base_raw(c.last));
  assert_int_equal(ci.n, c.n);
  assert_ptr_equal(hak_base_raw(ci.next), hak_base_raw(next));
  assert_ptr_equal(hak_base_raw(block_next(c.last)), hak_base_raw(link));
  assert_true(slab_chain_plausible(g_slab.m, ci));
}
static void assert_chain_record(held_chain_t c, hak_base_ptr_t next) { assert_chain_record_linking(c, next, next); }
static void assert_last_chain_record(held_chain_t c) {
  assert_chain_record_linking(c, HAK_BASE_NULL, slab_list_end(g_slab.m));
}

static void test_a_chain_freed_home_records_its_last_block_its_length_and_the_chain_after_it(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  held_chain_t a = link_blocks(0, 10), b = link_blocks(10, 5);
  assert_false(tiny_free_local_box(m, a.first, a.last, a.n));
  assert_false(tiny_free_local_box(m, b.first, b.last, b.n));
  assert_ptr_equal(m->freelist, hak_base_raw(b.first));
  assert_int_equal(m->free_n, 15);
  assert_chain_record(b, a.first);
  assert_last_chain_record(a);
  assert_int_equal(slab_census_live(m), g_slab.n - 15);
  free_blocks_from(15);
}

// The batch a refill of the owned slab's class asks for (its TLS list empty),
// the bound grown by the earlier tests' frees (or raised by a whole take) put
// back first, and the class's refills counted from here (a class that only
// took, as the setup's did, takes a list longer than its room whole:
// test_a_class_that_only_takes_takes_a_longer_list_whole).
static uint32_t refill_want(void) {
  tiny_cache_ungrow();
  unsigned cls = g_slab.m->cls;
  tls_set_cap(&t_tls_cache, cls, tls_class_cap(&t_tls_cache, cls, t_tls_cache.cap_share));
  t_heap_p->refill_streak[cls] = 0;
  uint32_t want = tls_batch(&t_tls_cache, g_slab.m->cls);
  assert_true(want >= 8 && 3 * want + 8 <= g_slab.n);
  return want;
}

// The TLS list's room when it is empty: its bound, 2 * want.
static uint32_t empty_room(void) { return (uint32_t)t_tls_cache.lists[g_slab.m->cls].room + tls_list_len(g_slab.m->cls); }

// A free list longer than the empty TLS list's room is taken a chain at a
// time (a shorter one whole: test_a_refill_takes_a_whole_free_list_that_fits):
// `pad`, pushed first, is the list's last chain and keeps it over the room.
static void test_a_refill_takes_a_chain_whole_and_leaves_the_next_when_half_a_batch_is_taken(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  uint32_t want = refill_want();
  held_chain_t pad = link_blocks(0, empty_room()), x = link_blocks(pad.n, want), y = link_blocks(pad.n + want, want / 2 + 1);
  tiny_free_local_box(m, pad.first, pad.last, pad.n);
  tiny_free_local_box(m, x.first, x.last, x.n);
  tiny_free_local_box(m, y.first, y.last, y.n);
  void *p = hak_malloc(g_slab.size);   // the TLS list is empty: a refill from the current slab
  assert_ptr_equal(p, hak_base_raw(y.first));
  assert_int_equal(tls_list_len(m->cls), y.n - 1);
  assert_ptr_equal(m->freelist, hak_base_raw(x.first));   // not split, its record as it was
  assert_int_equal(m->free_n, x.n + pad.n);
  assert_chain_record(x, pad.first);
  assert_last_chain_record(pad);
  hak_free(p);
  free_blocks_from(pad.n + want + y.n);
}

// A free list that an empty TLS list has room for becomes that list as it
// lies (tiny_refill.c slab_take_whole): one-block chains in an order no
// chain walk keeps, handed out in that order, none of them left on the slab.
static void test_a_refill_takes_a_whole_free_list_that_fits(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  uint32_t want = refill_want(), n = want + want / 2 + 7;
  assert_true(n <= empty_room());
  uint32_t used = slab_census_live(m);
  for (uint32_t i = 0; i < n; i++) {                 // blocks 0, 2, 4, ... then 1, 3, 5, ...
    size_t k = i < (n + 1) / 2 ? 2u * i : 2u * (i - (n + 1) / 2) + 1u;
    held_chain_t one = link_blocks(k, 1);
    tiny_free_local_box(m, one.first, one.last, 1);
  }
  assert_int_equal(m->free_n, n);
  hak_base_ptr_t head = hak_base_from_raw(m->freelist);
  void *p = hak_malloc(g_slab.size);
  assert_ptr_equal(p, hak_base_raw(head));
  assert_null(m->freelist);
  assert_int_equal(m->free_n, 0);
  assert_int_equal(tls_list_len(m->cls), n - 1);
  assert_int_equal(slab_census_live(m), used);   // out of the slab: the blocks its list gave a TLS list
  for (uint32_t i = n - 1; i-- > 0;) {               // the pushes' reverse order
    size_t k = i < (n + 1) / 2 ? 2u * i : 2u * (i - (n + 1) / 2) + 1u;
    assert_ptr_equal(hak_malloc(g_slab.size), g_slab.blocks[k]);
  }
  assert_true(tls_list_empty(m->cls));
  for (uint32_t i = 0; i < n; i++) hak_free(g_slab.blocks[i]);
  free_blocks_from(n);
}

static void test_a_refill_takes_a_chain_of_up_to_one_and_a_half_batches_whole(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  uint32_t want = refill_want();
  held_chain_t x = link_blocks(0, want + want / 2 - 2), y = link_blocks(x.n, 2);
  tiny_free_local_box(m, x.first, x.last, x.n);
  tiny_free_local_box(m, y.first, y.last, y.n);
  void *p = hak_malloc(g_slab.size);
  assert_ptr_equal(p, hak_base_raw(y.first));
  assert_int_equal(tls_list_len(m->cls), y.n + x.n - 1);
  assert_null(m->freelist);
  hak_free(p);
  free_blocks_from(x.n + y.n);
}

static void test_a_refill_splits_a_longer_chain_and_records_the_rest(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  uint32_t want = refill_want();
  held_chain_t x = link_blocks(0, 2 * want), y = link_blocks(x.n, 2);
  tiny_free_local_box(m, x.first, x.last, x.n);
  tiny_free_local_box(m, y.first, y.last, y.n);
  void *p = hak_malloc(g_slab.size);
  assert_ptr_equal(p, hak_base_raw(y.first));
  assert_int_equal(tls_list_len(m->cls), want - 1);       // y, then want - 2 blocks of x
  held_chain_t rest = {hak_base_from_raw(g_slab.blocks[want - 2]), x.last, want + 2};
  assert_ptr_equal(m->freelist, hak_base_raw(rest.first));
  assert_last_chain_record(rest);
  hak_free(p);
  free_blocks_from(x.n + y.n);
}

// A small class with two refills and no overflow since (the thread only
// takes it) takes a list of up to four times the room whole, its bound
// raised to fit (tiny_refill.c slab_take_whole); the bound goes back at the
// class's next overflow.
static void test_a_class_that_only_takes_takes_a_longer_list_whole(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  unsigned cls = m->cls;
  uint32_t want = refill_want(), room = empty_room(), cap = t_tls_cache.cap[cls];
  uint32_t n = room + want;                       // past the room, within 4x
  assert_true(n <= g_slab.n);
  held_chain_t x = link_blocks(0, n);
  tiny_free_local_box(m, x.first, x.last, x.n);
  t_heap_p->refill_streak[cls] = 2;
  void *p = hak_malloc(g_slab.size);
  assert_ptr_equal(p, hak_base_raw(x.first));
  assert_null(m->freelist);
  assert_int_equal(tls_list_len(cls), n - 1);
  assert_int_equal(t_tls_cache.cap[cls], n);       // raised to the list's length
  assert_int_equal(t_tls_cache.lists[cls].room, 1);
  for (uint32_t i = 1; i < n; i++) assert_ptr_equal(hak_malloc(g_slab.size), g_slab.blocks[i]);
  // Frees up to the raised bound, then one more: the overflow puts the bound
  // back and flushes the list down to it.
  for (uint32_t i = 1; i < n; i++) hak_free(g_slab.blocks[i]);
  hak_free(p);
  assert_int_equal(t_tls_cache.cap[cls], n);
  assert_int_equal(t_tls_cache.lists[cls].room, 0);
  void *q = hak_malloc(g_slab.size);
  hak_free(q);
  hak_free(g_slab.blocks[n]);
  assert_int_equal(t_tls_cache.cap[cls], cap);
  assert_int_equal(t_heap_p->refill_streak[cls], 0);
  assert_true(tls_list_len(cls) <= cap);
  assert_int_equal((uint32_t)t_tls_cache.lists[cls].room + tls_list_len(cls), cap);
  free_blocks_from(n + 1);
}

// The same list after an overflow of the class: longer than the room, walked.
static void test_a_class_that_overflowed_walks_a_list_longer_than_its_room(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  unsigned cls = m->cls;
  uint32_t want = refill_want(), room = empty_room();
  held_chain_t x = link_blocks(0, room + want);
  tiny_free_local_box(m, x.first, x.last, x.n);
  assert_int_equal(t_heap_p->refill_streak[cls], 0);
  void *p = hak_malloc(g_slab.size);
  assert_ptr_equal(p, hak_base_raw(x.first));
  assert_int_equal(tls_list_len(cls), want - 1);    // a batch split off the chain
  assert_int_equal(m->free_n, room);
  assert_int_equal(t_tls_cache.cap[cls], room);
  hak_free(p);
  free_blocks_from(x.n);
}

static void *push_chain(void *arg) {
  held_chain_t *c = arg;
  remote_free_push_chain(g_slab.m, c->first, c->last, c->n);
  return NULL;
}

static void test_a_drain_reads_each_pushed_chain_and_leads_the_last_to_the_free_list(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  held_chain_t local = link_blocks(0, 4), a = link_blocks(4, 3), b = link_blocks(7, 6);
  tiny_free_local_box(m, local.first, local.last, local.n);
  run_in_thread(push_chain, &a);
  run_in_thread(push_chain, &b);
  assert_ptr_equal(remote_word_first(atomic_load(&m->remote_head)), hak_base_raw(b.first));
  assert_chain_record(b, a.first);
  assert_chain_record(a, HAK_BASE_NULL);
  assert_int_equal(ss_remote_drain_to_freelist(m), 9);
  assert_int_equal(atomic_load(&m->remote_head), 0);
  assert_ptr_equal(m->freelist, hak_base_raw(b.first));
  assert_chain_record(b, a.first);
  assert_chain_record(a, local.first);
  assert_last_chain_record(local);
  assert_int_equal(m->free_n, 13);
  free_blocks_from(13);
}


// ---- tickets: stale remote lists taken back (remote_free_box.h) -----------

// Long enough for a remote list to read stale (REMOTE_STALE_STAMPS whole
// stamps past the one it was made in, whatever the coarse clock's tick).
static void wait_until_stale(void) { usleep((REMOTE_STALE_STAMPS + 2u) * REMOTE_STAMP_MS * 1000u); }

static uint64_t ticket_blocks_so_far(void) {
  hak_thread_counters_t tc;
  hak_counters_sum(&tc);
  return tc.ticket_blocks;
}

static int holds_ticket(unsigned cls) { return (int)(t_heap_p->ticket_classes >> cls & 1u); }

// What a freeing thread saw (the main thread owns the slab and sleeps: it
// neither allocates nor frees while the worker runs).
typedef struct ticket_run {
  int      wait;                 // let the list go stale before the second buffer
  uint32_t after_first, after_second, after_malloc;   // remote list lengths
  int      ticket_after_first, ticket_after_second;
  uint64_t taken;                // blocks the worker's refill took back (HAKMEM_STATS)
  void    *got;                  // its malloc
  slab_meta_t *got_slab;
} ticket_run_t;

// Two remote buffers' worth of the main thread's blocks freed (each goes
// home as one chain when full), then one malloc of their class.
static void *free_two_buffers_then_malloc(void *arg) {
  ticket_run_t *r = arg;
  unsigned cls = g_slab.m->cls;
  for (size_t i = 0; i < TINY_REMOTE_BUF_BLOCKS; i++) hak_free(g_slab.blocks[i]);
  r->after_first = remote_list_len(g_slab.m);
  r->ticket_after_first = holds_ticket(cls);
  if (r->wait) wait_until_stale();
  for (size_t i = TINY_REMOTE_BUF_BLOCKS; i < 2 * TINY_REMOTE_BUF_BLOCKS; i++) hak_free(g_slab.blocks[i]);
  r->after_second = remote_list_len(g_slab.m);
  r->ticket_after_second = holds_ticket(cls);
  uint64_t before = ticket_blocks_so_far();
  r->got = hak_malloc(g_slab.size);     // the thread's list of cls is empty: a refill
  r->taken = ticket_blocks_so_far() - before;
  r->after_malloc = remote_list_len(g_slab.m);
  r->got_slab = slab_of(r->got);
  hak_free(r->got);
  return NULL;
}

static ticket_run_t run_two_buffers(int wait) {
  assert_true(g_slab.n >= 2 * TINY_REMOTE_BUF_BLOCKS + 8);
  int saved = g_hak_config.free_batch;
  g_hak_config.free_batch = 0;          // each free goes through the remote buffer
  ticket_run_t r = {.wait = wait};
  run_in_thread(free_two_buffers_then_malloc, &r);
  g_hak_config.free_batch = saved;
  return r;
}

// Every block the worker freed is free again: on the remote list, on a
// list of this slab's or parked as a ticket; none lost, none twice.
static void assert_only_the_held_blocks_live(void) {
  hak_trim();   // parked tickets home
  assert_int_equal(tiny_parked_tickets(), 0);
  assert_int_equal(slab_census_live(g_slab.m), g_slab.n - 2 * TINY_REMOTE_BUF_BLOCKS);
}

static void test_the_chain_that_makes_a_remote_list_keeps_no_ticket(void **state) {
  (void)state;
  ticket_run_t r = run_two_buffers(1);
  assert_int_equal(r.after_first, TINY_REMOTE_BUF_BLOCKS);   // pushed whole, onto an empty list
  assert_false(r.ticket_after_first);
  assert_only_the_held_blocks_live();
  free_blocks_from(2 * TINY_REMOTE_BUF_BLOCKS);
}

static void test_a_chain_sent_to_a_stale_remote_list_keeps_a_ticket_back(void **state) {
  (void)state;
  ticket_run_t r = run_two_buffers(1);
  assert_true(r.ticket_after_second);
  assert_int_equal(r.after_second, 2 * TINY_REMOTE_BUF_BLOCKS - 1);
  assert_only_the_held_blocks_live();
  free_blocks_from(2 * TINY_REMOTE_BUF_BLOCKS);
}

static void test_the_next_refill_takes_the_ticket_and_a_batch_of_the_stale_list(void **state) {
  (void)state;
  ticket_run_t r = run_two_buffers(1);
  assert_ptr_equal(r.got_slab, g_slab.m);                    // the owner's block, not a new slab's
  assert_true(r.taken >= 2);                                  // the ticket and some of the list
  // What left the list: the blocks taken but the ticket (on the list no
  // more), and the next ticket kept back.
  assert_int_equal(r.after_second - r.after_malloc, r.taken);
  assert_only_the_held_blocks_live();
  free_blocks_from(2 * TINY_REMOTE_BUF_BLOCKS);
}

static void test_a_remote_list_that_is_not_stale_keeps_its_blocks(void **state) {
  (void)state;
  // The same frees with no wait: the list is younger than REMOTE_STALE_STAMPS
  // unless the machine stalled this thread that long (then it is stale).
  ticket_run_t r = run_two_buffers(0);
  if (!r.ticket_after_second) {
    assert_int_equal(r.after_second, 2 * TINY_REMOTE_BUF_BLOCKS);
    assert_int_equal(r.taken, 0);
    assert_ptr_not_equal(r.got_slab, g_slab.m);
  }
  assert_only_the_held_blocks_live();
  free_blocks_from(2 * TINY_REMOTE_BUF_BLOCKS);
}

// A thread that exits with a ticket parks it (it cannot keep it), and the
// next thread's refill of the class takes it.
static void *malloc_one_of_the_class(void *arg) {
  ticket_run_t *r = arg;
  uint64_t before = ticket_blocks_so_far();
  r->got = hak_malloc(g_slab.size);
  r->taken = ticket_blocks_so_far() - before;
  r->got_slab = slab_of(r->got);
  hak_free(r->got);
  return NULL;
}

static void test_an_exiting_thread_parks_its_ticket_for_the_next_refill_of_the_class(void **state) {
  (void)state;
  ticket_run_t r = run_two_buffers(1);
  assert_ptr_equal(r.got_slab, g_slab.m);
  assert_true(r.after_malloc > 0);          // the list not used up: the worker held the next ticket
  assert_int_equal(tiny_parked_tickets(), 1);
  ticket_run_t next = {0};
  run_in_thread(malloc_one_of_the_class, &next);
  assert_ptr_equal(next.got_slab, g_slab.m);
  assert_true(next.taken >= 2);
  assert_only_the_held_blocks_live();
  free_blocks_from(2 * TINY_REMOTE_BUF_BLOCKS);
}

#if HAK_DEBUG
// A ticket parked at a thread's exit (flush_hold_ticket, TICKETS_PARK) is
// any thread's from the moment it is parked: a refill or a trim may take it
// and write its link at once. The exiting thread read that link after
// parking, to go on with the rest of its chain, so a take in between sent
// the rest home from whatever the taker had written there (ThreadSanitizer
// in park_race: the exit's read against a trim's write, ticket_home). The
// hook takes the ticket home right there, as a trim would.
static uint32_t g_parked_taken;
static void take_the_parked_ticket_home(void) {
  g_parked_taken += tiny_parked_tickets();
  tiny_parked_tickets_home();
}

#define FEW_MORE 8u
// A remote buffer's worth of the main thread's blocks home (the list they
// make is stale after the wait), then a few more, which wait in the buffer
// until this thread's exit flushes them: a chain to a stale list, whose
// first block the exit parks.
static void *free_a_buffer_then_a_few_and_exit(void *arg) {
  (void)arg;
  for (size_t i = 0; i < TINY_REMOTE_BUF_BLOCKS; i++) hak_free(g_slab.blocks[i]);
  wait_until_stale();
  for (size_t i = TINY_REMOTE_BUF_BLOCKS; i < TINY_REMOTE_BUF_BLOCKS + FEW_MORE; i++) hak_free(g_slab.blocks[i]);
  return NULL;
}

static void test_a_ticket_taken_the_moment_it_is_parked_loses_no_block_of_its_chain(void **state) {
  (void)state;
  size_t freed = TINY_REMOTE_BUF_BLOCKS + FEW_MORE;
  assert_true(g_slab.n >= freed + 8);
  hak_trim();                           // no ticket parked before
  int saved = g_hak_config.free_batch;
  g_hak_config.free_batch = 0;          // each free goes through the remote buffer
  g_parked_taken = 0;
  g_ticket_parked_hook = take_the_parked_ticket_home;
  run_in_thread(free_a_buffer_then_a_few_and_exit, NULL);
  g_ticket_parked_hook = NULL;
  g_hak_config.free_batch = saved;
  assert_int_equal(g_parked_taken, 1);  // the exit parked one, and it was taken at once
  // Every block the worker freed is free: none lost, none listed twice.
  hak_trim();
  assert_int_equal(tiny_parked_tickets(), 0);
  assert_int_equal(slab_census_live(g_slab.m), g_slab.n - freed);
  free_blocks_from(freed);
}
#endif

// ss_remote_take itself: chains of several pushers, split after `max`.
static void test_a_take_splits_the_remote_list_after_max_and_keeps_the_next_block(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  held_chain_t a = link_blocks(0, 7), b = link_blocks(7, 9), c = link_blocks(16, 5);
  remote_free_push_chain(m, a.first, a.last, a.n);
  remote_free_push_chain(m, b.first, b.last, b.n);
  remote_free_push_chain(m, c.first, c.last, c.n);   // the list: c, b, a
  uint32_t live = slab_census_live(m);
  hak_base_ptr_t first, last, next;
  assert_int_equal(ss_remote_take(m, 8, &first, &last, &next), 8);
  // c whole, then b's first three; plain links (the 16-byte class's chain
  // records given back their links), the next ticket b's fourth.
  hak_base_ptr_t b_ = first;
  for (int i = 1; i < 8; i++) b_ = block_next(b_);
  assert_ptr_equal(hak_base_raw(b_), hak_base_raw(last));
  assert_ptr_equal(hak_base_raw(first), hak_base_raw(c.first));
  assert_ptr_equal(hak_base_raw(next), g_slab.blocks[7 + 3]);
  assert_int_equal(slab_census_live(m), live + 9);
  assert_int_equal(remote_list_len(m), 21 - 9);
  // The rest went back as one chain the drain reads.
  assert_int_equal(ss_remote_drain_to_freelist(m), 21 - 9);
  // The owner's free list takes the taken ones back, and the ticket.
  block_set_next(last, next);
  assert_false(tiny_free_local_box(m, first, next, 9));
  assert_int_equal(slab_census_live(m), g_slab.n - 21);
  free_blocks_from(21);
}

static void test_a_take_of_more_than_the_list_takes_it_whole_with_no_next(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  held_chain_t a = link_blocks(0, 6);
  remote_free_push_chain(m, a.first, a.last, a.n);
  hak_base_ptr_t first, last, next;
  assert_int_equal(ss_remote_take(m, 50, &first, &last, &next), 6);
  assert_true(hak_base_is_null(next));
  assert_ptr_equal(hak_base_raw(first), hak_base_raw(a.first));
  assert_ptr_equal(hak_base_raw(last), hak_base_raw(a.last));
  assert_int_equal(atomic_load(&m->remote_head), 0);
  assert_false(tiny_free_local_box(m, first, last, 6));
  assert_int_equal(slab_census_live(m), g_slab.n - 6);
  free_blocks_from(6);
}

// A batch freed into a slab its owner keeps and does not wait on costs the
// freer one CAS (issue 9, item 3): the remote list's word counts the blocks,
// `used` stays, the slab's live count drops at once, and the owner's drain
// moves them onto its free list without changing `used`. (Before, each push
// lowered `used` with a second atomic and the drain raised it again.)
static void test_a_batch_freed_into_an_owned_slab_is_counted_on_its_list_and_leaves_used(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  assert_int_equal(m->where, SLAB_IN_CURRENT);
  assert_false(atomic_load(&m->remote_head) & REMOTE_ATTEND);
  uint32_t used = atomic_load(&m->used);
  held_chain_t a = link_blocks(0, 5), b = link_blocks(5, 3);
  run_in_thread(push_chain, &a);
  run_in_thread(push_chain, &b);
  uintptr_t w = atomic_load(&m->remote_head);
  assert_ptr_equal(remote_word_first(w), hak_base_raw(b.first));
  assert_int_equal(remote_word_counted(w), 8);
  assert_int_equal(atomic_load(&m->used), used);
  assert_int_equal(slab_live(m), g_slab.n - 8);
  assert_int_equal(slab_census_live(m), g_slab.n - 8);
  assert_int_equal(ss_remote_drain_to_freelist(m), 8);
  assert_int_equal(atomic_load(&m->remote_head), 0);
  assert_int_equal(atomic_load(&m->used), used);
  assert_int_equal(slab_free_count(m), 8);
  assert_int_equal(slab_live(m), g_slab.n - 8);
  free_blocks_from(8);
}

// A slab whose every block came back through its remote list, counted there,
// is EMPTY to its owner before any drain: the owner's last local free finds
// it so (tiny_free_local_box), as when the remote frees lowered `used`.
static void test_an_owned_slab_emptied_through_its_counted_remote_list_is_empty_to_its_owner(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  held_chain_t a = link_blocks(0, (size_t)g_slab.n - 1);
  run_in_thread(push_chain, &a);
  assert_int_equal(slab_live(m), 1);
  hak_base_ptr_t last = hak_user_to_base(hak_user_from_raw(g_slab.blocks[g_slab.n - 1]));
  block_set_free(last);
  assert_true(tiny_free_local_box(m, last, last, 1));
  assert_int_equal(slab_live(m), 0);
  assert_int_equal(ss_remote_drain_to_freelist(m), g_slab.n - 1);
  assert_int_equal(slab_free_count(m), g_slab.n);
  assert_int_equal(atomic_load(&m->used), g_slab.n);
  g_slab.n = 0;   // every block is on the free list: nothing left to free
}

static void *free_blocks_of_g_slab_from(void *arg) {
  free_blocks_from((size_t)(uintptr_t)arg);
  return NULL;
}

// A slab given up (shared_pool_detach_slab) while its remote list holds
// blocks the word counts: they leave `used` with the free list's, the word
// asks for attention from then on, and the remote frees that follow lower
// `used` themselves, the last one recycling the slab.
static void test_a_slab_given_up_with_counted_remote_blocks_is_recycled_by_the_frees_after(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  unsigned cls = m->cls;
  held_chain_t a = link_blocks(0, 6);
  run_in_thread(push_chain, &a);
  assert_int_equal(remote_word_counted(atomic_load(&m->remote_head)), 6);
  t_heap_p->cur[cls] = NULL;
  m->where = SLAB_IN_NONE;
  shared_pool_detach_slab(m);
  assert_int_equal(slab_state(m), SLAB_LISTED);          // blocks to give: on the abandoned stack
  uintptr_t w = atomic_load(&m->remote_head);
  assert_true(w & REMOTE_ATTEND);
  assert_int_equal(remote_word_counted(w), 0);
  assert_ptr_equal(remote_word_first(w), hak_base_raw(a.first));
  assert_int_equal(atomic_load(&m->used), g_slab.n - 6);  // the live blocks alone
  run_in_thread(free_blocks_of_g_slab_from, (void *)(uintptr_t)6);
  assert_true(!ss_registry_contains(m) || slab_state(m) == SLAB_FREE);
  g_slab.n = 0;
}

// A full slab its owner waits on (armed) asks for attention: a batch freed
// into it lowers `used` and wakes the owner, and once the owner takes it back
// from its wake list, pushes count on the list again.
static void test_a_full_slab_its_owner_waits_on_is_woken_and_then_counts_its_pushes_again(void **state) {
  (void)state;
  slab_meta_t *m = g_slab.m;
  unsigned cls = m->cls;
  tiny_heap_retire_current(t_heap_p, cls);
  assert_int_equal(m->where, SLAB_IN_FULL);
  assert_int_equal(atomic_load(&m->notify), SLAB_NOTIFY_ARMED);
  assert_true(atomic_load(&m->remote_head) & REMOTE_ATTEND);
  uint32_t used = atomic_load(&m->used);
  held_chain_t a = link_blocks(0, 4), b = link_blocks(4, 2), c = link_blocks(6, 3);
  run_in_thread(push_chain, &a);
  assert_int_equal(atomic_load(&m->notify), SLAB_NOTIFY_NOTIFIED);
  assert_int_equal(remote_word_counted(atomic_load(&m->remote_head)), 0);
  assert_int_equal(atomic_load(&m->used), used - 4);
  // Woken: the word asks no more attention, before the owner looks.
  assert_false(atomic_load(&m->remote_head) & REMOTE_ATTEND);
  run_in_thread(push_chain, &b);
  assert_int_equal(remote_word_counted(atomic_load(&m->remote_head)), 2);
  assert_int_equal(atomic_load(&m->used), used - 4);
  assert_ptr_equal(tiny_heap_partial_with_free(t_heap_p, cls), m);   // takes the wake list
  assert_int_equal(m->where, SLAB_IN_PARTIAL);
  assert_int_equal(atomic_load(&m->notify), SLAB_NOTIFY_IDLE);
  assert_false(atomic_load(&m->remote_head) & REMOTE_ATTEND);
  run_in_thread(push_chain, &c);
  assert_int_equal(remote_word_counted(atomic_load(&m->remote_head)), 5);
  assert_int_equal(atomic_load(&m->used), used - 4);
  assert_int_equal(slab_census_live(m), g_slab.n - 9);
  free_blocks_from(9);
}

#define SLAB_TEST(f, s) cmocka_unit_test_setup_teardown(f, s, teardown_slab)

int main(void) {
  const struct CMUnitTest tests[] = {
    SLAB_TEST(test_setup_hands_out_every_block_of_one_slab, setup_slab_of_48),
    SLAB_TEST(test_block_freed_by_another_thread_lands_on_the_slab_remote_list, setup_slab_of_48),
    SLAB_TEST(test_remote_free_drops_the_slab_used_count, setup_slab_of_48),
    SLAB_TEST(test_remote_free_is_counted_in_the_stats, setup_slab_of_48),
    SLAB_TEST(test_remote_drain_moves_the_remote_list_onto_the_free_list, setup_slab_of_48),
    SLAB_TEST(test_remote_drain_of_an_empty_remote_list_moves_nothing, setup_slab_of_48),
    SLAB_TEST(test_a_batch_freed_into_an_owned_slab_is_counted_on_its_list_and_leaves_used, setup_slab_of_48),
    SLAB_TEST(test_an_owned_slab_emptied_through_its_counted_remote_list_is_empty_to_its_owner, setup_slab_of_48),
    SLAB_TEST(test_a_slab_given_up_with_counted_remote_blocks_is_recycled_by_the_frees_after, setup_slab_of_48),
    SLAB_TEST(test_a_full_slab_its_owner_waits_on_is_woken_and_then_counts_its_pushes_again, setup_slab_of_48),
    SLAB_TEST(test_owner_gets_a_remotely_freed_block_back_on_refill, setup_slab_of_48),
    SLAB_TEST(test_eight_threads_freeing_at_once_lose_no_block_on_the_remote_list, setup_slab_of_16),
    SLAB_TEST(test_eight_threads_freeing_at_once_bring_the_used_count_to_zero, setup_slab_of_16),
    SLAB_TEST(test_owner_reallocates_every_block_eight_threads_freed, setup_slab_of_16),
    SLAB_TEST(test_remote_buffer_sends_its_blocks_home_when_full, setup_slab_of_16),
    SLAB_TEST(test_remote_buffer_goes_home_at_thread_exit, setup_slab_of_48),
    SLAB_TEST(test_owner_reallocates_every_block_eight_threads_freed, setup_slab_of_48),
    SLAB_TEST(test_a_chain_freed_home_records_its_last_block_its_length_and_the_chain_after_it, setup_slab_of_48),
    SLAB_TEST(test_a_refill_takes_a_chain_whole_and_leaves_the_next_when_half_a_batch_is_taken, setup_slab_of_48),
    SLAB_TEST(test_a_refill_takes_a_chain_of_up_to_one_and_a_half_batches_whole, setup_slab_of_48),
    SLAB_TEST(test_a_refill_splits_a_longer_chain_and_records_the_rest, setup_slab_of_48),
    SLAB_TEST(test_a_refill_takes_a_whole_free_list_that_fits, setup_slab_of_48),
    SLAB_TEST(test_a_class_that_only_takes_takes_a_longer_list_whole, setup_slab_of_48),
    SLAB_TEST(test_a_class_that_overflowed_walks_a_list_longer_than_its_room, setup_slab_of_48),
    SLAB_TEST(test_a_drain_reads_each_pushed_chain_and_leads_the_last_to_the_free_list, setup_slab_of_48),
    // The 16-byte class keeps its records in the first block's link word.
    SLAB_TEST(test_a_chain_freed_home_records_its_last_block_its_length_and_the_chain_after_it, setup_slab_of_16),
    SLAB_TEST(test_a_refill_takes_a_chain_whole_and_leaves_the_next_when_half_a_batch_is_taken, setup_slab_of_16),
    SLAB_TEST(test_a_refill_takes_a_chain_of_up_to_one_and_a_half_batches_whole, setup_slab_of_16),
    SLAB_TEST(test_a_refill_splits_a_longer_chain_and_records_the_rest, setup_slab_of_16),
    SLAB_TEST(test_a_drain_reads_each_pushed_chain_and_leads_the_last_to_the_free_list, setup_slab_of_16),
    SLAB_TEST(test_the_chain_that_makes_a_remote_list_keeps_no_ticket, setup_slab_of_48),
    SLAB_TEST(test_a_chain_sent_to_a_stale_remote_list_keeps_a_ticket_back, setup_slab_of_48),
    SLAB_TEST(test_the_next_refill_takes_the_ticket_and_a_batch_of_the_stale_list, setup_slab_of_48),
    SLAB_TEST(test_the_next_refill_takes_the_ticket_and_a_batch_of_the_stale_list, setup_slab_of_16),
    SLAB_TEST(test_a_remote_list_that_is_not_stale_keeps_its_blocks, setup_slab_of_48),
    SLAB_TEST(test_an_exiting_thread_parks_its_ticket_for_the_next_refill_of_the_class, setup_slab_of_48),
    SLAB_TEST(test_an_exiting_thread_parks_its_ticket_for_the_next_refill_of_the_class, setup_slab_of_16),
#if HAK_DEBUG
    SLAB_TEST(test_a_ticket_taken_the_moment_it_is_parked_loses_no_block_of_its_chain, setup_slab_of_48),
    SLAB_TEST(test_a_ticket_taken_the_moment_it_is_parked_loses_no_block_of_its_chain, setup_slab_of_16),
#endif
    SLAB_TEST(test_a_take_splits_the_remote_list_after_max_and_keeps_the_next_block, setup_slab_of_48),
    SLAB_TEST(test_a_take_splits_the_remote_list_after_max_and_keeps_the_next_block, setup_slab_of_16),
    SLAB_TEST(test_a_take_of_more_than_the_list_takes_it_whole_with_no_next, setup_slab_of_16),
  };
  return cmocka_run_group_tests_name("remote_free", tests, NULL, NULL);
}
