// shared_pool_release.c — abandoning, EMPTY recycling, purge and trim (see
// shared_pool.h).
#include "config/config.h"
#include "os/os.h"
#include "shared_pool/shared_pool_internal.h"
#include "stats/stats.h"

static _Atomic uint64_t g_last_purge_ms;
// EMPTY_LISTED slabs waiting on the abandoned stacks for the purge pass or
// an adopter, and the bytes their blocks reached (abandoned_empty_bytes):
// dirty memory the pools' own count does not see. (Counted there, so that a
// program whose exited threads' blocks were all freed by another thread, and
// which then goes idle, gets them purged as it would its own: 4 threads' 64
// MiB each, freed by main, stayed resident while it slept, 72 of 72 MB.)
static _Atomic uint32_t g_abandoned_empty;
static _Atomic int64_t g_abandoned_empty_bytes;
int g_pool_recycle_at_empty = 1;   // (shared_pool_internal.h)

// The bytes an EMPTY_LISTED slab counts: its pages reached (its carve point
// stands still while nobody owns it), and a hardened size table's.
static int64_t abandoned_empty_bytes(const slab_meta_t *m) {
  size_t reach = atomic_load_explicit(&m->carve_off, memory_order_relaxed);
  reach = (reach + 4095u) & ~(size_t)4095u;
  if (HAK_HARDENED && m->block_size > HAK_TINY_MAX) reach += SLAB_TABLE_DIRTY_BYTES;
  return (int64_t)reach;
}

void abandoned_empty_leave(const slab_meta_t *m) {
  atomic_fetch_sub_explicit(&g_abandoned_empty, 1, memory_order_relaxed);
  atomic_fetch_sub_explicit(&g_abandoned_empty_bytes, abandoned_empty_bytes(m), memory_order_relaxed);
}

// A FREE slab, exclusively held, back into its kind's pool.
static void pool_put(slab_meta_t *m) {
  unsigned kind = ss_of_meta(m)->kind;
  uint64_t now = os_now_ms();
  pool_lock(kind);
  pool_put_locked(m, now);
  pool_unlock(kind);
}

void shared_pool_detach_slab(slab_meta_t *m) {
  HAK_ASSERT(m->where == SLAB_IN_NONE && atomic_load(&m->notify) == SLAB_NOTIFY_IDLE);
  // Nobody's from here: `used` counts the live blocks alone (superslab.h), so
  // whoever brings it to 0 below or later sees the slab empty. The remote
  // list's counted blocks leave it with the free list's, the list's word
  // asking for attention first: every push from then on lowers `used` itself.
  uint32_t f = slab_free_count(m) + remote_list_attend_uncount(m);
  if (f != 0) {
    HAK_SITE(SITE_SLAB_USED);
    atomic_fetch_sub_explicit(&m->used, f, memory_order_acq_rel);
  }
  slab_set_owner(m, 0, memory_order_release);
  uint32_t w = atomic_load_explicit(&m->state, memory_order_relaxed);
  HAK_SITE(SITE_SLAB_STATE);
  if (slab_has_free_blocks(m)) {
    // seq_cst: ordered before the loads below and after our list writes
    // (an adopter acquires the state).
    atomic_store_explicit(&m->state, SLAB_WITH(w, SLAB_LISTED), memory_order_seq_cst);
    shared_pool_list_abandoned(m);
  } else {
    atomic_store_explicit(&m->state, SLAB_WITH(w, SLAB_DETACHED), memory_order_seq_cst);
    // A remote free that read ACTIVE before our store did not list the slab;
    // one of us sees the other (both sides are seq_cst).
    if (remote_word_has_list(slab_remote_word(m, memory_order_seq_cst))) {
      uint32_t d = SLAB_WITH(w, SLAB_DETACHED);
      if (atomic_compare_exchange_strong(&m->state, &d, SLAB_WITH(w, SLAB_LISTED))) shared_pool_list_abandoned(m);
    }
  }
  if (atomic_load_explicit(&m->used, memory_order_acquire) == 0) shared_pool_slab_empty(m);
}

// The fields of a slab that has just become FREE (its state CAS won).
static void slab_clear_bound_fields(slab_meta_t *m) {
  m->capacity = 0;
  m->early_pages = 0;   // was free_n
  slab_note_dirty_end(m);
  slab_set_carve(m, m->base);
  m->where = SLAB_IN_NONE;
  slab_set_owner(m, SLAB_OWNER_POOL, memory_order_relaxed);
  atomic_store_explicit(&m->dirty, 1, memory_order_relaxed);
}

