// free_batch_box.h — a thread's frees of other threads' blocks (or of its own,
// in a heap too big for the caches), checked in batches.
//
// free tests a block's free mark (the exact double-free check) before it
// pushes the block, and that test is a load. When another core wrote the
// block last (a producer/consumer pair, a ring of threads, larson's
// hand-offs) the load misses and holds the core until the line arrives; a
// store would not (tcmalloc's free only stores, and runs those rows at
// 0.6-0.75x our time on this project's AMD VM: CURRENT_TASK Known gaps 15).
// So a thread whose frees are mostly blocks of other threads' slabs batches
// them: free asks for the block's line for writing (prefetchw) and holds the
// block; every FREE_BATCH_N held blocks, their lines here or on the way by
// then, are tested and pushed on this thread's lists (the fast path's push in
// the drain, another thread's blocks under a cache line included, which the
// fast path sends home: free_batch_drain says why; tiny_free_checked for a
// full list).
//
// What it changes: a double free on a batching thread is reported when its
// batch is checked, up to FREE_BATCH_N frees later (at the latest when the
// thread exits, flushes, or stops batching; never if the process ends by
// _exit first), still before the block could be handed out twice. A held
// block is freed for the program but not yet on a free list, so a
// malloc_usable_size or realloc of it in that window is not reported as a use
// after free. HAKMEM_FREE_BATCH=0 keeps every report at the free.
//
// The hardened build batches too (free_batch_hold_hardened): a held block's
// mark, size word, canary, fill and quarantine (hardened_free_block) wait for
// its batch, so on a batching thread a write after free within those 32
// frees is overwritten by the fill instead of reported when the block leaves
// the quarantine, and a read in that window sees the old data, not the fill.
// The block still waits its quarantine after the batch before any reuse.
// Its cross-thread rows cost 2.2-2.5x the default's time without it (the
// misses of the mark, size word and canary loads, one after another).
//
// When: an overflow's flush of a TLS list (any class) that is at least a
// quarter other threads' blocks (less those the thread took back from its
// own chains in the class exchange: free_batch_note_own_chain) starts
// batching, flushes of 1 024 blocks in a row under an eighth stop it
// (tiny_flush: the class exchange, or their slabs' remote lists, sort them
// out anyway); so does a full remote buffer
// (blocks under a cache line of other threads' slabs, which never enter the
// TLS lists: in a ring of threads the lists may never overflow). A thread's list holds the blocks
// it freed and has not reused, so this follows what its frees are; the slabs
// of the blocks it frees do not (in a ring of two threads each frees mostly
// blocks of its own slabs that the other thread wrote last: a thread reuses
// the blocks it frees, whoever carved them). A thread whose slabs hold
// FREE_BATCH_HEAP_LINES lines of blocks or more batches as well, its own blocks
// included (free_batch_note_heap, at a refill; their lines are in memory more
// often than not), until they hold under half of that; the flushes' rule does
// not stop it. Only blocks up to 32 KiB are
// held (FREE_BATCH_MAX_BLOCK); a larger block's free on a batching thread is
// checked at once. Batching on means the thread's
// owner keys of those classes are FREE_BATCH_KEY, which no slab's owner_small
// equals, so the free fast path sends each of their blocks here
// (hak_free_foreign) with no test of its own: a thread that is not batching
// pays nothing.
#ifndef HAK_FREE_BATCH_BOX_H
#define HAK_FREE_BATCH_BOX_H

#include <stddef.h>
#include <stdint.h>

#include "debug/ptr_types.h"
#include "superslab/ss_registry.h"
#include "superslab/superslab.h"

