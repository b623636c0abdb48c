// huge.c — direct-mmap blocks, their table and cache (see huge.h).
//
// Lock: g_huge_lock guards the table, the cache and every counter below;
// mappings are made and unmapped without it where the code says so.
#include "large/huge.h"

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

#define HUGE_CACHE_SLOTS      32                     // freed mappings kept at most
#define HUGE_CACHE_ENTRY_SHARE 4u                    // a mapping above 1/4 of HAKMEM_HUGE_CACHE_MB is not cached
#define HUGE_CACHE_REUSE_SLACK 2u                    // a cached mapping serves requests down to 1/2 of its size
#define HUGE_RELEASED_SLOTS   8u                     // the last mappings unmapped, for the loop test
#define HUGE_SHRINK_RATIO     2u                     // realloc shrinks a mapping only below 1/2 of it
#define HUGE_TABLE_MIN_SLOTS  1024u                  // first table size (a power of two)
#define HUGE_TABLE_LOAD_NUM   6u                     // live + tombstone slots stay at most 6/10
#define HUGE_TABLE_LOAD_DEN   10u                    //   of the table, so a probe meets an empty slot
#define HUGE_HASH_SHIFT       12                     // low bits of a mapping's address are zero
#define HUGE_HASH_MULT        0x9e3779b97f4a7c15ull  // 2^64 / golden ratio (Fibonacci hashing)

#define TABLE_EMPTY ((uintptr_t)0)
#define TABLE_TOMB  ((uintptr_t)1)                   // a removed entry: probes go on past it

// The table: open addressing with linear probing, g_table_cap a power of two
// (or 0 with g_table NULL before the first block). At rest (lock held):
//   |slots with base > TABLE_TOMB| == g_table_used == g_live_count
//   |slots with base == TABLE_TOMB| == g_table_tombs
//   (g_table_used + g_table_tombs) * LOAD_DEN <= g_table_cap * LOAD_NUM
//   sum of map_size over live slots == g_live_bytes
//   every live entry is found from its hash (table_find(block) == entry), its base
//   and map_size are page multiples, map_size > 0, base <= block < base + map_size
typedef struct huge_entry {
  uintptr_t base;      // start of the mapping; TABLE_EMPTY or TABLE_TOMB when the slot holds none
  size_t    map_size;  // bytes mapped
  uintptr_t block;     // the program's pointer: base, or in the hardened build the
                       // block against its guard page (huge_block_at); the table's key
#if HAK_HARDENED
  size_t    request;   // the size asked for: its usable size, and where the tail canary starts
#endif
} huge_entry_t;

// The cache: slot i holds a mapping when base != 0. At rest:
//   sum of size over held slots == g_cache_bytes
//   no held base is a live table entry; sizes are page multiples > 0
//   since_ms <= now; an entry older than HAKMEM_HUGE_CACHE_DELAY_MS is unmapped
//   by the next huge alloc, free or trim
typedef struct huge_cached {
  uintptr_t base;
  size_t    size;
  uint64_t  since_ms;  // when it was freed
} huge_cached_t;

static pthread_mutex_t g_huge_lock = PTHREAD_MUTEX_INITIALIZER;
static huge_entry_t *g_table;
static size_t g_table_cap, g_table_used, g_table_tombs;
static size_t g_live_count, g_live_bytes;
HAK_BIG_BSS static huge_cached_t g_cache[HUGE_CACHE_SLOTS];   // (past the start-up variables: debug/hak_base.h)
static size_t g_cache_bytes;
// When the oldest cached mapping is due (since_ms + delay; UINT64_MAX with
// none): read without the lock by huge_maybe_expire.
static _Atomic uint64_t g_cache_due_ms = UINT64_MAX;

