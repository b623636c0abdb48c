// tiny_flush.c — the flush of the TLS lists (see tiny_flush.h): an
// overflowing list's batch, a whole class at an exit, trim or idle look, the
// remote buffers, the hand-over chains and the class exchange, each block
// sent home gathered per slab.
#include "tiny/tiny_flush.h"

#include "shared_pool/shared_pool.h"
#include "stats/stats.h"
#include "superslab/ss_registry.h"
#include "tiny/free_batch_box.h"
#include "tiny/idle_class_box.h"
#include "tiny/remote_free_box.h"
#include "tiny/slab_validate.h"
#include "tiny/ticket_box.h"
#include "tiny/tiny_free_local_box.h"
#include "tiny/tiny_refill.h"
#include "tiny/tiny_thread.h"
#include "tiny/transfer_box.h"

// A flush gathers the blocks it gives back to other threads' slabs into one
// chain per destination slab, in this many ways (snmalloc's remote cache;
// flush_ways_t), FLUSH_ASSOC to a set: a chain goes back with one CAS and
// one atomic on the slab's live count. (The thread's own slabs took ways
// too until the forty-fifth session: flush_deliver_own.) 16 ways searched
// in turn cost a 200 000-node
// tree freed in post-order (CURRENT_TASK Known gaps 32) 545 M instructions,
// 4 sets of 4 ways 487 M (cachegrind, tree 1 600000 200000), with the
// shared-line RMWs of the 16 ways (STATS, -t 16: mstress 19.6-20.6 per 1 000
// operations against 21.1-21.5). 16 direct-mapped ways shared too often
// (mstress 27); 32 ways (464 M) or 64 (457 M) take 1-2 KB of stack, and at a
// thread's exit the flush then reached a page of its stack no call had
// touched (threads-16 of `make bench`: 6 200 -> 9 200 page faults).
#ifndef FLUSH_WAYS
#define FLUSH_WAYS 16u
#endif
#ifndef FLUSH_ASSOC
#define FLUSH_ASSOC 4u
#endif

// A hand-over chain (tiny_handover) goes when it holds the class's batch,
// what a producer's refill of an unshrunk bound takes, half of what the
// consumer's list held before its bound shrank. With the shrunk bound's
// batch (a half to an eighth of that) prodcons -t 4 of 1-32 KiB took
// 1.13x the time, 64 KiB chains 1.21x, 128 KiB 1.13x, and at -t 8 the peak
// RSS was higher too (producers carve while short chains go home; 11
// paired rounds). With many threads live a half or a quarter of it, as the
// small classes' bounds (tiny_cache_share): every consumer holds a chain of
// each class it frees, and 64 consumers of 1-4 KiB (4 producers, items one
// at a time) peaked at 101 MB where the peers stay under 9.
#define HANDOVER_BLOCKS(cls) ((uint32_t)g_size_class[cls].batch >> t_tls_cache.cap_share)
_Static_assert(FREE_BATCH_MAX_BLOCK <= TRANSFER_MAX_BLOCK, "a held block's class is one the exchange takes");

// cls's bound back to the class's if slab_take_whole raised it; the room goes
// negative if the list is longer (the caller flushes).
HAK_INLINE void class_cap_restore(tls_cache_t *tc, unsigned cls) {
  uint16_t cap = tls_class_cap(tc, cls, tc->cap_share);
  if (HAK_UNLIKELY(tc->cap[cls] != cap)) tls_set_cap(tc, cls, cap);
}

// A run of blocks of one slab of this thread's, first..last (n, linked in
// the list's order), goes home at once: no way holds it. Nothing is gained by
// gathering them: a run home costs no atomic (`used` counts the slab's free
// list, superslab.h). While it cost one, runs of this thread's slabs took
// ways too, and a big heap freed in random order (a list of 1 M nodes of 32
// B, 64 slabs) switched ways at nearly every block, sending a chain of one
// block home at each switch: ~120 instructions a block (flush_ways_switch and
// flush_deliver), now ~35.
// (Inline in the flush's walk, where a big structure freed at random sends
// runs of one block: the call and the heap's call were ~20 of the ~95
// instructions a block.)
HAK_INLINE void deliver_own_run(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n) {
  int empty = tiny_free_local_box(m, first, last, n);
  tiny_heap_slab_freed(t_heap_p, m, empty);
}
void flush_deliver_own(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n) {
  deliver_own_run(m, first, last, n);
}

