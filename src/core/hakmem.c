// hakmem.c — the top of the engine: the hak_* API and the flow of DESIGN.md §1.
//
//   hak_malloc: <= 256 KiB: size class -> tls_sll_pop -> (miss) tiny_refill -> Shared Pool
//               <= 32 MiB: page heap; above (or when no region can be had): huge mapping
//   hak_free:   registry -> slab -> block check -> tls_sll_push, whoever owns the slab
//               (full list: tiny_flush, which sends other threads' blocks back in
//               batches; page heap; huge; foreign)
#include "hakmem.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "core/foreign.h"
#include "core/hardened.h"
#include "core/hakmem_fast.h"
#include "core/init.h"
#include "debug/report.h"
#include "large/huge.h"
#include "large/page_heap.h"
#include "shared_pool/shared_pool.h"
#include "superslab/ss_registry.h"
#include "stats/stats.h"
#include "tiny/free_batch_box.h"
#include "tiny/hardened_box.h"
#include "tiny/tiny_refill.h"
#include "tiny/tiny_thread.h"

#define HAK_SLAB_ALIGN_MAX  4096u        // aligned requests up to this come from slabs

// ---- malloc -------------------------------------------------------------

static void *alloc_enomem(void) {
  errno = ENOMEM;
  return NULL;
}

// A malloc after this thread's exit hook (a key destructor of a later round):
// no hook is left to give back what the thread would cache or own, so it is
// set up for this one block and torn down again (the refill's other blocks
// go home, its slabs are abandoned for other threads to adopt).
static HAK_NOINLINE void *alloc_after_exit(unsigned cls) {
  int saved = errno;
  if (!thread_setup()) return alloc_enomem();
  hak_base_ptr_t b = tls_sll_pop(&t_tls_cache, cls);
  if (hak_base_is_null(b) && tiny_refill(cls)) b = tls_sll_pop(&t_tls_cache, cls);
  thread_teardown();
  errno = saved;
  return hak_base_is_null(b) ? alloc_enomem() : hak_user_raw(hak_base_to_user(b));
}

// A mapping was refused (an address-space limit, RLIMIT_AS, or
// vm.max_map_count): give back what no block uses, SuperSlabs whose slabs are
// all FREE (an early-purged one waits the purge delay before it is unmapped,
// shared_pool_release.c), empty page-heap regions and cached huge mappings,
// and say whether anything went, so that the caller tries once more. Without
// it a program that freed 200 KiB blocks to the limit could not map 256 MiB
// right after (tests/stress/faults.c, rlimit_as_exhaustion_recovers).
int hak_release_unused(void) {
  int released = shared_pool_trim();
  released |= page_heap_trim(1);
  released |= huge_trim(1);
  return released;
}

// A block of class cls: TLS hit, else refill.
static HAK_NOINLINE void *alloc_class_slow(unsigned cls) {
  if (HAK_UNLIKELY(t_thread_status == THREAD_DONE)) return alloc_after_exit(cls);
  if (HAK_UNLIKELY(!thread_ready()) && !(hak_release_unused() && thread_ready())) return alloc_enomem();
  hak_base_ptr_t b = tls_sll_pop(&t_tls_cache, cls);
  if (hak_base_is_null(b)) {
    if (!tiny_refill(cls) && !(hak_release_unused() && tiny_refill(cls))) return alloc_enomem();
    b = tls_sll_pop(&t_tls_cache, cls);
  }
  return hak_user_raw(hak_base_to_user(b));
}

// The page heap's blocks start on a page (the default build's; the hardened
// build's end at a guard page, as near as their alignment allows), so it
// serves alignments up to a page (a 4 KiB-aligned block of 1 MiB took a
// mapping of its own each time), and up to PAGE_HEAP_ALIGN_MAX in a longer
// run, its ends freed, for blocks of up to HAK_SLAB_MAX: the many small
// blocks that took a mapping each (vm.max_map_count; in the hardened build
// two, the guard page splitting it, until the page heap served its aligned
// blocks too: 32 000 live posix_memalign(64, 40000) reached the limit). Larger ones keep a mapping of their own, fresh
// pages: 64 live blocks of 4 KiB-2 MiB, two in three aligned to 8 KiB-1 MiB,
// their first 4 KiB written, churned 3 M times, held 33 MB of earlier blocks'
// pages inside the live ones from the page heap's dirty runs, against 2.5 MB
// with a mapping each (a helper's probe; glibc 177 MB).
#define HAK_PAGE_HEAP_ALIGNED_SIZE_MAX ((size_t)HAK_SLAB_MAX)

