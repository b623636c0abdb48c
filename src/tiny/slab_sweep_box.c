// slab_sweep_box.c — a slab's free list put back in address order (see
// slab_sweep_box.h).
#include "tiny/slab_sweep_box.h"

#include "stats/stats.h"

// Bits of a free block's decoded link word that no list writes: a link is an
// address (16-byte aligned, below 2^47), NULL or the list's end; the 16-byte
// class's chain record (bit 0 set) has none above BLOCK_CHAIN16_USED.
HAK_INLINE uintptr_t block_link_word_bad(hak_base_ptr_t b, uintptr_t cookie, uintptr_t bad_bits, int packed) {
  uintptr_t d = *(const uintptr_t *)hak_base_raw(b) ^ block_link_key_keyed(b, cookie);
  return packed && (d & 1u) ? d >> BLOCK_CHAIN16_USED : d & bad_bits;
}

// The first pass over one bitmap word's blocks (n <= 64 from p): a bit for
// each block that carries its free mark, and, or'ed into *bad, the bad bits of
// those blocks' link words. `packed` is a constant at each call, so the loop
// tests no class; unrolled by 4 (20 -> ~15 instructions a block; the whole
// sweep 31.0 M -> 26.4 M under callgrind in `rounds --mb 32 --size 32
// --shuffle -n 3`, its time in paired rounds level).
HAK_INLINE uint64_t sweep_marks(const char *p, uint32_t n, uint32_t bs, uintptr_t cookie, uintptr_t bad_bits,
                                const int packed, uintptr_t *bad) {
  uint64_t bits = 0;
  uintptr_t acc = 0;
#pragma GCC unroll 4
  for (uint32_t j = 0; j < n; j++, p += bs) {
    hak_base_ptr_t b = hak_base_from_raw((void *)p);
    uint64_t is_free = block_mark(b) == block_free_mark_keyed(b, cookie);
    bits |= is_free << j;
    acc |= block_link_word_bad(b, cookie, bad_bits, packed) & -(uintptr_t)is_free;
  }
  *bad |= acc;
  return bits;
}

// Each marked block whose link word is forged, reported (and the process
// aborted, HAKMEM_ABORT_ON_ERROR=1) as a walk of the list would.
static HAK_NOINLINE void sweep_report_forged(const slab_meta_t *m, const uint64_t *marked, uint32_t words,
                                             uintptr_t cookie, uintptr_t bad_bits, int packed) {
  for (uint32_t w = 0; w < words; w++) {
    for (uint64_t bits = marked[w]; bits != 0; bits &= bits - 1u) {
      size_t i = (size_t)w * 64u + (unsigned)__builtin_ctzll(bits);
      hak_base_ptr_t b = hak_base_from_raw(m->base + i * m->block_size);
      if (block_link_word_bad(b, cookie, bad_bits, packed) != 0) tls_sll_report_corrupt(b, m->cls);
    }
  }
}

int slab_sweep(slab_meta_t *m, uint32_t carved) {
  uint32_t bs = m->block_size;
  char *base = m->base;
  HAK_ASSERT(carved <= SLAB_SWEEP_MAX_BLOCKS && m->freelist != NULL);
  const uintptr_t cookie = g_block_cookie, bad_bits = g_block_keys.link_bad_bits;
  const int packed = block_chain_packed(m);
  // First pass: which carved blocks carry their free mark, in address order;
  // and whether any of them has a link word no free list holds.
  uint64_t marked[SLAB_SWEEP_MAX_BLOCKS / 64u];
  uint32_t words = (carved + 63u) / 64u, k = 0;
  uintptr_t bad = 0;
  for (uint32_t w = 0; w < words; w++) {
    uint32_t in_word = carved - w * 64u < 64u ? carved - w * 64u : 64u;
    const char *p = base + (size_t)w * 64u * bs;
    uint64_t bits = packed ? sweep_marks(p, in_word, bs, cookie, bad_bits, 1, &bad)
                           : sweep_marks(p, in_word, bs, cookie, bad_bits, 0, &bad);
    marked[w] = bits;
    k += (uint32_t)__builtin_popcountll(bits);
  }
  hak_thread_counters_t *tc = hak_counters();
  if (k != m->free_n) {
    tc->sweeps_unmatched++;
    uint32_t off = k > m->free_n ? k - m->free_n : m->free_n - k, wait = carved / SLAB_SWEEP_RETRY_DEN;
    m->sweep_wait = (uint16_t)(off > wait ? off : wait);   // (<= SLAB_SWEEP_MAX_BLOCKS; the refill's take sets sweep_seen)
    return 0;
  }
  // The marked blocks are the listed ones (a block marked but held
  // elsewhere, a batch's, has the program's word there: not checked).
  if (HAK_UNLIKELY(bad != 0)) sweep_report_forged(m, marked, words, cookie, bad_bits, packed);
  // Second pass: the marked blocks linked in address order, one chain whose
  // last block links to the list's end (slab_list_end), as a list that came
  // home in one run. The first (k == free_n > 0: there is one) is found
  // apart, so the loop links every block it meets with no test of the first
  // (16 -> ~14 instructions a block).
  HAK_ASSERT(k != 0);
  uint32_t w = 0;
  while (marked[w] == 0) w++;
  uint64_t bits = marked[w];
  hak_base_ptr_t first = hak_base_from_raw(base + ((size_t)w * 64u + (unsigned)__builtin_ctzll(bits)) * bs);
  hak_base_ptr_t prev = first;
  for (bits &= bits - 1u;;) {
    const char *at = base + (size_t)w * 64u * bs;
    for (; bits != 0; bits &= bits - 1u) {
      hak_base_ptr_t b = hak_base_from_raw((void *)(at + (size_t)(unsigned)__builtin_ctzll(bits) * bs));
      block_set_next_keyed(prev, b, cookie);
      prev = b;
    }
    if (++w == words) break;
    bits = marked[w];
  }
  block_set_next_keyed(prev, slab_list_end(m), cookie);
  block_set_chain(m, first, prev, k, HAK_BASE_NULL);   // (the 16-byte class's reads first's link)
  m->freelist = hak_base_raw(first);
  tc->sweeps++;
  tc->swept_blocks += k;
  return 1;
}
