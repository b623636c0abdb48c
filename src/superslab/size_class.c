// size_class.c — the class table (see size_class.h). Built at compile time.
#include "superslab/size_class.h"

#define KIB 1024u
#define BUDGET(sz) ((sz) <= 1024u ? TLS_CACHE_BYTES : TLS_CACHE_BYTES_MEDIUM)
#define CAP(sz)                                                                          \
  ((BUDGET(sz) / (sz)) > TLS_CACHE_MAX_BLOCKS   ? TLS_CACHE_MAX_BLOCKS                    \
   : (BUDGET(sz) / (sz)) < TLS_CACHE_CLASS_MIN_BLOCKS ? TLS_CACHE_CLASS_MIN_BLOCKS        \
                                                : (BUDGET(sz) / (sz)))
// floor(2^64 / sz), then the odd one of +1 and +2 (size_class.h says why).
#define FLOOR64(sz) (UINT64_MAX / (sz) + (((sz) & ((sz) - 1u)) == 0u))
#define MAGIC(sz) ((FLOOR64(sz) + 1u) | 1u)
#define KIND(sz) ((sz) <= HAK_TINY_MAX ? HAK_KIND_SMALL : (sz) <= HAK_KIND_MEDIUM_MAX ? HAK_KIND_MEDIUM : HAK_KIND_LARGE)
#define BLOCK(sz) (HAK_CLASS_PADDED(sz) ? (sz) + HAK_CLASS_PAD : (sz))
#define C(sz) { (sz), BLOCK(sz), MAGIC(BLOCK(sz)), CAP(sz), (CAP(sz) / 2u), KIND(sz) }
#define QUAD(b) C((b) * 5 / 4), C((b) * 6 / 4), C((b) * 7 / 4), C((b) * 2)

const size_class_info_t g_size_class[HAK_NUM_CLASSES] = {
  C(16), C(32), C(48), C(64), C(80), C(96), C(112), C(128),
  QUAD(128), QUAD(256), QUAD(512),                           // tiny: up to 1 KiB
  QUAD(1 * KIB), QUAD(2 * KIB), C(HAK_CLASS_PAGE_AND_HEADER), QUAD(4 * KIB), QUAD(8 * KIB), QUAD(16 * KIB),
  QUAD(32 * KIB), QUAD(64 * KIB),                            // kind 1: up to 128 KiB
  QUAD(128 * KIB),                                           // kind 2: up to 256 KiB
};

// One entry per byte count: the class is one load of the request size itself,
// with no rounding on the malloc fast path (each thread has a copy in its TLS
// cache holding TLS slots, size_class_tls_slot, tls_sll_box.h; this one
// is for everything else).
const uint8_t g_tiny_class_lut[HAK_TINY_MAX + 1] = { HAK_TINY_CLASS_LUT_INIT };
int32_t g_class_tls_off[HAK_NUM_CLASSES];

// One entry per 256-byte step of the medium requests: the class of the step's
// last request, (i + 1) * 256 bytes, by the classes' rule (four per power of
// two above 128: 8 + 4 * (lg - 7) + the quarter; one more past the page and
// header class), folded by the compiler. (The first four steps are the tiny
// classes' and never read.)
#define MLG(n) (63u - (unsigned)__builtin_clzll((unsigned long long)(n) - 1ull))   // 2^lg < n <= 2^(lg+1)
#define MQUARTERS(n) (8u + (MLG(n) - 7u) * 4u + (unsigned)((((unsigned long long)(n) - 1ull) >> (MLG(n) - 2u)) & 3u))
#define MCLS(n) (MQUARTERS(n) + ((n) > HAK_CLASS_PAGE_AND_HEADER))
#define MC(i) (uint8_t)MCLS(((i) + 1ull) << HAK_MEDIUM_LUT_SHIFT)
// The counts size_class.h states, by the same rule: the last class, and the
// last the exchange takes (HAK_MEDIUM_MAX), are the classes of those sizes.
_Static_assert(MCLS(HAK_SLAB_MAX) + 1u == HAK_NUM_CLASSES, "HAK_NUM_CLASSES is the table's length");
_Static_assert(MCLS(HAK_MEDIUM_MAX) + 1u == HAK_EXCHANGE_CLASSES, "HAK_EXCHANGE_CLASSES counts the classes to 32 KiB");
#define MC8(i) MC(i), MC((i) + 1), MC((i) + 2), MC((i) + 3), MC((i) + 4), MC((i) + 5), MC((i) + 6), MC((i) + 7)
#define MC64(i) MC8(i), MC8((i) + 8), MC8((i) + 16), MC8((i) + 24), MC8((i) + 32), MC8((i) + 40), MC8((i) + 48), MC8((i) + 56)
const uint8_t g_medium_class_lut[HAK_MEDIUM_LUT_STEPS] = {
  MC64(0), MC64(64), MC64(128), MC64(192), MC64(256), MC64(320), MC64(384), MC64(448),
  MC64(512), MC64(576), MC64(640), MC64(704), MC64(768), MC64(832), MC64(896), MC64(960),
};
_Static_assert(HAK_MEDIUM_LUT_STEPS == 1024, "sixteen rows of 64 steps");
_Static_assert(sizeof g_tiny_class_lut == HAK_TINY_MAX + 1, "one LUT entry per byte count up to 1 KiB");