void *hak_large_alloc(size_t size, size_t alignment, int zero) {
  for (int again = 0;; again = 1) {
    size_t fresh = 0;
    size_t most = alignment <= 4096u ? PAGE_HEAP_MAX : HAK_PAGE_HEAP_ALIGNED_SIZE_MAX;
    int paged = alignment <= PAGE_HEAP_ALIGN_MAX && size <= most;
    void *p = paged ? page_heap_alloc_aligned(size, alignment, zero, &fresh) : NULL;
    if (fresh != 0) shared_pool_make_room(fresh);   // dirty FREE slabs go first: the page heap cannot use them
    if (p == NULL) p = huge_alloc(size, alignment, zero);   // also when no new 64 MiB region can be had
    if (p != NULL || again || !hak_release_unused()) return p;
  }
}

// A block from the page heap (or a huge mapping) for the calling thread. A
// thread whose first block is a large one is set up here as well, so its
// exit hook runs and its counters are summed (STATS: ws8192's large rows
// lost every worker's count); not set up, the block needs no heap.
static void *thread_large_alloc(size_t size, int zero) {
  if (HAK_UNLIKELY(t_thread_status == THREAD_NEW)) (void)thread_ready();
  return hak_large_alloc(size, 0, zero);
}

// Everything but a TLS hit of a tiny class: medium classes try their TLS
// list first, then every class refills.
void *hak_malloc_slow(size_t size) {
  if (size <= HAK_SLAB_MAX) {
    unsigned cls = size_class_of(size);
    hak_base_ptr_t b = tls_sll_pop(&t_tls_cache, cls);
    if (!hak_base_is_null(b)) return hak_user_raw(hak_base_to_user(b));
    return alloc_class_slow(cls);
  }
  if (size > PTRDIFF_MAX) return alloc_enomem();
  void *p = thread_large_alloc(size, 0);
  return p != NULL ? p : alloc_enomem();
}

void *hak_malloc(size_t size) { return hak_malloc_fast(size); }

// ---- free ---------------------------------------------------------------

// A pointer free/realloc/usable_size may act on.
HAK_INLINE int slab_pointer_valid(const slab_meta_t *m, const void *p) { return slab_block_start(m, p); }

static HAK_COLD void report_slab_pointer(const char *op, const void *p, const slab_meta_t *m) {
  uint32_t st = SLAB_STATE(atomic_load(&m->state));
  uintptr_t off = (uintptr_t)p - (uintptr_t)m->base;
  if (st == SLAB_FREE) hak_report_pointer_error(op, p, " (in a free slab: double free or never allocated)");
  else if (off < (size_t)m->capacity * m->block_size && off % m->block_size == 0)
    hak_report_pointer_error(op, p, " (a block never handed out: beyond the slab's carve point)");
  else hak_report_pointer_error(op, p, " (not the start of a block: interior pointer)");
}

static void hak_free_slow_body(void *p);

// The report's detail for a page-heap address that is no live block's start.
static const char *large_bad_pointer_detail(const void *p) {
  return page_heap_freed_at(p) ? " (a freed large block: use after free or double free)"
                               : " (not the start of a large block)";
}

// free never changes errno (POSIX 2024, glibc >= 2.33); only the slow path
// can touch it, so only the slow path saves it.
void hak_free_slow(void *p) {
  if (p == NULL) return;
  int saved = errno;
  hak_free_slow_body(p);
  errno = saved;
}

static void hak_free_slow_body(void *p) {
  if (!ss_registry_contains(p)) {
    if (page_heap_contains(p)) {
      if (page_heap_free(p)) return;
      if (page_heap_freed_at(p)) hak_report_pointer_error("double free of", p, " (a large block)");
      else hak_report_pointer_error("free of invalid pointer", p, " (not the start of a large block)");
      return;
    }
    if (huge_free(p)) return;
    hak_foreign_free(p);
    return;
  }
  slab_meta_t *m = ss_slab_of(ss_of(p), p);
  if (!slab_pointer_valid(m, p)) {
    report_slab_pointer("free of invalid pointer", p, m);
    return;
  }
  hak_base_ptr_t b = hak_user_to_base(hak_user_from_raw(p));
  unsigned cls = m->cls;
  if (block_is_free(b)) {
    tls_sll_report_double_free(b, cls, m->block_size);
    return;
  }
  tiny_free_checked(m, b);
}

