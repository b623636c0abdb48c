// stats_report.c — hak_get_stats / hak_print_stats: figures gathered from every box
// and from the per-thread counters (stats/stats.h).
#include "core/stats_report.h"
#include "stats/stats.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "debug/report.h"
#include "hakmem.h"
#include "large/huge.h"
#include "large/page_heap.h"
#include "os/os.h"
#include "shared_pool/shared_pool.h"
#include "config/config.h"
#include "core/init.h"
#include "superslab/size_class.h"
#include "superslab/ss_registry.h"
#include "superslab/superslab.h"
#include "tiny/thread_record.h"
#include "tiny/tiny_refill.h"
#include "tiny/tls_sll_box.h"
#include "tiny/transfer_box.h"

_Static_assert(HAK_NUM_CLASSES <= HAK_STAT_CLASSES, "every class has its counters");

const char *hak_version(void) { return HAKMEM_VERSION; }

void hak_get_stats(hak_stats_t *out) {
  hak_thread_counters_t tc;
  size_t threads = hak_counters_sum(&tc);
  size_t remote = 0;
  for (unsigned c = 0; c < HAK_STAT_CLASSES; c++) remote += tc.cls[c].remote_free_blocks;
  shared_pool_stats_t sp;
  huge_stats_t hs;
  shared_pool_get_stats(&sp);
  huge_get_stats(&hs);
  page_heap_stats_t ph;
  page_heap_get_stats(&ph);
  hak_stats_t s;
  memset(&s, 0, sizeof s);
  s.superslab_count = sp.superslabs;
  s.superslab_bytes = sp.superslab_bytes;
  s.slabs_in_use = sp.slabs_in_use;
  s.slabs_free = sp.slabs_free;
  s.in_use_bytes = sp.in_use_bytes + ph.live_bytes + hs.live_bytes;
  s.large_count = ph.live_count;
  s.large_bytes = ph.live_bytes;
  s.large_regions = ph.regions;
  s.free_bytes = sp.free_bytes;
  s.huge_count = hs.live_count;
  s.huge_bytes = hs.live_bytes;
  s.huge_cached_bytes = hs.cached_bytes;
  s.mapped_bytes = sp.superslab_bytes + ph.mapped_bytes + hs.live_bytes + hs.cached_bytes;
  s.superslabs_mapped_total = sp.mapped_total;
  s.superslabs_unmapped_total = sp.unmapped_total;
  s.remote_frees_total = remote;
  size_t parked = thread_records_parked();   // (their counters are on the live list)
  s.threads_live = threads > parked ? threads - parked : 0;
  *out = s;
}

static void print_row(int fd, const char *name, size_t v) {
  char num[32];
  hak_write_str(fd, name);
  hak_fmt_u64(num, sizeof num, v);
  hak_write_str(fd, num);
  hak_write_str(fd, "\n");
}

void hak_print_stats(int fd) {
  hak_stats_t s;
  hak_get_stats(&s);
  hak_write_str(fd, "hakmem statistics\n");
  print_row(fd, "  mapped bytes:            ", s.mapped_bytes);
  print_row(fd, "  in-use bytes:            ", s.in_use_bytes);
  print_row(fd, "  free bytes in slabs:     ", s.free_bytes);
  print_row(fd, "  SuperSlabs live:         ", s.superslab_count);
  print_row(fd, "  slabs in use:            ", s.slabs_in_use);
  print_row(fd, "  slabs free:              ", s.slabs_free);
  print_row(fd, "  large blocks:            ", s.large_count);
  print_row(fd, "  large bytes:             ", s.large_bytes);
  print_row(fd, "  large regions:           ", s.large_regions);
  print_row(fd, "  huge blocks:             ", s.huge_count);
  print_row(fd, "  huge bytes:              ", s.huge_bytes);
  print_row(fd, "  huge cached bytes:       ", s.huge_cached_bytes);
  print_row(fd, "  SuperSlabs mapped total: ", s.superslabs_mapped_total);
  print_row(fd, "  SuperSlabs unmapped:     ", s.superslabs_unmapped_total);
  print_row(fd, "  remote frees:            ", s.remote_frees_total);
  print_row(fd, "  threads live:            ", s.threads_live);
}