// A mapping above a share of HAKMEM_HUGE_CACHE_MB is cached only in a loop:
// a buffer of 40-200 MiB taken and freed again and again was mapped and
// faulted in afresh each time (64 MiB: 14 ms a round here, 20x tcmalloc's,
// which keeps it; glibc, jemalloc and mimalloc map it afresh too), while one
// freed once goes back at once, as glibc's does. The loop shows when a huge
// allocation maps afresh a size that an unmapping gave back less than
// HAKMEM_HUGE_CACHE_DELAY_MS before (the ring below): from then until a
// delay after the last reuse of it, mappings of that size (within the reuse
// slack) are cached, one a loop (the cache holds what the program held a
// moment ago: its peak is not raised). Two threads each looping over a
// buffer of its own size (40 and 150 MiB) take tcmalloc's time.
typedef struct huge_released {
  size_t   size;
  uint64_t ms;
} huge_released_t;
HAK_BIG_BSS static huge_released_t g_released[HUGE_RELEASED_SLOTS];
static unsigned g_released_next;
// Loops seen, up to HUGE_LOOPS at once (threads that each take and free a
// buffer of their own size): a slot's size 0 when free.
#define HUGE_LOOPS 4u
typedef struct huge_loop {
  size_t   size;       // the size of the loop's mappings
  uint64_t until_ms;   // ... cached until then
} huge_loop_t;
static huge_loop_t g_loops[HUGE_LOOPS];

#if HAK_DEBUG
static void huge_validate_locked(void);
#define HUGE_VALIDATE() huge_validate_locked()
#else
#define HUGE_VALIDATE() ((void)0)
#endif

static size_t page_round(size_t n) { size_t ps = os_page_size(); return (n + ps - 1) & ~(ps - 1); }
static size_t hash_ptr(uintptr_t p) { return (size_t)((p >> HUGE_HASH_SHIFT) * HUGE_HASH_MULT); }

static huge_entry_t *table_find(uintptr_t p) {
  if (g_table == NULL) return NULL;
  size_t mask = g_table_cap - 1;
  for (size_t i = hash_ptr(p) & mask;; i = (i + 1) & mask) {
    if (g_table[i].base == TABLE_EMPTY) return NULL;
    if (g_table[i].base != TABLE_TOMB && g_table[i].block == p) return &g_table[i];
  }
}

static int table_grow(void) {
  size_t cap = g_table_cap ? g_table_cap * 2 : HUGE_TABLE_MIN_SLOTS;
  huge_entry_t *t = os_map_aligned(cap * sizeof *t, 0);   // fresh pages: every slot TABLE_EMPTY
  if (t == NULL) return -1;
  for (size_t i = 0; i < g_table_cap; i++) {
    if (g_table[i].base <= TABLE_TOMB) continue;
    size_t j = hash_ptr(g_table[i].block) & (cap - 1);
    while (t[j].base != TABLE_EMPTY) j = (j + 1) & (cap - 1);
    t[j] = g_table[i];
  }
  if (g_table) os_unmap(g_table, g_table_cap * sizeof *g_table);
  g_table = t;
  g_table_cap = cap;
  g_table_tombs = 0;
  return 0;
}

static int table_insert(uintptr_t block, uintptr_t base, size_t map_size, size_t request) {
  if ((g_table_used + g_table_tombs + 1) * HUGE_TABLE_LOAD_DEN > g_table_cap * HUGE_TABLE_LOAD_NUM &&
      table_grow() != 0)
    return -1;
  size_t mask = g_table_cap - 1;
  size_t i = hash_ptr(block) & mask;
  while (g_table[i].base > TABLE_TOMB) i = (i + 1) & mask;
  if (g_table[i].base == TABLE_TOMB) g_table_tombs--;
  g_table[i] = (huge_entry_t){.base = base, .map_size = map_size, .block = block};
#if HAK_HARDENED
  g_table[i].request = request;
#else
  (void)request;
#endif
  g_table_used++;
  return 0;
}

static void table_remove(huge_entry_t *e) {
  e->base = TABLE_TOMB;
  g_table_used--;
  g_table_tombs++;
}

#if HAK_HARDENED
// The hardened build's graves: freed mappings that leave the cache (too large
// for it, evicted, expired) stay as address space no access can touch, their
// memory given back (os_discard_none), until HUGE_GRAVE_SLOTS newer ones push
// them out or they pass HUGE_GRAVE_BYTES of address space together; a use
// after free of one is a fault the hook reports (huge_fault_kind) instead of a
// plain SIGSEGV, or worse, a write into whatever the kernel maps there next.
// When a mapping fails for want of address space, the graves go first
// (huge_release_graves). Lock held; the fault hook reads them without it.
#define HUGE_GRAVE_SLOTS 64u
#define HUGE_GRAVE_BYTES ((size_t)4 << 30)
typedef struct huge_grave { uintptr_t base; size_t size; } huge_grave_t;
static huge_grave_t g_grave[HUGE_GRAVE_SLOTS];   // a ring: the oldest at g_grave_next
static unsigned g_grave_next;
static size_t g_grave_bytes;

