// shared_pool_state.c — the Shared Pool's state and the helpers its acquire
// and release halves share (see shared_pool_internal.h).
#include <stdint.h>

#include "config/config.h"
#include "shared_pool/shared_pool_internal.h"
#include "stats/stats.h"

// All zeros (PTHREAD_MUTEX_INITIALIZER is), so .bss: the atfork handlers
// take the kinds' locks, and on .bss's first page with the other locks a
// threaded parent writes one page of them after each fork, not two (with
// .data ending on a page of its own: test_process --threaded-fork). A
// next_due_ms of 0 keeps its invariant (a bound, not the time itself): the
// first dirty slab makes one purge pass look, which sets it.
pool_kind_t g_pool[HAK_SLAB_KINDS];
pthread_mutex_t g_registry_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t g_purge_lock = PTHREAD_MUTEX_INITIALIZER;
_Atomic uint64_t g_abandoned[HAK_NUM_CLASSES];
_Atomic size_t g_ss_live, g_ss_mapped_total, g_ss_unmapped_total;
_Atomic uint32_t g_pool_dirty_of_class[HAK_NUM_CLASSES];

// Stash bound per kind: 4 x 64 KiB, 2 x 512 KiB, none of 2 MiB.
const uint8_t g_stash_cap[HAK_SLAB_KINDS] = {4, 2, 0};

void pool_lock(unsigned kind) {
  pthread_mutex_lock(&g_pool[kind].lock);
  HAK_SITE(SITE_POOL_LOCK);
}
void pool_unlock(unsigned kind) { pthread_mutex_unlock(&g_pool[kind].lock); }

// ---- abandoned stacks (lock-free) -----------------------------------------

slab_meta_t *abandoned_pop(unsigned cls) {
  // acquire: the pusher's g_slab_next store (before its release CAS) is visible.
  uint64_t old = atomic_load_explicit(&g_abandoned[cls], memory_order_acquire);
  for (;;) {
    uint32_t id = (uint32_t)old;
    if (id == 0) return NULL;
    uint32_t next = atomic_load_explicit(&g_slab_next[id], memory_order_relaxed);
    uint64_t tagged = (((old >> 32) + 1) << 32) | next;
    HAK_SITE(SITE_ABANDONED);
    // acq_rel: acquire as above; release keeps the tag order for the next popper.
    if (atomic_compare_exchange_weak_explicit(&g_abandoned[cls], &old, tagged, memory_order_acq_rel,
                                              memory_order_acquire))
      return slab_from_id(id);
  }
}

void abandoned_push_chain(unsigned cls, uint32_t first, uint32_t last) {
  uint64_t old = atomic_load_explicit(&g_abandoned[cls], memory_order_relaxed);
  uint64_t tagged;
  do {
    atomic_store_explicit(&g_slab_next[last], (uint32_t)old, memory_order_relaxed);
    tagged = (((old >> 32) + 1) << 32) | first;
    HAK_SITE(SITE_ABANDONED);
    // release: a popper (acquire) sees the link and the slab's state.
  } while (!atomic_compare_exchange_weak_explicit(&g_abandoned[cls], &old, tagged, memory_order_acq_rel,
                                                  memory_order_relaxed));
}

void shared_pool_list_abandoned(slab_meta_t *m) {
  uint32_t id = slab_id(m);
  abandoned_push_chain(m->cls, id, id);
}

// ---- the per-kind pools (pool lock held) -------------------------------------

static void pool_list_add(pool_kind_t *pk, superslab_t *ss) {
  if (ss->in_pool) return;
  ss->in_pool = 1;
  ss->pool_prev = NULL;
  ss->pool_next = pk->head;
  if (ss->pool_next) ss->pool_next->pool_prev = ss;
  pk->head = ss;
}

static void pool_list_remove(pool_kind_t *pk, superslab_t *ss) {
  if (!ss->in_pool) return;
  ss->in_pool = 0;
  if (ss->pool_prev) ss->pool_prev->pool_next = ss->pool_next;
  else pk->head = ss->pool_next;
  if (ss->pool_next) ss->pool_next->pool_prev = ss->pool_prev;
  ss->pool_next = ss->pool_prev = NULL;
}

// Does FREE slab m count in its last class's g_pool_dirty_of_class? Only in
// a SuperSlab of the class's kind, whose pool lock guards the count (a young
// medium class's 64 KiB slab, or a slab relaid out with class 0, is not).
static int slab_counts_for_class(const slab_meta_t *m) { return g_size_class[m->cls].kind == ss_of_meta(m)->kind; }

