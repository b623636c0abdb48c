// remote_free_box.c — see remote_free_box.h.
#include "tiny/remote_free_box.h"

#include "debug/report.h"
#include "os/os.h"
#include "shared_pool/shared_pool.h"
#include "stats/stats.h"
#include "tiny/tiny_heap.h"
#include "tiny/tls_sll_box.h"

// Push first..last (n blocks of m, linked) onto m's remote list as one chain
// (its record names the old head) with one CAS, which also reads whether the
// slab asks for attention (REMOTE_ATTEND). If not, the chain's blocks are
// counted on the list (the word's count: `used` still counts them, the owner
// drains them without an atomic) and the push is all: nothing of m is
// touched after it, since the owner may find the slab EMPTY and recycle it
// the moment the CAS lands. A list that was empty is stamped before
// (remote_since: our blocks keep the slab ours until the CAS). Returns the
// word the CAS replaced.
static uintptr_t remote_list_push(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n) {
  HAK_ASSERT(((uintptr_t)hak_base_raw(first) & ~REMOTE_FIRST_MASK) == 0);
  uintptr_t old = slab_remote_word(m, memory_order_relaxed), neu;
  do {
    hak_base_ptr_t head = hak_base_from_raw(remote_word_first(old));
    if (hak_base_is_null(head)) atomic_store_explicit(&m->remote_since, remote_stamp(os_now_ms()), memory_order_relaxed);
    block_set_next(last, head);
    if (BLOCK_CHAIN_RECORDS) block_set_chain(m, first, last, n, head);
    uintptr_t counted = remote_word_counted(old) + ((old & REMOTE_ATTEND) ? 0u : n);
    neu = (uintptr_t)hak_base_raw(first) | (counted << REMOTE_COUNT_SHIFT) | (old & REMOTE_ATTEND);
    // seq_cst: release so the drainer sees the links; ordered before the
    // attention path's seq_cst loads of the state and notify words (Dekker
    // with the owner's detach, which stores the state then loads this word).
  } while (!atomic_compare_exchange_weak_explicit(&m->remote_head, &old, neu, memory_order_seq_cst,
                                                  memory_order_relaxed));
  HAK_SITE(SITE_REMOTE_PUSH);
  return old;
}

// After a push the slab asked attention for (its blocks not counted on the
// list, `used` still counting them, so the slab stays ours meanwhile): a slab
// nobody owns and nobody lists gets listed by its first remote free, a full
// slab's owner is woken; then `used` drops by the blocks pushed, and whoever
// brings it to zero recycles the slab (shared_pool_slab_empty).
static HAK_NOINLINE void remote_push_attended(slab_meta_t *m, uint32_t n) {
  uint32_t w = atomic_load_explicit(&m->state, memory_order_seq_cst);
  if (SLAB_STATE(w) == SLAB_DETACHED) {
    HAK_SITE(SITE_SLAB_STATE);
    if (atomic_compare_exchange_strong(&m->state, &w, SLAB_WITH(w, SLAB_LISTED))) shared_pool_list_abandoned(m);
  } else if (SLAB_STATE(w) == SLAB_ACTIVE) {
    tiny_heap_notify_owner(m);       // one load unless the slab is on its owner's full list
  }
  HAK_SITE(SITE_SLAB_USED);
  // acq_rel: release, so whoever reaches zero sees our pushes; acquire, so
  // the one that reaches zero sees everyone's.
  if (atomic_fetch_sub_explicit(&m->used, n, memory_order_acq_rel) == n) shared_pool_slab_empty(m);
}

// A chain pushed, and attended to when the slab asked for it.
static void remote_push(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n) {
  if (remote_list_push(m, first, last, n) & REMOTE_ATTEND) remote_push_attended(m, n);
}

void remote_free_push_chain(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n) {
  if (hak_counters_own()) hak_counters()->cls[m->cls].remote_free_blocks += n;   // not past the thread's exit
  remote_push(m, first, last, n);
}

