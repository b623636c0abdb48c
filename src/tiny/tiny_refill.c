// tiny_refill.c — refill and flush of the TLS lists (see tiny_refill.h).
#include "tiny/tiny_refill.h"

#include "debug/report.h"
#include "large/page_heap.h"
#include "shared_pool/shared_pool.h"
#include "tiny/remote_free_box.h"
#include "tiny/tiny_free_local_box.h"
#include "tiny/tiny_thread.h"

// Non-zero before start-up randomises it, so no block can be marked by accident.
uintptr_t g_block_cookie = 0x9e3779b97f4a7c15u;

// A chain of blocks being built in order.
typedef struct block_chain {
  hak_base_ptr_t first, last;
  uint32_t n;
} block_chain_t;

HAK_INLINE void chain_append(block_chain_t *c, hak_base_ptr_t b) {
  if (c->n == 0) c->first = b;
  else block_set_next(c->last, b);
  c->last = b;
  c->n++;
}

// Take up to `want` blocks from the owner's slab: local free list, carving,
// then the drained remote list.
static void slab_take_batch(slab_meta_t *m, uint32_t want, block_chain_t *c) {
  for (;;) {
    while (c->n < want && m->freelist != NULL) {
      hak_base_ptr_t b = hak_base_from_raw(m->freelist);
      m->freelist = *(void **)m->freelist;
      chain_append(c, b);              // still marked free: it moves to a TLS list
    }
    char *end = m->base + (size_t)m->capacity * m->block_size;
    while (c->n < want && m->carve < end) {
      hak_base_ptr_t b = hak_base_from_raw(m->carve);
      m->carve += m->block_size;
      block_set_free(b);
      chain_append(c, b);
    }
    if (c->n == want || ss_remote_drain_to_freelist(m) == 0) return;
  }
}

int tiny_refill(unsigned cls) {
  tls_cache_t *tc = &t_tls_cache;
  uint32_t want = g_size_class[cls].batch;
  if (want > tc->room[cls]) want = tc->room[cls];
  if (want == 0) want = 1;
  shared_pool_maybe_purge();
  page_heap_maybe_purge();
  for (;;) {
    slab_meta_t *m = t_thread.cur[cls];
    if (m == NULL) {
      m = shared_pool_acquire_slab(cls, thread_self_id());
      if (m == NULL) return 0;
      t_thread.cur[cls] = m;
    }
    block_chain_t c = {HAK_BASE_NULL, HAK_BASE_NULL, 0};
    slab_take_batch(m, want, &c);
    if (c.n > 0) {
      atomic_fetch_add_explicit(&m->used, c.n, memory_order_relaxed);
      tls_sll_push_chain(tc, cls, c.first, c.last, c.n);
      return 1;
    }
    t_thread.cur[cls] = NULL;        // exhausted: give it up, take another
    shared_pool_detach_slab(m);
  }
}

// Hand a chain of blocks of one slab back to it.
static void flush_deliver(slab_meta_t *m, block_chain_t *c) {
  if (c->n == 0) return;
  if (atomic_load_explicit(&m->owner, memory_order_relaxed) == thread_self_id()) {
    if (tiny_free_local_box(m, c->first, c->last, c->n) && t_thread.cur[m->cls] != m) {
      shared_pool_detach_slab(m);    // owned but not current: let the pool have it
    }
  } else {
    remote_free_push_chain(m, c->first, c->last, c->n);
  }
  c->n = 0;
}

void tiny_report_double_free(hak_base_ptr_t b, const slab_meta_t *m) {
  char detail[64] = " (class ";
  size_t n = 8;
  n += hak_fmt_u64(detail + n, sizeof detail - n, m->cls);
  detail[n++] = ',';
  detail[n++] = ' ';
  n += hak_fmt_u64(detail + n, sizeof detail - n, m->block_size);
  const char *tail = " bytes)";
  for (size_t i = 0; tail[i] && n + 1 < sizeof detail; i++) detail[n++] = tail[i];
  detail[n] = '\0';
  hak_report_pointer_error("double free of", hak_base_raw(b), detail);
}

void tiny_flush(unsigned cls, uint32_t n) {
  tls_cache_t *tc = &t_tls_cache;
  slab_meta_t *cm = NULL;
  block_chain_t c = {HAK_BASE_NULL, HAK_BASE_NULL, 0};
  while (n-- > 0 && !hak_base_is_null(tc->head[cls])) {
    hak_base_ptr_t b = tc->head[cls];
    tc->head[cls] = block_next(b);
    tc->room[cls]++;
    slab_meta_t *m = ss_slab_of(ss_of(hak_base_raw(b)), hak_base_raw(b));
    if (m != cm) {
      if (cm != NULL) flush_deliver(cm, &c);
      cm = m;
    }
    chain_append(&c, b);
  }
  if (cm != NULL) flush_deliver(cm, &c);
  shared_pool_maybe_purge();
}

void tiny_free_remote(slab_meta_t *m, hak_base_ptr_t b) {
  block_set_free(b);
  remote_free_push_chain(m, b, b, 1);
}
