// test_purge_reach.c — every page a FREE slab holds is within what the purge
// returns. Rounds of threads allocate and write blocks of small and medium
// sizes, trade them through a shared table (so slabs are abandoned, emptied
// by other threads, adopted afresh and bound again for lives of other
// lengths), and exit; main then frees every block but one per SuperSlab (so
// none is unmapped) and calls hak_trim(). No page of a FREE slab of a mapped
// SuperSlab may then be resident with data in it: a page the accounting lost (an adopted
// slab's carve reset without noting its reach, b2bdfdb) stays resident
// through every purge and trim for as long as its SuperSlab is mapped.
// Skipped where transparent huge pages are "always": a 2 MiB SuperSlab may
// then be backed by a huge page whose untouched pages read as resident.
#include "unit_util.h"
#include <sys/mman.h>

#define SLOTS        4096u
#define THREADS      4u
#define ROUNDS       6u
#define STEPS        6000u
#define MAX_PINS     1024u

static _Atomic(void *) g_slot[SLOTS];

static uint64_t next_rand(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

// A heavy thread (one in four) does eight times the steps of the others, so
// the same slab meets lives that reach far and lives that reach little.
static void *trade_blocks(void *arg) {
  uint64_t x = 0x9e3779b97f4a7c15ull * ((uintptr_t)arg + 1);
  unsigned steps = STEPS * (((uintptr_t)arg % 4u) == 0 ? 8u : 1u);
  for (unsigned i = 0; i < steps; i++) {
    uint64_t r = next_rand(&x);
    size_t size = (r & 3u) == 0 ? 1024u + (size_t)(r >> 8) % (24u << 10) : 16u + (size_t)(r >> 8) % 1000u;
    char *p = hak_malloc(size);
    if (p == NULL) return NULL;
    memset(p, 0x5a, size);
    void *old = atomic_exchange(&g_slot[(r >> 40) % SLOTS], p);
    if (old != NULL) hak_free(old);
  }
  return NULL;
}

// A resident page holding anything but zeros. (A read of a page nobody wrote
// maps the kernel's zero page, which mincore counts and RSS does not: the
// hardened free reads the 4 bytes before a tiny block, for a slab's first
// block the last word of the slab below, FREE or not.)
static int page_has_data(const char *page) {
  for (size_t i = 0; i < 4096u; i += 8)
    if (*(const uint64_t *)(page + i) != 0) return 1;
  return 0;
}

static void test_no_page_of_a_free_slab_is_resident_after_trim(void **state) {
  (void)state;
  if (thp_always()) {
    print_message("skipped: transparent huge pages are 'always'\n");
    return;
  }
  for (uintptr_t round = 0; round < ROUNDS; round++) {
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
      assert_int_equal(pthread_create(&t[i], NULL, trade_blocks, (void *)(round * THREADS + i)), 0);
    for (unsigned i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  }
  // One block kept per SuperSlab, the rest freed.
  void *pin[MAX_PINS];
  unsigned pins = 0;
  for (unsigned s = 0; s < SLOTS; s++) {
    void *p = atomic_exchange(&g_slot[s], NULL);
    if (p == NULL) continue;
    unsigned k = 0;
    while (k < pins && ss_of(pin[k]) != ss_of(p)) k++;
    if (k == pins && pins < MAX_PINS) pin[pins++] = p;
    else hak_free(p);
  }
  assert_true(pins >= 2);
  hak_trim();
  static unsigned char vec[SS_SIZE / 4096];
  size_t free_slabs = 0, resident = 0, zero_pages = 0, pages = 0;
  for (unsigned k = 0; k < pins; k++) {
    superslab_t *ss = ss_of(pin[k]);
    for (unsigned i = 0; i < ss->nslabs; i++) {
      slab_meta_t *m = ss_slab(ss, i);
      if (slab_state(m) != SLAB_FREE) continue;
      free_slabs++;
      char *end = (char *)ss + ((size_t)(i + 1u) << ss->slab_shift);   // the slab's whole extent
      size_t bytes = (size_t)(end - m->base);
      assert_true(bytes >= 4096u);
      assert_int_equal(mincore(m->base, bytes, vec), 0);
      for (size_t p = 0; p < bytes / 4096u; p++) {
        if (!(vec[p] & 1u)) continue;
        if (page_has_data(m->base + p * 4096u)) resident++;
        else zero_pages++;
      }
      pages += bytes / 4096u;
    }
  }
  print_message("%u SuperSlabs kept, %zu FREE slabs in them, %zu of their %zu pages resident with data"
                " (%zu more mapped to the zero page)\n", pins, free_slabs, resident, pages, zero_pages);
  assert_true(free_slabs > 0);
  assert_int_equal(resident, 0);
  for (unsigned k = 0; k < pins; k++) hak_free(pin[k]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_no_page_of_a_free_slab_is_resident_after_trim),
  };
  return cmocka_run_group_tests_name("purge_reach", tests, NULL, NULL);
}