static void grave_drop(huge_grave_t *g) {
  if (g->base == 0) return;
  os_unmap((void *)g->base, g->size);
  g_grave_bytes -= g->size;
  g->base = 0;
}

static void huge_release(void *base, size_t size) {
  if (size > HUGE_GRAVE_BYTES || !os_discard_none(base, size)) {
    os_unmap(base, size);
    return;
  }
  huge_grave_t *g = &g_grave[g_grave_next];
  grave_drop(g);
  *g = (huge_grave_t){(uintptr_t)base, size};
  g_grave_bytes += size;
  g_grave_next = (g_grave_next + 1) % HUGE_GRAVE_SLOTS;
  for (unsigned i = 0; g_grave_bytes > HUGE_GRAVE_BYTES && i + 1 < HUGE_GRAVE_SLOTS; i++)
    grave_drop(&g_grave[(g_grave_next + i) % HUGE_GRAVE_SLOTS]);
}

// Unmap every grave; 1 if there was one.
static int graves_release(void) {
  int any = 0;
  for (unsigned i = 0; i < HUGE_GRAVE_SLOTS; i++) {
    any |= g_grave[i].base != 0;
    grave_drop(&g_grave[i]);
  }
  return any;
}

int huge_release_graves(void) {
  if (pthread_mutex_trylock(&g_huge_lock) != 0) return 0;   // held: maybe by our caller (table_grow)
  int any = graves_release();
  pthread_mutex_unlock(&g_huge_lock);
  return any;
}
#else
static void huge_release(void *base, size_t size) { os_unmap(base, size); }
#endif

// Unmap a freed mapping (not cached, or leaving the cache), remembered for
// the loop test.
static void huge_give_back(uintptr_t base, size_t size, uint64_t now) {
  g_released[g_released_next] = (huge_released_t){size, now};
  g_released_next = (g_released_next + 1) % HUGE_RELEASED_SLOTS;
  huge_release((void *)base, size);
}

// Does a mapping of `size` serve a request of `want` bytes (and the reverse
// for the loop test): at least as large, and within the reuse slack.
static int huge_size_serves(size_t size, size_t want) {
  return size >= want && size / HUGE_CACHE_REUSE_SLACK <= want;
}

// The live loop whose mappings a mapping of `size` is (within the reuse
// slack either way), or NULL.
static huge_loop_t *loop_of(size_t size, uint64_t now) {
  for (unsigned i = 0; i < HUGE_LOOPS; i++) {
    huge_loop_t *l = &g_loops[i];
    if (l->size != 0 && now < l->until_ms && (huge_size_serves(size, l->size) || huge_size_serves(l->size, size)))
      return l;
  }
  return NULL;
}

// A fresh mapping of map_size bytes: was one that serves it given back less
// than a delay ago? Then the program takes and frees it in a loop (in the
// slot of a loop of its size, a free one, or the one that ends first).
static void loop_note_fresh(size_t map_size, uint64_t now) {
  for (unsigned i = 0; i < HUGE_RELEASED_SLOTS; i++) {
    const huge_released_t *r = &g_released[i];
    if (r->size != 0 && huge_size_serves(r->size, map_size) &&
        now - r->ms < g_hak_config.huge_cache_delay_ms) {
      huge_loop_t *l = loop_of(map_size, now);
      for (unsigned j = 0; l == NULL && j < HUGE_LOOPS; j++)
        if (g_loops[j].size == 0 || now >= g_loops[j].until_ms) l = &g_loops[j];
      if (l == NULL) {   // all live: the one that ends first
        l = &g_loops[0];
        for (unsigned j = 1; j < HUGE_LOOPS; j++)
          if (g_loops[j].until_ms < l->until_ms) l = &g_loops[j];
      }
      *l = (huge_loop_t){map_size, now + g_hak_config.huge_cache_delay_ms};
      return;
    }
  }
}

