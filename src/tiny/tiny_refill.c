// tiny_refill.c — the refill of the TLS lists (see tiny_refill.h).
#include "tiny/tiny_refill.h"

#include "config/config.h"
#include "large/huge.h"
#include "large/page_heap.h"
#include "os/os.h"
#include "shared_pool/shared_pool.h"
#include "stats/stats.h"
#include "superslab/ss_registry.h"
#include "tiny/free_batch_box.h"
#include "tiny/hardened_box.h"
#include "tiny/idle_class_box.h"
#include "tiny/remote_free_box.h"
#include "tiny/slab_sweep_box.h"
#include "tiny/slab_validate.h"
#include "tiny/ticket_box.h"
#include "tiny/tiny_flush.h"
#include "tiny/tiny_heap.h"
#include "tiny/tiny_thread.h"
#include "tiny/tls_sll_box.h"
#include "tiny/transfer_box.h"

_Static_assert(HAK_NUM_CLASSES <= HAK_STAT_CLASSES, "the counters have a slot per class");

// A refill of a small class (1 KiB or less) that had WHOLE_STREAK refills and
// no overflow since (the thread takes the class and gives none back: a
// structure being built) takes a slab's whole free list of up to WHOLE_RAISE
// times the TLS list's room, the list's bound raised to fit it until the
// class's next overflow (slab_take_whole; class_cap_restore). The blocks
// were the thread's already, on its own slab's list. (Restored at the next
// refill instead, mstress -t 1 took 1.07x the time at +24% page faults.)
#ifndef WHOLE_RAISE
#define WHOLE_RAISE 4u
#endif
#ifndef WHOLE_STREAK
#define WHOLE_STREAK 2u
#endif

// A refill that takes never-used blocks carves at most a page's worth (at
// least one block), however big its batch: carved blocks are written (their
// free mark), so resident, and a thread only carves when every block it could
// reuse is gone. The rest of a whole batch (up to 32 KiB per class) sat unused
// on top of each class's high-water mark: at 16 threads 3 MiB of ws-small's
// peak RSS and 3 MiB of larson's. The extra refills happen only while a class
// grows, about one per page, against the page faults of that page.
#define CARVE_BYTES 4096u

// ... but a class above a page (one block a page) that the thread takes
// refill after refill with no overflow between (refill_streak: a burst of
// one size) carves 2, 4, then up to 2^CARVE_RAMP_SHIFT blocks a refill: one
// block a refill made each malloc of a 100-block burst a refill of its own
// (`bursts -k 8 -b 100`: 830 instructions a call, mimalloc 0.5x our time;
// with the ramp 0.68x the time, peak RSS 4.9 -> 4.6 MB). What a burst that
// ends leaves carved is at most the last carve, less than it took. A ramped
// carve is populated ahead from a slab's start (slab_populate_ahead): left
// to fault page by page there, `rounds --mb 32 --size 20K` took 1.17x the
// time in its first round (2 170 more faults). A class of a page or a little
// less (fewer than 2^CARVE_RAMP_SHIFT blocks a page) ramps the same way, to
// that many blocks, once the thread takes back what it frees (its bound grown,
// cap_grow): rounds of 1 600 mallocs of 4 KiB and their frees carved a block
// a refill past the grown list (575 k refills in 3.2 M mallocs, tcmalloc 0.8x
// our time; ramped 0.70x the time, 2 KiB 0.87x). Not a thread that only
// takes: with every such class ramped, 4 producers and 4 consumers of 1-32
// KiB peaked 5% higher. With more than TINY_CACHE_FULL_THREADS threads live
// the ramp stops at half as many blocks, a quarter past twice that (the
// thread's share, tiny_cache_share): each thread's last carve sits unused on
// its list once its burst ends (1 000 threads each holding 16 blocks of
// twelve sizes from 16 B to 5 KB: peak RSS 280 -> 237 MB; glibc 174, tcmalloc
// 207, jemalloc 242, mimalloc 282).
#define CARVE_RAMP_SHIFT 3u
_Static_assert(CARVE_RAMP_SHIFT >= 2u, "a share of 2 leaves a ramp (tiny_cache_share)");

