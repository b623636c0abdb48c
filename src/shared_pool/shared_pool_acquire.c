// shared_pool_acquire.c — the three acquire stages (see shared_pool.h).
#include <string.h>

#include "config/config.h"
#include "os/os.h"
#include "shared_pool/shared_pool_internal.h"

pthread_mutex_t g_alloc_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t g_purge_lock = PTHREAD_MUTEX_INITIALIZER;
_Atomic uint64_t g_partial[HAK_NUM_CLASSES];
superslab_t *g_pool_head[HAK_SLAB_KINDS];
uint32_t g_empty_ss_count[HAK_SLAB_KINDS];
_Atomic size_t g_dirty_bytes;
_Atomic size_t g_ss_live, g_ss_mapped_total, g_ss_unmapped_total;

slab_meta_t *partial_pop(unsigned cls) {
  uint64_t old = atomic_load_explicit(&g_partial[cls], memory_order_acquire);
  for (;;) {
    uint32_t id = (uint32_t)old;
    if (id == 0) return NULL;
    uint32_t next = atomic_load_explicit(&g_slab_next[id], memory_order_relaxed);
    uint64_t tagged = (((old >> 32) + 1) << 32) | next;
    if (atomic_compare_exchange_weak_explicit(&g_partial[cls], &old, tagged, memory_order_acq_rel,
                                              memory_order_acquire))
      return slab_from_id(id);
  }
}

void partial_push_chain(unsigned cls, uint32_t first, uint32_t last) {
  uint64_t old = atomic_load_explicit(&g_partial[cls], memory_order_relaxed);
  uint64_t tagged;
  do {
    atomic_store_explicit(&g_slab_next[last], (uint32_t)old, memory_order_relaxed);
    tagged = (((old >> 32) + 1) << 32) | first;
  } while (!atomic_compare_exchange_weak_explicit(&g_partial[cls], &old, tagged, memory_order_acq_rel,
                                                  memory_order_relaxed));
}

void shared_pool_list_partial(slab_meta_t *m) {
  uint32_t id = slab_id(m);
  partial_push_chain(m->cls, id, id);
}

void slab_mark_dirty(slab_meta_t *m) {
  if (atomic_exchange_explicit(&m->dirty, 1, memory_order_relaxed) == 0)
    atomic_fetch_add_explicit(&g_dirty_bytes, ss_slab_bytes(ss_of_meta(m), m->index), memory_order_relaxed);
}

void slab_clear_dirty(slab_meta_t *m) {
  if (atomic_exchange_explicit(&m->dirty, 0, memory_order_relaxed) != 0)
    atomic_fetch_sub_explicit(&g_dirty_bytes, ss_slab_bytes(ss_of_meta(m), m->index), memory_order_relaxed);
}

void pool_list_add(superslab_t *ss) {
  if (ss->in_pool) return;
  ss->in_pool = 1;
  ss->pool_prev = NULL;
  ss->pool_next = g_pool_head[ss->kind];
  if (ss->pool_next) ss->pool_next->pool_prev = ss;
  g_pool_head[ss->kind] = ss;
}

void pool_list_remove(superslab_t *ss) {
  if (!ss->in_pool) return;
  ss->in_pool = 0;
  if (ss->pool_prev) ss->pool_prev->pool_next = ss->pool_next;
  else g_pool_head[ss->kind] = ss->pool_next;
  if (ss->pool_next) ss->pool_next->pool_prev = ss->pool_prev;
  ss->pool_next = ss->pool_prev = NULL;
}

