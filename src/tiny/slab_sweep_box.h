// slab_sweep_box.h — a slab's free list put back in address order before a
// refill takes it.
//
// A slab's free list lies in the order its blocks were freed. A program that
// frees a big structure in random order (a list, a hash table, a tree torn
// down) leaves each slab's list in random order, and the next build pops its
// blocks from all over the slab: every pop waits for the line of a block
// that no prefetcher saw coming (a list of 1 M nodes of 32 B freed at
// random: the build after it took 0.125 s against mimalloc's 0.033, whose
// emptied pages start again from their first block). Only slabs that
// emptied go back to the pool and carve again from their base; a slab kept
// by one block still live (one that sat on the thread's list when the last
// round ended) keeps its random list.
//
// So a refill about to take a slab's list, when a quarter of the slab or
// more is on it and the list's second block is not beside its first (a list freed in address
// order, either way, is taken as it lies), sweeps the slab instead: it reads every
// carved block's free mark in address order (one sequential pass, which the
// prefetcher streams), and if the marked blocks are exactly as many as the
// list holds (free_n), links them in address order as one chain. Any other
// count means some marked block is not on the list (on a TLS list, in the
// exchange, on the remote list, being freed by another thread right now) or
// a list block lost its mark (a write after free): the list is left as it
// was, and nothing is lost. The set the second pass links is the one the
// first pass read (a bitmap), so a mark set between the passes is not seen.
// The first pass also decodes each marked block's link word (on the line it
// reads): when the count matches, an address written there after the free
// (free-list poisoning, which the walk of the list it replaces would have
// found) is reported as the walk reports it, and with
// HAKMEM_ABORT_ON_ERROR=0 the sweep goes on: the forged link is
// overwritten, never followed.
//
// Off in the hardened build (its free blocks carry the fill pattern and its
// refill shuffles), under the sanitizers (the pass reads blocks the program
// owns) and for classes above TINY: a larger block is a line or more of its
// own, and its pop waits for it in any order.
#ifndef HAK_SLAB_SWEEP_BOX_H
#define HAK_SLAB_SWEEP_BOX_H

#include <stdint.h>

#include "superslab/size_class.h"
#include "superslab/superslab.h"
#include "tiny/tls_sll_box.h"

// The largest class swept: the tiny classes (sizes of 512 and 1 024 B freed
// at random: the build after it 0.037 -> 0.030 s and 0.060 -> 0.028 s at
// 256 B, purging off).
#ifndef SLAB_SWEEP_MAX_SIZE
#define SLAB_SWEEP_MAX_SIZE HAK_TINY_MAX
#endif
// A slab's carved blocks the sweep's bitmap covers: a small slab's 16-byte
// class (64 KiB / 16). A slab with more is not swept.
#define SLAB_SWEEP_MAX_BLOCKS 4096u
// Lists shorter than this are not worth a pass over the slab.
#define SLAB_SWEEP_MIN_FREE 64u
// A list of at least 1/SLAB_SWEEP_FREE_DEN of the carved blocks is swept:
// the pass reads up to that many marks a block it orders. A heap that
// churns (1 M blocks of 32 B, a shuffled 15-45% freed and taken again,
// rounds; /tmp probe, pinned), the takes: at half (the first rule) 30%
// 0.132 s, 45% 0.188 (mimalloc 0.168, 0.229); at a quarter 0.034 and
// 0.042; at an eighth 15% 0.078 -> 0.031. The rows' instructions stayed
// level at a quarter and an eighth (mstress -t 1 1.010x and 1.011x, no
// sweep in ws-small or ws-big-read); an eighth would cost ~30
// instructions a block where the slab is in cache anyway.
#define SLAB_SWEEP_FREE_DEN 4u
// A list whose second block lies within this many blocks of its first is
// taken as it lies: freed in address order (either way), or near it.
#define SLAB_SWEEP_ORDERED_STEP 2u
// After a sweep whose marks did not match its list, the slab is not swept
// again until as many blocks have come onto its list (frees home, drained
// remote frees) as the marks were off by, and at least
// 1/SLAB_SWEEP_RETRY_DEN of its carved blocks (so a pass in vain reads at
// most that many marks a block come home). Blocks held on other threads'
// lists stay there while the owner's refills take its list batch by batch,
// and each refill swept in vain: in `mstress -r 10 -t 16 -n 20000` 686 of
// 1 124 sweeps did not match, one slab 54 times (its list 1 961 ... 1 162
// blocks long, 38 marks over each time), every pass reading all 4 096
// blocks' marks. Waiting: 572-905 such sweeps a run (HAKMEM_STATS, seven
// runs) -> 233-253 (three), the matched sweeps' blocks within the runs'
// spread (416-553 k -> 414-510 k; a wait of 1/8 of the carved blocks lost
// a fifth of them), mstress's instructions under callgrind (`-r 3`, threads
// serialised) 700.0 M -> 687.0 M, the sweep's 19.8 M -> 8.9 M.
#ifndef SLAB_SWEEP_RETRY_DEN
#define SLAB_SWEEP_RETRY_DEN 32u
#endif

