// superslab.h — the layout of a SuperSlab and of one slab's metadata.
//
// A SuperSlab is a 2 MiB mapping aligned to 2 MiB. Its first two pages hold this
// header (including the metadata of every slab); the rest is cut into slabs of
// one size, chosen by the SuperSlab's kind: 32 slabs of 64 KiB, 4 of 512 KiB or
// 1 of 2 MiB. Slab 0 starts after the header pages and is two pages shorter.
// free(p) finds its slab by address arithmetic: p & ~(2 MiB - 1) is the
// SuperSlab, and bits slab_shift..slab_shift+4 of p are the slot of the slab's
// metadata in slabs[] (ss_slab: slab i of a SuperSlab with fewer than 32 slabs
// sits in slot (ss >> slab_shift) + i mod 32). The registry
// (ss_registry.h) says whether that address is a live SuperSlab before any of
// this is trusted.
//
// Slab life cycle (slab_meta_t.state, low byte; the upper 24 bits are a
// generation bumped each time the slab goes back to the pool and each time a
// thread adopts it, so a stale CAS can never act on a later life or a later
// abandonment of the slab):
//   FREE          bound to no class: in the Shared Pool (free_mask bit set) or
//                 in one thread's stash of FREE slabs (shared_pool.h)
//   ACTIVE        bound to a class and owned by one thread, which keeps it until
//                 it is EMPTY or the thread exits (tiny/tiny_heap.h: the thread's
//                 current slab, its partial list or its full list)
//   DETACHED      abandoned by an exiting thread with no free block known: in
//                 no list; the first remote free lists it
//   LISTED        abandoned with free blocks: on its class's abandoned stack,
//                 where another thread adopts it (Shared Pool stage 1)
//   EMPTY_LISTED  LISTED with every block free (used == 0): adopted as a fresh
//                 slab of the class, or given to the pool by the purge pass
#ifndef HAK_SUPERSLAB_H
#define HAK_SUPERSLAB_H

#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>

#include "debug/hak_base.h"
#include "stats/stats.h"
#include "superslab/size_class.h"

#define SS_SHIFT        21
#define SS_SIZE         ((size_t)1 << SS_SHIFT)
#define SS_MASK         (SS_SIZE - 1)
#define SS_HEADER_SIZE  8192u     // header + 32 slab metas of 128 B, in whole pages
#define SS_MAX_SLABS    32u

enum slab_state {
  SLAB_FREE = 0,
  SLAB_ACTIVE = 1,
  SLAB_DETACHED = 2,
  SLAB_LISTED = 3,
  SLAB_EMPTY_LISTED = 4,
};
// Owner of a FREE slab: never a thread's id. A FREE slab also has capacity 0,
// so a free into it fails the fast path's block check and is reported.
#define SLAB_OWNER_POOL    ((uintptr_t)1)

// Where an ACTIVE slab stands in its owner's heap (slab_meta_t.where; owner only).
enum slab_where { SLAB_IN_NONE = 0, SLAB_IN_CURRENT = 1, SLAB_IN_PARTIAL = 2, SLAB_IN_FULL = 3 };

// slab_meta_t.notify: how a remote free tells the owner that a slab on its
// full list has blocks again (mimalloc's delayed free):
//   IDLE      nothing to do
//   ARMED     the slab is full; the next remote free pushes it on the owner's
//             wake list (tiny_heap.h), turning it NOTIFYING then NOTIFIED
//   NOTIFYING a remote freer is pushing it (the owner waits before it
//             abandons the slab, so the owner's heap outlives the push)
//   NOTIFIED  on the owner's wake list until the owner takes the list
enum slab_notify { SLAB_NOTIFY_IDLE = 0, SLAB_NOTIFY_ARMED = 1, SLAB_NOTIFY_NOTIFYING = 2, SLAB_NOTIFY_NOTIFIED = 3 };

#define SLAB_STATE(w)      ((w) & 0xffu)
#define SLAB_GEN(w)        ((w) & ~0xffu)
#define SLAB_WITH(w, st)   (SLAB_GEN(w) | (uint32_t)(st))
// State st in the next generation (a return to the pool, an adoption).
#define SLAB_NEXT_GEN(w, st) (SLAB_GEN(w) + 0x100u + (uint32_t)(st))

