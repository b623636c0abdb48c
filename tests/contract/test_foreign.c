// test_foreign.c — pointers that are not hakmem's (DESIGN §4).
//   - glibc chunks handed out by a library opened with RTLD_DEEPBIND are
//     freed, realloc'd and measured by hakmem's exported functions, which
//     forward them to glibc;
//   - wild pointers (stack, static data, interior of a block, misaligned,
//     unmapped, no chunk header) make free/realloc/malloc_usable_size report
//     one line on stderr and abort.
// Run with LD_PRELOAD.
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "contract_util.h"

#pragma GCC diagnostic ignored "-Wfree-nonheap-object"   // on purpose
#pragma GCC diagnostic ignored "-Wuse-after-free"

static void *(*dmalloc)(size_t);
static void *(*dcalloc)(size_t, size_t);
static void *(*dmemalign)(size_t, size_t);
static void (*dfree)(void *);
static void *(*dmalloc_address)(void);

static int open_helper(void **state) {
  if (require_hakmem(state) != 0) return -1;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/libdeepbind_helper.so", test_dir());
  void *h = dlopen(path, RTLD_NOW | RTLD_DEEPBIND);
  if (h == NULL) {
    fprintf(stderr, "dlopen %s: %s\n", path, dlerror());
    return -1;
  }
  dmalloc = (void *(*)(size_t))dlsym(h, "deepbind_malloc");
  dcalloc = (void *(*)(size_t, size_t))dlsym(h, "deepbind_calloc");
  dmemalign = (void *(*)(size_t, size_t))dlsym(h, "deepbind_memalign");
  dfree = (void (*)(void *))dlsym(h, "deepbind_free");
  dmalloc_address = (void *(*)(void))dlsym(h, "deepbind_malloc_address");
  return dmalloc && dcalloc && dmemalign && dfree && dmalloc_address ? 0 : -1;
}

static void fill(void *p, size_t n, unsigned seed) {
  unsigned char *c = p;
  for (size_t i = 0; i < n; i++) c[i] = (unsigned char)(seed + i * 13);
}
static int check(const void *p, size_t n, unsigned seed) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++)
    if (c[i] != (unsigned char)(seed + i * 13)) return 0;
  return 1;
}

// ---- glibc chunks from an RTLD_DEEPBIND library ------------------------------

static void test_deepbind_library_allocates_with_glibc_not_hakmem(void **state) {
  (void)state;
  if (contract_under_glibc()) skip();
  assert_ptr_not_equal(dmalloc_address(), hak_sym("malloc"));
  void *p = dmalloc(100);
  assert_non_null(p);
  assert_false(hak_owns_ptr(p));
  dfree(p);
}

static void test_free_of_a_glibc_block_is_forwarded_to_glibc(void **state) {
  (void)state;
  void *p = dmalloc(100);
  free(p);                                    // ours, forwarded to glibc's free
  void *q = dmalloc(100);                     // glibc's tcache hands the same chunk back
  assert_ptr_equal(q, p);
  free(q);
}

static void test_free_of_glibc_blocks_of_every_kind_is_forwarded(void **state) {
  (void)state;
  size_t sizes[] = {1, 24, 100, 1000, 5000, 100000, 200000 /* mmapped by glibc */, 4u << 20};
  for (int round = 0; round < 3; round++)
    for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++) {
      void *p = dmalloc(sizes[i]);
      fill(p, sizes[i], i);
      errno = 99;
      free(p);
      assert_int_equal(errno, 99);
    }
  void *z = dcalloc(10, 10);
  free(z);
  void *a = dmemalign(4096, 1000);
  free(a);
  void *b = dmemalign(64, 300000);
  free(b);
}