// The contention sites of the STATS build (issue 9's proxy): one line per
// site, per 1 000 malloc/free calls. Parsed by scripts/bench-scale.py.
void hak_print_sites(int fd) {
  hak_thread_counters_t tc;
  size_t threads = hak_counters_sum(&tc);
  char line[160], num[32];
  size_t n = 0;
#define APPEND(s) do { for (const char *q_ = (s); *q_ && n + 1 < sizeof line; q_++) line[n++] = *q_; } while (0)
  APPEND("hakmem-sites: ops=");
  hak_fmt_u64(num, sizeof num, tc.ops);
  APPEND(num);
  APPEND(" threads=");
  hak_fmt_u64(num, sizeof num, threads);
  APPEND(num);
  APPEND("\n");
  os_write_all(fd, line, n);
  for (unsigned s = 0; s < HAK_SITE_COUNT; s++) {
    n = 0;
    APPEND("hakmem-site: ");
    APPEND(g_site_name[s]);
    APPEND(" kind=");
    APPEND(g_site_kind[s]);
    APPEND(" count=");
    hak_fmt_u64(num, sizeof num, tc.site[s]);
    APPEND(num);
    APPEND(" per1k=");
    // three decimals without floating point
    unsigned long long milli = tc.ops ? (unsigned long long)((tc.site[s] * 1000000.0) / (double)tc.ops) : 0;
    hak_fmt_u64(num, sizeof num, milli / 1000);
    APPEND(num);
    APPEND(".");
    num[0] = (char)('0' + (milli / 100) % 10);
    num[1] = (char)('0' + (milli / 10) % 10);
    num[2] = (char)('0' + milli % 10);
    num[3] = '\0';
    APPEND(num);
    APPEND("\n");
    os_write_all(fd, line, n);
  }
#undef APPEND
}

// Per class: slabs and blocks from a walk of every slab
// (shared_pool_each_slab), cache and traffic figures from the per-thread
// counters.
typedef struct class_tally {
  size_t handed[HAK_NUM_CLASSES], capacity[HAK_NUM_CLASSES], slabs[HAK_NUM_CLASSES];
} class_tally_t;

static void tally_slab(slab_meta_t *m, void *arg) {
  class_tally_t *t = arg;
  if (SLAB_STATE(atomic_load_explicit(&m->state, memory_order_relaxed)) == SLAB_FREE) return;
  unsigned c = m->cls;
  if (c >= HAK_NUM_CLASSES) return;
  size_t used = slab_census_live(m);
  size_t cap = m->capacity;
  t->handed[c] += used < cap ? used : cap;
  t->capacity[c] += cap;
  t->slabs[c]++;
}

size_t hak_get_class_stats(hak_class_stats_t *out, size_t max) {
  if (max == 0 || out == NULL) return HAK_NUM_CLASSES;
  size_t n = max < HAK_NUM_CLASSES ? max : HAK_NUM_CLASSES;
  class_tally_t t;
  memset(&t, 0, sizeof t);
  shared_pool_each_slab(tally_slab, &t);
  size_t *handed = t.handed, *capacity = t.capacity, *slabs = t.slabs;
  hak_thread_counters_t tc;
  hak_counters_sum(&tc);
  for (size_t c = 0; c < n; c++) {
    hak_class_stats_t r;
    memset(&r, 0, sizeof r);
    r.block_size = g_size_class[c].block;
    // The calling thread's own list is known exactly (length + room == cap
    // while it has blocks), not as of its last slow path.
    uint64_t own = !tls_sll_empty(&t_tls_cache, c) ? tls_cached(&t_tls_cache, c) : 0;
    // Blocks in the class exchange are cached too (transfer_box.h).
    uint64_t mine = hak_counters()->cls[c].cached;
    uint64_t cached = tc.cls[c].cached - (mine <= tc.cls[c].cached ? mine : tc.cls[c].cached) + own +
                      transfer_blocks((unsigned)c);
    r.cached = cached < handed[c] ? cached : handed[c];
    r.blocks_in_use = handed[c] - r.cached;
    r.bytes_in_use = r.blocks_in_use * r.block_size;
    r.blocks_free = capacity[c] - handed[c];
    r.slabs = slabs[c];
    r.refills = tc.cls[c].refills;
    r.remote_frees = tc.cls[c].remote_free_blocks;
    out[c] = r;
  }
  return HAK_NUM_CLASSES;
}