HAK_INLINE uint32_t carve_want(unsigned cls, uint32_t want) {
  uint32_t n = CARVE_BYTES / g_size_class[cls].size;
  if (n == 0 || (n < (1u << CARVE_RAMP_SHIFT) && t_tls_cache.cap_grow[cls] != 0)) {
    uint32_t streak = t_heap_p->refill_streak[cls];   // this refill's included
    uint32_t shift = streak > 1u ? streak - 1u : 0u;
    uint32_t most = CARVE_RAMP_SHIFT - t_tls_cache.cap_share;   // many threads: their share
    uint32_t ramp = 1u << (shift < most ? shift : most);
    if (n < ramp) n = ramp;
  }
  return n < want ? n : want;
}

// Blocks of m's free list dropped after a corrupted link leave `used` with
// it: the slab can still empty (they are leaked, not counted live).
static HAK_NOINLINE void slab_drop_counted(slab_meta_t *m, uint32_t n) {
  HAK_SITE(SITE_SLAB_USED);
  atomic_fetch_sub_explicit(&m->used, n, memory_order_relaxed);
}

// Up to `want` blocks off m's local free list, block by block (the hardened
// build: no chain records).
static void slab_walk_free(slab_meta_t *m, uint32_t want, block_chain_t *c) {
  while (c->n < want && m->freelist != NULL) {
    hak_base_ptr_t b = hak_base_from_raw(m->freelist);
    hak_base_ptr_t next = block_next(b);
    if (HAK_UNLIKELY(!block_link_in_slab(m, next))) {
      tls_sll_report_corrupt(b, m->cls);
      slab_drop_counted(m, m->free_n - 1u);
      next = HAK_BASE_NULL;          // going on: the rest of the list is dropped (leaked)
    }
    m->freelist = hak_base_raw(next);
    m->free_n = m->freelist != NULL ? (uint16_t)(m->free_n - 1u) : 0u;
    chain_append(c, b);              // still marked free: it moves to a TLS list
  }
}

// At least `want` blocks off m's local free list if it has them, a whole
// chain at a time (tls_sll_box.h: block_set_chain): one block read per chain.
// A chain is taken whole while the blocks taken stay within `limit`; a longer
// one is split, walking the part taken, unless half of `want` is taken
// already (the next refill takes it whole).
static void slab_take_chains(slab_meta_t *m, uint32_t want, uint32_t limit, block_chain_t *c) {
  while (c->n < want && m->freelist != NULL) {
    hak_base_ptr_t first = hak_base_from_raw(m->freelist);
    block_chain_info_t ci = block_chain(m, first);
    if (HAK_UNLIKELY(!slab_chain_plausible(m, ci))) {
      tls_sll_report_corrupt(first, m->cls);
      slab_drop_counted(m, m->free_n);
      m->freelist = NULL;            // going on: the list is dropped (leaked)
      m->free_n = 0;
      return;
    }
    if (c->n + ci.n <= limit) {
      m->freelist = hak_base_raw(ci.next);
      m->free_n = m->freelist != NULL ? (uint16_t)(m->free_n - ci.n) : 0u;
      block_chain_release(m, first, ci);
      chain_append_chain(c, first, ci.last, ci.n);
      continue;
    }
    if (c->n >= want / 2u) return;
    uint32_t k = want - c->n;        // 1 <= k < ci.n: blocks first..b taken, rest stays
    hak_base_ptr_t b = first, rest = ci.second;
    for (uint32_t i = 1;; i++, b = rest, rest = block_next(b)) {
      if (HAK_UNLIKELY(!slab_block_start(m, hak_base_raw(rest)))) {
        tls_sll_report_corrupt(b, m->cls);
        slab_drop_counted(m, m->free_n);
        m->freelist = NULL;          // going on: the list is dropped (leaked)
        m->free_n = 0;
        return;
      }
      if (i == k) break;
    }
    block_set_chain(m, rest, ci.last, ci.n - k, ci.next);
    m->freelist = hak_base_raw(rest);
    m->free_n = (uint16_t)(m->free_n - k);
    block_chain_release(m, first, ci);
    chain_append_chain(c, first, b, k);
  }
}

