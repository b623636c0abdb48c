// page_heap.c — runs of pages in 64 MiB regions (see page_heap.h).
//
// Each region keeps, per page, a head word at the first page of every run
// (length | USED) and a tail word at its last page (length), so a freed run
// finds both neighbours in O(1) and merges with the free ones. Free runs sit
// in 64 size bins (a doubly linked list each, linked through per-page arrays
// so purged pages are never touched); a bitmask says which bins hold runs.
// A free run is either dirty (its pages may be resident: freed and not yet
// purged) or clean (never used, or purged: it reads as zero, which calloc
// uses); runs merge only with free neighbours of the same kind, so the dirty
// byte count is exact. A dirty run's mark says when it was freed (mark_now),
// so a pass after the purge delay purges the runs freed that long ago and
// not those the program is about to reuse (purge_aged_locked). Dirty runs
// have bins of their own, searched first:
// reusing resident pages spares the page faults (tcmalloc's page heap prefers
// them the same way). A purge turns dirty runs clean and merges them.
//
// Arenas (jemalloc's, glibc's): the regions are divided among PH_ARENAS
// arenas, each a page heap of its own with its own lock, regions, counters
// and purge clock. A block goes back to the arena of its region. A thread
// allocates from its arena, chosen at its first large block: the one fewest
// live threads allocate from (jemalloc's choice), given back at thread exit.
// So a single thread, or threads that come and go one after another, keep
// arena 0 and its reuse, and threads at once have one each (ws8192 -t 8,
// 256 KiB-2 MiB, on 2 cores: one lock took 3.3 s, 32 k futex calls) up to two
// per CPU the process may run on (PH_ARENAS_PER_CPU; at least 4, at most
// PH_ARENAS); past that they share. A thread alone in its arena reused only
// its own freed runs, and the other threads' sat dirty in theirs: ws8192 -t 16
// -n 50000 at 256 KiB-2 MiB on 2 cores, 16 arenas, 681 MB peak RSS and 207 k
// page faults; 4 arenas, 589-601 MB, 161 k, 0.80-0.81x the time (8 arenas: 673
// MB). A region's arena is set when it is created and never changes.
// (Moving to the next arena whose trylock succeeded, glibc's way, moved
// threads about on every free that met an allocation: each arena ended with
// partly used regions of many threads.)
//
// Lock: an arena's lock guards its regions and its fields; g_ph_map is also
// read without it (page_heap_contains), and g_dirty_arenas and
// g_last_purge_ms[] (page_heap_maybe_purge's quick test, then it locks).
//
// Files: this one (regions, runs, blocks), page_heap_purge.c (when freed runs
// go back), page_heap_validate.c (debug builds' checks); what they share,
// the layout and its invariants included: page_heap_internal.h.
#include "large/page_heap.h"
#include "large/page_heap_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "config/config.h"
#include "debug/hak_base.h"
#include "debug/report.h"
#include "large/slack_canary.h"
#include "os/os.h"
#include "stats/stats.h"

// The globals (page_heap_internal.h says what each is for).
HAK_PAGE_DATA ph_arena_t g_arenas[PH_ARENAS] = {[0 ... PH_ARENAS - 1] = {.end_peak = PH_NO_END_PEAK}};
HAK_BIG_BSS ph_arena_gate_t g_arena_gate[PH_ARENAS] __attribute__((aligned(4096))) = {
    [0 ... PH_ARENAS - 1] = {.lock = PTHREAD_MUTEX_INITIALIZER}};
_Atomic uint32_t g_arenas_used = 1;
__thread uint8_t t_ph_arena __attribute__((tls_model("initial-exec")));
__thread uint32_t t_ph_deferred __attribute__((tls_model("initial-exec")));
HAK_BIG_BSS _Atomic uint64_t g_ph_map[PH_MAP_WORDS];
_Atomic uint32_t g_dirty_arenas;
_Atomic uint32_t g_idle_arenas;
_Atomic uint64_t g_last_purge_ms[PH_ARENAS];
_Atomic uint64_t g_end_defer_ms[PH_ARENAS];

// A thread that chose an arena gives it back at exit (its own key: a thread
// may allocate large blocks only, and never set up the small-block caches),
// and a thread whose frees put off phase ends does them then.
static pthread_key_t g_arena_key;
static pthread_once_t g_arena_key_once = PTHREAD_ONCE_INIT;
static void arena_key_destructor(void *value) {
  (void)value;
  if (t_ph_deferred != 0) arenas_end_deferred_by_thread();   // (0 again: a later destructor's free sets the hook again)
  if (t_ph_arena == 0) return;
  ph_arena_t *a = &g_arenas[t_ph_arena - 1];
  atomic_store_explicit(&a->idle_since_ms, os_now_ms(), memory_order_relaxed);
  atomic_fetch_or_explicit(&g_idle_arenas, arena_bit(a), memory_order_relaxed);
  atomic_fetch_sub_explicit(&arena_gate(a)->users, 1, memory_order_relaxed);
  t_ph_arena = 0;
}
// How many arenas arena_choose looks at (PH_ARENAS_PER_CPU), set with the key.
static uint32_t g_arena_limit = PH_ARENAS;
static void arena_key_create(void) {
  pthread_key_create(&g_arena_key, arena_key_destructor);
  uint32_t n = PH_ARENAS_PER_CPU * os_cpus_allowed();
  if (n < PH_ARENAS_MIN) n = PH_ARENAS_MIN;
  g_arena_limit = n < PH_ARENAS ? n : PH_ARENAS;
}

unsigned page_heap_arena_limit(void) {
  pthread_once(&g_arena_key_once, arena_key_create);
  return g_arena_limit;
}

// The arena with the fewest users becomes this thread's (the first with none).
static HAK_NOINLINE ph_arena_t *arena_choose(void) {
  pthread_once(&g_arena_key_once, arena_key_create);
  unsigned best;
  uint32_t least;
  do {   // a CAS from the count seen: two threads that start at once take two arenas
    best = 0;
    least = UINT32_MAX;
    for (unsigned i = 0; i < g_arena_limit && least != 0; i++) {
      uint32_t u = atomic_load_explicit(&g_arena_gate[i].users, memory_order_relaxed);
      if (u < least) { least = u; best = i; }
    }
  } while (!atomic_compare_exchange_weak_explicit(&g_arena_gate[best].users, &least, least + 1,
                                                  memory_order_relaxed, memory_order_relaxed));
  t_ph_arena = (uint8_t)(best + 1);
  if (atomic_load_explicit(&g_idle_arenas, memory_order_relaxed) & arena_bit(&g_arenas[best]))
    atomic_fetch_and_explicit(&g_idle_arenas, ~arena_bit(&g_arenas[best]), memory_order_relaxed);
  uint32_t used = atomic_load_explicit(&g_arenas_used, memory_order_relaxed);
  while (used <= best && !atomic_compare_exchange_weak_explicit(&g_arenas_used, &used, best + 1,
                                                                memory_order_relaxed, memory_order_relaxed)) {}
  pthread_setspecific(g_arena_key, (void *)1);   // may allocate (keys past 32): t_ph_arena is set
  return &g_arenas[best];
}