// The bytes the live loops' mappings take, one each.
static size_t loops_bytes(uint64_t now) {
  size_t bytes = 0;
  for (unsigned i = 0; i < HUGE_LOOPS; i++)
    if (g_loops[i].size != 0 && now < g_loops[i].until_ms) bytes += g_loops[i].size;
  return bytes;
}

// A mapping cached at `since`: due no later than since + delay. (A take or an
// eviction leaves the word early; the next expiry pass sets it again.)
static void cache_note_due(uint64_t since) {
  uint64_t due = since + g_hak_config.huge_cache_delay_ms;
  if (due < atomic_load_explicit(&g_cache_due_ms, memory_order_relaxed))
    atomic_store_explicit(&g_cache_due_ms, due, memory_order_relaxed);
}

// Unmap the mapping cached in slot i and empty the slot.
static void cache_drop(int i, uint64_t now) {
  huge_give_back(g_cache[i].base, g_cache[i].size, now);
  g_cache_bytes -= g_cache[i].size;
  g_cache[i].base = 0;
}

// The smallest cached mapping of at least *size_io bytes and at most
// HUGE_CACHE_REUSE_SLACK times that (its size is stored back), or 0. Large
// blocks come from the page heap, so this cache serves only huge and strongly
// aligned blocks: reuse whole.
// With an alignment (0: none), only a mapping that starts on it (one an
// aligned block of that alignment had: aligned_alloc(2 MiB, 4 MiB) in a loop
// mapped and faulted in every block afresh, 166x tcmalloc's time).
static uintptr_t cache_take(size_t *size_io, size_t align, uint64_t now) {
  size_t size = *size_io;
  int best = -1;
  for (int i = 0; i < HUGE_CACHE_SLOTS; i++) {
    size_t s = g_cache[i].size;
    if (g_cache[i].base != 0 && s >= size && s / HUGE_CACHE_REUSE_SLACK <= size &&
        (align == 0 || (g_cache[i].base & (align - 1)) == 0) && (best < 0 || s < g_cache[best].size))
      best = i;
  }
  if (best < 0) return 0;
  uintptr_t base = g_cache[best].base;
  *size_io = g_cache[best].size;
  g_cache_bytes -= *size_io;
  g_cache[best].base = 0;
  huge_loop_t *l = loop_of(*size_io, now);
  if (l != NULL) l->until_ms = now + g_hak_config.huge_cache_delay_ms;   // still in the loop
  return base;
}

// Unmap cached mappings older than HAKMEM_HUGE_CACHE_DELAY_MS (every one when
// everything); 1 if any was unmapped.
// Nothing is due before g_cache_due_ms: no walk (every huge allocation and
// free comes here; the walk of the slots was a fifth of a loop of 64
// KiB-aligned blocks' time).
static int cache_expire(int everything, uint64_t now) {
  if (everything) memset(g_loops, 0, sizeof g_loops);   // (a trim: the loops start over)
  else if (now < atomic_load_explicit(&g_cache_due_ms, memory_order_relaxed)) return 0;
  int released = 0;
  uint64_t due = UINT64_MAX;
  for (int i = 0; i < HUGE_CACHE_SLOTS; i++) {
    if (g_cache[i].base == 0) continue;
    if (everything || now - g_cache[i].since_ms >= g_hak_config.huge_cache_delay_ms) {
      cache_drop(i, now);
      released = 1;
    } else if (g_cache[i].since_ms + g_hak_config.huge_cache_delay_ms < due) {
      due = g_cache[i].since_ms + g_hak_config.huge_cache_delay_ms;
    }
  }
  atomic_store_explicit(&g_cache_due_ms, due, memory_order_relaxed);
  return released;
}