// All of m's local free list (its remote list drained onto it first when it
// is shorter than a batch), when the TLS list of its class is empty and has
// room for all of it, or the class only takes (WHOLE_RAISE: its bound raised
// to the list's length): the list's last block links to TLS_SLL_END
// (slab_list_end), so the list becomes the TLS list as it lies, in one step
// (c->last stays NULL: tls_sll_adopt_list). A walk of its chains reads one
// record a chain, each a miss, back to back: a 200 000-node tree freed in
// post-order leaves chains of 1.7 blocks (`tree 1 2000000 200000`, pinned:
// 0.91-0.96x the time in four paired runs, and 0.89-0.90x with the raise;
// CURRENT_TASK thirty-third session); the TLS pops read the same blocks one
// at a time, each miss beside the program's own work. 0: not for
// this slab's class (the 16-byte class, the hardened build), or the list is
// empty, or longer than the room and the class not only taking (then it is
// walked: slab_take_chains).
static int slab_take_whole(slab_meta_t *m, uint32_t want, uint32_t room, block_chain_t *c) {
  tls_cache_t *tc = &t_tls_cache;
  unsigned cls = m->cls;
  if (hak_base_is_null(slab_list_end(m)) || c->n != 0 || !tls_sll_empty(tc, cls)) return 0;
  if (m->free_n < want) ss_remote_drain_to_freelist(m);   // what a walk would take next
  if (m->freelist == NULL) return 0;
  if (m->free_n > room) {
    if (g_size_class[cls].size > HAK_TINY_MAX || t_heap_p->refill_streak[cls] < WHOLE_STREAK ||
        m->free_n > WHOLE_RAISE * room)
      return 0;
    tls_set_cap(tc, cls, (uint16_t)(tc->cap[cls] + (m->free_n - room)));   // room = free_n
  }
  c->first = hak_base_from_raw(m->freelist);
  c->last = HAK_BASE_NULL;
  c->n = m->free_n;
  m->freelist = NULL;
  m->free_n = 0;
  return 1;
}

// Take about `want` blocks that were freed into the owner's slab m: its
// local free list, then its drained remote list. Chains are taken whole up to
// one and a half times `want` (within `room`, what the TLS list can take): a
// chain a little longer than a batch (a flush at a larger bound, an exit's)
// was split by walking most of it (mstress -t 8: 0.96x the time).
static void slab_take_free(slab_meta_t *m, uint32_t want, uint32_t room, block_chain_t *c) {
  int chains = BLOCK_CHAIN_RECORDS;
  if (m->freelist != NULL) slab_sweep_maybe(m);   // a list freed at random, in address order
  if (slab_take_whole(m, want, room, c)) {
    slab_sweep_note_taken(m);
    return;
  }
  uint32_t limit = want + want / 2u;
  if (limit > room) limit = room;
  do {
    if (chains) slab_take_chains(m, want, limit, c);
    else slab_walk_free(m, want, c);
  } while (c->n < want && ss_remote_drain_to_freelist(m) > 0);
  slab_sweep_note_taken(m);
}

