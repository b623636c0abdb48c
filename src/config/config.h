// config.h — the HAKMEM_* environment options, read once at start-up by
// walking environ (no allocation, no stdio: DESIGN.md §2). Defaults are what
// a production user wants.
//
// Every option is one row of g_hak_options (config.c): name, default, range,
// unit and the field it sets. At start-up each HAKMEM_* variable is checked
// against the table: a bad value gets one line on stderr naming the variable,
// the value and the default kept; an unknown HAKMEM_* name gets one line with
// the closest known name.
#ifndef HAK_CONFIG_H
#define HAK_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define HAK_STATS_OFF   0
#define HAK_STATS_TEXT  1
#define HAK_STATS_JSON  2
#define HAK_CONFIG_PATH_MAX 256

typedef struct hak_config {
  int      abort_on_error;     // HAKMEM_ABORT_ON_ERROR (1): abort after reporting a bad pointer
  int      verbose;            // HAKMEM_VERBOSE (0): configuration at start-up, statistics at exit
  uint32_t purge_delay_ms;     // HAKMEM_PURGE_DELAY_MS (100): EMPTY memory kept this long before purge
  size_t   purge_dirty_max;    // HAKMEM_PURGE_DIRTY_MB (2): past this many dirty bytes, purge to 3/4 at once
  size_t   purge_dirty_out_max; // HAKMEM_PURGE_OUT_MB (16): ... or past a quarter of the slabs out, up to this
  uint32_t keep_empty_superslabs; // HAKMEM_KEEP_EMPTY_SS (2): all-EMPTY SuperSlabs kept mapped per kind
  size_t   huge_cache_max;     // HAKMEM_HUGE_CACHE_MB (64): freed huge mappings kept for reuse
  uint32_t huge_cache_delay_ms; // HAKMEM_HUGE_CACHE_DELAY_MS (1000): a cached huge mapping older than
                               //   this is unmapped by the next huge alloc/free (hak_trim: at once)
  uint32_t large_purge_delay_ms; // HAKMEM_LARGE_PURGE_DELAY_MS (1000): page-heap purge passes are at
                               //   least this far apart; a pass purges every freed run, so a freed
                               //   run stays resident until the first pass after it (on a slow path)
  size_t   large_dirty_min;    // HAKMEM_LARGE_DIRTY_MB (64): an arena of the page heap purges at
                               //   once, down to 3/4, when its freed resident bytes pass its share
                               //   of this (divided among the arenas in use) or 3x its live bytes
  int      free_batch;         // HAKMEM_FREE_BATCH (1): a thread whose frees are mostly other
                               //   threads' blocks checks them in batches (tiny/free_batch_box.h)
  int      populate;           // HAKMEM_POPULATE (1): a slab's carve faults the pages ahead
                               //   in with one call where the program writes its blocks (tiny_refill.c)
  uint32_t park_threads;       // HAKMEM_PARK_THREADS (16): exited threads' heaps kept whole for the
                               //   threads that start next (tiny/tiny_thread.c), at most this many
  size_t   bind_trim;          // HAKMEM_BIND_TRIM_KB (0: off): a thread's first slab of a class above
                               //   1 KiB keeps only this much of an earlier life's resident reach
                               //   (tiny_refill.c slab_trim_earlier_reach)
  int      stats;              // HAKMEM_STATS (0): HAK_STATS_* report at exit
  char     stats_file[HAK_CONFIG_PATH_MAX]; // HAKMEM_STATS_FILE (""): where it goes ("" = stderr)
} hak_config_t;

extern hak_config_t g_hak_config;

// How a row's value is written and stored.
typedef enum hak_option_kind {
  HAK_OPT_BOOL,     // 0 or 1, stored in an int
  HAK_OPT_INT,      // a number, stored in an int
  HAK_OPT_U32,      // a number, stored in a uint32_t
  HAK_OPT_SIZE,     // a number << shift, stored in a size_t (MB -> bytes: shift 20)
  HAK_OPT_STATS,    // 0, 1, text or json, stored in an int (HAK_STATS_*)
  HAK_OPT_PATH,     // a path, copied into a char[HAK_CONFIG_PATH_MAX]
} hak_option_kind_t;

typedef struct hak_option {
  const char        *name;     // HAKMEM_...
  hak_option_kind_t  kind;
  unsigned long long def;      // default, in the unit the user writes
  unsigned long long min, max; // accepted range (numbers), inclusive
  unsigned           shift;    // HAK_OPT_SIZE: stored value = value << shift
  const char        *unit;     // "ms", "MiB", "" (shown in messages and the README)
  void              *field;    // &g_hak_config.x
  const char        *meaning;  // one line for the start-up print
} hak_option_t;

extern const hak_option_t g_hak_options[];
extern const size_t g_hak_option_count;

// Read the environment; safe to call more than once. The first call reports
// bad values and unknown names on stderr and, with HAKMEM_VERBOSE=1, prints
// the configuration (hak_config_print); later calls are silent.
void hak_config_load(void);
// Defaults, then the environment, reporting problems on fd (-1: silently).
// Returns the number of lines reported. In a set-user-ID or set-group-ID
// program (AT_SECURE) the environment is not read: defaults only.
int hak_config_parse(int fd);
// The same, secure execution said by the caller (a test's).
int hak_config_parse_as(int fd, int secure);
// The version and every option's value in effect, one line each, on fd.
void hak_config_print(int fd);
// The known option closest to name (edit distance), for "did you mean".
const char *hak_config_closest(const char *name, size_t len);

#endif
