// slab_validate.c — see slab_validate.h.
#include "tiny/slab_validate.h"

#include "tiny/tls_sll_box.h"

#if HAK_DEBUG
// Length of a free list of m, checking each block; at most capacity steps.
// Where the class keeps chain records (tls_sll_box.h: block_set_chain), each
// chain's first block must say where the chain ends and what follows it.
static uint32_t free_list_length(const slab_meta_t *m, void *head) {
  uint32_t n = 0, chain_left = 0;
  block_chain_info_t ci = {HAK_BASE_NULL, HAK_BASE_NULL, HAK_BASE_NULL, 0};
  int chains = BLOCK_CHAIN_RECORDS;
  char *end = slab_end(m);
  for (hak_base_ptr_t b = hak_base_from_raw(head), next; !slab_list_is_end(b); b = next) {
    char *p = hak_base_raw(b);
    next = block_next(b);
    if (chains && chain_left == 0) {   // the first block of a chain
      ci = block_chain(m, b);
      HAK_CHECK(slab_chain_plausible(m, ci), "free-list chain record out of its slab", p);
      chain_left = ci.n;
      if (ci.n >= 2) next = ci.second;   // (a 16-byte chain's link word holds its record)
    }
    if (chains && --chain_left == 0) {
      HAK_CHECK(hak_base_raw(b) == hak_base_raw(ci.last), "free-list chain record: wrong last block", p);
      // (the list's last block links to its end, TLS_SLL_END or NULL: slab_list_end)
      HAK_CHECK(hak_base_raw(next) == hak_base_raw(ci.next) || (slab_list_is_end(next) && hak_base_is_null(ci.next)),
                "free-list chain record: wrong next chain", p);
    }
    HAK_CHECK(++n <= m->capacity, "free list longer than the slab's capacity", m);
    HAK_CHECK(p >= m->base && p < slab_carve(m) && p < end, "free block outside the slab's carved part", p);
    HAK_CHECK((size_t)(p - m->base) % m->block_size == 0, "free block not a block start", p);
    HAK_CHECK(block_is_free(b), "free block without its free mark", p);
    // A link that leaves the slab is the program's use after free, not an
    // allocator bug: reported as the allocator reports it in release builds.
    if (!tls_sll_is_end(next) && !block_link_in_slab(m, next)) {
      tls_sll_report_corrupt(b, m->cls);
      break;                              // never followed
    }
  }
  return n;
}

void slab_validate_at(const slab_meta_t *m, int quiet) {
  uint32_t w = atomic_load(&m->state);
  unsigned st = SLAB_STATE(w);
  uintptr_t owner = atomic_load(&m->owner);
  uint32_t notify = atomic_load(&m->notify);
  HAK_CHECK(st <= SLAB_EMPTY_LISTED, "slab state out of range", m);
  HAK_CHECK(m->base == ss_slab_start(ss_of_meta(m), m->index), "slab base moved", m);
  if (st == SLAB_FREE) {
    HAK_CHECK(m->capacity == 0, "FREE slab with a capacity", m);
    HAK_CHECK(owner == SLAB_OWNER_POOL, "FREE slab with an owner", m);
    HAK_CHECK(notify == SLAB_NOTIFY_IDLE, "FREE slab with a notification", m);
    HAK_CHECK(m->where == SLAB_IN_NONE, "FREE slab on a thread's list", m);
    HAK_CHECK(atomic_load(&m->used) == 0, "FREE slab with blocks in use", m);
    return;
  }
  HAK_CHECK(m->cls < HAK_NUM_CLASSES && m->block_size == g_size_class[m->cls].block, "slab class and size disagree",
            m);
  HAK_CHECK(m->capacity == slab_capacity(ss_slab_bytes(ss_of_meta(m), m->index), m->block_size), "slab capacity wrong", m);
  if (st == SLAB_ACTIVE) {
    HAK_CHECK(owner != 0 && owner != SLAB_OWNER_POOL, "ACTIVE slab without an owner", m);
    HAK_CHECK(m->where != SLAB_IN_NONE, "ACTIVE slab on none of its owner's lists", m);
  } else {
    HAK_CHECK(owner == 0, "abandoned slab with an owner", m);
    HAK_CHECK(m->where == SLAB_IN_NONE, "abandoned slab on a thread's list", m);
    HAK_CHECK(notify == SLAB_NOTIFY_IDLE, "abandoned slab with a notification", m);
  }
  // free's copy of the owner (slab_set_owner).
  HAK_CHECK(atomic_load(&m->owner_small) == (m->block_size < HAK_SEND_HOME_BELOW ? (uint32_t)owner : 0u),
            "owner_small is not the owner's (small classes) or 0", m);
  char *end = slab_end(m);
  HAK_CHECK(slab_carve(m) >= m->base && slab_carve(m) <= end, "carve point outside the slab", m);
  HAK_CHECK((size_t)(slab_carve(m) - m->base) % m->block_size == 0, "carve point not on a block", m);
  // `used` first: a remote free in flight pushes before it lowers `used`, so
  // a block taken out of `used` after this load is on the remote list below.
  // (A ticket's take waits meanwhile: slab_take_lock.)
  slab_take_lock((slab_meta_t *)m);
  uint32_t used = atomic_load(&m->used);
  uint32_t carved = (uint32_t)((size_t)(slab_carve(m) - m->base) / m->block_size);
  uint32_t local = free_list_length(m, m->freelist);
  uintptr_t rw = atomic_load(&m->remote_head);
  uint32_t remote = free_list_length(m, remote_word_first(rw)), counted = remote_word_counted(rw);
  slab_take_unlock((slab_meta_t *)m);
  HAK_CHECK(counted <= remote, "remote list's word counts more blocks than it holds", m);
  if (quiet && st != SLAB_ACTIVE) HAK_CHECK(rw & REMOTE_ATTEND, "abandoned slab's remote list asks no attention", m);
  if (quiet && st != SLAB_ACTIVE) HAK_CHECK(counted == 0, "abandoned slab's remote list counts blocks", m);
  // notify read again, after the word: a freer that wakes the owner takes
  // ARMED away before it clears the word's attention, and only the owner
  // (here, or a quiet look) arms a slab again.
  if (atomic_load(&m->notify) == SLAB_NOTIFY_ARMED)
    HAK_CHECK(rw & REMOTE_ATTEND, "armed slab's remote list asks no attention", m);
  // A remote freer that found attention asked pushes its chain before it
  // lowers `used`: while one is in flight the sum exceeds the capacity, never
  // falls short of it. A push that counts its chain on the list (the word)
  // leaves `used` and the sum as they were.
  // (An ACTIVE slab's `used` counts its free list: superslab.h.)
  uint32_t sum = (st == SLAB_ACTIVE ? 0u : local) + (remote - counted) + (m->capacity - carved) + used;
  if (quiet) HAK_CHECK(sum == m->capacity, "|freelist| + |remote| + uncarved + used != capacity", m);
  if (quiet) HAK_CHECK(local == m->free_n, "free_n is not the free list's length", m);
  else HAK_CHECK(sum >= m->capacity, "|freelist| + |remote| + uncarved + used < capacity", m);
  if (st == SLAB_EMPTY_LISTED) HAK_CHECK(used == 0, "EMPTY_LISTED slab with blocks in use", m);
}
#endif