// Bind a slab to a class, empty, owned by `owner` (the caller holds it alone).
static void slab_bind(slab_meta_t *m, unsigned cls, uintptr_t owner) {
  superslab_t *ss = ss_of_meta(m);
  uint32_t size = g_size_class[cls].size;
  m->cls = (uint16_t)cls;
  m->block_size = size;
  m->size_magic = g_size_class[cls].magic;
  m->capacity = (uint16_t)(ss_slab_bytes(ss, m->index) / size);
  m->freelist = NULL;
  m->carve = m->base;
  atomic_store_explicit(&m->remote_head, NULL, memory_order_relaxed);
  atomic_store_explicit(&m->used, 0, memory_order_relaxed);
  slab_clear_dirty(m);
  atomic_store_explicit(&m->owner, owner, memory_order_relaxed);
  uint32_t w = atomic_load_explicit(&m->state, memory_order_relaxed);
  atomic_store_explicit(&m->state, SLAB_WITH(w, SLAB_ACTIVE), memory_order_release);
}

// Stage 1: a partial or EMPTY slab already bound to cls, without locks.
static slab_meta_t *acquire_stage1_partial(unsigned cls, uintptr_t owner) {
  slab_meta_t *m;
  while ((m = partial_pop(cls)) != NULL) {
    uint32_t w = atomic_load_explicit(&m->state, memory_order_acquire);
    for (;;) {
      unsigned st = SLAB_STATE(w);
      HAK_ASSERT(st == SLAB_LISTED || st == SLAB_EMPTY_LISTED);
      if (atomic_compare_exchange_weak_explicit(&m->state, &w, SLAB_WITH(w, SLAB_ACTIVE),
                                                memory_order_acq_rel, memory_order_acquire)) {
        if (st == SLAB_EMPTY_LISTED) slab_bind(m, cls, owner);  // start it afresh
        else atomic_store_explicit(&m->owner, owner, memory_order_relaxed);
        return m;
      }
    }
  }
  return NULL;
}

// Take one FREE slab from a SuperSlab on the pool list (alloc_lock held).
static slab_meta_t *pool_take_free_slab(superslab_t *ss) {
  uint32_t all = ss_all_slabs_mask(ss);
  if (ss->free_mask == all) g_empty_ss_count[ss->kind]--;
  unsigned idx = (unsigned)__builtin_ctz(ss->free_mask);
  ss->free_mask &= ~(1u << idx);
  if (ss->free_mask == 0) pool_list_remove(ss);
  return &ss->slabs[idx];
}

// Stage 2: an EMPTY slab of any SuperSlab of the class's kind, under alloc_lock.
static slab_meta_t *acquire_stage2_free_slab(unsigned kind) {
  slab_meta_t *m = NULL;
  pthread_mutex_lock(&g_alloc_lock);
  if (g_pool_head[kind] != NULL) m = pool_take_free_slab(g_pool_head[kind]);
  pthread_mutex_unlock(&g_alloc_lock);
  return m;
}

// Stage 3: a new SuperSlab, mapped with alloc_lock released.
static slab_meta_t *acquire_stage3_new_superslab(unsigned kind) {
  superslab_t *ss = superslab_allocate(kind);
  if (ss == NULL) return NULL;
  pthread_mutex_lock(&g_alloc_lock);
  if (ss_registry_add(ss) != 0) {
    pthread_mutex_unlock(&g_alloc_lock);
    superslab_unmap(ss);
    return NULL;
  }
  atomic_fetch_add_explicit(&g_ss_live, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&g_ss_mapped_total, 1, memory_order_relaxed);
  g_empty_ss_count[kind]++;       // all FREE until we take a slab below
  pool_list_add(ss);
  slab_meta_t *m = pool_take_free_slab(ss);
  pthread_mutex_unlock(&g_alloc_lock);
  return m;
}

slab_meta_t *shared_pool_acquire_slab(unsigned cls, uintptr_t owner) {
  slab_meta_t *m = acquire_stage1_partial(cls, owner);
  if (m != NULL) return m;
  unsigned kind = g_size_class[cls].kind;
  m = acquire_stage2_free_slab(kind);
  if (m == NULL) m = acquire_stage3_new_superslab(kind);
  if (m == NULL) return NULL;
  slab_bind(m, cls, owner);
  return m;
}