void hak_free_foreign(slab_meta_t *m, hak_base_ptr_t b) {
  if (t_free_batch_active) free_batch_hold(m, b);
  else free_batch_test_and_free(m, b);
}

void hak_free(void *p) { hak_free_fast(p); }

// ---- the rest of the family ----------------------------------------------

// A calloc of this much or more comes from the page heap, which knows which of
// its pages were never used (or were purged) and clears only the others. A
// program's big zeroed tables are often sparse (Python's obmalloc radix tree:
// 128 and 256 KiB, a few entries ever written), and a slab block's memset
// wrote every page: `python3 -S` started with 103 more page faults than under
// glibc, whose mmap threshold (128 KiB) hands such tables fresh pages. The
// hardened build keeps them in slabs (its large blocks close on every free).
#define CALLOC_PAGE_HEAP_MIN (128u << 10)

void *hak_calloc(size_t count, size_t size) {
  size_t n;
  if (__builtin_mul_overflow(count, size, &n) || n > PTRDIFF_MAX) return alloc_enomem();
  if (n > HAK_SLAB_MAX || (!HAK_HARDENED && n >= CALLOC_PAGE_HEAP_MIN)) {
    void *p = thread_large_alloc(n, 1);   // the memset skipped on never-used pages
    if (p != NULL) return p;
    if (n > HAK_SLAB_MAX) return alloc_enomem();
  }                                      // (else a slab block, cleared)
  void *p = hak_malloc(n);
  if (p != NULL) memset(p, 0, n);
  return p;
}

// Usable size of a block in a slab, or 0 after reporting an invalid pointer
// on behalf of `op` (*live 0 then; 1 for a live block, whose usable size is
// 0 too in the hardened build when 0 bytes were asked for with an alignment:
// realloc took that 0 for a reported pointer and failed with ENOMEM, so such
// a block could never grow; a helper's probe).
static size_t slab_usable_size(const char *op, const void *p, int *live) {
  slab_meta_t *m = ss_slab_of(ss_of(p), p);
  *live = 0;
  if (!slab_pointer_valid(m, p)) {
    report_slab_pointer(op, p, m);
    return 0;
  }
  if (block_is_free(hak_user_to_base(hak_user_from_raw((void *)p)))) {
    hak_report_pointer_error(op, p, " (a freed block: use after free or double free)");
    return 0;
  }
  *live = 1;
#if HAK_HARDENED
  return hak_hardened_slab_size(p, op);   // the request: the canary follows it
#endif
  return m->block_size - HAK_BLOCK_HEADER_BYTES;
}

size_t hak_usable_size(const void *p) {
  if (p == NULL) return 0;
#if HAK_HARDENED
  if (hak_hardened_is_zero_block(p)) {
    hak_hardened_zero_block_live(p, "malloc_usable_size of invalid pointer", "malloc_usable_size of invalid pointer", 0);
    return 0;
  }
#endif
  int live;
  if (ss_registry_contains(p)) return slab_usable_size("malloc_usable_size of invalid pointer", p, &live);
  if (page_heap_contains(p)) {
    size_t n = page_heap_usable_size(p);
    if (n == 0) hak_report_pointer_error("malloc_usable_size of invalid pointer", p, large_bad_pointer_detail(p));
    return n;
  }
  int interior;
  size_t n = huge_usable_size(p, &interior);
  if (n != 0) return n;
  if (interior) {
    hak_report_pointer_error("malloc_usable_size of invalid pointer", p, " (inside a huge block)");
    return 0;
  }
  return hak_foreign_usable_size(p);
}