// Two cache lines: the first is what free() reads on every call and what the
// owner writes; the second is what other threads write (remote frees, the
// live count, state changes, notifications), so their writes do not evict the
// first line from the owner's cache.
//
// Invariants (checked by slab_validate, debug builds):
//   bound (state != FREE):  |freelist| + |remote list| - counted + (capacity - carved) + used
//                           == capacity, where carved = (carve - base) / block_size,
//                           counted = the remote word's count (the ACTIVE free list
//                           counts in `used`: take |freelist| out there);
//                           every block on freelist or remote list is a block start
//                           of this slab and carries its free mark; free_n ==
//                           |freelist|, whose last block links to slab_list_end
//                           (tls_sll_box.h), a remote list's to NULL.
//   FREE:                   capacity == 0, owner == SLAB_OWNER_POOL, notify == IDLE
//   ACTIVE:                 owner == the owning thread's id, where != NONE
//   DETACHED, LISTED, EMPTY_LISTED: owner == 0, where == NONE, notify == IDLE,
//                           the remote word asks for attention and counts no block
//   ACTIVE and notify == ARMED: the remote word asks for attention
//   EMPTY_LISTED:           used == 0
//   bound:                  owner_small == (uint32_t)owner if block_size < HAK_SEND_HOME_BELOW,
//                           else 0
#define HAK_CACHE_LINE 64u   // bytes that false sharing is made of
// Another thread's block smaller than this goes home at its free instead of
// onto the freeing thread's list: reused there, it would share a line with
// blocks its slab's owner writes (passive false sharing). -DHAK_SEND_HOME_BELOW=1u
// keeps every block where it is freed, as tcmalloc does: a build for the
// many-core measurement of what the rule costs (scripts/device-scale.sh),
// never the default.
#ifndef HAK_SEND_HOME_BELOW
#define HAK_SEND_HOME_BELOW HAK_CACHE_LINE
#endif

// Whether a slab's carve faults the pages ahead in with one call
// (tiny_refill.c, slab_populate_ahead): every page of a class of 4 KiB or less
// holds a block start, which the carve writes; a larger class's slab asks the
// kernel how much of what it carved the program wrote.
enum slab_populate { SLAB_POP_UNKNOWN, SLAB_POP_DENSE, SLAB_POP_SPARSE };
#define SLAB_POP_PAGE 4096u             // x86-64's page: the unit of residence

