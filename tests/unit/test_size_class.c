// test_size_class.c — request size -> size class (src/tiny/size_class.h).
#include "unit_util.h"
#include "core/hakmem_fast.h"
#include "tiny/tiny_heap.h"

#define KIB 1024u

static void test_class_sizes_increase_and_are_multiples_of_16(void **state) {
  (void)state;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    assert_int_equal(g_size_class[c].size % 16, 0);
    if (c > 0) assert_true(g_size_class[c].size > g_size_class[c - 1].size);
  }
  assert_int_equal(g_size_class[HAK_NUM_CLASSES - 1].size, HAK_SLAB_MAX);
  assert_int_equal(g_size_class[HAK_TINY_CLASSES - 1].size, HAK_TINY_MAX);
}

// A class's own TLS bound holds at least 8 blocks, so a refill or flush moves
// 4 or more: the 160-256 KiB classes held 2-3 and moved one, a refill every 9
// operations of random 64-256 KiB blocks (1.5x the time it takes with 8).
static void test_every_class_bound_holds_at_least_eight_blocks(void **state) {
  (void)state;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    assert_true(g_size_class[c].tls_cap >= 8);
    assert_true(g_size_class[c].batch >= 4);
  }
}

static void test_every_size_up_to_256k_maps_to_the_smallest_class_that_fits(void **state) {
  (void)state;
  for (size_t n = 0; n <= HAK_SLAB_MAX; n++) {
    unsigned c = size_class_of(n);
    assert_true(c < HAK_NUM_CLASSES);
    assert_true(size_class_size(c) >= n);
    if (c > 0) assert_true(size_class_size(c - 1) < n);
  }
}

static void test_rounding_wastes_under_16_bytes_up_to_128(void **state) {
  (void)state;
  for (size_t n = 1; n <= 128; n++) assert_true(size_class_size(size_class_of(n)) - n < 16);
}

static void test_rounding_wastes_under_a_quarter_above_128(void **state) {
  (void)state;
  for (size_t n = 129; n <= HAK_SLAB_MAX; n++) {
    size_t waste = size_class_size(size_class_of(n)) - n;
    assert_true(waste * 4 < n);
  }
}

static void test_zero_bytes_maps_to_the_smallest_class(void **state) {
  (void)state;
  assert_int_equal(size_class_of(0), 0);
}

// The aligned path's class: size_class_aligned gives the class the search it
// replaced found (the first class from size_class_of(need) on whose size the
// alignment divides), for every alignment the slabs serve and every need
// up to the largest slab class.
static void test_the_aligned_class_is_the_smallest_aligned_class_that_fits(void **state) {
  (void)state;
  for (size_t a = 16; a <= 4096; a *= 2)
    for (size_t need = a; need <= HAK_SLAB_MAX; need++) {
      unsigned want = size_class_of(need);
      while (g_size_class[want].size % a != 0) want++;
      unsigned got = size_class_aligned(need, a);
      if (got != want) fail_msg("alignment %zu, need %zu: class %u, the search's %u", a, need, got, want);
    }
}

static void test_class_kind_matches_the_documented_ranges(void **state) {
  (void)state;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    uint32_t s = g_size_class[c].size;
    unsigned want = s <= HAK_TINY_MAX ? HAK_KIND_SMALL : s <= 128 * KIB ? HAK_KIND_MEDIUM : HAK_KIND_LARGE;
    assert_int_equal(g_size_class[c].kind, want);
    assert_int_equal(c < HAK_TINY_CLASSES, s <= HAK_TINY_MAX);
  }
}

// The remote buffers (tiny_heap.h) hold exactly the classes whose blocks are
// under a cache line: the only ones another thread's free sends home.
static void test_the_remote_buffer_classes_are_the_classes_under_a_cache_line(void **state) {
  (void)state;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++)
    assert_int_equal(c < TINY_REMOTE_CLASSES, g_size_class[c].size < HAK_CACHE_LINE);
}