// Take a class's abandoned stack whole, give its EMPTY slabs to the pool and
// push the others back. Concurrent adopters see the stack empty for a moment
// and fall through to stage 2; a slab that goes EMPTY_LISTED while its stack
// is taken waits there for the next collection.
static void collect_class_empty(unsigned cls) {
  uint64_t old = atomic_load_explicit(&g_abandoned[cls], memory_order_acquire);
  if ((uint32_t)old == 0) return;
  // acq_rel: we read the links.
  while (!atomic_compare_exchange_weak_explicit(&g_abandoned[cls], &old, ((old >> 32) + 1) << 32,
                                                memory_order_acq_rel, memory_order_acquire)) {
    if ((uint32_t)old == 0) return;   // (an adopter or another collector took it)
  }
  HAK_SITE(SITE_ABANDONED);
  uint32_t keep_first = 0, keep_last = 0;
  for (uint32_t id = (uint32_t)old; id != 0;) {
    uint32_t next = atomic_load_explicit(&g_slab_next[id], memory_order_relaxed);
    slab_meta_t *m = slab_from_id(id);
    uint32_t w = atomic_load_explicit(&m->state, memory_order_acquire);
    int released = 0;
    while (SLAB_STATE(w) == SLAB_EMPTY_LISTED) {
      if (atomic_compare_exchange_weak(&m->state, &w, SLAB_NEXT_GEN(w, SLAB_FREE))) {
        abandoned_empty_leave(m);
        slab_clear_bound_fields(m);
        pool_put(m);
        released = 1;
        break;
      }
    }
    if (!released) {
      atomic_store_explicit(&g_slab_next[id], keep_first, memory_order_relaxed);
      keep_first = id;
      if (keep_last == 0) keep_last = id;
    }
    id = next;
  }
  if (keep_first != 0) abandoned_push_chain(cls, keep_first, keep_last);
}

void shared_pool_slab_empty(slab_meta_t *m) {
  // acquire: pairs with the release of the state's last writer.
  uint32_t w = atomic_load_explicit(&m->state, memory_order_acquire);
  // Re-check after reading the state: a stale caller meets a later life of the
  // slab only if that life is empty too, where acting is still right.
  if (atomic_load_explicit(&m->used, memory_order_acquire) != 0) return;
  shared_pool_slab_empty_seen(m, w);
}

void shared_pool_slab_empty_seen(slab_meta_t *m, uint32_t w) {
  switch (SLAB_STATE(w)) {
  case SLAB_DETACHED: {
    HAK_SITE(SITE_SLAB_STATE);
    if (atomic_compare_exchange_strong(&m->state, &w, SLAB_NEXT_GEN(w, SLAB_FREE))) {
      slab_clear_bound_fields(m);
      pool_put(m);
    }
    break;
  }
  case SLAB_LISTED: {
    unsigned cls = m->cls;   // (LISTED: fixed until an adopter binds it afresh)
    // Counted before the state says EMPTY_LISTED, from the carve point it has
    // while LISTED (nobody carves an unowned slab): once it does, an adopter
    // or the collector may take it and subtract at once, and a count added
    // after, from the carve point it then reset, would be lost for good.
    int64_t bytes = abandoned_empty_bytes(m);
    atomic_fetch_add_explicit(&g_abandoned_empty_bytes, bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&g_abandoned_empty, 1, memory_order_relaxed);
    HAK_SITE(SITE_SLAB_STATE);
    if (atomic_compare_exchange_strong(&m->state, &w, SLAB_WITH(w, SLAB_EMPTY_LISTED))) {
      HAK_SITE(SITE_ABANDONED);
      // EMPTY recycling at once: the slab goes to the pool now, for any
      // class, not when the purge pass or the class's next refill finds it.
      // A slab its owner gave up while other threads' frees came in (a
      // partial slab of a class it no longer refills, trimmed before an
      // acquire: tiny_heap.c heap_trim_kind) is emptied by those frees, and
      // while it waited here it was not the memory the owner wrote next:
      // bench/drift -t 2 (a sweeper thread frees the buffers) took 1 364 of
      // its 2 275 slabs from the stacks' collection 100-600 buffers after
      // their last write, so 17.2% of the bytes it wrote had last been
      // written 32 MB of writes before or more (`drift --reuse`; tcmalloc
      // 6.5%; the L3 here is 32 MB) and its memset took 1.8x tcmalloc's
      // samples. Now 11.6%: 0.921x the time (21 paired rounds), 24.8 MB peak
      // RSS against 29.0. The walk is short (1-8 slabs a collection on average
      // in drift -t 2, prodcons -t 4, ring, larson, mstress); what it adds
      // is the pool's lock where an adopter's lock-free pop took the slab
      // before (mstress -t 16: 0.30 -> 0.63 pool locks per 1 000 operations).
      if (g_pool_recycle_at_empty) collect_class_empty(cls);
      shared_pool_maybe_purge();   // past the budget now, maybe: the next call may be long in coming
    } else {
      atomic_fetch_sub_explicit(&g_abandoned_empty, 1, memory_order_relaxed);
      atomic_fetch_sub_explicit(&g_abandoned_empty_bytes, bytes, memory_order_relaxed);
    }
    break;
  }
  default:
    break;  // ACTIVE: its owner keeps it; EMPTY_LISTED/FREE: already done
  }
}