// A carve that passes the slab's reach (dirty_end: how far pages were touched
// since its last purge), once the slab has carved POP_START (or at once for a
// ramped carve of several blocks above a page: carve_want), faults the next
// pages in with one call (os_populate), as far ahead again as half of what the
// slab has carved (POP_AHEAD_MIN-POP_AHEAD_MAX), and moves the reach there. A program writes
// what it mallocs, and each first write of a page was a page fault: on this
// VM ~12 us (half of it the hypervisor's, which a populated page still pays
// at its first write), against ~0.5 us a page in one call. `rounds --mb 32
// --size 20K -n 6` 0.57x the time, ws-medium 0.83x, drift-2 0.69x.
// A slab of a class above a page learns first whether the program writes
// its blocks whole (SLAB_POP_UNKNOWN): once POP_SAMPLE_PAGES pages past its
// old reach are carved, the kernel says how many are resident (mincore); 3 in
// 4 or more: DENSE, else SPARSE and it faults as before (ws-medium writes a
// block's first and last byte: populated whole, 36.6 -> 89 MB).
// Not a small class's slab while more than TINY_CACHE_FULL_THREADS threads
// are live (the thread's cap_share above 0, as its lists' bounds halve): what
// a carve faults in ahead sits unused above each class's carve point, once per
// thread and class (20 classes of 16-1024 B in 16 threads: 320 such slabs),
// and a small class carves a page at most a refill (CARVE_BYTES), so its carve
// faults its own pages as it writes them. `ws8192 -t 16` of 16-1024 B: peak
// RSS 46.7 -> 45.8 MB (glibc 41.0; 15 paired rounds), mstress -t 16 37.9 ->
// 34.8 MB, larson -t 16 17.2 -> 16.3 MB, the times within the rounds' noise.
// A medium class's slab then faults in half as far ahead, a quarter past
// 2 x TINY_CACHE_FULL_THREADS (the thread's share, tiny_cache_share): 1 000
// threads each holding 16 blocks of twelve sizes from 16 B to 5 KB peaked at
// 327 MB, 72 MB of it faulted in ahead of the carve points (280 MB now; glibc
// 174, tcmalloc 207, jemalloc 242, mimalloc 282).
#define POP_START        (16u << 10)
#define POP_AHEAD_MIN    (16u << 10)
#define POP_AHEAD_MAX    (128u << 10)
#define POP_SAMPLE_PAGES 16u
// A thread's last sample of a class's slabs stands for its next POP_CARRY
// slabs of the class, which sample nothing; the slab after them samples
// again, so a program that changes how it writes its blocks is seen within
// POP_CARRY + 1 slabs. DENSE carried populates from a slab's first 16 KiB
// instead of faulting 64 KiB first (rounds, drift, drift -t 2 0.94-0.95x the
// time). SPARSE carried saves the mincore, which takes the address space's
// lock for reading and behind a mapping's writer sleeps (ws8192 -t 16 of
// 1-32 KiB, a block's first and last byte written: 2 400 samples in a run,
// a third of its threads' sleeps were in them; carried, the sleeps 1 100 ->
// 500-680). t_pop_carry[c]: the verdict (enum slab_populate) above
// POP_CARRY_BITS, the slabs it still stands for below.
#define POP_CARRY      7u
#define POP_CARRY_BITS 4u
_Static_assert(POP_CARRY < (1u << POP_CARRY_BITS) && SLAB_POP_SPARSE < (1u << (8u - POP_CARRY_BITS)),
               "a carry fits its byte");
static __thread uint8_t t_pop_carry[HAK_NUM_CLASSES] __attribute__((tls_model("initial-exec")));

