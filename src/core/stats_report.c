// stats_report.c — hak_get_stats / hak_print_stats: figures gathered from every box
// and from the per-thread counters (stats/stats.h).
#include "core/stats_report.h"
#include "stats/stats.h"

#include <string.h>

#include "debug/report.h"
#include "hakmem.h"
#include "large/huge.h"
#include "large/page_heap.h"
#include "os/os.h"
#include "shared_pool/shared_pool.h"
#include "config/config.h"

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
  s.threads_live = threads;
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

void hak_stats_at_exit(void) {
  if (g_hak_config.verbose) hak_print_stats(2);
  if (HAK_STATS) hak_print_sites(2);
}
