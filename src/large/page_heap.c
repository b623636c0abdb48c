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
// byte count is exact. Dirty runs have bins of their own, searched first:
// reusing resident pages spares the page faults (tcmalloc's page heap prefers
// them the same way). A purge turns dirty runs clean and merges them.
#include "large/page_heap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "config/config.h"
#include "os/os.h"

#define PH_REGION_SHIFT  26
#define PH_REGION_SIZE   ((size_t)1 << PH_REGION_SHIFT)
#define PH_PAGE_SHIFT    12                   // the heap's page: x86-64's, a compile-time layout unit
#define PH_PAGE_SIZE     ((size_t)1 << PH_PAGE_SHIFT)
#define PH_PAGES         ((uint32_t)(PH_REGION_SIZE >> PH_PAGE_SHIFT))
#define PH_BINS          64
#define PH_NONE          UINT32_MAX
#define PH_USED          (1u << 31)
#define PH_LEN_MASK      (PH_USED - 1u)
#define PH_MAGIC         0x48414b50u   // "HAKP"
#define PH_ADDR_BITS     47
#define PH_MAP_WORDS     ((size_t)1 << (PH_ADDR_BITS - PH_REGION_SHIFT - 6))
#define PH_DIRTY_MIN     ((size_t)64 << 20)   // dirty budget: this, or twice the live bytes if more
#define PH_PURGE_DELAY_FACTOR 10u             // times HAKMEM_PURGE_DELAY_MS

typedef struct ph_region {
  uint32_t          magic;
  uint32_t          free_pages;       // pages in free runs
  uint64_t          bin_mask[2];      // bins holding at least one run: [0] clean, [1] dirty
  struct ph_region *next, *prev;      // all regions
  uint32_t          bin_head[2][PH_BINS];
  uint32_t          head[PH_PAGES];   // first page of a run: len | USED; else 0
  uint32_t          tail[PH_PAGES];   // last page of a run: len; else 0
  uint8_t           dirty[PH_PAGES];  // first page of a free run: 1 if dirty
  uint32_t          link_next[PH_PAGES];
  uint32_t          link_prev[PH_PAGES];
} ph_region_t;

#define PH_HEADER_PAGES  ((uint32_t)((sizeof(ph_region_t) + PH_PAGE_SIZE - 1) >> PH_PAGE_SHIFT))
#define PH_USABLE_PAGES  (PH_PAGES - PH_HEADER_PAGES)
_Static_assert(PAGE_HEAP_MAX <= ((size_t)(PH_PAGES - 80u) << PH_PAGE_SHIFT), "the largest block fits a region");

static pthread_mutex_t g_ph_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t g_ph_map[PH_MAP_WORDS];   // one bit per live region
static ph_region_t *g_regions;
static size_t g_region_count, g_empty_regions;
static size_t g_live_count, g_live_pages;
static _Atomic size_t g_dirty_bytes;
static _Atomic uint64_t g_last_purge_ms;

// ---- bins ------------------------------------------------------------------

static unsigned bin_of(uint32_t pages) {
  if (pages <= 16) return pages - 1;
  unsigned lg = 31u - (unsigned)__builtin_clz(pages);
  unsigned sub = (pages >> (lg - 2)) & 3u;
  return 16u + (lg - 4u) * 4u + sub;
}

static size_t run_bytes(uint32_t pages) { return (size_t)pages << PH_PAGE_SHIFT; }

// Put the free run [s, s+len) (dirty or clean) in its bin and record its head
// and tail.
static void run_insert(ph_region_t *r, uint32_t s, uint32_t len, int dirty) {
  unsigned b = bin_of(len), set = dirty != 0;
  r->head[s] = len;
  r->tail[s + len - 1] = len;
  r->dirty[s] = (uint8_t)set;
  r->link_prev[s] = PH_NONE;
  r->link_next[s] = r->bin_head[set][b];
  if (r->bin_head[set][b] != PH_NONE) r->link_prev[r->bin_head[set][b]] = s;
  r->bin_head[set][b] = s;
  r->bin_mask[set] |= (uint64_t)1 << b;
  r->free_pages += len;
  if (dirty) atomic_fetch_add_explicit(&g_dirty_bytes, run_bytes(len), memory_order_relaxed);
}

