// ss_registry.c — the live-SuperSlab byte map and index table (see ss_registry.h).
#include "superslab/ss_registry.h"

// Laid out in this order (HAK_NO_REORDER; GCC emitted them in reverse), for the
// 2 MiB regions of the library's mapping that a process touches: each
// region with a present page is a page table that every fork copies and
// every exit frees (~6 us a region on this project's VM, fork and exit).
// The map's first page is read by every free(NULL) (the fast path reads
// the entry of a NULL's address) and of low addresses; its entries that a
// process writes are its SuperSlabs', mapped below its libraries near the
// top of the address space: the map's last few hundred KB (within 512 KiB
// for mappings in the top TiB). So the map starts in the first region,
// with the small variables and .data (only the page heap's bits and the
// free index stack, 512 KiB, lie before it), and the index table, whose
// first page every process writes, follows the map's end, as does the
// abandoned stacks' link array (a threaded program's). With the table and
// the links before the map, a process start touched three regions of the
// library (test_process --startup-pages), now two.
// Free registry indices (g_registry_lock): a stack of released ones, then new ones.
HAK_BIG_BSS HAK_NO_REORDER static uint32_t g_free_index[SS_REGISTRY_MAX];
HAK_BIG_BSS HAK_NO_REORDER _Atomic uint8_t g_ss_map[SS_MAP_ENTRIES];
HAK_BIG_BSS HAK_NO_REORDER superslab_t *_Atomic g_ss_table[SS_REGISTRY_MAX];
HAK_BIG_BSS HAK_NO_REORDER _Atomic uint32_t g_slab_next[SS_REGISTRY_MAX * SS_MAX_SLABS + 1];

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
