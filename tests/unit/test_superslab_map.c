// test_superslab_map.c — SuperSlabs come from chunks of SS_CHUNK_SLABS mapped
// at once (superslab.c): each one aligned, distinct, usable and unmapped on
// its own, with threads taking them at the same time.
#include "unit_util.h"

#define TAKEN (2u * SS_CHUNK_SLABS + 1u)
#define THREADS 8u
#define PER_THREAD 16u

static int aligned(const void *p) { return ((uintptr_t)p & (SS_SIZE - 1)) == 0; }

static int cmp_ptr(const void *a, const void *b) {
  uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
  return x < y ? -1 : x > y;
}

// One thread, one after another: neighbours in address order (the chunk's
// next), laid out as a SuperSlab of their kind, each written at both ends;
// unmapping one leaves its neighbours mapped.
static void test_superslabs_come_from_chunks_and_are_unmapped_one_by_one(void **state) {
  (void)state;
  superslab_t *ss[TAKEN];
  unsigned neighbours = 0;
  for (unsigned i = 0; i < TAKEN; i++) {
    ss[i] = superslab_allocate(0);
    assert_non_null(ss[i]);
    assert_true(aligned(ss[i]));
    assert_int_equal(ss[i]->kind, 0);
    assert_int_equal(ss[i]->nslabs, SS_SIZE >> g_kind_slab_shift[0]);
    ((char *)ss[i])[SS_SIZE - 1] = 1;
    if (i > 0 && (char *)ss[i] == (char *)ss[i - 1] + SS_SIZE) neighbours++;
  }
  // Two chunks' worth and one: at least one whole chunk was cut in order
  // (mapped one at a time, the kernel placed each below the last).
  assert_true(neighbours >= SS_CHUNK_SLABS - 1);
  superslab_unmap(ss[SS_CHUNK_SLABS / 2]);
  for (unsigned i = 0; i < TAKEN; i++) {
    if (i == SS_CHUNK_SLABS / 2) continue;
    ((char *)ss[i])[0] ^= 1;             // still mapped and writable
    ((char *)ss[i])[SS_SIZE - 1] = 2;
  }
  for (unsigned i = 0; i < TAKEN; i++)
    if (i != SS_CHUNK_SLABS / 2) superslab_unmap(ss[i]);
}

static void *take_some(void *arg) {
  superslab_t **out = arg;
  for (unsigned i = 0; i < PER_THREAD; i++) {
    out[i] = superslab_allocate(1);
    if (out[i] != NULL) ((char *)out[i])[SS_SIZE - 1] = 1;
  }
  return NULL;
}

// Threads at once (the chunk's next word is taken with a CAS): every
// SuperSlab distinct and aligned, and one chunk mapped per SS_CHUNK_SLABS
// taken: threads that find the chunk used up together wait for one mapping
// (before, each mapped a chunk and the losers unmapped all of theirs but one
// SuperSlab: more than half of the chunks at 16 threads).
static void test_superslabs_taken_by_threads_at_once_are_distinct(void **state) {
  (void)state;
  _Static_assert(THREADS * PER_THREAD % SS_CHUNK_SLABS == 0, "whole chunks");
  static superslab_t *got[THREADS * PER_THREAD];
  uint64_t chunks = superslab_chunks_mapped();
  pthread_t t[THREADS];
  for (unsigned i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&t[i], NULL, take_some, &got[i * PER_THREAD]), 0);
  for (unsigned i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  // (what the chunk had left before is fewer than a chunk's)
  assert_int_equal(superslab_chunks_mapped() - chunks, THREADS * PER_THREAD / SS_CHUNK_SLABS);
  for (unsigned i = 0; i < THREADS * PER_THREAD; i++) {
    assert_non_null(got[i]);
    assert_true(aligned(got[i]));
  }
  qsort(got, THREADS * PER_THREAD, sizeof got[0], cmp_ptr);
  for (unsigned i = 1; i < THREADS * PER_THREAD; i++) assert_true((char *)got[i] >= (char *)got[i - 1] + SS_SIZE);
  for (unsigned i = 0; i < THREADS * PER_THREAD; i++) superslab_unmap(got[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    HAK_UNIT_TEST(test_superslabs_come_from_chunks_and_are_unmapped_one_by_one),
    HAK_UNIT_TEST(test_superslabs_taken_by_threads_at_once_are_distinct),
  };
  return cmocka_run_group_tests_name("superslab_map", tests, NULL, NULL);
}
