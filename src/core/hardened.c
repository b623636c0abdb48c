// hardened.c — the hardened build's malloc, free and checks at the top of the
// engine (see hardened.h). Empty in the default build.
#include "core/hardened.h"

#if HAK_HARDENED
#include <errno.h>
#include <stdatomic.h>

#include "core/hakmem_fast.h"
#include "core/init.h"
#include "debug/report.h"
#include "large/huge.h"
#include "large/page_heap.h"
#include "os/os.h"
#include "tiny/hardened_box.h"

// malloc(0): a distinct address, 16 bytes after the last one, in a
// reservation no access can touch (PROT_NONE, no memory behind it): a read or
// write faults and is reported (hardened_fault); free accepts them. Addresses
// are never handed out twice, so a stale malloc(0) pointer is never a live
// one: after the reservation's 1 Mi addresses (16 MiB), and where it could not
// be made, malloc(0) is a real block of 0 requested bytes (its canary reports
// a write at free; a read is not caught). (16 MiB, not 64: address space
// counts against RLIMIT_AS beside the SuperSlab byte map's 64 MiB, and the
// faults test's 512 MiB limit left no room for a 256 MiB block with both.)
#define HARD_ZERO_BYTES ((size_t)16 << 20)
#define HARD_ZERO_STEP  16u

#define HARD_ZERO_SLOTS (HARD_ZERO_BYTES / HARD_ZERO_STEP)

static char *g_zero_base;
static _Atomic uint64_t g_zero_next;
// A bit per malloc(0) address, set while it is live (handed out, not freed):
// 128 KiB mapped beside the reservation, its pages touched as addresses are
// handed out. Without it every free, realloc and malloc_usable_size of an
// address in the reservation was taken as a live block's: a double free, a
// free of an address never handed out (which a later malloc(0) then
// returned) and malloc_usable_size of a freed block went unreported, where
// the default build, whose malloc(0) is a real block, reports all three.
static _Atomic uint64_t *g_zero_live;

int hak_hardened_is_zero_block(const void *p) {
  return g_zero_base != NULL && (const char *)p >= g_zero_base && (const char *)p < g_zero_base + HARD_ZERO_BYTES;
}

int hak_hardened_zero_block_live(const void *p, const char *invalid, const char *freed, int release) {
  size_t off = (size_t)((const char *)p - g_zero_base);
  uint64_t slot = off / HARD_ZERO_STEP;
  if (off % HARD_ZERO_STEP != 0 || slot >= atomic_load_explicit(&g_zero_next, memory_order_acquire)) {
    hak_report_pointer_error(invalid, p, " (a malloc(0) address never handed out)");
    return 0;
  }
  uint64_t bit = (uint64_t)1 << (slot % 64);
  _Atomic uint64_t *w = &g_zero_live[slot / 64];
  uint64_t was = release ? atomic_fetch_and_explicit(w, ~bit, memory_order_acq_rel)
                         : atomic_load_explicit(w, memory_order_acquire);
  if (!(was & bit)) {
    hak_report_pointer_error(freed, p, " (a malloc(0) block, freed before)");
    return 0;
  }
  return 1;
}

static HAK_NOINLINE void *zero_block_real(void) {
  void *p = hak_malloc_slow(HARD_TAIL_BYTES + 1);   // a 32-byte block, the least (hardened_box.h)
  if (p != NULL) hak_hardened_arm(p, 0);
  return p;
}

static void *zero_block(void) {
  if (g_zero_base == NULL) hak_init_once();
  if (g_zero_base == NULL || atomic_load_explicit(&g_zero_next, memory_order_relaxed) >= HARD_ZERO_SLOTS)
    return zero_block_real();
  uint64_t i = atomic_fetch_add_explicit(&g_zero_next, 1, memory_order_acq_rel);
  if (i >= HARD_ZERO_SLOTS) return zero_block_real();   // another thread took the last
  atomic_fetch_or_explicit(&g_zero_live[i / 64], (uint64_t)1 << (i % 64), memory_order_release);
  return g_zero_base + i * HARD_ZERO_STEP;
}