// The kind's dirty list (pool_kind_t): m appended as the newest, or taken off.
static void dirty_list_append(pool_kind_t *pk, slab_meta_t *m) {
  m->list_next = NULL;
  m->list_prev = pk->dirty_newest;
  if (pk->dirty_newest != NULL) pk->dirty_newest->list_next = m;
  else pk->dirty_oldest = m;
  pk->dirty_newest = m;
}
static void dirty_list_remove(pool_kind_t *pk, slab_meta_t *m) {
  if (m->list_prev != NULL) m->list_prev->list_next = m->list_next;
  else pk->dirty_oldest = m->list_next;
  if (m->list_next != NULL) m->list_next->list_prev = m->list_prev;
  else pk->dirty_newest = m->list_prev;
  m->list_next = m->list_prev = NULL;
}

// A dirty FREE slab into the pool's count and its dirty list (+1), or out.
static void dirty_add(pool_kind_t *pk, slab_meta_t *m, int sign) {
  if (sign > 0) dirty_list_append(pk, m);
  else dirty_list_remove(pk, m);
  size_t bytes = slab_dirty_bytes(m);
  size_t d = atomic_load_explicit(&pk->dirty_bytes, memory_order_relaxed);
  atomic_store_explicit(&pk->dirty_bytes, sign > 0 ? d + bytes : d - bytes, memory_order_relaxed);
  if (!slab_counts_for_class(m)) return;
  uint32_t n = atomic_load_explicit(&g_pool_dirty_of_class[m->cls], memory_order_relaxed);
  atomic_store_explicit(&g_pool_dirty_of_class[m->cls], n + (uint32_t)sign, memory_order_relaxed);
}

void pool_unmap_superslab(superslab_t *ss) {
  pool_kind_t *pk = &g_pool[ss->kind];
  pool_list_remove(pk, ss);
  empty_ss_add(pk, -1);
  for (unsigned i = 0; i < ss->nslabs; i++) {
    slab_meta_t *m = ss_slab(ss, i);
    if (atomic_load_explicit(&m->dirty, memory_order_relaxed)) dirty_add(pk, m, -1);
  }
  pthread_mutex_lock(&g_registry_lock);
  ss_registry_remove(ss);
  pthread_mutex_unlock(&g_registry_lock);
  HAK_SITE(SITE_SS_COUNTERS);
  atomic_fetch_sub_explicit(&g_ss_live, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&g_ss_unmapped_total, 1, memory_order_relaxed);
  superslab_unmap(ss);
}

void pool_put_locked(slab_meta_t *m, uint64_t now) {
  superslab_t *ss = ss_of_meta(m);
  pool_kind_t *pk = &g_pool[ss->kind];
  HAK_ASSERT((ss->free_mask & (1u << m->index)) == 0);
  ss->free_mask |= 1u << m->index;
  out_add(pk, -((ptrdiff_t)1 << ss->slab_shift));
  pool_list_add(pk, ss);
  if (atomic_load_explicit(&m->dirty, memory_order_relaxed)) {
    m->free_since_ms = now;
    dirty_add(pk, m, +1);
    uint64_t due = now + g_hak_config.purge_delay_ms;
    if (due < atomic_load_explicit(&pk->next_due_ms, memory_order_relaxed))
      atomic_store_explicit(&pk->next_due_ms, due, memory_order_relaxed);
  }
  // An all-FREE SuperSlab past the hysteresis is unmapped by the purge pass
  // once its slabs have waited the purge delay (shared_pool_release.c), not
  // here: threads that exit together free whole SuperSlabs that the next
  // threads map again (mstress: an mmap, two munmaps and the page faults of
  // every page, per SuperSlab and round).
  if (ss->free_mask == ss_all_slabs_mask(ss)) {
    empty_ss_add(pk, +1);
    if (now < pk->unmap_wait_ms) pk->unmap_wait_ms = now;   // (its slabs went FREE by now)
  }
#if HAK_DEBUG
  ss_validate(ss);
#endif
}

// ---- an all-FREE SuperSlab for another kind -----------------------------------

// The first all-FREE SuperSlab on a kind's pool list with a dirty slab, else
// the first all-FREE one; NULL when none (its pool lock held).
static superslab_t *pool_find_empty_locked(const pool_kind_t *pk) {
  superslab_t *clean = NULL;
  for (superslab_t *ss = pk->head; ss != NULL; ss = ss->pool_next) {
    if (ss->free_mask != ss_all_slabs_mask(ss)) continue;
    for (unsigned i = 0; i < ss->nslabs; i++)
      if (atomic_load_explicit(&ss_slab(ss, i)->dirty, memory_order_relaxed)) return ss;
    if (clean == NULL) clean = ss;
  }
  return clean;
}

