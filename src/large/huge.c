// huge.c — direct-mmap blocks, their table and cache (see huge.h).
#include "large/huge.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "config/config.h"
#include "os/os.h"

#define HUGE_CACHE_SLOTS   32
#define HUGE_CACHE_TTL_MS  1000u

typedef struct huge_entry {
  uintptr_t ptr;       // what the program holds; 0 = empty, 1 = tombstone
  uintptr_t base;      // start of the mapping
  size_t    map_size;  // bytes mapped
} huge_entry_t;

typedef struct huge_cached {
  uintptr_t base;
  size_t    size;
  uint64_t  since_ms;
} huge_cached_t;

static pthread_mutex_t g_huge_lock = PTHREAD_MUTEX_INITIALIZER;
static huge_entry_t *g_table;          // open addressing, capacity a power of two
static size_t g_table_cap, g_table_used, g_table_tombs;
static size_t g_live_count, g_live_bytes;
static huge_cached_t g_cache[HUGE_CACHE_SLOTS];
static size_t g_cache_bytes;

#define TOMB ((uintptr_t)1)

static size_t page_round(size_t n) { size_t ps = os_page_size(); return (n + ps - 1) & ~(ps - 1); }
static size_t hash_ptr(uintptr_t p) { return (size_t)((p >> 12) * 0x9e3779b97f4a7c15ull); }

static huge_entry_t *table_find(uintptr_t p) {
  if (g_table == NULL) return NULL;
  size_t mask = g_table_cap - 1;
  for (size_t i = hash_ptr(p) & mask;; i = (i + 1) & mask) {
    if (g_table[i].ptr == p) return &g_table[i];
    if (g_table[i].ptr == 0) return NULL;
  }
}

static int table_grow(void) {
  size_t cap = g_table_cap ? g_table_cap * 2 : 1024;
  huge_entry_t *t = os_map_aligned(cap * sizeof *t, 0);
  if (t == NULL) return -1;
  for (size_t i = 0; i < g_table_cap; i++) {
    if (g_table[i].ptr <= TOMB) continue;
    size_t j = hash_ptr(g_table[i].ptr) & (cap - 1);
    while (t[j].ptr != 0) j = (j + 1) & (cap - 1);
    t[j] = g_table[i];
  }
  if (g_table) os_unmap(g_table, g_table_cap * sizeof *g_table);
  g_table = t;
  g_table_cap = cap;
  g_table_tombs = 0;
  return 0;
}

static int table_insert(uintptr_t p, uintptr_t base, size_t map_size) {
  if ((g_table_used + g_table_tombs + 1) * 10 > g_table_cap * 6 && table_grow() != 0) return -1;
  size_t mask = g_table_cap - 1;
  size_t i = hash_ptr(p) & mask;
  while (g_table[i].ptr > TOMB) i = (i + 1) & mask;
  if (g_table[i].ptr == TOMB) g_table_tombs--;
  g_table[i] = (huge_entry_t){p, base, map_size};
  g_table_used++;
  return 0;
}

static void table_remove(huge_entry_t *e) {
  e->ptr = TOMB;
  g_table_used--;
  g_table_tombs++;
}

// The smallest cached mapping of at least *size_io bytes and at most twice
// that (its size is stored back), or 0. Large blocks come from the page heap,
// so this cache serves only huge and strongly aligned blocks: reuse whole.
static uintptr_t cache_take(size_t *size_io) {
  size_t size = *size_io;
  int best = -1;
  for (int i = 0; i < HUGE_CACHE_SLOTS; i++) {
    size_t s = g_cache[i].size;
    if (g_cache[i].base != 0 && s >= size && s / 2 <= size && (best < 0 || s < g_cache[best].size))
      best = i;
  }
  if (best < 0) return 0;
  uintptr_t base = g_cache[best].base;
  *size_io = g_cache[best].size;
  g_cache_bytes -= *size_io;
  g_cache[best].base = 0;
  return base;
}

static void cache_expire(int everything, int *released) {
  uint64_t now = os_now_ms();
  for (int i = 0; i < HUGE_CACHE_SLOTS; i++) {
    if (g_cache[i].base == 0) continue;
    if (everything || now - g_cache[i].since_ms >= HUGE_CACHE_TTL_MS) {
      os_unmap((void *)g_cache[i].base, g_cache[i].size);
      g_cache_bytes -= g_cache[i].size;
      g_cache[i].base = 0;
      *released = 1;
    }
  }
}