// Output through a fixed buffer, flushed with write(2) when full.
typedef struct out { int fd; size_t n; char buf[2048]; } out_t;
static void out_flush(out_t *o) { os_write_all(o->fd, o->buf, o->n); o->n = 0; }
static void out_str(out_t *o, const char *s) {
  for (; *s; s++) {
    if (o->n == sizeof o->buf) out_flush(o);
    o->buf[o->n++] = *s;
  }
}
static void out_u64(out_t *o, unsigned long long v) {
  char num[32];
  hak_fmt_u64(num, sizeof num, v);
  out_str(o, num);
}
// v right-aligned in width columns.
static void out_col(out_t *o, unsigned long long v, size_t width) {
  char num[32];
  size_t len = hak_fmt_u64(num, sizeof num, v);
  for (; len < width; len++) out_str(o, " ");
  out_str(o, num);
}
static void out_field(out_t *o, const char *name, unsigned long long v, int last) {
  out_str(o, "\"");
  out_str(o, name);
  out_str(o, "\":");
  out_u64(o, v);
  if (!last) out_str(o, ",");
}

static int class_active(const hak_class_stats_t *c) {
  return c->slabs || c->cached || c->refills || c->remote_frees;
}

void hak_print_class_stats(int fd, int format) {
  hak_class_stats_t cls[HAK_NUM_CLASSES];
  hak_get_class_stats(cls, HAK_NUM_CLASSES);
  hak_stats_t st;
  hak_get_stats(&st);
  hak_thread_counters_t tc;
  hak_counters_sum(&tc);
  shared_pool_purge_stats_t ps;
  shared_pool_get_purge_stats(&ps);
  shared_pool_resident_t rs;
  shared_pool_get_resident(&rs);
  hak_class_stats_t t;
  memset(&t, 0, sizeof t);
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    t.blocks_in_use += cls[c].blocks_in_use;
    t.bytes_in_use += cls[c].bytes_in_use;
    t.blocks_free += cls[c].blocks_free;
    t.slabs += cls[c].slabs;
    t.cached += cls[c].cached;
    t.refills += cls[c].refills;
    t.remote_frees += cls[c].remote_frees;
  }
  out_t o = { .fd = fd, .n = 0 };
  if (format == 1) {
    out_str(&o, "{\"hakmem\":\"" HAKMEM_VERSION "\",\"version\":\"" HAKMEM_VERSION "\",\"classes\":[");
    int first = 1;
    for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
      const hak_class_stats_t *r = &cls[c];
      if (!first) out_str(&o, ",");
      first = 0;
      out_str(&o, "{");
      out_field(&o, "class", c, 0);
      out_field(&o, "block_size", r->block_size, 0);
      out_field(&o, "blocks_in_use", r->blocks_in_use, 0);
      out_field(&o, "bytes_in_use", r->bytes_in_use, 0);
      out_field(&o, "blocks_free", r->blocks_free, 0);
      out_field(&o, "slabs", r->slabs, 0);
      out_field(&o, "cached", r->cached, 0);
      out_field(&o, "refills", r->refills, 0);
      out_field(&o, "remote_frees", r->remote_frees, 1);
      out_str(&o, "}");
    }
    out_str(&o, "],\"totals\":{");
    out_field(&o, "blocks_in_use", t.blocks_in_use, 0);
    out_field(&o, "bytes_in_use", t.bytes_in_use, 0);
    out_field(&o, "blocks_free", t.blocks_free, 0);
    out_field(&o, "slabs", t.slabs, 0);
    out_field(&o, "cached", t.cached, 0);
    out_field(&o, "refills", t.refills, 0);
    out_field(&o, "remote_frees", t.remote_frees, 1);
    out_str(&o, "},\"large\":{");
    out_field(&o, "blocks", st.large_count, 0);
    out_field(&o, "bytes", st.large_bytes, 0);
    out_field(&o, "regions", st.large_regions, 1);
    out_str(&o, "},\"huge\":{");
    out_field(&o, "blocks", st.huge_count, 0);
    out_field(&o, "bytes", st.huge_bytes, 0);
    out_field(&o, "cached_bytes", st.huge_cached_bytes, 1);
    out_str(&o, "},");
    out_field(&o, "in_use_bytes", t.bytes_in_use + st.large_bytes + st.huge_bytes, 0);
    out_field(&o, "mapped_bytes", st.mapped_bytes, 0);
    out_field(&o, "superslabs", st.superslab_count, 0);
    out_field(&o, "slabs_free", st.slabs_free, 0);
    out_field(&o, "threads_live", st.threads_live, 0);
    out_field(&o, "heaps_parked", thread_records_parked(), 0);
    out_field(&o, "batched_frees", tc.batched_frees, 0);
    out_field(&o, "batch_starts", tc.batch_starts, 0);
    out_field(&o, "batch_probe_stops", tc.batch_probe_stops, 0);
    out_field(&o, "home_frees", tc.home_frees, 0);
    out_field(&o, "handed_over", tc.handed_over, 0);
    out_field(&o, "taken_from_stale_remote_lists", tc.ticket_blocks, 0);
    out_field(&o, "tickets_parked", tiny_parked_tickets(), 0);
    out_field(&o, "populate_calls", tc.populate_calls, 0);
    out_field(&o, "populate_bytes", tc.populate_bytes, 0);
    out_field(&o, "classes_given_back", tc.classes_given_back, 0);
    out_field(&o, "sweeps", tc.sweeps, 0);
    out_field(&o, "swept_blocks", tc.swept_blocks, 0);
    out_field(&o, "sweeps_unmatched", tc.sweeps_unmatched, 0);
    out_field(&o, "dirty_budget", ps.dirty_budget, 0);
    out_field(&o, "purged_slabs", ps.purged, 0);
    out_field(&o, "purge_calls", ps.purge_calls, 0);
    out_field(&o, "purged_early", ps.purged_early, 0);
    out_field(&o, "purged_early_taken_back", ps.taken_back, 0);
    out_field(&o, "superslabs_rekinded", ps.rekinded, 0);
    out_str(&o, "\"resident\":{");
    out_field(&o, "bound_bytes", rs.bound_bytes, 0);
    out_field(&o, "bound_carved_bytes", rs.bound_carved_bytes, 0);
    out_field(&o, "abandoned_bytes", rs.abandoned_bytes, 0);
    out_field(&o, "empty_bytes", rs.empty_bytes, 0);
    out_field(&o, "free_bytes", rs.free_bytes, 1);
    out_str(&o, "}");
    out_str(&o, "}\n");
    out_flush(&o);
    return;
  }
  out_str(&o, "hakmem " HAKMEM_VERSION " statistics per size class\n");
  out_str(&o, "class block size  blocks in use  bytes in use  slabs    cached   refills  remote frees\n");
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    const hak_class_stats_t *r = &cls[c];
    if (!class_active(r)) continue;
    out_col(&o, c, 5);
    out_col(&o, r->block_size, 11);
    out_col(&o, r->blocks_in_use, 15);
    out_col(&o, r->bytes_in_use, 14);
    out_col(&o, r->slabs, 7);
    out_col(&o, r->cached, 10);
    out_col(&o, r->refills, 10);
    out_col(&o, r->remote_frees, 14);
    out_str(&o, "\n");
  }
  out_str(&o, "total");
  out_str(&o, "           ");
  out_col(&o, t.blocks_in_use, 15);
  out_col(&o, t.bytes_in_use, 14);
  out_col(&o, t.slabs, 7);
  out_col(&o, t.cached, 10);
  out_col(&o, t.refills, 10);
  out_col(&o, t.remote_frees, 14);
  out_str(&o, "\nlarge (page heap): ");
  out_u64(&o, st.large_count);
  out_str(&o, " blocks, ");
  out_u64(&o, st.large_bytes);
  out_str(&o, " bytes in ");
  out_u64(&o, st.large_regions);
  out_str(&o, " regions\nhuge (mmap):       ");
  out_u64(&o, st.huge_count);
  out_str(&o, " blocks, ");
  out_u64(&o, st.huge_bytes);
  out_str(&o, " bytes, ");
  out_u64(&o, st.huge_cached_bytes);
  out_str(&o, " bytes cached\nin use: ");
  out_u64(&o, t.bytes_in_use + st.large_bytes + st.huge_bytes);
  out_str(&o, " bytes; mapped: ");
  out_u64(&o, st.mapped_bytes);
  out_str(&o, " bytes in ");
  out_u64(&o, st.superslab_count);
  out_str(&o, " SuperSlabs (");
  out_u64(&o, st.slabs_free);
  out_str(&o, " slabs free) and the large and huge blocks; threads live: ");
  out_u64(&o, st.threads_live);
  // Heaps of exited threads kept for the next threads (HAKMEM_PARK_THREADS).
  out_str(&o, ", heaps parked for the next: ");
  out_u64(&o, thread_records_parked());
  // Frees of threads that batched them (HAKMEM_FREE_BATCH): tested 32 at a time.
  out_str(&o, "\nfrees tested in batches: ");
  out_u64(&o, tc.batched_frees);
  out_str(&o, " (threads started batching ");
  out_u64(&o, tc.batch_starts);
  out_str(&o, " times, stopped ");
  out_u64(&o, tc.batch_probe_stops);
  out_str(&o, " times for blocks in a cache), handed over at the drain: ");
  out_u64(&o, tc.handed_over);
  out_str(&o, ", sent home past a full list: ");
  out_u64(&o, tc.home_frees);
  // Blocks other threads freed into a slab whose owner left them there
  // (remote_free_box.h: tickets), taken back for reuse by the freeing threads.
  out_str(&o, "\nblocks taken back from remote lists their owners left: ");
  out_u64(&o, tc.ticket_blocks);
  out_str(&o, " (tickets parked now: ");
  out_u64(&o, tiny_parked_tickets());
  out_str(&o, ")\n");
  // Pages faulted in ahead of slab carves (HAKMEM_POPULATE).
  out_str(&o, "pages faulted in ahead of carves: ");
  out_u64(&o, tc.populate_bytes);
  out_str(&o, " bytes in ");
  out_u64(&o, tc.populate_calls);
  out_str(&o, " calls; size classes a thread gave back (left behind or dying): ");
  out_u64(&o, tc.classes_given_back);
  out_str(&o, "\n");
  // Slabs whose free lists a refill put back in address order
  // (tiny/slab_sweep_box.h), and sweeps that found marks off the list.
  out_str(&o, "free lists put in address order: ");
  out_u64(&o, tc.sweeps);
  out_str(&o, " slabs, ");
  out_u64(&o, tc.swept_blocks);
  out_str(&o, " blocks; sweeps left as they were: ");
  out_u64(&o, tc.sweeps_unmatched);
  out_str(&o, "\n");
  // The dirty budget (shared_pool_release.c): FREE slabs purged, in how many
  // calls; those purged before their delay, and those taken back within it,
  // which raised the budget.
  out_str(&o, "dirty budget: ");
  out_u64(&o, ps.dirty_budget);
  out_str(&o, " bytes; slabs purged: ");
  out_u64(&o, ps.purged);
  out_str(&o, " in ");
  out_u64(&o, ps.purge_calls);
  out_str(&o, " calls; purged early: ");
  out_u64(&o, ps.purged_early);
  out_str(&o, ", taken back within the delay: ");
  out_u64(&o, ps.taken_back);
  out_str(&o, "; SuperSlabs laid out for another kind: ");
  out_u64(&o, ps.rekinded);
  // Where the slabs' resident pages are (shared_pool_get_resident).
  out_str(&o, "\nresident in slabs: ");
  out_u64(&o, rs.bound_bytes);
  out_str(&o, " bytes bound to threads (their carve points reach ");
  out_u64(&o, rs.bound_carved_bytes);
  out_str(&o, "), ");
  out_u64(&o, rs.abandoned_bytes);
  out_str(&o, " abandoned with blocks in use, ");
  out_u64(&o, rs.empty_bytes);
  out_str(&o, " EMPTY on abandoned stacks, ");
  out_u64(&o, rs.free_bytes);
  out_str(&o, " FREE\n");
  out_flush(&o);
}

