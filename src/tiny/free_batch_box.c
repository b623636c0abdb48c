// free_batch_box.c — see free_batch_box.h.
#include "tiny/free_batch_box.h"

#include <errno.h>
#include <string.h>

#include "config/config.h"
#include "stats/stats.h"
#include "superslab/ss_registry.h"
#include "tiny/tiny_refill.h"
#include "tiny/tiny_heap.h"
#include "tiny/tiny_thread.h"
#include "tiny/tiny_free_local_box.h"
#include "tiny/tls_sll_box.h"
#if HAK_HARDENED
#include "tiny/hardened_box.h"
#endif

HAK_INTERNAL __thread free_batch_t *t_free_batch_p __attribute__((tls_model("initial-exec")));
HAK_INTERNAL __thread uint32_t t_free_batch_active __attribute__((tls_model("initial-exec")));

static HAK_COLD void report_double_free(const slab_meta_t *m, hak_base_ptr_t b) {
  int saved = errno;   // free keeps errno
  tls_sll_report_double_free(b, m->cls, m->block_size);
  errno = saved;
}

void free_batch_test_and_free(slab_meta_t *m, hak_base_ptr_t b) {
  if (HAK_UNLIKELY(block_is_free(b))) {
    report_double_free(m, b);
    return;
  }
  tiny_free_checked(m, b);
}

#if HAK_HARDENED
// A held block's checks as the hardened fast free makes them: its mark, then
// hardened_free_block's (size word, the size a sized delete gave, canary),
// fill and quarantine.
static void hardened_test_and_free(slab_meta_t *m, hak_base_ptr_t b, size_t want) {
  if (HAK_UNLIKELY(block_is_free(b))) {
    report_double_free(m, b);
    return;
  }
  if (want == HARD_NO_SIZE) hardened_free_block(m, hak_base_raw(b), HARD_NO_SIZE, 0);
  else hardened_free_block(m, hak_base_raw(b), want, 1);
}

// How far before a tiny block's end its canary can start: a class step (128
// bytes at most up to HAK_TINY_MAX) and the tail (HARD_TAIL_BYTES).
#define CANARY_REACH (128u + HARD_TAIL_BYTES)

// Ask for what the drain reads of held block p of bs bytes before its checks:
// the size word, then the canary that the size word places. A medium block's
// size word is in its slab's table; its canary's line is asked for by the
// drain, from the size word. A tiny block's size word ends the block and its
// canary starts where the request ends: past the class below's size less the
// tail, so within the block's last 148 bytes (classes up to 1 KiB are 128
// apart at most). Those lines are asked for here, up to 32 frees before the
// drain reads them: the drain's own prefetch came a few instructions before its
// check, and ring -t 2 still waited there (52% of hardened_test_and_free's
// samples on the canary's load; 46% on the size word's with the block's
// first line alone asked for).
static void hold_prefetch_tail(const slab_meta_t *m, char *p, uint32_t bs) {
  if (bs > HAK_TINY_MAX) {
    __builtin_prefetch(hard_size_table_slot(m, p), 0, 3);
    return;
  }
  hak_prefetch_for_write(hard_size_tail(p, bs));
  __builtin_prefetch(p - HARD_SIZE_BYTES, 0, 3);   // the size word below (hard_below_fast_ok)
  hak_prefetch_for_write(p + (bs > CANARY_REACH ? bs - CANARY_REACH : 0));
  hak_prefetch_for_write(p + (bs > CANARY_REACH - 64u ? bs - (CANARY_REACH - 64u) : 0));
}

void free_batch_hold_hardened(slab_meta_t *m, void *p, size_t want) {
  hak_base_ptr_t b = hak_base_from_raw(p);
  uint32_t bs = m->block_size;
  if (HAK_UNLIKELY(bs > FREE_BATCH_MAX_BLOCK || !free_batch_holdable(b))) {
    hardened_test_and_free(m, b, want);
    return;
  }
  free_batch_t *fb = t_free_batch_p;
  hak_prefetch_for_write(p);
  hold_prefetch_tail(m, p, bs);
  fb->held[fb->n] = free_batch_held(b, m->cls);
  fb->want[fb->n] = want;
  if (++fb->n == FREE_BATCH_N) free_batch_drain();
}
#endif

