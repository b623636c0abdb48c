// page_heap_validate.c — debug builds check the page heap's invariants
// (page_heap_internal.h, ph_region_t) in full: every region of an arena at
// each of its operations' ends (PH_VALIDATE), every arena and the map on
// request (page_heap_validate).
#include "large/page_heap_internal.h"

#include "debug/report.h"

#if HAK_DEBUG
// The first broken invariant (see ph_region_t) is reported in one line, then abort.
#define PH_REQUIRE(cond, what, where, n) \
  do { if (HAK_UNLIKELY(!(cond))) hak_report_invariant("page heap invariant broken: " what " at", where, n); } while (0)

// Check one region in full; adds its live and dirty figures to the totals.
static void ph_validate_region(const ph_region_t *r, size_t *live_count, size_t *live_pages,
                               size_t *dirty_bytes) {
  uint32_t free_pages = 0, free_runs = 0, prev_start = PH_NONE;
  for (uint32_t i = 0; i < PH_HEADER_PAGES; i++)
    PH_REQUIRE(r->head[i] == 0 && r->tail[i] == 0 && r->dirty[i] == 0, "header page marked as a run", r, i);
  for (uint32_t s = PH_HEADER_PAGES; s < PH_PAGES;) {
    uint32_t len = r->head[s] & PH_LEN_MASK;
    PH_REQUIRE(len != 0 && len <= PH_PAGES - s, "runs tile the region (run length)", r, s);
    PH_REQUIRE(r->tail[s + len - 1] == len, "tail word == run length", r, s);
    for (uint32_t i = s + 1; i < s + len; i++)
      PH_REQUIRE(r->head[i] == 0 && r->dirty[i] == 0, "no head or dirty mark inside a run", r, i);
    for (uint32_t i = s; i + 1 < s + len; i++)
      PH_REQUIRE(r->tail[i] == 0, "no tail word inside a run", r, i);
    if (r->head[s] & PH_USED) {
      PH_REQUIRE(r->dirty[s] == 0, "a used run has no dirty mark", r, s);
#if HAK_HARDENED
      // Its block: slack bytes into the run, a request and its tail before
      // the guard page (ph_block_slack; at least one byte asked for).
      uint32_t slack = r->slack[s] >> 16, tail = r->slack[s] & 0xffffu;
      PH_REQUIRE(len >= 2 && slack % 16u == 0 && slack < PH_PAGE_SIZE && tail < PH_PAGE_SIZE &&
                 (size_t)slack + tail < run_bytes(len - 1), "a used run's block ends at its guard page", r, s);
#endif
      (*live_count)++;
      *live_pages += len;
    } else {
      PH_REQUIRE(prev_start == PH_NONE || (r->head[prev_start] & PH_USED) ||
                 (r->dirty[prev_start] != 0) != (r->dirty[s] != 0), "free neighbours of one kind are merged", r, s);
      free_pages += len;
      free_runs++;
      if (r->dirty[s]) *dirty_bytes += run_bytes(len);
    }
    prev_start = s;
    s += len;
  }
  PH_REQUIRE(r->free_pages == free_pages, "free_pages == sum of free run lengths", r, r->free_pages);
  uint32_t listed = 0;
  for (unsigned set = PH_CLEAN; set <= PH_DIRTY; set++) {
    for (unsigned b = 0; b < PH_BINS; b++) {
      uint32_t head = r->bin_head[set][b];
      PH_REQUIRE(((r->bin_mask[set] >> b) & 1u) == (head != PH_NONE), "bin_mask bit == bin not empty", r, b);
      uint32_t prev = PH_NONE;
      for (uint32_t s = head; s != PH_NONE; prev = s, s = r->link_next[s]) {
        PH_REQUIRE(s >= PH_HEADER_PAGES && s < PH_PAGES && listed < free_runs, "bin list inside the region, no cycle", r, b);
        PH_REQUIRE(r->head[s] != 0 && !(r->head[s] & PH_USED), "a bin holds only free runs", r, s);
        PH_REQUIRE((r->dirty[s] != 0) == set, "a bin set holds runs of its kind", r, s);
        PH_REQUIRE(bin_of(r->head[s] & PH_LEN_MASK) == b, "a run sits in the bin of its length", r, s);
        PH_REQUIRE(r->link_prev[s] == prev, "bin links agree (link_prev)", r, s);
        listed++;
      }
    }
  }
  PH_REQUIRE(listed == free_runs, "every free run is in a bin", r, free_runs);
}

// Check arena a's regions and counters in full (its lock held).
void ph_validate_locked(const ph_arena_t *a) {
  size_t regions = 0, empty = 0, live_count = 0, live_pages = 0, dirty_bytes = 0;
  int last_freed_listed = a->last_freed == NULL;
  const ph_region_t *prev = NULL;
  for (const ph_region_t *r = a->regions; r != NULL; prev = r, r = r->next) {
    last_freed_listed |= r == a->last_freed;
    PH_REQUIRE(regions < a->region_count, "region_count == regions listed", r, a->region_count);
    PH_REQUIRE(r->prev == prev, "region links agree", r, regions);
    PH_REQUIRE(r->arena == a, "a listed region names its arena", r, regions);
    PH_REQUIRE(page_heap_contains(r), "a listed region has its map bit", r, regions);
    ph_validate_region(r, &live_count, &live_pages, &dirty_bytes);
    if (r->free_pages == PH_USABLE_PAGES) empty++;
    regions++;
  }
  PH_REQUIRE(regions == a->region_count, "region_count == regions listed", a, regions);
  PH_REQUIRE(last_freed_listed, "last_freed is NULL or one of the arena's regions", a, regions);
  PH_REQUIRE(empty == a->empty_regions, "empty_regions == regions with no live block", a, empty);
  PH_REQUIRE(live_count == a->live_count, "live_count == used runs", a, live_count);
  PH_REQUIRE(live_pages == a->live_pages, "live_pages == pages of used runs", a, live_pages);
  PH_REQUIRE(a->peak_pages >= a->live_pages, "peak_pages >= live_pages", a, a->peak_pages);
  PH_REQUIRE(dirty_bytes == atomic_load_explicit(&a->dirty_bytes, memory_order_relaxed),
             "dirty_bytes == bytes of dirty free runs", a, dirty_bytes);
}

// Every arena in full, and the map: one bit per region of any arena.
void page_heap_validate(void) {
  page_heap_fork_prepare();            // every lock, in order
  size_t regions = 0, bits = 0;
  for (unsigned i = 0; i < PH_ARENAS; i++) {
    ph_validate_locked(&g_arenas[i]);
    regions += g_arenas[i].region_count;
  }
  for (size_t w = 0; w < PH_MAP_WORDS; w++)
    bits += (size_t)__builtin_popcountll(atomic_load_explicit(&g_ph_map[w], memory_order_relaxed));
  PH_REQUIRE(bits == regions, "map bits == regions of all arenas", g_arenas, bits);
  page_heap_fork_parent();
}
#else
void page_heap_validate(void) {}
#endif