// n blocks drained onto the owner's free list, which `used` counts, `counted`
// of them counted on the list (so in `used` already): the rest, whose freers
// took them out of `used`, counted first, so `used` never falls short of the
// free list (slab_live: a stats walk on another thread, the owner's EMPTY
// test). No atomic when every block was counted (the freers found no
// attention asked: the usual case).
static void slab_count_drained(slab_meta_t *m, uint32_t n, uint32_t counted) {
  if (n == counted) return;
  HAK_SITE(SITE_SLAB_USED);
  atomic_fetch_add_explicit(&m->used, n - counted, memory_order_relaxed);
}

// A list dropped as corrupted: its counted blocks leave `used` with it, so
// the slab can still empty (the blocks are leaked, not counted live).
static HAK_NOINLINE void remote_drop_counted(slab_meta_t *m, uint32_t counted) {
  if (counted == 0) return;
  HAK_SITE(SITE_SLAB_USED);
  atomic_fetch_sub_explicit(&m->used, counted, memory_order_relaxed);
}

// A taken list of n blocks (0: corrupted, reported) whose word counted
// `counted`: 1 when it holds them, else it is dropped (reported).
static int remote_list_whole(slab_meta_t *m, uint32_t n, uint32_t counted) {
  if (HAK_LIKELY(n != 0 && n >= counted)) return 1;
  if (n != 0) hak_report_pointer_error("remote free list shorter than its count (corrupted) in slab", m, NULL);
  remote_drop_counted(m, counted);
  return 0;
}

// A drained list of chains (BLOCK_CHAIN_RECORDS), `counted` of its blocks
// counted on the list: one block read per chain. Returns the blocks, 0 for a
// corrupted list (reported; dropped).
static uint32_t drain_chains(slab_meta_t *m, hak_base_ptr_t first, uint32_t counted) {
  uint32_t n = 0;
  hak_base_ptr_t b = first;
  block_chain_info_t ci;
  for (;;) {
    ci = block_chain(m, b);
    if (HAK_UNLIKELY(!slab_chain_plausible(m, ci) || (n += ci.n) > m->capacity)) {
      tls_sll_report_corrupt(b, m->cls);
      remote_drop_counted(m, counted);
      return 0;
    }
    if (hak_base_is_null(ci.next)) break;
    b = ci.next;
  }
  if (!remote_list_whole(m, n, counted)) return 0;
  // The last chain now leads to the free list.
  block_set_chain(m, b, ci.last, ci.n, hak_base_from_raw(m->freelist));
  slab_count_drained(m, n, counted);
  slab_list_push(m, first, ci.last, n);
  return n;
}

// The whole remote list, taken (its word left with REMOTE_ATTEND alone, if
// set): its first block and in *counted how many of its blocks `used` still
// counts; NULL when it was empty or its head is no block of m (reported; the
// list is dropped, leaked, never followed).
static hak_base_ptr_t remote_list_take_all(slab_meta_t *m, uint32_t *counted) {
  *counted = 0;
  uintptr_t w = slab_remote_word(m, memory_order_relaxed);
  do {
    if (!remote_word_has_list(w)) return HAK_BASE_NULL;
    // acquire: the pushers' links (written before their release CAS) are visible.
  } while (!atomic_compare_exchange_weak_explicit(&m->remote_head, &w, w & REMOTE_ATTEND, memory_order_acquire,
                                                  memory_order_relaxed));
  HAK_SITE(SITE_REMOTE_DRAIN);
  *counted = remote_word_counted(w);
  hak_base_ptr_t head = hak_base_from_raw(remote_word_first(w));
  if (HAK_UNLIKELY(!block_link_in_slab(m, head))) {
    tls_sll_report_corrupt(head, m->cls);              // the slab's remote head itself
    remote_drop_counted(m, *counted);
    *counted = 0;
    return HAK_BASE_NULL;
  }
  return head;
}

