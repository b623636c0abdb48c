// cxx_new_api.c — every C++ operator new/delete, written in C under its
// Itanium-ABI mangled name so that libhakmem.so needs no libstdc++.
//
// operator new follows [new.delete.single]: on failure it calls the installed
// new_handler and retries, and throws std::bad_alloc when there is none. Both
// libstdc++ functions it needs are weak references, resolved when the program
// itself links libstdc++ (every C++ program does):
//   std::get_new_handler()     _ZSt15get_new_handlerv
//   std::__throw_bad_alloc()   _ZSt17__throw_bad_allocv
// The exception unwinds through this C frame using the .eh_frame GCC emits
// for C on x86-64 (-fasynchronous-unwind-tables is the default there).
// Without libstdc++ (a C program calling a mangled name by hand) a failure is
// reported on stderr and aborts.
//
// The nothrow forms call the new_handler too, and return NULL once it throws
// bad_alloc or none is installed. A throw cannot be caught in C (and one out
// of a noexcept operator would terminate the program), so when a handler is
// installed the failure goes to libstdc++'s own nothrow form, the next
// definition of the symbol (dlsym RTLD_NEXT): it calls operator new, ours,
// inside a try block. Without libstdc++ no handler can be installed: NULL.
// (dlsym may allocate: it runs only after a failed allocation with a handler
// that the running C++ program installed, never at start-up, no lock held.)
//
// Sized delete ignores the size (the engine knows it); aligned delete needs no
// alignment (hak_free finds any block from its address). The hardened build
// checks both against the block and reports a mismatch.
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

#include "hakmem.h"
#include "api/api.h"
#include "core/hakmem_fast.h"
#include "core/hardened.h"
#include "os/os.h"

typedef void (*hak_new_handler_t)(void);
extern hak_new_handler_t _ZSt15get_new_handlerv(void) __attribute__((weak));
extern void _ZSt17__throw_bad_allocv(void) __attribute__((weak, noreturn));

__attribute__((noinline, noreturn, cold)) static void cxx_throw_bad_alloc(void) {
  if (_ZSt17__throw_bad_allocv != NULL) _ZSt17__throw_bad_allocv();
  static const char msg[] = "hakmem: operator new failed and std::bad_alloc cannot be thrown "
                            "(libstdc++ not loaded)\n";
  os_write_all(STDERR_FILENO, msg, sizeof msg - 1);
  abort();
}

// The failure path of the throwing forms: new_handler loop, then bad_alloc.
__attribute__((noinline, cold)) static void *cxx_new_retry(size_t size, size_t alignment) {
  for (;;) {
    hak_new_handler_t handler = _ZSt15get_new_handlerv != NULL ? _ZSt15get_new_handlerv() : NULL;
    if (handler == NULL) cxx_throw_bad_alloc();
    handler();                               // may free memory, install another handler, or throw
    void *p = alignment ? hak_api_memalign(alignment, size) : hak_malloc(size);
    if (p != NULL) return p;
  }
}

// The throwing new and the plain and sized deletes run malloc's and free's
// fast paths inline, as the exported malloc and free do: hak_malloc and
// hak_free are exported symbols, so a call to them goes through the GOT (an
// indirect jump for delete; for new an indirect call, and a register kept
// across it for the new_handler loop). The rarer forms call them.
#if HAK_HARDENED
// A miss: the rest of malloc (hak_malloc: its fast path finds the list empty
// again), then the new_handler loop if it fails; a changed fill: reported
// (hak_hardened_pop_bad), then the same.
__attribute__((noinline)) static void *cxx_new_miss(size_t size) {
  void *p = hak_malloc(size);                // malloc(0) is already a unique pointer
  if (__builtin_expect(p == NULL, 0)) return cxx_new_retry(size, 0);
  return p;
}
__attribute__((noinline)) static void *cxx_new_bad(unsigned slot, void *p, size_t size) {
  void *q = hak_hardened_pop_bad(slot, p, size);
  if (__builtin_expect(q == NULL, 0)) return cxx_new_retry(size, 0);
  return q;
}
static inline void *cxx_new(size_t size) { return hak_malloc_fast_or(size, cxx_new_miss, cxx_new_bad); }
#else
// A miss: malloc's slow path, then the new_handler loop if it fails.
__attribute__((noinline)) static void *cxx_new_slow(size_t size) {
  void *p = hak_malloc_slow(size);           // malloc(0) is already a unique pointer
  if (__builtin_expect(p == NULL, 0)) return cxx_new_retry(size, 0);
  return p;
}
static inline void *cxx_new(size_t size) { return hak_malloc_fast_or(size, cxx_new_slow); }
#endif

static inline void *cxx_new_aligned(size_t size, size_t alignment) {
  // std::align_val_t is always a power of two; memalign rules cover the rest.
  void *p = hak_api_memalign(alignment, size);
  if (__builtin_expect(p == NULL, 0)) return cxx_new_retry(size, alignment);
  return p;
}