// Where the pages of a SuperSlab's dirty slabs may be resident, as offsets
// from its start, while it changes kind.
typedef struct resident_ranges {
  unsigned n;
  size_t   start[SS_MAX_SLABS], end[SS_MAX_SLABS];
  uint64_t since;   // the latest free_since_ms among them
} resident_ranges_t;

// Take ss (all FREE) out of its kind's pool, noting its dirty pages (its pool lock held).
static void pool_take_empty_locked(pool_kind_t *pk, superslab_t *ss, resident_ranges_t *r) {
  r->n = 0;
  r->since = 0;
  for (unsigned i = 0; i < ss->nslabs; i++) {
    slab_meta_t *m = ss_slab(ss, i);
    if (!atomic_load_explicit(&m->dirty, memory_order_relaxed)) {
      if (m->early_pages != 0) pool_note_regret(pk, m);   // purged early and taken back, by another kind
      continue;
    }
    pool_note_takes(pk, 1);
    dirty_add(pk, m, -1);
    size_t at = (size_t)(m->base - (char *)ss), bytes = slab_purge_bytes(m);
    if (bytes == 0) continue;   // bound, but no block reached a page
    r->start[r->n] = at;
    r->end[r->n++] = at + bytes;
    if (m->free_since_ms > r->since) r->since = m->free_since_ms;
  }
  pool_list_remove(pk, ss);
  empty_ss_add(pk, -1);
}

// Mark dirty the slabs of ss (just laid out again) that the ranges reach, each
// from its base to the farthest resident byte in it (its kind's pool lock held).
static void pool_mark_resident_locked(pool_kind_t *pk, superslab_t *ss, const resident_ranges_t *r) {
  for (unsigned j = 0; j < ss->nslabs; j++) {
    slab_meta_t *m = ss_slab(ss, j);
    size_t s0 = (size_t)(m->base - (char *)ss), s1 = s0 + ss_slab_bytes(ss, j), end = 0;
    for (unsigned i = 0; i < r->n; i++) {
      if (r->end[i] <= s0 || r->start[i] >= s1) continue;
      size_t e = (r->end[i] < s1 ? r->end[i] : s1) - s0;
      if (e > end) end = e;
    }
    if (end == 0) continue;
    atomic_store_explicit(&m->dirty, 1, memory_order_relaxed);
    m->dirty_end = (uint32_t)end;
    // (No older than the dirty list's newest, whose order is their age.)
    uint64_t since = r->since;
    if (pk->dirty_newest != NULL && pk->dirty_newest->free_since_ms > since) since = pk->dirty_newest->free_since_ms;
    m->free_since_ms = since;
    dirty_add(pk, m, +1);
    uint64_t due = since + g_hak_config.purge_delay_ms;
    if (due < atomic_load_explicit(&pk->next_due_ms, memory_order_relaxed))
      atomic_store_explicit(&pk->next_due_ms, due, memory_order_relaxed);
  }
}

int pool_rekind_empty_superslab(unsigned kind) {
  for (unsigned x = 0; x < HAK_SLAB_KINDS; x++) {
    if (x == kind) continue;
    pool_kind_t *px = &g_pool[x];
    if (atomic_load_explicit(&px->empty_ss, memory_order_relaxed) == 0) continue;   // no lock for nothing
    pool_lock(x);
    superslab_t *ss = pool_find_empty_locked(px);
    resident_ranges_t r;
    if (ss != NULL) pool_take_empty_locked(px, ss, &r);
    pool_unlock(x);
    if (ss == NULL) continue;
    // No thread reaches it now: laid out again under the registry lock, so
    // the statistics' walks never see it half done.
    pthread_mutex_lock(&g_registry_lock);
    ss_registry_remove(ss);
    superslab_relayout(ss, kind);
    int added = ss_registry_add(ss);
    pthread_mutex_unlock(&g_registry_lock);
    if (added != 0) {   // (the index it just gave back: cannot happen)
      HAK_SITE(SITE_SS_COUNTERS);
      atomic_fetch_sub_explicit(&g_ss_live, 1, memory_order_relaxed);
      atomic_fetch_add_explicit(&g_ss_unmapped_total, 1, memory_order_relaxed);
      superslab_unmap(ss);
      return 0;
    }
    pool_lock(kind);
    pool_add_new_locked(ss);
    pool_mark_resident_locked(&g_pool[kind], ss, &r);
    g_pool[kind].rekinded++;
#if HAK_DEBUG
    ss_validate(ss);
#endif
    return 1;
  }
  return 0;
}

