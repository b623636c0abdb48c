// huge.h — blocks above PAGE_HEAP_MAX, aligned blocks that neither slabs nor
// the page heap serve, and large blocks when no page-heap region can be
// mapped: one mmap each, recorded in a hash table keyed by address, grown in
// place with mremap.
// Freed mappings are kept in a small cache (bounded by HAKMEM_HUGE_CACHE_MB,
// a mapping above a quarter of it only while the program takes and frees it
// in a loop) so a free/malloc loop does not pay mmap each time; one older than
// HAKMEM_HUGE_CACHE_DELAY_MS is unmapped by the next huge allocation or free,
// or small-block slow path, and every one at once by hak_trim(). The invariants are written above
// huge_entry_t and huge_cached_t in huge.c.
#ifndef HAK_HUGE_H
#define HAK_HUGE_H

#include <stddef.h>
#include <stdint.h>

#include "debug/hak_base.h"

// size > 0; align a power of two (<= page means page alignment).
void  *huge_alloc(size_t size, size_t align, int zero);
// 1 if p is a huge block (then freed), 0 otherwise.
int    huge_free(void *p);
// Was p one of the last huge blocks freed (and is no block now)? For the
// report of a double free (slow: takes the lock).
int    huge_freed_recently(const void *p);
// Usable bytes of a huge block, or 0 if p is not one. *interior set to 1 when
// p lies inside a huge block without being its start.
size_t huge_usable_size(const void *p, int *interior);
// realloc's growth rule (tcmalloc's hysteresis), for the block that moves
// (hak_realloc) and the mapping that is remapped (huge_try_realloc): a block
// of `old` bytes asked to grow by less than a quarter takes a quarter more;
// any other size is taken as asked.
HAK_INLINE size_t realloc_grown_size(size_t old, size_t size) {
  return size > old && size - old < old / 4 ? old + old / 4 : size;
}
// Resize a huge block to a new huge size in place or by mremap; NULL if that
// is not possible (the caller copies).
void  *huge_try_realloc(void *p, size_t size);
// Drop expired cache entries (or all of them); 1 if anything was unmapped.
int    huge_trim(int everything);
// From the small-block slow paths (now_ms: os_now_ms): a cached mapping past
// HAKMEM_HUGE_CACHE_DELAY_MS is unmapped even when no huge block is
// allocated or freed again. One load while nothing is due.
void   huge_maybe_expire(uint64_t now_ms);

#if HAK_HARDENED
// The hardened build maps a PROT_NONE guard page after each huge block (not
// counted in its usable size) and makes a freed mapping PROT_NONE while it is
// cached, then keeps its address space PROT_NONE for a while (the graves,
// huge.c). For the fault hook (no lock: a best-effort read): 1 if p is in a
// guard page, 2 if in a freed mapping (cached or a grave), 3 if in the page
// below a live block's mapping (an underflow that met no mapping: without it
// a bare SIGSEGV), else 0.
int    huge_fault_kind(const void *p);
// Unmap the freed mappings kept PROT_NONE (address space pressure; see
// os_on_address_pressure); 1 if there were any. Never waits for the lock.
int    huge_release_graves(void);
#endif

// Debug builds: check the table, the cache and the counters in full, report
// the first broken invariant in one line and abort. Called at every state
// change in debug builds; a no-op in release builds.
void   huge_validate(void);

void   huge_fork_prepare(void);
struct timespec;
// Its lock free by `by` (os_mutex_settles; the exit report's check).
int    huge_locks_settle(const struct timespec *by);
void   huge_fork_parent(void);
void   huge_fork_child(void);

typedef struct huge_stats { size_t live_count, live_bytes, cached_bytes; } huge_stats_t;
void   huge_get_stats(huge_stats_t *out);

#endif
