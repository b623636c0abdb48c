// tiny_refill.c — refill and flush of the TLS lists (see tiny_refill.h).
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
#include "tiny/remote_free_box.h"
#include "tiny/slab_validate.h"
#include "tiny/thread_record.h"
#include "tiny/tiny_free_local_box.h"
#include "tiny/tiny_heap.h"
#include "tiny/tiny_thread.h"
#include "tiny/tls_sll_box.h"
#include "tiny/transfer_box.h"

_Static_assert(HAK_NUM_CLASSES <= HAK_STAT_CLASSES, "the counters have a slot per class");
_Static_assert(HAK_NUM_CLASSES <= 64, "tiny_heap_t.dying has a bit per class");

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

// A hand-over chain (tiny_handover) goes when it holds the class's batch,
// what a producer's refill of an unshrunk bound takes, half of what the
// consumer's list held before its bound shrank. With the shrunk bound's
// batch (a half to an eighth of that) prodcons -t 4 of 1-32 KiB took
// 1.13x the time, 64 KiB chains 1.21x, 128 KiB 1.13x, and at -t 8 the peak
// RSS was higher too (producers carve while short chains go home; 11
// paired rounds).
#define HANDOVER_BLOCKS(cls) g_size_class[cls].batch
_Static_assert(FREE_BATCH_MAX_BLOCK <= TRANSFER_MAX_BLOCK, "a held block's class is one the exchange takes");

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
// KiB peaked 5% higher.
#define CARVE_RAMP_SHIFT 3u

HAK_INLINE uint32_t carve_want(unsigned cls, uint32_t want) {
  uint32_t n = CARVE_BYTES / g_size_class[cls].size;
  if (n == 0 || (n < (1u << CARVE_RAMP_SHIFT) && t_tls_cache.cap_grow[cls] != 0)) {
    uint32_t streak = t_heap_p->refill_streak[cls];   // this refill's included
    uint32_t shift = streak > 1u ? streak - 1u : 0u;
    uint32_t ramp = 1u << (shift < CARVE_RAMP_SHIFT ? shift : CARVE_RAMP_SHIFT);
    if (n < ramp) n = ramp;
  }
  return n < want ? n : want;
}

// A chain of blocks being built in order.
typedef struct block_chain {
  hak_base_ptr_t first, last;
  uint32_t n;
} block_chain_t;

// A chain first..last of n blocks, already linked, at the end of c.
HAK_INLINE void chain_append_chain(block_chain_t *c, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n) {
  if (c->n == 0) c->first = first;
  else block_set_next(c->last, first);
  c->last = last;
  c->n += n;
}

HAK_INLINE void chain_append(block_chain_t *c, hak_base_ptr_t b) { chain_append_chain(c, b, b, 1); }

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
  if (slab_take_whole(m, want, room, c)) return;
  uint32_t limit = want + want / 2u;
  if (limit > room) limit = room;
  do {
    if (chains) slab_take_chains(m, want, limit, c);
    else slab_walk_free(m, want, c);
  } while (c->n < want && ss_remote_drain_to_freelist(m) > 0);
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

// A refill of n blocks in this thread's counters.
static void count_refill(const tls_cache_t *tc, unsigned cls, uint32_t n) {
  t_heap_p->left_bytes += (uint64_t)n * g_size_class[cls].size;   // what it took (note_slow_path)
  hak_class_counters_t *k = &hak_counters()->cls[cls];
  k->refills++;
  k->refill_blocks += n;
  k->cached = tls_cached(tc, cls);
}

// Tickets (remote_free_box.h): a chain sent to another thread's slab whose
// remote list waits stale keeps a block back, and the next refill of the
// class takes it with a batch of that list, keeping the block after the
// batch as the next ticket while the list lasts. Not in the hardened build,
// whose refill shuffles what it takes from the slabs.
#define REMOTE_TICKETS (!HAK_HARDENED)

// What the calling thread's flushes do with a stale list (tiny_refill.h
// tiny_tickets_mode): a LIVE thread's overflow (tiny_flush_overflow,
// tiny_free_remote) keeps its tickets; a thread's exit, or a parked heap's
// release, parks one in g_parked_ticket, where any thread's refill of the
// class finds it (larson's workers exit one after another, and their exits'
// flushes are what fill the lists of the slabs its sleeping main thread
// carved); any other flush (a trim) keeps none.
static __thread uint8_t t_tickets_mode __attribute__((tls_model("initial-exec")));
// One parked ticket a class at most (a relaxed load at every refill of a
// line written only when a ticket is parked or taken).
static _Atomic(void *) g_parked_ticket[HAK_NUM_CLASSES];