static void test_every_class_has_a_nonzero_tls_cap_and_a_batch_within_it(void **state) {
  (void)state;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    assert_true(g_size_class[c].tls_cap >= 1);
    assert_true(g_size_class[c].batch >= 1);
    assert_true(g_size_class[c].batch <= g_size_class[c].tls_cap);
  }
}

// slab_block_start() tests "a block start below the carve point" with one
// multiply and one compare against carve_key = carve_off * magic. For every
// offset a slab can hold (and the header bytes before slab 0's base): a block
// start q*d gives q*e (e = magic*d - 2^64 >= 1, so the order of q is kept) and
// every other offset gives a value above any key (at most 2^22); the hardened
// build's index (off * magic) >> 64 is q.
static void test_class_magic_orders_block_starts_and_rejects_every_other_offset(void **state) {
  (void)state;
  const uint64_t max_key = (uint64_t)1 << 22;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    uint64_t d = g_size_class[c].block, magic = g_size_class[c].magic, e = magic * d;
    assert_true(magic & 1);
    assert_true(e >= 1 && e <= 2 * d);
    for (int64_t soff = -(int64_t)SS_HEADER_SIZE; soff < (int64_t)SS_SIZE; soff++) {
      uint64_t off = (uint64_t)soff, v = off * magic;
      if (soff >= 0 && off % d == 0) {
        assert_int_equal(v, (off / d) * e);
        assert_true(v < max_key);
      } else {
        assert_true(v >= max_key);
      }
      if (soff >= 0) assert_int_equal((uint64_t)(((unsigned __int128)off * magic) >> 64), off / d);
    }
  }
}

// A slab's carve key accepts exactly its carved block starts.
static void test_carve_key_accepts_exactly_the_carved_blocks(void **state) {
  (void)state;
  static char slab[4096 + 64] __attribute__((aligned(64)));
  char *area = slab + 64;   // room for an address before the base
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    slab_meta_t m = {0};
    uint64_t d = g_size_class[c].block;
    m.base = area;
    m.size_magic = g_size_class[c].magic;
    for (uint64_t n = 0; n <= 3; n++) {
      slab_set_carve(&m, area + n * d);
      for (uint64_t q = 0; q <= 4; q++) {
        assert_int_equal(slab_block_start(&m, area + q * d), q < n);
        assert_false(slab_block_start(&m, area + q * d + 8));
        if (d > 16) assert_false(slab_block_start(&m, area + q * d + 16));
      }
      assert_false(slab_block_start(&m, area - 16));
    }
  }
}

// The fast paths address a thread's lists by their offset from the thread
// pointer: malloc from the process's size table (g_size_list_tpoff), free
// from the slab (tls_off); the slow paths by TLS slot (the list's offset in
// words). All must reach the list of the block's class, and the slab's owner
// id must be the thread's (thread_self_id: its record's heap), whose low 32
// bits free compares below a cache line.
// A size whose entry is still 0 (a malloc before start-up filled the table:
// the dynamic loader's, a constructor's) reads the thread control block as
// its list: the head is the block's own address, whose link decodes to the
// cookie (top bit set, never plausible), so the pop fails and the slow path
// serves the request from the class's list; nothing is written at offset 0.
static void test_a_size_whose_list_is_not_known_yet_takes_the_slow_path(void **state) {
  (void)state;
  void *warm = hak_malloc(48);                   // the class's list holds blocks
  hak_free(warm);
  int32_t saved = g_size_list_tpoff[48];
  uintptr_t tcb_word = *(uintptr_t *)__builtin_thread_pointer();
  g_size_list_tpoff[48] = 0;
  void *p = hak_malloc(48);
  g_size_list_tpoff[48] = saved;
  assert_non_null(p);
  assert_ptr_equal(slab_of(p)->cls, size_class_tiny(48));
  assert_true(*(uintptr_t *)__builtin_thread_pointer() == tcb_word);   // the TCB untouched
  hak_free(p);
}

