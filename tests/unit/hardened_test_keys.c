// hardened_test_keys.c — the hardened build's canary and size-word key are
// drawn apart from the link key (hardened_box_init): a program reads them past
// an unterminated string, and the size key was bits 24-55 of the link key.
#include "unit_util.h"
#include "tiny/hardened_box.h"

_Static_assert(HAK_HARDENED, "built against the hardened engine");

static void test_the_size_key_is_not_the_link_keys_bits(void **state) {
  (void)state;
  hak_free(hak_malloc(16));   // set up
  assert_true(hard_size_key() != (uint32_t)(g_block_cookie >> 24));   // equal by a chance of 2^-32
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_the_size_key_is_not_the_link_keys_bits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
