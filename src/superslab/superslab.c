// superslab.c — mapping and laying out SuperSlabs (see superslab.h).
#include "superslab/superslab.h"

#include <sched.h>
#include <string.h>

#include "os/os.h"
#include "stats/stats.h"

const uint8_t g_kind_slab_shift[HAK_SLAB_KINDS] = {16, 19, 21};

// SuperSlabs are cut from chunks of SS_CHUNK_SLABS (superslab.h), each chunk
// mapped aligned to its own size: one mmap and its trim per chunk, not per
// SuperSlab. Every mmap and munmap takes the address space's lock for writing,
// and the page faults of every other thread wait on it: ws8192 -t 16 at 1-32
// KiB maps ~700 SuperSlabs while it grows, and mapping each alone (an mmap of 4
// MiB and a munmap of the excess) put its threads to sleep ~780 times per run
// (voluntary context switches; in chunks of 8: ~240, and 0.86x the time;
// mimalloc ~70). A chunk's SuperSlabs not handed out yet are address space
// only (no page touched, no RSS); each one handed out is unmapped on its own as
// before (superslab_unmap).
#define SS_CHUNK_SIZE  ((size_t)SS_CHUNK_SLABS * SS_SIZE)

// The next SuperSlab of the current chunk, 0 when none is left. A chunk is
// aligned to SS_CHUNK_SIZE, so its end is where the address crosses that
// alignment, and the word alone says what is left: taking one is a CAS.
static _Atomic uintptr_t g_ss_chunk_next;
// Set while a thread maps a new chunk, so that threads finding the chunk used
// up together map one, not one each: at 16 threads more than half of the
// chunks mapped lost the race and were unmapped again but their first
// SuperSlab (ws8192 -t 16 of 1-32 KiB: 243 chunks mapped for ~890
// SuperSlabs), every mmap and munmap taking the address space's lock for
// writing. The others yield until the chunk is there. A flag, not a mutex:
// fork's handlers hold every mutex of the library at once, 64 with this one,
// past what ThreadSanitizer's deadlock detector can follow; a fork child
// clears it (the thread mapping is not there).
static _Atomic int g_ss_mapping;
static _Atomic uint64_t g_ss_chunks_mapped;   // (tests: one chunk mapped per SS_CHUNK_SLABS taken)

static superslab_t *chunk_take(void) {
  uintptr_t cur = atomic_load_explicit(&g_ss_chunk_next, memory_order_relaxed);
  while (cur != 0) {
    uintptr_t next = cur + SS_SIZE;
    if ((next & (SS_CHUNK_SIZE - 1)) == 0) next = 0;   // cur is the chunk's last
    HAK_SITE(SITE_SS_CHUNK);
    if (atomic_compare_exchange_weak_explicit(&g_ss_chunk_next, &cur, next, memory_order_relaxed,
                                              memory_order_relaxed))
      return (superslab_t *)cur;
  }
  return NULL;
}

static superslab_t *superslab_map(void) {
  superslab_t *ss;
  for (;;) {
    if ((ss = chunk_take()) != NULL) return ss;
    int idle = 0;
    HAK_SITE(SITE_SS_MAPPING);
    if (atomic_compare_exchange_strong_explicit(&g_ss_mapping, &idle, 1, memory_order_acquire, memory_order_relaxed))
      break;
    while (atomic_load_explicit(&g_ss_mapping, memory_order_acquire) &&
           atomic_load_explicit(&g_ss_chunk_next, memory_order_relaxed) == 0)
      sched_yield();
  }
  ss = chunk_take();   // another thread mapped one meanwhile
  if (ss == NULL) {
    char *chunk = os_map_aligned(SS_CHUNK_SIZE, SS_CHUNK_SIZE);
    if (chunk != NULL) {
      HAK_SITE(SITE_SS_CHUNK);
      atomic_store_explicit(&g_ss_chunk_next, (uintptr_t)chunk + SS_SIZE, memory_order_relaxed);
      atomic_fetch_add_explicit(&g_ss_chunks_mapped, 1, memory_order_relaxed);
      ss = (superslab_t *)chunk;
    } else {
      ss = os_map_aligned(SS_SIZE, SS_SIZE);   // no room for a chunk: one alone
    }
  }
  atomic_store_explicit(&g_ss_mapping, 0, memory_order_release);
  return ss;
}

uint64_t superslab_chunks_mapped(void) { return atomic_load_explicit(&g_ss_chunks_mapped, memory_order_relaxed); }

void superslab_fork_child(void) { atomic_store_explicit(&g_ss_mapping, 0, memory_order_relaxed); }

// The header's fields for `kind` and every slab of it FREE, in the pool's
// hands (the metadata otherwise zero).
static void superslab_lay_out(superslab_t *ss, unsigned kind) {
  ss->kind = (uint8_t)kind;
  ss->slab_shift = g_kind_slab_shift[kind];
  ss->nslabs = (uint8_t)(SS_SIZE >> ss->slab_shift);
  ss->free_mask = ss_all_slabs_mask(ss);
  for (unsigned i = 0; i < ss->nslabs; i++) {
    slab_meta_t *m = ss_slab(ss, i);
    m->index = (uint8_t)i;
    m->base = ss_slab_start(ss, i);
    slab_set_owner(m, SLAB_OWNER_POOL, memory_order_relaxed);
  }
}

superslab_t *superslab_allocate(unsigned kind) {
  superslab_t *ss = superslab_map();
  if (ss == NULL) return NULL;
  superslab_lay_out(ss, kind);   // fresh mappings read as zero: only the non-zero fields
  return ss;
}

void superslab_relayout(superslab_t *ss, unsigned kind) {
  for (unsigned k = 0; k < SS_MAX_SLABS; k++) {
    slab_meta_t *m = &ss->slabs[k];
    uint32_t w = atomic_load_explicit(&m->state, memory_order_relaxed);
    // Field by field, the shared ones atomically: a stale free may read them
    // meanwhile (it finds no block to free, as in a FREE slab).
    m->base = NULL;
    atomic_store_explicit(&m->owner, 0, memory_order_relaxed);
    m->size_magic = 0;
    m->block_size = 0;
    m->tls_off = 0;
    atomic_store_explicit(&m->carve_off, 0, memory_order_relaxed);
    atomic_store_explicit(&m->carve_key, 0, memory_order_relaxed);
    m->freelist = NULL;
    m->cls = 0;
    m->capacity = 0;
    atomic_store_explicit(&m->owner_small, 0, memory_order_relaxed);
    atomic_store_explicit(&m->remote_head, 0, memory_order_relaxed);
    atomic_store_explicit(&m->used, 0, memory_order_relaxed);
    atomic_store_explicit(&m->notify, SLAB_NOTIFY_IDLE, memory_order_relaxed);
    atomic_store_explicit(&m->dirty, 0, memory_order_relaxed);
    m->index = 0;
    m->where = SLAB_IN_NONE;
    atomic_store_explicit(&m->wake_next, NULL, memory_order_relaxed);
    m->free_since_ms = 0;
    m->list_next = m->list_prev = NULL;
    m->dirty_end = 0;
    m->dirty_table = 0;
    m->early_pages = 0;
    atomic_store_explicit(&m->state, SLAB_NEXT_GEN(w, SLAB_FREE), memory_order_relaxed);
  }
  ss->in_pool = 0;
  ss->pool_next = ss->pool_prev = NULL;
  superslab_lay_out(ss, kind);
}

void superslab_unmap(superslab_t *ss) {
  os_unmap(ss, SS_SIZE);
}