#if !HAK_HARDENED
// Has any class's bound shrunk (tls_cache_t.cap_shift: a medium class this
// thread only frees)? Once a drain, not at each block.
static int any_class_shrunk(const tls_cache_t *tc) {
  uint64_t any = 0;
  unsigned c = 0;
  for (; c + 8u <= HAK_NUM_CLASSES; c += 8u) {
    uint64_t w;
    memcpy(&w, &tc->cap_shift[c], sizeof w);
    any |= w;
  }
  for (; c < HAK_NUM_CLASSES; c++) any |= tc->cap_shift[c];
  return any != 0;
}

// Were the first FREE_BATCH_SEQ_LOOK + 1 held blocks each within 1 KiB of the
// one before (a heap freed in the order it was built, or its reverse)?
static int held_in_order(const free_batch_t *fb) {
  uint32_t near = 0;
  for (uint32_t i = 1; i <= FREE_BATCH_SEQ_LOOK; i++) {
    uintptr_t d = (uintptr_t)fb->held[i] - (uintptr_t)fb->held[i - 1];   // (classes differ: far apart)
    near += d + 1024u <= 2048u;
  }
  return near == FREE_BATCH_SEQ_LOOK;
}

// May b, a held block of tiny class cls in this thread's slab m, whose list l
// is full, go straight home (tiny_free_local_one)? In a heap's batch, yes, a
// batch at a time between looks (tiny_overflow_home), unless a look made
// room on the list. A big heap freed at random overflowed its lists at every
// block, and each flush walked the blocks it sent home a second time, runs
// of one block each (~79 instructions a block in the flush): `rounds --mb 32
// --size 32 --shuffle -n 2` under callgrind 487 M -> 442 M instructions,
// 0.978x the time (21 paired rounds, pinned). Not the medium classes: their
// overflows also shrink a bound a thread only frees (tiny_flush_overflow).
HAK_INLINE int drain_goes_home(free_batch_t *fb, tls_list_tp_t *l, unsigned cls, const slab_meta_t *m,
                                uintptr_t self) {
  if (!fb->heap || cls >= HAK_TINY_CLASSES || atomic_load_explicit(&m->owner, memory_order_relaxed) != self) return 0;
  l->room = 0;   // (the failed push's)
  if (HAK_UNLIKELY(fb->home_left[cls] == 0) && (fb->home_left[cls] = tiny_overflow_home(cls)) == 0) return 0;
  fb->home_left[cls]--;
  return 1;
}
#endif

