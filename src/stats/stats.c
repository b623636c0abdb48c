// stats.c — the per-thread counters and their sum (see stats.h).
#include "stats/stats.h"

#include <pthread.h>
#include <string.h>

#include "os/os.h"

HAK_BIG_BSS hak_thread_counters_t g_counters_unowned;
__thread hak_thread_counters_t *t_counters_p __attribute__((tls_model("initial-exec"))) = &g_counters_unowned;

static pthread_mutex_t g_counters_lock = PTHREAD_MUTEX_INITIALIZER;
static hak_thread_counters_t *g_live_head;    // live records (g_counters_lock)
HAK_BIG_BSS static hak_thread_counters_t g_totals;       // exited threads (g_counters_lock)

#define HAK_SITE_NAME(id, name, kind) name,
#define HAK_SITE_KIND(id, name, kind) kind,
const char *const g_site_name[HAK_SITE_COUNT] = {HAK_SITE_LIST(HAK_SITE_NAME)};
const char *const g_site_kind[HAK_SITE_COUNT] = {HAK_SITE_LIST(HAK_SITE_KIND)};

static void counters_add(hak_thread_counters_t *to, const hak_thread_counters_t *from) {
  for (unsigned c = 0; c < HAK_STAT_CLASSES; c++) {
    to->cls[c].refills += from->cls[c].refills;
    to->cls[c].refill_blocks += from->cls[c].refill_blocks;
    to->cls[c].flushes += from->cls[c].flushes;
    to->cls[c].flush_blocks += from->cls[c].flush_blocks;
    to->cls[c].remote_free_blocks += from->cls[c].remote_free_blocks;
    to->cls[c].cached += from->cls[c].cached;
  }
  to->ops += from->ops;
  to->batched_frees += from->batched_frees;
  to->home_frees += from->home_frees;
  to->batch_starts += from->batch_starts;
  to->batch_probe_stops += from->batch_probe_stops;
  to->handed_over += from->handed_over;
  to->ticket_blocks += from->ticket_blocks;
  to->populate_calls += from->populate_calls;
  to->populate_bytes += from->populate_bytes;
  to->sweeps += from->sweeps;
  to->swept_blocks += from->swept_blocks;
  to->sweeps_unmatched += from->sweeps_unmatched;
  to->classes_given_back += from->classes_given_back;
  for (unsigned s = 0; s < HAK_SITE_COUNT; s++) to->site[s] += from->site[s];
}

void hak_counters_attach(hak_thread_counters_t *r) {
  if (r->linked) return;
  t_counters_p = r;
  pthread_mutex_lock(&g_counters_lock);
  HAK_SITE(SITE_THREAD_LOCK);
  r->prev = NULL;
  r->next = g_live_head;
  if (g_live_head != NULL) g_live_head->prev = r;
  g_live_head = r;
  r->linked = 1;
  pthread_mutex_unlock(&g_counters_lock);
}

void hak_counters_detach(void) {
  hak_counters_detach_record(t_counters_p);
  t_counters_p = &g_counters_unowned;
}

void hak_counters_detach_record(hak_thread_counters_t *r) {
  if (!r->linked) return;
  pthread_mutex_lock(&g_counters_lock);
  HAK_SITE(SITE_THREAD_LOCK);
  for (unsigned c = 0; c < HAK_STAT_CLASSES; c++) r->cls[c].cached = 0;  // its lists are flushed
  counters_add(&g_totals, r);
  if (r->prev != NULL) r->prev->next = r->next;
  else g_live_head = r->next;
  if (r->next != NULL) r->next->prev = r->prev;
  r->linked = 0;
  pthread_mutex_unlock(&g_counters_lock);
  // Zeroed for the record's next thread (tiny/thread_record.h).
  memset(r, 0, sizeof *r);
}

size_t hak_counters_sum(hak_thread_counters_t *out) {
  size_t live = 0;
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&g_counters_lock);
  counters_add(out, &g_totals);
  for (hak_thread_counters_t *r = g_live_head; r != NULL; r = r->next, live++) counters_add(out, r);
  counters_add(out, &g_counters_unowned);
  pthread_mutex_unlock(&g_counters_lock);
  out->next = out->prev = NULL;
  out->linked = 0;
  return live;
}

void hak_counters_fork_prepare(void) { pthread_mutex_lock(&g_counters_lock); }
int hak_counters_locks_settle(const struct timespec *by) { return os_mutex_settles(&g_counters_lock, by); }
void hak_counters_fork_parent(void) { pthread_mutex_unlock(&g_counters_lock); }
// The child's only thread is the caller: the other live records belong to
// threads that do not exist there. Their counts stay in the totals.
void hak_counters_fork_child(void) {
  hak_thread_counters_t *own = t_counters_p;
  for (hak_thread_counters_t *r = g_live_head; r != NULL; r = r->next)
    if (r != own) counters_add(&g_totals, r);
  g_live_head = own->linked ? own : NULL;
  // (Written only when set: a fork write-protects the record's page, and a
  // store there is a fault in the child.)
  if (own->next != NULL) own->next = NULL;
  if (own->prev != NULL) own->prev = NULL;
  pthread_mutex_unlock(&g_counters_lock);
}
