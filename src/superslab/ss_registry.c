// ss_registry.c — the live-SuperSlab byte map and index table (see ss_registry.h).
#include "superslab/ss_registry.h"

HAK_BIG_BSS _Atomic uint8_t g_ss_map[SS_MAP_ENTRIES];
HAK_BIG_BSS superslab_t *_Atomic g_ss_table[SS_REGISTRY_MAX];
HAK_BIG_BSS _Atomic uint32_t g_slab_next[SS_REGISTRY_MAX * SS_MAX_SLABS + 1];

// Free registry indices (g_registry_lock): a stack of released ones, then new ones.
HAK_BIG_BSS static uint32_t g_free_index[SS_REGISTRY_MAX];
static uint32_t g_free_index_count;
static uint32_t g_high_water;

// release: a reader that sees the entry sees the SuperSlab's header.
static void map_set(const superslab_t *ss, int on) {
  atomic_store_explicit(&g_ss_map[(uintptr_t)ss >> SS_SHIFT], on ? ss_meta_shift_of(ss->slab_shift) : 0, memory_order_release);
}

int ss_registry_add(superslab_t *ss) {
  if ((uintptr_t)ss >> SS_ADDR_BITS) return -1;
  uint32_t idx;
  if (g_free_index_count > 0) idx = g_free_index[--g_free_index_count];
  else if (g_high_water < SS_REGISTRY_MAX) idx = g_high_water++;
  else return -1;
  ss->index = idx;
  atomic_store_explicit(&g_ss_table[idx], ss, memory_order_release);
  map_set(ss, 1);
  return 0;
}

void ss_registry_remove(superslab_t *ss) {
  map_set(ss, 0);
  atomic_store_explicit(&g_ss_table[ss->index], NULL, memory_order_release);
  g_free_index[g_free_index_count++] = ss->index;
}

uint32_t ss_registry_high_water(void) { return g_high_water; }