// The arena this thread allocates from, locked.
static ph_arena_t *arena_lock_for_alloc(void) {
  ph_arena_t *a = HAK_LIKELY(t_ph_arena != 0) ? &g_arenas[t_ph_arena - 1] : arena_choose();
  arena_lock(a);
  return a;
}

// The calling thread put off its first phase end: set its exit hook (after
// the arena's lock is released: pthread_setspecific may allocate).
static HAK_NOINLINE void arena_key_for_deferred(void) {
  pthread_once(&g_arena_key_once, arena_key_create);
  pthread_setspecific(g_arena_key, (void *)1);
}

// ---- bins ------------------------------------------------------------------


// Put the free run [s, s+len) in its bin and record its head and tail;
// `dirty` is 0 (clean) or the run's mark.
static void run_insert(ph_region_t *r, uint32_t s, uint32_t len, int dirty) {
  unsigned b = bin_of(len), set = dirty != 0;
  r->head[s] = len;
  r->tail[s + len - 1] = len;
  r->dirty[s] = (uint8_t)dirty;
  r->link_prev[s] = PH_NONE;
  r->link_next[s] = r->bin_head[set][b];
  if (r->bin_head[set][b] != PH_NONE) r->link_prev[r->bin_head[set][b]] = s;
  r->bin_head[set][b] = s;
  r->bin_mask[set] |= (uint64_t)1 << b;
  r->free_pages += len;
  if (dirty) arena_add_dirty(r->arena, run_bytes(len), 1);
}

// Take the free run starting at s out of its bin; returns its length and
// stores its mark (0: clean).
static uint32_t run_remove(ph_region_t *r, uint32_t s, int *dirty) {
  uint32_t len = r->head[s] & PH_LEN_MASK;
  unsigned b = bin_of(len), set = r->dirty[s] != 0;
  uint32_t prev = r->link_prev[s], next = r->link_next[s];
  if (prev != PH_NONE) r->link_next[prev] = next;
  else r->bin_head[set][b] = next;
  if (next != PH_NONE) r->link_prev[next] = prev;
  if (r->bin_head[set][b] == PH_NONE) r->bin_mask[set] &= ~((uint64_t)1 << b);
  r->free_pages -= len;
  *dirty = r->dirty[s];
  if (*dirty) arena_add_dirty(r->arena, run_bytes(len), 0);
  r->head[s] = 0;
  r->tail[s + len - 1] = 0;
  r->dirty[s] = 0;
  return len;
}

// A free run of at least n pages in one bin set, or PH_NONE: the one at the
// lowest address that fits in n's own bin, else the one at the lowest address
// in the smallest larger bin holding runs (jemalloc's address-ordered fit: the
// blocks stay packed low in the region, so fewer of its pages are ever
// touched). The most recently freed run, as before, scattered them: ws8192
// -t 2 at 256 KiB-2 MiB took 0.28 s and 73 k page faults against 0.21 s and
// 52 k. A bin holds few runs of these sizes.
static uint32_t bins_find(ph_region_t *r, unsigned set, uint32_t n) {
  unsigned b = bin_of(n);
  uint32_t best = PH_NONE;
  for (uint32_t s = r->bin_head[set][b]; s != PH_NONE; s = r->link_next[s])
    if ((r->head[s] & PH_LEN_MASK) >= n && s < best) best = s;
  if (best != PH_NONE) return best;
  uint64_t larger = b + 1 < PH_BINS ? r->bin_mask[set] & (~(uint64_t)0 << (b + 1)) : 0;
  if (!larger) return PH_NONE;
  for (uint32_t s = r->bin_head[set][__builtin_ctzll(larger)]; s != PH_NONE; s = r->link_next[s])
    if (s < best) best = s;
  return best;
}

// A free run of at least n pages, resident pages first, or PH_NONE.
static uint32_t region_find(ph_region_t *r, uint32_t n) {
  uint32_t s = bins_find(r, PH_DIRTY, n);
  return s != PH_NONE ? s : bins_find(r, PH_CLEAN, n);
}

// Mark [s, s+n) used out of the free run at s; the rest stays free. Returns 1
// if the pages used may hold old data.
static int region_take(ph_region_t *r, uint32_t s, uint32_t n) {
  int dirty;
  uint32_t len = run_remove(r, s, &dirty);
  if (len > n) run_insert(r, s + n, len - n, dirty);
  r->head[s] = n | PH_USED;
  r->tail[s + n - 1] = n;
  return dirty;
}

// Neighbouring free runs, dirty and clean, that together hold n pages when
// no single run does: the first page of the window whose runs add up to the
// fewest pages (best fit, as the bins), or PH_NONE. (Runs merge only with
// their own kind; before this a request that fit no run purged every dirty
// run to merge them, a madvise per run under the lock: 7.6 k of them in
// ws8192 -t 8 at 256 KiB-2 MiB.)
static uint32_t region_find_window(const ph_region_t *r, uint32_t n) {
  uint32_t best = PH_NONE, best_pages = UINT32_MAX;
  uint32_t first = PH_NONE, pages = 0;     // the window: free runs from first, `pages` in all
  for (uint32_t s = PH_HEADER_PAGES; s < PH_PAGES; s += r->head[s] & PH_LEN_MASK) {
    if (r->head[s] & PH_USED) { first = PH_NONE; pages = 0; continue; }
    if (first == PH_NONE) first = s;
    pages += r->head[s] & PH_LEN_MASK;
    // Drop runs from the front while the rest still holds n.
    while (pages - (r->head[first] & PH_LEN_MASK) >= n) {
      pages -= r->head[first] & PH_LEN_MASK;
      first += r->head[first] & PH_LEN_MASK;
    }
    if (pages >= n && pages < best_pages) { best = first; best_pages = pages; }
  }
  return best;
}

// Pages [first, first + count) of a block that may hold old data.
typedef struct ph_span { uint32_t first, count; } ph_span_t;
#define PH_MAX_SPANS 8u

// Mark [s, s+n) used out of the window of free runs found at s; the rest of
// its last run stays free. The dirty runs taken go to spans[] (pages from s);
// returns how many there were: above PH_MAX_SPANS only the count is exact.
static uint32_t region_take_window(ph_region_t *r, uint32_t s, uint32_t n, ph_span_t *spans) {
  uint32_t got = 0, dirty_runs = 0;
  while (got < n) {
    int dirty;
    uint32_t len = run_remove(r, s + got, &dirty);
    uint32_t use = len < n - got ? len : n - got;
    if (len > use) run_insert(r, s + got + use, len - use, dirty);
    if (dirty && dirty_runs++ < PH_MAX_SPANS) spans[dirty_runs - 1] = (ph_span_t){got, use};
    got += use;
  }
  r->head[s] = n | PH_USED;
  r->tail[s + n - 1] = n;
  return dirty_runs;
}

// Return [s, s+n) to the free runs as clean (dirty 0) or dirty with mark
// `dirty`, merged with free neighbours of the same kind. A merged dirty run
// takes the mark released (the newest: every release of a dirty run but a
// purge's split is of one just freed, and a split's low part has no dirty
// neighbour).
static void region_release(ph_region_t *r, uint32_t s, uint32_t n, int dirty) {
  int d;
  if (s > PH_HEADER_PAGES && r->tail[s - 1] != 0) {
    uint32_t ls = s - r->tail[s - 1];
    if (!(r->head[ls] & PH_USED) && (r->dirty[ls] != 0) == (dirty != 0)) {
      n += run_remove(r, ls, &d);
      s = ls;
    }
  }
  uint32_t rs = s + n;
  if (rs < PH_PAGES && r->head[rs] != 0 && !(r->head[rs] & PH_USED) && (r->dirty[rs] != 0) == (dirty != 0))
    n += run_remove(r, rs, &d);
  run_insert(r, s, n, dirty);
}

