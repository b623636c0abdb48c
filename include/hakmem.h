// hakmem.h — the public API of the hakmem allocator engine.
//
// Every function here is safe to call from any thread at any time, including
// before main() and after a thread has started exiting. The drop-in library
// (libhakmem.so) maps the glibc malloc family onto these functions; programs
// that want hakmem without overriding malloc link libhakmem_core.a and call
// hak_* directly.
#ifndef HAKMEM_H
#define HAKMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HAK_API __attribute__((visibility("default")))

// The release: HAKMEM_VERSION is what this header was shipped with,
// hak_version() what the library loaded at run time says (they differ when a
// program built against one release runs with another). The shared library's
// soname is libhakmem.so.<HAKMEM_VERSION_MAJOR>.
#define HAKMEM_VERSION_MAJOR 0
#define HAKMEM_VERSION_MINOR 1
#define HAKMEM_VERSION_PATCH 0
#define HAKMEM_VERSION       "0.1.0"
HAK_API const char *hak_version(void);

// The malloc family. Semantics are glibc's: NULL + errno=ENOMEM on failure,
// hak_malloc(0) returns a unique freeable pointer, results for requests of
// 16 bytes or more are 16-byte aligned.
HAK_API void  *hak_malloc(size_t size);
HAK_API void   hak_free(void *ptr);          // never changes errno
HAK_API void  *hak_calloc(size_t count, size_t size);
HAK_API void  *hak_realloc(void *ptr, size_t size);
HAK_API void  *hak_reallocarray(void *ptr, size_t count, size_t size);
// alignment: any power of two (values below 16 are raised to 16).
// Returns NULL with errno=EINVAL if alignment is not a power of two.
HAK_API void  *hak_aligned_alloc(size_t alignment, size_t size);
// 0, EINVAL or ENOMEM as posix_memalign; *out untouched on failure.
HAK_API int    hak_posix_memalign(void **out, size_t alignment, size_t size);
// Bytes usable at ptr (>= the request); 0 for NULL.
HAK_API size_t hak_usable_size(const void *ptr);

// Is this address inside a block hakmem handed out and that has not been
// freed? Returns 1 for such a pointer or any interior address of one; 0 for
// freed blocks (on a free list or in a thread's cache), never-allocated slab
// space, and addresses hakmem does not manage.
HAK_API int    hak_owns(const void *ptr);

// Return every unused cached page to the OS now (malloc_trim(0)).
// Returns 1 if any memory was released, 0 otherwise.
HAK_API int    hak_trim(void);

// Give the calling thread's cached blocks and slabs back to the Shared Pool
// now (done automatically when a thread exits).
HAK_API void   hak_thread_flush(void);

// Figures the allocator keeps about itself, gathered at the time of the call
// (other threads may change them while it runs). Blocks in threads' TLS
// caches count as in use.
typedef struct hak_stats {
  size_t mapped_bytes;        // address space mapped from the OS right now
  size_t superslab_count;     // live SuperSlabs
  size_t superslab_bytes;     // bytes in live SuperSlabs
  size_t slabs_in_use;        // slabs bound to a size class
  size_t slabs_free;          // EMPTY slabs in the Shared Pool
  size_t in_use_bytes;        // bytes in blocks handed out (slab blocks counted at their
                              // class size; blocks in TLS caches count as in use)
  size_t free_bytes;          // bytes in slabs bound to a class but not handed out
  size_t large_count;         // live large blocks (page heap, 256 KiB .. 32 MiB)
  size_t large_bytes;         // bytes in live large blocks
  size_t large_regions;       // page-heap regions mapped (64 MiB each)
  size_t huge_count;          // live huge (direct-mmap) blocks
  size_t huge_bytes;          // bytes mapped for live huge blocks
  size_t huge_cached_bytes;   // freed huge mappings kept for reuse
  size_t superslabs_mapped_total;   // SuperSlabs ever mapped
  size_t superslabs_unmapped_total; // SuperSlabs ever returned to the OS
  size_t remote_frees_total;  // frees pushed onto another thread's slab
  size_t threads_live;        // threads with hakmem state
} hak_stats_t;

HAK_API void   hak_get_stats(hak_stats_t *out);
// Totals, human-readable, written to fd with write(2).
HAK_API void   hak_print_stats(int fd);

// One size class's figures (the slab classes, 16 B .. 256 KiB), gathered at
// the time of the call. Thread-cache figures are as of each thread's last
// refill or flush (counted there, never on the malloc/free fast path).
typedef struct hak_class_stats {
  size_t block_size;          // the class's block size in bytes
  size_t blocks_in_use;       // blocks held by the program (handed out of slabs, less `cached`)
  size_t bytes_in_use;        // blocks_in_use * block_size
  size_t blocks_free;         // blocks in the class's slabs that were never handed out or came back
  size_t slabs;               // slabs bound to the class
  size_t cached;              // blocks waiting in threads' caches
  size_t refills;             // refills of a thread's cache from slabs (all threads, ever)
  size_t remote_frees;        // blocks freed by a thread other than the slab's owner (ever)
} hak_class_stats_t;

// Fills out[0 .. min(max, classes) - 1], class 0 first; returns the number of
// classes (call with max 0 to size the array).
HAK_API size_t hak_get_class_stats(hak_class_stats_t *out, size_t max);
// The table per size class and the totals (format 0), or the same figures as
// one JSON object (format 1), written to fd with write(2) (malloc_stats,
// HAKMEM_STATS at exit).
HAK_API void   hak_print_class_stats(int fd, int format);

#ifdef __cplusplus
}
#endif
#endif // HAKMEM_H
