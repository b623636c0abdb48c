// shared_pool_internal.h — the Shared Pool's state and the helpers both its
// halves (acquire, release) use; defined in shared_pool_state.c.
#ifndef HAK_SHARED_POOL_INTERNAL_H
#define HAK_SHARED_POOL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "shared_pool/shared_pool.h"
#include "superslab/ss_registry.h"

// One kind's pool: its SuperSlabs that have FREE slabs, on one cache line
// per kind so the kinds do not share a lock's line.
//   Invariants (pool lock): every SuperSlab on the list has free_mask != 0
//   and in_pool set; empty_ss == number of them with every slab FREE;
//   dirty_bytes == slab_dirty_bytes of the FREE slabs in free masks with dirty set;
//   the dirty list (dirty_oldest .. dirty_newest) holds exactly those slabs;
//   next_due_ms <= the earliest free_since_ms + delay among those;
//   unmap_wait_ms <= the earliest start of an all-FREE SuperSlab's wait (the
//   latest free_since_ms of its dirty or early-purged slabs).
typedef struct pool_kind {
  pthread_mutex_t   lock;
  superslab_t      *head;          // SuperSlabs with FREE slabs
  // Of which every slab is FREE: written under the lock, read without by
  // another kind about to map a SuperSlab (pool_rekind_empty_superslab).
  _Atomic uint32_t  empty_ss;
  _Atomic size_t    dirty_bytes;   // written under the lock, read without by maybe_purge
  _Atomic uint64_t  next_due_ms;   // the earliest dirty slab is purged then (UINT64_MAX: none; 0 at start)
  // The dirty FREE slabs in the pool, in the order they went there (their
  // free_since_ms rising), linked through their list_next/list_prev (a
  // heap's links, unused while FREE): the purge takes the oldest without a
  // walk of the pool's SuperSlabs. (A walk a pass, and past the budget a
  // pass every few slabs freed: 100 000 blocks of 100 KB, one page written
  // each, took 1.8 s to free against glibc's 0.09, 28 s with
  // HAKMEM_PURGE_DELAY_MS large; an independent probe, sixty-sixth session.)
  slab_meta_t      *dirty_oldest, *dirty_newest;
  // No all-FREE SuperSlab started waiting the delay before then (0 at start:
  // the first pass looks; UINT64_MAX: none waits), so a pass walks the pool
  // list for those past the hysteresis only a delay after it.
  uint64_t          unmap_wait_ms;
  uint64_t          unmap_walks;   // walks of the pool list for unmaps (tests)
  // Bytes of this kind's slabs purged early and taken again within the purge
  // delay, added to the dirty budget (pool_note_regret); halved each
  // REGRET_FORGET_DELAYS delays without one. Written under the lock, read
  // without by maybe_purge.
  _Atomic size_t    regret_bytes;
  uint64_t          last_regret_ms;
  // Its slabs out of the pool (in use, stashed or abandoned), and the most
  // of them lately (its excess over out_bytes halved every
  // REGRET_FORGET_DELAYS delays, from out_peak_ms): written under the lock
  // (out_add, purge_budget), read without by the dirty budget (purge_base);
  // out_peak_ms only under the purge lock.
  _Atomic size_t    out_bytes;
  _Atomic size_t    out_peak;
  uint64_t          out_peak_ms;
  uint64_t          purged;        // slabs purged (for the statistics) ...
  uint64_t          purge_calls;   // ... in this many madvise calls (runs of neighbours)
  uint64_t          purged_early;  // slabs purged before their delay (for the statistics)
  uint64_t          taken_back;    // of which taken again within it
  uint64_t          rekinded;      // all-FREE SuperSlabs of other kinds laid out for this one
  // The same two, recent, but counting every take-back, within the delay
  // or later (both halved when the first reaches REGRET_RECENT_MAX): nearly
  // every early purge taken back (a program that frees and takes its memory
  // back in rounds) lets the regret reach all of the kind's memory out
  // (pool_note_regret).
  uint32_t          recent_early, recent_taken;
  // Slabs taken again from the pool lately (dirty ones, and ones purged
  // early), and of them the early-purged ones taken back within the delay
  // (both halved when the first reaches REGRET_RECENT_MAX): when an eighth
  // or more of what the kind takes again faults in again
  // (REGRET_REFAULT_DEN), the purges cost the program a fault on much of
  // what it reuses (pool_note_regret). A take of a slab never used, or
  // purged after its delay, is no reuse of what the budget kept: counted,
  // the takes of a program's first rise to its peak hid the share
  // (bench/drift: 19 refaults against 205 takes, 112 of them the first
  // sweep's new slabs; the regret then learned a sweep's swing in four
  // sweeps, 10.2 k page faults against mimalloc's 5.3 k; now in one, 8.0 k).
  uint32_t          recent_takes, recent_refaults;
} __attribute__((aligned(64))) pool_kind_t;