static __attribute__((noinline)) void slab_populate_ahead(slab_meta_t *m, const char *carve, const char *to) {
  char *base = m->base;
  uintptr_t page = SLAB_POP_PAGE;
  uintptr_t from = ((uintptr_t)base + m->dirty_end + page - 1) & ~(page - 1);
  // A slab used lightly stays light; a ramped carve (carve_want) is not light.
  size_t light = m->block_size > CARVE_BYTES ? m->block_size : CARVE_BYTES;
  if (!g_hak_config.populate || ((size_t)(carve - base) < POP_START && (size_t)(to - carve) <= light)) return;
  if (g_size_class[m->cls].kind == HAK_KIND_SMALL && t_tls_cache.cap_share != 0) return;   // many threads
  uint8_t carry = t_pop_carry[m->cls];
  if (m->populate == SLAB_POP_UNKNOWN && (carry & ((1u << POP_CARRY_BITS) - 1u)) != 0) {
    t_pop_carry[m->cls] = (uint8_t)(carry - 1u);
    m->populate = (uint8_t)(carry >> POP_CARRY_BITS);
    if (m->populate == SLAB_POP_SPARSE) return;
  }
  if (m->populate == SLAB_POP_UNKNOWN) {
    uintptr_t done = (uintptr_t)carve & ~(page - 1);   // the blocks carved so far, whole pages
    if (done < from + POP_SAMPLE_PAGES * page) return;
    size_t pages = (done - from) / page, resident = os_resident_pages((void *)from, pages);
    m->populate = resident != SIZE_MAX && resident * 4 >= pages * 3 ? SLAB_POP_DENSE : SLAB_POP_SPARSE;
    t_pop_carry[m->cls] = (uint8_t)(m->populate << POP_CARRY_BITS | POP_CARRY);
    if (m->populate == SLAB_POP_SPARSE) return;
    from = done;
  }
  size_t ahead = (size_t)(to - base) / 2;
  if (ahead < POP_AHEAD_MIN) ahead = POP_AHEAD_MIN;
  if (ahead > POP_AHEAD_MAX) ahead = POP_AHEAD_MAX;
  ahead >>= t_tls_cache.cap_share;   // many threads: the thread's share, as its lists' bounds
  uintptr_t upto = ((uintptr_t)to + ahead + page - 1) & ~(page - 1), end = (uintptr_t)slab_end(m) & ~(page - 1);
  if (upto > end) upto = end;
  if (upto <= from) return;
  os_populate((void *)from, upto - from);
  m->dirty_end = (uint32_t)(upto - (uintptr_t)base);
  hak_thread_counters_t *k = hak_counters();
  k->populate_calls++;
  k->populate_bytes += upto - from;
}

// Carve up to `want` never-used blocks from the end of m's carved part.
static void slab_take_carved(slab_meta_t *m, uint32_t want, block_chain_t *c) {
  char *end = slab_end(m);
  char *carve = slab_carve(m);
  size_t span = (size_t)want * m->block_size, room = (size_t)(end - carve);   // (a bound: the list may have some)
  char *to = carve + (span < room ? span : room);
  if (to > m->base + m->dirty_end && m->populate != SLAB_POP_SPARSE) slab_populate_ahead(m, carve, to);
  // A run of fresh blocks linked in address order, in registers, then put at
  // the chain's end (each block's link names the next address; the run's last
  // link is written by whoever puts the chain on a list). Block by block
  // through chain_append the loop was 19 instructions a block (the chain and
  // the cookie loaded again after each store into a block): a list of 1 M
  // nodes built and freed took ~25 a node here.
  uint32_t bs = m->block_size, most = want > c->n ? want - c->n : 0;
  // How many, counted first (one division a carve): the loop then tests one
  // count, not the count and the slab's end (12 -> 9 instructions a block).
  uint32_t fit = (uint32_t)((size_t)(end - carve) / bs), n = most < fit ? most : fit;
  if (n != 0) {
    const uintptr_t cookie = g_block_cookie;
    hak_base_ptr_t first = hak_base_from_raw(carve);
    for (uint32_t i = 0; i < n; i++) {
      hak_base_ptr_t b = hak_base_from_raw(carve);
      carve += bs;
#if HAK_HARDENED
      hardened_fill(b, bs);   // fresh blocks carry the free pattern malloc checks
#endif
      block_set_free_keyed(b, cookie);
      block_set_next_keyed(b, hak_base_from_raw(carve), cookie);
    }
    chain_append_chain(c, first, hak_base_from_raw(carve - bs), n);
    HAK_SITE(SITE_SLAB_USED);
    atomic_fetch_add_explicit(&m->used, n, memory_order_relaxed);   // (the free list's blocks are counted)
  }
  slab_set_carve(m, carve);
}

