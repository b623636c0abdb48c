// hardened_test_os_map.c — the hardened build keeps no place of an unmapping
// for the next mapping of its size (os.c place_keep): a stale pointer into a
// freed block mapped alone then faults, where the default build's next
// mapping of the size would take the place at once.
#include "unit_util.h"
#include "os/os.h"

_Static_assert(HAK_HARDENED, "built against the hardened engine");

#define MIB ((size_t)1 << 20)

static void test_a_freed_aligned_place_is_not_mapped_again_at_once(void **state) {
  (void)state;
  char *a = os_map_aligned(4 * MIB, 4 * MIB);
  assert_non_null(a);
  os_unmap(a, 4 * MIB);
  char *b = os_map_aligned(4 * MIB, 4 * MIB);
  assert_non_null(b);
  assert_ptr_not_equal(b, a);
  os_unmap(b, 4 * MIB);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_a_freed_aligned_place_is_not_mapped_again_at_once),
  };
  return cmocka_run_group_tests_name("hardened_os_map", tests, NULL, NULL);
}