void shared_pool_release_owned(slab_meta_t *m, slab_stash_t *st) {
  HAK_ASSERT(SLAB_STATE(atomic_load(&m->state)) == SLAB_ACTIVE && slab_live(m) == 0);
  atomic_store_explicit(&m->used, 0, memory_order_relaxed);   // (it counted the free list; no block is out)
  slab_unbind(m);
  unsigned kind = ss_of_meta(m)->kind;
  if (st->n < g_stash_cap[kind]) {
    st->slab[st->n++] = m;
    return;
  }
  // Stash full: m and half the stash go back under one lock.
  uint64_t now = os_now_ms();
  pool_lock(kind);
  pool_put_locked(m, now);
  for (uint32_t keep = st->n / 2; st->n > keep;) pool_put_locked(st->slab[--st->n], now);
  pool_unlock(kind);
}

void shared_pool_stash_release(slab_stash_t *st) {
  if (st->n == 0) return;
  unsigned kind = ss_of_meta(st->slab[0])->kind;
  uint64_t now = os_now_ms();
  pool_lock(kind);
  while (st->n > 0) pool_put_locked(st->slab[--st->n], now);
  pool_unlock(kind);
}

void pool_collect_abandoned_empty(void) {
  if (atomic_load_explicit(&g_abandoned_empty, memory_order_relaxed) == 0) return;
  for (unsigned cls = 0; cls < HAK_NUM_CLASSES; cls++) collect_class_empty(cls);
}

// Dirty slabs purged per round: taken out of the pool under the kind's lock,
// madvised with it released (another thread's acquire never waits for a
// system call), then given back clean.
#define PURGE_BATCH 16u

// A slab's early_pages count its dirty bytes in these (a 2 MiB slab: 512).
#define EARLY_PAGE 4096u
_Static_assert(SS_SIZE / EARLY_PAGE <= UINT16_MAX, "a slab's pages fit early_pages");

// When the slabs of an all-FREE SuperSlab have waited the purge delay: its
// dirty slabs since they went FREE, and the ones purged early (over the
// budget, early_pages set) since their purge; a clean slab otherwise waited
// before its purge. (Early-purged slabs counted as waited: the next pass
// unmapped their SuperSlabs, so a program that takes its memory back in
// rounds mapped new ones instead, and the take-back that raises the budget
// was never seen: rounds of 1 600 blocks of 64 KiB, 913 munmap and 133 mmap
// calls.)
// Returns when the last of them started its wait (0: none waits).
static uint64_t ss_wait_start(superslab_t *ss) {
  uint64_t at = 0;
  for (unsigned i = 0; i < ss->nslabs; i++) {
    slab_meta_t *m = ss_slab(ss, i);
    if ((atomic_load_explicit(&m->dirty, memory_order_relaxed) || m->early_pages != 0) && m->free_since_ms > at)
      at = m->free_since_ms;
  }
  return at;
}

// Unmap a kind's all-FREE SuperSlabs past the hysteresis that have waited
// (all of them when `everything`), from the pool list's tail (the ones that
// got a FREE slab least lately are kept last); the earliest time one of the
// rest started its wait into unmap_wait_ms, so that the next passes walk
// the list only once that one may have waited. Kind's lock held.
static void unmap_waited_locked(pool_kind_t *pk, int everything, uint64_t now, int *released) {
  uint64_t next = UINT64_MAX;
  uint32_t kept_empty = 0;
  pk->unmap_walks++;
  superslab_t *tail = pk->head;
  while (tail != NULL && tail->pool_next != NULL) tail = tail->pool_next;
  for (superslab_t *ss = tail, *prev; ss != NULL; ss = prev) {
    prev = ss->pool_prev;
    if (ss->free_mask != ss_all_slabs_mask(ss)) continue;
    if (!everything && ++kept_empty <= g_hak_config.keep_empty_superslabs) continue;
    uint64_t at = everything ? 0 : ss_wait_start(ss);
    if (now >= at + g_hak_config.purge_delay_ms) {
      pool_unmap_superslab(ss);
      *released = 1;
    } else if (at < next) {
      next = at;
    }
  }
  pk->unmap_wait_ms = next;
}

// Would a purge of dirty FREE slab m now come before its delay (and not
// `everything`)?
static int purge_early(const slab_meta_t *m, int everything, uint64_t now) {
  return !everything && now < m->free_since_ms + g_hak_config.purge_delay_ms;
}

// May m be purged now: not early, or early while bytes past the target are left?
static int purge_eligible(const slab_meta_t *m, int everything, size_t over, uint64_t now) {
  return !purge_early(m, everything, now) || over != 0;
}

// Take m out of the pool for the purge, counted as early when it is.
static void purge_take_locked(pool_kind_t *pk, slab_meta_t *m, int everything, size_t *over, uint64_t now) {
  m->early_pages = 0;
  if (purge_early(m, everything, now)) {
    size_t bytes = slab_dirty_bytes(m);
    *over -= bytes < *over ? bytes : *over;
    m->early_pages = (uint16_t)((bytes + EARLY_PAGE - 1) / EARLY_PAGE);
    pk->purged_early++;
    if (++pk->recent_early >= REGRET_RECENT_MAX) {
      pk->recent_early /= 2;
      pk->recent_taken /= 2;
    }
  }
  pool_take_slab_locked(m);      // (off the dirty list)
}