static void test_realloc_of_a_glibc_block_keeps_its_contents(void **state) {
  (void)state;
  char *p = dmalloc(100);
  fill(p, 100, 5);
  p = realloc(p, 50000);
  assert_non_null(p);
  assert_true(check(p, 100, 5));
  fill(p, 50000, 6);
  p = realloc(p, 500000);                     // into a glibc mmapped chunk
  assert_non_null(p);
  assert_true(check(p, 50000, 6));
  p = realloc(p, 10);
  assert_non_null(p);
  assert_true(check(p, 10, 6));
  free(p);
}

static void test_realloc_of_a_glibc_block_to_zero_frees_it(void **state) {
  (void)state;
  void *p = dmalloc(100);
  assert_null(realloc(p, 0));
  void *q = dmalloc(100);
  assert_ptr_equal(q, p);                     // glibc got it back
  free(q);
}

static void test_malloc_usable_size_of_a_glibc_block_is_glibcs(void **state) {
  (void)state;
  size_t sizes[] = {1, 24, 100, 5000, 300000};
  for (unsigned i = 0; i < 5; i++) {
    void *p = dmalloc(sizes[i]);
    size_t u = malloc_usable_size(p);
    assert_true(u >= sizes[i]);
    assert_true(u < sizes[i] + 4096 + 64);
    free(p);
  }
}

static void *free_in_thread(void *p) {
  free(p);
  return NULL;
}

static void test_glibc_blocks_can_be_freed_from_another_thread(void **state) {
  (void)state;
  for (int i = 0; i < 50; i++) {
    void *p = dmalloc((size_t)(i * 97 + 1));
    pthread_t t;
    pthread_create(&t, NULL, free_in_thread, p);
    pthread_join(t, NULL);
  }
}

// ---- wild pointers -----------------------------------------------------------

static _Alignas(64) char g_static_buf[256];

typedef struct {
  int op;                                     // 0 free, 1 realloc, 2 malloc_usable_size
  void *ptr;
  int ptr_is_stack;
} wild_t;

static void do_wild(void *arg) {
  wild_t *w = arg;
  _Alignas(64) char local[128];
  memset(local, 0, sizeof local);
  void *p = w->ptr_is_stack ? local + 32 : w->ptr;
  if (w->op == 0) free(p);
  else if (w->op == 1) (void)!realloc(p, 100);
  else (void)!malloc_usable_size(p);
  _exit(0);                                   // not reached if the pointer was caught
}

// Runs the call in a child and checks: killed by SIGABRT, exactly one line on
// stderr, starting with the given prefix and containing reason (if any).
static void expect_report(int op, void *ptr, int ptr_is_stack, const char *prefix, const char *reason) {
  wild_t w = {op, ptr, ptr_is_stack};
  child_result_t r = run_in_child(do_wild, &w, 10);
  if (!WIFSIGNALED(r.status) || WTERMSIG(r.status) != SIGABRT)
    fail_msg("expected SIGABRT, child %s %d; stderr: %s",
             WIFSIGNALED(r.status) ? "killed by signal" : "exited with",
             WIFSIGNALED(r.status) ? WTERMSIG(r.status) : WEXITSTATUS(r.status), r.err);
  if (count_lines(r.err) != 1) fail_msg("expected one line on stderr, got: %s", r.err);
  if (strncmp(r.err, prefix, strlen(prefix)) != 0) fail_msg("expected '%s...', got: %s", prefix, r.err);
  if (reason != NULL && strstr(r.err, reason) == NULL) fail_msg("expected '%s' in: %s", reason, r.err);
}

#define FREE_PREFIX "hakmem: free of invalid pointer 0x"

static void test_free_of_a_stack_address_aborts_with_a_one_line_report(void **state) {
  (void)state;
  if (contract_under_glibc()) skip();
  expect_report(0, NULL, 1, FREE_PREFIX, "(on the stack)");
}

static void *stack_in_thread(void *arg) {
  (void)arg;
  wild_t w = {0, NULL, 1};
  do_wild(&w);
  return NULL;
}