// Hand a chain of blocks of one slab back to it: the owner's own slab takes
// it without a CAS; any other goes through its remote list. Returns the
// blocks that went to another thread's slab.
static uint32_t flush_deliver(slab_meta_t *m, block_chain_t *c) {
  uint32_t n = c->n, remote = 0;
  if (atomic_load_explicit(&m->owner, memory_order_relaxed) == thread_self_id()) {
    flush_deliver_own(m, c->first, c->last, n);
  } else {
    if (REMOTE_TICKETS && remote_word_has_list(slab_remote_word(m, memory_order_relaxed))) flush_hold_ticket(m, c);
    if (c->n != 0) remote_free_push_chain(m, c->first, c->last, c->n);
    remote = n;
  }
  c->n = 0;
  return remote;
}

// The chains a flush gathers, one per other thread's slab, in FLUSH_WAYS ways of
// FLUSH_ASSOC ways a set, the set found from the slab (its index in its
// SuperSlab and the SuperSlab's, folded): a slab new to a full set sends the
// chain of the set's next victim (round robin) home first. A flush of a TLS
// list that holds blocks of many slabs in the order they were freed (a tree
// freed in post-order: ~90 slabs of a class; mstress's final frees) switches
// ways at nearly every block: a search of one set, not of every way. The
// ways sit in the flush's stack frame (as small as the 16 ways before).
typedef struct flush_ways {
  slab_meta_t  *slab[FLUSH_WAYS];
  block_chain_t chain[FLUSH_WAYS];
  uint64_t      taken;         // bit i: way i holds a slab of this flush
  uint8_t       victim[FLUSH_WAYS / FLUSH_ASSOC];   // each set's next way to send off
  unsigned      hit;
  uint32_t      sent_remote;   // blocks sent to other threads' slabs
} flush_ways_t;
_Static_assert(FLUSH_WAYS <= 64 && (FLUSH_WAYS & (FLUSH_WAYS - 1)) == 0, "a power of two, one bit each");
_Static_assert(FLUSH_ASSOC >= 1 && FLUSH_WAYS % FLUSH_ASSOC == 0 && ((FLUSH_WAYS / FLUSH_ASSOC) & (FLUSH_WAYS / FLUSH_ASSOC - 1)) == 0,
               "whole sets, a power of two of them");

// No way taken yet. The ways are written as each is taken
// (flush_ways_switch), never read before: an initializer of the whole
// struct cleared them at every flush.
HAK_INLINE void flush_ways_init(flush_ways_t *fw) {
  fw->taken = 0;
  fw->hit = 0;
  fw->sent_remote = 0;
}

// The first way of slab m's set: slab metadata is 128 bytes apart in a
// SuperSlab, and SuperSlabs are 2 MiB apart.
HAK_INLINE unsigned flush_set_of(const slab_meta_t *m) {
  uintptr_t a = (uintptr_t)m;
  return ((unsigned)((a >> 7) ^ (a >> SS_SHIFT)) & (FLUSH_WAYS / FLUSH_ASSOC - 1u)) * FLUSH_ASSOC;
}

// The way of slab m: the one it has, else a free way of its set, taken
// for it; FLUSH_WAYS when its set is full. The set's ways are compared all
// at once, without a branch per way: where blocks come from many slabs at
// random, which way matches is random too.
static unsigned flush_ways_find(flush_ways_t *fw, slab_meta_t *m) {
  unsigned set = flush_set_of(m);
  unsigned taken = (unsigned)(fw->taken >> set) & ((1u << FLUSH_ASSOC) - 1u), same = 0;
#pragma GCC unroll 8
  for (unsigned j = 0; j < FLUSH_ASSOC; j++) same |= (unsigned)(fw->slab[set + j] == m) << j;
  same &= taken;                        // (a way not taken holds a stale slab)
  if (same != 0) return set + (unsigned)__builtin_ctz(same);
  if (taken == (1u << FLUSH_ASSOC) - 1u) return FLUSH_WAYS;
  unsigned i = set + (unsigned)__builtin_ctz(~taken);
  if (taken == 0) fw->victim[set / FLUSH_ASSOC] = 0;   // the set's first way taken: its round robin starts
  fw->taken |= (uint64_t)1 << i;
  fw->slab[i] = m;
  fw->chain[i].n = 0;
  return i;
}