// Take the free run starting at s out of its bin; returns its length and
// stores whether it was dirty.
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
  if (*dirty) atomic_fetch_sub_explicit(&g_dirty_bytes, run_bytes(len), memory_order_relaxed);
  r->head[s] = 0;
  r->tail[s + len - 1] = 0;
  r->dirty[s] = 0;
  return len;
}

// A free run of at least n pages in one bin set, or PH_NONE: first fit in
// n's own bin, else the head of the smallest larger bin holding runs.
static uint32_t bins_find(ph_region_t *r, unsigned set, uint32_t n) {
  unsigned b = bin_of(n);
  for (uint32_t s = r->bin_head[set][b]; s != PH_NONE; s = r->link_next[s])
    if ((r->head[s] & PH_LEN_MASK) >= n) return s;
  uint64_t larger = b + 1 < PH_BINS ? r->bin_mask[set] & (~(uint64_t)0 << (b + 1)) : 0;
  return larger ? r->bin_head[set][__builtin_ctzll(larger)] : PH_NONE;
}

// A free run of at least n pages, resident pages first, or PH_NONE.
static uint32_t region_find(ph_region_t *r, uint32_t n) {
  uint32_t s = bins_find(r, 1, n);
  return s != PH_NONE ? s : bins_find(r, 0, n);
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

// Return [s, s+n) to the free runs as dirty or clean, merged with free
// neighbours of the same kind.
static void region_release(ph_region_t *r, uint32_t s, uint32_t n, int dirty) {
  int d;
  if (s > PH_HEADER_PAGES && r->tail[s - 1] != 0) {
    uint32_t ls = s - r->tail[s - 1];
    if (!(r->head[ls] & PH_USED) && r->dirty[ls] == dirty) {
      n += run_remove(r, ls, &d);
      s = ls;
    }
  }
  uint32_t rs = s + n;
  if (rs < PH_PAGES && r->head[rs] != 0 && !(r->head[rs] & PH_USED) && r->dirty[rs] == dirty)
    n += run_remove(r, rs, &d);
  run_insert(r, s, n, dirty);
}

// Purge every dirty run of r: madvise, then clean and merged (lock held).
static int region_purge(ph_region_t *r) {
  int released = 0;
  for (uint64_t mask = r->bin_mask[1]; mask != 0; mask = r->bin_mask[1]) {
    uint32_t s = r->bin_head[1][__builtin_ctzll(mask)];
    int dirty;
    uint32_t len = run_remove(r, s, &dirty);
    os_purge((char *)r + run_bytes(s), run_bytes(len));
    region_release(r, s, len, 0);
    released = 1;
  }
  return released;
}

// ---- regions ---------------------------------------------------------------

static void map_mark(ph_region_t *r, int on) {
  size_t bit = (uintptr_t)r >> PH_REGION_SHIFT;
  uint64_t mask = (uint64_t)1 << (bit & 63);
  if (on) atomic_fetch_or_explicit(&g_ph_map[bit >> 6], mask, memory_order_release);
  else atomic_fetch_and_explicit(&g_ph_map[bit >> 6], ~mask, memory_order_release);
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
  r->magic = PH_MAGIC;
  for (unsigned b = 0; b < PH_BINS; b++) r->bin_head[0][b] = r->bin_head[1][b] = PH_NONE;
  return r;
}

// Link a fresh region in (lock held).
static void region_publish(ph_region_t *r) {
  run_insert(r, PH_HEADER_PAGES, PH_USABLE_PAGES, 0);   // fresh pages: none dirty
  r->prev = NULL;
  r->next = g_regions;
  if (g_regions) g_regions->prev = r;
  g_regions = r;
  g_region_count++;
  g_empty_regions++;
  map_mark(r, 1);
}

static void region_destroy(ph_region_t *r) {
  int dirty;
  for (uint32_t s = PH_HEADER_PAGES; s < PH_PAGES;) s += run_remove(r, s, &dirty);  // keeps the dirty count exact
  if (r->prev) r->prev->next = r->next;
  else g_regions = r->next;
  if (r->next) r->next->prev = r->prev;
  g_region_count--;
  g_empty_regions--;
  map_mark(r, 0);
  r->magic = 0;
  os_unmap(r, PH_REGION_SIZE);
}

static ph_region_t *region_of(const void *p) {
  return (ph_region_t *)((uintptr_t)p & ~(uintptr_t)(PH_REGION_SIZE - 1));
}

int page_heap_contains(const void *p) {
  uintptr_t a = (uintptr_t)p;
  if ((a >> PH_ADDR_BITS) != 0) return 0;
  size_t bit = a >> PH_REGION_SHIFT;
  return (int)((atomic_load_explicit(&g_ph_map[bit >> 6], memory_order_acquire) >> (bit & 63)) & 1u);
}

// Page index of a block start at p in r, or PH_NONE (lock held).
static uint32_t block_page(ph_region_t *r, const void *p) {
  uintptr_t off = (uintptr_t)p - (uintptr_t)r;
  if (off & (PH_PAGE_SIZE - 1)) return PH_NONE;
  uint32_t s = (uint32_t)(off >> PH_PAGE_SHIFT);
  if (s < PH_HEADER_PAGES || !(r->head[s] & PH_USED)) return PH_NONE;
  return s;
}

// ---- purge -----------------------------------------------------------------

// madvise every dirty free run (lock held); unmap empty regions past the one
// kept (all of them when everything). Returns 1 if anything was released.
static int purge_locked(int everything) {
  int released = 0;
  atomic_store_explicit(&g_last_purge_ms, os_now_ms(), memory_order_relaxed);
  for (ph_region_t *r = g_regions, *next; r != NULL; r = next) {
    next = r->next;
    if (r->free_pages == PH_USABLE_PAGES && (everything || g_empty_regions > 1)) {
      region_destroy(r);
      released = 1;
      continue;
    }
    released |= region_purge(r);
  }
  return released;
}

static int purge_delay_passed(void) {
  return os_now_ms() - atomic_load_explicit(&g_last_purge_ms, memory_order_relaxed) >=
         (uint64_t)g_hak_config.purge_delay_ms * PH_PURGE_DELAY_FACTOR;
}

static int purge_due(void) {
  size_t dirty = atomic_load_explicit(&g_dirty_bytes, memory_order_relaxed);
  if (dirty == 0) return 0;
  size_t live = run_bytes((uint32_t)g_live_pages);
  return dirty > (2 * live > PH_DIRTY_MIN ? 2 * live : PH_DIRTY_MIN) ||
         purge_delay_passed();
}

// Called from the small-block slow paths, so freed large memory goes back
// after the delay even when no large block is allocated or freed again.
void page_heap_maybe_purge(void) {
  if (atomic_load_explicit(&g_dirty_bytes, memory_order_relaxed) == 0 || !purge_delay_passed()) return;
  pthread_mutex_lock(&g_ph_lock);
  if (purge_due()) purge_locked(0);
  pthread_mutex_unlock(&g_ph_lock);
}

int page_heap_trim(int everything) {
  pthread_mutex_lock(&g_ph_lock);
  int released = purge_locked(everything);
  pthread_mutex_unlock(&g_ph_lock);
  return released;
}

// ---- blocks ----------------------------------------------------------------

static uint32_t pages_for(size_t size) { return (uint32_t)((size + PH_PAGE_SIZE - 1) >> PH_PAGE_SHIFT); }

void *page_heap_alloc(size_t size, int zero) {
  if (size == 0 || size > PAGE_HEAP_MAX) return NULL;
  uint32_t n = pages_for(size);
  ph_region_t *fresh = NULL;
  for (;;) {
    pthread_mutex_lock(&g_ph_lock);
    if (fresh != NULL) { region_publish(fresh); fresh = NULL; }
    for (ph_region_t *r = g_regions; r != NULL; r = r->next) {
      if (r->free_pages < n) continue;
      uint32_t s = region_find(r, n);
      if (s == PH_NONE) continue;
      if (r->free_pages == PH_USABLE_PAGES) g_empty_regions--;
      int dirty = region_take(r, s, n);
      g_live_count++;
      g_live_pages += n;
      if (purge_due()) purge_locked(0);
      pthread_mutex_unlock(&g_ph_lock);
      void *p = (char *)r + run_bytes(s);
      if (zero && dirty) memset(p, 0, run_bytes(n));
      return p;
    }
    // Nothing fits: dirty and clean neighbours may together; purging merges them.
    int merged = 0;
    for (ph_region_t *r = g_regions; r != NULL; r = r->next)
      if (r->free_pages >= n && r->bin_mask[1] != 0) merged |= region_purge(r);
    pthread_mutex_unlock(&g_ph_lock);
    if (merged) continue;
    fresh = region_create();            // mapped without the lock held
    if (fresh == NULL) return NULL;
  }
}

int page_heap_free(void *p) {
  ph_region_t *r = region_of(p);
  pthread_mutex_lock(&g_ph_lock);
  uint32_t s = block_page(r, p);
  if (s == PH_NONE) { pthread_mutex_unlock(&g_ph_lock); return 0; }
  uint32_t n = r->head[s] & PH_LEN_MASK;
  r->head[s] = 0;
  r->tail[s + n - 1] = 0;
  region_release(r, s, n, 1);
  g_live_count--;
  g_live_pages -= n;
  if (r->free_pages == PH_USABLE_PAGES && ++g_empty_regions > 1) region_destroy(r);  // keep one
  if (purge_due()) purge_locked(0);
  pthread_mutex_unlock(&g_ph_lock);
  return 1;
}

size_t page_heap_usable_size(const void *p) {
  ph_region_t *r = region_of(p);
  pthread_mutex_lock(&g_ph_lock);
  uint32_t s = block_page(r, p);
  size_t n = s == PH_NONE ? 0 : run_bytes(r->head[s] & PH_LEN_MASK);
  pthread_mutex_unlock(&g_ph_lock);
  return n;
}

int page_heap_owns(const void *p) {
  ph_region_t *r = region_of(p);
  uint32_t page = (uint32_t)(((uintptr_t)p - (uintptr_t)r) >> PH_PAGE_SHIFT);
  int owned = 0;
  pthread_mutex_lock(&g_ph_lock);
  // Walk runs from the first usable page: regions hold few large runs.
  for (uint32_t s = PH_HEADER_PAGES; s < PH_PAGES;) {
    uint32_t len = r->head[s] & PH_LEN_MASK;
    if (len == 0) break;                 // not a run start: the map is corrupt
    if (page < s + len) { owned = page >= s && (r->head[s] & PH_USED) != 0; break; }
    s += len;
  }
  pthread_mutex_unlock(&g_ph_lock);
  return owned;
}

int page_heap_resize_in_place(void *p, size_t size) {
  if (size == 0 || size > PAGE_HEAP_MAX) return 0;
  ph_region_t *r = region_of(p);
  uint32_t want = pages_for(size);
  int ok = 0;
  pthread_mutex_lock(&g_ph_lock);
  uint32_t s = block_page(r, p);
  if (s != PH_NONE) {
    uint32_t len = r->head[s] & PH_LEN_MASK;
    if (want <= len) {
      if (want < len / 2) {               // give the tail back
        r->head[s] = want | PH_USED;
        r->tail[s + len - 1] = 0;
        r->tail[s + want - 1] = want;
        region_release(r, s + want, len - want, 1);
        g_live_pages -= len - want;
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
        g_live_pages += more;
        ok = 1;
      }
    }
  }
  pthread_mutex_unlock(&g_ph_lock);
  return ok;
}

void page_heap_fork_prepare(void) { pthread_mutex_lock(&g_ph_lock); }
void page_heap_fork_parent(void) { pthread_mutex_unlock(&g_ph_lock); }
void page_heap_fork_child(void) { pthread_mutex_unlock(&g_ph_lock); }

void page_heap_get_stats(page_heap_stats_t *out) {
  pthread_mutex_lock(&g_ph_lock);
  out->regions = g_region_count;
  out->mapped_bytes = g_region_count * PH_REGION_SIZE;
  out->live_count = g_live_count;
  out->live_bytes = run_bytes((uint32_t)g_live_pages);
  out->dirty_bytes = atomic_load(&g_dirty_bytes);
  pthread_mutex_unlock(&g_ph_lock);
}
