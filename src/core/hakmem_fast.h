// hakmem_fast.h — the malloc and free fast paths, inlined into hak_malloc /
// hak_free and into the exported malloc / free (src/api), so a program's call
// reaches them without a second jump. Everything else is in the noinline
// slow paths of hakmem.c.
//
//   malloc (n <= 1 KiB): class table -> pop the TLS list, its link decoded
//                        and checked -> return (1 KiB < n <= 256 KiB: the
//                        same pop, the class from a table of 256-byte steps)
//   free:  registry byte (the metadata shift) -> slab metadata -> block start below the carve point
//          -> the slab is this thread's, or the block is 64 bytes or more
//          -> free mark absent -> push on its TLS list (another thread's block
//          is reused here, tcmalloc-style, and goes home with the next flush;
//          a smaller one goes to hak_free_foreign and the remote buffer, and
//          so does every block up to 32 KiB while the thread batches its
//          frees: tiny/free_batch_box.h)
#ifndef HAK_HAKMEM_FAST_H
#define HAK_HAKMEM_FAST_H

#include <stddef.h>

#include "stats/stats.h"
#include "superslab/ss_registry.h"
#include "tiny/tiny_refill.h"
#include "tiny/tls_sll_box.h"

// An experiment for the 16-core run (issue 9; CURRENT_TASK Known gaps 11),
// never on by default: free asks for the block's line for writing before it
// reads the free mark. On 2 cores it took ring-2 to 0.64-0.68x the time
// (the block was last written by the other core: one transfer, not a read
// and then an upgrade) but cross-2 to 1.22x. scripts/device-scale.sh builds
// it (make BUILD=build/pfw EXTRA_CFLAGS=-DHAK_FREE_PREFETCHW=1) beside the
// default library. 0: the default's code is unchanged.
#ifndef HAK_FREE_PREFETCHW
#define HAK_FREE_PREFETCHW 0
#endif
// A second experiment for the 16-core run, never on by default and UNSAFE (a
// double free then goes undetected and corrupts the heap): free skips its test
// of the block's free mark. That test loads a line of the block, which on the
// cross-thread rows another core wrote last; on this project's AMD EPYC VM a
// build without it ran ring-2, cross-2 and larson at 0.60, 0.67 and 0.74x the
// time, tcmalloc's level (CURRENT_TASK Known gaps 15). It measures what exact
// double-free detection at the free costs at 16 threads (scripts/device-scale.sh
// builds it as build/nomark); it is not a mode to ship.
#ifndef HAK_FREE_SKIP_MARK_TEST
#define HAK_FREE_SKIP_MARK_TEST 0
#endif

// Everything but a TLS hit of a tiny class (and every failure).
void *hak_malloc_slow(size_t size) HAK_NOINLINE;
// A block past the slabs: the page heap (size <= PAGE_HEAP_MAX, alignment 0),
// else a huge mapping (aligned to `alignment` when not 0); zeroed when `zero`.
// A refused mapping gives back the address space no block uses
// (hak_release_unused) and tries once more. NULL: errno not set.
void *hak_large_alloc(size_t size, size_t alignment, int zero) HAK_NOINLINE;
// Give back what no block uses (a refused mapping's retry); 1 if anything went.
int hak_release_unused(void) HAK_NOINLINE;
// Everything but a push of a checked block on a TLS list with room.
void hak_free_slow(void *p) HAK_NOINLINE;
// A block start of slab m whose free mark is not tested yet: another thread's
// block of less than a cache line, or any block while this thread batches its
// frees (tiny/free_batch_box.h).
void hak_free_foreign(slab_meta_t *m, hak_base_ptr_t b) HAK_NOINLINE;


// free's lookup: the metadata of p's slab when p is the start of one of its
// blocks below the carve point, else NULL (NULL, not ours, an interior or
// never-handed-out address). The address is cut to 47 bits for the SuperSlab
// map's entry (0: not ours, else the metadata shift); the block-start test on
// the uncut pointer sends a non-canonical one to the caller's slow path.
HAK_INLINE slab_meta_t *slab_of_block_start(const void *p) {
  superslab_t *ss = ss_of_masked(p);
  unsigned meta_shift = ss_registry_meta_shift(ss);
  if (HAK_LIKELY(meta_shift != 0)) {   // NULL and malloc(0) pointers are not
    slab_meta_t *m = ss_meta_of(ss, p, meta_shift);
    if (HAK_LIKELY(slab_block_start(m, p))) return m;
  }
  return NULL;
}