typedef struct slab_meta {
  // -- read on every free; written when the slab changes hands, or by its owner
  char              *base;        // first block of the slab (fixed)
  _Atomic uintptr_t  owner;       // owning thread's id (thread_self_id), 0, or SLAB_OWNER_POOL
  uint64_t           size_magic;  // the class's magic (size_class.h), for the free check
  uint32_t           block_size;  // size of the class bound now
  int32_t            tls_off;     // tls_list_tp_offset(cls): free's TLS list, from the
                                  // thread pointer
  // bytes from base to the next never-handed-out block (slab_carve): written
  // by the owner; read by any thread's free (relaxed: the block being freed
  // was carved before it was handed out, and whatever handed it to the
  // freeing thread orders the two). An offset, so that free tests
  // base <= p < carve point with one compare.
  _Atomic uintptr_t  carve_off;
  // carve_off * size_magic mod 2^64, kept with it (slab_set_carve): free's one
  // compare of the block-start test (slab_block_start).
  _Atomic uint64_t   carve_key;
  union {
    // FREE: when it went back to the pool dirty (pool lock; no block live
    // then). Written by every put of a dirty slab (pool_put_locked), and a
    // slab goes FREE dirty (slab_unbind), so a bound life's words below
    // are never read as a time.
    uint64_t         free_since_ms;
    // Bound, owner only (slab_sweep_box.h): after a sweep whose marks did
    // not match its list, the blocks that must come onto the list before
    // the next sweep (sweep_wait, 0: none), and the list's length when the
    // last refill from it was done (sweep_seen).
    struct {
      uint16_t       sweep_wait;
      uint16_t       sweep_seen;
    };
  };
  uint8_t            cls;         // size class bound now
  uint8_t            populate;    // owner only: enum slab_populate (tiny_refill.c)
  uint16_t           capacity;    // blocks in the slab for that class; 0 while FREE
  // free's copy of the owner (slab_set_owner): its low 32 bits when the
  // class's blocks are smaller than a cache line, else 0. Compared with the thread's key of the class
  // (tls_owner_key_at), equal for the owner's small blocks and for every
  // larger block (core/hakmem_fast.h).
  _Atomic uint32_t   owner_small;
  // -- written by other threads
  // The remote list's word (remote_free_box.h): its first block, how many of
  // its blocks `used` still counts (REMOTE_COUNT_SHIFT up) and REMOTE_ATTEND.
  // 0: an empty list, no attention asked.
  _Atomic uintptr_t  remote_head __attribute__((aligned(64)));
  // Blocks handed out (to TLS lists or the program), the remote list's
  // blocks its word counts and, while the slab is ACTIVE, the blocks on its
  // owner's free list too (free_n): the owner moves blocks between these,
  // a flush's run home, a refill from the list, a drain of the remote list,
  // without touching `used`, and its slab is EMPTY when `used` is its free
  // list and the remote list's counted blocks (slab_live). A remote free
  // while the word asks for attention lowers it instead (the blocks it
  // pushes are not counted on the list); the owner raises it by what it
  // carves and by the uncounted blocks it drains. While nobody owns the slab
  // its free list and remote list are not counted (shared_pool_detach_slab
  // takes them out, an adopter puts the free list back), so the remote freer
  // that brings it to 0 knows it emptied the slab.
  // (The owner's frees home were an atomic a run, and a big heap freed in
  // random order sends runs of one block: 23% of the time of a list of 1 M
  // nodes of 32 B built and freed so, on the store buffer's drain before
  // each locked instruction.)
  _Atomic uint32_t   used;
  _Atomic uint32_t   state;       // generation | enum slab_state
  _Atomic uint32_t   notify;      // enum slab_notify
  _Atomic uint8_t    dirty;       // FREE with pages possibly resident (pool lock)
  uint8_t            index;       // position in the SuperSlab (fixed)
  uint8_t            where;       // owner only: enum slab_where
  // When the remote list last went from empty to not (remote_free_box.h:
  // remote_stamp, REMOTE_STAMP_MS units modulo 256): the pusher that made it
  // so writes it, the next pushers read it (an owner that has not taken its
  // list for REMOTE_STALE_STAMPS lets them take some back, remote_list_stale).
  _Atomic uint8_t    remote_since;
  struct slab_meta *_Atomic wake_next; // the owner's wake list (while NOTIFIED)
  // owner only: blocks freed back by the owner, or drained. Not on the first
  // line: the owner writes it at every refill, flush and drain, and other
  // threads' frees read the first line (in a ring of 4 threads handing on
  // half of each batch of 1-111 B, sh8bench's shape, ~45% of the batch
  // drain's samples were on that line's loads; here since, with no change
  // two cores show: what it saves is invalidations on many).
  void              *freelist;
  struct slab_meta  *list_next;   // owner only: its heap's partial or full list (here
  struct slab_meta  *list_prev;   // so that what free reads fits the first line)
  // Bytes from base that blocks reached since the pages were last purged (the
  // highest carve point; pool lock or owner): while the slab is FREE and
  // dirty, what it counts in its kind's dirty bytes (slab_note_dirty_end).
  uint32_t           dirty_end;
  // Hardened build: a medium class was bound since the last purge, so its size
  // table at the slab's end was written (slab_dirty_bytes, slab_purge_bytes).
  uint8_t            dirty_table;
  // Debug builds: another thread's take of the remote list (ss_remote_take)
  // and the owner's look at it (slab_validate) one at a time (slab_take_lock).
  _Atomic uint8_t    take_lock;
  union {
    // FREE and clean: the pages (4 KiB) of its dirty bytes when a purge took
    // them before its delay, else 0 (pool lock; pool_note_regret).
    uint16_t         early_pages;
    // Bound: the blocks on freelist (owner only; 0 when it is NULL), so a
    // refill can take the whole list without walking it (tiny_refill.c
    // slab_take_whole) and `used` counts them. Set to 0 at every change of
    // state to or from FREE.
    uint16_t         free_n;
  };
} slab_meta_t;
_Static_assert(sizeof(slab_meta_t) == 128, "a slab's metadata is two cache lines");
_Static_assert(offsetof(slab_meta_t, remote_head) == 64, "what other threads write starts the second line");
_Static_assert(offsetof(slab_meta_t, carve_key) < 64 && offsetof(slab_meta_t, cls) < 64,
               "what free reads is on the first line");