// Make fw->hit the way of slab m, another than the last block's: a full
// set's next victim (round robin) sends its chain home for it.
static void flush_ways_switch(flush_ways_t *fw, slab_meta_t *m) {
  unsigned i = flush_ways_find(fw, m);
  if (i == FLUSH_WAYS) {
    unsigned set = flush_set_of(m);
    uint8_t *v = &fw->victim[set / FLUSH_ASSOC];
    i = set + *v;
    *v = (uint8_t)((*v + 1u) % FLUSH_ASSOC);
    fw->sent_remote += flush_deliver(fw->slab[i], &fw->chain[i]);
    fw->slab[i] = m;
    fw->chain[i].n = 0;
  }
  fw->hit = i;
}

// Make fw->hit the way of slab m.
HAK_INLINE void flush_ways_pick(flush_ways_t *fw, slab_meta_t *m) {
  if (fw->taken != 0 && fw->slab[fw->hit] == m) return;
  flush_ways_switch(fw, m);
}

// Every gathered chain home; returns the blocks sent to other threads' slabs.
static uint32_t flush_ways_deliver_all(flush_ways_t *fw) {
  for (uint64_t t = fw->taken; t != 0; t &= t - 1) {
    unsigned i = (unsigned)__builtin_ctzll(t);
    if (fw->chain[i].n > 0) fw->sent_remote += flush_deliver(fw->slab[i], &fw->chain[i]);
  }
  return fw->sent_remote;
}

// A run that ended: home at once if its slab is this thread's (own), else
// onto the chain of its slab's way (fw->hit).
HAK_INLINE void flush_run_end(flush_ways_t *fw, slab_meta_t *own, hak_base_ptr_t first, hak_base_ptr_t last,
                              uint32_t n) {
  if (own != NULL) deliver_own_run(own, first, last, n);
  else chain_append_chain(&fw->chain[fw->hit], first, last, n);
}

