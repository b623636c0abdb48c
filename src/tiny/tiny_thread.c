// tiny_thread.c — thread set-up and tear-down (see tiny_thread.h).
#include "tiny/tiny_thread.h"

#include <pthread.h>
#include <string.h>

#include "config/config.h"
#include "os/os.h"
#include "stats/stats.h"
#include "superslab/ss_registry.h"
#include "tiny/free_batch_box.h"
#include "tiny/hardened_box.h"
#include "tiny/thread_record.h"
#include "tiny/tiny_refill.h"

static pthread_key_t g_thread_key;
static _Atomic uint32_t g_threads_live;   // LIVE threads (set up, not torn down)
// Whether this thread is in g_threads_live (not after a set-up past its exit hook).
static __thread uint8_t t_counted_live __attribute__((tls_model("initial-exec")));

uint32_t tiny_threads_live(void) { return atomic_load_explicit(&g_threads_live, memory_order_relaxed); }

unsigned tiny_cache_share(void) {
  uint32_t n = tiny_threads_live();
  return n <= TINY_CACHE_FULL_THREADS ? 0u : n <= 2u * TINY_CACHE_FULL_THREADS ? 1u : 2u;
}

void tiny_cache_rescale(void) {
  tls_cache_t *tc = &t_tls_cache;
  unsigned share = tiny_cache_share();
  if (HAK_LIKELY(share == tc->cap_share) || t_thread_status != THREAD_LIVE) return;
  tc->cap_share = (uint8_t)share;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    tls_set_cap(tc, c, tls_class_cap(tc, c, share));
    if (tc->lists[c].room < 0) tiny_flush(c, (uint32_t)-tc->lists[c].room);
  }
}

// ---- parked heaps ------------------------------------------------------------
//
// A thread's exit used to give everything back: each cached block to its
// slab, each slab to the Shared Pool (abandoned, or FREE when empty), its
// counters summed, its record cleared; and the next thread's first malloc of
// each class then adopted or acquired a slab again. A thread that starts,
// takes a few blocks and exits (churn -c 16 -k 16: 16 blocks of 16-1024 B)
// spent 27.7 k instructions on it under callgrind (9.5 k parked), glibc's
// malloc ~12 k on the whole thread (its next thread takes the arena as it
// was). Now an
// exiting thread whose heap holds little (THREAD_PARK_BYTES: carved by its
// slabs and cached on its lists) parks it whole, up to
// HAKMEM_PARK_THREADS heaps: its record keeps its slabs (their owner id is
// the heap's, tiny_heap.h, so a remote free or a wake-up reaches it as
// before), its lists (copied out of TLS) and its counters (still on the
// live list), and the next thread to start takes the latest parked record
// and goes on where the other left off. Only what must not wait goes first:
// the held blocks (to the lists), other threads' blocks in the remote buffer,
// a list of a class under a cache line that holds other threads' blocks
// (list_holds_foreign), the hand-over chains (home), and in the hardened
// build the quarantine (below). Other threads' larger blocks on the lists
// stay: the next thread hands them out, and they count in the bound.
// A heap parked for THREAD_PARK_DELAYS purge delays (1 s) is given back
// whole by the next thread that starts or looks at its idle classes (as a
// class a thread stopped using keeps its blocks that long), every one by
// malloc_trim: a program that stops starting threads does not keep them.
#ifndef THREAD_PARK_BYTES
#define THREAD_PARK_BYTES (1u << 20)
#endif
#define THREAD_PARK_DELAYS 10u

// A parked record's lists and bounds into the calling thread's TLS, with
// id `self` (the heap's) and its owner keys.
static void lists_restore(tls_cache_t *tc, const tls_cache_t *parked, uintptr_t self) {
  memcpy(tc, parked, sizeof *tc);
  tc->self = self;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) tc->lists[c].owner_key = tls_owner_key_of_class(tc, c);
}

static size_t slab_carved_bytes(const slab_meta_t *m) { return (size_t)(slab_carve(m) - m->base); }