// One round over a kind's pool: unmap all-FREE SuperSlabs past the
// hysteresis (all of them when `everything`) once one may have waited, take
// out up to PURGE_BATCH dirty FREE slabs that have waited long enough (any,
// when `everything`), and others while *over (bytes past the purge target)
// lasts, oldest first (the dirty list): the slabs purged early are the ones
// that went FREE longest ago, which a take (the newest dirty slabs first, in
// the SuperSlab that got a FREE slab last) would reach last, and the ones it
// takes next stay resident. (Taken in the takes' order, each early purge
// took what the next take wanted: mstress -t 8 0.976x the time with 6% fewer
// page faults the other way, -t 16 -r 100 0.980x, prodcons -t 4
// 0.929-0.969x, churn 0.969x.) The batch is put in address order for
// purge_batch's runs. Kind's lock held.
static uint32_t purge_collect_locked(unsigned kind, int everything, size_t *over, uint64_t now, slab_meta_t **out,
                                     int *released) {
  pool_kind_t *pk = &g_pool[kind];
  if (everything || (atomic_load_explicit(&pk->empty_ss, memory_order_relaxed) > g_hak_config.keep_empty_superslabs &&
                     pk->unmap_wait_ms != UINT64_MAX && now >= pk->unmap_wait_ms + g_hak_config.purge_delay_ms))
    unmap_waited_locked(pk, everything, now, released);
  uint64_t next_due = UINT64_MAX;
  uint32_t n = 0;
  for (slab_meta_t *m; (m = pk->dirty_oldest) != NULL;) {
    if (n == PURGE_BATCH) {
      next_due = now;                            // a full batch: another round is due
      break;
    }
    if (!purge_eligible(m, everything, *over, now)) {
      next_due = m->free_since_ms + g_hak_config.purge_delay_ms;   // the list's order: the rest are later
      break;
    }
    // The oldest, and with it the dirty FREE slabs of its SuperSlab that may
    // go too, in address order: purge_batch's runs of neighbours (a call
    // each, and a TLB shootdown), and what stays dirty stays together.
    superslab_t *ss = ss_of_meta(m);
    for (uint32_t mask = ss->free_mask; mask != 0 && n < PURGE_BATCH; mask &= mask - 1) {
      slab_meta_t *o = ss_slab(ss, (unsigned)__builtin_ctz(mask));
      if (!atomic_load_explicit(&o->dirty, memory_order_relaxed) || !purge_eligible(o, everything, *over, now)) continue;
      purge_take_locked(pk, o, everything, over, now);
      uint32_t i = n++;
      for (; i > 0 && out[i - 1]->base > o->base; i--) out[i] = out[i - 1];
      out[i] = o;
    }
  }
  atomic_store_explicit(&pk->next_due_ms, next_due, memory_order_relaxed);
  return n;
}

// Past the dirty budget, the slabs purged early bring the pools down to this
// fraction of it, not to 0: the slabs of threads that just exited are what
// the next threads take (mstress: purging every one made each round fault its
// memory in again, 2x mimalloc's page faults).
#define PURGE_TARGET_NUM 3u
#define PURGE_TARGET_DEN 4u

// The dirty budget adapts to what the program takes back. A slab purged
// early (over the budget, before its delay) that is taken again within the
// delay was a loss: its pages fault in again, and the budget was smaller
// than the program's swing (a producer whose consumer frees 256 blocks of
// 1-32 KiB at a time empties eight 512 KiB slabs at once; the producer takes
// them back a moment later). The bytes it had dirty (what faults in again) are
// added to its kind's regret, up to the largest of REGRET_MAX_SLABS of the
// kind's slabs, one budget, and 1/REGRET_LIVE_DEN of the bytes of the kind's
// slabs out of the pool: with the 2 MiB default a program with little memory
// keeps at most 2 MiB more for the small kind, 4 MiB for the medium and
// 16 MiB for the large; one with more keeps at most a quarter more than it has
// out (8 producers and 8 consumers of 8 B-32 KiB blocks, ~100 MB out, swing by
// more than 4 MiB: 0.62x the time with the quarter). A kind whose recent early
// purges nearly all came back (7 in 8) is a program taking its memory back in
// rounds: it may keep the larger of REGRET_MAX_BYTES (32 MiB) and all it has
// out. (Glibc's bench-malloc-simple shape, rounds of 1 600 blocks of 8 KiB:
// 2 408 of 2 437 early purges taken back, 312 k page faults and 1.8x
// tcmalloc's time with the 4 MiB cap; 0.58x the time with 32 MiB. With 32 MiB
// for every kind, prodcons -t 4 (2 in 3 came back) peaked at 115 MB against
// 104.)
// And when those take-backs are also an eighth or more of all the slabs the
// kind took from the pool lately (REGRET_REFAULT_DEN), the purges cost a
// fault on much of what the program allocates: the regret goes to
// REGRET_MAX_BYTES at once (and on by the losses to the cap). A program that
// frees and takes back rounds of a growing size (20 000 blocks of 24 B, 48 B,
// ... 1 000 B, each size three times) learned one round late at every size,
// its regret growing by what one round had lost: 3.2x mimalloc's time, 1 176
// slabs purged and taken back; now 50, the peers' time. Not to the cap
// itself (all the kind has out): prodcons -t 4 (1-32 KiB) shows both signs in
// some runs, and went from 65-85 MB peak RSS to 94-108 in four runs of six
// (77-88 with the jump to 32 MiB; a jump at the 7-in-8 sign alone: 115).
#ifndef REGRET_REFAULT_DEN
#define REGRET_REFAULT_DEN 8u
#endif
// A kind's regret halves after REGRET_FORGET_DELAYS purge delays without a
// loss, so a burst does not keep the pages resident for good.
#define REGRET_FORGET_DELAYS 10u