// Keep a freed mapping for reuse, or unmap it. Up to a share of
// HAKMEM_HUGE_CACHE_MB each, HAKMEM_HUGE_CACHE_MB in all; a larger one only
// of a loop's (above), and then the cache may hold one mapping of each live
// loop.
static void cache_put(uintptr_t base, size_t size, uint64_t now) {
  size_t max = g_hak_config.huge_cache_max;
  if (size > max / HUGE_CACHE_ENTRY_SHARE) {
    if (loop_of(size, now) == NULL) { huge_give_back(base, size, now); return; }
    size_t loops = loops_bytes(now);
    if (loops > max) max = loops;
    if (size > max) max = size;
  }
#if HAK_HARDENED
  // Cached: a use after free faults (graves too, huge_release). Refused (ENOMEM
  // at vm.max_map_count, or part of it done): not cached open, a grave or unmapped.
  if (HAK_UNLIKELY(!os_protect((void *)base, size, 0))) { huge_give_back(base, size, now); return; }
#endif
  int slot = -1;
  for (int i = 0; i < HUGE_CACHE_SLOTS; i++) {
    if (g_cache[i].base == 0) { slot = i; break; }
    if (slot < 0 || g_cache[i].since_ms < g_cache[slot].since_ms) slot = i;
  }
  if (g_cache[slot].base != 0) cache_drop(slot, now);   // all full: evict the oldest
  while (g_cache_bytes + size > max) {
    int old = -1;
    for (int i = 0; i < HUGE_CACHE_SLOTS; i++)
      if (g_cache[i].base != 0 && (old < 0 || g_cache[i].since_ms < g_cache[old].since_ms)) old = i;
    if (old < 0) break;
    cache_drop(old, now);
  }
  g_cache[slot] = (huge_cached_t){base, size, now};
  g_cache_bytes += size;
  cache_note_due(now);
}

#if HAK_HARDENED
// The kernel refused to open a cached mapping or to close a fresh one's guard
// page (ENOMEM at vm.max_map_count: either splits the mapping): the allocation
// fails. A fresh mapping was never anyone's: unmapped. A cached one may still
// be reached by a stale pointer: a grave (huge_release), the refused call may
// have opened part of it.
static HAK_NOINLINE void *hardened_give_back(uintptr_t base, size_t map_size, int fresh) {
  if (fresh) {
    os_unmap((void *)base, map_size);
    return NULL;
  }
  pthread_mutex_lock(&g_huge_lock);
  HAK_SITE(SITE_HUGE_LOCK);
  huge_release((void *)base, map_size);
  HUGE_VALIDATE();
  pthread_mutex_unlock(&g_huge_lock);
  return NULL;
}
#endif

// Where the block of `size` bytes goes in the mapping [base, base + map_size):
// its start. The hardened build ends it at the guard page, as close as its
// alignment (16 at least) allows: at the start of the mapping, the rest of
// the last page past the request took an overflow unseen (40 000 000 bytes:
// 1 536 of them; an independent misuse probe).
static uintptr_t huge_block_at(uintptr_t base, size_t map_size, size_t size, size_t align) {
#if HAK_HARDENED
  size_t a = align > 16 ? align : 16;
  return (base + map_size - os_page_size() - size) & ~(uintptr_t)(a - 1);
#else
  (void)map_size; (void)size; (void)align;
  return base;
#endif
}

// calloc from a cached mapping: the pages its last block wrote hold that
// block's data. A mapping mostly resident (its block was written whole) is
// cleared with memset: a calloc of 64 MiB written whole in a loop costs 2.6
// ms of stores against 14 ms of page faults. Otherwise its pages are given
// back (MADV_DONTNEED: they read as zero and fault in as a fresh mapping's
// would): a calloc of 64 MiB of which the program writes 64 KiB took 2.3 ms
// of memset a round, 100x glibc's fresh mapping. mincore only chooses the
// cheaper way: a swapped-out page reads as not resident, and both ways clear
// every page whatever it says. Locked pages (mlock2's MLOCK_ONFAULT leaves
// them unpopulated) refuse MADV_DONTNEED and keep their data: cleared then.
static void huge_zero_reused(void *base, size_t len) {
  size_t pages = len / os_page_size();
  size_t resident = os_resident_pages(base, pages);
  if (resident != SIZE_MAX && resident * 2 <= pages && os_purge(base, len)) return;
  memset(base, 0, len);
}

