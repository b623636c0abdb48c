// config.c — HAKMEM_* options (see config.h).
#include "config/config.h"

#include "debug/report.h"
#include "os/os.h"

hak_config_t g_hak_config = {
  .abort_on_error = 1,
  .verbose = 0,
  .purge_delay_ms = 100,
  .purge_dirty_max = 16u << 20,
  .keep_empty_superslabs = 2,
  .huge_cache_max = 64u << 20,
  .huge_cache_delay_ms = 1000,
  .large_purge_delay_ms = 1000,
  .large_dirty_min = 64u << 20,
};

static int config_number(const char *name, unsigned long long *out) {
  const char *s = os_getenv(name);
  if (s == NULL || *s < '0' || *s > '9') return 0;
  unsigned long long v = 0;
  for (; *s >= '0' && *s <= '9'; s++) v = v * 10 + (unsigned)(*s - '0');
  *out = v;
  return 1;
}

void hak_config_load(void) {
  unsigned long long v;
  if (config_number("HAKMEM_ABORT_ON_ERROR", &v)) g_hak_config.abort_on_error = v != 0;
  hak_report_set_abort(g_hak_config.abort_on_error);
  if (config_number("HAKMEM_VERBOSE", &v)) g_hak_config.verbose = (int)v;
  if (config_number("HAKMEM_PURGE_DELAY_MS", &v)) g_hak_config.purge_delay_ms = (uint32_t)v;
  if (config_number("HAKMEM_PURGE_DIRTY_MB", &v)) g_hak_config.purge_dirty_max = (size_t)v << 20;
  if (config_number("HAKMEM_KEEP_EMPTY_SS", &v)) g_hak_config.keep_empty_superslabs = (uint32_t)v;
  if (config_number("HAKMEM_HUGE_CACHE_MB", &v)) g_hak_config.huge_cache_max = (size_t)v << 20;
  if (config_number("HAKMEM_HUGE_CACHE_DELAY_MS", &v)) g_hak_config.huge_cache_delay_ms = (uint32_t)v;
  if (config_number("HAKMEM_LARGE_PURGE_DELAY_MS", &v)) g_hak_config.large_purge_delay_ms = (uint32_t)v;
  if (config_number("HAKMEM_LARGE_DIRTY_MB", &v)) g_hak_config.large_dirty_min = (size_t)v << 20;
}