// The second block of m's free list, whose first is `first` and first
// chain ci (the 16-byte class keeps a chain's second block in its record),
// or NULL.
HAK_INLINE hak_base_ptr_t slab_list_second(const slab_meta_t *m, hak_base_ptr_t first, block_chain_info_t ci) {
  return ci.n >= 2u ? (block_chain_packed(m) ? ci.second : block_next(first)) : ci.next;
}

// Sweep m (owned by the calling thread, its list not empty, `carved` blocks
// handed out, at most SLAB_SWEEP_MAX_BLOCKS): 1 if its free list is now its
// free blocks in address order, one chain; 0 if the marks did not match
// the list (it is as it was).
int slab_sweep(slab_meta_t *m, uint32_t carved) __attribute__((noinline));

// A sweep that did not match waits (SLAB_SWEEP_RETRY_DEN): the blocks that
// came onto m's list since its last refill count off the wait. 1 when it is
// over (and m may be swept again). The refill that called it notes the
// list's length after its take (slab_sweep_note_taken).
HAK_INLINE int slab_sweep_waited(slab_meta_t *m) {
  uint32_t in = m->free_n > m->sweep_seen ? (uint32_t)m->free_n - m->sweep_seen : 0u;
  if (in < m->sweep_wait) {
    m->sweep_wait = (uint16_t)(m->sweep_wait - in);
    return 0;
  }
  m->sweep_wait = 0;
  return 1;
}

// After a refill took from m's list: its length, for the wait's count.
HAK_INLINE void slab_sweep_note_taken(slab_meta_t *m) {
  if (HAK_UNLIKELY(m->sweep_wait != 0)) m->sweep_seen = m->free_n;
}

// Before a refill takes m's free list: sweep it if the list is a quarter of
// the carved blocks or more and lies out of order, and no unmatched sweep
// is waiting.
HAK_INLINE void slab_sweep_maybe(slab_meta_t *m) {
  if (HAK_HARDENED || HAK_SANITIZED) return;
  if (HAK_UNLIKELY(m->sweep_wait != 0) && !slab_sweep_waited(m)) return;
  if (m->block_size > SLAB_SWEEP_MAX_SIZE || m->free_n < SLAB_SWEEP_MIN_FREE) return;
  uint32_t carved = (uint32_t)((size_t)(slab_carve(m) - m->base) / m->block_size);
  if ((uint32_t)m->free_n * SLAB_SWEEP_FREE_DEN < carved || carved > SLAB_SWEEP_MAX_BLOCKS) return;
  // Blocks on the remote list are marked and not on the list: the count
  // could not match (the refill drains them when it wants them).
  if (remote_word_has_list(slab_remote_word(m, memory_order_relaxed))) return;
  hak_base_ptr_t first = hak_base_from_raw(m->freelist);
  block_chain_info_t ci = block_chain(m, first);
  // A forged record is the refill's to report (slab_take_chains), as before.
  if (!slab_chain_plausible(m, ci)) return;
  hak_base_ptr_t second = slab_list_second(m, first, ci);
  uintptr_t a = (uintptr_t)hak_base_raw(first), b = (uintptr_t)hak_base_raw(second);
  if ((a > b ? a - b : b - a) <= (uintptr_t)SLAB_SWEEP_ORDERED_STEP * m->block_size) return;
  slab_sweep(m, carved);
}

#endif