void pool_note_regret(pool_kind_t *pk, slab_meta_t *m) {
  pool_note_takes(pk, 1);   // a take of what the kind kept, first: the share below counts it
  size_t lost = (size_t)m->early_pages * EARLY_PAGE;
  m->early_pages = 0;
  uint64_t now = os_now_ms();
  // Came back: for the share of early purges that come back (the rounds'
  // sign below), late or not. Counting only those within the delay, a
  // program whose rounds take longer than the delay (64 MB of 20 KB blocks
  // allocated, all freed, ten times: each round's faults make it ~100 ms)
  // saw a third of each round's purges come back "late", learned its
  // rounds in the eighth round or never, and faulted 92-212 k pages in 1.2-2.8 s;
  // with them, in the second: 51 k, 0.71 s (tcmalloc 0.25 s at 72 MB, we
  // peak at 67).
  pk->recent_taken++;
  if (now - m->free_since_ms >= g_hak_config.purge_delay_ms) return;   // it would have been purged by now: no loss
  pk->taken_back++;
  pk->recent_refaults++;
  size_t cap = ((size_t)1 << ss_of_meta(m)->slab_shift) * REGRET_MAX_SLABS;
  if (cap < g_hak_config.purge_dirty_max) cap = g_hak_config.purge_dirty_max;
  if (cap < out_bytes(pk) / REGRET_LIVE_DEN) cap = out_bytes(pk) / REGRET_LIVE_DEN;
  // Nearly every recent early purge came back (7 in 8): the rounds are the
  // program's; it may keep REGRET_MAX_BYTES, or all it has out (it had that
  // much out last round).
  size_t had = atomic_load_explicit(&pk->regret_bytes, memory_order_relaxed), r = had + lost;
  if (pk->recent_early >= REGRET_RECENT_MIN && pk->recent_taken * 8u >= pk->recent_early * 7u) {
    if (cap < REGRET_MAX_BYTES) cap = REGRET_MAX_BYTES;
    if (cap < out_bytes(pk)) cap = out_bytes(pk);
    if (pk->recent_takes >= REGRET_RECENT_MIN && pk->recent_refaults * REGRET_REFAULT_DEN >= pk->recent_takes &&
        r < REGRET_MAX_BYTES)
      r = REGRET_MAX_BYTES;
  }
  // The cap follows what the kind has out now, which a program that frees
  // and takes back in rounds has little of early in a round: a loss may stop
  // at the cap, never lower the regret below what it was (it did: bench/drift's
  // regret rose to 12 MB in a round and a take-back early in the next cut
  // it to 4 MiB, so every round purged 8 slabs early and faulted them in again).
  if (r > cap) r = cap > had ? cap : had;
  atomic_store_explicit(&pk->regret_bytes, r, memory_order_relaxed);
  pk->last_regret_ms = now;
}

void pool_note_takes(pool_kind_t *pk, uint32_t n) {
  pk->recent_takes += n;
  if (pk->recent_takes >= REGRET_RECENT_MAX) {
    pk->recent_takes /= 2;
    pk->recent_refaults /= 2;
  }
}

// The budget before any regret: HAKMEM_PURGE_DIRTY_MB, or a quarter of the
// most slabs out of the pools lately (PURGE_OUT_DEN; pool_kind_t's out_peak)
// up to HAKMEM_PURGE_OUT_MB, if more.
// A program with more memory out swings by more: Python's realprog workload
// under PYTHONMALLOC=malloc (~60-90 MB of small blocks out) freed and took
// back ~16 MB in phases seconds apart, and the 2 MiB budget purged it at
// once: 32.6 k page faults against 28.4 k, 1.10x the time (tcmalloc 0.90x ours
// at 111 MB; we peaked at 98). With the quarter, to 16 MiB: 0.92x the time;
// prodcons -t 4 1-32 KiB 0.92x (+2.7 MB), ring -t 8 1-16 KiB 0.95x (+2.3 MB),
// mstress -t 8 level with 20% fewer faults and less RSS, a small program's
// budget unchanged (churn, larson, ws-small: under 8 MiB out).
// The peak, not what is out now: a program that frees all its blocks at once
// has nothing out when the purge looks (rounds of 2 000 blocks of 1.5-24 KB,
// each size three times: 209 slabs purged early and 207 taken back within the
// delay with either share, 1.7x mimalloc's time; with the peak 0.81-0.84x
// that, at mimalloc's 38.5 MB against 28.6; mstress -t 8 0.95x at 17.0 MB
// against 15.4 (mimalloc 18.7), -t 16 0.98x with 25% fewer page faults).
#define PURGE_OUT_DEN 4u
static size_t purge_base(void) {
  size_t out = 0;
  for (unsigned kind = 0; kind < HAK_SLAB_KINDS; kind++)
    out += atomic_load_explicit(&g_pool[kind].out_peak, memory_order_relaxed);
  out /= PURGE_OUT_DEN;
  if (out > g_hak_config.purge_dirty_out_max) out = g_hak_config.purge_dirty_out_max;
  return out > g_hak_config.purge_dirty_max ? out : g_hak_config.purge_dirty_max;
}

