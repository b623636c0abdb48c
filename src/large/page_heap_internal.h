// page_heap_internal.h — what the page heap's two files share (page_heap.c:
// regions, runs, blocks; page_heap_purge.c: when freed runs go back to the
// OS): the layout of a region and an arena, the globals, the arena's lock and
// dirty count, the marks of dirty runs. Not for other files.
#ifndef HAK_PAGE_HEAP_INTERNAL_H
#define HAK_PAGE_HEAP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "debug/hak_base.h"
#include "large/page_heap.h"
#include "stats/stats.h"

#define PH_REGION_SHIFT  26                   // 64 MiB regions, aligned to their size
#define PH_REGION_SIZE   ((size_t)1 << PH_REGION_SHIFT)
#define PH_PAGE_SHIFT    12                   // the heap's page: x86-64's, a compile-time layout unit
#define PH_PAGE_SIZE     ((size_t)1 << PH_PAGE_SHIFT)
#define PH_PAGES         ((uint32_t)(PH_REGION_SIZE >> PH_PAGE_SHIFT))
#define PH_EXACT_BINS    16u                  // runs of 1..16 pages: one bin per length
#define PH_SUB_BITS      2u                   // above: 4 bins per power of two
#define PH_BINS          64                   // one bit each in bin_mask (bin_of(PH_PAGES - 1) == 55)
#define PH_CLEAN         0                    // bin set of clean free runs (read as zero)
#define PH_DIRTY         1                    // bin set of dirty free runs (may be resident)
#define PH_NONE          UINT32_MAX           // no page: end of a bin list
#define PH_USED          (1u << 31)           // head word: the run is a live block
#define PH_LEN_MASK      (PH_USED - 1u)
#define PH_ADDR_BITS     47                   // user address space of x86-64: the bitmap's reach
#define PH_MAP_WORD_BITS 64u                  // regions per bitmap word
#define PH_MAP_WORDS     (((size_t)1 << (PH_ADDR_BITS - PH_REGION_SHIFT)) / PH_MAP_WORD_BITS)
#define PH_DIRTY_LIVE_FACTOR 3u               // dirty budget: 3x the live bytes, if above the minimum (dirty_budget)
#define PH_ROOM_RUNS     1u                   // ... or the room below the recent peak and the longest run
#define PH_ROOM_PEAK_DEN 4u                   // ... and a quarter of the peak (fragmentation)
#define PH_PHASE_END_DEN 8u                   // live bytes at 1/8 of the recent peak: a phase ended (arena_note_phase_end)
#define PH_NO_END_PEAK   SIZE_MAX             // ph_arena_t.end_peak: no purge the program has not grown past
#define PH_IDLE_DELAY_DEN 10u                 // an arena whose threads exited: purged after 1/10 of the delay
#define PH_END_DEFER_DEN 10u                  // a phase end another thread reached: purged 1/10 of the delay later
#define PH_END_BACK_DEN  4u                   // ... unless the live bytes are back above 1/4 of the peak first
#define PH_KEEP_EMPTY_REGIONS 1u              // regions with no live block kept mapped (hysteresis)
#define PH_SHRINK_RATIO  2u                   // a block gives its tail back only below 1/2 of its run