// Take up to n blocks off the list at *head and send each home, gathered
// per slab (a TLS list, or a chain sent home, ends at TLS_SLL_END), or, with
// `foreign`, other threads' blocks onto that chain. Returns the blocks taken;
// *remote (if not NULL) counts those sent to other threads' slabs. A
// corrupted link is reported; going on, the rest of the list is dropped
// (leaked), never followed.
//
// The list is cut into runs: blocks in a row of one slab's carved part
// (from run_lo, run_span bytes), so a next block of the same slab extends
// the run with one compare (its link is that block already), no registry
// lookup, owner load or way search. A run of this thread's slab goes home
// when it ends (flush_deliver_own); a run of another thread's slab joins its
// slab's way's chain (flush_ways_t), which goes home with one CAS.
static uint32_t flush_gather(hak_base_ptr_t *head, uint32_t n, unsigned cls, block_chain_t *foreign,
                             uint32_t *remote) {
  flush_ways_t fw;
  flush_ways_init(&fw);
  const char *run_lo = NULL;
  uintptr_t run_span = 0;
  slab_meta_t *run_m = NULL;           // the run's slab if it is this thread's, else NULL (a way's)
  hak_base_ptr_t cur = *head, run_first = HAK_BASE_NULL, run_last = HAK_BASE_NULL;
  uint32_t left = n, run_n = 0;
  uintptr_t self = thread_self_id();   // (its heap's address: a load and a test, once)
  // The list's end is found by its link, off the loop's path: TLS_SLL_END's
  // link decodes implausible, so only a block whose link fails the check is
  // compared with it (a test of each block for NULL and for the end cost the
  // walk 4 of its 18 instructions a block). A corrupted link is reported and
  // its block is the last one taken: the rest is dropped, never followed.
  // The hardened build's quarantine leaves NULL links (tls_sll_pop_fast), and
  // LINK_ENCODE=0's raw links may be NULL: there a NULL link ends the walk too.
  for (; left > 0; left--) {
    hak_base_ptr_t b = cur;
    hak_base_ptr_t next = block_next(b);
    if (HAK_UNLIKELY(!block_link_plausible(next))) {
      if (tls_sll_is_end(b)) break;
      tls_sll_report_corrupt(b, cls);
      next = HAK_BASE_NULL;
      n -= left - 1u;   // (the count returned: up to b)
      left = 1;
    } else if ((HAK_HARDENED || !HAK_LINK_ENCODE) && HAK_UNLIKELY(hak_base_is_null(next))) {
      n -= left - 1u;
      left = 1;
    }
    cur = next;
    if ((uintptr_t)((const char *)hak_base_raw(b) - run_lo) < run_span) {   // the run goes on
      run_last = b;
      run_n++;
      continue;
    }
    if (run_n != 0) flush_run_end(&fw, run_m, run_first, run_last, run_n);
    slab_meta_t *m = ss_registry_slab_of(hak_base_raw(b));
    if (atomic_load_explicit(&m->owner, memory_order_relaxed) == self) {
      run_m = m;
    } else if (foreign != NULL) {
      chain_append(foreign, b);
      run_n = 0;
      run_span = 0;
      continue;
    } else {
      flush_ways_pick(&fw, m);
      run_m = NULL;
    }
    run_first = run_last = b;
    run_n = 1;
    run_lo = m->base;
    run_span = (uintptr_t)(slab_carve(m) - m->base);
  }
  if (run_n != 0) flush_run_end(&fw, run_m, run_first, run_last, run_n);
  *head = cur;
  uint32_t sent_remote = flush_ways_deliver_all(&fw);
  if (remote != NULL) *remote = sent_remote;
  return n - left;
}

// Send a chain first..last of cls (linked, marked free) home, gathered per slab
// (ended as a TLS list is, for flush_gather).
void send_chain_home(unsigned cls, hak_base_ptr_t first, hak_base_ptr_t last) {
  block_set_next(last, TLS_SLL_END);
  flush_gather(&first, UINT32_MAX, cls, NULL, NULL);
}

static uint32_t flush_class(unsigned cls, uint32_t n);

void tiny_free_checked(slab_meta_t *m, hak_base_ptr_t b) {
  unsigned cls = m->cls;
  tls_cache_t *tc = &t_tls_cache;
  tls_sll_room_settle(tc, cls);   // after a full list's tls_sll_push_fast
  if (HAK_UNLIKELY(t_thread_status == THREAD_DONE)) {
    // After this thread's exit hook: glibc frees its per-thread state after
    // the last round of key destructors, so setting the thread up again
    // would leave it set up when it is gone. The block goes home at once.
    tiny_free_after_exit(m, b);
    return;
  }
  // A thread that only frees is set up too, so it flushes its state at exit
  // (the process is: a block of it exists).
  if (HAK_UNLIKELY(t_thread_status != THREAD_LIVE) && !thread_setup()) {
    tiny_free_after_exit(m, b);   // no memory for the thread's record: the block goes home at once
    return;
  }
  if (!tiny_block_stays_here(m, thread_self_id())) {
    tiny_free_remote(cls, b);
    return;
  }
  tiny_push_flushing(cls, b);
}

// cls's bound back to the class's (cap_grow 0), the list flushed down to it.
static void class_ungrow(tls_cache_t *tc, unsigned cls) {
  tc->local_overflow[cls] = 0;
  if (tc->cap_grow[cls] == 0) return;
  tc->cap_grow[cls] = 0;
  tls_set_cap(tc, cls, tls_class_cap(tc, cls, tc->cap_share));
  if (tc->lists[cls].room < 0) tiny_flush(cls, (uint32_t)-tc->lists[cls].room);
}