void *huge_alloc(size_t size, size_t align, int zero) {
  if (size > PTRDIFF_MAX - os_page_size()) return NULL;   // no address space is that large
  size_t map_size = page_round(size);
  uintptr_t base = 0;
  int fresh = 1;
#if HAK_HARDENED
  map_size += os_page_size();          // a guard page at the end
#endif
  pthread_mutex_lock(&g_huge_lock);
  HAK_SITE(SITE_HUGE_LOCK);
  uint64_t now = os_now_ms();
  cache_expire(0, now);
  // (Hardened: a block ends at its guard page, so an aligned one sits inside
  // its mapping where the size puts it: only page alignment is reused.)
  if ((!HAK_HARDENED || align <= os_page_size()) && (base = cache_take(&map_size, align, now)) != 0)
    fresh = 0;
  else if (map_size > g_hak_config.huge_cache_max / HUGE_CACHE_ENTRY_SHARE)
    loop_note_fresh(map_size, now);   // (it is mapped afresh below)
  HUGE_VALIDATE();
  pthread_mutex_unlock(&g_huge_lock);
  if (base == 0) base = (uintptr_t)os_map_aligned(map_size, align);   // without the lock
  if (base == 0) return NULL;
#if HAK_HARDENED
  // A cached mapping is PROT_NONE, its guard included (cache_put): open all but
  // the guard; a fresh one is open: close its guard. Refused, no block.
  int opened = fresh ? os_protect((char *)base + map_size - os_page_size(), os_page_size(), 0)
                     : os_protect((void *)base, map_size - os_page_size(), 1);
  if (HAK_UNLIKELY(!opened)) return hardened_give_back(base, map_size, fresh);
#endif
  // Hardened: not the guard page (calloc of a block from a cached mapping
  // faulted there, with HAKMEM_HUGE_CACHE_MB raised so that one is cached).
  if (zero && !fresh) huge_zero_reused((void *)base, map_size - (HAK_HARDENED ? os_page_size() : 0));
  pthread_mutex_lock(&g_huge_lock);
  HAK_SITE(SITE_HUGE_LOCK);
  uintptr_t block = huge_block_at(base, map_size, size, align);
#if HAK_HARDENED
  slack_canary_fill((unsigned char *)block, block - base);
  tail_canary_fill((unsigned char *)block + size, base + map_size - os_page_size() - (block + size));
#endif
  int ok = table_insert(block, base, map_size, size) == 0;
  if (ok) { g_live_count++; g_live_bytes += map_size; }
  HUGE_VALIDATE();
  pthread_mutex_unlock(&g_huge_lock);
  if (!ok) { os_unmap((void *)base, map_size); return NULL; }
  return (void *)block;
}

// The last HUGE_FREED_SLOTS huge blocks freed (a ring, under the lock): a
// second free of one found no block, and the pointer went to the foreign
// path, which reported "free of invalid pointer (unmapped memory)" for a
// double free of a 64 MiB block or of a 64 KiB-aligned one.
#define HUGE_FREED_SLOTS 64u
HAK_BIG_BSS static uintptr_t g_freed[HUGE_FREED_SLOTS];
static unsigned g_freed_next;

int huge_freed_recently(const void *p) {
  int found = 0;
  pthread_mutex_lock(&g_huge_lock);
  HAK_SITE(SITE_HUGE_LOCK);
  if (table_find((uintptr_t)p) == NULL)            // a block there again is live, not freed
    for (unsigned i = 0; i < HUGE_FREED_SLOTS && !found; i++) found = g_freed[i] == (uintptr_t)p;
  pthread_mutex_unlock(&g_huge_lock);
  return found;
}

int huge_free(void *p) {
  pthread_mutex_lock(&g_huge_lock);
  HAK_SITE(SITE_HUGE_LOCK);
  huge_entry_t *e = table_find((uintptr_t)p);
  if (e == NULL) { pthread_mutex_unlock(&g_huge_lock); return 0; }
  uintptr_t base = e->base;
  size_t size = e->map_size;
#if HAK_HARDENED
  (void)slack_canary_check(p, e->block - base, "heap buffer underflow before a huge block at");
  (void)tail_canary_check((unsigned char *)p + e->request, base + size - os_page_size() - (e->block + e->request),
                          "heap buffer overflow past a huge block at");
#endif
  g_freed[g_freed_next] = (uintptr_t)p;
  g_freed_next = (g_freed_next + 1) % HUGE_FREED_SLOTS;
  table_remove(e);
  g_live_count--;
  g_live_bytes -= size;
  uint64_t now = os_now_ms();
  cache_expire(0, now);
  cache_put(base, size, now);
  HUGE_VALIDATE();
  pthread_mutex_unlock(&g_huge_lock);
  return 1;
}