// The dirty budget now: purge_base plus every kind's regret.
static size_t budget_now(void) {
  size_t budget = purge_base();
  for (unsigned k = 0; k < HAK_SLAB_KINDS; k++) budget += atomic_load_explicit(&g_pool[k].regret_bytes, memory_order_relaxed);
  return budget;
}

// budget_now, first halving the regret of kinds that had no loss for a
// while, and every kind's peak of slabs out over what it has out now each
// such while (under the purge lock).
static size_t purge_budget(uint64_t now) {
  uint64_t forget = (uint64_t)g_hak_config.purge_delay_ms * REGRET_FORGET_DELAYS;
  for (unsigned kind = 0; kind < HAK_SLAB_KINDS; kind++) {
    pool_kind_t *pk = &g_pool[kind];
    if (now - pk->out_peak_ms >= forget) {
      pool_lock(kind);
      size_t out = out_bytes(pk), peak = atomic_load_explicit(&pk->out_peak, memory_order_relaxed);
      atomic_store_explicit(&pk->out_peak, peak > out ? out + (peak - out) / 2 : out, memory_order_relaxed);
      pk->out_peak_ms = now;
      pool_unlock(kind);
    }
    if (atomic_load_explicit(&pk->regret_bytes, memory_order_relaxed) != 0) {   // (rare: purged slabs came back)
      pool_lock(kind);
      if (now - pk->last_regret_ms >= forget) {
        atomic_store_explicit(&pk->regret_bytes, atomic_load_explicit(&pk->regret_bytes, memory_order_relaxed) / 2,
                              memory_order_relaxed);
        pk->last_regret_ms = now;
      }
      pool_unlock(kind);
    }
  }
  return budget_now();
}

// madvise the slabs of a batch (taken out of the pool, so no other thread
// touches them), one call per run of neighbours in a SuperSlab: the batch is
// collected in address order, and each call costs a TLB shootdown on every
// CPU the process runs on (mstress -t 8: ~100 us per call on this project's
// PVM guest, 16 calls per batch where 7 runs would do). A run covers its
// slabs whole but for the last one's untouched end (no block or table past
// slab_purge_bytes); advising pages never touched costs nothing. A slab
// whose blocks reached no page is no call of its own.
// Returns the calls made.
static uint32_t purge_batch(slab_meta_t *const *batch, uint32_t n) {
  uint32_t calls = 0;
  for (uint32_t i = 0; i < n;) {
    uint32_t j = i + 1;
    while (j < n && ss_of_meta(batch[j]) == ss_of_meta(batch[j - 1]) && batch[j]->index == batch[j - 1]->index + 1)
      j++;
    size_t last = slab_purge_bytes(batch[j - 1]);
    size_t bytes = (size_t)(batch[j - 1]->base - batch[i]->base) + last;
    if (bytes != 0) {
      os_purge(batch[i]->base, bytes);
      calls++;
    }
    i = j;
  }
  return calls;
}

// madvise the dirty FREE slabs in the pools that have waited long enough
// (all of them when `everything`), and past the budget others down to the
// target, or `more` bytes of them if that is more; unmap all-FREE SuperSlabs
// past the hysteresis (all of them when `everything`). 1 if anything went
// back.
static int purge_pools(int everything, size_t more) {
  int released = 0;
  uint64_t now = os_now_ms();
  size_t dirty = 0;
  for (unsigned kind = 0; kind < HAK_SLAB_KINDS; kind++)
    dirty += atomic_load_explicit(&g_pool[kind].dirty_bytes, memory_order_relaxed);
  size_t budget = purge_budget(now);
  size_t target = budget / PURGE_TARGET_DEN * PURGE_TARGET_NUM;
  size_t over = dirty >= budget ? dirty - target : 0;
  if (more > over) over = more;
  for (unsigned kind = 0; kind < HAK_SLAB_KINDS; kind++) {
    for (;;) {
      slab_meta_t *batch[PURGE_BATCH];
      pool_lock(kind);
      uint32_t n = purge_collect_locked(kind, everything, &over, now, batch, &released);
      pool_unlock(kind);
      if (n == 0) break;
      uint32_t calls = purge_batch(batch, n);
      for (uint32_t i = 0; i < n; i++) {   // out of the pool: no other thread can take them
        atomic_store_explicit(&batch[i]->dirty, 0, memory_order_relaxed);
        batch[i]->dirty_end = 0;
        batch[i]->dirty_table = 0;
        batch[i]->free_since_ms = now;   // for pool_note_regret
      }
      pool_lock(kind);
      for (uint32_t i = 0; i < n; i++) pool_put_locked(batch[i], now);
      g_pool[kind].purged += n;
      g_pool[kind].purge_calls += calls;
      pool_unlock(kind);
      released = 1;
      if (n < PURGE_BATCH) break;
    }
  }
  return released;
}

