// remote_free_box.c — see remote_free_box.h.
#include "tiny/remote_free_box.h"

#include "debug/report.h"
#include "shared_pool/shared_pool.h"
#include "stats/stats.h"
#include "tiny/tiny_heap.h"
#include "tiny/tls_sll_box.h"

void remote_free_push_chain(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n) {
  void *old = atomic_load_explicit(&m->remote_head, memory_order_relaxed);
  do {
    block_set_next(last, hak_base_from_raw(old));
    if (BLOCK_CHAIN_RECORDS) block_set_chain(m, first, last, n, hak_base_from_raw(old));
    // seq_cst: release so the drainer sees the links; ordered before our
    // seq_cst loads of the state and notify words below (Dekker with the
    // owner's detach and arming, which store then load remote_head).
  } while (!atomic_compare_exchange_weak_explicit(&m->remote_head, &old, hak_base_raw(first),
                                                  memory_order_seq_cst, memory_order_relaxed));
  HAK_SITE(SITE_REMOTE_PUSH);
  // A slab nobody owns and nobody lists gets listed by its first remote free,
  // while our blocks still keep it from being recycled.
  uint32_t w = atomic_load_explicit(&m->state, memory_order_seq_cst);
  if (SLAB_STATE(w) == SLAB_DETACHED) {
    HAK_SITE(SITE_SLAB_STATE);
    if (atomic_compare_exchange_strong(&m->state, &w, SLAB_WITH(w, SLAB_LISTED))) shared_pool_list_abandoned(m);
  } else if (SLAB_STATE(w) == SLAB_ACTIVE) {
    tiny_heap_notify_owner(m);       // one load unless the slab is on its owner's full list
  }
  if (hak_counters_own()) hak_counters()->cls[m->cls].remote_free_blocks += n;   // not past the thread's exit
  HAK_SITE(SITE_SLAB_USED);
  // acq_rel: release, so whoever reaches zero sees our pushes; acquire, so
  // the one that reaches zero sees everyone's.
  if (atomic_fetch_sub_explicit(&m->used, n, memory_order_acq_rel) == n) shared_pool_slab_empty(m);
}

// n blocks drained onto the owner's free list, which `used` counts (their
// freers took them out of it): counted first, so `used` never falls short of
// the free list (slab_live: a stats walk on another thread, the owner's
// EMPTY test).
static void slab_count_drained(slab_meta_t *m, uint32_t n) {
  HAK_SITE(SITE_SLAB_USED);
  atomic_fetch_add_explicit(&m->used, n, memory_order_relaxed);
}

// A drained list of chains (BLOCK_CHAIN_RECORDS): one block read per
// chain. Returns the blocks, 0 for a corrupted list (reported; dropped).
static uint32_t drain_chains(slab_meta_t *m, hak_base_ptr_t first) {
  uint32_t n = 0;
  hak_base_ptr_t b = first;
  block_chain_info_t ci;
  for (;;) {
    ci = block_chain(m, b);
    if (HAK_UNLIKELY(!slab_chain_plausible(m, ci) || (n += ci.n) > m->capacity)) {
      tls_sll_report_corrupt(b, m->cls);
      return 0;
    }
    if (hak_base_is_null(ci.next)) break;
    b = ci.next;
  }
  // The last chain now leads to the free list.
  block_set_chain(m, b, ci.last, ci.n, hak_base_from_raw(m->freelist));
  slab_count_drained(m, n);
  slab_list_push(m, first, ci.last, n);
  return n;
}

uint32_t ss_remote_drain_to_freelist(slab_meta_t *m) {
  if (atomic_load_explicit(&m->remote_head, memory_order_relaxed) == NULL) return 0;
  // acquire: the pushers' links (written before their release CAS) are visible.
  void *chain = atomic_exchange_explicit(&m->remote_head, NULL, memory_order_acquire);
  HAK_SITE(SITE_REMOTE_DRAIN);
  if (chain == NULL) return 0;
  uint32_t n = 1;
  hak_base_ptr_t tail = hak_base_from_raw(chain);
  if (HAK_UNLIKELY(!block_link_in_slab(m, tail))) {
    tls_sll_report_corrupt(tail, m->cls);    // the slab's remote head itself
    return 0;                                // the list is dropped (leaked), never followed
  }
  if (BLOCK_CHAIN_RECORDS) return drain_chains(m, tail);
  for (hak_base_ptr_t next; !hak_base_is_null(next = block_next(tail)); tail = next) {
    if (HAK_UNLIKELY(!block_link_in_slab(m, next))) {
      tls_sll_report_corrupt(tail, m->cls);
      return 0;
    }
    if (HAK_UNLIKELY(++n > m->capacity)) {
      hak_report_pointer_error("remote free list longer than its slab's capacity (corrupted) in slab", m, NULL);
      return 0;
    }
  }
  slab_count_drained(m, n);
  slab_list_push(m, hak_base_from_raw(chain), tail, n);
  return n;
}
