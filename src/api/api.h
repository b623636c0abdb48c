// api.h — shared by the drop-in layer (src/api/): the export attribute and the
// glibc rules the layer adds on top of the hak_* engine API.
//
// Everything in src/api/ is a thin mapping from the glibc/C++ surface onto
// include/hakmem.h. The engine implements the glibc contract of hak_malloc,
// hak_calloc, hak_realloc, hak_reallocarray, hak_posix_memalign and
// hak_usable_size, and hak_free keeps errno (free never changes it); this
// layer adds only what the hak_* API does not express: memalign/valloc/pvalloc
// rounding, the C++ new_handler loop, mallinfo/malloc_info formatting, and
// what to do with pointers that are not ours (foreign_box.c).
#ifndef HAK_API_API_H
#define HAK_API_API_H
#include <stddef.h>
#include <stdint.h>

#define HAK_EXPORT __attribute__((visibility("default")))
// malloc, free, operator new and the plain and sized operator delete start on
// a cache line: each hot path takes the fewest lines, and where its branches
// fall against 32-byte boundaries (the Makefile's BRANCH_ALIGN) depends on its
// own code only, not on what the linker put before it
// (scripts/check-branch-align.py checks the result).
#define HAK_HOT_ENTRY __attribute__((aligned(64)))

// memalign() semantics of glibc 2.36, shared by memalign, aligned_alloc,
// valloc, pvalloc and __libc_memalign: an alignment below 16 is raised to 16,
// a non-power-of-two one is rounded up to the next power of two, one above
// SIZE_MAX/2+1 fails with EINVAL.
void *hak_api_memalign(size_t alignment, size_t size);

#endif