// A touch of a page the allocator made inaccessible: one line, then abort.
// Anything else returns to the fault hook (the default action).
static void hardened_fault(void *addr) {
  if (hak_hardened_is_zero_block(addr)) {
    hak_report_pointer_error("read or write of a malloc(0) block at", addr, " (it has no bytes)");
    return;
  }
  if (page_heap_contains(addr)) {
    void *start = NULL;
    int kind = page_heap_fault_kind(addr, &start);
    if (kind == 1) hak_report_pointer_error("heap buffer overflow past a large block at", addr, " (its guard page)");
    else if (kind == 2)   // (the run is known, not who wrote: a wild index past a live block lands here too)
      hak_report_pointer_error("use after free of a large block at", addr, " (a freed run, or an overflow of a block below it)");
    else if (kind == 3)
      hak_report_pointer_error("heap buffer underflow before a large block at", addr, " (below its region's first run)");
  } else {
    int kind = huge_fault_kind(addr);
    if (kind == 1) hak_report_pointer_error("heap buffer overflow past a huge block at", addr, " (its guard page)");
    else if (kind == 2)
      hak_report_pointer_error("use after free of a huge block at", addr, " (a freed mapping, or an overflow of a block below it)");
    else if (kind == 3) hak_report_pointer_error("heap buffer underflow before a huge block at", addr, " (below its mapping)");
  }
}

void hak_hardened_init(void) {
  hardened_box_init();
  g_zero_live = os_map_aligned(HARD_ZERO_SLOTS / 8, os_page_size());
  if (g_zero_live != NULL) g_zero_base = os_reserve_none(HARD_ZERO_BYTES);   // else malloc(0) is a real block
  os_on_fault(hardened_fault);
}

void hak_hardened_at_exit(void) { hardened_quarantine_check(); }

void hak_hardened_arm(void *p, size_t n) {
  hardened_arm(ss_registry_slab_of(p), p, n);
}

void hak_hardened_arm_aligned(void *p, size_t n, size_t alignment) {
  const slab_meta_t *m = ss_registry_slab_of(p);
  hardened_arm(m, p, n);
  if (alignment > 16) {   // the tag (hardened_box.h): an aligned delete is checked against it
    unsigned lg = (unsigned)__builtin_ctzll((unsigned long long)alignment);
    *hard_size_slot(m, p) = ((uint32_t)n | (uint32_t)lg << HARD_ALIGN_TAG_SHIFT) ^ hard_size_key();
  }
}

// A block p popped from the TLS list of cls that lies in no SuperSlab: the
// list is reported and dropped (leaked, never followed), the TLS list starts
// again empty.
static HAK_NOINLINE void hardened_drop_forged(unsigned cls, void *p) {
  tls_cache_t *tc = &t_tls_cache;
  tls_sll_report_corrupt(hak_base_from_raw(p), cls);
  tc->lists[cls].head = TLS_SLL_END;
  tc->lists[cls].room = tc->cap[cls];
}

void *hak_hardened_pop(unsigned cls) {
  hak_base_ptr_t b = tls_sll_pop(&t_tls_cache, cls);
  if (hak_base_is_null(b)) return NULL;
  void *p = hak_user_raw(hak_base_to_user(b));
  if (HAK_LIKELY(hard_in_superslab(p))) return p;
  hardened_drop_forged(cls, p);
  return NULL;
}

void *hak_hardened_pop_bad(unsigned slot, void *p, size_t n) {
  if (hard_in_superslab(p)) return hardened_arm_bad_slot(slot, p, n);
  hardened_drop_forged(size_class_of_tls_slot(slot), p);
  return hak_hardened_malloc_refill(n);
}

// The tiny path's miss (an empty or corrupt TLS list): the refill, then arm.
void *hak_hardened_malloc_refill(size_t size) {
  void *p = hak_malloc_slow(size + HARD_TAIL_BYTES);
  if (HAK_LIKELY(p != NULL)) hardened_arm(ss_registry_slab_of(p), p, size);
  return p;
}

// A medium block p just handed out for a request of n bytes: check and arm it
// (its size word in its slab's table).
static inline void *hardened_arm_medium(void *p, size_t n) {
  const slab_meta_t *m = ss_registry_slab_of(p);
  return hardened_arm_at(HARD_MEDIUM_FILL, m->block_size, p, n, hard_size_table_slot(m, p));
}

// The medium path's miss (an empty or corrupt TLS list): the refill, then arm.
static HAK_NOINLINE void *hardened_malloc_medium_refill(size_t size, size_t need) {
  void *p = hak_malloc_slow(need);
  return p != NULL ? hardened_arm_medium(p, size) : NULL;
}

// The medium classes (1009 bytes to HAK_SLAB_MAX - 1): the tiny path's pop,
// every slow case a call in last place. A medium block needs only a canary
// byte's room (its size word is in its slab's table; hard_canary_start);
// 1009 to 1023 bytes still take a medium class: a tiny block has no room for
// both.
void *hak_hardened_malloc_medium(size_t size) {
  size_t need = size + HARD_TAIL_MEDIUM > HAK_TINY_MAX ? size + HARD_TAIL_MEDIUM : HAK_TINY_MAX + 1;
  void *p = hak_hardened_pop(size_class_medium(need));
  if (HAK_UNLIKELY(p == NULL)) return hardened_malloc_medium_refill(size, need);
  return hardened_arm_medium(p, size);
}

