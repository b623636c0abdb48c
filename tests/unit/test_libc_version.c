// test_libc_version.c — os_version_at_least, which decides behaviour that
// changed between glibc versions (aligned_alloc's EINVAL from 2.38 on).
#include "unit_util.h"

#include <gnu/libc-version.h>

#include "os/os.h"

static void test_versions_compare_by_major_then_minor(void **state) {
  (void)state;
  assert_false(os_version_at_least("2.36", 2, 38));
  assert_false(os_version_at_least("2.9", 2, 38));      // minor 9, not .9
  assert_true(os_version_at_least("2.38", 2, 38));
  assert_true(os_version_at_least("2.41", 2, 38));
  assert_true(os_version_at_least("2.41.9000", 2, 38)); // a development snapshot
  assert_true(os_version_at_least("3.0", 2, 38));
  assert_false(os_version_at_least("1.99", 2, 38));
}

static void test_what_does_not_parse_is_not_later(void **state) {
  (void)state;
  assert_false(os_version_at_least("", 2, 38));
  assert_false(os_version_at_least("x.y", 2, 38));
  assert_false(os_version_at_least("2", 2, 38));
  assert_false(os_version_at_least("2.", 2, 38));
  assert_true(os_version_at_least("99999999999999999999.1", 2, 38));   // clamped, no overflow
}

// The running C library: the same answer as a plain parse of its version.
static void test_the_running_libc_is_asked(void **state) {
  (void)state;
  unsigned major = 0, minor = 0;
  assert_int_equal(sscanf(gnu_get_libc_version(), "%u.%u", &major, &minor), 2);
  assert_int_equal(os_libc_at_least(2, 38), major > 2 || (major == 2 && minor >= 38));
  assert_true(os_libc_at_least(2, 17));
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_versions_compare_by_major_then_minor),
    HAK_UNIT_TEST(test_what_does_not_parse_is_not_later),
    HAK_UNIT_TEST(test_the_running_libc_is_asked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