// Runs whose purge the kernel refused (locked pages keep their data: they stay
// dirty), held out of their bins until the pass ends so that the pass goes on
// with the others (one freed block still mlock'd stopped every purge of its
// region, malloc_trim's included: a helper's probe) and does not take them
// again; at most PH_REFUSED_MAX a pass.
#define PH_REFUSED_MAX 8u
typedef struct ph_refused {
  uint32_t n;
  struct { uint32_t s, len; int dirty; } run[PH_REFUSED_MAX];
} ph_refused_t;

// Did the kernel purge [s, s + len), taken out of its bin with mark `dirty`?
// If not, the run is held in *rf (back in its bin at refused_release).
static int run_purge_or_hold(ph_region_t *r, uint32_t s, uint32_t len, int dirty, ph_refused_t *rf) {
  if (os_purge((char *)r + run_bytes(s), run_bytes(len))) return 1;
  rf->run[rf->n].s = s;
  rf->run[rf->n].len = len;
  rf->run[rf->n].dirty = dirty;
  rf->n++;
  return 0;
}

static void refused_release(ph_region_t *r, const ph_refused_t *rf) {
  for (uint32_t i = 0; i < rf->n; i++) region_release(r, rf->run[i].s, rf->run[i].len, rf->run[i].dirty);
}

// Purge dirty runs of r, the largest first (the most bytes per call), until
// its arena holds at most `keep` dirty bytes: madvise, then clean and merged
// (lock held). With `split`, a run longer than the excess gives only its top
// pages; its low ones, which first fit takes first, stay dirty. (Not for the
// budget: purged to the page, ws8192 -w 64 at 256 KiB-2 MiB -t 2 passed it
// again a few frees later, 184 k page faults against 32 k.)
int region_purge(ph_region_t *r, size_t keep, int split) {
  int released = 0;
  ph_refused_t rf = {0};
  for (uint64_t mask = r->bin_mask[PH_DIRTY]; mask != 0 && rf.n < PH_REFUSED_MAX; mask = r->bin_mask[PH_DIRTY]) {
    size_t dirty_bytes = atomic_load_explicit(&r->arena->dirty_bytes, memory_order_relaxed);
    if (dirty_bytes <= keep) break;
    uint32_t s = r->bin_head[PH_DIRTY][63 - __builtin_clzll(mask)];
    int dirty;
    uint32_t len = run_remove(r, s, &dirty), low = 0;
    if (split) {
      uint32_t excess = (uint32_t)((dirty_bytes - keep + PH_PAGE_SIZE - 1) >> PH_PAGE_SHIFT);
      if (len > excess) low = len - excess;
      if (low != 0) region_release(r, s, low, dirty);
    }
    if (!run_purge_or_hold(r, s + low, len - low, dirty, &rf)) continue;
    region_release(r, s + low, len - low, 0);
    released = 1;
  }
  refused_release(r, &rf);
  return released;
}

// Purge the dirty runs of r freed `age` ticks or more before mark `now`
// (lock held). Returns 1 if any was.
int region_purge_aged(ph_region_t *r, unsigned now, unsigned age) {
  int released = 0;
  ph_refused_t rf = {0};
  for (uint64_t mask = r->bin_mask[PH_DIRTY]; mask != 0 && rf.n < PH_REFUSED_MAX; mask &= mask - 1) {
    for (uint32_t s = r->bin_head[PH_DIRTY][__builtin_ctzll(mask)], next; s != PH_NONE && rf.n < PH_REFUSED_MAX;
         s = next) {
      next = r->link_next[s];            // the purged run leaves this list; clean runs merge, not dirty ones
      if (mark_age(r->dirty[s], now) < age) continue;
      int dirty;
      uint32_t len = run_remove(r, s, &dirty);
      if (!run_purge_or_hold(r, s, len, dirty, &rf)) continue;
      region_release(r, s, len, 0);
      released = 1;
    }
  }
  refused_release(r, &rf);
  return released;
}

// ---- regions ---------------------------------------------------------------

// The bitmap word and bit of the region holding address a (a < 1 << PH_ADDR_BITS).
static size_t map_word(uintptr_t a) { return (a >> PH_REGION_SHIFT) / PH_MAP_WORD_BITS; }
static uint64_t map_mask(uintptr_t a) { return (uint64_t)1 << ((a >> PH_REGION_SHIFT) % PH_MAP_WORD_BITS); }

static void map_mark(ph_region_t *r, int on) {
  size_t w = map_word((uintptr_t)r);    // region_create refused addresses beyond the map
  uint64_t mask = map_mask((uintptr_t)r);
  // Release, so a thread that sees the bit set (acquire in page_heap_contains)
  // also sees the region header written before it was announced.
  if (on) atomic_fetch_or_explicit(&g_ph_map[w], mask, memory_order_release);
  else atomic_fetch_and_explicit(&g_ph_map[w], ~mask, memory_order_release);
}

// A new region, all of it one CLEAN free run (fresh pages read as zero).
// None where the system page is larger than the heap's: madvise would round a
// run's purge up to a whole system page and zero a live neighbour (the
// callers then map the block directly, huge.c).
static ph_region_t *region_create(void) {
  if (os_page_size() > PH_PAGE_SIZE) return NULL;
  ph_region_t *r = os_map_aligned(PH_REGION_SIZE, PH_REGION_SIZE);
  if (r == NULL) return NULL;
  if ((uintptr_t)r >> PH_ADDR_BITS) { os_unmap(r, PH_REGION_SIZE); return NULL; }
  for (unsigned b = 0; b < PH_BINS; b++) r->bin_head[PH_CLEAN][b] = r->bin_head[PH_DIRTY][b] = PH_NONE;
#if HAK_HARDENED
  // Every page of a free run is PROT_NONE, as the page after the header
  // (PH_HEADER_GUARD_PAGES); a live run is open but for its last page (the
  // guard): an allocation then opens its pages with one call.
  // Refused: no region (a free run must not be open; the caller maps the
  // block directly, huge.c).
  if (!os_protect((char *)r + run_bytes(PH_META_PAGES), PH_REGION_SIZE - run_bytes(PH_META_PAGES), 0)) {
    os_unmap(r, PH_REGION_SIZE);
    return NULL;
  }
#endif
  return r;
}

// Link a fresh region into arena a (its lock held).
static void region_publish(ph_arena_t *a, ph_region_t *r) {
  r->arena = a;
  run_insert(r, PH_HEADER_PAGES, PH_USABLE_PAGES, 0);   // fresh pages: none dirty
  r->prev = NULL;
  r->next = a->regions;
  if (a->regions) a->regions->prev = r;
  a->regions = r;
  a->region_count++;
  a->empty_regions++;
  map_mark(r, 1);
}