// The list of cls is full and a block must go on it: the overflow's looks
// (the bound, the idle classes, the purge clock) and a batch flushed, room
// left for the block. With `home` (tiny_overflow_home) the batch stays on the
// list, which is flushed only down to its bound: the caller sends its blocks
// home itself; returns the batch it may send so, 0 if the list has room.
static uint32_t tiny_flush_overflow(unsigned cls, int home) {
  tls_cache_t *tc = &t_tls_cache;
  if (g_size_class[cls].size > HAK_TINY_MAX && tc->cap_shift[cls] < TLS_SHRINK_MAX &&
      ++tc->overflows[cls] >= TLS_SHRINK_STREAK) {
    tc->overflows[cls] = 0;
    if (tc->cap_grow[cls] != 0) tc->cap_grow[cls] = 0;   // only frees: a grown bound goes first
    else tc->cap_shift[cls]++;
    tls_set_cap(tc, cls, tls_class_cap(tc, cls, tc->cap_share));
  }
  t_heap_p->refill_streak[cls] = 0;
  class_cap_restore(tc, cls);   // a bound raised by slab_take_whole
  // The room was 0: now 0, or minus what the list holds over its new bound.
  uint32_t over = (uint32_t)-tc->lists[cls].room, n = (home ? 0u : tls_batch(tc, cls)) + over;
  uint32_t others = 0;
  if (n != 0) {   // (0: a home batch on a list at its bound)
    unsigned mode = tiny_tickets_mode(TICKETS_KEEP);
    others = flush_class(cls, n);
    tiny_tickets_mode(mode);
  }
  if (tc->cap_shift[cls] != 0) note_dying_class(tc, t_heap_p, cls);
  // (tiny_flush's look, with this clock; a home batch counts as the flush it replaces)
  shared_pool_maybe_purge_at(note_slow_path(tc, t_heap_p, cls, tls_batch(tc, cls) + over));
  // A batching thread's lists keep their bounds (tiny_cache_ungrow): their
  // own overflows are what tell it to stop (free_batch_note_flush).
  if (others == 0 && !t_free_batch_active) {
    if (tc->local_overflow[cls] < UINT8_MAX) tc->local_overflow[cls]++;
  } else if (others != 0) {   // other threads' blocks: the grown bound goes
    class_ungrow(tc, cls);
  }
  if (home) {
    // Down to the bound (flush_class's rescale may have lowered it under what
    // n assumed); full, so the caller's blocks go home.
    if (HAK_UNLIKELY(tc->lists[cls].room < 0)) tiny_flush(cls, (uint32_t)-tc->lists[cls].room);
  } else if (HAK_UNLIKELY(tc->lists[cls].room <= 0)) {
    // Room for the caller's block. A grown bound given back on the way (the
    // ungrow above, or batching's start in the flush: tiny_cache_ungrow)
    // flushes the list only down to the class's bound, full: the caller's push
    // then failed, and its block was on no list, counted in use by its slab
    // for good (four threads exchanging 8 B-64 KiB blocks, one run in 10-60).
    tiny_flush(cls, tls_batch(tc, cls) + 1u + (uint32_t)-tc->lists[cls].room);
  }
#if HAK_DEBUG
  tls_sll_validate(cls);
#endif
  return home && tc->lists[cls].room == 0 ? tls_batch(tc, cls) : 0u;
}

uint32_t tiny_overflow_home(unsigned cls) {
  HAK_ASSERT(cls < HAK_TINY_CLASSES && t_tls_cache.lists[cls].room == 0);
  return tiny_flush_overflow(cls, 1);
}

void tiny_push_flushing(unsigned cls, hak_base_ptr_t b) {
  tls_cache_t *tc = &t_tls_cache;
  if (tc->lists[cls].room == 0) tiny_flush_overflow(cls, 0);
  int pushed = tls_sll_push(tc, cls, b);
  HAK_ASSERT(pushed);   // (tiny_flush_overflow leaves room)
  (void)pushed;
}

void tiny_cache_ungrow(void) {
  tls_cache_t *tc = &t_tls_cache;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) class_ungrow(tc, c);
}

void tiny_class_ungrow(unsigned cls) { class_ungrow(&t_tls_cache, cls); }