// Another thread's surplus from the class exchange (transfer_box.h): a chain
// of at most a batch, its blocks still counted in their slabs and marked free.
// A part of a chain taken is a whole number of FIRST_REFILL_BLOCKS: the next
// taker of a shared first page's chain starts on a cache line (share_first_page).
static int refill_from_exchange(tls_cache_t *tc, unsigned cls, uint32_t want) {
  hak_base_ptr_t first, last;
  int own;
  if (want > FIRST_REFILL_BLOCKS) want &= ~(FIRST_REFILL_BLOCKS - 1u);
  uint32_t n = transfer_take_others_first(cls, want, &first, &last, &own);
  if (n == 0) return 0;
  if (own) free_batch_note_own_chain(n);
  tls_sll_push_chain(tc, cls, first, last, n);
  count_refill(tc, cls, n);
  return 1;
}

// The bytes this thread's grown bounds of the classes on cls's side of
// HAK_MEDIUM_MAX add over their classes' bounds (each side has its own total:
// tls_grown_total_of).
static uint32_t grown_bytes(const tls_cache_t *tc, unsigned cls) {
  uint32_t sum = 0;
  int large = g_size_class[cls].size > HAK_MEDIUM_MAX;
  for (unsigned c = 0; c < HAK_NUM_CLASSES && g_size_class[c].size <= HAK_KIND_MEDIUM_MAX; c++) {
    if (tc->cap_grow[c] == 0 || (g_size_class[c].size > HAK_MEDIUM_MAX) != large) continue;
    uint32_t base = (uint32_t)tls_cap_for(c, tc->cap_share) >> tc->cap_shift[c];
    if (tc->cap[c] > base) sum += (tc->cap[c] - base) * g_size_class[c].size;
  }
  return sum;
}

// cls's bound doubles, at a refill after `overflows` overflows of the
// thread's own blocks: once, or as often as those overflows' batches
// (half the bound each) need (a tree of 20 000 nodes freed and built again
// grew one doubling per tree, six trees to reach its size), within
// TLS_GROW_MAX doublings and the thread's total of its side (tls_grown_total_of).
static void class_grow(tls_cache_t *tc, unsigned cls, unsigned overflows) {
  unsigned steps = 1;
  for (unsigned need = overflows / 2u; need > 1u; need >>= 1) steps++;
  uint32_t total = grown_bytes(tc, cls), most = tls_grown_total_of(cls);
  for (; steps > 0 && (unsigned)tc->cap_grow[cls] + 1u <= TLS_GROW_MAX; steps--) {
    uint16_t before = tc->cap[cls];
    tc->cap_grow[cls]++;
    uint16_t after = tls_class_cap(tc, cls, tc->cap_share);
    if (after <= before || total + (uint32_t)(after - before) * g_size_class[cls].size > most) {
      tc->cap_grow[cls]--;   // at its class's or the thread's limit
      break;
    }
    total += (uint32_t)(after - before) * g_size_class[cls].size;
    tls_set_cap(tc, cls, after);
  }
}

// HAKMEM_BIND_TRIM_KB (off by default): a thread's first slab of a class
// above 1 KiB, bound fresh (nothing carved), keeps only that much of the
// pages an earlier life left resident; the rest is purged by the owner,
// outside every lock. mstress's threads each bind a 512 KiB slab per class
// their block arrays grow through, for one or two blocks, on slabs heavier
// lives reached whole: `mstress -t 16 -n 20000 -r 10` peaks at 43.3 MB, 35.3
// with 16 KiB and 37.5 with 32, at 1.02-1.05x the time and twice the page
// faults on this VM (9 paired rounds). Trimmed at every bind, drift took 3.1x
// the time and bursts 12.7x (a burst's or a sweep's next slab is one it
// fills); at a first bind they are level. Off until a 16-core run weighs the
// faults (CURRENT_TASK Known gaps 25).
static HAK_NOINLINE void slab_trim_earlier_reach(slab_meta_t *m) {
  size_t keep = (g_hak_config.bind_trim + SLAB_POP_PAGE - 1u) & ~(size_t)(SLAB_POP_PAGE - 1u);
  if (g_size_class[m->cls].kind == HAK_KIND_SMALL || slab_carve(m) != m->base || m->dirty_end <= keep) return;
  os_purge(m->base + keep, slab_reached_bytes(m) - keep);
  m->dirty_end = (uint32_t)keep;
}