void region_destroy(ph_region_t *r) {
  ph_arena_t *a = r->arena;
  int dirty;
  for (uint32_t s = PH_HEADER_PAGES; s < PH_PAGES;) s += run_remove(r, s, &dirty);  // keeps the dirty count exact
  if (r->prev) r->prev->next = r->next;
  else a->regions = r->next;
  if (r->next) r->next->prev = r->prev;
  if (a->last_freed == r) a->last_freed = NULL;
  a->region_count--;
  a->empty_regions--;
  map_mark(r, 0);
  os_unmap(r, PH_REGION_SIZE);
}

static ph_region_t *region_of(const void *p) {
  return (ph_region_t *)((uintptr_t)p & ~(uintptr_t)(PH_REGION_SIZE - 1));
}

int page_heap_contains(const void *p) {
  uintptr_t a = (uintptr_t)p;
  if ((a >> PH_ADDR_BITS) != 0) return 0;
  // Acquire, pairing with map_mark's release: a set bit means an initialised region.
  return (atomic_load_explicit(&g_ph_map[map_word(a)], memory_order_acquire) & map_mask(a)) != 0;
}

#if HAK_HARDENED
// Is the used run at s one kept out of reuse (see ph_region_t)?
static int ph_kept_out(const ph_region_t *r, uint32_t s) { return (r->kept_out[s / 64] >> (s % 64)) & 1u; }
// The used run at s: the bytes before its block, and past its request.
static uint32_t ph_slack(const ph_region_t *r, uint32_t s) { return r->slack[s] >> 16; }
static uint32_t ph_tail(const ph_region_t *r, uint32_t s) { return r->slack[s] & 0xffffu; }
#endif

// Page index of the run of a block start at p in r, or PH_NONE (lock held).
static uint32_t block_page(ph_region_t *r, const void *p) {
  uintptr_t off = (uintptr_t)p - (uintptr_t)r;
  uint32_t s = (uint32_t)(off >> PH_PAGE_SHIFT);
  if (s < PH_HEADER_PAGES || !(r->head[s] & PH_USED)) return PH_NONE;
#if HAK_HARDENED
  if (ph_kept_out(r, s)) return PH_NONE;   // freed already
  if ((off & (PH_PAGE_SIZE - 1)) != ph_slack(r, s)) return PH_NONE;
#else
  if (off & (PH_PAGE_SIZE - 1)) return PH_NONE;
#endif
  return s;
}

// ---- blocks ----------------------------------------------------------------

#if HAK_HARDENED
// How a freed block's pages are made inaccessible. Either way costs one call,
// and on a kernel it is the page-table entries it rewrites that cost (each
// resident page's entry, now and again when the run is opened for its next
// block), or the page faults a block pays for pages it finds missing.
//   kept:      mprotect(PROT_NONE); the run stays dirty, its pages resident,
//              so the next block that touches them pays no fault. Right when
//              the program touches its blocks' pages (large.c's rows).
//   discarded: a fresh PROT_NONE mapping in its place; the run is clean.
//              Right when the program touches few of a block's pages: a kept
//              run's resident pages add up over blocks of other sizes and
//              offsets until nearly every entry is rewritten twice per block
//              (ws8192's large rows touch two pages of each block; measured:
//              ~45 us per free+malloc kept against ~20 us discarded).
// Which one: the block's resident share, read with mincore (a read of the page
// table, no entry written) over its first PH_RESIDENT_SAMPLE pages; sparse
// below 1 in PH_SPARSE_SHARE. (A fault costs about 40 entry rewrites here,
// so a run whose blocks each touch more than 1/20 of it is cheaper kept even
// when all its pages end up resident.)
#define PH_RESIDENT_SAMPLE 64u
#define PH_SPARSE_SHARE    16u
// The verdict is read for one block in PH_VERDICT_REUSE of each bin of run
// lengths in an arena, and the others of the bin take the last one read: a
// program touches its blocks of one size alike (ws8192's large rows: two
// pages each; large.c's: every page), and the mincore call was a third of a
// hardened cycle's system calls. `ws8192 -w 256 --min 32K --max 1M -n 50000`
// without any read took 0.85x the time, and `large -w 32 --min 64K --max 8M`
// 6.8x (every run discarded, every page faulted in again): the reads stay, one
// in eight.
#define PH_VERDICT_REUSE   8u
#define PH_VERDICT_SPARSE  0x80u             // residency[]: sparse; low bits: blocks left to reuse it
_Static_assert(PH_VERDICT_REUSE <= 0x7fu, "the count fits below the sparse bit");

// Close the run [p, p + n pages) (its last page, the guard, is PROT_NONE
// already), discarding first or keeping first; returns its pages' kind for
// region_release: kept_kind when kept (mprotect), PH_CLEAN when discarded, or
// -1 when the kernel refused both (ENOMEM at vm.max_map_count: either one
// splits the region's mapping; a refused call may have closed part of it).
static int hardened_close_pages(void *p, uint32_t n, int discard_first, int kept_kind) {
  size_t bytes = run_bytes(n - 1u);
  if (discard_first && os_purge_none(p, bytes)) return PH_CLEAN;
  if (os_protect(p, bytes, 0)) return kept_kind;   // a use after free faults until the run is reused
  if (!discard_first && os_purge_none(p, bytes)) return PH_CLEAN;
  return -1;
}

// Close the freed block [p, p + n pages): discarded when sparse (see above),
// else kept; -1 when the kernel refused (hardened_keep_out). Lock held: once
// released the run may be handed out (and opened) again.
static int hardened_close_block(ph_arena_t *a, void *p, uint32_t n) {
  uint8_t *v = &a->residency[bin_of(n)];
  int sparse;
  if ((*v & ~PH_VERDICT_SPARSE) != 0) {   // a verdict read for this bin lately
    sparse = (*v & PH_VERDICT_SPARSE) != 0;
    (*v)--;
  } else {
    size_t pages = n - 1u, sample = pages < PH_RESIDENT_SAMPLE ? pages : PH_RESIDENT_SAMPLE;
    size_t resident = os_resident_pages(p, sample);
    sparse = resident != SIZE_MAX && resident * PH_SPARSE_SHARE < sample;
    if (resident != SIZE_MAX) *v = (uint8_t)((sparse ? PH_VERDICT_SPARSE : 0u) | (PH_VERDICT_REUSE - 1u));
  }
  return hardened_close_pages(p, n, sparse, PH_DIRTY);
}

// The run at s could be neither closed nor discarded: its pages may be open.
// Released, the next block would take it open and a stale pointer into it
// would go unseen; unmapped, the hole could be taken by a mapping of someone
// else's that the run's next allocation would open and hand out (and the
// munmap, splitting the mapping too, would be refused as well). So it is kept
// out of reuse for good: a used run nobody owns (counted live), marked in
// kept_out, its memory given back (madvise changes no protection, so no map
// entry is needed). Costs its address space; its region is never unmapped.
// Lock held.
static void hardened_keep_out(ph_region_t *r, uint32_t s, uint32_t n) {
  os_purge((char *)r + run_bytes(s), run_bytes(n - 1u));
  r->kept_out[s / 64] |= (uint64_t)1 << (s % 64);
}

static void run_free_locked(ph_region_t *r, uint32_t s, uint32_t n, int dirty, uint64_t now);