static int purge_pass(int everything) {
  atomic_store_explicit(&g_last_purge_ms, os_now_ms(), memory_order_relaxed);
  pool_collect_abandoned_empty();
  return purge_pools(everything, 0);
}

int pool_collect_empty_now(void) {
  if (atomic_load_explicit(&g_abandoned_empty, memory_order_relaxed) == 0) return 0;
  if (pthread_mutex_trylock(&g_purge_lock) != 0) return 0;
  HAK_SITE(SITE_PURGE_LOCK);
  pool_collect_abandoned_empty();
  pthread_mutex_unlock(&g_purge_lock);
  return 1;
}

void shared_pool_maybe_purge(void) { shared_pool_maybe_purge_at(0); }

// `now` from the caller (0: read here when needed), and the budget summed
// only when the dirty bytes reach its floor (HAKMEM_PURGE_DIRTY_MB: every
// term above it only adds): a refill or an overflow's flush read the clock
// twice (`bursts -k 8 -b 100 -n 100`, a slow path every few calls: 110.2 M
// -> 108.8 M instructions).
void shared_pool_maybe_purge_at(uint64_t now) {
  size_t dirty = 0;
  uint64_t due = UINT64_MAX;
  for (unsigned k = 0; k < HAK_SLAB_KINDS; k++) {
    dirty += atomic_load_explicit(&g_pool[k].dirty_bytes, memory_order_relaxed);
    uint64_t d = atomic_load_explicit(&g_pool[k].next_due_ms, memory_order_relaxed);
    if (d < due) due = d;
  }
  int abandoned = atomic_load_explicit(&g_abandoned_empty, memory_order_relaxed) != 0;
  if (HAK_LIKELY(dirty == 0 && !abandoned)) return;
  int64_t waiting = atomic_load_explicit(&g_abandoned_empty_bytes, memory_order_relaxed);
  if (waiting > 0) dirty += (size_t)waiting;   // (a moment below 0 while a count races its leave)
  if (dirty < g_hak_config.purge_dirty_max || dirty < budget_now()) {
    if (now == 0) now = os_now_ms();
    int pool_due = now >= due;
    int abandoned_due =
        abandoned && now - atomic_load_explicit(&g_last_purge_ms, memory_order_relaxed) >= g_hak_config.purge_delay_ms;
    if (!pool_due && !abandoned_due) return;
  }
  if (pthread_mutex_trylock(&g_purge_lock) != 0) return;
  HAK_SITE(SITE_PURGE_LOCK);
  purge_pass(0);
  pthread_mutex_unlock(&g_purge_lock);
}

// Slab memory and the page heap's are apart: the slabs a program emptied
// stay resident (the purge delay, the budget, what the kinds' regret keeps)
// while its large blocks fault in new pages. Python's realprog workload under
// PYTHONMALLOC=malloc freed four threads' dicts and then wrote 40 blocks of
// 1 MiB: 120 MB at its peak, 15-27 MB of it FREE slabs (jemalloc, whose
// freed small runs and large blocks share extents, 88). So a large block's
// pages that fault in take as many bytes of dirty FREE slabs first, down
// to the floor (HAKMEM_PURGE_DIRTY_MB), whatever the regret keeps: the
// regret says the program takes its slabs back, but its memory is growing
// elsewhere now, and the slabs it does take back are counted as purged
// early and raise the regret as before: 88-90 MB; node 252 -> 229-252.
void shared_pool_make_room(size_t bytes) {
  size_t dirty = 0, floor = g_hak_config.purge_dirty_max;
  for (unsigned k = 0; k < HAK_SLAB_KINDS; k++) dirty += atomic_load_explicit(&g_pool[k].dirty_bytes, memory_order_relaxed);
  int64_t waiting = atomic_load_explicit(&g_abandoned_empty_bytes, memory_order_relaxed);
  if (waiting > 0) dirty += (size_t)waiting;
  if (dirty <= floor) return;
  if (pthread_mutex_trylock(&g_purge_lock) != 0) return;   // (a purge under way)
  HAK_SITE(SITE_PURGE_LOCK);
  atomic_store_explicit(&g_last_purge_ms, os_now_ms(), memory_order_relaxed);
  pool_collect_abandoned_empty();
  purge_pools(0, dirty - floor < bytes ? dirty - floor : bytes);
  pthread_mutex_unlock(&g_purge_lock);
}