void free_batch_drain(void) {
  free_batch_t *fb = t_free_batch_p;
  if (fb == NULL) return;   // a thread not set up holds nothing
  // Taken off first: a report that returns (HAKMEM_ABORT_ON_ERROR=0) or a
  // flush below never finds a half-drained batch.
  uint32_t n = fb->n;
  fb->n = 0;
  hak_counters()->batched_frees += n;
  if (HAK_UNLIKELY(fb->heap) && n != 0) free_batch_probe(free_batch_held_block(fb->held[n - 1]));   // (before any check reads it)
#if HAK_HARDENED
  // The canary follows the request, which the size word (prefetched by the
  // hold) gives: ask for every held block's canary line before the first
  // check, so that their misses overlap instead of following one another.
  // (A garbage size word, a double free's fill, only prefetches garbage.)
  // A held block is not free, so its slab is live and bound: found again
  // through the byte map (ss_registry_slab_of), once.
  slab_meta_t *ms[FREE_BATCH_N];
  for (uint32_t i = 0; i < n; i++) {
    char *p = hak_base_raw(free_batch_held_block(fb->held[i]));
    slab_meta_t *m = ms[i] = ss_registry_slab_of(p);
    uint32_t bs = m->block_size;
    uint32_t req = *hard_size_slot(m, p) ^ hard_size_key();
    if (req < bs) hak_prefetch_for_write(p + req);
  }
  for (uint32_t i = 0; i < n; i++) hardened_test_and_free(ms[i], free_batch_held_block(fb->held[i]), fb->want[i]);
#else
  const tls_cache_t *tc = &t_tls_cache;
  int shrunk = any_class_shrunk(tc);
  int in_order = fb->heap && n == FREE_BATCH_N && held_in_order(fb);
  int32_t lists_off = tls_list_tp_offset(0);   // each class's list from the thread pointer
  uint64_t home = 0;
  uintptr_t self = thread_self_id();
  for (uint32_t i = 0; i < n; i++) {
    free_batch_held_t h = fb->held[i];
    hak_base_ptr_t b = free_batch_held_block(h);
    if (HAK_UNLIKELY(block_is_free(b))) {
      report_double_free(ss_registry_slab_of(hak_base_raw(b)), b);   // (held, so its slab is live)
      continue;
    }
    // Another thread's block of a class this thread only frees (its bound
    // shrunk, medium classes only; a held block is of the exchange's classes,
    // FREE_BATCH_MAX_BLOCK == TRANSFER_MAX_BLOCK): handed over now, while its
    // line is here, not walked again on the list's next overflow.
    unsigned cls = free_batch_held_class(h);
    if (HAK_UNLIKELY(shrunk) && tc->cap_shift[cls] != 0 &&
        atomic_load_explicit(&ss_registry_slab_of(hak_base_raw(b))->owner, memory_order_relaxed) != thread_self_id()) {
      tiny_handover(cls, b);
      continue;
    }
    // The fast path's push, for every block: another thread's block under a
    // cache line stays on this list too, where the fast path sends it home
    // (tiny_block_stays_here, the false-sharing rule for a thread that frees
    // a few such blocks and writes them again at once, bench fs-scratch). A
    // batching thread frees them by the hundred; sent home, the owner's
    // mallocs waited on lines this thread had written: a ring of threads
    // handing on half of each batch of 1-111 B (sh8bench's shape) 0.76x
    // the time at 2 threads, 0.87x at 8 (paired rounds), the rows of make
    // bench level; tcmalloc and jemalloc keep them alike. A full list: as
    // free's slow path (tiny_free_checked: a flush, or the remote buffer).
    tls_list_tp_t *l = tls_list_at_tp(lists_off + (int32_t)free_batch_held_list(h));
    if (HAK_LIKELY(tls_sll_push_fast(l, b))) continue;
    slab_meta_t *m = ss_registry_slab_of(hak_base_raw(b));
    if (drain_goes_home(fb, l, cls, m, self)) {
      tiny_heap_slab_freed(t_heap_p, m, tiny_free_local_one(m, b));
      home++;
      continue;
    }
    tiny_free_checked(m, b);
  }
  hak_counters()->home_frees += home;
  if (HAK_UNLIKELY(in_order) && t_free_batch_active && fb->heap) {
    free_batch_set_active(0);
    fb->heap_rest = FREE_BATCH_HEAP_REST;
  }
#endif
}

// The time stamp counter once every earlier instruction has completed (its
// loads included), and before any later one starts; 0 where there is none
// (then no probe sees a miss: a heap's batch runs until the heap shrinks).
static inline uint64_t ticks_fenced(void) {
#if defined(__x86_64__)
  uint32_t lo, hi;
  __asm__ volatile("lfence\n\trdtsc\n\tlfence" : "=a"(lo), "=d"(hi) : : "memory");
  return ((uint64_t)hi << 32) | lo;
#else
  return 0;
#endif
}