// The oldest run of arena a's quarantine (not empty) leaves it for the free
// runs. Lock held.
static void ph_quarantine_evict_oldest(ph_arena_t *a) {
  ph_quar_slot_t *o = &a->quar[(a->quar_next + PH_QUAR_SLOTS - a->quar_used) % PH_QUAR_SLOTS];
  a->quar_used--;
  a->quar_bytes -= run_bytes(o->n);
  o->r->kept_out[o->s / 64] &= ~((uint64_t)1 << (o->s % 64));
  run_free_locked(o->r, o->s, o->n, o->kind, 0);
}

// Freed run [s, s+n) of r, closed (its pages' kind `kind`), waits in arena a's
// quarantine, marked kept out (block_page, page_heap_owns and the fault hook
// see a freed block); the oldest leave for the free runs while the ring is
// full or past its bytes. Lock held.
static void ph_quarantine_put(ph_arena_t *a, ph_region_t *r, uint32_t s, uint32_t n, int kind) {
  r->kept_out[s / 64] |= (uint64_t)1 << (s % 64);
  if (a->quar_used == PH_QUAR_SLOTS) ph_quarantine_evict_oldest(a);   // its slot is the next one
  a->quar[a->quar_next] = (ph_quar_slot_t){r, s, n, kind};
  a->quar_next = (a->quar_next + 1) % PH_QUAR_SLOTS;
  a->quar_used++;
  a->quar_bytes += run_bytes(n);
  while (a->quar_bytes > PH_QUAR_BYTES && a->quar_used > 1) ph_quarantine_evict_oldest(a);   // the newest stays
}

// The kernel refused to open the run [s, s+n) just taken for a block: close
// it again (the refused call may have opened part of it) and give it back;
// the allocation fails (the caller maps the block directly, or ENOMEM).
static HAK_NOINLINE void *hardened_open_refused(ph_region_t *r, uint32_t s, uint32_t n, int dirty) {
  arena_lock(r->arena);
  int kind = hardened_close_pages((char *)r + run_bytes(s), n, 0, dirty);   // untouched: kept as it was
  if (kind < 0) hardened_keep_out(r, s, n);
  else run_free_locked(r, s, n, kind, 0);
  PH_VALIDATE(r->arena);
  arena_unlock(r->arena);
  return NULL;
}
#endif

// The run for a block of `size` bytes: its pages rounded up to a size class,
// the lower bound of a bin (exact up to PH_EXACT_BINS pages, then four per
// power of two, as jemalloc's large classes), so a freed block's run serves
// the next block of its class whole. Each block's first and last pages are
// then the ones its predecessor there touched: a program that touches few
// pages of its blocks faults in fewer new ones, and runs split less. `ws8192
// -w 64 --min 256K --max 2M`: peak RSS at 16 threads 380 -> 305 MB, at 1
// thread (-n 50000) 56 -> 44 MB, and 0.77-0.93x the time at 1-4 threads.
// Costs up to a quarter of a block's size in address space, not in memory:
// the pages past the request are never touched unless the program does. The
// hardened build keeps whole pages: its sized delete is checked to the page
// (hardened.c), and its frees cost system calls that placement cannot save.
static uint32_t run_pages_for(size_t size) {
  uint32_t n = (uint32_t)((size + PH_PAGE_SIZE - 1) >> PH_PAGE_SHIFT);
  if (HAK_HARDENED || n <= PH_EXACT_BINS) return n;
  uint32_t step = 1u << (31u - (unsigned)__builtin_clz(n - 1u) - PH_SUB_BITS);
  return (n + step - 1u) & ~(step - 1u);
}

// Zero what calloc asked for, the first `bytes` at p, where it lies on dirty
// pages (spans as region_take_window's; past PH_MAX_SPANS all of it). Not the
// run's rounding past the request: up to a quarter more to clear (a calloc of
// 200 000 bytes in a run of 56 pages, written by the program and freed in a
// loop, took 1.17x the time).
static void zero_dirty_spans(char *p, size_t bytes, const ph_span_t *spans, uint32_t count) {
  if (count > PH_MAX_SPANS) { memset(p, 0, bytes); return; }
  for (uint32_t i = 0; i < count; i++) {
    size_t from = run_bytes(spans[i].first), to = run_bytes(spans[i].first + spans[i].count);
    if (from >= bytes) continue;
    memset(p + from, 0, (to < bytes ? to : bytes) - from);
  }
}

// How arena_take looks for n free pages in a region: its dirty runs, its
// clean runs, either (dirty first), or a window of neighbouring runs.
enum { PH_PASS_DIRTY, PH_PASS_CLEAN, PH_PASS_EACH, PH_PASS_WINDOW, PH_PASS_END };
static uint32_t region_find_by(ph_region_t *r, unsigned pass, uint32_t n) {
  switch (pass) {
  case PH_PASS_DIRTY: return bins_find(r, PH_DIRTY, n);
  case PH_PASS_CLEAN: return bins_find(r, PH_CLEAN, n);
  case PH_PASS_EACH:  return region_find(r, n);
  default:            return region_find_window(r, n);
  }
}

// A block of n pages just taken at s of r: a's counts (lock held).
static ph_region_t *arena_note_taken(ph_arena_t *a, ph_region_t *r, uint32_t s, uint32_t n, uint32_t *at) {
  a->live_count++;
  a->live_pages += n;
  arena_note_peak(a);
  if (n > a->peak_run) a->peak_run = n;
  *at = s;
  return r;
}

// The first fit for n pages in a's regions, a single run or else a window of
// neighbouring runs, taken (a dense arena, arena_sample_density: a dirty run
// of any region before a clean one; a sparse one: the first region with a
// run, its dirty runs first): its region and first page (*at), and the dirty
// runs it took (spans, count returned). NULL when nothing fits. Lock held.
static ph_region_t *arena_take(ph_arena_t *a, uint32_t n, uint32_t *at, ph_span_t *spans, uint32_t *dirty_runs) {
  static const uint8_t dense[] = {PH_PASS_DIRTY, PH_PASS_CLEAN, PH_PASS_WINDOW, PH_PASS_END};
  static const uint8_t sparse[] = {PH_PASS_EACH, PH_PASS_WINDOW, PH_PASS_END};
  for (const uint8_t *pass = a->dense ? dense : sparse; *pass != PH_PASS_END; pass++) {
    int window = *pass == PH_PASS_WINDOW;
    for (ph_region_t *r = a->regions; r != NULL; r = r->next) {
      if (r->free_pages < n) continue;
      uint32_t s = region_find_by(r, *pass, n);
      if (s == PH_NONE) continue;
      if (r->free_pages == PH_USABLE_PAGES) a->empty_regions--;
      if (window) {
        *dirty_runs = region_take_window(r, s, n, spans);
      } else {
        *dirty_runs = region_take(r, s, n) ? 1u : 0u;
        spans[0] = (ph_span_t){0, n};
      }
      return arena_note_taken(a, r, s, n, at);
    }
  }
  return NULL;
}

size_t page_heap_block_size(size_t size) {
  if (size == 0 || size > PAGE_HEAP_MAX) return 0;
#if HAK_HARDENED
  return size;                         // the request: the bytes past it to the guard are a canary
#else
  return run_bytes(run_pages_for(size));
#endif
}