// Blocks held before their batch is tested. 8: ring-2 0.87x the time of no
// batch, 16: 0.76x, 32: 0.77x (paired rounds). Each held block's line must
// come from the core that wrote it, and on a thread that frees in a tight
// loop 16 frees were too few for it to arrive: with 32, an sh8bench-shaped
// pair of threads 0.89x the time of 16, larson -t 2 0.95x, rptest-shaped
// 0.95x, cross-2 0.96x (paired rounds; 64: sh8 0.83x but prodcons 1.09x).
// The batch keeps one word a block (its address and its class's list,
// free_batch_held_t) in the thread's record (tiny_heap_t.batch), on the
// record's first page with the heap's other set-up fields: a larger
// FREE_BATCH_N pushes the remote buffer past that page and fails
// thread_record.h's static assertion (64 did; measured on 16 cores before
// the move, no gain past the noise).
#ifndef FREE_BATCH_N
#define FREE_BATCH_N 32u
#endif
#define FREE_BATCH_MIN_FLUSH 8u   // a flush of fewer blocks says nothing either way
// A batching thread stops when the flushes of FREE_BATCH_STOP_WINDOW blocks
// or more in a row held under an eighth of other threads' blocks, not at the
// first such flush: a list holds runs of blocks in the order they were freed,
// so one flush shows one run. Two threads handing each other half of every
// batch of 1-111 B (sh8bench's shape) free ~half other threads' blocks, but
// 43% of their flushes held under a tenth (their own run of frees on top):
// each of those stopped the batch, and the other threads' blocks freed then
// waited on their marks' lines until the remote buffer started it again,
// 1 684 times in a run of 40 M frees.
// scripts/device-scale.sh builds one that never stops (build/nostop): on
// this VM a ring of two threads had one of them stop batching midway in 2 of
// 3 runs (its frees were blocks of its own slabs that the other thread
// wrote), and here its mark loads were L1/L2 hits (rdtscp samples: 4 cycles
// over a hit at the median), so what a stop costs on 16 cores is the lease's
// to measure (CURRENT_TASK Known gaps 11).
#ifndef FREE_BATCH_STOP_WINDOW
#define FREE_BATCH_STOP_WINDOW 1024u
#endif
// The largest block held: 32 KiB (HAK_MEDIUM_MAX), so a thread holds at
// most 1 MiB, what two medium classes' TLS lists may keep anyway. A thread
// handing 8 B-16 KiB batches to the next of 8 threads (rpmalloc's rptest in
// shape): tiny blocks alone held, 10% of its samples waited on the medium
// frees' mark loads; held too, 0.90x the time (7 paired rounds, 4 and 8
// threads). Larger slab blocks (to 256 KiB) are tested at once: 32 of them
// held would keep up to 8 MiB from reuse.
#define FREE_BATCH_MAX_BLOCK HAK_MEDIUM_MAX
// An owner key no slab has: owner_small is a thread pointer's low 32 bits
// (aligned), 0 or SLAB_OWNER_POOL's.
#define FREE_BATCH_KEY 2u
_Static_assert(FREE_BATCH_KEY != 0 && FREE_BATCH_KEY != (uint32_t)SLAB_OWNER_POOL && FREE_BATCH_KEY % 8 != 0,
               "no slab's owner_small is the batching key");

// A thread whose slabs hold this many blocks or more (a tiny block over a
// cache line counted once a line: tiny_heap_slab_lines) batches its own frees
// too (free_batch_note_heap), and stops below half of it: each free's test of
// its block's mark waits on a line that, in a heap of that many blocks (8 MiB
// of their first lines), is seldom in a cache (ws8192 -w 262144 of 16-128 B,
// ~131 k blocks live in slabs of 140 k: 1.35x mimalloc's time, at its level
// without the test; with the batch's prefetches, 16 misses in flight,
// 0.74-0.78x the time). Below it the batch costs about what it hides, by the
// hour on this shared VM (-w 131072, 73 k blocks: 0.80x in one hour, 1.07x in
// another; -w 196608, ~105 k: 0.97x), or more (-w 65536, 41 k: 1.045x;
// -w 8192: 1.13x).
#ifndef FREE_BATCH_HEAP_LINES
#define FREE_BATCH_HEAP_LINES (128u << 10)
#endif
// ... but not a heap freed in the order it was built (or its reverse): each
// block's line is the hardware prefetcher's next, the batch only costs (a
// list of 1 M nodes of 32 bytes built and freed in allocation order: 153
// instructions a node batched, 116 not, 0.86-0.94x the time; in random order
// it keeps batching). A drain of a big heap's batch whose first
// FREE_BATCH_SEQ_LOOK + 1 blocks each lie within 1 KiB of the one before
// stops the batch, and the heap's size may start it again only after
// FREE_BATCH_HEAP_REST refills.
#define FREE_BATCH_SEQ_LOOK 8u
#define FREE_BATCH_HEAP_REST 256u
// ... nor a heap whose blocks the program reads before it frees them (a
// destructor's fields, a buffer summed: mimalloc-bench's alloc-test, 256 k
// blocks read whole before each delete[]): their marks are in L1 already, and
// the batch's ~30 instructions a free are all it adds (7% of alloc-test's
// time; tcmalloc and mimalloc 0.93-0.94x ours). So every
// FREE_BATCH_PROBE_EVERY-th drain of a batch begun for the heap's size times
// the load of its last block's mark, whose line the free just before asked
// for (a miss is still on its way), against a second load of the same word
// (free_batch_probe: the difference is the miss, whatever the counter's rate
// and overhead); a load FREE_BATCH_COLD_TICKS slower than the hit is a miss
// the batch hides. (Timed at the hold, before the block's prefetch, the test
// at every hold cost ring -t 2 ~3 instructions a free under callgrind.) A
// window of FREE_BATCH_PROBES probes under an eighth of misses stops the
// batch, which the heap's size may start again after FREE_BATCH_HEAP_REST
// refills, and so probes again.
#define FREE_BATCH_PROBE_EVERY 4u
#define FREE_BATCH_PROBES      16u
#ifndef FREE_BATCH_COLD_TICKS
#define FREE_BATCH_COLD_TICKS  128u
#endif