size_t huge_usable_size(const void *p, int *interior) {
  uintptr_t a = (uintptr_t)p;
  size_t usable = 0;
  *interior = 0;
  pthread_mutex_lock(&g_huge_lock);
  HAK_SITE(SITE_HUGE_LOCK);
  huge_entry_t *e = table_find(a);
  if (e != NULL) {
#if HAK_HARDENED
    usable = e->request;               // the rest to the guard page is a canary
#else
    usable = e->map_size;
#endif
  } else if (g_table != NULL) {
    for (size_t i = 0; i < g_table_cap; i++)
      if (g_table[i].base > TABLE_TOMB && a > g_table[i].base && a < g_table[i].base + g_table[i].map_size) {
        *interior = 1;
        break;
      }
  }
  pthread_mutex_unlock(&g_huge_lock);
  return usable;
}

void *huge_try_realloc(void *p, size_t size) {
  if (HAK_HARDENED) return NULL;       // the guard page would have to move: the caller copies
  size_t new_size = page_round(size);
  void *result = NULL;
  pthread_mutex_lock(&g_huge_lock);
  HAK_SITE(SITE_HUGE_LOCK);
  huge_entry_t *e = table_find((uintptr_t)p);
  if (e != NULL) {
    size_t old_size = e->map_size;
    if (new_size <= old_size && new_size >= old_size / HUGE_SHRINK_RATIO) {
      result = p;                                   // fits, and not worth shrinking
    } else {
      // A growth by less than a quarter takes a quarter more (what realloc
      // does for smaller blocks: tcmalloc's hysteresis): a buffer grown 64
      // KiB at a time past 32 MiB made an mremap at every step (3 840 in ten
      // buffers of 64 MiB; 30 now), each one moving the page tables when the
      // address space after the mapping was taken. The pages past the request
      // are not touched, so not resident; under an address-space limit the
      // exact size is tried next.
      size_t grow = page_round(realloc_grown_size(old_size, new_size));
      void *q = os_remap(p, old_size, grow);
      if (q == NULL && grow != new_size) q = os_remap(p, old_size, grow = new_size);
      if (q != NULL) {
        table_remove(e);
        if (table_insert((uintptr_t)q, (uintptr_t)q, grow, grow) == 0) {
          g_live_bytes += grow - old_size;
          result = q;
        } else {  // cannot record it: undo, the caller copies instead
          void *back = os_remap(q, grow, old_size);
          if (back != NULL) table_insert((uintptr_t)back, (uintptr_t)back, old_size, old_size);
        }
      }
    }
  }
  HUGE_VALIDATE();
  pthread_mutex_unlock(&g_huge_lock);
  return result;
}

#if HAK_HARDENED
int huge_fault_kind(const void *p) {
  uintptr_t a = (uintptr_t)p, ps = os_page_size();
  for (int i = 0; i < HUGE_CACHE_SLOTS; i++)
    if (g_cache[i].base != 0 && a >= g_cache[i].base && a < g_cache[i].base + g_cache[i].size) return 2;
  for (unsigned i = 0; i < HUGE_GRAVE_SLOTS; i++)
    if (g_grave[i].base != 0 && a >= g_grave[i].base && a < g_grave[i].base + g_grave[i].size) return 2;
  for (size_t i = 0; g_table != NULL && i < g_table_cap; i++) {
    uintptr_t end = g_table[i].base + g_table[i].map_size;
    if (g_table[i].base > TABLE_TOMB && a >= end - ps && a < end) return 1;
    if (g_table[i].base > TABLE_TOMB && a < g_table[i].base && a >= g_table[i].base - ps) return 3;
  }
  return 0;
}
#endif

void huge_maybe_expire(uint64_t now_ms) {
  if (HAK_LIKELY(now_ms < atomic_load_explicit(&g_cache_due_ms, memory_order_relaxed))) return;
  huge_trim(0);
}

int huge_trim(int everything) {
  pthread_mutex_lock(&g_huge_lock);
  HAK_SITE(SITE_HUGE_LOCK);
  int released = cache_expire(everything, os_now_ms());
  HUGE_VALIDATE();
  pthread_mutex_unlock(&g_huge_lock);
  return released;
}