void pool_add_new_locked(superslab_t *ss) {
  pool_kind_t *pk = &g_pool[ss->kind];
  HAK_ASSERT(ss->free_mask == ss_all_slabs_mask(ss));
  empty_ss_add(pk, +1);
  pk->unmap_wait_ms = 0;   // (clean: it has waited, should it stay all FREE)
  pool_list_add(pk, ss);
}

uint32_t pool_take_locked(unsigned kind, slab_meta_t **out, uint32_t want) {
  pool_kind_t *pk = &g_pool[kind];
  uint32_t n = 0;
  // Dirty slabs first: their pages are resident already. (Taken in pool
  // order, the slabs of threads that had just exited waited to be purged
  // while the next threads faulted in clean ones: mstress's peak RSS.)
  if (atomic_load_explicit(&pk->dirty_bytes, memory_order_relaxed) != 0) {
    for (superslab_t *ss = pk->head, *next; ss != NULL && n < want; ss = next) {
      next = ss->pool_next;      // read first: taking its last FREE slab unlinks ss
      for (uint32_t mask = ss->free_mask; mask != 0 && n < want; mask &= mask - 1) {
        slab_meta_t *m = ss_slab(ss, (unsigned)__builtin_ctz(mask));
        if (!atomic_load_explicit(&m->dirty, memory_order_relaxed)) continue;
        pool_take_slab_locked(m);
        out[n++] = m;
      }
    }
    pool_note_takes(pk, n);
  }
  while (n < want && pk->head != NULL) {
    superslab_t *ss = pk->head;
    if (ss->free_mask == ss_all_slabs_mask(ss)) empty_ss_add(pk, -1);
    while (n < want && ss->free_mask != 0) {
      unsigned idx = (unsigned)__builtin_ctz(ss->free_mask);
      ss->free_mask &= ~(1u << idx);
      slab_meta_t *m = ss_slab(ss, idx);
      out_add(pk, (ptrdiff_t)1 << ss->slab_shift);
      if (atomic_load_explicit(&m->dirty, memory_order_relaxed)) {
        dirty_add(pk, m, -1);
        pool_note_takes(pk, 1);
      } else if (m->early_pages != 0) {
        pool_note_regret(pk, m);   // (a take too)
      }
      out[n++] = m;
    }
    if (ss->free_mask == 0) pool_list_remove(pk, ss);
#if HAK_DEBUG
    ss_validate(ss);
#endif
  }
  return n;
}

slab_meta_t *pool_take_class_locked(unsigned kind, unsigned cls) {
  unsigned seen = 0;
  if (atomic_load_explicit(&g_pool_dirty_of_class[cls], memory_order_relaxed) == 0) return NULL;
  for (superslab_t *ss = g_pool[kind].head; ss != NULL; ss = ss->pool_next) {
    for (uint32_t mask = ss->free_mask; mask != 0; mask &= mask - 1) {
      slab_meta_t *m = ss_slab(ss, (unsigned)__builtin_ctz(mask));
      if (m->cls == cls && atomic_load_explicit(&m->dirty, memory_order_relaxed)) {
        pool_take_slab_locked(m);
        pool_note_takes(&g_pool[kind], 1);
        return m;
      }
      if (++seen == POOL_AFFINITY_SCAN) return NULL;
    }
  }
  return NULL;
}

void pool_take_slab_locked(slab_meta_t *m) {
  superslab_t *ss = ss_of_meta(m);
  pool_kind_t *pk = &g_pool[ss->kind];
  HAK_ASSERT((ss->free_mask & (1u << m->index)) != 0);
  if (ss->free_mask == ss_all_slabs_mask(ss)) empty_ss_add(pk, -1);
  ss->free_mask &= ~(1u << m->index);
  out_add(pk, (ptrdiff_t)1 << ss->slab_shift);
  if (atomic_load_explicit(&m->dirty, memory_order_relaxed)) dirty_add(pk, m, -1);
  if (ss->free_mask == 0) pool_list_remove(pk, ss);
}