// A taken list of m without chain records (the hardened build), from head:
// its blocks counted and each link checked, its last block in *end. 0 for a
// corrupted list (reported; dropped).
static uint32_t plain_list_count(slab_meta_t *m, hak_base_ptr_t head, hak_base_ptr_t *end) {
  uint32_t n = 1;
  hak_base_ptr_t tail = head;
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
  *end = tail;
  return n;
}

uint32_t ss_remote_drain_to_freelist(slab_meta_t *m) {
  uint32_t counted;
  hak_base_ptr_t head = remote_list_take_all(m, &counted), tail;
  if (hak_base_is_null(head)) return 0;
  if (BLOCK_CHAIN_RECORDS) return drain_chains(m, head, counted);
  uint32_t n = plain_list_count(m, head, &tail);
  if (!remote_list_whole(m, n, counted)) return 0;
  slab_count_drained(m, n, counted);
  slab_list_push(m, head, tail, n);
  return n;
}

static uint32_t remote_take(slab_meta_t *m, uint32_t max, hak_base_ptr_t *first, hak_base_ptr_t *last,
                            hak_base_ptr_t *next) {
  *next = HAK_BASE_NULL;
  if (max == 0) return 0;
  uint8_t since = atomic_load_explicit(&m->remote_since, memory_order_relaxed);
  uint32_t counted;
  hak_base_ptr_t head = remote_list_take_all(m, &counted), end = head;
  if (hak_base_is_null(head)) return 0;
  // Counted and checked as the drain does, every chain's first block given
  // its link back (a 16-byte chain keeps its record there): a list linked
  // through its blocks' links alone, end its last block.
  uint32_t n = 0;
  if (BLOCK_CHAIN_RECORDS) {
    for (hak_base_ptr_t b = head;;) {
      block_chain_info_t ci = block_chain(m, b);
      if (HAK_UNLIKELY(!slab_chain_plausible(m, ci) || (n += ci.n) > m->capacity)) {
        tls_sll_report_corrupt(b, m->cls);
        remote_drop_counted(m, counted);
        return 0;
      }
      block_chain_release(m, b, ci);
      end = ci.last;
      if (hak_base_is_null(ci.next)) break;
      b = ci.next;
    }
  } else {
    n = plain_list_count(m, head, &end);
  }
  if (!remote_list_whole(m, n, counted)) return 0;
  // The blocks taken, the next ticket and the rest's first, each link a
  // block of m (the records vouch for the chains' ends only).
  uint32_t take = n < max ? n : max, walk = take + 2u < n ? take + 2u : n;
  hak_base_ptr_t tail = head, after[2] = {HAK_BASE_NULL, HAK_BASE_NULL};   // the next ticket, the rest's first
  for (uint32_t i = 1; i < walk; i++) {
    hak_base_ptr_t from = i <= take ? tail : after[i - take - 1u], b = block_next(from);
    if (HAK_UNLIKELY(hak_base_is_null(b) || !slab_block_start(m, hak_base_raw(b)))) {
      tls_sll_report_corrupt(from, m->cls);
      remote_drop_counted(m, counted);
      return 0;
    }
    if (i < take) tail = b;
    else after[i - take] = b;
  }
  // All n out of the slab again, counted before the rest goes back as a
  // push, which counts it on the list or takes it out of `used` (the blocks
  // taken and the caller's ticket keep `used` above 0 meanwhile: nobody
  // recycles the slab).
  slab_count_drained(m, n, counted);
  if (take < n) *next = after[0];
  if (take + 1u < n) {
    remote_push(m, after[1], end, n - take - 1u);
    atomic_store_explicit(&m->remote_since, since, memory_order_relaxed);   // as stale as it was
  }
  *first = head;
  *last = tail;
  return take;
}

uint32_t ss_remote_take(slab_meta_t *m, uint32_t max, hak_base_ptr_t *first, hak_base_ptr_t *last,
                        hak_base_ptr_t *next) {
  slab_take_lock(m);
  uint32_t n = remote_take(m, max, first, last, next);
  slab_take_unlock(m);
  return n;
}