// The exit report's stderr is the file stderr was at start-up (its device
// and inode, kept by hak_stats_keep_stderr), through fd 2 or the copy of it
// made then: a descriptor is written only while it still is that file. fd 2
// whatever it was wrote the report into a program's data file that took
// number 2 after it closed stderr, and the copy into one that took the
// copy's number after a close_range (a helper's probe: both every time).
// The copy is close-on-exec, numbered 64 or more, out of the way of the low
// descriptors programs and shells use by number; -1 when there is none.
static int g_report_stderr = -1;
static dev_t g_stderr_dev;
static ino_t g_stderr_ino;
static int g_stderr_known;

// Kept whenever a report may go to stderr: also with HAKMEM_STATS_FILE, whose
// open may fail at exit (the report then falls back to stderr: with a
// program that had closed fd 2, GNU sort's, it was lost with its warning).
void hak_stats_keep_stderr(void) {
  int to_stderr = g_hak_config.stats != HAK_STATS_OFF || g_hak_config.verbose || HAK_STATS;   // (the sites' lines)
  struct stat st;
  if (!to_stderr || g_stderr_known || fstat(2, &st) != 0) return;   // no stderr: nowhere to fall back on
  g_stderr_dev = st.st_dev;
  g_stderr_ino = st.st_ino;
  g_stderr_known = 1;
  g_report_stderr = fcntl(2, F_DUPFD_CLOEXEC, 64);
}