// One 64 MiB region. Its first PH_HEADER_PAGES pages hold this header (and in
// the hardened build a guard page after it); the
// rest, pages [PH_HEADER_PAGES, PH_PAGES), are tiled by runs. For a region at
// rest (lock held, between operations):
//   runs tile:   from s = PH_HEADER_PAGES, s += len(s) reaches exactly PH_PAGES,
//                len(s) = head[s] & PH_LEN_MASK > 0 and tail[s + len(s) - 1] == len(s);
//                head[] is 0 off run starts, tail[] 0 off run ends
//   merged:      no two neighbouring free runs are both clean or both dirty (a
//                purge or a free merges them)
//   bins:        bin_head[d][b] lists exactly the free runs with (dirty[s] != 0) == d and
//                bin_of(len) == b (link_prev/link_next agree, link_prev[head] == PH_NONE);
//                bit b of bin_mask[d] == (bin_head[d][b] != PH_NONE); dirty[] is 0
//                except at the start of a dirty free run
//   counts:      free_pages == sum of len over free runs
// And over an arena's regions: region_count == |regions|; empty_regions ==
// |regions with free_pages == PH_USABLE_PAGES|; live_count == |used runs|,
// live_pages == sum of their len; dirty_bytes == sum of dirty free runs'
// bytes. Over all arenas: the sum of region_count == bits set in g_ph_map.
// Hardened: a run whose closing the kernel refused (hardened_keep_out) stays a
// used run, counted live, with its bit set in kept_out; it is no block to
// free, size or own, and a touch of it is a use after free. So is a freed run
// in its arena's quarantine (ph_quarantine_put), until it leaves it.
struct ph_arena;

typedef struct ph_region {
  struct ph_arena  *arena;            // its arena, for good (set before it is announced)
  uint32_t          free_pages;       // pages in free runs
  uint64_t          bin_mask[2];      // bins holding at least one run: [PH_CLEAN], [PH_DIRTY]
  struct ph_region *next, *prev;      // all regions
  uint32_t          bin_head[2][PH_BINS];
  uint32_t          head[PH_PAGES];   // first page of a run: len | USED; else 0
  uint32_t          tail[PH_PAGES];   // last page of a run: len; else 0
  uint8_t           dirty[PH_PAGES];  // first page of a free run: 0 if clean, else its mark (mark_now)
  uint32_t          link_next[PH_PAGES];  // bin list links, at a free run's first page
  uint32_t          link_prev[PH_PAGES];
#if HAK_HARDENED
  uint64_t          kept_out[PH_PAGES / 64];  // bit s: the used run at s was freed, kept out of reuse
  // A used run's first page: the bytes before its block (ph_block_slack, a
  // multiple of 16 and of the block's alignment) << 16 | the bytes between
  // its request and the guard page (tail_canary_fill: 0-15, or up to the
  // alignment less one for an aligned block). Both under a page.
  uint32_t          slack[PH_PAGES];
#endif
} ph_region_t;

#define PH_META_PAGES    ((uint32_t)((sizeof(ph_region_t) + PH_PAGE_SIZE - 1) >> PH_PAGE_SHIFT))
// Hardened: one PROT_NONE page between the header and the first run. A block
// that starts its run (page aligned: no slack before it for a canary, see
// ph_block_slack) had the header's last page below it, open: an underflow of
// valloc(300000) there went unseen into the region's own records (an
// independent misuse probe, sixty-sixth session). Elsewhere the page below a
// run is a live run's guard or a free run, both PROT_NONE.
#define PH_HEADER_GUARD_PAGES (HAK_HARDENED ? 1u : 0u)
#define PH_HEADER_PAGES  (PH_META_PAGES + PH_HEADER_GUARD_PAGES)
#define PH_USABLE_PAGES  (PH_PAGES - PH_HEADER_PAGES)
_Static_assert(PAGE_HEAP_MAX <= ((size_t)PH_USABLE_PAGES << PH_PAGE_SHIFT), "the largest block fits a region");
_Static_assert(PH_USED > PH_PAGES, "a run length never reaches the USED bit");

// Under ThreadSanitizer 4: its deadlock detector holds fewer than 64 locks
// per thread, and fork() holds every lock of the allocator at once (48
// others: the 41 exchanges' (core/init.c), the pools', the huge table's, the
// counters').
#if defined(__SANITIZE_THREAD__)
#define PH_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PH_TSAN 1
#endif
#endif
#ifdef PH_TSAN
#define PH_ARENAS 4u
#else
#define PH_ARENAS 32u
#endif
// Threads choose among two arenas per CPU the process may run on, at least
// PH_ARENAS_MIN and at most PH_ARENAS (page_heap.c, g_arena_limit; jemalloc
// takes four per CPU). More threads than that cannot all allocate at once,
// and threads that share an arena reuse each other's freed runs.
#define PH_ARENAS_PER_CPU 2u
#define PH_ARENAS_MIN     4u

