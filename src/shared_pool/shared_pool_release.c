// shared_pool_release.c — detach, EMPTY recycling, purge and trim (see
// shared_pool.h).
#include "config/config.h"
#include "os/os.h"
#include "shared_pool/shared_pool_internal.h"

static _Atomic uint64_t g_last_purge_ms;

HAK_INLINE int slab_has_free_blocks(const slab_meta_t *m) {
  return m->freelist != NULL || m->carve < m->base + (size_t)m->capacity * m->block_size ||
         atomic_load_explicit(&m->remote_head, memory_order_acquire) != NULL;
}

void shared_pool_detach_slab(slab_meta_t *m) {
  atomic_store_explicit(&m->owner, 0, memory_order_release);
  uint32_t w = atomic_load_explicit(&m->state, memory_order_relaxed);
  if (slab_has_free_blocks(m)) {
    atomic_store_explicit(&m->state, SLAB_WITH(w, SLAB_LISTED), memory_order_seq_cst);
    shared_pool_list_partial(m);
  } else {
    atomic_store_explicit(&m->state, SLAB_WITH(w, SLAB_DETACHED), memory_order_seq_cst);
    // A remote free that read ACTIVE before our store did not list the slab;
    // one of us sees the other (both sides are seq_cst).
    if (atomic_load_explicit(&m->remote_head, memory_order_seq_cst) != NULL) {
      uint32_t d = SLAB_WITH(w, SLAB_DETACHED);
      if (atomic_compare_exchange_strong(&m->state, &d, SLAB_WITH(w, SLAB_LISTED)))
        shared_pool_list_partial(m);
    }
  }
  if (atomic_load_explicit(&m->used, memory_order_acquire) == 0) shared_pool_slab_empty(m);
}

void shared_pool_slab_empty(slab_meta_t *m) {
  uint32_t w = atomic_load_explicit(&m->state, memory_order_acquire);
  // Re-check after reading the state: a stale caller meets a later life of the
  // slab only if that life is empty too, where acting is still right.
  if (atomic_load_explicit(&m->used, memory_order_acquire) != 0) return;
  switch (SLAB_STATE(w)) {
  case SLAB_DETACHED: {
    uint32_t freed = SLAB_GEN(w) + 0x100u + SLAB_FREE;
    if (atomic_compare_exchange_strong(&m->state, &w, freed)) {
      slab_mark_dirty(m);
      shared_pool_release_slab(m);
    }
    break;
  }
  case SLAB_LISTED:
    if (atomic_compare_exchange_strong(&m->state, &w, SLAB_WITH(w, SLAB_EMPTY_LISTED))) slab_mark_dirty(m);
    break;
  default:
    break;  // ACTIVE: its owner keeps it; EMPTY_LISTED/FREE: already done
  }
  shared_pool_maybe_purge();
}

// Forget and unmap an all-FREE SuperSlab (alloc_lock held).
static void pool_unmap_superslab(superslab_t *ss) {
  pool_list_remove(ss);
  g_empty_ss_count[ss->kind]--;
  for (unsigned i = 0; i < ss->nslabs; i++) slab_clear_dirty(&ss->slabs[i]);
  ss_registry_remove(ss);
  atomic_fetch_sub_explicit(&g_ss_live, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&g_ss_unmapped_total, 1, memory_order_relaxed);
  superslab_unmap(ss);
}

void shared_pool_release_slab(slab_meta_t *m) {
  superslab_t *ss = ss_of_meta(m);
  atomic_store_explicit(&m->owner, SLAB_OWNER_POOL, memory_order_relaxed);
  pthread_mutex_lock(&g_alloc_lock);
  ss->free_mask |= 1u << m->index;
  pool_list_add(ss);
  if (ss->free_mask == ss_all_slabs_mask(ss)) {
    ss->empty_since_ms = os_now_ms();
    if (++g_empty_ss_count[ss->kind] > g_hak_config.keep_empty_superslabs) pool_unmap_superslab(ss);
  }
  pthread_mutex_unlock(&g_alloc_lock);
}

// Take every EMPTY slab off the partial stacks and give it to the pool.
static void purge_partial_stacks(void) {
  for (unsigned cls = 0; cls < HAK_NUM_CLASSES; cls++) {
    uint64_t old = atomic_load_explicit(&g_partial[cls], memory_order_acquire);
    if ((uint32_t)old == 0) continue;
    // Take the whole stack at once; concurrent acquirers see it empty for a
    // moment and fall through to stage 2.
    while (!atomic_compare_exchange_weak_explicit(&g_partial[cls], &old, ((old >> 32) + 1) << 32,
                                                  memory_order_acq_rel, memory_order_acquire)) {
    }
    uint32_t keep_first = 0, keep_last = 0;
    for (uint32_t id = (uint32_t)old; id != 0;) {
      uint32_t next = atomic_load_explicit(&g_slab_next[id], memory_order_relaxed);
      slab_meta_t *m = slab_from_id(id);
      uint32_t w = atomic_load_explicit(&m->state, memory_order_acquire);
      int released = 0;
      while (SLAB_STATE(w) == SLAB_EMPTY_LISTED) {
        if (atomic_compare_exchange_weak(&m->state, &w, SLAB_GEN(w) + 0x100u + SLAB_FREE)) {
          shared_pool_release_slab(m);
          released = 1;
          break;
        }
      }
      if (!released) {
        atomic_store_explicit(&g_slab_next[id], keep_first, memory_order_relaxed);
        keep_first = id;
        if (keep_last == 0) keep_last = id;
      }
      id = next;
    }
    if (keep_first != 0) partial_push_chain(cls, keep_first, keep_last);
  }
}