// A held block and its class in one word: the block start in the low
// FREE_BATCH_CLASS_SHIFT bits (a slab block's address is below 2^47, the
// SuperSlab map's reach), its class's list's offset in the TLS lists (class
// times 16) above them. The drain pushes it on that list without finding its
// slab again (the map's byte, then the metadata's line, a load that waited on
// the one before): 31 -> 25 instructions a block in the drain, the hold 3
// more (ring -t 2 under callgrind: -1.1% of the run's instructions).
// A pointer with bits set where the class goes that passed free's
// block-start test (a wild non-canonical one, by a chance under 2^-17) is not
// held (free_batch_holdable): its mark's read faults, as unbatched.
typedef uint64_t free_batch_held_t;
#define FREE_BATCH_CLASS_SHIFT 48
_Static_assert(SS_ADDR_BITS <= FREE_BATCH_CLASS_SHIFT && HAK_NUM_CLASSES * 16u <= (1u << (64 - FREE_BATCH_CLASS_SHIFT)),
               "a held block's address and its list's offset fit in one word");
HAK_INLINE int free_batch_holdable(hak_base_ptr_t b) {
  return ((uintptr_t)hak_base_raw(b) >> FREE_BATCH_CLASS_SHIFT) == 0;
}
HAK_INLINE free_batch_held_t free_batch_held(hak_base_ptr_t b, unsigned cls) {
  return (uint64_t)(uintptr_t)hak_base_raw(b) | (uint64_t)cls * 16u << FREE_BATCH_CLASS_SHIFT;
}
HAK_INLINE hak_base_ptr_t free_batch_held_block(free_batch_held_t h) {
  return hak_base_from_raw((void *)(uintptr_t)(h & (((uint64_t)1 << FREE_BATCH_CLASS_SHIFT) - 1)));
}
// The offset of its class's list from the first list (tls_cache_t.lists).
HAK_INLINE unsigned free_batch_held_list(free_batch_held_t h) { return (unsigned)(h >> FREE_BATCH_CLASS_SHIFT); }
HAK_INLINE unsigned free_batch_held_class(free_batch_held_t h) { return free_batch_held_list(h) / 16u; }

typedef struct free_batch {
  uint32_t        n;          // blocks held
  uint16_t        heap;       // ... because of the heap's size (free_batch_note_heap), not other threads' blocks
  uint16_t        heap_rest;  // refills before the heap's size may start it again (FREE_BATCH_HEAP_REST)
  uint32_t        win_moved;  // blocks of the flushes seen since batching started or the last verdict
  uint32_t        win_foreign;   // ... of them other threads'
  uint32_t        own_chains;   // blocks taken back from its own chains in the exchange, not yet discounted
  uint8_t         probe_skip;   // heap batches since the last probe (FREE_BATCH_PROBE_EVERY)
  uint8_t         probes;       // probes in this window (FREE_BATCH_PROBES) ...
  uint8_t         probes_cold;  // ... and how many of them missed
  // A heap's batch: the blocks of each tiny class that may still go straight
  // home past its full list before the next look (tiny_overflow_home).
  uint32_t        home_left[HAK_TINY_CLASSES];
  free_batch_held_t held[FREE_BATCH_N];   // block starts of live slabs and their classes
#if HAK_HARDENED
  size_t          want[FREE_BATCH_N];   // what a sized delete gave, HARD_NO_SIZE for free
#endif
} free_batch_t;

