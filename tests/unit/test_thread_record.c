// test_thread_record.c — the pool of per-thread records (tiny/thread_record.h):
// a mapping of THREAD_RECORD_CHUNK records is carved one record at a time, so
// the records no thread has taken yet are not resident. This group's only
// caller of thread_record_take is its test (no hak_malloc runs before it), so
// the first take maps the process's first chunk.
#include "unit_util.h"

#include <sys/mman.h>
#include <unistd.h>

#include "tiny/thread_record.h"

// Pages of [lo, hi) that are resident.
static size_t resident_pages(const void *lo, const void *hi) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  uintptr_t a = (uintptr_t)lo & ~(page - 1), b = ((uintptr_t)hi + page - 1) & ~(page - 1);
  size_t n = (b - a) / page, in = 0;
  unsigned char *vec = malloc(n);
  assert_non_null(vec);
  assert_int_equal(mincore((void *)a, b - a, vec), 0);
  for (size_t i = 0; i < n; i++) in += vec[i] & 1u;
  free(vec);
  return in;
}

// Before: mapping a chunk linked its 16 records onto the free list, a write
// into every record (64 KB resident in every process that allocates once).
static void test_records_not_taken_yet_are_not_resident(void **state) {
  (void)state;
  thread_record_t *r = thread_record_take();
  assert_non_null(r);
  // The rest of the chunk, from the first page wholly past r: untouched.
  const char *rest = (const char *)(r + 1) + (size_t)sysconf(_SC_PAGESIZE);
  const char *end = (const char *)(r + THREAD_RECORD_CHUNK);
  assert_int_equal(resident_pages(rest, end), 0);
  // The next take is the next record of the chunk, clean (a fresh mapping).
  thread_record_t *s = thread_record_take();
  assert_ptr_equal(s, r + 1);
  assert_null(s->heap.cur[0]);
  assert_null(s->next_free);
  thread_record_give_back(s);
  thread_record_give_back(r);
  // Given back, the latest first: taken before any fresh record.
  assert_ptr_equal(thread_record_take(), r);
  assert_ptr_equal(thread_record_take(), s);
  assert_ptr_equal(thread_record_take(), r + 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_records_not_taken_yet_are_not_resident),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