static void thread_stack_child(void *arg) {
  (void)arg;
  pthread_t t;
  pthread_create(&t, NULL, stack_in_thread, NULL);
  pthread_join(t, NULL);
}

static void test_free_of_a_thread_stack_address_aborts_with_a_one_line_report(void **state) {
  (void)state;
  if (contract_under_glibc()) skip();
  child_result_t r = run_in_child(thread_stack_child, NULL, 10);
  assert_true(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT);
  assert_int_equal(count_lines(r.err), 1);
  assert_non_null(strstr(r.err, FREE_PREFIX));
  assert_non_null(strstr(r.err, "(on the stack)"));
}

static void test_free_of_static_data_aborts_with_a_one_line_report(void **state) {
  (void)state;
  if (contract_under_glibc()) skip();
  expect_report(0, g_static_buf + 64, 0, FREE_PREFIX, "(static data");
}

static void test_free_of_a_misaligned_pointer_aborts_with_a_one_line_report(void **state) {
  (void)state;
  if (contract_under_glibc()) skip();
  char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  expect_report(0, m + 40, 0, FREE_PREFIX, "(misaligned)");
  munmap(m, 4096);
}

static void test_free_of_unmapped_memory_aborts_with_a_one_line_report(void **state) {
  (void)state;
  if (contract_under_glibc()) skip();
  char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  munmap(m, 8192);
  expect_report(0, m + 4096, 0, FREE_PREFIX, "(unmapped memory)");
}

static void test_free_of_memory_without_a_chunk_header_aborts_with_a_one_line_report(void **state) {
  (void)state;
  if (contract_under_glibc()) skip();
  char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  memset(m, 0x41, 8192);
  expect_report(0, m + 256, 0, FREE_PREFIX, "(no heap block header)");
  munmap(m, 8192);
}

static void test_free_of_an_interior_pointer_of_a_huge_block_aborts(void **state) {
  (void)state;
  if (contract_under_glibc()) skip();
  char *p = malloc(64u << 20);
  expect_report(0, p + 4096, 0, "hakmem: ", NULL);
  free(p);
}

static void test_free_of_an_interior_pointer_of_a_large_block_aborts(void **state) {
  (void)state;
  if (contract_under_glibc()) skip();
  char *p = malloc(1u << 20);
  expect_report(0, p + 4096, 0, "hakmem: ", NULL);
  free(p);
}

// A huge block freed twice: its mapping gone or cached, the second free found
// no block and was reported as a free of unmapped memory; now as what it is.
static void test_double_free_of_a_huge_block_is_reported_as_one(void **state) {
  (void)state;
  if (contract_under_glibc()) skip();
  char *p = malloc(64u << 20);
  p[0] = 1;
  free(p);
  expect_report(0, p, 0, "hakmem: double free of 0x", "(a huge block, freed before)");
  void *q;
  assert_int_equal(posix_memalign(&q, 2u << 20, 5000), 0);   // aligned past 1 MiB: a huge one too
  free(q);
  expect_report(0, q, 0, "hakmem: double free of 0x", "(a huge block, freed before)");
  assert_int_equal(posix_memalign(&q, 65536, 5000), 0);      // up to 1 MiB: the page heap's
  free(q);
  expect_report(0, q, 0, "hakmem: double free of 0x", "(a large block)");
}

// HAKMEM_ABORT_ON_ERROR=0: a wild pointer is reported and the call goes on
// (free does nothing, realloc returns NULL with EINVAL, malloc_usable_size 0),
// as the engine's own reports do; these aborted whatever the setting said.
// The setting is read at start-up: this program runs itself again with it.
static char g_static_block[64];
static int abort_off_child(void) {
  char local[64];
  free(local + 16);
  errno = 0;
  void *r = realloc(g_static_block + 16, 100);
  int realloc_ok = r == NULL && errno == EINVAL;
  size_t u = malloc_usable_size(g_static_block + 16);
  printf("went on: realloc %s, usable %zu\n", realloc_ok ? "NULL/EINVAL" : "other", u);
  return 0;
}

