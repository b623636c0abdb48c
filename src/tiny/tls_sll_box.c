// tls_sll_box.c — the TLS lists' globals and reports (see tls_sll_box.h).
#include "tiny/tls_sll_box.h"

#include "debug/report.h"
#include "superslab/ss_registry.h"
#include "tiny/tiny_thread.h"

__thread tls_cache_t t_tls_cache __attribute__((tls_model("initial-exec")));

// Non-zero before start-up randomises it, so no block can be marked by accident.
uintptr_t g_block_cookie = 0x9e3779b97f4a7c15u;

void tls_sll_seed_cookie(uint64_t seed) { g_block_cookie = (uintptr_t)seed | 1u; }

void tls_sll_report_double_free(hak_base_ptr_t b, unsigned cls, uint32_t block_size) {
  char detail[64];
  size_t n = hak_fmt_str(detail, sizeof detail, 0, " (class ");
  n += hak_fmt_u64(detail + n, sizeof detail - n, cls);
  n = hak_fmt_str(detail, sizeof detail, n, ", ");
  n += hak_fmt_u64(detail + n, sizeof detail - n, block_size);
  hak_fmt_str(detail, sizeof detail, n, " bytes)");
  hak_report_pointer_error("double free of", hak_base_raw(b), detail);
}

#if HAK_DEBUG
void tls_sll_validate(unsigned cls) {
  tls_cache_t *tc = &t_tls_cache;
  if (t_heap.status != THREAD_LIVE) {
    HAK_CHECK(hak_base_is_null(tc->head[cls]) && tc->room[cls] == 0, "a thread that is not set up has an empty list",
              tc);
    return;
  }
  uint32_t len = 0, cap = g_size_class[cls].tls_cap;
  for (hak_base_ptr_t b = tc->head[cls]; !hak_base_is_null(b); b = block_next(b)) {
    void *p = hak_base_raw(b);
    HAK_CHECK(++len <= cap, "TLS list longer than its bound", p);
    HAK_CHECK(ss_registry_contains(p), "TLS list block in no SuperSlab", p);
    const slab_meta_t *m = ss_slab_of(ss_of(p), p);
    HAK_CHECK(m->cls == cls && m->capacity != 0, "TLS list block in a slab of another class", p);
    HAK_CHECK(((uintptr_t)p - (uintptr_t)m->base) % m->block_size == 0, "TLS list block not a block start", p);
    HAK_CHECK(block_is_free(b), "TLS list block without its free mark", p);
  }
  HAK_CHECK(len + tc->room[cls] == cap, "TLS list length + room != bound", hak_base_raw(tc->head[cls]));
}
#endif