#if HAK_HARDENED
// The hardened build ends a block at its guard page: the block starts
// `slack` bytes into its run's first page (the page's rest past the request,
// rounded to 16), so the first byte past the request (to 16) is the guard's.
// Page aligned, a block of 300 000 bytes left 3 104 bytes before the guard
// that an overflow wrote unseen (an independent misuse probe; scudo places
// its large blocks so). Its run still starts at a page. An aligned block
// starts where its alignment allows, the bytes between its request and the
// guard then up to the alignment less one (the tail canary's); past a page,
// its run starts on the alignment (region_take_aligned) and the block with it.
static uint32_t ph_block_slack(size_t size, uint32_t body_pages, size_t align) {
  size_t a = align > 16u ? align : 16u;
  return (uint32_t)((run_bytes(body_pages) - size) & ~(a - 1u));
}
_Static_assert(PH_PAGE_SIZE <= 0x10000u, "a run's slack and tail each fit 16 bits of ph_region_t.slack");

#endif

// The n pages of [s, s + taken), just taken, that start at the first page
// aligned to `align` bytes: the pages before and after them are free again
// (dirty if any run taken was: which of them were is not kept). Returns
// their first page. Lock held.
static uint32_t region_take_aligned(ph_arena_t *a, ph_region_t *r, uint32_t s, uint32_t taken, uint32_t n,
                                    size_t align, uint32_t dirty_runs) {
  uintptr_t at = (uintptr_t)r + run_bytes(s);
  uint32_t lead = (uint32_t)((((at + align - 1u) & ~(uintptr_t)(align - 1u)) - at) >> PH_PAGE_SHIFT);
  uint32_t tail = taken - lead - n;
  int mark = dirty_runs != 0 ? mark_now(os_now_ms()) : 0;
  r->head[s] = 0;
  r->tail[s + taken - 1u] = 0;
  r->head[s + lead] = n | PH_USED;
  r->tail[s + lead + n - 1u] = n;
  if (lead != 0) region_release(r, s, lead, mark);
  if (tail != 0) region_release(r, s + lead + n, tail, mark);
  a->live_pages -= taken - n;
  return s + lead;
}

// A free run that holds n pages starting on `align` bytes (above a page),
// taken as they are (the run's pages before and after them stay free, of its
// kind): a's regions, their dirty runs first, each region's bins from n's up,
// at most PH_ALIGNED_BIN_LOOKS runs a bin and PH_ALIGNED_LOOKS in all (a bin of
// runs one page too short for the alignment can hold thousands); NULL when
// none of those fits. Taking
// n + align/4 KiB - 1 pages of any run and freeing its ends (arena_take,
// region_take_aligned) left runs too short for the next aligned request
// around every block, and a freed block's page, dirty, did not merge with
// its purged neighbours: 20 000 live posix_memalign(65536, 1000) blocks
// churned 200 000 times went to the window pass, a walk of every run of
// every region a request (5.2 s against glibc's 0.33; a helper's probe).
// The freed block's own run is found here at once, its region looked at
// first (a->last_freed: with 1 MiB alignment 10 000 live blocks take 157
// regions). Lock held.
#define PH_ALIGNED_BIN_LOOKS 8u
#define PH_ALIGNED_LOOKS 256u

// In region r: the first page of a run's n pages starting on `step` pages
// (aligned by address), taken; PH_NONE when none of the runs looked at fits
// (*looks counts them, up to PH_ALIGNED_LOOKS). *dirty: the run's kind.
static uint32_t region_take_aligned_fit(ph_region_t *r, uint32_t n, uint32_t step, uint32_t *looks, int *dirty) {
  if (r->free_pages < n) return PH_NONE;
  uint32_t base_page = (uint32_t)(((uintptr_t)r >> PH_PAGE_SHIFT) & (step - 1u));   // r's first page's offset
  for (int set = PH_DIRTY; set >= PH_CLEAN; set--) {
    for (uint64_t bins = r->bin_mask[set] & (~(uint64_t)0 << bin_of(n)); bins != 0; bins &= bins - 1) {
      uint32_t in_bin = 0;
      for (uint32_t s = r->bin_head[set][__builtin_ctzll(bins)]; s != PH_NONE && in_bin++ < PH_ALIGNED_BIN_LOOKS;
           s = r->link_next[s]) {
        if ((*looks)++ == PH_ALIGNED_LOOKS) return PH_NONE;
        uint32_t len = r->head[s] & PH_LEN_MASK;
        uint32_t start = s + ((step - (base_page + s) % step) % step);   // its first aligned page
        if (start + n > s + len) continue;
        run_remove(r, s, dirty);
        if (start > s) run_insert(r, s, start - s, *dirty);
        if (s + len > start + n) run_insert(r, start + n, s + len - start - n, *dirty);
        r->head[start] = n | PH_USED;
        r->tail[start + n - 1] = n;
        return start;
      }
    }
  }
  return PH_NONE;
}

static ph_region_t *arena_take_aligned_fit(ph_arena_t *a, uint32_t n, size_t align, uint32_t *at, ph_span_t *spans,
                                           uint32_t *dirty_runs) {
  uint32_t looks = 0, step = (uint32_t)(align >> PH_PAGE_SHIFT), s = PH_NONE;
  int dirty = 0;
  ph_region_t *r = a->last_freed;
  int was_empty = r != NULL && r->free_pages == PH_USABLE_PAGES;
  if (r != NULL) s = region_take_aligned_fit(r, n, step, &looks, &dirty);
  for (ph_region_t *q = a->regions; s == PH_NONE && q != NULL && looks < PH_ALIGNED_LOOKS; q = q->next) {
    if (q == a->last_freed) continue;
    r = q;
    was_empty = r->free_pages == PH_USABLE_PAGES;
    s = region_take_aligned_fit(r, n, step, &looks, &dirty);
  }
  if (s == PH_NONE) return NULL;
  if (was_empty) a->empty_regions--;
  *dirty_runs = dirty ? 1u : 0u;
  spans[0] = (ph_span_t){0, n};
  return arena_note_taken(a, r, s, n, at);
}