static int is_startup_stderr(int fd) {
  struct stat st;
  return fd >= 0 && g_stderr_known && fstat(fd, &st) == 0 && st.st_dev == g_stderr_dev && st.st_ino == g_stderr_ino;
}

// Stderr for the exit report: fd 2 or the copy, whichever still is the
// start-up stderr; -1 when neither is (the report is then not written).
static int report_stderr(void) {
  if (is_startup_stderr(2)) return 2;
  if (is_startup_stderr(g_report_stderr)) return g_report_stderr;
  return -1;
}

// How long the report waits for the allocator's locks (hak_locks_settle),
// and for another process's lock on HAKMEM_STATS_FILE.
#define REPORT_LOCK_WAIT_MS 1000u
#define REPORT_FILE_LOCK_TRIES 100u   // 10 ms apart: the same second

// HAKMEM_STATS_FILE, opened for the report; -1 when it cannot be. Without
// blocking: a FIFO nobody reads fails (ENXIO) instead of holding the exit for
// ever. A regular file is locked, then emptied: processes that exit together
// (a program's children inherit the variable) write one after another, the
// last report whole, where each one's O_TRUNC and writes interleaved left the
// tail of a longer report after a shorter one (JSON that did not parse, 3 of
// 30 runs of 17 processes). The lock is tried for a second at most: a lock
// held by the program itself (its log file named as the stats file) or by
// an ancestor (`flock FILE prog`) held a blocking flock, and the exit, for
// ever (a helper's probe); past the second the report is written unlocked.
static int open_stats_file(void) {
  int fd = open(g_hak_config.stats_file, O_WRONLY | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    for (unsigned i = 0; i < REPORT_FILE_LOCK_TRIES && flock(fd, LOCK_EX | LOCK_NB) != 0; i++) {
      struct timespec pause = {0, 10 * 1000 * 1000};
      nanosleep(&pause, NULL);
    }
    if (ftruncate(fd, 0) != 0) { /* written over, as before */ }
  }
  return fd;
}