// Invariants: free_mask has bit i set iff slab i (ss_slab) is FREE and in the pool
// (not in a thread's stash); in_pool iff free_mask != 0; the registry bit of
// the SuperSlab's address is set while it is mapped.
typedef struct superslab {
  uint32_t           index;       // slot in the registry's table
  uint8_t            kind;        // HAK_KIND_*
  uint8_t            slab_shift;  // log2 of the slab size
  uint8_t            nslabs;      // slabs in this SuperSlab
  uint8_t            in_pool;     // on its kind's pool list (pool lock of the kind)
  uint32_t           free_mask;   // FREE slabs in the pool (pool lock of the kind)
  uint32_t           reserved;
  struct superslab  *pool_next;   // pool list links (pool lock of the kind)
  struct superslab  *pool_prev;
  uint8_t            pad[64 - 32];
  slab_meta_t        slabs[SS_MAX_SLABS] __attribute__((aligned(64)));
} superslab_t;
_Static_assert(sizeof(superslab_t) <= SS_HEADER_SIZE, "the header fits in SS_HEADER_SIZE");
_Static_assert(SS_SIZE == (1u << SS_SHIFT), "SuperSlab size is a power of two");

extern const uint8_t g_kind_slab_shift[HAK_SLAB_KINDS];

// A ticket's take (remote_free_box.c ss_remote_take) holds the remote
// list's blocks out of both the list and `used` until it has counted them:
// the owner's slab_validate, which reads `used` and then the list, found a
// block short of the capacity (1 debug run of test_threads in ~1 800, three
// at a time). Debug builds make the take and that look exclusive; release
// builds have no such look, and no lock.
#if HAK_DEBUG
HAK_INLINE void slab_take_lock(slab_meta_t *m) {
  while (atomic_exchange_explicit(&m->take_lock, 1, memory_order_acquire)) sched_yield();
}
HAK_INLINE void slab_take_unlock(slab_meta_t *m) { atomic_store_explicit(&m->take_lock, 0, memory_order_release); }
#else
HAK_INLINE void slab_take_lock(slab_meta_t *m) { (void)m; }
HAK_INLINE void slab_take_unlock(slab_meta_t *m) { (void)m; }
#endif

HAK_INLINE char *slab_carve(const slab_meta_t *m) {
  return m->base + atomic_load_explicit(&((slab_meta_t *)m)->carve_off, memory_order_relaxed);
}
// (size_magic first: a FREE slab's carve point is its base, key 0 whatever the magic.)
HAK_INLINE void slab_set_carve(slab_meta_t *m, char *c) {
  uintptr_t off = (uintptr_t)(c - m->base);
  atomic_store_explicit(&m->carve_off, off, memory_order_relaxed);
  atomic_store_explicit(&m->carve_key, off * m->size_magic, memory_order_relaxed);
}
// Is p the start of a block of slab m that has been handed out at some time:
// a multiple of the block size d from the base, below the carve point. One
// multiply and one compare (Lemire, Kaser and Kurz's divisibility test, made
// to bound the index too): with M = floor(2^64/d) + 1 or + 2 (odd) and
// e = M*d - 2^64 (1 <= e <= 2d), an offset off = q*d + r gives
//   off*M mod 2^64 = q*e + r*M mod 2^64
// For r == 0 that is q*e: below 2^22 for any offset in a slab (< 2^21), and
// growing with q, so "q < carved blocks n" is "off*M < n*d*M mod 2^64", the
// carve_key kept beside carve_off. For 0 < r < d, r*M lies in
// [2^64/d - d, 2^64 - 2^64/d + 2d], at least 2^45 away from 0 mod 2^64 for d <= 2^18
// (q*e moves it by < 2^22): never below a key. An address before the base
// (slab 0's header, at most SS_HEADER_SIZE back) is a small negative offset:
// -(x*M) mod 2^64 is again at least 2^45 unless zero, and x > 0. A FREE slab's
// key is 0. tests/unit/test_size_class.c checks every offset of every class.
// (A non-canonical pointer, cut to 47 bits by ss_of_masked, adds k*2^47 with
// k != 0 mod 2^17 since M is odd: a block start then fails; another offset
// passes only by a chance below 2^-17, and then faults on the mark read.)
//
// The compare reads carve_key, which the owner's carving stores (relaxed) while
// another thread may free into the slab. GCC keeps a relaxed atomic load a
// separate `mov`; on x86-64 the compare reads the aligned word from memory in
// one instruction, in a one-line asm (an aligned 8-byte load is single-copy
// atomic there, as the relaxed load is). Elsewhere, and under ThreadSanitizer
// (which must see the access), the C form.
HAK_INLINE int slab_block_start(const slab_meta_t *m, const void *p) {
  uintptr_t off = (uintptr_t)p - (uintptr_t)m->base;
#if defined(__x86_64__) && !defined(HAK_TSAN)
  int below;
  __asm__("cmpq %2, %1" : "=@ccb"(below) : "r"(off * m->size_magic), "m"(*(const uint64_t *)&m->carve_key));
  return below;
#else
  return off * m->size_magic < atomic_load_explicit(&((slab_meta_t *)m)->carve_key, memory_order_relaxed);
#endif
}
_Static_assert(SS_SIZE <= ((size_t)1 << 21) && HAK_SLAB_MAX <= (1u << 18) && SS_HEADER_SIZE < (1u << 21),
               "slab_block_start's bounds");