// Keep a freed mapping for reuse, or unmap it.
static void cache_put(uintptr_t base, size_t size) {
  if (size > g_hak_config.huge_cache_max / 4) { os_unmap((void *)base, size); return; }
  int slot = -1;
  for (int i = 0; i < HUGE_CACHE_SLOTS; i++) {
    if (g_cache[i].base == 0) { slot = i; break; }
    if (slot < 0 || g_cache[i].since_ms < g_cache[slot].since_ms) slot = i;
  }
  if (g_cache[slot].base != 0) {          // evict the oldest
    os_unmap((void *)g_cache[slot].base, g_cache[slot].size);
    g_cache_bytes -= g_cache[slot].size;
    g_cache[slot].base = 0;
  }
  while (g_cache_bytes + size > g_hak_config.huge_cache_max) {
    int old = -1;
    for (int i = 0; i < HUGE_CACHE_SLOTS; i++)
      if (g_cache[i].base != 0 && (old < 0 || g_cache[i].since_ms < g_cache[old].since_ms)) old = i;
    if (old < 0) break;
    os_unmap((void *)g_cache[old].base, g_cache[old].size);
    g_cache_bytes -= g_cache[old].size;
    g_cache[old].base = 0;
  }
  g_cache[slot] = (huge_cached_t){base, size, os_now_ms()};
  g_cache_bytes += size;
}

void *huge_alloc(size_t size, size_t align, int zero) {
  if (size > PTRDIFF_MAX - os_page_size()) return NULL;   // no address space is that large
  size_t map_size = page_round(size);
  uintptr_t base = 0;
  int fresh = 1;
  pthread_mutex_lock(&g_huge_lock);
  int released = 0;
  cache_expire(0, &released);
  if (align <= os_page_size() && (base = cache_take(&map_size)) != 0) fresh = 0;
  pthread_mutex_unlock(&g_huge_lock);
  if (base == 0) base = (uintptr_t)os_map_aligned(map_size, align);
  if (base == 0) return NULL;
  if (zero && !fresh) memset((void *)base, 0, map_size);
  pthread_mutex_lock(&g_huge_lock);
  int ok = table_insert(base, base, map_size) == 0;
  if (ok) { g_live_count++; g_live_bytes += map_size; }
  pthread_mutex_unlock(&g_huge_lock);
  if (!ok) { os_unmap((void *)base, map_size); return NULL; }
  return (void *)base;
}

int huge_free(void *p) {
  pthread_mutex_lock(&g_huge_lock);
  huge_entry_t *e = table_find((uintptr_t)p);
  if (e == NULL) { pthread_mutex_unlock(&g_huge_lock); return 0; }
  uintptr_t base = e->base;
  size_t size = e->map_size;
  table_remove(e);
  g_live_count--;
  g_live_bytes -= size;
  int released = 0;
  cache_expire(0, &released);
  cache_put(base, size);
  pthread_mutex_unlock(&g_huge_lock);
  return 1;
}

size_t huge_usable_size(const void *p, int *interior) {
  uintptr_t a = (uintptr_t)p;
  size_t usable = 0;
  *interior = 0;
  pthread_mutex_lock(&g_huge_lock);
  huge_entry_t *e = table_find(a);
  if (e != NULL) {
    usable = e->map_size - (e->ptr - e->base);
  } else if (g_table != NULL) {
    for (size_t i = 0; i < g_table_cap; i++)
      if (g_table[i].ptr > TOMB && a > g_table[i].ptr && a < g_table[i].base + g_table[i].map_size) {
        *interior = 1;
        break;
      }
  }
  pthread_mutex_unlock(&g_huge_lock);
  return usable;
}

void *huge_try_realloc(void *p, size_t size) {
  size_t new_size = page_round(size);
  void *result = NULL;
  pthread_mutex_lock(&g_huge_lock);
  huge_entry_t *e = table_find((uintptr_t)p);
  if (e != NULL && e->ptr == e->base) {
    size_t old_size = e->map_size;
    if (new_size <= old_size && new_size >= old_size / 2) {
      result = p;                                   // fits, and not worth shrinking
    } else {
      void *q = os_remap((void *)e->base, old_size, new_size);
      if (q != NULL) {
        table_remove(e);
        if (table_insert((uintptr_t)q, (uintptr_t)q, new_size) == 0) {
          g_live_bytes += new_size - old_size;
          result = q;
        } else {  // cannot record it: undo, the caller copies instead
          void *back = os_remap(q, new_size, old_size);
          if (back != NULL) table_insert((uintptr_t)back, (uintptr_t)back, old_size);
        }
      }
    }
  }
  pthread_mutex_unlock(&g_huge_lock);
  return result;
}

int huge_trim(int everything) {
  int released = 0;
  pthread_mutex_lock(&g_huge_lock);
  cache_expire(everything, &released);
  pthread_mutex_unlock(&g_huge_lock);
  return released;
}

void huge_fork_prepare(void) { pthread_mutex_lock(&g_huge_lock); }
void huge_fork_parent(void) { pthread_mutex_unlock(&g_huge_lock); }
void huge_fork_child(void) { pthread_mutex_unlock(&g_huge_lock); }

void huge_get_stats(huge_stats_t *out) {
  pthread_mutex_lock(&g_huge_lock);
  out->live_count = g_live_count;
  out->live_bytes = g_live_bytes;
  out->cached_bytes = g_cache_bytes;
  pthread_mutex_unlock(&g_huge_lock);
}