void tiny_free_after_exit(slab_meta_t *m, hak_base_ptr_t b) {
  block_set_free(b);
  remote_free_push_chain(m, b, b, 1);   // whoever owns the slab, or adopts it, takes it
}

void tiny_free_remote(unsigned cls, hak_base_ptr_t b) {
  tiny_heap_t *h = t_heap_p;
  HAK_ASSERT(cls < TINY_REMOTE_CLASSES && g_size_class[cls].size < HAK_SEND_HOME_BELOW);
  block_set_free(b);
  h->remote_buf[cls][h->remote_count[cls]] = b;
  if (++h->remote_count[cls] == TINY_REMOTE_BUF_BLOCKS) {
    unsigned mode = tiny_tickets_mode(TICKETS_KEEP);
    tiny_flush_remote(cls);
    tiny_tickets_mode(mode);
    free_batch_note_flush(TINY_REMOTE_BUF_BLOCKS, TINY_REMOTE_BUF_BLOCKS);   // every one another thread's
  }
}

// The hand-over chain of cls (tiny_handover) to the class exchange, or home
// when the exchange is full or `home` (a whole flush: the thread's exit,
// which trimmed the exchange before, a trim, an idle class).
static void handover_send(tiny_heap_t *h, unsigned cls, int home) {
  uint32_t n = tiny_heap_handover_n(h, cls);
  if (n == 0) return;
  h->handover_n[cls] = 0;
  hak_base_ptr_t first = h->handover_first[cls], last = h->handover_last[cls];
  if (home || !transfer_put(cls, tiny_threads_live(), first, last, n)) send_chain_home(cls, first, last);
  h->left_touched |= (uint64_t)1 << cls;   // the class is in use here, not idle
  hak_thread_counters_t *t = hak_counters();
  t->handed_over += n;
  t->cls[cls].flushes++;
  t->cls[cls].flush_blocks += n;
}

// A refill of cls takes this thread's own hand-over chain first, when the
// list has room for it (the thread takes the class again).
int handover_take(tls_cache_t *tc, tiny_heap_t *h, unsigned cls, uint32_t room) {
  uint32_t n = tiny_heap_handover_n(h, cls);
  if (n > room) {
    handover_send(h, cls, 0);
    return 0;
  }
  h->handover_n[cls] = 0;
  tls_sll_push_chain(tc, cls, h->handover_first[cls], h->handover_last[cls], n);
  count_refill(tc, cls, n);
  return 1;
}

void tiny_handover_send_all(void) {
  tiny_heap_t *h = t_heap_p;
  for (unsigned c = 0; c < HAK_EXCHANGE_CLASSES; c++)
    if (h->handover_n[c] != 0) handover_send(h, c, 1);
}

void tiny_handover(unsigned cls, hak_base_ptr_t b) {
  HAK_ASSERT(cls < HAK_EXCHANGE_CLASSES);   // the classes the exchange takes (up to TRANSFER_MAX_BLOCK)
  tiny_heap_t *h = t_heap_p;
  uint32_t n = h->handover_n[cls];
  block_set_free(b);
  block_set_next(b, n != 0 ? h->handover_first[cls] : HAK_BASE_NULL);
  if (n == 0) h->handover_last[cls] = b;
  h->handover_first[cls] = b;
  h->handover_n[cls] = (uint16_t)++n;
  if (n >= HANDOVER_BLOCKS(cls)) handover_send(h, cls, 0);
}

// The remote buffer of cls goes home, gathered per slab as flush_gather
// does, linked here: stores into the blocks, no load of them.
void tiny_flush_remote(unsigned cls) {
  tiny_heap_t *h = t_heap_p;
  HAK_ASSERT(cls < TINY_REMOTE_CLASSES);
  if (h->remote_count[cls] == 0) return;
  flush_ways_t fw;
  flush_ways_init(&fw);
  for (uint32_t k = 0, n = h->remote_count[cls]; k < n; k++) {
    hak_base_ptr_t b = h->remote_buf[cls][k];
    flush_ways_pick(&fw, ss_registry_slab_of(hak_base_raw(b)));
    chain_append(&fw.chain[fw.hit], b);
  }
  flush_ways_deliver_all(&fw);
  h->remote_count[cls] = 0;
}