#if HAK_HARDENED
// The hardened build's quarantine of freed large blocks: an arena's last
// PH_QUAR_SLOTS freed runs, or fewer past PH_QUAR_BYTES (the newest always
// stays), wait closed (PROT_NONE) and kept out of reuse before they go back to
// the free runs. Without it the next malloc of the size took the run just
// freed and opened it again, so a stale pointer's write landed in the new
// block unseen (an independent misuse program: write after free of a 256 KiB
// block, then malloc of 256 KiB). A run kept (its pages resident, see
// hardened_close_block) holds its memory while it waits: the byte bound.
#define PH_QUAR_SLOTS 8u
#define PH_QUAR_BYTES ((size_t)8 << 20)
typedef struct ph_quar_slot {
  struct ph_region *r;
  uint32_t          s, n;               // the run
  int               kind;               // its pages' kind for region_release (hardened_close_block)
} ph_quar_slot_t;
#endif

typedef struct ph_arena {
  ph_region_t     *regions;
  size_t           region_count, empty_regions;
  size_t           live_count, live_pages;
  size_t           peak_pages;       // the most live_pages since the last full purge pass (dirty_budget)
  uint32_t         peak_run;         // the longest run taken since then, pages (dirty_budget)
  _Atomic size_t   dirty_bytes;      // written under the lock, read without it
  _Atomic uint64_t idle_since_ms;    // when its users last fell to 0 (arena_idle; g_arena_gate)
  uint8_t          dense;            // the program touches most pages of its blocks (arena_sample_density)
  size_t           kept_pages;       // dirty pages the last pass or phase end's purge left: room in the
                                     //   budget until the next (dirty_budget)
  uint8_t          end_regret;       // the program grew past a phase end's purge and ended again within
                                     //   the delay: phase ends keep the room (arena_note_phase_end)
  size_t           end_peak;         // the live pages a phase end's purge left; PH_NO_END_PEAK once the
                                     //   program grew past them (or none since malloc_trim)
  uint64_t         end_ms;           // the last phase end (0: none since malloc_trim)
                                     // (A phase end deferred: g_end_defer_ms, arena_see_phase_end.)
  uint32_t         sample_in;        // pages to free until the next sample
  ph_region_t     *last_freed;       // the region of the last block freed (NULL: none, or destroyed):
                                     //   an aligned request looks there first (arena_take_aligned_fit)
#if HAK_HARDENED
  uint8_t          residency[PH_BINS];   // per bin of run length: the last verdict (hardened_close_block)
  ph_quar_slot_t   quar[PH_QUAR_SLOTS];  // freed runs, closed, kept out of reuse (FIFO; ph_quarantine_put)
  uint32_t         quar_next, quar_used;
  size_t           quar_bytes;
#endif
} __attribute__((aligned(64))) ph_arena_t;

