// malloc_api.c — the exported glibc malloc family and its __libc_* aliases.
//
// Each entry point is one call into the engine (include/hakmem.h), which
// implements glibc's contract for malloc, calloc, realloc, reallocarray,
// posix_memalign and malloc_usable_size (ENOMEM on overflow and on sizes
// above PTRDIFF_MAX, realloc(p, 0) frees, realloc keeps the old block on
// failure, *out untouched on posix_memalign failure, free keeping errno).
// What this file adds:
//   - memalign/aligned_alloc/valloc/pvalloc with glibc 2.36's rounding rules;
//   - the __libc_* names, which glibc-internal and old callers still use.
// Nothing here calls dlsym, stdio or getenv: the first malloc may come from
// the dynamic loader before libc is fully initialised.
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>

#include "hakmem.h"
#include "api/api.h"
#include "core/hakmem_fast.h"
#include "os/os.h"

#define HAK_API_MIN_ALIGN 16u   // glibc's MALLOC_ALIGNMENT on x86-64

void *hak_api_memalign(size_t alignment, size_t size) {
  if (alignment <= HAK_API_MIN_ALIGN) return hak_aligned_alloc(HAK_API_MIN_ALIGN, size);
  if (alignment > SIZE_MAX / 2 + 1) {        // no power of two is that large
    errno = EINVAL;
    return NULL;
  }
  if ((alignment & (alignment - 1)) != 0)    // round up to the next power of two
    alignment = (size_t)1 << (64 - __builtin_clzll((unsigned long long)alignment));
  if (alignment > PTRDIFF_MAX || size > (size_t)PTRDIFF_MAX - alignment) {
    errno = ENOMEM;                          // cannot be satisfied in any address space
    return NULL;
  }
  return hak_aligned_alloc(alignment, size);
}

HAK_EXPORT HAK_HOT_ENTRY void *malloc(size_t size) { return hak_malloc_fast(size); }

// free() never changes errno (POSIX 2024, glibc >= 2.33): the engine's free
// keeps it (only its slow path can touch errno, and that path saves it), so
// this is the fast path itself, inlined.
HAK_EXPORT HAK_HOT_ENTRY void free(void *ptr) { hak_free_fast(ptr); }

// C23's sized frees. A program built against a C library that has them
// (declared in <stdlib.h>) calls the library's own, which would free our
// block with that library's allocator, unless these are ours. The default
// build frees as free does; the hardened build checks the size (and the
// alignment) as it checks C++'s sized and aligned deletes.
HAK_EXPORT void free_sized(void *ptr, size_t size);
HAK_EXPORT void free_aligned_sized(void *ptr, size_t alignment, size_t size);
#if HAK_HARDENED
void free_sized(void *ptr, size_t size) { hak_free_fast_sized(ptr, size, 1); }
void free_aligned_sized(void *ptr, size_t alignment, size_t size) {
  hak_hardened_check_free_aligned_sized(ptr, alignment, size);
  hak_free(ptr);
}
#else
void free_sized(void *ptr, size_t size) {
  (void)size;
  hak_free_fast(ptr);
}
void free_aligned_sized(void *ptr, size_t alignment, size_t size) {
  (void)alignment;
  (void)size;
  hak_free(ptr);
}
#endif

HAK_EXPORT void *calloc(size_t count, size_t size) { return hak_calloc(count, size); }

HAK_EXPORT void *realloc(void *ptr, size_t size) { return hak_realloc(ptr, size); }

HAK_EXPORT void *reallocarray(void *ptr, size_t count, size_t size) {
  return hak_reallocarray(ptr, count, size);
}

HAK_EXPORT int posix_memalign(void **out, size_t alignment, size_t size) {
  return hak_posix_memalign(out, alignment, size);
}

// As the C library the process runs on: up to glibc 2.37 aligned_alloc is
// memalign (any alignment, rounded up); from 2.38 on (C23's rule) an alignment
// that is not a power of two fails with EINVAL. A program on a newer glibc
// (Debian 13's 2.41) saw the old behaviour under hakmem.
HAK_EXPORT void *aligned_alloc(size_t alignment, size_t size) {
  if ((alignment == 0 || (alignment & (alignment - 1)) != 0) && os_libc_at_least(2, 38)) {
    errno = EINVAL;
    return NULL;
  }
  return hak_api_memalign(alignment, size);
}

HAK_EXPORT void *memalign(size_t alignment, size_t size) {
  return hak_api_memalign(alignment, size);
}

HAK_EXPORT void *valloc(size_t size) { return hak_api_memalign(os_page_size(), size); }

// Size rounded up to whole pages; pvalloc(0) gives one page.
HAK_EXPORT void *pvalloc(size_t size) {
  size_t ps = os_page_size();
  if (size > SIZE_MAX - ps) {
    errno = ENOMEM;
    return NULL;
  }
  size_t rounded = (size + ps - 1) & ~(ps - 1);
  if (rounded == 0) rounded = ps;
  return hak_api_memalign(ps, rounded);
}

#if HAK_HARDENED   // (its size is the request's, behind its checks)
HAK_EXPORT size_t malloc_usable_size(void *ptr) { return hak_usable_size(ptr); }
#else
HAK_EXPORT size_t malloc_usable_size(void *ptr) { return hak_usable_size_fast(ptr); }
#endif

// Removed from glibc's headers in 2.26 but still linked by old binaries.
HAK_EXPORT void cfree(void *ptr);
void cfree(void *ptr) { free(ptr); }

// The __libc_* names: same code, same addresses (copy() takes over the
// attributes glibc's headers put on the targets).
HAK_EXPORT void *__libc_malloc(size_t size) __attribute__((alias("malloc"), copy(malloc)));
HAK_EXPORT void  __libc_free(void *ptr) __attribute__((alias("free"), copy(free)));
HAK_EXPORT void *__libc_calloc(size_t count, size_t size) __attribute__((alias("calloc"), copy(calloc)));
HAK_EXPORT void *__libc_realloc(void *ptr, size_t size) __attribute__((alias("realloc"), copy(realloc)));
HAK_EXPORT void *__libc_memalign(size_t alignment, size_t size) __attribute__((alias("memalign"), copy(memalign)));
HAK_EXPORT int   __posix_memalign(void **out, size_t alignment, size_t size)
    __attribute__((alias("posix_memalign"), copy(posix_memalign)));