HAK_INLINE int ticket_held(const tiny_heap_t *h, unsigned cls) { return (int)(h->ticket_classes >> cls & 1u); }
static void ticket_keep(tiny_heap_t *h, unsigned cls, hak_base_ptr_t t) {
  h->ticket_classes |= (uint64_t)1 << cls;
  thread_record_of(h)->ticket[cls] = t;
}
// The ticket h holds of cls, no longer held.
static hak_base_ptr_t ticket_take(tiny_heap_t *h, unsigned cls) {
  hak_base_ptr_t t = thread_record_of(h)->ticket[cls];
  thread_record_of(h)->ticket[cls] = HAK_BASE_NULL;
  h->ticket_classes &= ~((uint64_t)1 << cls);
  return t;
}
static int ticket_park(unsigned cls, hak_base_ptr_t t) {
  void *none = NULL;
  if (atomic_load_explicit(&g_parked_ticket[cls], memory_order_relaxed) != NULL) return 0;
  HAK_SITE(SITE_PARKED_TICKET);
  // release: the block's link and mark, written before, go with it.
  return atomic_compare_exchange_strong_explicit(&g_parked_ticket[cls], &none, hak_base_raw(t), memory_order_release,
                                                 memory_order_relaxed);
}

unsigned tiny_tickets_mode(unsigned mode) {
  unsigned old = t_tickets_mode;
  t_tickets_mode = (uint8_t)mode;
  return old;
}

// Is m, another thread's slab whose remote list is not empty, one whose
// list a ticket may take: owned (ACTIVE: its owner keeps it, waiting or not)
// and the list stale? An abandoned slab's list goes with it to the thread
// that adopts it, and the last free into it recycles it, which a ticket would
// put off until a refill of its class.
static int ticket_worth(const slab_meta_t *m, uint64_t now) {
  return SLAB_STATE(atomic_load_explicit(&m->state, memory_order_relaxed)) == SLAB_ACTIVE && remote_list_stale(m, now);
}

// c (blocks of m, another thread's slab, whose remote list is not empty)
// keeps its first block back as a ticket if the list is worth one
// (ticket_worth) and there is a place for it.
static HAK_NOINLINE void flush_hold_ticket(slab_meta_t *m, block_chain_t *c) {
  tiny_heap_t *h = t_heap_p;
  unsigned cls = m->cls;
  unsigned mode = t_tickets_mode;
  if (mode == TICKETS_HOME ||
      (mode == TICKETS_KEEP ? ticket_held(h, cls)
                            : atomic_load_explicit(&g_parked_ticket[cls], memory_order_relaxed) != NULL))
    return;
  if (!ticket_worth(m, os_now_ms())) return;
  if (mode == TICKETS_KEEP) ticket_keep(h, cls, c->first);
  else if (!ticket_park(cls, c->first)) return;
  if (--c->n != 0) c->first = block_next(c->first);
}

// Ticket t of cls and up to want - 1 blocks of its slab's remote list onto
// the list of cls (want <= its room); the block after them, while the list
// holds more, is the thread's next ticket. A ticket, counted out of its
// slab, keeps the slab from being recycled, so its metadata is there to read.
static HAK_NOINLINE void refill_with_ticket(tls_cache_t *tc, tiny_heap_t *h, unsigned cls, uint32_t want,
                                            hak_base_ptr_t t) {
  hak_base_ptr_t first, last = t, next;
  uint32_t n = ss_remote_take(ss_registry_slab_of(hak_base_raw(t)), want > 1u ? want - 1u : 0u, &first, &last, &next);
  if (n != 0) block_set_next(t, first);
  tls_sll_push_chain(tc, cls, t, last, n + 1u);
  count_refill(tc, cls, n + 1u);
  hak_counters()->ticket_blocks += n + 1u;
  if (!hak_base_is_null(next)) ticket_keep(h, cls, next);
}