#if !HAK_HARDENED
// With more than TINY_CACHE_FULL_THREADS threads live, a thread's first
// refill of a small class that carves a fresh slab carves its first page
// whole and offers what it does not take in the class exchange, as one chain;
// the next threads' refills take their blocks there (transfer_take splits a
// chain: 4 blocks for a first refill) before they bind a slab of their own.
// Each slab of a small class costs its first page at least, per thread and
// class: 256 threads each holding one block of ten small sizes touched ten
// pages each (`crowd -k 1 -n 1`: 22.6 MB peak RSS against glibc's 6.4 and
// tcmalloc's 12.8, whose threads take their blocks from spans all threads
// share; 14.7 MB so, and `crowd -n 4` 93.9 -> 71.3 MB at 0.87x the time, 7
// paired rounds). A first refill takes FIRST_REFILL_BLOCKS, whose bytes are a whole
// number of cache lines (every small class is a multiple of 16 bytes): so
// the chain and every first refill's part of it start on a line of their
// own, and two threads' first blocks never share one (bench fs-thrash).
// Not in the hardened build, whose refill shuffles what it takes. `own`: the
// blocks this refill just carved, the slab's only ones if it was fresh.
_Static_assert(FIRST_REFILL_BLOCKS * 16u % 64u == 0 && (FIRST_REFILL_BLOCKS & (FIRST_REFILL_BLOCKS - 1u)) == 0,
               "a first refill's blocks end on a cache line; a part taken rounds down to them");

static HAK_NOINLINE void share_first_page(slab_meta_t *m, unsigned cls, uint32_t own) {
  uint32_t limit = tiny_threads_live();
  size_t carved = (size_t)(slab_carve(m) - m->base);
  if (carved != (size_t)own * m->block_size || carved >= CARVE_BYTES || carved % 64u != 0 || transfer_full(cls, limit))
    return;
  block_chain_t s = {HAK_BASE_NULL, HAK_BASE_NULL, 0};
  slab_take_carved(m, (uint32_t)((CARVE_BYTES - carved) / m->block_size), &s);
  if (s.n == 0 || transfer_put(cls, limit, s.first, s.last, s.n)) return;
  // The exchange filled meanwhile: nobody saw these blocks, so they are not carved after all.
  slab_set_carve(m, hak_base_raw(s.first));
  HAK_SITE(SITE_SLAB_USED);
  atomic_fetch_sub_explicit(&m->used, s.n, memory_order_relaxed);
}
#endif