extern HAK_INTERNAL ph_arena_t g_arenas[PH_ARENAS];
// Arena i's gate: its lock and its users (live threads that allocate from
// it), a line each, apart from the arena, all on one page. The atfork
// handlers take every lock and the child resets the counts; a fork
// write-protects the pages these lie on, so each is a fault in both
// processes (the arenas' own pages were two more a fork). Past the start-up
// variables (debug/hak_base.h): a process that never takes a large block
// never touches it.
typedef struct {
  pthread_mutex_t  lock;
  _Atomic uint32_t users;
} __attribute__((aligned(64))) ph_arena_gate_t;
_Static_assert(sizeof(ph_arena_gate_t) * PH_ARENAS <= 4096, "the arenas' gates on one page");
extern HAK_INTERNAL ph_arena_gate_t g_arena_gate[PH_ARENAS];
extern HAK_INTERNAL _Atomic uint32_t g_arenas_used;        // arenas [0, used) have been allocated from
extern HAK_INTERNAL __thread uint8_t t_ph_arena __attribute__((tls_model("initial-exec")));   // arena + 1; 0: none yet
// The arenas whose phase end this thread's frees put off (arena_see_phase_end),
// done at its exit (its exit hook set when the first bit is).
extern HAK_INTERNAL __thread uint32_t t_ph_deferred __attribute__((tls_model("initial-exec")));
extern HAK_INTERNAL _Atomic uint64_t g_ph_map[PH_MAP_WORDS];   // one bit per live region
// For page_heap_maybe_purge, which every small-block refill calls: which
// arenas may hold dirty runs (a bit set when a free dirties an arena whose bit
// is clear, cleared by a pass that leaves none), and when each was last
// purged. Both are read-mostly lines apart from the arenas', which their
// threads write on every large block: a refill reads two lines, not one per
// arena.
_Static_assert(PH_ARENAS <= 32, "one bit per arena in g_dirty_arenas");
extern HAK_INTERNAL _Atomic uint32_t g_dirty_arenas;
// A hint for arena_idle: the arenas whose last thread exited (set at a
// thread's exit before its count falls, cleared after a thread took the
// arena), so a look for idle arenas reads no arena's own lines, which their
// threads write. A stale bit costs a look at the arena (arena_idle decides).
extern HAK_INTERNAL _Atomic uint32_t g_idle_arenas;
extern HAK_INTERNAL _Atomic uint64_t g_last_purge_ms[PH_ARENAS];
// When another thread's free took each arena to a phase end whose purge waits
// (arena_see_phase_end; 0: none): beside g_last_purge_ms, for the same test.
extern HAK_INTERNAL _Atomic uint64_t g_end_defer_ms[PH_ARENAS];

#if HAK_DEBUG
void ph_validate_locked(const ph_arena_t *a);
#define PH_VALIDATE(a) ph_validate_locked(a)
#else
#define PH_VALIDATE(a) ((void)0)
#endif

HAK_INLINE uint32_t arena_bit(const ph_arena_t *a) { return 1u << (a - g_arenas); }

HAK_INLINE ph_arena_gate_t *arena_gate(const ph_arena_t *a) { return &g_arena_gate[a - g_arenas]; }
HAK_INLINE pthread_mutex_t *arena_mutex(const ph_arena_t *a) { return &arena_gate(a)->lock; }
HAK_INLINE void arena_lock(ph_arena_t *a) {
  pthread_mutex_lock(arena_mutex(a));
  HAK_SITE(SITE_PAGE_HEAP_LOCK);
}
HAK_INLINE void arena_unlock(ph_arena_t *a) { pthread_mutex_unlock(arena_mutex(a)); }

HAK_INLINE uint32_t arenas_used(void) { return atomic_load_explicit(&g_arenas_used, memory_order_relaxed); }

// An arena's dirty_bytes changes only under its lock: a load and a store.
// Its bit in g_dirty_arenas is set (an RMW only when clear).
HAK_INLINE void arena_add_dirty(ph_arena_t *a, size_t bytes, int add) {
  size_t d = atomic_load_explicit(&a->dirty_bytes, memory_order_relaxed);
  atomic_store_explicit(&a->dirty_bytes, add ? d + bytes : d - bytes, memory_order_relaxed);
  if (add && !(atomic_load_explicit(&g_dirty_arenas, memory_order_relaxed) & arena_bit(a)))
    atomic_fetch_or_explicit(&g_dirty_arenas, arena_bit(a), memory_order_relaxed);
}

// ---- marks -----------------------------------------------------------------