// malloc(0), and past the slabs (no room for the tail there): the page heap
// (guard page) or huge.
void *hak_hardened_malloc_other(size_t size) {
  if (size == 0) return zero_block();
  if (size > PTRDIFF_MAX) {
    errno = ENOMEM;
    return NULL;
  }
  if (size > HAK_SLAB_MAX) return hak_malloc_slow(size);
  void *p = hak_large_alloc(size, 0, 0);
  if (p == NULL) errno = ENOMEM;
  return p;
}

// Not the common case: NULL, malloc(0), and what the slow path reports or
// frees (bad pointers, double frees, large and huge blocks). Every live slab
// block takes the common path, a thread not set up yet included.
void hak_hardened_free_other(void *p) {
  if (p == NULL) return;
  if (hak_hardened_is_zero_block(p)) {
    hak_hardened_zero_block_live(p, "free of invalid pointer", "double free of", 1);
    return;
  }
  hak_free_slow(p);
}

void hak_hardened_delete_other(void *p, size_t want) {
  hak_hardened_check_delete(p, want, 0);
  hak_hardened_free_other(p);
}

int hak_hardened_realloc_in_place(void *p, size_t old, size_t size) {
  const slab_meta_t *m = ss_registry_slab_of(p);
  uint32_t bs = m->block_size;
  if (size > hard_request_max(bs) || (size <= bs / 2 && bs > 64)) return 0;
  if (hard_canary_diff_in(p, old, bs) != 0) hardened_report_canary(p, old);   // going on: moved as it is
  hard_canary_write_kept(p, size, bs);                 // the program's bytes below size stay
  *hard_size_slot(m, p) = (uint32_t)size ^ hard_size_key();
  return 1;
}

size_t hak_hardened_slab_size(const void *p, const char *op) {
  (void)op;
  return hardened_requested(ss_registry_slab_of(p), p);
}

void hak_hardened_check_free_aligned_sized(const void *p, size_t align, size_t size) {
  if (p != NULL && (align == 0 || (align & (align - 1)) != 0)) {
    size_t actual = (size_t)1 << __builtin_ctzll((unsigned long long)(uintptr_t)p);
    hardened_report_delete("free_aligned_sized with an alignment that is not a power of two of", p, align, actual);
    return;
  }
  hak_hardened_check_delete(p, size, align);
}

void hak_hardened_check_delete(const void *p, size_t size, size_t align) {
  if (p == NULL) return;
  if (align != 0 && ((uintptr_t)p & (align - 1)) != 0) {
    size_t actual = (size_t)1 << __builtin_ctzll((unsigned long long)(uintptr_t)p);
    hardened_report_delete("aligned delete with the wrong alignment of", p, align, actual);
    return;
  }
  // A slab block knows the alignment it was made with (its size word's tag):
  // an aligned delete must give that one.
  if (align > 16 && ss_registry_contains(p)) {
    slab_meta_t *m = ss_registry_slab_of(p);
    if (slab_block_start(m, p) && !block_is_free(hak_base_from_raw((void *)p))) {
      unsigned lg = hardened_alignment_lg(m, p);
      size_t made = lg != 0 ? (size_t)1 << lg : 16u;
      if (made != align) {
        hardened_report_delete("aligned delete with the wrong alignment of", p, align, made);
        return;
      }
    }
  }
  if (size == (size_t)-1) return;  // not a sized delete
  size_t actual;
  if (hak_hardened_is_zero_block(p)) actual = 0;
  else if (ss_registry_contains(p)) {
    slab_meta_t *m = ss_registry_slab_of(p);
    if (!slab_block_start(m, p) || block_is_free(hak_base_from_raw((void *)p))) return;   // free reports it
    actual = hardened_requested(m, p);
  } else if (page_heap_contains(p)) {
    // A large block's usable size is its request (page_heap_block_size).
    actual = page_heap_usable_size(p);
    if (actual == 0 || page_heap_block_size(size) == actual) return;
    if (size == 0 && actual == 1) return;   // an aligned request of 0 bytes, made as 1 (hak_aligned_alloc)
  } else {
    int interior;                  // huge: the request its entry keeps (hardened)
    actual = huge_usable_size(p, &interior);
    if (actual == 0) return;       // not a huge block's start: free reports it
    if (size == 0 && actual == 1) return;   // (the same)
  }
  if (size != actual) hardened_report_delete("sized delete with the wrong size of", p, size, actual);
}
#else
typedef int hardened_core_unused_t;   // ISO C: a translation unit is not empty
#endif