// End of the blocks of a bound slab (its last block's end).
HAK_INLINE char *slab_end(const slab_meta_t *m) { return m->base + (size_t)m->capacity * m->block_size; }
// The blocks on m's local free list (free_n counts them while it is not
// NULL).
HAK_INLINE uint32_t slab_free_count(const slab_meta_t *m) { return m->freelist != NULL ? m->free_n : 0u; }
// slab_meta_t.remote_head, the remote list's word: the first block's address
// (blocks are 16-byte aligned, user addresses below 2^47), the count of the
// list's blocks that `used` still counts in the top 16 bits (a slab holds
// fewer than 2^16 blocks: capacity is 16 bits), and REMOTE_ATTEND in bit 0:
// set while the slab is unowned or its owner waits to be woken (ARMED), so
// that a remote freer looks at the state after its push (remote_free_box.c).
// An empty list has count 0.
#define REMOTE_ATTEND       ((uintptr_t)1)
#define REMOTE_COUNT_SHIFT  48
#define REMOTE_FIRST_MASK   ((((uintptr_t)1 << REMOTE_COUNT_SHIFT) - 1u) & ~(uintptr_t)15u)
HAK_INLINE void *remote_word_first(uintptr_t w) { return (void *)(w & REMOTE_FIRST_MASK); }
HAK_INLINE uint32_t remote_word_counted(uintptr_t w) { return (uint32_t)(w >> REMOTE_COUNT_SHIFT); }
HAK_INLINE int remote_word_has_list(uintptr_t w) { return (w & REMOTE_FIRST_MASK) != 0; }
HAK_INLINE uintptr_t slab_remote_word(const slab_meta_t *m, memory_order mo) {
  return atomic_load_explicit(&((slab_meta_t *)m)->remote_head, mo);
}

// The owner arming m (its full list): ask for attention if the remote list is
// empty (1), else 0 (blocks came: m is not full). Always a CAS, even when the
// word asks already: in the word's order of read-modify-writes each push then
// comes before it (and is seen: 0) or after it (and sees what the owner
// stored before it, ARMED).
HAK_INLINE int remote_list_attend_if_empty(slab_meta_t *m) {
  uintptr_t w = slab_remote_word(m, memory_order_relaxed);
  do {
    if (remote_word_has_list(w)) return 0;
  } while (!atomic_compare_exchange_weak_explicit(&m->remote_head, &w, w | REMOTE_ATTEND, memory_order_seq_cst,
                                                  memory_order_relaxed));
  HAK_SITE(SITE_REMOTE_ATTEND);
  return 1;
}
// The owner of ACTIVE m, which no longer waits to be woken (notify IDLE) or
// has just adopted it: pushes count their blocks on the list again.
HAK_INLINE void remote_list_unattend(slab_meta_t *m) {
  if (!(slab_remote_word(m, memory_order_relaxed) & REMOTE_ATTEND)) return;
  HAK_SITE(SITE_REMOTE_ATTEND);
  atomic_fetch_and_explicit(&m->remote_head, ~REMOTE_ATTEND, memory_order_acq_rel);
}
// The owner giving m up (shared_pool_detach_slab), before it stores the
// unowned state: ask for attention and uncount the list's blocks; returns
// how many were counted (the caller takes them out of `used`). seq_cst:
// before that state store, which a freer that pushes after this reads (it
// attends to the slab as ours or as unowned; none counts its blocks on a
// list that no owner drains).
HAK_INLINE uint32_t remote_list_attend_uncount(slab_meta_t *m) {
  uintptr_t w = slab_remote_word(m, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(&m->remote_head, &w, (w & REMOTE_FIRST_MASK) | REMOTE_ATTEND,
                                                memory_order_seq_cst, memory_order_relaxed)) {
  }
  HAK_SITE(SITE_REMOTE_ATTEND);
  return remote_word_counted(w);
}