void huge_fork_prepare(void) { pthread_mutex_lock(&g_huge_lock); }
int huge_locks_settle(const struct timespec *by) { return os_mutex_settles(&g_huge_lock, by); }
void huge_fork_parent(void) { pthread_mutex_unlock(&g_huge_lock); }
void huge_fork_child(void) { pthread_mutex_unlock(&g_huge_lock); }

void huge_get_stats(huge_stats_t *out) {
  pthread_mutex_lock(&g_huge_lock);
  HAK_SITE(SITE_HUGE_LOCK);
  out->live_count = g_live_count;
  out->live_bytes = g_live_bytes;
  out->cached_bytes = g_cache_bytes;
  pthread_mutex_unlock(&g_huge_lock);
}

// ---- validation --------------------------------------------------------------

#if HAK_DEBUG
// The first broken invariant (see huge_entry_t, huge_cached_t) is reported in
// one line, then abort.
#define HUGE_REQUIRE(cond, what, where, n) \
  do { if (HAK_UNLIKELY(!(cond))) hak_report_invariant("huge invariant broken: " what " at", (const void *)(where), n); } while (0)

static void huge_validate_locked(void) {
  size_t ps = os_page_size(), used = 0, tombs = 0, bytes = 0;
  HUGE_REQUIRE((g_table == NULL) == (g_table_cap == 0), "no table == no capacity", (uintptr_t)g_table, g_table_cap);
  HUGE_REQUIRE((g_table_cap & (g_table_cap - 1)) == 0, "table capacity a power of two", (uintptr_t)g_table, g_table_cap);
  for (size_t i = 0; i < g_table_cap; i++) {
    const huge_entry_t *e = &g_table[i];
    if (e->base == TABLE_TOMB) { tombs++; continue; }
    if (e->base == TABLE_EMPTY) continue;
    HUGE_REQUIRE(e->map_size > 0 && (e->map_size & (ps - 1)) == 0 && (e->base & (ps - 1)) == 0,
                 "a block is whole pages", e->base, e->map_size);
    used++;
    bytes += e->map_size;
  }
  HUGE_REQUIRE(used == g_table_used && used == g_live_count, "live slots == g_table_used == g_live_count",
               (uintptr_t)g_table, used);
  HUGE_REQUIRE(tombs == g_table_tombs, "tombstones == g_table_tombs", (uintptr_t)g_table, tombs);
  HUGE_REQUIRE((used + tombs) * HUGE_TABLE_LOAD_DEN <= g_table_cap * HUGE_TABLE_LOAD_NUM,
               "table load within bound", (uintptr_t)g_table, used + tombs);
  HUGE_REQUIRE(bytes == g_live_bytes, "g_live_bytes == sum of live map sizes", (uintptr_t)g_table, bytes);
  for (size_t i = 0; i < g_table_cap; i++)      // the load bound above ends every probe
    HUGE_REQUIRE(g_table[i].base <= TABLE_TOMB || table_find(g_table[i].block) == &g_table[i],
                 "a block is found from its hash", g_table[i].block, i);
  size_t cached = 0;
  uint64_t now = os_now_ms();
  for (int i = 0; i < HUGE_CACHE_SLOTS; i++) {
    const huge_cached_t *c = &g_cache[i];
    if (c->base == 0) continue;
    HUGE_REQUIRE(c->size > 0 && (c->size & (ps - 1)) == 0 && (c->base & (ps - 1)) == 0,
                 "a cached mapping is whole pages", c->base, c->size);
    HUGE_REQUIRE(c->since_ms <= now, "a cached mapping was freed in the past", c->base, c->since_ms);
    HUGE_REQUIRE(table_find(c->base) == NULL, "a cached mapping is not live", c->base, (uint64_t)i);
    cached += c->size;
  }
  HUGE_REQUIRE(cached == g_cache_bytes, "g_cache_bytes == sum of cached sizes", (uintptr_t)g_cache, cached);
}

void huge_validate(void) {
  pthread_mutex_lock(&g_huge_lock);
  HAK_SITE(SITE_HUGE_LOCK);
  huge_validate_locked();
  pthread_mutex_unlock(&g_huge_lock);
}
#else
void huge_validate(void) {}
#endif