extern pool_kind_t g_pool[HAK_SLAB_KINDS];

// pk->empty_ss += delta (its lock held: a load and a store).
static inline void empty_ss_add(pool_kind_t *pk, int delta) {
  atomic_store_explicit(&pk->empty_ss, atomic_load_explicit(&pk->empty_ss, memory_order_relaxed) + (uint32_t)delta,
                        memory_order_relaxed);
}

// pk->out_bytes += delta, and its peak raised (its lock held: loads and stores).
static inline void out_add(pool_kind_t *pk, ptrdiff_t delta) {
  size_t out = atomic_load_explicit(&pk->out_bytes, memory_order_relaxed) + (size_t)delta;
  atomic_store_explicit(&pk->out_bytes, out, memory_order_relaxed);
  if (out > atomic_load_explicit(&pk->out_peak, memory_order_relaxed))
    atomic_store_explicit(&pk->out_peak, out, memory_order_relaxed);
}
static inline size_t out_bytes(const pool_kind_t *pk) {
  return atomic_load_explicit(&pk->out_bytes, memory_order_relaxed);
}
extern pthread_mutex_t g_registry_lock;  // registry changes, walks of every SuperSlab
extern pthread_mutex_t g_purge_lock;     // one purge pass at a time

// Per-class abandoned stacks: low 32 bits the top slab id, high 32 an ABA tag.
extern _Atomic uint64_t g_abandoned[HAK_NUM_CLASSES];
extern _Atomic size_t g_ss_live, g_ss_mapped_total, g_ss_unmapped_total;
// Dirty FREE slabs in the pools by the class they last served (written under
// their kind's pool lock; read without it before an acquire takes the lock
// to look for one: pool_take_class_locked).
extern _Atomic uint32_t g_pool_dirty_of_class[HAK_NUM_CLASSES];

void pool_lock(unsigned kind);
void pool_unlock(unsigned kind);

// Pop the top of a class's abandoned stack (exclusive ownership of the slab).
slab_meta_t *abandoned_pop(unsigned cls);
// Push a chain of slab ids first..last (already linked through g_slab_next).
void abandoned_push_chain(unsigned cls, uint32_t first, uint32_t last);

