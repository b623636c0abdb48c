// tls_sll_box.c — the TLS lists' globals and reports (see tls_sll_box.h).
#include "tiny/tls_sll_box.h"

#include "debug/report.h"
#include "superslab/ss_registry.h"
#include "tiny/tiny_thread.h"

const uintptr_t g_tls_sll_end[2] __attribute__((aligned(16))) = {HAK_LINK_ENCODE ? 0u : 1u, 0u};
#if HAK_DEBUG
#define TLS_SLL_END_INIT {(void *)g_tls_sll_end}
#else
#define TLS_SLL_END_INIT ((void *)g_tls_sll_end)
#endif

// Line-aligned (the TLS block then is too): where its lists fall on cache
// lines does not depend on the TLS of the program it is loaded into.
__thread tls_cache_t t_tls_cache __attribute__((tls_model("initial-exec"), aligned(64))) = {
  .lists = { [0 ... HAK_NUM_CLASSES - 1] = { .head = TLS_SLL_END_INIT } },
};
const uint8_t g_tls_slot_lut[HAK_TINY_MAX + 1] = { HAK_TINY_CLASS_LUT_INIT_AS(HAK_TLS_SLOT_OF) };
int32_t g_size_list_tpoff[HAK_TINY_MAX + 1];
#if !defined(__x86_64__)
tls_list_t g_tls_list_unset = { .head = TLS_SLL_END_INIT };
#endif

// Non-zero before start-up randomises it, so no block can be marked by accident.
block_keys_t g_block_keys __attribute__((aligned(16))) = {
  .cookie = 0x9e3779b97f4a7c15u,
  .link_bad_bits = BLOCK_LINK_BAD_BITS,
};

// The top bit set: see block_link_plausible (tls_sll_box.h).
void tls_sll_seed_cookie(uint64_t seed) { g_block_cookie = (uintptr_t)seed | ((uintptr_t)1 << 63); }

void tls_sll_init_offsets(void) {
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) g_class_tls_off[c] = tls_list_tp_offset(c);
  // Class c's list is c lists past class 0's (lists[] is an array): the size
  // table is class 0's offset plus a multiple of the LUT's entry, a loop GCC
  // vectorises when its count is a multiple of the vector's (every process
  // runs it at start: 6.5 k -> 1.8 k instructions under callgrind, against
  // the class's offset looked up entry by entry; a preloaded /bin/true
  // 186.1 k -> 181.5 k).
  const int32_t base = g_class_tls_off[0];
  for (size_t n = 0; n < HAK_TINY_MAX; n++)
    g_size_list_tpoff[n] = base + (int32_t)g_tiny_class_lut[n] * (int32_t)sizeof(tls_list_t);
  g_size_list_tpoff[HAK_TINY_MAX] = g_class_tls_off[size_class_tiny(HAK_TINY_MAX)];
}

void tls_sll_report_corrupt(hak_base_ptr_t b, unsigned cls) {
  char line[128], num[24];
  size_t n = hak_fmt_str(line, sizeof line, 0, "hakmem: corrupted free list in class ");
  hak_fmt_u64(num, sizeof num, cls);
  n = hak_fmt_str(line, sizeof line, n, num);
  n = hak_fmt_str(line, sizeof line, n, " (block ");
  hak_fmt_hex(num, sizeof num, (unsigned long long)(uintptr_t)hak_base_raw(b));
  n = hak_fmt_str(line, sizeof line, n, num);
  hak_fmt_str(line, sizeof line, n, "): use after free?");
  hak_report_error(line);
}

hak_base_ptr_t tls_sll_pop_corrupt(tls_cache_t *tc, unsigned cls, hak_base_ptr_t b) {
  tls_sll_report_corrupt(b, cls);
  tc->lists[cls].head = TLS_SLL_END;   // the rest of the list is dropped
  tc->lists[cls].room = tc->cap[cls];
  block_clear_free(b);
  return b;
}

void tls_sll_report_double_free(hak_base_ptr_t b, unsigned cls, uint32_t block_size) {
  hak_report_pointer_numbers("double free of", hak_base_raw(b), " (class ", cls, ", ", block_size, " bytes)");
}

#if HAK_DEBUG
void tls_sll_validate(unsigned cls) {
  tls_cache_t *tc = &t_tls_cache;
  if (t_thread_status != THREAD_LIVE) {
    HAK_CHECK(tls_sll_empty(tc, cls) && tc->lists[cls].room == 0, "a thread that is not set up has an empty list",
              tc);
    return;
  }
  uint32_t len = 0, cap = tc->cap[cls];
  for (hak_base_ptr_t b = tc->lists[cls].head; !tls_sll_is_end(b); b = block_next(b)) {
    HAK_CHECK(block_link_plausible(block_next(b)), "TLS list link corrupted", hak_base_raw(b));
    void *p = hak_base_raw(b);
    HAK_CHECK(++len <= cap, "TLS list longer than its bound", p);
    HAK_CHECK(ss_registry_contains(p), "TLS list block in no SuperSlab", p);
    const slab_meta_t *m = ss_slab_of(ss_of(p), p);
    HAK_CHECK(m->cls == cls && m->capacity != 0, "TLS list block in a slab of another class", p);
    HAK_CHECK(((uintptr_t)p - (uintptr_t)m->base) % m->block_size == 0, "TLS list block not a block start", p);
    HAK_CHECK(block_is_free(b), "TLS list block without its free mark", p);
  }
  HAK_CHECK(len + tc->lists[cls].room == cap, "TLS list length + room != bound", hak_base_raw(tc->lists[cls].head));
}
#endif
