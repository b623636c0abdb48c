// ss_registry.h — which addresses are live SuperSlabs, in O(1).
//
// A byte map with one entry per 2 MiB of the 47-bit user address space (64 MiB
// of zero-initialised .bss: untouched pages cost no memory, and one 4 KiB page
// covers 8 GiB of SuperSlabs): 0 where no live SuperSlab is, else that
// SuperSlab's metadata shift, its slab shift less 7 (9..14: slab metadata is
// 128 = 2^7 bytes), so free finds the slab's metadata with the one load that
// says the address is ours, one shift and one mask (ss_meta_of). Plus a
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
// the slot from five bits of the address: the metadata read is then inside a live
// SuperSlab, and the block-start test on the uncut pointer fails (its offset
// from the slab's base is huge), which sends it to the slow path (where
// ss_registry_contains rejects it).
HAK_INLINE superslab_t *ss_of_masked(const void *p) {
  return (superslab_t *)((uintptr_t)p & (((uintptr_t)1 << SS_ADDR_BITS) - 1) & ~(uintptr_t)SS_MASK);
}
// The metadata shift of ss (from ss_of_masked) if it is a live SuperSlab, else 0.
HAK_INLINE unsigned ss_registry_meta_shift(const superslab_t *ss) {
  return atomic_load_explicit(&g_ss_map[(uintptr_t)ss >> SS_SHIFT], memory_order_relaxed);
}
#define SS_META_SHIFT_BIAS 7u
_Static_assert(sizeof(slab_meta_t) == (1u << SS_META_SHIFT_BIAS), "a map entry is the slab shift less log2 of a meta");
_Static_assert(SS_SHIFT - SS_META_SHIFT_BIAS < 256 && 16 - SS_META_SHIFT_BIAS > 0, "a map entry is a non-zero byte");
HAK_INLINE unsigned ss_meta_shift_of(unsigned slab_shift) { return slab_shift - SS_META_SHIFT_BIAS; }
// The metadata of the slab holding p, in the SuperSlab ss whose map entry is
// meta_shift: (p >> meta_shift) masked to 5 bits times 128 is its slot's offset
// in slabs[] (ss_slab_of, in one shift and one mask). p may be the uncut pointer:
// the read stays inside ss's metadata whatever p's upper bits.
HAK_INLINE slab_meta_t *ss_meta_of(superslab_t *ss, const void *p, unsigned meta_shift) {
  return (slab_meta_t *)((char *)ss->slabs +
                         (((uintptr_t)p >> meta_shift) & ((uintptr_t)(SS_MAX_SLABS - 1) << SS_META_SHIFT_BIAS)));
}

// The slab of p, a block of a live SuperSlab (a held, listed or live block),
// found as free finds it: through the byte map (one hot byte per 2 MiB), not
// the SuperSlab header's slab_shift. Every SuperSlab header is 2 MiB aligned,
// so their first lines share one cache set: reading slab_shift on every
// medium malloc was 77% of ws-medium's hardened LL read misses (cachegrind).
HAK_INLINE slab_meta_t *ss_registry_slab_of(const void *p) {
  superslab_t *ss = ss_of_masked(p);
  return ss_meta_of(ss, p, ss_registry_meta_shift(ss));
}

HAK_INLINE slab_meta_t *slab_from_id(uint32_t id) {
  superslab_t *ss = atomic_load_explicit(&g_ss_table[(id - 1) / SS_MAX_SLABS], memory_order_acquire);
  return ss_slab(ss, (id - 1) % SS_MAX_SLABS);
}

// Reserve a registry index and mark ss live (registry lock held). -1 when full.
int  ss_registry_add(superslab_t *ss);
// Forget ss (registry lock held); its index becomes free for reuse.
void ss_registry_remove(superslab_t *ss);
// Number of registry slots ever used (upper bound for iteration).
uint32_t ss_registry_high_water(void);

#endif
