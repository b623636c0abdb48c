// hardened_test_purge_reach.c — test_purge_reach.c against the hardened engine
// (its medium slabs also hold a size table at their end, which the purge must
// return with the blocks' pages).
#include "test_purge_reach.c"

_Static_assert(HAK_HARDENED, "built against the hardened engine");