void *page_heap_alloc_aligned(size_t size, size_t align, int zero, size_t *fresh) {
  if (size == 0 || size > PAGE_HEAP_MAX) return NULL;
  uint32_t n = run_pages_for(size) + (HAK_HARDENED ? 1u : 0u);   // hardened: a guard page at the end
  uint32_t extra = align > PH_PAGE_SIZE ? (uint32_t)(align >> PH_PAGE_SHIFT) - 1u : 0u;
  if (align > PAGE_HEAP_ALIGN_MAX || run_bytes(n + extra) > PAGE_HEAP_MAX) return NULL;
  ph_arena_t *a = arena_lock_for_alloc();
  for (;;) {
    uint32_t s, dirty_runs;
    ph_span_t spans[PH_MAX_SPANS];
    ph_region_t *r = extra != 0 ? arena_take_aligned_fit(a, n, align, &s, spans, &dirty_runs) : NULL;
    if (r == NULL) r = arena_take(a, n + extra, &s, spans, &dirty_runs);
    else extra = 0;                      // (taken as it is)
    if (r != NULL && extra != 0) {
      s = region_take_aligned(a, r, s, n + extra, n, align, dirty_runs);
      if (dirty_runs != 0) dirty_runs = PH_MAX_SPANS + 1u;   // (the spans counted from the old start)
    }
    if (r != NULL) {
      if (fresh != NULL) *fresh = dirty_runs == 0 ? run_bytes(n) : 0;
#if HAK_HARDENED
      uint32_t slack = ph_block_slack(size, n - 1, align);
      uint32_t tail = (uint32_t)(run_bytes(n - 1) - slack - size);
      r->slack[s] = slack << 16 | tail;
#endif
      arena_maybe_purge(a, 0);
      PH_VALIDATE(a);
      arena_unlock(a);
      purge_idle_arenas(a);
      char *p = (char *)r + run_bytes(s);
#if HAK_HARDENED
      // Ours alone now: open all but the last page, the guard (free runs are
      // PROT_NONE, see region_create).
      if (HAK_UNLIKELY(!os_protect(p, run_bytes(n - 1), 1))) return hardened_open_refused(r, s, n, dirty_runs != 0);
      if (zero && dirty_runs) zero_dirty_spans(p, slack + size, spans, dirty_runs);
      slack_canary_fill((unsigned char *)p + slack, slack);
      tail_canary_fill((unsigned char *)p + slack + size, tail);
      return p + slack;
#else
      if (zero && dirty_runs) zero_dirty_spans(p, size, spans, dirty_runs);
#endif
      return p;
    }
    arena_unlock(a);
    ph_region_t *fresh = region_create();   // mapped without the lock held
    if (fresh == NULL) return NULL;
    arena_lock(a);
    region_publish(a, fresh);
    PH_VALIDATE(a);
  }
}

void *page_heap_alloc(size_t size, int zero, size_t *fresh) { return page_heap_alloc_aligned(size, 0, zero, fresh); }

// Does the program touch most pages of its large blocks? A free after each
// PH_DENSITY_EVERY freed pages (256 MiB; and the first after a full pass) asks
// the kernel how many of the first PH_DENSITY_PAGES pages of the freed block
// are resident (one mincore call, no page touched); the answer stands until
// the next sample. (One free in 32: 6.3 k calls in `ws8192 -w 64 --min 256K
// --max 2M -t 2`, 1.10x the time.)
// A dense arena's freed runs are worth what they hold: its blocks take dirty
// runs of any region before clean ones (arena_take), and an emptied region is
// left to the budget (run_free_locked). A sparse arena's freed runs hold a
// page or two each (ws8192 touches a block's first and last byte): taking
// them from every region kept every region in use (ws8192 -w 64 --min 256K
// --max 2M -t 16: peak RSS 298 -> 351 MB), and an emptied region is purged
// at once. Lock held.
#define PH_DENSITY_EVERY (1u << 16)
#define PH_DENSITY_PAGES 64u
static void arena_sample_density(ph_arena_t *a, const void *p, uint32_t n) {
  if (a->sample_in > n) {
    a->sample_in -= n;
    return;
  }
  a->sample_in = PH_DENSITY_EVERY;
  size_t pages = n < PH_DENSITY_PAGES ? n : PH_DENSITY_PAGES;
  size_t resident = os_resident_pages(p, pages);
  if (resident != SIZE_MAX) a->dense = resident * 2u >= pages;
}

// The used run of n pages at s goes back to its region's free runs (dirty:
// its pages may be resident). An empty region beyond the kept one is purged
// when the arena is sparse (arena_sample_density) and stays mapped until the
// next purge pass unmaps it (purge_locked); a dense arena's is left to the
// budget (dirty_budget: with every emptied region purged, `large -w 4 --min
// 1M --max 32M` faulted its blocks in again and again, 0.95 M page faults
// with the budget off). For blocks of 5-25 MiB, two or three to a region,
// regions emptied and were mapped again every few calls (`large -w 20 --min
// 5M --max 25M --uniform --touch ends`: 0.42 s against 0.27 s with the purge,
// glibc 0.16 s), and when only their ends are touched the purge keeps the
// resident pages few (8 MB peak RSS; kept: 86 MB). Lock held.
// `now`: os_now_ms, or 0 to read it here when the run is dirty.
static void run_free_locked(ph_region_t *r, uint32_t s, uint32_t n, int dirty, uint64_t now) {
  r->head[s] = 0;
  r->tail[s + n - 1] = 0;
  region_release(r, s, n, dirty ? mark_now(now != 0 ? now : os_now_ms()) : 0);
  ph_arena_t *a = r->arena;
  a->live_count--;
  a->live_pages -= n;
  if (r->free_pages == PH_USABLE_PAGES && ++a->empty_regions > PH_KEEP_EMPTY_REGIONS && !a->dense)
    region_purge(r, 0, 0);
}

// The region holding p, a live region (page_heap_contains), has its arena
// locked; returns it. (An arena never changes: read without the lock.)
static ph_arena_t *region_lock(const ph_region_t *r) {
  ph_arena_t *a = r->arena;
  arena_lock(a);
  return a;
}

int page_heap_free(void *p) {
  uint64_t now = os_now_ms();   // once a free (four reads were 12% of a free and malloc of 1 MiB)
  ph_region_t *r = region_of(p);
  ph_arena_t *a = region_lock(r);
  uint32_t s = block_page(r, p);
  if (s == PH_NONE) { arena_unlock(a); return 0; }
  uint32_t n = r->head[s] & PH_LEN_MASK;
#if HAK_HARDENED
  (void)slack_canary_check(p, ph_slack(r, s), "heap buffer underflow before a large block at");
  // The block ends at the guard page: its request ends the tail before it.
  (void)tail_canary_check((unsigned char *)r + run_bytes(s + n - 1) - ph_tail(r, s), ph_tail(r, s),
                          "heap buffer overflow past a large block at");
  p = (char *)r + run_bytes(s);        // the run (its block ends at the guard)
  int dirty = hardened_close_block(a, p, n);
  if (HAK_UNLIKELY(dirty < 0)) {       // refused: out of reuse, still counted live
    hardened_keep_out(r, s, n);
    PH_VALIDATE(a);
    arena_unlock(a);
    return 1;
  }
  if (dirty) arena_sample_density(a, p, n);
  ph_quarantine_put(a, r, s, n, dirty);
#else
  int dirty = 1;
  arena_sample_density(a, p, n);
  a->last_freed = r;                   // (before: a region the free empties may be destroyed)
  run_free_locked(r, s, n, dirty, now);
#endif
  uint32_t deferred_before = t_ph_deferred;
  if (a->live_pages * PH_PHASE_END_DEN <= a->peak_pages) arena_see_phase_end(a, now);
  arena_maybe_purge(a, now);
  PH_VALIDATE(a);
  arena_unlock(a);
  if (HAK_UNLIKELY(deferred_before == 0 && t_ph_deferred != 0)) arena_key_for_deferred();
  purge_idle_arenas(a);
  return 1;
}

// The run length of the live block at p, read without the lock, or 0 when p
// is not a live block's first page (the caller then takes the locked path,
// which reports it). A live block's head word changes only when its owner
// frees or resizes it, so its owner may read it so (a string grown 16 bytes
// at a time past 256 KiB took the arena's lock twice a realloc, for its
// usable size and its resize: 2x glibc's time). The default build's blocks
// only (block_page's rule); the hardened build's sit after a slack.
static uint32_t live_block_len_unlocked(const ph_region_t *r, const void *p) {
  if (HAK_HARDENED) return 0;
  uintptr_t off = (uintptr_t)p - (uintptr_t)r;
  uint32_t s = (uint32_t)(off >> PH_PAGE_SHIFT);
  if (s < PH_HEADER_PAGES || (off & (PH_PAGE_SIZE - 1)) != 0) return 0;
  uint32_t h = __atomic_load_n(&r->head[s], __ATOMIC_RELAXED);
  return h & PH_USED ? h & PH_LEN_MASK : 0u;
}