static intptr_t list_offset_from_thread_pointer(unsigned cls) {
  return (intptr_t)&t_tls_cache.lists[cls] - (intptr_t)__builtin_thread_pointer();
}
static void *tls_offsets_of_sizes_in_this_thread(void *arg) {
  (void)arg;
  for (size_t n = 0; n <= HAK_TINY_MAX; n++) {
    unsigned cls = size_class_tiny(n);
    unsigned slot = tls_slot_of_size(n);
    if (slot != 2 * cls || &t_tls_cache.words[slot] != (uintptr_t *)&t_tls_cache.lists[cls].head ||
        &t_tls_cache.rooms[TLS_ROOM_OF_SLOT(slot)] != &t_tls_cache.lists[cls].room)
      return (void *)1;
    // malloc's list of the size (tls_list_of_size): the class's, from this
    // thread's pointer as from every thread's.
    if (g_size_list_tpoff[n] != list_offset_from_thread_pointer(cls)) return (void *)3;
    void *p = hak_malloc(n);
    slab_meta_t *m = slab_of(p);
    // free's owner test: the slab's owner_small and this thread's key of the
    // class (reached from the list's offset) are both the thread's id below a
    // cache line and both 0 above (core/hakmem_fast.h).
    uint32_t key = g_size_class[cls].size < HAK_CACHE_LINE ? (uint32_t)(uintptr_t)t_heap_p : 0u;
    int ok = m->tls_off == list_offset_from_thread_pointer(cls) && atomic_load(&m->owner) == (uintptr_t)t_heap_p &&
             atomic_load(&m->owner_small) == key && tls_owner_key_at(tls_list_at_tp(m->tls_off)) == key;
    hak_free(p);
    if (!ok) return (void *)2;
  }
  return NULL;
}
static void test_tls_slots_and_offsets_of_sizes_and_slabs_reach_their_class_list(void **state) {
  (void)state;
  assert_null(tls_offsets_of_sizes_in_this_thread(NULL));
  pthread_t t;   // another thread: its slabs, the same offsets
  void *res = (void *)3;
  assert_int_equal(pthread_create(&t, NULL, tls_offsets_of_sizes_in_this_thread, NULL), 0);
  assert_int_equal(pthread_join(t, &res), 0);
  assert_null(res);
}

static void test_usable_size_of_a_slab_block_is_its_class_block(void **state) {
  (void)state;
  static const size_t sizes[] = {1, 16, 17, 100, 128, 129, 1000, 1025, 4096, 5000, 32768, 40000, 65536, HAK_SLAB_MAX};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    void *p = hak_malloc(sizes[i]);
    assert_non_null(p);
    assert_int_equal(hak_usable_size(p), g_size_class[size_class_of(sizes[i])].block);
    hak_free(p);
  }
}

// A class of 5-56 KiB that is not a power of two takes 64 bytes more than
// its size in its slab, so its blocks start on different L1 sets (64 sets
// of 64 bytes, 4 KiB of addresses): a slab's blocks of a 1 KiB multiple
// started on 2-4 sets, and free's mark and malloc's link loads of more than
// 12 of them in turn missed L1 (64 slots of 4-64 KiB replaced at random:
// 1.6-2x tcmalloc's time). Every other class takes its size; a padded block
// stays 64-aligned.
static void test_classes_of_5_to_56k_blocks_start_on_different_l1_sets(void **state) {
  (void)state;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    uint32_t size = g_size_class[c].size, block = g_size_class[c].block;
    int padded = !HAK_HARDENED && size > 4096u && size < 65536u && (size & (size - 1u)) != 0;
    assert_int_equal(block, size + (padded ? HAK_CLASS_PAD : 0u));
    if (!padded) continue;
    assert_int_equal(block % 64u, 0);   // an aligned request of 64 or less stays in the slabs
    uint64_t sets_seen = 0;
    for (uint32_t i = 0; i < 64; i++) sets_seen |= (uint64_t)1 << ((uint64_t)i * block % 4096u / 64u);
    assert_true(sets_seen == UINT64_MAX);   // 64 blocks in a row: every set once
  }
}