// A FREE slab, exclusively held, into its SuperSlab's free mask (pool lock
// of its kind held); unmaps the SuperSlab when it is all FREE past the
// hysteresis. now: the time, for the purge delay.
void pool_put_locked(slab_meta_t *m, uint64_t now);
// A new SuperSlab, every slab FREE, into its kind's pool (pool lock held).
void pool_add_new_locked(superslab_t *ss);
// Before a kind maps a new SuperSlab: an all-FREE SuperSlab of another kind,
// taken out of its pool and laid out again for this kind, its dirty pages
// counted as this kind's (no lock held on entry). 1 with the kind's pool
// lock held and the SuperSlab in its pool, 0 (no lock held) when no other
// kind has one.
int pool_rekind_empty_superslab(unsigned kind);
// Up to `want` FREE slabs of a kind out of the pool (pool lock held).
uint32_t pool_take_locked(unsigned kind, slab_meta_t **out, uint32_t want);
// A dirty FREE slab whose last class was cls, taken out of its kind's pool
// (pool lock held); NULL when none is among the first POOL_AFFINITY_SCAN
// FREE slabs. A slab's pages stay resident as far as its blocks ever reached
// (a purge of its idle pages would cost a system call and the faults of a
// life that needs them), so a slab given back to the class it served fits
// the class's next life: a 512 KiB slab that held 128 KiB blocks, given to a
// class of 1280 B, kept 512 KiB resident for 50 KiB of blocks. `mstress -t
// 16 -n 20000 -r 20`, 7 paired rounds: 0.97x the time, 47.7 MB peak RSS
// against 61.3, 17.7 k page faults against 21.6 k. The small kind (64 KiB
// slabs) looks too since the sixty-fifth session: 256 threads at a time, each
// holding 16 blocks of twelve sizes of 16 B-5 KB (`crowd -n 8`), peaked 58
// -> 85 MB over eight rounds of threads as each slab came to hold the pages
// of the farthest-reaching class it had served; 68-73 MB so (tcmalloc 59).
#define POOL_AFFINITY_SCAN 64u
slab_meta_t *pool_take_class_locked(unsigned kind, unsigned cls);
// Take the FREE slab m (in its kind's pool) out of the pool, to purge it with
// the lock released; pool_put_locked gives it back.
void pool_take_slab_locked(slab_meta_t *m);
// The cap of a kind's regret (shared_pool_release.c): REGRET_MAX_SLABS of its
// slabs, one budget, or 1/REGRET_LIVE_DEN of its slabs out, the largest; when
// nearly every recent early purge came back, REGRET_MAX_BYTES or all of its
// slabs out if larger (REGRET_MAX_BYTES reached at once when those take-backs
// are also a large share of the kind's takes: shared_pool_release.c
// REGRET_REFAULT_DEN).
#define REGRET_MAX_SLABS 8u
#ifndef REGRET_MAX_BYTES
#define REGRET_MAX_BYTES ((size_t)32 << 20)
#endif
#ifndef REGRET_LIVE_DEN
#define REGRET_LIVE_DEN  4u
#endif
#define REGRET_RECENT_MAX 512u
#define REGRET_RECENT_MIN 16u   // early purges seen before the share counts
// A slab purged early (m->early_pages) is being taken again (one of the
// kind's takes, pool_note_takes): if within the purge delay, the budget was
// too small for this kind's swing; raise it. Kind's lock held.
void pool_note_regret(pool_kind_t *pk, slab_meta_t *m);
// n dirty slabs taken again from the kind's pool (pool_note_regret counts
// the early-purged ones). Kind's lock held.
void pool_note_takes(pool_kind_t *pk, uint32_t n);
// Forget and unmap an all-FREE SuperSlab (its kind's pool lock held).
void pool_unmap_superslab(superslab_t *ss);

// A slab leaves its class: FREE, capacity 0, owner SLAB_OWNER_POOL, the
// generation bumped (the caller holds it exclusively).
void slab_unbind(slab_meta_t *m);
// Take every EMPTY slab off the abandoned stacks and give it to the pool (the
// purge pass; a thread's exit leaves its empty current slabs there).
void pool_collect_abandoned_empty(void);
// The same, now, when EMPTY slabs wait there and no purge pass is running:
// an acquire about to map a new SuperSlab takes them first (a class nobody
// refills any more left them there, emptied by other threads' frees).
// 1 if it collected.
int pool_collect_empty_now(void);
// An abandoned slab that a free empties goes to the pool at once, its class's
// abandoned stack collected (1, the default); 0 leaves it EMPTY_LISTED for the
// purge pass or an adopter, what a free that meets its stack taken by
// another collector still does (the unit tests of that path set 0).
extern int g_pool_recycle_at_empty;
// shared_pool_slab_empty's act for a caller that read m's state word w, then
// its used count 0. Such a caller may be stale: other threads may adopt m,
// take blocks and abandon it again before it acts (the unit tests play one).
void shared_pool_slab_empty_seen(slab_meta_t *m, uint32_t w);
// An EMPTY_LISTED slab leaves the count of EMPTY slabs waiting on the
// abandoned stacks (collected, or adopted afresh by stage 1), before its carve
// point is reset.
void abandoned_empty_leave(const slab_meta_t *m);

#endif
