// config.h — the HAKMEM_* environment options, read once at start-up by
// walking environ (no allocation). Defaults are what a production user wants.
#ifndef HAK_CONFIG_H
#define HAK_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct hak_config {
  int      abort_on_error;     // HAKMEM_ABORT_ON_ERROR (1): abort after reporting a bad pointer
  int      verbose;            // HAKMEM_VERBOSE (0): print statistics at exit when 1
  uint32_t purge_delay_ms;     // HAKMEM_PURGE_DELAY_MS (100): EMPTY memory kept this long before purge
  size_t   purge_dirty_max;    // HAKMEM_PURGE_DIRTY_MB (16): purge at once past this many dirty bytes
  uint32_t keep_empty_superslabs; // HAKMEM_KEEP_EMPTY_SS (2): all-EMPTY SuperSlabs kept mapped per kind
  size_t   huge_cache_max;     // HAKMEM_HUGE_CACHE_MB (64): freed huge mappings kept for reuse
  uint32_t huge_cache_delay_ms; // HAKMEM_HUGE_CACHE_DELAY_MS (1000): a cached huge mapping older than
                               //   this is unmapped by the next huge alloc/free (hak_trim: at once)
  uint32_t large_purge_delay_ms; // HAKMEM_LARGE_PURGE_DELAY_MS (1000): page-heap purge passes are at
                               //   least this far apart; a pass purges every freed run, so a freed
                               //   run stays resident until the first pass after it (on a slow path)
  size_t   large_dirty_min;    // HAKMEM_LARGE_DIRTY_MB (64): the page heap purges at once when its
                               //   freed resident bytes pass this or twice its live bytes, if more
} hak_config_t;

extern hak_config_t g_hak_config;

// Read the environment; safe to call more than once.
void hak_config_load(void);

#endif