// Whether the calling thread's heap holds THREAD_PARK_BYTES or less: what
// its slabs carved (resident, most of it) and what its lists cache (blocks of
// other threads' slabs too). Stops counting past the bound.
static int heap_small(const tls_cache_t *tc, const tiny_heap_t *h) {
  size_t bytes = 0;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) bytes += (size_t)tls_cached(tc, c) * g_size_class[c].size;
  for (uint64_t bits = h->refilled; bits != 0 && bytes <= THREAD_PARK_BYTES; bits &= bits - 1) {
    unsigned c = (unsigned)__builtin_ctzll(bits);
    if (h->cur[c] != NULL) bytes += slab_carved_bytes(h->cur[c]);
    for (const slab_meta_t *m = h->partial[c]; m != NULL && bytes <= THREAD_PARK_BYTES; m = m->list_next)
      bytes += slab_carved_bytes(m);
    for (const slab_meta_t *m = h->full[c]; m != NULL && bytes <= THREAD_PARK_BYTES; m = m->list_next)
      bytes += slab_carved_bytes(m);
  }
  return bytes <= THREAD_PARK_BYTES;
}

// Whether the list of cls (a class under a cache line) holds blocks that
// free would have sent home (tiny_block_stays_here: other threads' blocks
// under a cache line), by its first PARK_FOREIGN_PROBE blocks. A batching thread keeps
// the small blocks it frees of other threads on its own list (their
// owners' lines are elsewhere by then); parked, such a list kept up to a
// bound of them counted in use in their slabs: a thread that freed another's
// structure at random (1 M blocks of 32 B) and exited pinned ~256 of its
// slabs, each with a random free list the owner's next build walked (0.10-0.15
// s against 0.05 with the list sent home). A list of the thread's own blocks
// stays for the next thread (thread churn: probing costs 1-2% of a start and
// exit in instructions; a whole flush at every park, 4-10%).
#define PARK_FOREIGN_PROBE 8u
static int list_holds_foreign(const tls_cache_t *tc, unsigned cls, uintptr_t self) {
  hak_base_ptr_t b = tc->lists[cls].head;
  for (unsigned i = 0; i < PARK_FOREIGN_PROBE && !tls_sll_is_end(b); i++) {
    if (!tiny_block_stays_here(ss_registry_slab_of(hak_base_raw(b)), self)) return 1;   // free's own rule
    hak_base_ptr_t next = block_next(b);
    if (!block_link_plausible(next)) return 1;   // (the flush reports it)
    b = next;
  }
  return 0;
}

// The exiting thread's heap into its record, to be parked (1), or 0 when it
// is to be given back as before (too big, or HAKMEM_PARK_THREADS parked).
// In the hardened build the quarantined blocks of other heaps go home and
// its own onto its lists: a block another thread freed and then wrote is
// found by its owner's next malloc of it (misuse case
// quarantine_of_free_only_thread_drains, faults' uaf_poisoned_remote_list),
// where a parked list would keep it unchecked until a thread took the heap.
static int thread_park(void) {
  tls_cache_t *tc = &t_tls_cache;
  tiny_heap_t *h = t_heap_p;
  if (g_hak_config.park_threads == 0 || !heap_small(tc, h) || !thread_record_park_reserve(g_hak_config.park_threads))
    return 0;
  if (t_free_batch_active) free_batch_set_active(0);   // the held blocks onto the lists
#if HAK_HARDENED
  hardened_quarantine_drain_home();
#endif
  for (unsigned c = 0; c < TINY_REMOTE_CLASSES; c++) tiny_flush_remote(c);
  for (unsigned c = 0; c < TINY_REMOTE_CLASSES; c++)
    if (list_holds_foreign(tc, c, thread_self_id())) tiny_flush(c, UINT32_MAX);
  tiny_handover_send_all();
  thread_record_t *r = thread_record_of(h);
  memcpy(&r->parked, tc, sizeof r->parked);
  r->parked_ms = os_now_ms();
  // The counters stay live while the heap waits: its lists as they are now,
  // not as at the last slow path (a thread's last frees, onto its lists,
  // were counted as blocks the program held: 128 of 1 000 freed 64 B blocks
  // in the statistics; a helper's probe).
  if (hak_counters_own())
    for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) hak_counters()->cls[c].cached = tls_cached(tc, c);
  return 1;
}

