// page_heap.h — large blocks (above HAK_SLAB_MAX, up to PAGE_HEAP_MAX) as runs
// of pages carved from 64 MiB regions, one size class per run, with
// address-ordered best-fit reuse and coalescing of free neighbours, so memory
// freed by one large block serves the next without a system call or a page
// fault. Free runs are purged (MADV_DONTNEED) after a delay or past a dirty
// budget (which keeps what the arena held live a moment ago: its recent peak),
// decided on slow paths; a region whose pages are all free is unmapped by the
// next purge pass (one is kept per arena), or at once when a mapping fails,
// and purged at once when the program touches few pages of its blocks (a
// sampled verdict). The regions are divided among arenas, each with its own
// lock; a thread allocates from one arena (page_heap.c). The invariants are
// written above ph_region_t in page_heap_internal.h.
#ifndef HAK_PAGE_HEAP_H
#define HAK_PAGE_HEAP_H

#include <stddef.h>

#define PAGE_HEAP_MAX   ((size_t)32 << 20)   // largest block; above is huge.c
// Largest alignment of a block the page heap hands out; above, a mapping of
// its own (huge.c). A block aligned past a page took a mapping of its own
// before, whatever its size: 70 000 live posix_memalign(8192, 64) blocks
// reached vm.max_map_count (65 530 mappings), and then every mmap of the
// process failed (thread stacks, dlopen, malloc itself: a helper's probe);
// glibc serves them from its heap.
#define PAGE_HEAP_ALIGN_MAX ((size_t)1 << 20)

// A block of at least size bytes, page aligned (16-byte aligned and ending at
// its guard page in the hardened build); NULL when out of memory. zero: the
// block reads as zero. Its usable size is page_heap_block_size(size): the
// size rounded up to a class, four per power of two above 64 KiB (the size
// itself in the hardened build).
// *fresh (not NULL): the block's bytes when its run was clean (never
// written, or purged, since: its pages fault in as the program writes
// them), else 0.
void  *page_heap_alloc(size_t size, int zero, size_t *fresh);
// The same, aligned to `align` bytes (a power of two; up to a page as above):
// up to PAGE_HEAP_ALIGN_MAX, a run taken align - 1 pages longer and its
// pages before and after the aligned ones freed again. NULL past that, or
// when the size and the alignment together pass PAGE_HEAP_MAX. (Hardened:
// the block still ends at its guard page, as near as its alignment allows.)
void  *page_heap_alloc_aligned(size_t size, size_t align, int zero, size_t *fresh);
// The usable size of the block page_heap_alloc(size) returns (0: not ours).
size_t page_heap_block_size(size_t size);
// Is p inside a page-heap region? (one bitmap load, no lock)
int    page_heap_contains(const void *p);
// Free a block; 0 if p is not the start of a live block (then nothing happens).
int    page_heap_free(void *p);
// Usable bytes of the block starting at p; 0 if p is not a block start.
size_t page_heap_usable_size(const void *p);
// Is p anywhere inside a live block?
int    page_heap_owns(const void *p);
// Does p, no live block's start, lie in a free run (or, hardened, a
// quarantined one)? For its report: a freed block, not a wild pointer.
int    page_heap_freed_at(const void *p);
// Grow or shrink the block at p in place to hold size bytes; 1 on success.
int    page_heap_resize_in_place(void *p, size_t size);
// How many arenas threads choose among (page_heap_internal.h,
// PH_ARENAS_PER_CPU): set at the first thread's first large block.
unsigned page_heap_arena_limit(void);
// Purge dirty free runs now (everything = also unmap every free region).
int    page_heap_trim(int everything);
// Purge if the dirty budget or delay says so (cheap when nothing to do).
void   page_heap_maybe_purge(void);
// Out of address space: unmap every region with no live block (a trylock per
// arena, never a wait); 1 if any was.
int    page_heap_release_empty(void);

#if HAK_HARDENED
// The hardened build ends every block's run with a PROT_NONE guard page (not
// counted in its usable size) and makes a freed run PROT_NONE until it is
// handed out again: kept resident (mprotect) when the program touched the
// block's pages, discarded (a fresh PROT_NONE mapping) when it touched few
// (page_heap.c, hardened_close_block). When the kernel refuses to open a run
// the allocation fails (NULL); when it refuses to close a freed one and to
// discard it, the run is kept out of reuse (hardened_keep_out). For the fault
// hook (no lock: a best-effort read): 1 if p is in the guard page of a live
// block, 2 if in a free run or one kept out of reuse, 3 if in the guard page
// below a region's first run (an underflow of the block there), else 0;
// *start the run's first byte.
int    page_heap_fault_kind(const void *p, void **start);
#endif

// Debug builds: check every region and counter in full (the equations above
// ph_region_t), report the first broken invariant in one line and abort.
// Called at every state change in debug builds; a no-op in release builds.
void   page_heap_validate(void);

void   page_heap_fork_prepare(void);
struct timespec;
// Every arena's lock free by `by` (os_mutex_settles; the exit report's check).
int    page_heap_locks_settle(const struct timespec *by);
void   page_heap_fork_parent(void);
void   page_heap_fork_child(void);

typedef struct page_heap_stats { size_t regions, mapped_bytes, live_count, live_bytes, dirty_bytes; } page_heap_stats_t;
void   page_heap_get_stats(page_heap_stats_t *out);

#endif
