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

// Parked records, the oldest first (g_record_lock); g_parked_n mirrors
// their count and g_parked_oldest the first one's time, for looks without
// the lock.
#define PARKED_SLOTS 64u
static thread_record_t *g_parked[PARKED_SLOTS];
static uint32_t g_parked_held;             // places reserved and not filled yet
static _Atomic uint32_t g_parked_n;
static _Atomic uint64_t g_parked_oldest = UINT64_MAX;

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
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) HAK_ASSERT(hak_base_is_null(r->ticket[c]));
  // Clean for the next thread: the counters were summed and zeroed by
  // hak_counters_detach; the heap's counts and the link words are set afresh.
  memset(&r->heap, 0, sizeof r->heap);
  pthread_mutex_lock(&g_record_lock);
  HAK_SITE(SITE_THREAD_LOCK);
  r->next_free = g_record_free;
  g_record_free = r;
  pthread_mutex_unlock(&g_record_lock);
}

static void parked_note_locked(uint32_t n) {
  atomic_store_explicit(&g_parked_n, n, memory_order_relaxed);
  atomic_store_explicit(&g_parked_oldest, n != 0 ? g_parked[0]->parked_ms : UINT64_MAX, memory_order_relaxed);
}

int thread_record_park_reserve(uint32_t max) {
  if (max > PARKED_SLOTS) max = PARKED_SLOTS;
  pthread_mutex_lock(&g_record_lock);
  HAK_SITE(SITE_THREAD_LOCK);
  int ok = atomic_load_explicit(&g_parked_n, memory_order_relaxed) + g_parked_held < max;
  if (ok) g_parked_held++;
  pthread_mutex_unlock(&g_record_lock);
  return ok;
}

void thread_record_park(thread_record_t *r) {
  pthread_mutex_lock(&g_record_lock);
  HAK_SITE(SITE_THREAD_LOCK);
  uint32_t n = atomic_load_explicit(&g_parked_n, memory_order_relaxed);
  HAK_ASSERT(g_parked_held != 0 && n < PARKED_SLOTS);
  g_parked_held--;
  g_parked[n] = r;
  parked_note_locked(n + 1);
  pthread_mutex_unlock(&g_record_lock);
}

thread_record_t *thread_record_take_parked(void) {
  if (atomic_load_explicit(&g_parked_n, memory_order_relaxed) == 0) return NULL;
  pthread_mutex_lock(&g_record_lock);
  HAK_SITE(SITE_THREAD_LOCK);
  uint32_t n = atomic_load_explicit(&g_parked_n, memory_order_relaxed);
  thread_record_t *r = NULL;
  if (n != 0) {
    r = g_parked[n - 1];
    parked_note_locked(n - 1);
  }
  pthread_mutex_unlock(&g_record_lock);
  return r;
}

thread_record_t *thread_record_take_parked_since(uint64_t before) {
  if (atomic_load_explicit(&g_parked_oldest, memory_order_relaxed) > before) return NULL;
  pthread_mutex_lock(&g_record_lock);
  HAK_SITE(SITE_THREAD_LOCK);
  uint32_t n = atomic_load_explicit(&g_parked_n, memory_order_relaxed);
  thread_record_t *r = NULL;
  if (n != 0 && g_parked[0]->parked_ms <= before) {
    r = g_parked[0];
    memmove(&g_parked[0], &g_parked[1], (n - 1) * sizeof g_parked[0]);
    parked_note_locked(n - 1);
  }
  pthread_mutex_unlock(&g_record_lock);
  return r;
}

uint32_t thread_records_parked(void) { return atomic_load_explicit(&g_parked_n, memory_order_relaxed); }

void thread_record_fork_prepare(void) { pthread_mutex_lock(&g_record_lock); }
int thread_record_locks_settle(const struct timespec *by) { return os_mutex_settles(&g_record_lock, by); }
void thread_record_fork_parent(void) { pthread_mutex_unlock(&g_record_lock); }
void thread_record_fork_child(void) {
  g_parked_held = 0;   // (a place another thread held: that thread is not in the child)
  // A parked heap's slabs are as a thread's own (tiny_heap_fork_child): a
  // remote freer between its two notify stores is not in the child.
  for (uint32_t i = 0, n = atomic_load_explicit(&g_parked_n, memory_order_relaxed); i < n; i++)
    tiny_heap_fork_child(&g_parked[i]->heap);
  pthread_mutex_unlock(&g_record_lock);
}