// A 4 KiB page with a header of up to 512 bytes (sqlite3's page cache blocks
// of 4 104-4 368 bytes) takes the 4.5 KiB class: in the 5 KiB class 16-21%
// of each such block went unused.
static void test_a_page_and_a_header_take_the_four_and_a_half_kib_class(void **state) {
  (void)state;
  for (size_t n = 4097; n <= 4608; n++) {
    assert_int_equal(size_class_size(size_class_of(n)), 4608);
    void *p = hak_malloc(n);
    assert_non_null(p);
    assert_true(hak_usable_size(p) < 5120);
    hak_free(p);
  }
  assert_int_equal(size_class_size(size_class_of(4609)), 5120);
}

// HAK_EXCHANGE_CLASSES counts exactly the classes up to HAK_MEDIUM_MAX: the
// exchange's chains and a heap's hand-over chains are sized by it, and a
// fork takes only those classes' exchange locks.
static void test_the_exchange_classes_are_the_classes_up_to_32_kib(void **state) {
  (void)state;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++)
    assert_int_equal(c < HAK_EXCHANGE_CLASSES, g_size_class[c].size <= HAK_MEDIUM_MAX);
}

// A young slab (tiny_heap.h: a medium class's first slab in the process, one
// of the small kind's 64 KiB slabs) is for the medium classes two of whose
// blocks fit one: 1 280 B to 32 KiB.
static void test_young_slabs_are_for_the_medium_classes_of_two_blocks_a_small_slab(void **state) {
  (void)state;
  size_t small_slab = (size_t)1 << g_kind_slab_shift[HAK_KIND_SMALL];
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++)
    assert_int_equal(size_class_has_young_slab(c),
                     g_size_class[c].kind == HAK_KIND_MEDIUM && 2u * g_size_class[c].block <= small_slab);
  assert_true(size_class_has_young_slab(size_class_of(HAK_TINY_MAX + 1)));
  assert_true(size_class_has_young_slab(size_class_of(32768)));
  assert_false(size_class_has_young_slab(size_class_of(32769)));
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_class_sizes_increase_and_are_multiples_of_16),
    HAK_UNIT_TEST(test_every_size_up_to_256k_maps_to_the_smallest_class_that_fits),
    HAK_UNIT_TEST(test_every_class_bound_holds_at_least_eight_blocks),
    HAK_UNIT_TEST(test_rounding_wastes_under_16_bytes_up_to_128),
    HAK_UNIT_TEST(test_rounding_wastes_under_a_quarter_above_128),
    HAK_UNIT_TEST(test_zero_bytes_maps_to_the_smallest_class),
    HAK_UNIT_TEST(test_the_aligned_class_is_the_smallest_aligned_class_that_fits),
    HAK_UNIT_TEST(test_class_kind_matches_the_documented_ranges),
    HAK_UNIT_TEST(test_the_remote_buffer_classes_are_the_classes_under_a_cache_line),
    HAK_UNIT_TEST(test_every_class_has_a_nonzero_tls_cap_and_a_batch_within_it),
    HAK_UNIT_TEST(test_class_magic_orders_block_starts_and_rejects_every_other_offset),
    HAK_UNIT_TEST(test_carve_key_accepts_exactly_the_carved_blocks),
    HAK_UNIT_TEST(test_tls_slots_and_offsets_of_sizes_and_slabs_reach_their_class_list),
    HAK_UNIT_TEST(test_a_size_whose_list_is_not_known_yet_takes_the_slow_path),
    HAK_UNIT_TEST(test_usable_size_of_a_slab_block_is_its_class_block),
    HAK_UNIT_TEST(test_classes_of_5_to_56k_blocks_start_on_different_l1_sets),
    HAK_UNIT_TEST(test_a_page_and_a_header_take_the_four_and_a_half_kib_class),
    HAK_UNIT_TEST(test_the_exchange_classes_are_the_classes_up_to_32_kib),
    HAK_UNIT_TEST(test_young_slabs_are_for_the_medium_classes_of_two_blocks_a_small_slab),
  };
  return cmocka_run_group_tests_name("size_class", tests, NULL, NULL);
}
