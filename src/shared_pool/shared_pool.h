// shared_pool.h — the unified Shared Pool: where slabs come from and go back to.
//
// Acquire (hak_tiny_alloc_superslab_box's backend) runs three stages:
//   1. lock-free: adopt a slab of the class that an exited thread abandoned
//      (LISTED or EMPTY_LISTED on the class's abandoned stack, a Treiber
//      stack of slab ids with an ABA tag);
//   2. a FREE (EMPTY) slab of any SuperSlab of the class's kind, rebound to
//      the class: from the thread's stash, which is refilled in batches under
//      the kind's pool lock;
//   3. a new SuperSlab mapped with no lock held (the seed's deadlock fix),
//      then registered and given to the kind's pool.
// Release: a slab whose live count reached zero goes back for any class — an
// owned one into its thread's stash (the pool when the stash is full), an
// abandoned one straight to the pool (one on an abandoned stack with its
// stack collected by the free that emptied it; the purge pass collects any
// that a free could not). SuperSlabs whose slabs are all FREE are
// unmapped, keeping a few (hysteresis); dirty FREE memory is purged once it
// has waited HAKMEM_PURGE_DELAY_MS, or at once past the dirty budget
// (HAKMEM_PURGE_DIRTY_MB, raised while slabs purged early are taken back
// within the delay), decided on slow paths (no thread).
//
// Locks, in the order they nest: purge lock, a kind's pool lock (kinds in
// ascending order), the registry lock. Nothing else is global: no lock is
// taken for a slab that stays with its thread.
#ifndef HAK_SHARED_POOL_H
#define HAK_SHARED_POOL_H

#include "superslab/superslab.h"

// FREE slabs a thread keeps for its next acquires, per kind (taken from the
// pool in batches; a 2 MiB slab is not worth keeping idle: kind LARGE has none).
#define SLAB_STASH_MAX 4u
typedef struct slab_stash {
  slab_meta_t *slab[SLAB_STASH_MAX];
  uint32_t     n;
} slab_stash_t;
extern const uint8_t g_stash_cap[HAK_SLAB_KINDS];

// A slab bound to cls, ACTIVE and owned by `owner`, a FREE one from the slabs
// of `kind` (stash: the caller's of that kind) when no abandoned slab of cls
// is there to adopt; NULL when out of memory. `kind` is the class's own, or
// the small kind's for a young medium class (tiny_heap.c, slab_kind_for).
slab_meta_t *shared_pool_acquire_slab(unsigned cls, unsigned kind, uintptr_t owner, slab_stash_t *stash);
// Does the pool of `kind` hold dirty FREE slabs (a relaxed look)?
int shared_pool_has_dirty_free(unsigned kind);
// Stage 1 alone: a slab of cls from the abandoned stack, ACTIVE and owned by
// `owner` (it may have free blocks, remote blocks and an uncarved end); NULL
// when the stack is empty. A refill takes one before it carves new memory.
slab_meta_t *shared_pool_adopt_slab(unsigned cls, uintptr_t owner);
// An owner abandons a slab (thread exit, or a slab it has more of than it
// needs: tiny_heap.c): LISTED on its class's abandoned stack when it has free
// blocks, else DETACHED until its first remote free.
void shared_pool_detach_slab(slab_meta_t *m);
// Put a slab that just became LISTED on its class's abandoned stack.
void shared_pool_list_abandoned(slab_meta_t *m);
// SLAB_TRY_RECYCLE: called by whoever saw m->used reach zero.
void shared_pool_slab_empty(slab_meta_t *m);
// The owner's slab m (ACTIVE, used == 0, on none of its lists) becomes FREE
// and goes to the stash, or to the pool with half the stash when it is full.
void shared_pool_release_owned(slab_meta_t *m, slab_stash_t *stash);
// Every slab of a stash back to the pool (thread exit, trim).
void shared_pool_stash_release(slab_stash_t *stash);

// Purge dirty FREE memory that has waited long enough, or all of it past the
// dirty budget (cheap when there is nothing to do; call from slow paths).
void shared_pool_maybe_purge(void);
// ... for a caller that read the clock already (os_now_ms; 0: not read).
void shared_pool_maybe_purge_at(uint64_t now);
// Return every unused page now; 1 if anything was released.
int  shared_pool_trim(void);
// A large block is about to fault in `bytes` of pages (core/hakmem.c
// hak_large_alloc): as many bytes of dirty FREE slabs are purged first, down
// to HAKMEM_PURGE_DIRTY_MB.
void shared_pool_make_room(size_t bytes);

// fork(): take every pool lock (prepare), release (parent and child).
void shared_pool_fork_prepare(void);
struct timespec;
// The purge, registry and pool locks free by `by` (os_mutex_settles; the
// exit report's check).
int shared_pool_locks_settle(const struct timespec *by);
void shared_pool_fork_parent(void);
void shared_pool_fork_child(void);

// fn(m, arg) for every slab of every mapped SuperSlab, under the registry
// lock (none is unmapped or laid out again meanwhile; the slabs' fields are
// read as they stand: for statistics).
void shared_pool_each_slab(void (*fn)(slab_meta_t *m, void *arg), void *arg);

typedef struct shared_pool_stats {
  size_t superslabs, superslab_bytes, slabs_in_use, slabs_free;
  size_t in_use_bytes, free_bytes, mapped_total, unmapped_total;
} shared_pool_stats_t;
void shared_pool_get_stats(shared_pool_stats_t *out);

// The dirty budget now (HAKMEM_PURGE_DIRTY_MB and the kinds' regret), the
// slabs purged and the madvise calls that purged them (a call per run of
// neighbours), the slabs purged before their delay, and of those the ones
// taken back within it; and the all-FREE SuperSlabs laid out again for
// another kind instead of a new mapping (pool_rekind_empty_superslab).
typedef struct shared_pool_purge_stats {
  size_t   dirty_budget;
  int64_t  empty_waiting_bytes;   // what EMPTY slabs on the abandoned stacks count as dirty
  uint64_t purged, purge_calls, purged_early, taken_back, rekinded;
} shared_pool_purge_stats_t;
void shared_pool_get_purge_stats(shared_pool_purge_stats_t *out);

// Where the slabs' resident pages are (mincore over every slab: for the
// statistics report only, never on an allocation path): slabs bound to a live
// thread (and what their carve points reach), abandoned with blocks in use,
// EMPTY on an abandoned stack until the purge pass or an adopter takes them,
// and FREE (in the pools or a thread's stash). The census that found an
// adopted slab's lost reach (b2bdfdb) and the hardened medium canary's extra
// page (e662181); a page counts where its slab is (a SuperSlab's header pages
// are in none).
typedef struct shared_pool_resident {
  size_t bound_bytes, bound_carved_bytes, abandoned_bytes, empty_bytes, free_bytes;
} shared_pool_resident_t;
void shared_pool_get_resident(shared_pool_resident_t *out);

#if HAK_DEBUG
// A SuperSlab's invariants (superslab.h), under its kind's pool lock.
void ss_validate(const superslab_t *ss);
// A thread's stash of `kind`: FREE slabs, none in the pool, all of that kind.
void shared_pool_stash_validate(const slab_stash_t *stash, unsigned kind);
// Every kind's pool against its counters: its dirty bytes, its all-FREE
// SuperSlabs, and the dirty FREE slabs by class (every pool lock held).
void shared_pool_validate_pools(void);
#endif

#endif