#if HAK_HARDENED
#include "core/hardened.h"
#include "tiny/free_batch_box.h"
#include "tiny/hardened_box.h"
// The hardened build checks every block on its way in and out (core/hardened.c,
// tiny/hardened_box.h). Its common paths are inline here as the default's are,
// so the exported malloc and free run them with no jump to a second function.

// The medium classes take requests from HARD_MEDIUM_MIN (1009: 1009 to 1023
// bytes have no room for a tiny block's canary and size word) to HAK_SLAB_MAX
// less the canary.
#define HARD_MEDIUM_MIN (HAK_TINY_MAX - HARD_TAIL_BYTES + 1)

// malloc: 1 .. 1008 bytes take a tiny class (the request plus the 16-byte
// tail): the TLS pop, the fill checked, canary and size written. Every way
// out is a call in last place: `tiny_miss` (an empty list), `larger` (above
// the tiny classes), `bad` (a changed fill, reported). Constants at each use,
// inlined through.
HAK_INLINE void *hard_malloc_fast_with(size_t size, void *(*tiny_miss)(size_t), void *(*larger)(size_t),
                                       void *(*bad)(unsigned, void *, size_t)) {
  if (HAK_LIKELY(size - 1 < HAK_TINY_MAX - HARD_TAIL_BYTES)) {   // 1 .. 1008: a tiny class
    // The slot from the thread's table, as the default build's malloc (one
    // load); the class entry by the slot (2 * class) with no shift.
    unsigned slot = tls_slot_of_size(size + HARD_TAIL_BYTES);
    hak_base_ptr_t b = tls_sll_pop_fast(&t_tls_cache, slot);
    if (HAK_LIKELY(!hak_base_is_null(b))) {
      void *p = hak_user_raw(hak_base_to_user(b));
      return hardened_arm_tiny(slot, p, size, bad);
    }
    return tiny_miss(size);   // tls_sll_pop in the refill reports a corrupt list
  }
  return larger(size);
}
HAK_INLINE void *hard_malloc_larger(size_t size) {
  if (HAK_LIKELY(size - HARD_MEDIUM_MIN <= HAK_SLAB_MAX - HARD_TAIL_MEDIUM - HARD_MEDIUM_MIN))
    return hak_hardened_malloc_medium(size);
  return hak_hardened_malloc_other(size);
}
HAK_INLINE void *hak_malloc_fast(size_t size) {
  return hard_malloc_fast_with(size, hak_hardened_malloc_refill, hard_malloc_larger, hak_hardened_pop_bad);
}

// free: the default build's lookup (the address cut to 47 bits for the
// SuperSlab map's entry, 0: not ours, else the metadata shift; the block-start
// test on the uncut pointer sends a non-canonical one to the slow path), then
// a live slab block's checks and quarantine (hardened_free_block, which keeps
// errno: its slow paths save it). A thread not set up yet is set up by the
// quarantine when its ring is empty (hardened_thread_first), not tested here.
// `sized` (a constant): a sized delete, whose size `want` is checked on a slab
// block by hardened_free_block and on anything else by hak_hardened_delete_other;
// 0 for free (want unused). Every way out is a call in last place, so the
// common path keeps p in no saved register (a check and then a free, two calls,
// cost the sized delete a push, a move and a pop; its test of want against
// HARD_NO_SIZE two more).
HAK_INLINE void hak_free_fast_sized(void *p, size_t want, int sized) {
  slab_meta_t *m = slab_of_block_start(p);
  if (HAK_LIKELY(m != NULL)) {
    if (HAK_UNLIKELY(t_free_batch_active)) {   // a consumer thread (tiny/free_batch_box.h)
      free_batch_hold_hardened(m, p, want);   // HARD_NO_SIZE from free
      return;
    }
    if (HAK_LIKELY(!block_is_free(hak_base_from_raw(p)))) {
      hardened_free_block(m, p, want, sized);
      return;
    }
  }
  if (sized) hak_hardened_delete_other(p, want);
  else hak_hardened_free_other(p);
}
HAK_INLINE void hak_free_fast(void *p) { hak_free_fast_sized(p, HARD_NO_SIZE, 0); }