void *hak_realloc(void *p, size_t size) {
  if (p == NULL) return hak_malloc(size);
#if HAK_HARDENED
  if (hak_hardened_is_zero_block(p)) {
    if (!hak_hardened_zero_block_live(p, "realloc of invalid pointer", "realloc of invalid pointer", size == 0))
      return NULL;                       // reported (going on: the pointer is left alone)
    if (size == 0) return NULL;          // freed, as glibc 2.36
    void *q = hak_malloc(size);
    if (q != NULL) hak_hardened_zero_block_live(p, "realloc of invalid pointer", "realloc of invalid pointer", 1);
    return q;
  }
#endif
  if (size == 0) {                       // glibc 2.36: free and return NULL
    hak_free(p);
    return NULL;
  }
  if (size > PTRDIFF_MAX) return alloc_enomem();
  size_t old;
  if (ss_registry_contains(p)) {
    int live;
    old = slab_usable_size("realloc of invalid pointer", p, &live);
    if (!live) return alloc_enomem();     // reported already (when not aborting)
#if HAK_HARDENED   // in place when the block has room for the request and its tail
    if (hak_hardened_realloc_in_place(p, old, size)) return p;
#else
    if (size <= old && (size > old / 2 || old <= 64)) return p;
#endif
  } else if (page_heap_contains(p)) {
    // In place first: a block that fits its run is answered with one read of
    // its head word (a pointer that is no live block is refused there and
    // reported below).
    if (size > HAK_SLAB_MAX && page_heap_resize_in_place(p, size)) return p;
    old = page_heap_usable_size(p);
    if (old == 0) {
      hak_report_pointer_error("realloc of invalid pointer", p, large_bad_pointer_detail(p));
      return alloc_enomem();
    }
#if !HAK_HARDENED   // (whose block ends at its guard page: it moves)
    // A shrink to a slab's size that keeps more than half the block stays, as
    // one above HAK_SLAB_MAX does (page_heap_resize_in_place): a buffer resized
    // across 256 KiB and back copied 256 KiB each way, 7 us a call, 29x
    // jemalloc's time (a helper's probe; glibc, tcmalloc, mimalloc in place).
    if (size <= old && size > old / 2) return p;
#endif
  } else {
    int interior;
    old = huge_usable_size(p, &interior);
    if (old == 0) {
      if (interior) {
        hak_report_pointer_error("realloc of invalid pointer", p, " (inside a huge block)");
        return alloc_enomem();
      }
      return hak_foreign_realloc(p, size);
    }
    if (size > HAK_SLAB_MAX) {
      void *q = huge_try_realloc(p, size);
      if (q != NULL) return q;
    }
  }
  void *q = NULL;
#if !HAK_HARDENED   // (the hardened build keeps the request exact: its canary follows it)
  // A block that grows by less than a quarter moves into one a quarter larger
  // than it was (tcmalloc's hysteresis), so a buffer grown in small steps (a
  // string builder, a vector's push_back) moves about every 1.25x, not on
  // every step that passes its size class (classes a quarter of a power of
  // two apart are 1.14-1.25x). reallocgrow (steps of ~1.25x on average, 16 B
  // to 64 KiB; callgrind, -n 100000): 79.9 k -> 66.8 k copies, 461 M -> 378 M
  // instructions in memcpy; 0.88x the time, peak RSS 28.7 -> 29.7 MB.
  size_t grown = realloc_grown_size(old, size);
  if (grown != size) {
    int saved = errno;                   // its failure leaves the request to try
    q = hak_malloc(grown);
    if (q == NULL) errno = saved;
  }
#endif
  if (q == NULL) q = hak_malloc(size);
  if (q == NULL) return NULL;            // errno is ENOMEM; p is untouched
  memcpy(q, p, old < size ? old : size);
  hak_free(p);
  return q;
}

void *hak_reallocarray(void *p, size_t count, size_t size) {
  size_t n;
  if (__builtin_mul_overflow(count, size, &n)) return alloc_enomem();
  return hak_realloc(p, n);
}