// madvise dirty FREE slabs; unmap all-FREE SuperSlabs past the hysteresis
// (all of them when `everything`). Returns 1 if anything was released.
static int purge_pool(int everything) {
  int released = 0;
  pthread_mutex_lock(&g_alloc_lock);
  uint32_t hw = ss_registry_high_water();
  uint32_t keep[HAK_SLAB_KINDS] = {0};
  for (uint32_t i = 0; i < hw; i++) {
    superslab_t *ss = atomic_load_explicit(&g_ss_table[i], memory_order_relaxed);
    if (ss == NULL || ss->free_mask == 0) continue;
    if (ss->free_mask == ss_all_slabs_mask(ss) &&
        (everything || ++keep[ss->kind] > g_hak_config.keep_empty_superslabs)) {
      pool_unmap_superslab(ss);
      released = 1;
      continue;
    }
    for (uint32_t mask = ss->free_mask; mask != 0; mask &= mask - 1) {
      slab_meta_t *m = &ss->slabs[__builtin_ctz(mask)];
      if (atomic_load_explicit(&m->dirty, memory_order_relaxed)) {
        os_purge(m->base, ss_slab_bytes(ss, m->index));
        slab_clear_dirty(m);
        released = 1;
      }
    }
  }
  pthread_mutex_unlock(&g_alloc_lock);
  return released;
}

static int purge_pass(int everything) {
  atomic_store_explicit(&g_last_purge_ms, os_now_ms(), memory_order_relaxed);
  purge_partial_stacks();
  return purge_pool(everything);
}

void shared_pool_maybe_purge(void) {
  size_t dirty = atomic_load_explicit(&g_dirty_bytes, memory_order_relaxed);
  if (HAK_LIKELY(dirty == 0)) return;
  if (dirty < g_hak_config.purge_dirty_max &&
      os_now_ms() - atomic_load_explicit(&g_last_purge_ms, memory_order_relaxed) < g_hak_config.purge_delay_ms)
    return;
  if (pthread_mutex_trylock(&g_purge_lock) != 0) return;
  purge_pass(0);
  pthread_mutex_unlock(&g_purge_lock);
}

int shared_pool_trim(void) {
  pthread_mutex_lock(&g_purge_lock);
  int released = purge_pass(1);
  pthread_mutex_unlock(&g_purge_lock);
  return released;
}

void shared_pool_fork_prepare(void) {
  pthread_mutex_lock(&g_purge_lock);
  pthread_mutex_lock(&g_alloc_lock);
}

void shared_pool_fork_parent(void) {
  pthread_mutex_unlock(&g_alloc_lock);
  pthread_mutex_unlock(&g_purge_lock);
}

// The child's only thread is the one that took the locks in prepare, so it
// releases them as the parent does (re-initialising a held mutex is what
// ThreadSanitizer rightly calls a double lock).
void shared_pool_fork_child(void) { shared_pool_fork_parent(); }

void shared_pool_get_stats(shared_pool_stats_t *out) {
  shared_pool_stats_t s = {0};
  pthread_mutex_lock(&g_alloc_lock);
  uint32_t hw = ss_registry_high_water();
  for (uint32_t i = 0; i < hw; i++) {
    superslab_t *ss = atomic_load_explicit(&g_ss_table[i], memory_order_relaxed);
    if (ss == NULL) continue;
    s.superslabs++;
    s.superslab_bytes += SS_SIZE;
    for (unsigned k = 0; k < ss->nslabs; k++) {
      slab_meta_t *m = &ss->slabs[k];
      if (ss->free_mask & (1u << k)) { s.slabs_free++; continue; }
      s.slabs_in_use++;
      size_t used = atomic_load_explicit(&m->used, memory_order_relaxed);
      s.in_use_bytes += used * m->block_size;
      s.free_bytes += ((size_t)m->capacity - (used < m->capacity ? used : m->capacity)) * m->block_size;
    }
  }
  pthread_mutex_unlock(&g_alloc_lock);
  s.mapped_total = atomic_load(&g_ss_mapped_total);
  s.unmapped_total = atomic_load(&g_ss_unmapped_total);
  *out = s;
}
