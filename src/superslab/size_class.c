// size_class.c — the class table (see size_class.h). Built at compile time.
#include "superslab/size_class.h"

#define KIB 1024u
#define BUDGET(sz) ((sz) <= 1024u ? TLS_CACHE_BYTES : TLS_CACHE_BYTES_MEDIUM)
#define CAP(sz)                                                                          \
  ((BUDGET(sz) / (sz)) > TLS_CACHE_MAX_BLOCKS   ? TLS_CACHE_MAX_BLOCKS                    \
   : (BUDGET(sz) / (sz)) < TLS_CACHE_MIN_BLOCKS ? TLS_CACHE_MIN_BLOCKS                    \
                                                : (BUDGET(sz) / (sz)))
#define MAGIC(sz) (UINT64_MAX / (sz) + 1u)
#define KIND(sz) ((sz) <= 1024u ? HAK_KIND_SMALL : (sz) <= 32u * KIB ? HAK_KIND_MEDIUM : HAK_KIND_LARGE)
#define C(sz) { (sz), MAGIC(sz), CAP(sz), (CAP(sz) / 2u), KIND(sz) }
#define QUAD(b) C((b) * 5 / 4), C((b) * 6 / 4), C((b) * 7 / 4), C((b) * 2)

const size_class_info_t g_size_class[HAK_NUM_CLASSES] = {
  C(16), C(32), C(48), C(64), C(80), C(96), C(112), C(128),
  QUAD(128), QUAD(256), QUAD(512),                           // tiny: up to 1 KiB
  QUAD(1 * KIB), QUAD(2 * KIB), QUAD(4 * KIB), QUAD(8 * KIB), QUAD(16 * KIB),   // kind 1
  QUAD(32 * KIB), QUAD(64 * KIB), QUAD(128 * KIB),           // kind 2: up to 256 KiB
};

#define L4(c) c, c, c, c
const uint8_t g_tiny_class_lut[HAK_TINY_MAX / 16 + 1] = {
  0, 0, 1, 2, 3, 4, 5, 6, 7,           // 0..128 in 16-byte steps
  8, 8, 9, 9, 10, 10, 11, 11,          // 129..256, 32-byte steps
  L4(12), L4(13), L4(14), L4(15),      // 257..512, 64-byte steps
  L4(16), L4(16), L4(17), L4(17),      // 513..1024, 128-byte steps
  L4(18), L4(18), L4(19), L4(19),
};
_Static_assert(sizeof g_tiny_class_lut == 65, "one LUT entry per 16 bytes up to 1 KiB");
