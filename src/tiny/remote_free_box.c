// remote_free_box.c — see remote_free_box.h.
#include "tiny/remote_free_box.h"

#include "debug/report.h"
#include "shared_pool/shared_pool.h"
#include "stats/stats.h"

void remote_free_push_chain(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n) {
  void *old = atomic_load_explicit(&m->remote_head, memory_order_relaxed);
  do {
    *(void **)hak_base_raw(last) = old;
  } while (!atomic_compare_exchange_weak_explicit(&m->remote_head, &old, hak_base_raw(first),
                                                  memory_order_seq_cst, memory_order_relaxed));
  // A slab nobody owns and nobody lists gets listed by its first remote free,
  // while our blocks still keep it from being recycled.
  uint32_t w = atomic_load_explicit(&m->state, memory_order_seq_cst);
  if (SLAB_STATE(w) == SLAB_DETACHED &&
      atomic_compare_exchange_strong(&m->state, &w, SLAB_WITH(w, SLAB_LISTED)))
    shared_pool_list_partial(m);
  hak_stat_add_remote_frees(n);
  if (atomic_fetch_sub_explicit(&m->used, n, memory_order_acq_rel) == n) shared_pool_slab_empty(m);
}

uint32_t ss_remote_drain_to_freelist(slab_meta_t *m) {
  void *chain = atomic_exchange_explicit(&m->remote_head, NULL, memory_order_acquire);
  if (chain == NULL) return 0;
  uint32_t n = 1;
  void *tail = chain;
  for (void *next; (next = *(void **)tail) != NULL; tail = next) {
    if (HAK_UNLIKELY(++n > m->capacity)) {
      hak_report_pointer_error("remote free list longer than its slab's capacity (corrupted) in slab", m,
                               NULL);
      return 0;
    }
  }
  *(void **)tail = m->freelist;
  m->freelist = chain;
  return n;
}