// operator new's form of hak_malloc_fast (api/cxx_new_api.c): every way out but
// a TLS hit is one call in last place, `miss` (the rest of malloc and the
// new_handler loop) or `bad` (a changed fill, reported, then the same), so the
// hit keeps the size in no saved register; with malloc's several ways out,
// each followed by the NULL test, _Znwm pushed, moved and popped one.
HAK_INLINE void *hak_malloc_fast_or(size_t size, void *(*miss)(size_t), void *(*bad)(unsigned, void *, size_t)) {
  return hard_malloc_fast_with(size, miss, miss, bad);
}
#else
// `slow`: what a miss calls, a noinline function with hak_malloc_slow's
// contract (operator new passes one that also runs the new_handler loop, so
// that its fast path keeps nothing for after a call).
// A medium request (1 KiB to HAK_SLAB_MAX) pops its TLS list here too, its
// class from the 256-byte-step table (size_class_medium); the tiny path's
// instructions are the same (its `ja` lands here instead of on the call).
// Through hak_malloc_slow a medium hit took a call, a stack frame and the
// class's bit scan: ~30 instructions against 19 (`ws8192 --min 1K --max
// 32K`, where tcmalloc, whose fast path takes every size to 256 KiB, ran in
// 0.89-0.91x our time).
HAK_INLINE void *hak_malloc_fast_or(size_t size, void *(*slow)(size_t)) {
  HAK_COUNT_OP();
  if (HAK_LIKELY(size <= HAK_TINY_MAX)) {   // one compare, then the class table
    hak_base_ptr_t b = tls_sll_pop_at(tls_list_of_size(size));
    if (HAK_LIKELY(!hak_base_is_null(b))) return hak_user_raw(hak_base_to_user(b));
  } else if (HAK_LIKELY(size <= HAK_SLAB_MAX)) {
    hak_base_ptr_t b = tls_sll_pop_fast(&t_tls_cache, size_class_tls_slot(size_class_medium(size)));
    if (HAK_LIKELY(!hak_base_is_null(b))) return hak_user_raw(hak_base_to_user(b));
  }
  return slow(size);
}
HAK_INLINE void *hak_malloc_fast(size_t size) { return hak_malloc_fast_or(size, hak_malloc_slow); }

// malloc_usable_size of a live slab block: free's lookup (the registry byte,
// the slab's metadata, the block-start test on the uncut pointer), the free
// mark absent, the class's size; everything else (NULL, a freed block, a bad
// pointer, large, huge and foreign blocks) is hak_usable_size's. Programs that
// account their memory call it at every malloc and free (Redis's zmalloc
// built on libc): through hak_usable_size a slab block took ~43 instructions
// and two calls.
HAK_INLINE size_t hak_usable_size_fast(const void *p) {
  slab_meta_t *m = slab_of_block_start(p);
  if (HAK_LIKELY(m != NULL) && HAK_LIKELY(!block_is_free(hak_user_to_base(hak_user_from_raw((void *)p)))))
    return m->block_size - HAK_BLOCK_HEADER_BYTES;
  return hak_usable_size(p);
}

HAK_INLINE void hak_free_fast(void *p) {
  HAK_COUNT_OP();
  if (HAK_FREE_PREFETCHW) hak_prefetch_for_write(p);
  slab_meta_t *m = slab_of_block_start(p);
  if (HAK_LIKELY(m != NULL)) {
    hak_base_ptr_t b = hak_user_to_base(hak_user_from_raw(p));
    tls_list_tp_t *l = tls_list_at_tp(m->tls_off);
    // This thread's blocks and other threads' blocks of a cache line or
    // more go on this thread's list alike (tiny_free_checked would do the
    // same: without the call, a block that moved once is not a slow free
    // for ever after); another thread's smaller block (passive false
    // sharing) takes the call. So the test is not the owner's: the slab's
    // owner_small (the owner's low 32 bits for a small class, else 0)
    // against the thread's key of the class (its id's low 32 bits for a
    // small class, else 0; FREE_BATCH_KEY, which no slab has, while the
    // thread batches its frees, for the classes it holds: then each of
    // their blocks takes the call, its mark untested here). A branch on the
    // owner mispredicted every other free where own and other threads'
    // blocks come at random (cachegrind, larson: 0.48 per free). Two threads whose ids differ only above 32
    // bits would keep each other's small blocks: correct, only not the
    // false-sharing rule. The key test comes before the mark's load, so a
    // batching thread never waits for a line another core wrote.
    if (HAK_LIKELY(atomic_load_explicit(&m->owner_small, memory_order_relaxed) == tls_owner_key_at(l))) {
      if (HAK_LIKELY(HAK_FREE_SKIP_MARK_TEST || !block_is_free(b))) {
        if (HAK_LIKELY(tls_sll_push_fast(l, b))) return;
        tiny_free_checked(m, b);
        return;
      }
    } else {
      hak_free_foreign(m, b);
      return;
    }
  }
  hak_free_slow(p);
}
#endif

#endif
