// size_class.c — the class table (see size_class.h). Built at compile time.
#include "superslab/size_class.h"

#define KIB 1024u
#define BUDGET(sz) ((sz) <= 1024u ? TLS_CACHE_BYTES : TLS_CACHE_BYTES_MEDIUM)
#define CAP(sz)                                                                          \
  ((BUDGET(sz) / (sz)) > TLS_CACHE_MAX_BLOCKS   ? TLS_CACHE_MAX_BLOCKS                    \
   : (BUDGET(sz) / (sz)) < TLS_CACHE_MIN_BLOCKS ? TLS_CACHE_MIN_BLOCKS                    \
                                                : (BUDGET(sz) / (sz)))
// floor(2^64 / sz), then the odd one of +1 and +2 (size_class.h says why).
#define FLOOR64(sz) (UINT64_MAX / (sz) + (((sz) & ((sz) - 1u)) == 0u))
#define MAGIC(sz) ((FLOOR64(sz) + 1u) | 1u)
#define KIND(sz) ((sz) <= HAK_TINY_MAX ? HAK_KIND_SMALL : (sz) <= HAK_KIND_MEDIUM_MAX ? HAK_KIND_MEDIUM : HAK_KIND_LARGE)
#define C(sz) { (sz), MAGIC(sz), CAP(sz), (CAP(sz) / 2u), KIND(sz) }
#define QUAD(b) C((b) * 5 / 4), C((b) * 6 / 4), C((b) * 7 / 4), C((b) * 2)

const size_class_info_t g_size_class[HAK_NUM_CLASSES] = {
  C(16), C(32), C(48), C(64), C(80), C(96), C(112), C(128),
  QUAD(128), QUAD(256), QUAD(512),                           // tiny: up to 1 KiB
  QUAD(1 * KIB), QUAD(2 * KIB), QUAD(4 * KIB), QUAD(8 * KIB), QUAD(16 * KIB),
  QUAD(32 * KIB), QUAD(64 * KIB),                            // kind 1: up to 128 KiB
  QUAD(128 * KIB),                                           // kind 2: up to 256 KiB
};

// One entry per byte count: the class is one load of the request size itself,
// with no rounding on the malloc fast path (each thread has a copy in its TLS
// cache holding TLS slots, size_class_tls_slot, tls_sll_box.h; this one
// is for everything else).
const uint8_t g_tiny_class_lut[HAK_TINY_MAX + 1] = { HAK_TINY_CLASS_LUT_INIT };
int32_t g_class_tls_off[HAK_NUM_CLASSES];
_Static_assert(sizeof g_tiny_class_lut == HAK_TINY_MAX + 1, "one LUT entry per byte count up to 1 KiB");
