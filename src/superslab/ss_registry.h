// ss_registry.h — which addresses are live SuperSlabs, in O(1).
//
// A bitmap with one bit per 2 MiB of the 47-bit user address space (8 MiB of
// zero-initialised .bss; only the pages covering our mappings are ever
// touched), plus a table from registry index to SuperSlab for slab ids.
// Bits are set before a SuperSlab is published and cleared before it is
// unmapped, both under the Shared Pool's registry lock; readers take no lock.
#ifndef HAK_SS_REGISTRY_H
#define HAK_SS_REGISTRY_H

#include <stdatomic.h>

#include "superslab/superslab.h"

#define SS_REGISTRY_MAX   65536u                         // 128 GiB of SuperSlabs
#define SS_ADDR_BITS      47
#define SS_BITMAP_WORDS   ((size_t)1 << (SS_ADDR_BITS - SS_SHIFT - 6))

extern HAK_INTERNAL _Atomic uint64_t g_ss_bitmap[SS_BITMAP_WORDS];
extern HAK_INTERNAL superslab_t *_Atomic g_ss_table[SS_REGISTRY_MAX];
// Links of the lock-free abandoned-slab stacks, indexed by slab id (never unmapped,
// so a racing reader of a stale id reads harmless data).
extern HAK_INTERNAL _Atomic uint32_t g_slab_next[SS_REGISTRY_MAX * SS_MAX_SLABS + 1];

HAK_INLINE int ss_registry_contains(const void *p) {
  uintptr_t a = (uintptr_t)p;
  if (HAK_UNLIKELY((a >> SS_ADDR_BITS) != 0)) return 0;
  size_t bit = a >> SS_SHIFT;
  return (int)((atomic_load_explicit(&g_ss_bitmap[bit >> 6], memory_order_relaxed) >> (bit & 63)) & 1u);
}

// The free fast path's form: the address is cut to its low 47 bits instead of
// tested, so a non-canonical pointer reads the bit of some user address. That
// is safe only with ss_of_masked below and a slab index taken from the low 21
// bits: the metadata read is then inside a live SuperSlab, and the block-start
// test on the uncut pointer fails (its offset from the slab's base is huge),
// which sends it to the slow path (where ss_registry_contains rejects it).
HAK_INLINE int ss_registry_contains_masked(const void *p) {
  size_t bit = ((uintptr_t)p & (((uintptr_t)1 << SS_ADDR_BITS) - 1)) >> SS_SHIFT;
  return (int)((atomic_load_explicit(&g_ss_bitmap[bit >> 6], memory_order_relaxed) >> (bit & 63)) & 1u);
}
HAK_INLINE superslab_t *ss_of_masked(const void *p) {
  return (superslab_t *)((uintptr_t)p & (((uintptr_t)1 << SS_ADDR_BITS) - 1) & ~(uintptr_t)SS_MASK);
}

HAK_INLINE slab_meta_t *slab_from_id(uint32_t id) {
  superslab_t *ss = atomic_load_explicit(&g_ss_table[(id - 1) / SS_MAX_SLABS], memory_order_acquire);
  return &ss->slabs[(id - 1) % SS_MAX_SLABS];
}

// Reserve a registry index and mark ss live (registry lock held). -1 when full.
int  ss_registry_add(superslab_t *ss);
// Forget ss (registry lock held); its index becomes free for reuse.
void ss_registry_remove(superslab_t *ss);
// Number of registry slots ever used (upper bound for iteration).
uint32_t ss_registry_high_water(void);

#endif