// The calling thread's batch lives in its record (tiny_heap_t.batch: set
// with the heap at thread_setup, NULL before and after); the static TLS
// keeps only the flag free's paths test and the pointer. (As a TLS
// variable the batch was 288 of the 2 621 bytes glibc copies into every
// new thread's stack: CURRENT_TASK Known gaps 53.)
extern HAK_INTERNAL __thread free_batch_t *t_free_batch_p __attribute__((tls_model("initial-exec")));
// Batching: the owner keys are FREE_BATCH_KEY (free_batch_set_active).
extern HAK_INTERNAL __thread uint32_t t_free_batch_active __attribute__((tls_model("initial-exec")));

// Test b's free mark (a double free is reported), then free it as the fast
// path would have (tiny_free_checked).
void free_batch_test_and_free(slab_meta_t *m, hak_base_ptr_t b);
// Test and free every held block now (a double free is reported here).
void free_batch_drain(void);
// On a thread batching for its heap's size, at a drain, b its batch's last
// block: every FREE_BATCH_PROBE_EVERY-th time, time the load of b's mark and
// count it in the window (free_batch_probe_note).
void free_batch_probe(hak_base_ptr_t b) HAK_NOINLINE;
// One probe's verdict: the mark's load took `first` ticks and the same load
// again `again`. At the end of a window under an eighth of misses, the batch
// stops (it started for the heap's size: fb->heap) and rests.
void free_batch_probe_note(uint64_t first, uint64_t again);
// On a batching thread: hold b (a block start of m, its mark not tested
// yet). Inline in free's foreign path (hak_free_foreign): every free of a
// batching thread comes this way. A block larger than FREE_BATCH_MAX_BLOCK
// never does: its class keeps its owner key while the thread batches
// (free_batch_set_active), so free tests it at once.
HAK_INLINE void free_batch_hold(slab_meta_t *m, hak_base_ptr_t b) {
  HAK_ASSERT(g_size_class[m->cls].size <= FREE_BATCH_MAX_BLOCK);
  if (HAK_UNLIKELY(!free_batch_holdable(b))) {
    free_batch_test_and_free(m, b);
    return;
  }
  free_batch_t *fb = t_free_batch_p;
  hak_prefetch_for_write(hak_base_raw(b));
  uint32_t n = fb->n;
  fb->held[n] = free_batch_held(b, m->cls);
  fb->n = ++n;
  if (HAK_UNLIKELY(n == FREE_BATCH_N)) free_batch_drain();
}
#if HAK_HARDENED
// The hardened build's hold: p a block start of m, freed by free (want
// HARD_NO_SIZE) or a sized delete (want its size); a block larger than
// FREE_BATCH_MAX_BLOCK is checked at once.
void free_batch_hold_hardened(slab_meta_t *m, void *p, size_t want) HAK_NOINLINE;
#endif
// A flush of a TLS list found `foreign` of its `moved` blocks in other
// threads' slabs: start batching at a quarter or more; stop when a window of
// flushes (FREE_BATCH_STOP_WINDOW blocks) held under an eighth.
void free_batch_note_flush(uint32_t moved, uint32_t foreign);
// A refill took back n blocks of a chain this thread put in the class
// exchange (other threads' blocks it had flushed): the next flushes' counts
// of other threads' blocks are lowered by as many, start and stop alike
// (transfer_take_others_first says why).
HAK_INLINE void free_batch_note_own_chain(uint32_t n) {
  free_batch_t *fb = t_free_batch_p;
  if (HAK_UNLIKELY(fb == NULL)) return;
  // At most a window's worth: what it took back long ago and has handed on
  // since does not hide other threads' blocks for long.
  fb->own_chains = fb->own_chains + n < FREE_BATCH_STOP_WINDOW ? fb->own_chains + n : FREE_BATCH_STOP_WINDOW;
}
// At a refill: what this thread's slabs hold (tiny_heap_t.owned_lines);
// past FREE_BATCH_HEAP_LINES it starts batching, below half of it a thread
// that started for that reason stops. The hardened build too: its free waits
// on the mark's, size word's and canary's lines (`ws8192 -w 262144` of
// 16-128 B: 1.88x the default's time unbatched, 1.42x batched).
void free_batch_note_heap(uint32_t owned_lines);
// Start (1) or stop (0) batching this thread's frees; stopping drains. The
// thread is LIVE.
void free_batch_set_active(int on);

#endif