// Give parked record r back whole, as its thread's exit would have: the
// calling (LIVE) thread lends it its TLS lists, its heap pointer and its
// counters' for the flush and the abandonment, then takes its own back as
// they were (owner keys included: a batching thread's are not its id's).
// Nothing in between frees or allocates for the caller (a malloc from a
// signal handler then would be one too many anyway).
static void thread_parked_release(thread_record_t *r) {
  tls_cache_t *tc = &t_tls_cache;
  tls_cache_t own;
  memcpy(&own, tc, sizeof own);
  tiny_heap_t *h = t_heap_p;
  hak_thread_counters_t *counters = t_counters_p;
  t_heap_p = &r->heap;
  t_counters_p = &r->counters;
  lists_restore(tc, &r->parked, (uintptr_t)&r->heap);
  unsigned mode = tiny_tickets_mode(TICKETS_PARK);   // its thread is gone: its tickets wait for another
  tiny_flush_all();
  tiny_tickets_mode(mode);
  tiny_heap_abandon_all(&r->heap);
  memcpy(tc, &own, sizeof own);
  t_heap_p = h;
  t_counters_p = counters;
  hak_counters_detach_record(&r->counters);
  thread_record_give_back(r);
}

void thread_parked_expire(int all) {
  if (t_thread_status != THREAD_LIVE || thread_records_parked() == 0) return;
  uint64_t before = UINT64_MAX;
  if (!all) {
    uint64_t now = os_now_ms(), delay = (uint64_t)g_hak_config.purge_delay_ms * THREAD_PARK_DELAYS;
    if (now < delay) return;
    before = now - delay;
  }
  thread_record_t *r;
  while ((r = thread_record_take_parked_since(before)) != NULL) thread_parked_release(r);
}

static void thread_key_destructor(void *value) {
  (void)value;
  if (t_thread_status == THREAD_LIVE) thread_teardown();
}

void thread_teardown(void) {
#if HAK_DEBUG
  // Each list as long as its count says: an exit skips a class whose count
  // reads 0 (flush_class), so a list longer than that would be lost here.
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) tls_sll_validate(c);
#endif
  // The exchange keeps a chain per live thread and class at most: the
  // chains over the count of those that stay go home (before this thread's
  // slabs are given up, so its own blocks land on its own free lists).
  tiny_exchange_trim(tiny_threads_live() - (t_counted_live ? 1u : 0u));
  tiny_tickets_mode(TICKETS_PARK);   // what it finds stale waits for another thread's refill
  int parked = thread_park();
  if (!parked) thread_release_all();
  // Off for good: a flush on the way (the hardened build's quarantine drain,
  // after thread_release_all turned it off) may have started it again, and
  // past here the batch has no record to live in (t_free_batch_p NULL): a
  // later free (glibc's own, freeing cached stacks' TLS at the thread's end)
  // held its block there (python3's threads and node under the hardened
  // library, in `make test`).
  if (t_free_batch_active) free_batch_set_active(0);
  tiny_tickets_mode(TICKETS_HOME);
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    t_tls_cache.lists[c].head = TLS_SLL_END;
    t_tls_cache.lists[c].room = 0;
    t_tls_cache.lists[c].owner_key = 0;
  }
  t_tls_cache.self = 0;
  t_thread_status = THREAD_DONE;
  // The thread that leaves one behind sends the whole exchange home (after
  // its decrement, so a thread that left at the same time put its last
  // chains before): the one that stays has nobody to exchange with and
  // finds the blocks in its own slabs or in the gone threads' it adopts (a
  // chain per class kept after prodcons -t 8 of 1-32 KiB: 1 234 blocks
  // holding 57 MB of the producers' abandoned slabs resident).
  if (t_counted_live && atomic_fetch_sub_explicit(&g_threads_live, 1, memory_order_relaxed) == 2u)
    tiny_flush_exchange();
  t_counted_live = 0;
  thread_record_t *r = thread_record_of(t_heap_p);
  t_heap_p = NULL;
  t_free_batch_p = NULL;   // (drained: not batching past thread_park or thread_release_all)
  if (parked) {
    t_counters_p = &g_counters_unowned;   // its counters stay linked, with the heap
    thread_record_park(r);
  } else {
    hak_counters_detach();
    thread_record_give_back(r);   // no slab names its heap any more
  }
}

void thread_key_init(void) { pthread_key_create(&g_thread_key, thread_key_destructor); }

// The batch of a thread taking record r, zeroed as a new thread's was when
// it was all static TLS (free_batch_box.h): the default build's in the
// record's heap, the hardened build's still in the TLS (tiny_heap.h).
#if HAK_HARDENED
static __thread free_batch_t t_free_batch_tls __attribute__((tls_model("initial-exec")));
#endif
static free_batch_t *thread_free_batch(thread_record_t *r) {
#if HAK_HARDENED
  (void)r;
  free_batch_t *fb = &t_free_batch_tls;
#else
  free_batch_t *fb = &r->heap.batch;
#endif
  memset(fb, 0, sizeof *fb);
  return fb;
}