// A dirty run's mark: 1 + the tick it was freed in, modulo PH_MARK_TICKS, a
// tick an eighth of HAKMEM_LARGE_PURGE_DELAY_MS. A pass past the delay
// purged every dirty run, those freed a moment before too, so a program that
// keeps taking and freeing large blocks faulted its free memory in again
// after every pass: a producer thread's 300 KiB-1 MiB blocks, every page
// written, freed by a consumer (`prodcons --min 300K --max 1M --touch pages`,
// 300 000 blocks, ~200 MB at a time): 132 k page faults against 89 k with no
// pass at all, 1.12x tcmalloc's time. Now a pass purges the runs freed a delay ago or more
// (jemalloc's decay, in one step), the rest at a later pass.
#define PH_MARK_TICKS 255u                    // marks 1..255
#define PH_AGE_TICKS  8u                      // the purge delay, in ticks

HAK_INLINE uint64_t mark_tick_ms(void) {
  uint64_t t = g_hak_config.large_purge_delay_ms / PH_AGE_TICKS;
  return t ? t : 1;
}
HAK_INLINE int mark_now(uint64_t now) { return 1 + (int)((now / mark_tick_ms()) % PH_MARK_TICKS); }
// Ticks since a run of mark `mark` was freed, as of mark `now` (modulo
// PH_MARK_TICKS: a run older than that reads younger; purge_aged_locked).
HAK_INLINE unsigned mark_age(unsigned mark, unsigned now) { return (now + PH_MARK_TICKS - mark) % PH_MARK_TICKS; }

// Bin of a run of `pages` pages: exact below PH_EXACT_BINS, then
// 1 << PH_SUB_BITS bins per power of two.
HAK_INLINE unsigned bin_of(uint32_t pages) {
  if (pages <= PH_EXACT_BINS) return pages - 1;
  unsigned lg = 31u - (unsigned)__builtin_clz(pages);
  unsigned sub = (pages >> (lg - PH_SUB_BITS)) & ((1u << PH_SUB_BITS) - 1u);
  unsigned exact_lg = 31u - (unsigned)__builtin_clz(PH_EXACT_BINS);
  return PH_EXACT_BINS + (lg - exact_lg) * (1u << PH_SUB_BITS) + sub;
}

HAK_INLINE size_t run_bytes(uint32_t pages) { return (size_t)pages << PH_PAGE_SHIFT; }

// ---- between the two files --------------------------------------------------

// page_heap.c: a region with no live block unmapped (its arena's lock held);
// dirty free runs of r purged until it holds at most `keep` dirty bytes
// (`split`: a run may be purged in part), or those of mark age `age` or more
// (as of mark `now`; 0: all). Each returns 1 if anything was released.
void region_destroy(ph_region_t *r);
int  region_purge(ph_region_t *r, size_t keep, int split);
int  region_purge_aged(ph_region_t *r, unsigned now, unsigned age);

// page_heap_purge.c (each with a's lock held, but the last two):
// a free took a's live bytes to a phase end's level;
void arena_see_phase_end(ph_arena_t *a, uint64_t now);
// a's purge, as due (the delay, idle, past its budget; `now` 0: read when needed);
void arena_maybe_purge(ph_arena_t *a, uint64_t now);
// a deferred phase end called off (arena_note_peak);
HAK_NOINLINE void arena_end_called_off(ph_arena_t *a);
// the idle arenas other than `self` purged (a's lock released);
void purge_idle_arenas(const ph_arena_t *self);
// the calling thread exits: the phase ends its frees put off are done now.
void arenas_end_deferred_by_thread(void);

// The live pages went up (a block taken or grown; lock held): a new height
// since the last full purge pass, and a deferred phase end called off when
// they are back above a quarter of the peak.
HAK_INLINE void arena_note_peak(ph_arena_t *a) {
  if (a->live_pages > a->peak_pages) a->peak_pages = a->live_pages;
  if (HAK_UNLIKELY(atomic_load_explicit(&g_end_defer_ms[a - g_arenas], memory_order_relaxed) != 0) &&
      a->live_pages * PH_END_BACK_DEN > a->peak_pages)
    arena_end_called_off(a);
}

#endif
