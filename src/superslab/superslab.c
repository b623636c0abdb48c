// superslab.c — mapping and laying out SuperSlabs (see superslab.h).
#include "superslab/superslab.h"

#include <string.h>

#include "os/os.h"

const uint8_t g_kind_slab_shift[HAK_SLAB_KINDS] = {16, 19, 21};

superslab_t *superslab_allocate(unsigned kind) {
  superslab_t *ss = os_map_aligned(SS_SIZE, SS_SIZE);
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