int shared_pool_trim(void) {
  pthread_mutex_lock(&g_purge_lock);
  HAK_SITE(SITE_PURGE_LOCK);
  int released = purge_pass(1);
  pthread_mutex_unlock(&g_purge_lock);
  return released;
}

int shared_pool_locks_settle(const struct timespec *by) {
  if (!os_mutex_settles(&g_purge_lock, by) || !os_mutex_settles(&g_registry_lock, by)) return 0;
  for (unsigned k = 0; k < HAK_SLAB_KINDS; k++)
    if (!os_mutex_settles(&g_pool[k].lock, by)) return 0;
  return 1;
}

void shared_pool_fork_prepare(void) {
  pthread_mutex_lock(&g_purge_lock);
  for (unsigned k = 0; k < HAK_SLAB_KINDS; k++) pthread_mutex_lock(&g_pool[k].lock);
  pthread_mutex_lock(&g_registry_lock);
}

void shared_pool_fork_parent(void) {
  pthread_mutex_unlock(&g_registry_lock);
  for (unsigned k = HAK_SLAB_KINDS; k-- > 0;) pthread_mutex_unlock(&g_pool[k].lock);
  pthread_mutex_unlock(&g_purge_lock);
}

// The child's only thread is the one that took the locks in prepare, so it
// releases them as the parent does (re-initialising a held mutex is what
// ThreadSanitizer rightly calls a double lock).
void shared_pool_fork_child(void) { shared_pool_fork_parent(); }

void shared_pool_each_slab(void (*fn)(slab_meta_t *m, void *arg), void *arg) {
  pthread_mutex_lock(&g_registry_lock);
  uint32_t hw = ss_registry_high_water();
  for (uint32_t i = 0; i < hw; i++) {
    superslab_t *ss = atomic_load_explicit(&g_ss_table[i], memory_order_relaxed);
    if (ss == NULL) continue;
    for (unsigned k = 0; k < ss->nslabs; k++) fn(ss_slab(ss, k), arg);
  }
  pthread_mutex_unlock(&g_registry_lock);
}

static void count_slab(slab_meta_t *m, void *arg) {
  shared_pool_stats_t *s = arg;
  if (m->index == 0) {   // every SuperSlab has a slab 0
    s->superslabs++;
    s->superslab_bytes += SS_SIZE;
  }
  if (SLAB_STATE(atomic_load_explicit(&m->state, memory_order_relaxed)) == SLAB_FREE) {
    s->slabs_free++;
    return;
  }
  s->slabs_in_use++;
  size_t used = slab_census_live(m);
  size_t cap = m->capacity;
  s->in_use_bytes += (used < cap ? used : cap) * m->block_size;
  s->free_bytes += (cap - (used < cap ? used : cap)) * m->block_size;
}

void shared_pool_get_stats(shared_pool_stats_t *out) {
  shared_pool_stats_t s = {0};
  shared_pool_each_slab(count_slab, &s);
  s.mapped_total = atomic_load(&g_ss_mapped_total);
  s.unmapped_total = atomic_load(&g_ss_unmapped_total);
  *out = s;
}

// (Racy reads: a slab may change state under the walk; a census.)
static void count_resident(slab_meta_t *m, void *arg) {
  shared_pool_resident_t *s = arg;
  superslab_t *ss = ss_of_meta(m);
  size_t page = os_page_size();
  char *end = (char *)ss + ((size_t)(m->index + 1u) << ss->slab_shift);
  size_t pages = os_resident_pages(m->base, (size_t)(end - m->base) / page);
  if (pages == SIZE_MAX) return;
  size_t bytes = pages * page;
  switch (SLAB_STATE(atomic_load_explicit(&m->state, memory_order_relaxed))) {
  case SLAB_ACTIVE:
    s->bound_bytes += bytes;
    s->bound_carved_bytes += atomic_load_explicit(&m->carve_off, memory_order_relaxed);
    break;
  case SLAB_DETACHED:
  case SLAB_LISTED: s->abandoned_bytes += bytes; break;
  case SLAB_EMPTY_LISTED: s->empty_bytes += bytes; break;
  default: s->free_bytes += bytes; break;
  }
}

void shared_pool_get_resident(shared_pool_resident_t *out) {
  shared_pool_resident_t s = {0};
  shared_pool_each_slab(count_resident, &s);
  *out = s;
}

void shared_pool_get_purge_stats(shared_pool_purge_stats_t *out) {
  shared_pool_purge_stats_t s = { .dirty_budget = budget_now(),
                                  .empty_waiting_bytes = atomic_load(&g_abandoned_empty_bytes) };
  for (unsigned k = 0; k < HAK_SLAB_KINDS; k++) {
    pool_lock(k);
    s.purged += g_pool[k].purged;
    s.purge_calls += g_pool[k].purge_calls;
    s.purged_early += g_pool[k].purged_early;
    s.taken_back += g_pool[k].taken_back;
    s.rekinded += g_pool[k].rekinded;
    pool_unlock(k);
  }
  *out = s;
}
