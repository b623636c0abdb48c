// superslab.c — mapping and laying out SuperSlabs (see superslab.h).
#include "superslab/superslab.h"

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

static superslab_t *superslab_map(void) {
  uintptr_t cur = atomic_load_explicit(&g_ss_chunk_next, memory_order_relaxed);
  while (cur != 0) {
    uintptr_t next = cur + SS_SIZE;
    if ((next & (SS_CHUNK_SIZE - 1)) == 0) next = 0;   // cur is the chunk's last
    HAK_SITE(SITE_SS_CHUNK);
    if (atomic_compare_exchange_weak_explicit(&g_ss_chunk_next, &cur, next, memory_order_relaxed,
                                              memory_order_relaxed))
      return (superslab_t *)cur;
  }
  char *chunk = os_map_aligned(SS_CHUNK_SIZE, SS_CHUNK_SIZE);
  if (chunk == NULL) return os_map_aligned(SS_SIZE, SS_SIZE);   // no room for a chunk: one alone
  uintptr_t none = 0;
  HAK_SITE(SITE_SS_CHUNK);
  if (!atomic_compare_exchange_strong_explicit(&g_ss_chunk_next, &none, (uintptr_t)chunk + SS_SIZE,
                                               memory_order_relaxed, memory_order_relaxed))
    os_unmap(chunk + SS_SIZE, SS_CHUNK_SIZE - SS_SIZE);       // another thread's chunk came first
  return (superslab_t *)chunk;
}

superslab_t *superslab_allocate(unsigned kind) {
  superslab_t *ss = superslab_map();
  if (ss == NULL) return NULL;
  // Fresh mappings read as zero: only the non-zero fields need writing.
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
  return ss;
}

void superslab_unmap(superslab_t *ss) {
  os_unmap(ss, SS_SIZE);
}
