// test_poison.c — free-list poisoning (a use after free that writes an address
// into a freed block's link word) is reported and aborts, in every kind of
// list, before the written address is returned or followed; so is one written
// over the chain record a slab's free or remote list keeps in a chain's first
// block (words 2 and 3, tls_sll_box.h: block_set_chain). Each scenario
// runs in a child process; the parent checks the child's end and its report.
#include "unit_util.h"

#include <sys/wait.h>

#include "tiny/remote_free_box.h"
#include "tiny/transfer_box.h"

static char g_target[64] __attribute__((aligned(16)));   // the address an attacker wants back

// Run fn in a child with stderr captured; returns the wait status, fills err.
static int run_child(void (*fn)(void), char *err, size_t cap) {
  int pipefd[2];
  if (pipe(pipefd) != 0) abort();
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], 2);
    close(pipefd[0]);
    fn();
    _exit(0);                                            // not reported: the test fails
  }
  close(pipefd[1]);
  size_t n = 0;
  ssize_t r;
  while (n + 1 < cap && (r = read(pipefd[0], err + n, cap - 1 - n)) > 0) n += (size_t)r;
  err[n] = '\0';
  close(pipefd[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  return st;
}

static void expect_poison_report(void (*fn)(void)) {
  char err[512];
  int st = run_child(fn, err, sizeof err);
  assert_true(WIFSIGNALED(st));
  assert_int_equal(WTERMSIG(st), SIGABRT);
  assert_non_null(strstr(err, "hakmem: corrupted free list in class "));
  assert_non_null(strstr(err, "use after free?"));
  assert_null(strstr(err, "RETURNED"));
}

static void check_not_target(void *p) {
  if (p == (void *)g_target) fprintf(stderr, "RETURNED the poisoned address\n");
}

// TLS list: the freed block on top of the list gets an address written over
// its link; the next two mallocs would hand that address out.
static void poison_tls_list(void) {
  void *p = hak_malloc(48), *q = hak_malloc(48);
  hak_free(p);
  hak_free(q);
  *(void **)q = g_target;                                // the use after free
  check_not_target(hak_malloc(48));
  check_not_target(hak_malloc(48));
}

// TLS list, walked by a flush: the address goes over the link of the
// list's oldest block of the scenario (below the newer ones), which no
// malloc reaches before the flush of the whole list does; the walk finds the
// list's end by its link as it finds a forged one (tiny_flush.c
// flush_gather), so the blocks above go home and the forged link is reported,
// never followed. Then the list is used again (it would be dropped if the
// report returned).
static void poison_tls_list_flushed(void) {
  unsigned cls = size_class_of(48);
  void *v[8];
  for (int i = 0; i < 8; i++) v[i] = hak_malloc(48);
  for (int i = 0; i < 8; i++) hak_free(v[i]);
  *(void **)v[0] = g_target;                             // the use after free, under 7 newer blocks
  tiny_flush(cls, UINT32_MAX);
  for (int i = 0; i < 64; i++) check_not_target(hak_malloc(48));
}

// The word of a slab's free or remote list head the address goes over: its
// link (0), or its chain's record: the chain's last block (2), the chain
// after it (3).
static int g_poison_word = 0;
// The size of the blocks the slab list scenarios free and poison: 48 bytes,
// or 16, whose chains keep their record in the first block's link word.
static size_t g_poison_size = 48;

// A slab's local free list: the owner's blocks flushed home from its TLS list.
// More of them than a TLS list takes (its bound of 256 blocks, its growth
// from these frees put back), so the refill reads the list's chain records: a
// list that fits an empty TLS list is taken whole and its records are never
// read (tiny_refill.c slab_take_whole; its links are, at each malloc).
#define POISON_BLOCKS 600
static void poison_slab_free_list(void) {
  unsigned cls = size_class_of(g_poison_size);
  static void *v[POISON_BLOCKS];
  for (int i = 0; i < POISON_BLOCKS; i++) v[i] = hak_malloc(g_poison_size);
  slab_meta_t *m = slab_of(v[POISON_BLOCKS / 2]);
  for (int i = 0; i < POISON_BLOCKS; i++) hak_free(v[i]);
  tiny_flush(cls, UINT32_MAX);                           // every cached block goes home
  tiny_cache_ungrow();
  if (m->freelist == NULL || m->free_n <= t_tls_cache.cap[cls]) return;   // (would fail the test: no report)
  ((void **)m->freelist)[g_poison_word] = g_target;
  for (int i = 0; i < 4096; i++) check_not_target(hak_malloc(g_poison_size));
}

// A slab's free list in random order, which the next refill sweeps into
// address order (tiny/slab_sweep_box.h): its blocks' links are read by the
// sweep's first pass, not walked, and then overwritten. The address goes over
// the link of a listed block in the middle of the list; the sweep reports it
// before it links anything (slab_sweep: sweep_report_forged).
#define SWEPT_BLOCKS 1500
static void poison_swept_list(void) {
  unsigned cls = size_class_of(g_poison_size);
  static void *v[SWEPT_BLOCKS];
  for (int i = 0; i < SWEPT_BLOCKS; i++) v[i] = hak_malloc(g_poison_size);
  slab_meta_t *m = slab_of(v[0]);
  uint64_t x = 0x9e3779b97f4a7c15u;
  for (int i = SWEPT_BLOCKS - 1; i > 1; i--) {           // v[1 ..] shuffled; v[0] stays live
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    int j = 1 + (int)(x % (uint64_t)i);
    void *t = v[i];
    v[i] = v[j];
    v[j] = t;
  }
  for (int i = 1; i < SWEPT_BLOCKS; i++) hak_free(v[i]);
  tiny_flush(cls, UINT32_MAX);                           // home, in the shuffled order
  if (slab_of(v[SWEPT_BLOCKS / 2]) != m || m->free_n < SWEPT_BLOCKS / 2) return;   // (would fail: no report)
  *(void **)v[SWEPT_BLOCKS / 2] = g_target;              // the use after free
  uint64_t sweeps = hak_counters()->sweeps;
  for (int i = 0; i < SWEPT_BLOCKS; i++) check_not_target(hak_malloc(g_poison_size));
  if (hak_counters()->sweeps == sweeps) fprintf(stderr, "no sweep\n");
}

typedef struct handoff { void **blocks; int n; } handoff_t;
static void *free_all(void *arg) {
  handoff_t *h = arg;
  for (int i = 0; i < h->n; i++) hak_free(h->blocks[i]);   // home at this thread's exit
  return NULL;
}

// A slab's remote list: blocks freed by another thread, pushed at its exit.
static void poison_remote_list(void) {
  static void *blocks[64];
  handoff_t h = {blocks, 64};
  for (int i = 0; i < 64; i++) blocks[i] = hak_malloc(g_poison_size);
  slab_meta_t *m = slab_of(blocks[0]);
  run_in_thread(free_all, &h);
  void *head = remote_word_first(atomic_load(&m->remote_head));
  if (head == NULL) return;
  ((void **)head)[g_poison_word] = g_target;
  for (int i = 0; i < 4096; i++) check_not_target(hak_malloc(g_poison_size));
}

// A stale remote list taken back by a ticket (remote_free_box.h): a worker
// frees two remote buffers' worth of the main thread's blocks, the second
// after the list has waited stale, so it keeps a ticket; the address goes
// over the link of the list's second block, which the worker's next refill
// walks (the main thread, the owner, never takes its list).
#define STALE_BLOCKS (2 * TINY_REMOTE_BUF_BLOCKS)
static void *free_stale_then_poison(void *arg) {
  void **blocks = arg;
  for (unsigned i = 0; i < TINY_REMOTE_BUF_BLOCKS; i++) hak_free(blocks[i]);
  usleep((REMOTE_STALE_STAMPS + 2u) * REMOTE_STAMP_MS * 1000u);
  for (unsigned i = TINY_REMOTE_BUF_BLOCKS; i < STALE_BLOCKS; i++) hak_free(blocks[i]);
  slab_meta_t *m = slab_of(blocks[0]);
  unsigned cls = size_class_of(g_poison_size);
  void *head = remote_word_first(atomic_load(&m->remote_head));
  if (head == NULL || !(t_heap_p->ticket_classes >> cls & 1u)) return NULL;   // (would fail the test: no report)
  hak_base_ptr_t second = block_chain(m, hak_base_from_raw(head)).second;
  if (hak_base_is_null(second)) return NULL;
  *(void **)hak_base_raw(second) = g_target;             // the use after free
  for (int i = 0; i < 4096; i++) check_not_target(hak_malloc(g_poison_size));
  return NULL;
}
static void poison_stale_remote_list(void) {
  static void *blocks[STALE_BLOCKS];
  g_hak_config.free_batch = 0;                           // each free through the remote buffer
  for (unsigned i = 0; i < STALE_BLOCKS; i++) blocks[i] = hak_malloc(g_poison_size);
  run_in_thread(free_stale_then_poison, blocks);
}

static void test_an_address_written_into_a_stale_remote_list_a_ticket_takes_is_reported(void **state) {
  (void)state;
  expect_poison_report(poison_stale_remote_list);
  g_poison_size = 16;
  expect_poison_report(poison_stale_remote_list);
  g_poison_size = 48;
}

static void test_an_address_written_over_a_chain_record_is_reported(void **state) {
  (void)state;
  for (g_poison_word = 2; g_poison_word <= 3; g_poison_word++) {
    expect_poison_report(poison_slab_free_list);
    expect_poison_report(poison_remote_list);
  }
  g_poison_word = 0;
}

// A 16-byte chain of two or more keeps its record in its first block's link
// word (block_set_chain): an address written there reads as neither.
static void test_an_address_written_over_a_16_byte_chain_record_is_reported(void **state) {
  (void)state;
  g_poison_size = 16;
  expect_poison_report(poison_slab_free_list);
  expect_poison_report(poison_remote_list);
  g_poison_size = 48;
}

static void test_an_address_written_into_a_freed_block_on_a_tls_list_is_reported(void **state) {
  (void)state;
  expect_poison_report(poison_tls_list);
}

static void test_an_address_written_into_a_block_a_flush_walks_to_is_reported(void **state) {
  (void)state;
  expect_poison_report(poison_tls_list_flushed);
}

static void test_an_address_written_into_a_block_on_a_slab_free_list_is_reported(void **state) {
  (void)state;
  expect_poison_report(poison_slab_free_list);
}

static void test_an_address_written_into_a_block_of_a_list_a_sweep_orders_is_reported(void **state) {
  (void)state;
  g_poison_size = 32;
  expect_poison_report(poison_swept_list);
  g_poison_size = 16;                                    // the 16-byte class: its own first pass
  expect_poison_report(poison_swept_list);
  g_poison_size = 48;
}

static void test_an_address_written_into_a_block_on_a_remote_list_is_reported(void **state) {
  (void)state;
  expect_poison_report(poison_remote_list);
}

// The class exchange (transfer_box): another thread's list overflowed with our
// 256-byte blocks, so chains of them wait there. One chain's third block gets
// the address written over its link; `split` takes part of the chain (the
// exchange walks the links), else a new thread's refill takes it whole onto
// its list, whose pops decode the links.
static void *malloc_many_of_256(void *arg) {
  (void)arg;
  for (int i = 0; i < 4096; i++) check_not_target(hak_malloc(256));
  return NULL;
}
static void poison_exchange(int split) {
  static void *blocks[1000];
  unsigned cls = size_class_of(256);
  handoff_t h = {blocks, 1000};
  for (int i = 0; i < 1000; i++) blocks[i] = hak_malloc(256);
  park_a_thread();                                       // (its exit would leave the main one alone)
  run_in_thread(free_all, &h);                           // overflows: chains into the exchange
  hak_base_ptr_t first, last;
  uint32_t n = transfer_take(cls, UINT32_MAX, &first, &last);
  if (n < 8) return;                                     // (would fail the test: no report)
  hak_base_ptr_t third = block_next(block_next(first));
  *(void **)hak_base_raw(third) = g_target;              // the use after free
  if (!transfer_put(cls, TRANSFER_MAX_CHAINS, first, last, n)) return;
  if (split) {
    hak_base_ptr_t a, b;
    transfer_take(cls, 5, &a, &b);
    for (hak_base_ptr_t x = a;; x = block_next(x)) {
      check_not_target(hak_base_raw(x));
      if (hak_base_raw(x) == hak_base_raw(b)) break;
    }
    return;
  }
  run_in_thread(malloc_many_of_256, NULL);
}
static void poison_exchange_taken_whole(void) { poison_exchange(0); }
static void poison_exchange_taken_in_part(void) { poison_exchange(1); }

static void test_an_address_written_into_a_block_in_the_class_exchange_is_reported(void **state) {
  (void)state;
  expect_poison_report(poison_exchange_taken_whole);
  expect_poison_report(poison_exchange_taken_in_part);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_an_address_written_into_a_freed_block_on_a_tls_list_is_reported),
    HAK_UNIT_TEST(test_an_address_written_into_a_block_a_flush_walks_to_is_reported),
    HAK_UNIT_TEST(test_an_address_written_into_a_block_on_a_slab_free_list_is_reported),
    HAK_UNIT_TEST(test_an_address_written_into_a_block_of_a_list_a_sweep_orders_is_reported),
    HAK_UNIT_TEST(test_an_address_written_into_a_block_on_a_remote_list_is_reported),
    HAK_UNIT_TEST(test_an_address_written_into_a_block_in_the_class_exchange_is_reported),
    HAK_UNIT_TEST(test_an_address_written_over_a_chain_record_is_reported),
    HAK_UNIT_TEST(test_an_address_written_over_a_16_byte_chain_record_is_reported),
    HAK_UNIT_TEST(test_an_address_written_into_a_stale_remote_list_a_ticket_takes_is_reported),
  };
  return cmocka_run_group_tests_name("poison", tests, NULL, NULL);
}