// Blocks of up to TRANSFER_MAX_BLOCK that another thread owns go to the class
// exchange on an overflow's flush (a batch or less), home if it is full. Every
// overflow's flush tells free_batch_box how many of its blocks were other
// threads' (a thread freeing only medium blocks of other threads never
// started batching before: ring -t 8 of 1-16 KiB, every free tested at once).
static uint32_t flush_class(unsigned cls, uint32_t n) {
  tls_cache_t *tc = &t_tls_cache;
  if (n == UINT32_MAX) {
    // A whole flush of a class that holds nothing here returns at once: a
    // thread's exit flushes all 53, and each cost ~490 instructions with
    // nothing to move (its ways cleared, the purge looked at): the exit 36 k
    // -> 22 k under callgrind (churn -c 16 -k 16; its time level).
    if (tls_cached(tc, cls) == 0 && tiny_heap_handover_n(t_heap_p, cls) == 0) return 0;
    handover_send(t_heap_p, cls, 1);
  }
  tiny_cache_rescale();
  block_chain_t foreign = {HAK_BASE_NULL, HAK_BASE_NULL, 0};
  uint32_t limit = tiny_threads_live(), remote = 0;
  int overflow = n <= g_size_class[cls].batch;   // not the exit's flush
  // A shrunk list's flush (a medium class the thread only frees: a new
  // thread's bound starts so, tiny_thread.c) sends its blocks home: chains
  // of a few blocks would take the exchange's places from the hand-over's
  // whole batches (tiny_handover), and each such chain is a refill.
  int exchange = overflow && tc->cap_shift[cls] == 0 && g_size_class[cls].size <= TRANSFER_MAX_BLOCK &&
                 !transfer_full(cls, limit);
  uint32_t moved = flush_gather(&tc->lists[cls].head, n, cls, exchange ? &foreign : NULL, &remote);
  if (foreign.n > 0 && !transfer_put(cls, limit, foreign.first, foreign.last, foreign.n))
    send_chain_home(cls, foreign.first, foreign.last);
  tc->lists[cls].room += (int32_t)moved;
  if (hak_base_is_null(tc->lists[cls].head)) {   // a corrupted list was dropped
    tc->lists[cls].head = TLS_SLL_END;
    tc->lists[cls].room = tc->cap[cls];
  }
  // Last, with the list whole again: starting to batch flushes grown lists
  // (tiny_cache_ungrow), stopping drains the held blocks onto them.
  if (overflow) free_batch_note_flush(moved, foreign.n + remote);
  hak_class_counters_t *k = &hak_counters()->cls[cls];
  k->flushes++;
  k->flush_blocks += moved;
  k->cached = tls_cached(tc, cls);
  return foreign.n + remote;
}

uint32_t tiny_flush(unsigned cls, uint32_t n) {
  uint32_t others = flush_class(cls, n);
  shared_pool_maybe_purge();
  return others;
}

// One look at the purge budget for all of them (the caller's): a thread's
// exit looked once a class it held blocks of (churn -c 16 -k 16: ~12 looks,
// 2.4 k instructions).
void tiny_flush_all(void) {
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) flush_class(c, UINT32_MAX);   // (the empty ones return at once)
  if (REMOTE_TICKETS) tickets_leave(t_heap_p);
}

void exchange_send_home(unsigned c) {
  hak_base_ptr_t first, last;
  while (transfer_take(c, UINT32_MAX, &first, &last) > 0) send_chain_home(c, first, last);
}

// Home every chain of each class's exchange past `keep`.
static void exchange_keep(uint32_t keep) {
  hak_base_ptr_t first, last;
  for (unsigned c = 0; transfer_take_next(&c, keep, &first, &last) > 0;) send_chain_home(c, first, last);
}

void tiny_flush_exchange(void) { exchange_keep(0); }

void tiny_exchange_trim(uint32_t limit) {
  if (limit == 0) limit = 1;
  exchange_keep(limit < TRANSFER_MAX_CHAINS ? limit : TRANSFER_MAX_CHAINS - 1u);   // (transfer_full's clamp)
}