size_t page_heap_usable_size(const void *p) {
  ph_region_t *r = region_of(p);
  uint32_t len = live_block_len_unlocked(r, p);
  if (len != 0) return run_bytes(len);
  ph_arena_t *a = region_lock(r);
  uint32_t s = block_page(r, p);
  size_t n = s == PH_NONE ? 0 : run_bytes(r->head[s] & PH_LEN_MASK);
#if HAK_HARDENED
  if (n != 0) n -= PH_PAGE_SIZE + ph_slack(r, s) + ph_tail(r, s);   // the guard page, the bytes around the block
#endif
  arena_unlock(a);
  return n;
}

// The run holding page `page` of r: its first page, or PH_NONE when the walk
// finds no run start there (a corrupt map). A walk from the first usable page:
// regions hold few large runs.
static uint32_t run_of_page(const ph_region_t *r, uint32_t page) {
  for (uint32_t s = PH_HEADER_PAGES; s < PH_PAGES;) {
    uint32_t len = r->head[s] & PH_LEN_MASK;
    if (len == 0) return PH_NONE;
    if (page < s + len) return page >= s ? s : PH_NONE;
    s += len;
  }
  return PH_NONE;
}

// Is the run at s (not PH_NONE) a live block's? (Hardened: not one freed and
// kept out of reuse.)
static int run_is_live(const ph_region_t *r, uint32_t s) {
  int live = (r->head[s] & PH_USED) != 0;
#if HAK_HARDENED
  live = live && !ph_kept_out(r, s);
#endif
  return live;
}

int page_heap_owns(const void *p) {
  ph_region_t *r = region_of(p);
  ph_arena_t *a = region_lock(r);
  uint32_t s = run_of_page(r, (uint32_t)(((uintptr_t)p - (uintptr_t)r) >> PH_PAGE_SHIFT));
  int owned = s != PH_NONE && run_is_live(r, s);
  arena_unlock(a);
  return owned;
}

int page_heap_freed_at(const void *p) {
  ph_region_t *r = region_of(p);
  ph_arena_t *a = region_lock(r);
  uint32_t s = run_of_page(r, (uint32_t)(((uintptr_t)p - (uintptr_t)r) >> PH_PAGE_SHIFT));
  int freed = s != PH_NONE && !run_is_live(r, s);
  arena_unlock(a);
  return freed;
}

#if HAK_HARDENED
int page_heap_fault_kind(const void *p, void **start) {
  ph_region_t *r = region_of(p);
  uint32_t page = (uint32_t)(((uintptr_t)p - (uintptr_t)r) >> PH_PAGE_SHIFT);
  if (page == PH_META_PAGES && PH_HEADER_GUARD_PAGES != 0) {   // the page below the first run
    *start = (char *)r + run_bytes(PH_HEADER_PAGES);
    return 3;
  }
  uint32_t s = run_of_page(r, page);
  if (s == PH_NONE) return 0;
  *start = (char *)r + run_bytes(s);
  if (!run_is_live(r, s)) return 2;
  return page == s + (r->head[s] & PH_LEN_MASK) - 1 ? 1 : 0;
}
#endif

int page_heap_resize_in_place(void *p, size_t size) {
  if (HAK_HARDENED) return 0;          // the guard page stays where it is: realloc moves
  if (size == 0 || size > PAGE_HEAP_MAX) return 0;
  ph_region_t *r = region_of(p);
  // Fits its run with more than its tail to keep: nothing to change, no lock
  // (a run's length is a size bin's, so what fits its bytes fits its pages).
  size_t held = run_bytes(live_block_len_unlocked(r, p));
  if (size <= held && size > held / PH_SHRINK_RATIO) return 1;
  uint32_t want = run_pages_for(size);
  int ok = 0;
  ph_arena_t *a = region_lock(r);
  uint32_t s = block_page(r, p);
  if (s != PH_NONE) {
    uint32_t len = r->head[s] & PH_LEN_MASK;
    if (want <= len) {
      if (want < len / PH_SHRINK_RATIO) {  // give the tail back
        r->head[s] = want | PH_USED;
        r->tail[s + len - 1] = 0;
        r->tail[s + want - 1] = want;
        region_release(r, s + want, len - want, mark_now(os_now_ms()));
        a->live_pages -= len - want;
      }
      ok = 1;
    } else {
      uint32_t rs = s + len;
      uint32_t more = want - len;
      if (rs < PH_PAGES && r->head[rs] != 0 && !(r->head[rs] & PH_USED) &&
          (r->head[rs] & PH_LEN_MASK) >= more) {
        region_take(r, rs, more);         // the neighbour's first pages join the block
        r->head[rs] = 0;
        r->tail[rs + more - 1] = 0;
        r->tail[s + len - 1] = 0;
        r->head[s] = want | PH_USED;
        r->tail[s + want - 1] = want;
        a->live_pages += more;
        arena_note_peak(a);
        ok = 1;
      }
    }
  }
  if (ok) PH_VALIDATE(a);
  arena_unlock(a);
  return ok;
}

int page_heap_locks_settle(const struct timespec *by) {
  for (unsigned i = 0; i < PH_ARENAS; i++)
    if (!os_mutex_settles(&g_arena_gate[i].lock, by)) return 0;
  return 1;
}

// Every arena, in index order (the one order any code takes two in).
void page_heap_fork_prepare(void) {
  for (unsigned i = 0; i < PH_ARENAS; i++) pthread_mutex_lock(&g_arena_gate[i].lock);
}
void page_heap_fork_parent(void) {
  for (unsigned i = PH_ARENAS; i-- > 0;) pthread_mutex_unlock(&g_arena_gate[i].lock);
}
void page_heap_fork_child(void) {
  // The other threads are gone: this one alone uses an arena.
  for (unsigned i = 0; i < PH_ARENAS; i++)
    atomic_store_explicit(&g_arena_gate[i].users, i + 1u == t_ph_arena ? 1u : 0u, memory_order_relaxed);
  atomic_store_explicit(&g_idle_arenas, UINT32_MAX, memory_order_relaxed);
  if (t_ph_arena != 0)
    atomic_fetch_and_explicit(&g_idle_arenas, ~arena_bit(&g_arenas[t_ph_arena - 1]), memory_order_relaxed);
  page_heap_fork_parent();
}

void page_heap_get_stats(page_heap_stats_t *out) {
  *out = (page_heap_stats_t){0};
  for (uint32_t i = 0, used = arenas_used(); i < used; i++) {
    ph_arena_t *a = &g_arenas[i];
    arena_lock(a);
    out->regions += a->region_count;
    out->live_count += a->live_count;
    out->live_bytes += run_bytes((uint32_t)a->live_pages);
    out->dirty_bytes += atomic_load_explicit(&a->dirty_bytes, memory_order_relaxed);
    arena_unlock(a);
  }
  out->mapped_bytes = out->regions * PH_REGION_SIZE;
}
