// shared_pool_acquire.c — the three acquire stages (see shared_pool.h).
#include "os/os.h"
#include "shared_pool/shared_pool_internal.h"
#include "stats/stats.h"

// Bind a slab to a class, empty, owned by `owner` (the caller holds it alone).
static void slab_bind(slab_meta_t *m, unsigned cls, uintptr_t owner) {
  superslab_t *ss = ss_of_meta(m);
  uint32_t size = g_size_class[cls].size, block = g_size_class[cls].block;
  m->cls = (uint8_t)cls;
  m->tls_off = g_class_tls_off[cls];
  m->block_size = block;
  m->size_magic = g_size_class[cls].magic;
  m->capacity = (uint16_t)slab_capacity(ss_slab_bytes(ss, m->index), block);
  m->freelist = NULL;
  m->free_n = 0;
  m->sweep_wait = 0;   // (free_since_ms's FREE spell is over)
  m->populate = size <= SLAB_POP_PAGE ? SLAB_POP_DENSE : SLAB_POP_UNKNOWN;
  // An EMPTY slab adopted from an abandoned stack is bound again without
  // going FREE: its last life's reach must outlive the carve reset, or a
  // purge of its next FREE spell stops short of pages still resident (1.3 MB
  // of mstress -t 16's FREE slabs were out of every purge's reach).
  slab_note_dirty_end(m);
  slab_set_carve(m, m->base);
  m->where = SLAB_IN_NONE;
  m->list_next = m->list_prev = NULL;
  atomic_store_explicit(&m->remote_head, 0, memory_order_relaxed);
  atomic_store_explicit(&m->used, 0, memory_order_relaxed);
  atomic_store_explicit(&m->notify, SLAB_NOTIFY_IDLE, memory_order_relaxed);
  atomic_store_explicit(&m->dirty, 1, memory_order_relaxed);
  slab_set_owner(m, owner, memory_order_relaxed);
  uint32_t w = atomic_load_explicit(&m->state, memory_order_relaxed);
  // release: whoever acquires the state sees the fields above.
  atomic_store_explicit(&m->state, SLAB_WITH(w, SLAB_ACTIVE), memory_order_release);
}

// An abandoned slab with live blocks becomes owner's: its free list counts
// in `used` again (superslab.h; shared_pool_detach_slab took it out), and
// pushes count their blocks on the remote list again (the word counts none
// while it asks for attention: each push lowered `used` itself).
static void slab_adopt_counted(slab_meta_t *m, uintptr_t owner) {
  slab_set_owner(m, owner, memory_order_relaxed);
  uint32_t f = slab_free_count(m);
  if (f != 0) {
    HAK_SITE(SITE_SLAB_USED);
    atomic_fetch_add_explicit(&m->used, f, memory_order_relaxed);
  }
  remote_list_unattend(m);
}

// Stage 1: adopt a slab an exited thread abandoned, without locks.
static slab_meta_t *acquire_stage1_abandoned(unsigned cls, uintptr_t owner) {
  if ((uint32_t)atomic_load_explicit(&g_abandoned[cls], memory_order_relaxed) == 0) return NULL;
  slab_meta_t *m;
  while ((m = abandoned_pop(cls)) != NULL) {
    // acquire: the abandoning owner's writes to the slab (before its release
    // state store) are visible.
    uint32_t w = atomic_load_explicit(&m->state, memory_order_acquire);
    for (;;) {
      unsigned st = SLAB_STATE(w);
      HAK_ASSERT(st == SLAB_LISTED || st == SLAB_EMPTY_LISTED);
      HAK_SITE(SITE_SLAB_STATE);
      // A new generation: a thread that saw the abandoned slab empty and
      // stalled before its swap (shared_pool_slab_empty) must not act on the
      // state of a later abandonment, whose blocks are live.
      if (atomic_compare_exchange_weak_explicit(&m->state, &w, SLAB_NEXT_GEN(w, SLAB_ACTIVE),
                                                memory_order_acq_rel, memory_order_acquire)) {
        if (st == SLAB_EMPTY_LISTED) {   // start it afresh
          abandoned_empty_leave(m);
          slab_bind(m, cls, owner);
        }
        else slab_adopt_counted(m, owner);
        return m;
      }
    }
  }
  return NULL;
}

