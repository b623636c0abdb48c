// ss_registry.h — which addresses are live SuperSlabs, in O(1).
//
// A byte map with one entry per 2 MiB of the 47-bit user address space (64 MiB
// of zero-initialised .bss: untouched pages cost no memory, and one 4 KiB page
// covers 8 GiB of SuperSlabs): 0 where no live SuperSlab is, else that
// SuperSlab's slab shift (log2 of its slab size, 16..21), so free finds the
// slab's metadata with the one load that says the address is ours. Plus a
// table from registry index to SuperSlab for slab ids. Entries are set before
// a SuperSlab is published and cleared before it is unmapped, both under the
// Shared Pool's registry lock; readers take no lock.
#ifndef HAK_SS_REGISTRY_H
#define HAK_SS_REGISTRY_H

#include <stdatomic.h>

#include "superslab/superslab.h"

#define SS_REGISTRY_MAX   65536u                         // 128 GiB of SuperSlabs
#define SS_ADDR_BITS      47
#define SS_MAP_ENTRIES    ((size_t)1 << (SS_ADDR_BITS - SS_SHIFT))

extern HAK_INTERNAL _Atomic uint8_t g_ss_map[SS_MAP_ENTRIES];
extern HAK_INTERNAL superslab_t *_Atomic g_ss_table[SS_REGISTRY_MAX];
// Links of the lock-free abandoned-slab stacks, indexed by slab id (never unmapped,
// so a racing reader of a stale id reads harmless data).
extern HAK_INTERNAL _Atomic uint32_t g_slab_next[SS_REGISTRY_MAX * SS_MAX_SLABS + 1];

HAK_INLINE int ss_registry_contains(const void *p) {
  uintptr_t a = (uintptr_t)p;
  if (HAK_UNLIKELY((a >> SS_ADDR_BITS) != 0)) return 0;
  return atomic_load_explicit(&g_ss_map[a >> SS_SHIFT], memory_order_relaxed) != 0;
}

// The free fast path's form: the address is cut to its low 47 bits instead of
// tested, so a non-canonical pointer reads the entry of some user address.
// That is safe only because the SuperSlab is taken from the cut address and
// the slab index from the low 21 bits: the metadata read is then inside a live
// SuperSlab, and the block-start test on the uncut pointer fails (its offset
// from the slab's base is huge), which sends it to the slow path (where
// ss_registry_contains rejects it).
HAK_INLINE superslab_t *ss_of_masked(const void *p) {
  return (superslab_t *)((uintptr_t)p & (((uintptr_t)1 << SS_ADDR_BITS) - 1) & ~(uintptr_t)SS_MASK);
}
// The slab shift of ss (from ss_of_masked) if it is a live SuperSlab, else 0.
HAK_INLINE unsigned ss_registry_shift(const superslab_t *ss) {
  return atomic_load_explicit(&g_ss_map[(uintptr_t)ss >> SS_SHIFT], memory_order_relaxed);
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