void free_batch_probe(hak_base_ptr_t b) {
  free_batch_t *fb = t_free_batch_p;   // (a drain's: the thread is set up)
  if (++fb->probe_skip < FREE_BATCH_PROBE_EVERY) return;
  fb->probe_skip = 0;
  const volatile uintptr_t *mark = (const volatile uintptr_t *)hak_base_raw(b) + 1;   // block_mark's word
  uint64_t t0 = ticks_fenced();
  (void)*mark;
  uint64_t t1 = ticks_fenced();
  (void)*mark;
  uint64_t t2 = ticks_fenced();
  free_batch_probe_note(t1 - t0, t2 - t1);
}

void free_batch_probe_note(uint64_t first, uint64_t again) {
  free_batch_t *fb = t_free_batch_p;
  if (fb == NULL) return;
  fb->probes_cold += first > again + FREE_BATCH_COLD_TICKS;
  if (++fb->probes < FREE_BATCH_PROBES) return;
  int stop = fb->probes_cold * 8u < fb->probes;
  fb->probes = fb->probes_cold = 0;
  if (stop && fb->heap) {   // (a heap's batch is an active one)
    free_batch_set_active(0);
    fb->heap_rest = FREE_BATCH_HEAP_REST;
    hak_counters()->batch_probe_stops++;
  }
}

void free_batch_note_flush(uint32_t moved, uint32_t foreign) {
  free_batch_t *fb = t_free_batch_p;
  if (moved < FREE_BATCH_MIN_FLUSH || fb == NULL) return;
  uint32_t again = fb->own_chains < foreign ? fb->own_chains : foreign;
  fb->own_chains -= again;
  foreign -= again;
  if (!t_free_batch_active) {
    if (foreign * 4u >= moved && g_hak_config.free_batch && t_thread_status == THREAD_LIVE) free_batch_set_active(1);
    return;
  }
  if (fb->heap) return;
  fb->win_moved += moved;
  fb->win_foreign += foreign;
  if (fb->win_moved < FREE_BATCH_STOP_WINDOW) return;
  int stop = fb->win_foreign * 8u < fb->win_moved;
  fb->win_moved = fb->win_foreign = 0;
  if (stop) free_batch_set_active(0);
}

void free_batch_note_heap(uint32_t owned_lines) {
  free_batch_t *fb = t_free_batch_p;
  if (fb == NULL) return;
  if (!t_free_batch_active) {
    if (fb->heap_rest != 0) {   // stopped by a drain in address order (free_batch_drain)
      fb->heap_rest--;
      return;
    }
    if (owned_lines >= FREE_BATCH_HEAP_LINES && g_hak_config.free_batch && t_thread_status == THREAD_LIVE) {
      free_batch_set_active(1);
      fb->heap = 1;
    }
  } else if (fb->heap && owned_lines < FREE_BATCH_HEAP_LINES / 2) {
    free_batch_set_active(0);
  }
}

void free_batch_set_active(int on) {
  free_batch_t *fb = t_free_batch_p;
  tls_cache_t *tc = &t_tls_cache;
  if (!on) free_batch_drain();
  if (fb == NULL) {   // not set up: nothing to start (free_batch_note_* start only LIVE threads)
    t_free_batch_active = 0;
    return;
  }
  t_free_batch_active = (uint32_t)on;
  fb->heap = 0;
  fb->win_moved = fb->win_foreign = 0;
  fb->probe_skip = fb->probes = fb->probes_cold = 0;
  memset(fb->home_left, 0, sizeof fb->home_left);
  // Grown bounds go (tiny_flush.h tiny_cache_ungrow): with them a thread's
  // own classes rarely overflowed, and their flushes are the signal to stop
  // (a shape of sh8bench, 2 threads handing each other half of every batch:
  // batching on for 3x the frees, 1.10x the time).
  if (on) tiny_cache_ungrow();
  hak_counters()->batch_starts += (uint64_t)on;
  // A class above FREE_BATCH_MAX_BLOCK keeps its key: free tests its blocks
  // at once, and the hold never sees one.
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++)
    tc->lists[c].owner_key =
        on && g_size_class[c].size <= FREE_BATCH_MAX_BLOCK ? FREE_BATCH_KEY : tls_owner_key_of_class(tc, c);
}