// HAKMEM_STATS=1|json (to HAKMEM_STATS_FILE or stderr); HAKMEM_VERBOSE=1
// alone prints the table on stderr.
static void stats_report_at_exit(void) {
  int format = g_hak_config.stats == HAK_STATS_JSON ? 1 : 0;
  if (g_hak_config.stats == HAK_STATS_OFF) {
    int fd = report_stderr();
    if (g_hak_config.verbose && fd >= 0) hak_print_class_stats(fd, 0);
    return;
  }
  int fd = report_stderr();
  if (g_hak_config.stats_file[0] != '\0') {
    fd = open_stats_file();
    if (fd < 0) {
      fd = report_stderr();
      hak_write_str(fd, "hakmem: cannot open HAKMEM_STATS_FILE=");
      hak_write_str(fd, g_hak_config.stats_file);
      hak_write_str(fd, "; statistics on stderr instead\n");
    }
  }
  if (fd < 0) return;
  hak_print_class_stats(fd, format);
  if (fd != 2 && fd != g_report_stderr) close(fd);
}

// The report at exit. Not when an allocator lock stays held (exit() from a
// signal handler that interrupted malloc: the report waited on the
// interrupted call's lock for ever). SIGPIPE blocked while it writes: a
// report to a pipe whose reader had gone ended the program by that signal,
// its exit status lost (141 for 3); one raised by the report is taken back.
void hak_stats_at_exit(void) {
  if (g_hak_config.stats == HAK_STATS_OFF && !g_hak_config.verbose && !HAK_STATS) return;
  if (!hak_locks_settle(REPORT_LOCK_WAIT_MS)) {
    hak_write_str(report_stderr(), "hakmem: no statistics at exit: an allocator lock is held "
                                   "(exit() called from a signal handler that interrupted malloc?)\n");
    return;
  }
  sigset_t pipe_set, old, pending;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  int was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
  stats_report_at_exit();
  if (HAK_STATS) {
    int fd = report_stderr();
    if (fd >= 0) hak_print_sites(fd);
  }
  if (!was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
    struct timespec now = {0, 0};
    while (sigtimedwait(&pipe_set, NULL, &now) < 0 && errno == EINTR) {}
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}