// Reuse before new memory: the blocks freed into the current slab, then a
// chain from the class exchange (another thread's surplus), then a
// partial slab's (or an adopted one's, uncarved end included), and only then
// the current slab's never-used end. Carving first let the current slab grow to its end while
// the partial slabs held the blocks that came back: at 16 threads ws-small
// carved 49 MB for 39 MB handed out, and ring grew without bound.
int tiny_refill(unsigned cls) {
  tls_cache_t *tc = &t_tls_cache;
  tiny_heap_t *h = t_heap_p;
  tiny_cache_rescale();
  free_batch_note_heap(h->owned_lines);
  tc->overflows[cls] = 0;
  if (h->refill_streak[cls] < UINT8_MAX) h->refill_streak[cls]++;
  h->dying &= ~((uint64_t)1 << cls);
  if (HAK_UNLIKELY(tc->cap_shift[cls] != 0)) {   // taking again: the bound doubles back
    tc->cap_shift[cls]--;
    tls_set_cap(tc, cls, tls_class_cap(tc, cls, tc->cap_share));
  }
  if (tc->local_overflow[cls]) {   // its own blocks went home past the bound, and come back
    unsigned overflows = tc->local_overflow[cls];
    tc->local_overflow[cls] = 0;
    if (g_size_class[cls].size <= HAK_KIND_MEDIUM_MAX) class_grow(tc, cls, overflows);
  }
  uint32_t want = tls_batch(tc, cls);
  uint32_t room = (uint32_t)tc->lists[cls].room;   // > 0: the thread is set up
#if HAK_HARDENED
  // What the refill shuffles at once (hardened_shuffle_chain's array): a
  // grown list's batch may be larger, and is then taken in refills of this.
  if (room > TLS_CACHE_MAX_BLOCKS) room = TLS_CACHE_MAX_BLOCKS;
#endif
  if (HAK_UNLIKELY(h->left_gone >> cls & 1u)) note_class_back(h, cls);
  if (HAK_UNLIKELY(tiny_heap_handover_n(h, cls) != 0) && handover_take(tc, h, cls, room)) return 1;
  int first = !(h->refilled >> cls & 1u);
  if (HAK_UNLIKELY(first)) {   // the thread's first of cls (its own chain above is not)
    h->refilled |= (uint64_t)1 << cls;
#if !HAK_HARDENED   // (whose refill shuffles what it takes: 4 blocks would be 4 guesses)
    if (room > FIRST_REFILL_BLOCKS) room = FIRST_REFILL_BLOCKS;
#endif
  }
  if (want > room) want = room;
  uint64_t now = note_slow_path(tc, h, cls, 0);   // its bytes when it has them (count_refill)
  shared_pool_maybe_purge_at(now);
  page_heap_maybe_purge();
  huge_maybe_expire(now);
  // Blocks its owner left on a remote list first: the slabs' own keep.
  if (REMOTE_TICKETS && HAK_UNLIKELY(ticket_waiting(h, cls)) && refill_from_ticket(tc, h, cls, want))
    return 1;
  for (;;) {
    slab_meta_t *m = h->cur[cls];
    block_chain_t c = {HAK_BASE_NULL, HAK_BASE_NULL, 0};
    if (m != NULL) slab_take_free(m, want, room, &c);
    if (c.n == 0 && refill_from_exchange(tc, cls, want)) return 1;
    if (m == NULL) {
      if ((m = tiny_heap_next_slab(h, cls)) == NULL) return 0;
      if (HAK_UNLIKELY(first) && g_hak_config.bind_trim != 0) slab_trim_earlier_reach(m);
      slab_take_free(m, want, room, &c);
    }
    if (c.n == 0) {
      slab_meta_t *p = tiny_heap_partial_with_free(h, cls);
      if (p != NULL) {
        m = p;
        slab_take_free(m, want, room, &c);
        if (c.n == 0) slab_take_carved(m, carve_want(cls, want), &c);   // an adopted slab's uncarved end
      } else {
        slab_take_carved(m, carve_want(cls, want), &c);
#if !HAK_HARDENED
        if (HAK_UNLIKELY(first) && tc->cap_share != 0 && g_size_class[cls].kind == HAK_KIND_SMALL)
          share_first_page(m, cls, c.n);
#endif
      }
    }
    if (c.n > 0) {
#if HAK_HARDENED
      hardened_shuffle_chain(&c.first, &c.last, c.n);   // randomised reuse
#endif
      if (hak_base_is_null(c.last)) tls_sll_adopt_list(tc, cls, c.first, c.n);   // slab_take_whole
      else tls_sll_push_chain(tc, cls, c.first, c.last, c.n);
      count_refill(tc, cls, c.n);
      tiny_heap_trim_partial(h, cls, m);
#if HAK_DEBUG
      slab_validate(m);
#endif
      return 1;
    }
    tiny_heap_retire_current(h, cls);      // exhausted: it waits on the full list
  }
}