// The slab class of an aligned request (alignment above 16), or -1 when the
// slabs do not serve it. Slab starts are page aligned, so a class whose block
// is a multiple of the alignment has every block aligned: every slab size
// (above 32 KiB the classes are multiples of 8 KiB). Up to 32 KiB until the
// forty-sixth session: aligned_alloc(4096, 64 KiB) then took a mapping of its
// own each time, 19x tcmalloc's time in a loop. A padded class's blocks
// (HAK_CLASS_PADDED: 5-56 KiB, not powers of two) are aligned to 64 only: a
// request aligned more that lands there takes the next class whose blocks
// are (a power of two, at most 8/5 of the size). The hardened build's
// requests bring their tail canary's bytes, and were served so only up to
// 32 KiB until the sixty-fifth session: past that each was a mapping and a
// guard page, two of vm.max_map_count's 65 530 a live block.
static inline int aligned_slab_class(size_t alignment, size_t size) {
  size_t need = size > alignment ? size : alignment;
  if (alignment > HAK_SLAB_ALIGN_MAX || need > HAK_SLAB_MAX) return -1;
  unsigned cls = size_class_aligned(need, alignment);
  while (g_size_class[cls].block % alignment != 0) cls++;   // (the last class is 256 KiB)
  return (int)cls;
}

void *hak_aligned_alloc(size_t alignment, size_t size) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
    errno = EINVAL;
    return NULL;
  }
  if (alignment <= 16) return hak_malloc(size);
  if (size > PTRDIFF_MAX) return alloc_enomem();
#if HAK_HARDENED
  int cls = aligned_slab_class(alignment, size + HARD_TAIL_BYTES);
  if (cls >= 0) {
    void *p = hak_hardened_pop((unsigned)cls);
    if (p == NULL) p = alloc_class_slow((unsigned)cls);
    if (p != NULL) hak_hardened_arm_aligned(p, size, alignment);
    return p;
  }
#else
  int cls = aligned_slab_class(alignment, size);
  if (cls >= 0) {
    hak_base_ptr_t b = tls_sll_pop(&t_tls_cache, (unsigned)cls);
    if (!hak_base_is_null(b)) return hak_user_raw(hak_base_to_user(b));
    return alloc_class_slow((unsigned)cls);
  }
#endif
  void *p = hak_large_alloc(size ? size : 1, alignment, 0);
  return p != NULL ? p : alloc_enomem();
}

int hak_posix_memalign(void **out, size_t alignment, size_t size) {
  if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0) return EINVAL;
#if !HAK_HARDENED
  // A hit of the class's TLS list sets no errno: returned before errno is
  // saved (its two calls to __errno_location were 6% of a posix_memalign loop).
  int cls = alignment > 16 ? aligned_slab_class(alignment, size) : -1;
  if (cls >= 0) {
    hak_base_ptr_t b = tls_sll_pop(&t_tls_cache, (unsigned)cls);
    if (!hak_base_is_null(b)) {
      *out = hak_user_raw(hak_base_to_user(b));
      return 0;
    }
  }
#endif
  int saved = errno;
  void *p = hak_aligned_alloc(alignment, size);
  errno = saved;
  if (p == NULL) return ENOMEM;
  *out = p;
  return 0;
}

int hak_owns(const void *p) {
  if (p == NULL) return 0;
  if (ss_registry_contains(p)) {
    // A block handed out and not freed: inside the carved part of a bound
    // slab (a FREE slab has capacity 0), without its free mark.
    slab_meta_t *m = ss_slab_of(ss_of(p), p);
    const char *c = p;
    if (c < m->base || c >= slab_carve(m) || c >= slab_end(m)) return 0;
    size_t idx = (size_t)(c - m->base) / m->block_size;
    return !block_is_free(hak_base_from_raw(m->base + idx * m->block_size));
  }
  if (page_heap_contains(p)) return page_heap_owns(p);
  int interior;
  return huge_usable_size(p, &interior) != 0 || interior;
}

void hak_thread_flush(void) {
  if (t_thread_status != THREAD_LIVE) return;
  thread_release_all();
  tiny_flush_exchange();   // what other threads left there goes home too
}

int hak_trim(void) {
  thread_parked_expire(1);   // heaps parked at threads' exits, every one (a LIVE caller)
  if (t_thread_status == THREAD_LIVE) {
    free_batch_drain();
    tiny_flush_all();
    for (unsigned c = 0; c < TINY_REMOTE_CLASSES; c++) tiny_flush_remote(c);
    for (unsigned k = 0; k < HAK_SLAB_KINDS; k++) shared_pool_stash_release(&t_heap_p->stash[k]);
  }
  tiny_flush_exchange();
  tiny_parked_tickets_home();   // after every flush: none of a trim's parks one, exits may have
  return hak_release_unused();
}
