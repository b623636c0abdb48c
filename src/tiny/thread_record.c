// thread_record.c — the pool of per-thread records (see thread_record.h).
#include "tiny/thread_record.h"

#include <pthread.h>
#include <string.h>

#include "os/os.h"

static pthread_mutex_t g_record_lock = PTHREAD_MUTEX_INITIALIZER;
static thread_record_t *g_record_free;   // given-back records, the latest first (g_record_lock)
// The never-used records of the latest chunk, [g_record_fresh, g_record_fresh_end)
// (g_record_lock): taken one at a time, so a record's pages are touched by the
// thread that takes it, not all at once when the chunk is mapped (linking a
// chunk's 16 records onto the free list touched a page of each: 64 KB of every
// process's RSS, a third of what loading hakmem adds to a program that
// allocates once).
static thread_record_t *g_record_fresh, *g_record_fresh_end;

_Static_assert(sizeof(thread_record_t) % HAK_CACHE_LINE == 0, "records in an array keep the heap's alignment");

// A never-used record: the next of the latest chunk, else the first of a new
// mapping of THREAD_RECORD_CHUNK records (the caller holds the lock). Fresh
// mappings read as zero: clean records.
static thread_record_t *take_fresh(void) {
  if (g_record_fresh == g_record_fresh_end) {
    size_t page = os_page_size();
    size_t bytes = (THREAD_RECORD_CHUNK * sizeof(thread_record_t) + page - 1) & ~(page - 1);
    thread_record_t *r = os_map_aligned(bytes, page);
    if (r == NULL) return NULL;
    g_record_fresh = r;
    g_record_fresh_end = r + THREAD_RECORD_CHUNK;
  }
  return g_record_fresh++;
}

thread_record_t *thread_record_take(void) {
  pthread_mutex_lock(&g_record_lock);
  HAK_SITE(SITE_THREAD_LOCK);
  thread_record_t *r = g_record_free;
  if (r != NULL) {
    g_record_free = r->next_free;
    r->next_free = NULL;
  } else {
    r = take_fresh();   // its link reads NULL already: not written, its page not touched
  }
  pthread_mutex_unlock(&g_record_lock);
  return r;
}

void thread_record_give_back(thread_record_t *r) {
  // What must already hold (thread_teardown): nothing of the heap is left.
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++)
    HAK_ASSERT(r->heap.cur[c] == NULL && r->heap.partial[c] == NULL && r->heap.full[c] == NULL);
  HAK_ASSERT(atomic_load_explicit(&r->heap.wake, memory_order_relaxed) == NULL);
  // Clean for the next thread: the counters were summed and zeroed by
  // hak_counters_detach; the heap's counts and the link words are set afresh.
  memset(&r->heap, 0, sizeof r->heap);
  pthread_mutex_lock(&g_record_lock);
  HAK_SITE(SITE_THREAD_LOCK);
  r->next_free = g_record_free;
  g_record_free = r;
  pthread_mutex_unlock(&g_record_lock);
}

void thread_record_fork_prepare(void) { pthread_mutex_lock(&g_record_lock); }
void thread_record_fork_parent(void) { pthread_mutex_unlock(&g_record_lock); }
void thread_record_fork_child(void) { pthread_mutex_unlock(&g_record_lock); }