// The blocks of the owner's ACTIVE slab m out of it (handed out, on TLS
// lists): `used` less its free list and the remote list's counted blocks
// (acquire: what remote freers pushed is seen). 0: EMPTY.
HAK_INLINE uint32_t slab_live(const slab_meta_t *m) {
  uintptr_t w = slab_remote_word(m, memory_order_acquire);
  return atomic_load_explicit(&((slab_meta_t *)m)->used, memory_order_acquire) - slab_free_count(m) -
         remote_word_counted(w);
}

// The same read by another thread for a census (racy, as every census's
// reads of a live slab are): an ACTIVE slab's free list taken out of `used`,
// and the remote list's counted blocks.
HAK_INLINE uint32_t slab_census_live(const slab_meta_t *m) {
  uint32_t used = atomic_load_explicit(&((slab_meta_t *)m)->used, memory_order_relaxed);
  uint32_t state = atomic_load_explicit(&((slab_meta_t *)m)->state, memory_order_relaxed);
  uint32_t f = remote_word_counted(slab_remote_word(m, memory_order_relaxed));
  if (SLAB_STATE(state) == SLAB_ACTIVE) f += slab_free_count(m);
  return used > f ? used - f : 0u;
}

// Has the slab a block to give: on its free list, uncarved, or on its remote
// list? (acquire: a remote list seen non-empty is read after.)
HAK_INLINE int slab_has_free_blocks(const slab_meta_t *m) {
  return m->freelist != NULL || slab_carve(m) < slab_end(m) ||
         remote_word_has_list(slab_remote_word(m, memory_order_acquire));
}