void slab_unbind(slab_meta_t *m) {
  m->capacity = 0;
  m->early_pages = 0;   // was free_n
  slab_note_dirty_end(m);
  slab_set_carve(m, m->base);            // no pointer is below the carve point of a FREE slab
  m->where = SLAB_IN_NONE;
  m->list_next = m->list_prev = NULL;
  slab_set_owner(m, SLAB_OWNER_POOL, memory_order_relaxed);
  atomic_store_explicit(&m->dirty, 1, memory_order_relaxed);   // it held blocks: pages are resident
  uint32_t w = atomic_load_explicit(&m->state, memory_order_relaxed);
  // release: a stale reader that acquires the new generation sees the fields above.
  atomic_store_explicit(&m->state, SLAB_NEXT_GEN(w, SLAB_FREE), memory_order_release);
}

#if HAK_DEBUG
void ss_validate(const superslab_t *ss) {
  HAK_CHECK(ss_registry_contains(ss), "SuperSlab not in the registry", ss);
  HAK_CHECK(ss->nslabs == (SS_SIZE >> ss->slab_shift), "SuperSlab slab count wrong", ss);
  HAK_CHECK((ss->free_mask & ~ss_all_slabs_mask(ss)) == 0, "free mask names slabs past the end", ss);
  HAK_CHECK((ss->free_mask != 0) == (ss->in_pool != 0), "SuperSlab with FREE slabs not on its pool list", ss);
  for (unsigned i = 0; i < ss->nslabs; i++) {
    const slab_meta_t *m = ss_slab(ss, i);
    if (ss->free_mask & (1u << i))
      HAK_CHECK(SLAB_STATE(atomic_load(&m->state)) == SLAB_FREE, "slab in the free mask is not FREE", m);
  }
}

void shared_pool_validate_pools(void) {
  uint32_t dirty_of_class[HAK_NUM_CLASSES] = {0};
  for (unsigned k = 0; k < HAK_SLAB_KINDS; k++) {
    const pool_kind_t *pk = &g_pool[k];
    size_t dirty = 0;
    uint32_t empty = 0;
    for (const superslab_t *ss = pk->head; ss != NULL; ss = ss->pool_next) {
      HAK_CHECK(ss->kind == k && ss->in_pool && ss->free_mask != 0, "SuperSlab on the wrong pool list", ss);
      if (ss->free_mask == ss_all_slabs_mask(ss)) empty++;
      for (uint32_t mask = ss->free_mask; mask != 0; mask &= mask - 1) {
        slab_meta_t *m = ss_slab((superslab_t *)ss, (unsigned)__builtin_ctz(mask));
        if (!atomic_load_explicit(&m->dirty, memory_order_relaxed)) continue;
        dirty += slab_dirty_bytes(m);
        if (slab_counts_for_class(m)) dirty_of_class[m->cls]++;
      }
    }
    HAK_CHECK(dirty == atomic_load(&pk->dirty_bytes), "a kind's dirty bytes differ from its dirty FREE slabs'", pk);
    size_t listed = 0;
    const slab_meta_t *prev = NULL;
    for (const slab_meta_t *m = pk->dirty_oldest; m != NULL; prev = m, m = m->list_next) {
      const superslab_t *ss = ss_of_meta(m);
      HAK_CHECK(ss->kind == k && (ss->free_mask >> m->index & 1u) && atomic_load(&m->dirty) && m->list_prev == prev,
                "a kind's dirty list holds a slab that is not a dirty FREE slab of its pool", m);
      listed += slab_dirty_bytes(m);
    }
    HAK_CHECK(prev == pk->dirty_newest && listed == dirty, "a kind's dirty list is not its dirty FREE slabs", pk);
    HAK_CHECK(empty == atomic_load(&pk->empty_ss), "a kind's count of all-FREE SuperSlabs is wrong", pk);
  }
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++)
    HAK_CHECK(dirty_of_class[c] == atomic_load(&g_pool_dirty_of_class[c]),
              "the count of a class's dirty FREE slabs in the pools is wrong", &g_pool_dirty_of_class[c]);
}

void shared_pool_stash_validate(const slab_stash_t *st, unsigned kind) {
  HAK_CHECK(st->n <= SLAB_STASH_MAX, "stash overfull", st);
  for (uint32_t i = 0; i < st->n; i++) {
    const slab_meta_t *m = st->slab[i];
    HAK_CHECK(SLAB_STATE(atomic_load(&m->state)) == SLAB_FREE, "stash slab not FREE", m);
    HAK_CHECK((ss_of_meta(m)->free_mask & (1u << m->index)) == 0, "stash slab also in the pool", m);
    // One kind a stash: its release gives every slab to the first one's pool
    // (a young slab's stash is its SuperSlab's kind's, not its class's).
    HAK_CHECK(ss_of_meta(m)->kind == kind, "stash slab of another kind", m);
  }
}
#endif
