// test_keys.c — where the per-process link key comes from (tls_sll_box.h's
// g_block_cookie, seeded by os_random_seed at start-up): the kernel's random
// bits, not AT_RANDOM's bytes 8-15, which are glibc's pointer guard.
#include "unit_util.h"

#include <sys/auxv.h>

#include "os/os.h"
#include "tiny/tls_sll_box.h"

// The main thread's stack mapping, [lo, hi), from /proc/self/maps.
static int main_stack(uintptr_t *lo, uintptr_t *hi) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (f == NULL) return 0;
  char line[512];
  int found = 0;
  while (!found && fgets(line, sizeof line, f) != NULL)
    if (strstr(line, "[stack]") != NULL) found = sscanf(line, "%lx-%lx", lo, hi) == 2;
  fclose(f);
  return found;
}

// The key was AT_RANDOM's second word xor a stack address (bit 63 set): with
// the key learned (a freed block's words, read after free), the pointer guard
// was that address away. Now the two words are unrelated: their xor is a stack
// address by a chance of the stack's size in 2^63.
static void test_the_link_key_does_not_reveal_glibcs_pointer_guard(void **state) {
  (void)state;
  hak_free(hak_malloc(16));   // the engine is set up (its constructor ran already)
  const unsigned char *rnd = (const unsigned char *)getauxval(AT_RANDOM);
  uintptr_t lo = 0, hi = 0;
  if (rnd == NULL || !main_stack(&lo, &hi)) skip();
  uint64_t guard;
  memcpy(&guard, rnd + 8, sizeof guard);
  uint64_t x = (g_block_cookie ^ guard) & ~((uint64_t)1 << 63);
  assert_false(x >= lo && x < hi);
}

// Each call draws new bits (the hardened build draws its canary and size key
// apart from the link key).
static void test_each_seed_is_new(void **state) {
  (void)state;
  uint64_t a = os_random_seed(), b = os_random_seed();
  assert_true(a != b);
  assert_true(a != (uint64_t)g_block_cookie && b != (uint64_t)g_block_cookie);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_the_link_key_does_not_reveal_glibcs_pointer_guard),
    HAK_UNIT_TEST(test_each_seed_is_new),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