// The thread's ticket of cls, or the one parked.
static HAK_NOINLINE int refill_from_ticket(tls_cache_t *tc, tiny_heap_t *h, unsigned cls, uint32_t want) {
  hak_base_ptr_t t;
  if (ticket_held(h, cls)) {
    t = ticket_take(h, cls);
  } else {
    HAK_SITE(SITE_PARKED_TICKET);
    // acquire: the parker's release (the block's words).
    t = hak_base_from_raw(atomic_exchange_explicit(&g_parked_ticket[cls], NULL, memory_order_acquire));
    if (hak_base_is_null(t)) return 0;
  }
  refill_with_ticket(tc, h, cls, want, t);
  return 1;
}

// Another thread's surplus from the class exchange (transfer_box.h): a chain
// of at most a batch, its blocks still counted in their slabs and marked free.
static int refill_from_exchange(tls_cache_t *tc, unsigned cls, uint32_t want) {
  hak_base_ptr_t first, last;
  int own;
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

// cls's bound back to the class's if slab_take_whole raised it; the room goes
// negative if the list is longer (the caller flushes).
HAK_INLINE void class_cap_restore(tls_cache_t *tc, unsigned cls) {
  uint16_t cap = tls_class_cap(tc, cls, tc->cap_share);
  if (HAK_UNLIKELY(tc->cap[cls] != cap)) tls_set_cap(tc, cls, cap);
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

// Idle classes: blocks on a TLS list, and its class's current slab, stay
// with the thread however long the class goes unused, and each keeps its
// slab from going back: a program that moves on through sizes (buffers that
// grow a little each time, the last 150 kept) kept a medium or large slab
// (512 KiB, 2 MiB) per class it no longer used, until the thread exited.
// And when one thread allocates a class and another frees it (a collector's
// sweeper and the thread it frees for, a consumer) and the sizes move on,
// neither has a slow path of the class again: the allocating thread's
// current slab, emptied by the other's frees, the freeing thread's last
// blocks of it (too few to overflow, so the class never dies there: below)
// and the class exchange's last chains of it each pin a slab (bench/drift -t
// 2, sizes sweeping 500 B-111 KB every 10 ms: a 512 KiB slab for each of its
// 27 medium classes, 45 MB peak against mimalloc's 23).
// So at a slow path of the thread (a refill or an overflow's flush), once
// its refills have taken or its overflows flushed LEFT_LOOK_BYTES since
// the last look, or TLS_IDLE_DELAYS / LEFT_LOOKS purge delays have passed
// (0.5 s by default), a look at every class: one with no slow path since
// and whose list head (no block taken or given, or the same one taken and
// given back) and exchange (its count of chains put and taken) have not
// moved for LEFT_LOOKS looks in a row sends the exchange's chains home and
// gives its list back to its slabs, its current slab to the pool if EMPTY,
// and its partial slabs are trimmed (tcmalloc's thread cache scavenge, with
// the head for its low-water mark: the fast paths count nothing).
// What goes back is dirty FREE memory, which the dirty budget purges: a
// program that comes back to the class soon faults it in again. With looks
// 10 ms apart, bench/drift took 2x its time at 2.6x the page faults and the
// same peak; one look with the exchange's takes for its count was too few
// for a ring of 8 threads of 1-16 KiB (nearly every operation a slow path, a
// look every few hundred: classes went that long untaken by chance, 1.23x
// the time at +8 MB); at four looks bench/drift gave the classes of a
// sweep's top back after the next sweep had begun, over the dirty budget (64
// slabs purged early against 29, 1.2x the time). With two: drift -t 2 27 MB,
// 0.77x the time; drift 22.7 MB, 0.90x. One sweep, then 3 s of small blocks:
// RSS 3.5-12 MB at the end, was 38 (glibc 2.2, mimalloc 2.7, tcmalloc 50).
// A thread in a steady state has few slow paths, so every one reads the clock
// (every eighth or 64th came too rarely to look twice in that program's
// 3 s); `make bench-instr` is the same, 59.1. (The bytes' look and the
// clock's were two looks until the twenty-third session's review: the same
// test on the list head, the clock's with one look and no exchange.)
// (LEFT_LOOK_BYTES, LEFT_LOOKS: tiny_refill.h.)
#define TLS_IDLE_DELAYS 10u

// Class c's list goes home, its current slab back if EMPTY then, its partial
// slabs trimmed (an idle or a dying class). Above HAK_MEDIUM_MAX its grown
// bound goes back to the class's too, with the overflows that would grow it
// at its next refill: a program that sweeps through sizes (bench/drift) grew
// each class again at the refill that began its next sweep, for blocks it
// would take back only a sweep later, and the lists held that many when the
// sweep moved on (with 4 MiB a class there, 8.7 k -> 13.5 k page faults,
// 1.05x the time: the slabs they went back to were purged early and faulted
// in again). The smaller classes keep theirs (1 MiB a class; drift level):
// a class that comes back regrows only after a round of slow paths.
static void class_ungrow(tls_cache_t *tc, unsigned cls);
static void ticket_leave(tiny_heap_t *h, unsigned c, int park);
static void give_class_back(tiny_heap_t *h, unsigned c) {
  hak_counters()->classes_given_back++;
  if (g_size_class[c].size > HAK_MEDIUM_MAX) class_ungrow(&t_tls_cache, c);
  tiny_flush(c, UINT32_MAX);
  if (REMOTE_TICKETS && ticket_held(h, c)) ticket_leave(h, c, 1);   // for a thread that takes the class still
  tiny_heap_release_idle(h, c);
  if (!(h->left_gone >> c & 1u)) {   // (the looks after give it back again, empty)
    h->left_gone |= (uint64_t)1 << c;
    h->left_gone_at[c] = (uint8_t)h->left_look_count;
  }
}

// Class cls, given back, is refilled: within LEFT_BACK_LOOKS looks it was not
// left but between its bursts, and it is kept through the next
// LEFT_KEEP_LOOKS looks (neither look gives it back). A thread cycling
// through a few classes in bursts (30-60 blocks of a class taken, then freed,
// then the next class's) moves more bytes through its slow paths in a cycle
// than two looks' worth once its classes are 16-64 KiB: each class was given
// back (as left, or as dying at the next class's slow path after its frees
// overflowed) between its bursts, and every malloc was a refill of one
// carved block (tcmalloc 0.2x our time; bench/bursts). A class a sweep of
// sizes left (bench/drift) comes back a sweep later, 27-40 looks (six of its
// first sweep's within 12: with 8 and 64 here, drift kept 31 MB against
// 22.6).
static void note_class_back(tiny_heap_t *h, unsigned cls) {
  h->left_gone &= ~((uint64_t)1 << cls);
  if ((uint8_t)(h->left_look_count - h->left_gone_at[cls]) <= LEFT_BACK_LOOKS) h->left_keep[cls] = LEFT_KEEP_LOOKS;
}

static void exchange_send_home(unsigned c);
static void send_chain_home(unsigned cls, hak_base_ptr_t first, hak_base_ptr_t last);
static uint32_t flush_class(unsigned cls, uint32_t n);

static HAK_NOINLINE void look_idle_classes(tls_cache_t *tc, tiny_heap_t *h, uint64_t now) {
  uint64_t touched = h->left_touched;
  h->left_touched = 0;
  h->left_bytes = 0;
  h->left_look_ms = now;
  h->left_look_count++;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    if (h->left_keep[c] != 0) {   // came back too soon once (note_class_back)
      h->left_keep[c]--;
      continue;
    }
    void *head = hak_base_raw(tc->lists[c].head);
    if ((touched >> c & 1u) || head != h->left_head[c]) {
      h->left_head[c] = head;
      h->left_looks[c] = 0;
      continue;
    }
    // Quiet here: the exchange's count, read only now (its line is written
    // by every thread that puts or takes the class: a look read 40 such
    // lines, most of them another core's). The first quiet look takes it as
    // the baseline.
    uint32_t moves = g_size_class[c].size <= TRANSFER_MAX_BLOCK ? transfer_moves(c) : 0;
    if (h->left_looks[c] == 0 || moves != h->left_moves[c]) {
      h->left_moves[c] = moves;
      h->left_looks[c] = 1;
      continue;
    }
    if (h->left_looks[c] < LEFT_LOOKS) h->left_looks[c]++;
    if (h->left_looks[c] < LEFT_LOOKS) continue;
    // Idle for LEFT_LOOKS looks: every look from now on gives back what
    // came since (the other thread's last frees reach the slabs later).
    if (moves != 0 && transfer_chains(c) != 0) {
      exchange_send_home(c);
      h->left_moves[c] = transfer_moves(c);
    }
    // Given back before and nothing here since (no block on its list or
    // hand-over chain, no slab of it on any list of the heap): nothing for
    // later frees to reach. A thread whose every malloc was a refill looked
    // every few hundred operations and gave back every idle class each time
    // (`bursts -k 8 -b 100`: 134 k give-backs in 100 rounds, a fifth of its
    // instructions).
    if ((h->left_gone >> c & 1u) && tls_cached(tc, c) == 0 && h->handover_n[c] == 0 && h->cur[c] == NULL &&
        h->partial[c] == NULL && h->full[c] == NULL)
      continue;
    give_class_back(h, c);
    h->left_head[c] = hak_base_raw(tc->lists[c].head);
  }
  // The heaps parked at threads' exits as long as an idle class waits (its
  // lists and slabs given back whole: tiny_thread.c).
  thread_parked_expire(0);
}

// Dying classes: a class whose bound shrank (it only frees lately) keeps
// the last blocks freed on its list, and each pins the slab it is in, the
// current one too (bench/drift, when 32-256 KiB had 2 MiB slabs: a slab or
// two per class the sizes moved past, 20 of its 58 MB), until the idle look a second
// later. Such a class is marked dying at an overflow (tiny_flush_overflow)
// when its list could hold every block of its current slab still out, or
// when it has no current slab (a thread that frees other threads' blocks).
// At every slow path of another class the head of each dying list is looked
// at; one that has not moved for DYING_LOOKS looks in a row (one for a class
// with a current slab) gives its list back, its current slab if that is
// EMPTY then, and its partial slabs are trimmed (tiny_heap_release_idle). A
// refill of the class ends its dying. A thread freeing other threads' blocks
// of many classes at random leaves a class alone for a few of its slow paths
// often, and its lists feed the class exchange: flushed after one look,
// prodcons -t 4 of 1-32 KiB took 1.12x the time and +2.7 k page faults.
#define DYING_LOOKS 64u

static HAK_NOINLINE void look_dying_classes(tls_cache_t *tc, tiny_heap_t *h, unsigned busy) {
  for (uint64_t bits = h->dying & ~((uint64_t)1 << busy); bits != 0; bits &= bits - 1) {
    unsigned c = (unsigned)__builtin_ctzll(bits);
    void *head = hak_base_raw(tc->lists[c].head);
    if (head != h->dying_head[c]) {
      h->dying_head[c] = head;
      h->dying_looks[c] = 0;
      continue;
    }
    if (++h->dying_looks[c] < (h->cur[c] != NULL ? 1u : DYING_LOOKS) || h->left_keep[c] != 0) continue;
    h->dying &= ~((uint64_t)1 << c);
    give_class_back(h, c);
  }
}

// After an overflow's flush of cls with its bound shrunk.
static void note_dying_class(tls_cache_t *tc, tiny_heap_t *h, unsigned cls) {
  slab_meta_t *m = h->cur[cls];
  if (m != NULL && slab_live(m) > tls_cached(tc, cls)) return;
  if (!(h->dying >> cls & 1u)) h->dying_looks[cls] = 0;
  h->dying |= (uint64_t)1 << cls;
  h->dying_head[cls] = hak_base_raw(tc->lists[cls].head);
}

// A slow path of cls (a refill asking for, or an overflow's flush of,
// `blocks`): the look at dying classes, and the look at idle ones when due.
// Returns the clock it read (os_now_ms), for the purge look after it.
static uint64_t note_slow_path(tls_cache_t *tc, tiny_heap_t *h, unsigned cls, uint32_t blocks) {
  if (HAK_UNLIKELY(h->dying != 0)) look_dying_classes(tc, h, cls);
  h->left_touched |= (uint64_t)1 << cls;
  h->left_bytes += (uint64_t)blocks * g_size_class[cls].size;
  uint64_t now = os_now_ms();
  if (h->left_bytes >= LEFT_LOOK_BYTES ||
      now - h->left_look_ms >= (uint64_t)g_hak_config.purge_delay_ms * TLS_IDLE_DELAYS / LEFT_LOOKS)
    look_idle_classes(tc, h, now);
  return now;
}

// The hand-over chain of cls (tiny_handover) to the class exchange, or home
// when the exchange is full or `home` (a whole flush: the thread's exit,
// which trimmed the exchange before, a trim, an idle class).
static void handover_send(tiny_heap_t *h, unsigned cls, int home) {
  uint32_t n = h->handover_n[cls];
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
static int handover_take(tls_cache_t *tc, tiny_heap_t *h, unsigned cls, uint32_t room) {
  uint32_t n = h->handover_n[cls];
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
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++)
    if (h->handover_n[c] != 0) handover_send(h, c, 1);
}

void tiny_handover(unsigned cls, hak_base_ptr_t b) {
  HAK_ASSERT(g_size_class[cls].size <= TRANSFER_MAX_BLOCK);   // the classes the exchange takes
  tiny_heap_t *h = t_heap_p;
  uint32_t n = h->handover_n[cls];
  block_set_free(b);
  block_set_next(b, n != 0 ? h->handover_first[cls] : HAK_BASE_NULL);
  if (n == 0) h->handover_last[cls] = b;
  h->handover_first[cls] = b;
  h->handover_n[cls] = (uint16_t)++n;
  if (n >= HANDOVER_BLOCKS(cls)) handover_send(h, cls, 0);
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
  free_batch_note_heap(h->owned_blocks);
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
  if (HAK_UNLIKELY(h->handover_n[cls] != 0) && handover_take(tc, h, cls, room)) return 1;
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
  if (REMOTE_TICKETS &&
      HAK_UNLIKELY(ticket_held(h, cls) || atomic_load_explicit(&g_parked_ticket[cls], memory_order_relaxed) != NULL) &&
      refill_from_ticket(tc, h, cls, want))
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

// A run of blocks of one slab of this thread's, first..last (n, linked in
// the list's order), goes home at once: no way holds it. Nothing is gained by
// gathering them: a run home costs no atomic (`used` counts the slab's free
// list, superslab.h). While it cost one, runs of this thread's slabs took
// ways too, and a big heap freed in random order (a list of 1 M nodes of 32
// B, 64 slabs) switched ways at nearly every block, sending a chain of one
// block home at each switch: ~120 instructions a block (flush_ways_switch and
// flush_deliver), now ~35.
static void flush_deliver_own(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n) {
  int empty = tiny_free_local_box(m, first, last, n);
  tiny_heap_slab_freed(t_heap_p, m, empty);
}

// Hand a chain of blocks of one slab back to it: the owner's own slab takes
// it without a CAS; any other goes through its remote list. Returns the
// blocks that went to another thread's slab.
static uint32_t flush_deliver(slab_meta_t *m, block_chain_t *c) {
  uint32_t n = c->n, remote = 0;
  if (atomic_load_explicit(&m->owner, memory_order_relaxed) == thread_self_id()) {
    flush_deliver_own(m, c->first, c->last, n);
  } else {
    if (REMOTE_TICKETS && atomic_load_explicit(&m->remote_head, memory_order_relaxed) != NULL) flush_hold_ticket(m, c);
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
  if (own != NULL) flush_deliver_own(own, first, last, n);
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
static void send_chain_home(unsigned cls, hak_base_ptr_t first, hak_base_ptr_t last) {
  block_set_next(last, TLS_SLL_END);
  flush_gather(&first, UINT32_MAX, cls, NULL, NULL);
}

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

// The list of cls is full and a block must go on it: a batch flushed, and
// room left for the block.
static void tiny_flush_overflow(unsigned cls) {
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
  uint32_t n = tls_batch(tc, cls) + (uint32_t)-tc->lists[cls].room;
  unsigned mode = tiny_tickets_mode(TICKETS_KEEP);
  uint32_t others = flush_class(cls, n);
  tiny_tickets_mode(mode);
  if (tc->cap_shift[cls] != 0) note_dying_class(tc, t_heap_p, cls);
  shared_pool_maybe_purge_at(note_slow_path(tc, t_heap_p, cls, n));   // (tiny_flush's look, with this clock)
  // A batching thread's lists keep their bounds (tiny_cache_ungrow): their
  // own overflows are what tell it to stop (free_batch_note_flush).
  if (others == 0 && !t_free_batch.active) {
    if (tc->local_overflow[cls] < UINT8_MAX) tc->local_overflow[cls]++;
  } else if (others != 0) {   // other threads' blocks: the grown bound goes
    class_ungrow(tc, cls);
  }
  // Room for the caller's block. A grown bound given back on the way (the
  // ungrow above, or batching's start in the flush: tiny_cache_ungrow)
  // flushes the list only down to the class's bound, full: the caller's push
  // then failed, and its block was on no list, counted in use by its slab
  // for good (four threads exchanging 8 B-64 KiB blocks, one run in 10-60).
  if (HAK_UNLIKELY(tc->lists[cls].room <= 0)) tiny_flush(cls, tls_batch(tc, cls) + 1u + (uint32_t)-tc->lists[cls].room);
#if HAK_DEBUG
  tls_sll_validate(cls);
#endif
}

void tiny_push_flushing(unsigned cls, hak_base_ptr_t b) {
  tls_cache_t *tc = &t_tls_cache;
  if (tc->lists[cls].room == 0) tiny_flush_overflow(cls);
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
    // thread's exit flushes all 52, and each cost ~490 instructions with
    // nothing to move (its ways cleared, the purge looked at): the exit 36 k
    // -> 22 k under callgrind (churn -c 16 -k 16; its time level).
    if (tls_cached(tc, cls) == 0 && t_heap_p->handover_n[cls] == 0) return 0;
    handover_send(t_heap_p, cls, 1);
  }
  tiny_cache_rescale();
  block_chain_t foreign = {HAK_BASE_NULL, HAK_BASE_NULL, 0};
  uint32_t limit = tiny_threads_live(), remote = 0;
  int overflow = n <= g_size_class[cls].batch;   // not the exit's flush
  int exchange = overflow && g_size_class[cls].size <= TRANSFER_MAX_BLOCK && !transfer_full(cls, limit);
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

// Ticket t back to its slab (which may be this thread's by now: adopted).
static void ticket_home(hak_base_ptr_t t) {
  slab_meta_t *m = ss_registry_slab_of(hak_base_raw(t));
  block_set_next(t, HAK_BASE_NULL);
  if (atomic_load_explicit(&m->owner, memory_order_relaxed) == thread_self_id()) flush_deliver_own(m, t, t, 1);
  else remote_free_push_chain(m, t, t, 1);
}

// The ticket h holds of class c leaves it: parked if `park`, its list is
// still worth one and the class has none parked; else home.
static void ticket_leave(tiny_heap_t *h, unsigned c, int park) {
  hak_base_ptr_t t = ticket_take(h, c);
  slab_meta_t *m = ss_registry_slab_of(hak_base_raw(t));
  if (park && atomic_load_explicit(&m->remote_head, memory_order_relaxed) != NULL && ticket_worth(m, os_now_ms()) &&
      ticket_park(c, t))
    return;
  ticket_home(t);
}

// A whole flush's: every ticket h holds leaves it, parked in TICKETS_PARK mode.
static void tickets_leave(tiny_heap_t *h) {
  while (h->ticket_classes != 0)
    ticket_leave(h, (unsigned)__builtin_ctzll(h->ticket_classes), t_tickets_mode == TICKETS_PARK);
}

uint32_t tiny_parked_tickets(void) {
  uint32_t n = 0;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) n += atomic_load_explicit(&g_parked_ticket[c], memory_order_relaxed) != NULL;
  return n;
}

void tiny_parked_tickets_home(void) {
  if (!REMOTE_TICKETS) return;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    if (atomic_load_explicit(&g_parked_ticket[c], memory_order_relaxed) == NULL) continue;
    HAK_SITE(SITE_PARKED_TICKET);
    void *t = atomic_exchange_explicit(&g_parked_ticket[c], NULL, memory_order_acquire);
    if (t != NULL) ticket_home(hak_base_from_raw(t));
  }
}

// One look at the purge budget for all of them (the caller's): a thread's
// exit looked once a class it held blocks of (churn -c 16 -k 16: ~12 looks,
// 2.4 k instructions).
void tiny_flush_all(void) {
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) flush_class(c, UINT32_MAX);   // (the empty ones return at once)
  if (REMOTE_TICKETS) tickets_leave(t_heap_p);
}

static void exchange_send_home(unsigned c) {
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