HAK_INLINE superslab_t *ss_of(const void *p) { return (superslab_t *)((uintptr_t)p & ~(uintptr_t)SS_MASK); }
HAK_INLINE superslab_t *ss_of_meta(const slab_meta_t *m) { return ss_of(m); }
// Every change of owner goes through here, with free's copy (owner_small:
// the owner's low 32 bits for a class below a cache line, else 0; 0 for no
// owner or the pool). `order` is the owner store's.
HAK_INLINE void slab_set_owner(slab_meta_t *m, uintptr_t owner, memory_order order) {
  atomic_store_explicit(&m->owner, owner, order);
  uint32_t small = owner > SLAB_OWNER_POOL && m->block_size < HAK_SEND_HOME_BELOW ? (uint32_t)owner : 0u;
  atomic_store_explicit(&m->owner_small, small, memory_order_relaxed);
}
// The slot in slabs[] of the slab holding address a (of a SuperSlab whose slabs
// are 2^shift bytes): five bits of the address, with no cut to the offset in
// the SuperSlab first, so free computes it with one shift and one mask.
HAK_INLINE unsigned ss_slot_of(uintptr_t a, unsigned shift) { return (unsigned)(a >> shift) & (SS_MAX_SLABS - 1); }
// Slab i of ss (0 <= i < nslabs).
HAK_INLINE slab_meta_t *ss_slab(const superslab_t *ss, unsigned i) {
  return (slab_meta_t *)&ss->slabs[ss_slot_of((uintptr_t)ss + ((uintptr_t)i << ss->slab_shift), ss->slab_shift)];
}
HAK_INLINE slab_meta_t *ss_slab_of(superslab_t *ss, const void *p) {
  return &ss->slabs[ss_slot_of((uintptr_t)p, ss->slab_shift)];
}
HAK_INLINE size_t ss_slab_bytes(const superslab_t *ss, unsigned idx) {
  size_t sz = (size_t)1 << ss->slab_shift;
  return idx == 0 ? sz - SS_HEADER_SIZE : sz;
}
// Blocks of block_size bytes a slab of `bytes` holds. The hardened build keeps
// a 4-byte size word per block of a class above 1 KiB after the last one
// (tiny/hardened_box.h).
HAK_INLINE uint32_t slab_capacity(size_t bytes, uint32_t block_size) {
  return (uint32_t)(bytes / (block_size + (HAK_HARDENED && block_size > HAK_TINY_MAX ? 4u : 0u)));
}
// A bound slab going FREE: remember how far its blocks reached (before its
// carve point is reset), so that the purge budget counts what may be resident,
// not the whole slab (threads that exit leave many slabs carved a few pages
// deep). In the hardened build a medium class's size table, at the slab's end,
// was written too (tiny classes keep their size word in the block).
HAK_INLINE void slab_note_dirty_end(slab_meta_t *m) {
  size_t end = atomic_load_explicit(&m->carve_off, memory_order_relaxed);
  if (end > m->dirty_end) m->dirty_end = (uint32_t)end;
  if (HAK_HARDENED && m->block_size > HAK_TINY_MAX) m->dirty_table = 1;
}
// The pages of a written size table: one 4-byte word per block, at most 1 636
// bytes (409 blocks of a 512 KiB slab), so at most two pages.
#define SLAB_TABLE_DIRTY_BYTES 8192u
// The pages its blocks reached since the last purge, in bytes.
HAK_INLINE size_t slab_reached_bytes(const slab_meta_t *m) { return ((size_t)m->dirty_end + 4095u) & ~(size_t)4095u; }
// The bytes a dirty FREE slab counts in its kind's budget: the pages its
// blocks reached, and its size table's. (The hardened build counted every slab
// whole: a 2 MiB slab filled the 2 MiB budget alone, and mstress -t 8 made
// 1 316 purge calls against the default's ~60, 2.0x its time.)
HAK_INLINE size_t slab_dirty_bytes(const slab_meta_t *m) {
  size_t end = slab_reached_bytes(m) + (HAK_HARDENED && m->dirty_table ? SLAB_TABLE_DIRTY_BYTES : 0u);
  size_t bytes = ss_slab_bytes(ss_of_meta(m), m->index);
  return end < bytes ? end : bytes;
}
// What a purge gives back: the pages its blocks reached, or the whole slab
// when its size table (at the end) was written: one call, the pages between
// never touched.
HAK_INLINE size_t slab_purge_bytes(const slab_meta_t *m) {
  size_t bytes = ss_slab_bytes(ss_of_meta(m), m->index), end = slab_reached_bytes(m);
  return (HAK_HARDENED && m->dirty_table) || end > bytes ? bytes : end;
}
HAK_INLINE char *ss_slab_start(superslab_t *ss, unsigned idx) {
  return (char *)ss + (idx == 0 ? SS_HEADER_SIZE : ((size_t)idx << ss->slab_shift));
}
// Slab ids name a slab in lock-free lists: 1 + registry index * 32 + slab index.
HAK_INLINE uint32_t slab_id(const slab_meta_t *m) {
  return 1u + ss_of_meta(m)->index * SS_MAX_SLABS + m->index;
}

HAK_INLINE uint32_t ss_all_slabs_mask(const superslab_t *ss) {
  return ss->nslabs == 32 ? 0xffffffffu : ((1u << ss->nslabs) - 1u);
}

// Map and lay out a new SuperSlab of a kind, every slab FREE; not yet
// registered. NULL if the OS refuses. Called with no lock held. SuperSlabs
// are cut in address order from chunks of SS_CHUNK_SLABS, mapped one chunk at
// a time (superslab.c).
#define SS_CHUNK_SLABS 8u
superslab_t *superslab_allocate(unsigned kind);
// Chunks of SuperSlabs mapped so far.
uint64_t superslab_chunks_mapped(void);
// fork() child: no thread is mapping a chunk of SuperSlabs.
void superslab_fork_child(void);
// Lay out again for `kind` a SuperSlab that the registry no longer knows and
// no thread reaches (every slab was FREE in its pool): every slot's metadata
// reset, its slabs FREE, each slot's generation moved past the last (a stale
// CAS of the old layout fails); its pages stay as they are.
void superslab_relayout(superslab_t *ss, unsigned kind);
// Unmap a SuperSlab that the registry no longer knows.
void superslab_unmap(superslab_t *ss);

#endif
