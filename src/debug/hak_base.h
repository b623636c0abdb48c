// hak_base.h — compiler helpers shared by every box: branch hints, inlining
// control and debug-only assertions. Nothing here costs anything in release.
#ifndef HAK_BASE_H
#define HAK_BASE_H

#include <stddef.h>
#include <stdint.h>

#ifndef HAK_DEBUG
#define HAK_DEBUG 0
#endif
// The hardened build (build/libhakmem-hardened.so, -DHAK_HARDENED=1): canaries,
// fill-on-free, quarantine, guard pages, randomised reuse. Every such check is
// under `#if HAK_HARDENED`, so the default build's code does not change.
#ifndef HAK_HARDENED
#define HAK_HARDENED 0
#endif

// Sanitizer builds (the hak_* API only): HAK_TSAN under ThreadSanitizer,
// HAK_SANITIZED under any sanitizer. Code that hides memory accesses from the
// compiler (inline asm, %fs-relative operands) keeps a plain C form there.
#if defined(__SANITIZE_THREAD__)
#define HAK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HAK_TSAN 1
#endif
#endif
#if defined(HAK_TSAN) || defined(__SANITIZE_ADDRESS__)
#define HAK_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAK_SANITIZED 1
#endif
#endif
#ifndef HAK_SANITIZED
#define HAK_SANITIZED 0
#endif

// The thread pointer: per thread, fixed for its life. On x86-64 it is %fs:0
// (the TCB points to itself), read through GCC's and clang's __seg_fs, which
// also let other code address initial-exec TLS as %fs-relative operands
// (HAK_TLS_SEG_FS). Sanitizer builds keep plain pointers (their
// instrumentation must see the accesses).
#if defined(__x86_64__) && defined(__SEG_FS) && !HAK_SANITIZED
#define HAK_TLS_SEG_FS 1
static inline __attribute__((always_inline)) uintptr_t hak_thread_pointer(void) {
  return *(const __seg_fs uintptr_t *)0;
}
#else
#define HAK_TLS_SEG_FS 0
static inline __attribute__((always_inline)) uintptr_t hak_thread_pointer(void) {
  return (uintptr_t)__builtin_thread_pointer();
}
#endif

#define HAK_LIKELY(x)   __builtin_expect(!!(x), 1)
#define HAK_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define HAK_NOINLINE    __attribute__((noinline))
#define HAK_INLINE      static inline __attribute__((always_inline))
#define HAK_COLD        __attribute__((cold, noinline))
// Internal data read on the fast path: bind locally (no GOT load).
#define HAK_INTERNAL    __attribute__((visibility("hidden")))
// Tables of many kilobytes (the registry's maps, the page heap's region
// bits) and the arrays of rare paths (the huge blocks' cache): placed after
// every other variable (.lbss, which the linker lays out past .bss), so the
// few variables that every process writes at start-up and on its first
// mallocs share one page (test_process) instead of lying between megabyte
// tables. Each page a process writes is a fault (about 10 us on a VM, two
// of them after a fork). GCC only: clang before 18 would store an .lbss
// object's zeros in the file; addressing is the same either way (small
// code model, RIP-relative).
// The initialised arrays of a page or more (the arenas, the transfer
// classes), page aligned, go to .data1, which the linker lays out between
// .data and .bss: among the small variables their alignment split them
// over more pages. Past .lbss (.ldata, until the fifty-seventh session) they
// lay 73 MB from the small variables, in a 2 MiB region of the mapping that
// only the registry's map could share, and each region with a present page
// is a page table that every fork copies and every exit frees (ss_registry.c
// says how the registry's arrays are ordered). So .data and .bss no longer
// share a page: a lock the atfork handlers take belongs in .bss (all zeros,
// as PTHREAD_MUTEX_INITIALIZER is), on the page of the others, or a threaded
// parent writes one page more after every fork (g_pool's did: 8-9 faults a
// fork in test_process --threaded-fork, 7 with it in .bss).
// HAK_NO_REORDER: variables laid out in the order of their definitions
// (GCC may emit a file's variables in any order; ss_registry.c).
#if defined(__GNUC__) && !defined(__clang__)
#define HAK_BIG_BSS     __attribute__((section(".lbss")))
#define HAK_PAGE_DATA   __attribute__((section(".data1"), aligned(4096)))
#define HAK_NO_REORDER  __attribute__((no_reorder))
#else
#define HAK_BIG_BSS
#define HAK_PAGE_DATA   __attribute__((aligned(4096)))
#define HAK_NO_REORDER
#endif

// Report an internal invariant violation and abort (debug builds only).
void hak_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn, cold));
#if HAK_DEBUG
#define HAK_ASSERT(e) ((e) ? (void)0 : hak_assert_fail(#e, __FILE__, __LINE__))
#else
#define HAK_ASSERT(e) ((void)0)
#endif

// Validators (debug builds): report the first broken invariant of a
// structure, naming it, an address and the source line, and abort
// (hak_report_invariant, debug/report.h). `what` is a string literal.
void hak_report_invariant(const char *what, const void *ptr, unsigned long long n) __attribute__((noreturn, cold));
#define HAK_CHECK(cond, what, where) \
  ((cond) ? (void)0 : hak_report_invariant("invariant broken: " what " at", (const void *)(where), __LINE__))

// Ask for p's cache line for writing (prefetchw on x86-64: one transfer
// where a load and then a store would take two when another core has it).
// Any address will do, NULL included (an empty quarantine slot): a prefetch
// never faults, and the address goes in a register, so nothing is
// dereferenced in C.
HAK_INLINE void hak_prefetch_for_write(const void *p) {
#if defined(__x86_64__)
  __asm__ volatile("prefetchw (%0)" : : "r"(p));   // gcc emits it only with -mprfchw
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

#endif