// The failure path of the nothrow forms: libstdc++'s form of symbol `sym`
// when a new_handler is installed (see the top), else NULL.
typedef void *(*cxx_nothrow_fn_t)(size_t, const void *);
typedef void *(*cxx_nothrow_aligned_fn_t)(size_t, size_t, const void *);
__attribute__((noinline, cold)) static void *cxx_nothrow_retry(const char *sym, size_t size, size_t al,
                                                                const void *nt) {
  if (_ZSt15get_new_handlerv == NULL || _ZSt15get_new_handlerv() == NULL) return NULL;
  void *next = dlsym(RTLD_NEXT, sym);
  if (next == NULL) return NULL;
  return al ? ((cxx_nothrow_aligned_fn_t)next)(size, al, nt) : ((cxx_nothrow_fn_t)next)(size, nt);
}

static inline void *cxx_new_nothrow(const char *sym, size_t size, const void *nt) {
  void *p = hak_malloc(size);
  return __builtin_expect(p != NULL, 1) ? p : cxx_nothrow_retry(sym, size, 0, nt);
}

static inline void *cxx_new_aligned_nothrow(const char *sym, size_t size, size_t al, const void *nt) {
  void *p = hak_api_memalign(al, size);
  return __builtin_expect(p != NULL, 1) ? p : cxx_nothrow_retry(sym, size, al, nt);
}

// operator new / new[]
HAK_EXPORT HAK_HOT_ENTRY void *_Znwm(size_t size) { return cxx_new(size); }
HAK_EXPORT void *_Znam(size_t size) { return cxx_new(size); }
HAK_EXPORT void *_ZnwmRKSt9nothrow_t(size_t size, const void *nt) {
  return cxx_new_nothrow("_ZnwmRKSt9nothrow_t", size, nt);
}
HAK_EXPORT void *_ZnamRKSt9nothrow_t(size_t size, const void *nt) {
  return cxx_new_nothrow("_ZnamRKSt9nothrow_t", size, nt);
}
HAK_EXPORT void *_ZnwmSt11align_val_t(size_t size, size_t al) { return cxx_new_aligned(size, al); }
HAK_EXPORT void *_ZnamSt11align_val_t(size_t size, size_t al) { return cxx_new_aligned(size, al); }
HAK_EXPORT void *_ZnwmSt11align_val_tRKSt9nothrow_t(size_t size, size_t al, const void *nt) {
  return cxx_new_aligned_nothrow("_ZnwmSt11align_val_tRKSt9nothrow_t", size, al, nt);
}
HAK_EXPORT void *_ZnamSt11align_val_tRKSt9nothrow_t(size_t size, size_t al, const void *nt) {
  return cxx_new_aligned_nothrow("_ZnamSt11align_val_tRKSt9nothrow_t", size, al, nt);
}

// operator delete / delete[]
HAK_EXPORT HAK_HOT_ENTRY void _ZdlPv(void *p) { hak_free_fast(p); }
HAK_EXPORT void _ZdaPv(void *p) { hak_free_fast(p); }
#if HAK_HARDENED
// The hardened build checks the size and alignment a delete is given against
// the block (core/hardened.c); (size_t)-1: no size given.
#define CXX_CHECK(p, size, al) hak_hardened_check_delete((p), (size), (al))
#else
#define CXX_CHECK(p, size, al) ((void)(p), (void)(size), (void)(al))
#endif
#if HAK_HARDENED
// The size checked on the way, by free's own lookup (hak_free_fast_sized).
HAK_EXPORT HAK_HOT_ENTRY void _ZdlPvm(void *p, size_t size) { hak_free_fast_sized(p, size, 1); }
HAK_EXPORT void _ZdaPvm(void *p, size_t size) { hak_free_fast_sized(p, size, 1); }
#else
HAK_EXPORT HAK_HOT_ENTRY void _ZdlPvm(void *p, size_t size) { (void)size; hak_free_fast(p); }
HAK_EXPORT void _ZdaPvm(void *p, size_t size) { (void)size; hak_free_fast(p); }
#endif
HAK_EXPORT void _ZdlPvSt11align_val_t(void *p, size_t al) { CXX_CHECK(p, (size_t)-1, al); hak_free(p); }
HAK_EXPORT void _ZdaPvSt11align_val_t(void *p, size_t al) { CXX_CHECK(p, (size_t)-1, al); hak_free(p); }
HAK_EXPORT void _ZdlPvmSt11align_val_t(void *p, size_t size, size_t al) {
  CXX_CHECK(p, size, al);
  hak_free(p);
}
HAK_EXPORT void _ZdaPvmSt11align_val_t(void *p, size_t size, size_t al) {
  CXX_CHECK(p, size, al);
  hak_free(p);
}
HAK_EXPORT void _ZdlPvRKSt9nothrow_t(void *p, const void *nt) { (void)nt; hak_free(p); }
HAK_EXPORT void _ZdaPvRKSt9nothrow_t(void *p, const void *nt) { (void)nt; hak_free(p); }
HAK_EXPORT void _ZdlPvSt11align_val_tRKSt9nothrow_t(void *p, size_t al, const void *nt) {
  (void)al;
  (void)nt;
  hak_free(p);
}
HAK_EXPORT void _ZdaPvSt11align_val_tRKSt9nothrow_t(void *p, size_t al, const void *nt) {
  (void)al;
  (void)nt;
  hak_free(p);
}