// Stage 3: a new SuperSlab, mapped with no lock held, registered, given to
// its kind's pool (kind's pool lock held on return).
static int acquire_stage3_new_superslab(unsigned kind) {
  if (pool_rekind_empty_superslab(kind)) return 1;
  superslab_t *ss = superslab_allocate(kind);
  if (ss == NULL) return 0;
  pthread_mutex_lock(&g_registry_lock);
  int added = ss_registry_add(ss);
  pthread_mutex_unlock(&g_registry_lock);
  if (added != 0) {
    superslab_unmap(ss);
    return 0;
  }
  HAK_SITE(SITE_SS_COUNTERS);
  atomic_fetch_add_explicit(&g_ss_live, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&g_ss_mapped_total, 1, memory_order_relaxed);
  pool_lock(kind);
  pool_add_new_locked(ss);
  return 1;
}

// A stashed slab that last served cls and is dirty, taken out of the stash;
// NULL when none is (pool_take_class_locked says why).
static slab_meta_t *stash_take_class(slab_stash_t *st, unsigned cls) {
  for (uint32_t i = st->n; i-- > 0;) {
    slab_meta_t *m = st->slab[i];
    if (m->cls != cls || !atomic_load_explicit(&m->dirty, memory_order_relaxed)) continue;
    st->slab[i] = st->slab[--st->n];
    return m;
  }
  return NULL;
}

// Stage 2: FREE slabs of the class's kind, from the stash, refilled in a
// batch under the kind's pool lock (stage 3 when the pool has none). A dirty
// slab that last served the class comes first, from the stash, else from the
// pool when it has one (pool_take_class_locked).
static slab_meta_t *acquire_stage2_free_slab(unsigned kind, unsigned cls, slab_stash_t *st) {
  slab_meta_t *m = stash_take_class(st, cls);
  if (m == NULL && atomic_load_explicit(&g_pool_dirty_of_class[cls], memory_order_relaxed) != 0) {
    pool_lock(kind);
    m = pool_take_class_locked(kind, cls);
    pool_unlock(kind);
  }
  if (m != NULL) return m;
  if (st->n > 0) return st->slab[--st->n];
  slab_meta_t *got[SLAB_STASH_MAX + 1];
  uint32_t want = (uint32_t)g_stash_cap[kind] + 1u;   // one to use, the rest to keep
  pool_lock(kind);
  uint32_t n = pool_take_locked(kind, got, want);
  pool_unlock(kind);
  if (n == 0 && pool_collect_empty_now()) {   // EMPTY slabs on the abandoned stacks first
    pool_lock(kind);
    n = pool_take_locked(kind, got, want);
    pool_unlock(kind);
  }
  if (n == 0) {
    if (!acquire_stage3_new_superslab(kind)) return NULL;
    n = pool_take_locked(kind, got, want);
    pool_unlock(kind);
    if (n == 0) return NULL;
  }
  for (uint32_t i = n - 1; i >= 1; i--) st->slab[st->n++] = got[i];   // popped in the pool's order: dirty ones first
  return got[0];
}

slab_meta_t *shared_pool_adopt_slab(unsigned cls, uintptr_t owner) {
  return acquire_stage1_abandoned(cls, owner);
}

int shared_pool_has_dirty_free(unsigned kind) {
  return atomic_load_explicit(&g_pool[kind].dirty_bytes, memory_order_relaxed) != 0;
}

slab_meta_t *shared_pool_acquire_slab(unsigned cls, unsigned kind, uintptr_t owner, slab_stash_t *st) {
  slab_meta_t *m = acquire_stage1_abandoned(cls, owner);
  if (m != NULL) return m;
  m = acquire_stage2_free_slab(kind, cls, st);
  if (m == NULL) return NULL;
  slab_bind(m, cls, owner);
  return m;
}
