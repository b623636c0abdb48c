// stats.c — hak_get_stats / hak_print_stats: figures gathered from every box.
#include "stats/stats.h"

#include <string.h>

#include "debug/report.h"
#include "hakmem.h"
#include "large/huge.h"
#include "large/page_heap.h"
#include "os/os.h"
#include "shared_pool/shared_pool.h"

_Atomic size_t g_stat_remote_frees;
__thread size_t t_stat_remote_frees __attribute__((tls_model("initial-exec")));
_Atomic size_t g_stat_threads_live;

void hak_get_stats(hak_stats_t *out) {
  hak_stat_flush_thread();
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
  s.remote_frees_total = atomic_load(&g_stat_remote_frees);
  s.threads_live = atomic_load(&g_stat_threads_live);
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