int thread_setup(void) {
  if (t_thread_status == THREAD_LIVE) return 1;
  int again = t_thread_status == THREAD_DONE;
  thread_record_t *r = thread_record_take_parked();
  int warm = r != NULL;   // a parked heap, its slabs and lists as its thread left them
  if (!warm) r = thread_record_take();
  if (HAK_UNLIKELY(r == NULL)) return 0;   // no memory for it: the thread stays as it was
  // Lists are empty here: a thread that is not LIVE has room 0, so nothing
  // was pushed since it started or since its lists were flushed at teardown.
  tls_cache_t *tc = &t_tls_cache;
  if (!again) {
    atomic_fetch_add_explicit(&g_threads_live, 1, memory_order_relaxed);
    t_counted_live = 1;
  }
  t_heap_p = &r->heap;
  t_free_batch_p = thread_free_batch(r);
  // The idle classes' first look a look's time from now (idle_class_box.h
  // note_slow_path), not at the first slow path: a new thread has no class
  // to give back (churn -c 16 -k 16: 0.9 k instructions a thread).
  r->heap.left_look_ms = os_now_ms();
  if (warm) {
    lists_restore(tc, &r->parked, thread_self_id());
  } else {
    unsigned share = tiny_cache_share();
    tc->cap_share = (uint8_t)share;
    tc->self = thread_self_id();
    for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
      HAK_ASSERT(tls_sll_empty(tc, c));
      // A medium class's bound starts shrunk, as a consumer's ends up
      // (tls_sll_box.h, cap_shift), and doubles back at each refill: a
      // thread that only frees a class holds an eighth of its 512 KiB from
      // the start. Threads that only free blocks of a dozen medium classes
      // other threads allocate (a pool of consumers) each held up to the
      // whole bound of each before their overflows shrank it: 1 producer
      // and 32 consumers of 4-32 KiB peaked at 117 MB (tcmalloc 18.6,
      // mimalloc 14.3), now 21; the helper's probe of 16 such consumers 98
      // -> 17 MB. A thread that takes the class is back at its full bound
      // after TLS_SHRINK_MAX refills (ws-medium level, 11 pinned rounds).
      tc->cap_shift[c] = g_size_class[c].size > HAK_TINY_MAX ? TLS_SHRINK_MAX : 0;
      tc->overflows[c] = 0;
      tc->cap_grow[c] = 0;
      tc->local_overflow[c] = 0;
      tc->cap[c] = tls_class_cap(tc, c, share);
      tc->lists[c].room = tc->cap[c];
      tc->lists[c].owner_key = tls_owner_key_of_class(tc, c);
    }
  }
  t_thread_status = THREAD_LIVE;
  // Also for a thread set up again after its exit hook (a malloc from a
  // later key destructor): the record outlives the thread, so the live list
  // never points into a gone thread's memory, and the caller's teardown
  // sums and unlinks it again. A parked record's counters are on it still.
  if (warm) t_counters_p = &r->counters;
  else hak_counters_attach(&r->counters);
  // May allocate for keys past the first 32: we are LIVE already. (Set up
  // again past the exit hook, the caller tears the thread down itself.)
  if (!again) pthread_setspecific(g_thread_key, (void *)1);
  if (warm) tiny_cache_rescale();   // its bounds were for the threads live then
  thread_parked_expire(0);
  return 1;
}

void thread_release_all(void) {
  if (t_free_batch_active) free_batch_set_active(0);   // the held blocks go home with the rest
#if HAK_HARDENED
  hardened_quarantine_drain();   // quarantined blocks go home with the rest
#endif
  tiny_flush_all();
  for (unsigned c = 0; c < TINY_REMOTE_CLASSES; c++) tiny_flush_remote(c);
  shared_pool_maybe_purge();
  tiny_heap_abandon_all(t_heap_p);
#if HAK_DEBUG
  tiny_heap_validate(t_heap_p);
#endif
}

void thread_fork_child(void) {
  // The other threads' heaps are gone with them; their slabs stay owned by
  // ids nobody has (as after any fork, their memory is not the child's to use).
  if (t_heap_p != NULL) tiny_heap_fork_child(t_heap_p);
  thread_record_fork_child();
  atomic_store_explicit(&g_threads_live, t_counted_live, memory_order_relaxed);   // this thread alone
  hak_counters_fork_child();
}