static void test_wild_pointers_go_on_with_abort_off(void **state) {
  (void)state;
  if (contract_under_glibc()) skip();
  char self[4096], cmd[4200], out[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  assert_true(n > 0);
  self[n] = '\0';
  snprintf(cmd, sizeof cmd, "HAKMEM_ABORT_ON_ERROR=0 '%s' --abort-off-child 2>&1", self);
  FILE *f = popen(cmd, "r");
  assert_non_null(f);
  size_t got = fread(out, 1, sizeof out - 1, f);
  out[got] = '\0';
  int status = pclose(f);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail_msg("the child did not go on: %s", out);
  if (strstr(out, "hakmem: free of invalid pointer 0x") == NULL ||
      strstr(out, "hakmem: realloc of invalid pointer 0x") == NULL ||
      strstr(out, "hakmem: malloc_usable_size of invalid pointer 0x") == NULL)
    fail_msg("a report is missing: %s", out);
  if (strstr(out, "went on: realloc NULL/EINVAL, usable 0") == NULL) fail_msg("wrong results: %s", out);
}

static void test_realloc_of_a_stack_address_aborts_with_a_one_line_report(void **state) {
  (void)state;
  if (contract_under_glibc()) skip();
  expect_report(1, NULL, 1, "hakmem: realloc of invalid pointer 0x", "(on the stack)");
}

static void test_malloc_usable_size_of_static_data_aborts_with_a_one_line_report(void **state) {
  (void)state;
  if (contract_under_glibc()) skip();
  expect_report(2, g_static_buf, 0, "hakmem: malloc_usable_size of invalid pointer 0x", "(static data");
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--abort-off-child") == 0) return abort_off_child();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_deepbind_library_allocates_with_glibc_not_hakmem),
      cmocka_unit_test(test_free_of_a_glibc_block_is_forwarded_to_glibc),
      cmocka_unit_test(test_free_of_glibc_blocks_of_every_kind_is_forwarded),
      cmocka_unit_test(test_realloc_of_a_glibc_block_keeps_its_contents),
      cmocka_unit_test(test_realloc_of_a_glibc_block_to_zero_frees_it),
      cmocka_unit_test(test_malloc_usable_size_of_a_glibc_block_is_glibcs),
      cmocka_unit_test(test_glibc_blocks_can_be_freed_from_another_thread),
      cmocka_unit_test(test_free_of_a_stack_address_aborts_with_a_one_line_report),
      cmocka_unit_test(test_free_of_a_thread_stack_address_aborts_with_a_one_line_report),
      cmocka_unit_test(test_free_of_static_data_aborts_with_a_one_line_report),
      cmocka_unit_test(test_free_of_a_misaligned_pointer_aborts_with_a_one_line_report),
      cmocka_unit_test(test_free_of_unmapped_memory_aborts_with_a_one_line_report),
      cmocka_unit_test(test_free_of_memory_without_a_chunk_header_aborts_with_a_one_line_report),
      cmocka_unit_test(test_free_of_an_interior_pointer_of_a_huge_block_aborts),
      cmocka_unit_test(test_free_of_an_interior_pointer_of_a_large_block_aborts),
      cmocka_unit_test(test_double_free_of_a_huge_block_is_reported_as_one),
      cmocka_unit_test(test_wild_pointers_go_on_with_abort_off),
      cmocka_unit_test(test_realloc_of_a_stack_address_aborts_with_a_one_line_report),
      cmocka_unit_test(test_malloc_usable_size_of_static_data_aborts_with_a_one_line_report),
  };
  if (getenv("CONTRACT_FILTER") != NULL) cmocka_set_test_filter(getenv("CONTRACT_FILTER"));
  return cmocka_run_group_tests_name("foreign", tests, open_helper, NULL);
}
