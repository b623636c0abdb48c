// config.c — HAKMEM_* options (see config.h). One row per option; nothing
// here allocates or uses stdio: values come from environ, messages go out
// with write(2) from fixed buffers.
#include "config/config.h"

#include <string.h>
#include <sys/auxv.h>

#include "debug/report.h"
#include "hakmem.h"
#include "os/os.h"

extern char **environ;

hak_config_t g_hak_config = {
  .abort_on_error = 1,
  .verbose = 0,
  .purge_delay_ms = 100,
  .purge_dirty_max = 2u << 20,
  .purge_dirty_out_max = 16u << 20,
  .keep_empty_superslabs = 2,
  .huge_cache_max = 64u << 20,
  .stats = HAK_STATS_OFF,
  .stats_file = "",
  .huge_cache_delay_ms = 1000,
  .large_purge_delay_ms = 1000,
  .large_dirty_min = 64u << 20,
  .free_batch = 1,
  .populate = 1,
  .park_threads = 16,
};

#define MB_MAX (1ull << 20)   // 1 TiB expressed in MiB

const hak_option_t g_hak_options[] = {
  { "HAKMEM_ABORT_ON_ERROR", HAK_OPT_BOOL, 1, 0, 1, 0, "", &g_hak_config.abort_on_error,
    "abort after reporting a bad pointer (double free, interior or wild pointer)" },
  { "HAKMEM_VERBOSE", HAK_OPT_BOOL, 0, 0, 1, 0, "", &g_hak_config.verbose,
    "print the configuration at start-up and statistics at exit" },
  { "HAKMEM_PURGE_DELAY_MS", HAK_OPT_U32, 100, 0, 3600000, 0, "ms", &g_hak_config.purge_delay_ms,
    "how long EMPTY memory waits before it is purged" },
  { "HAKMEM_PURGE_DIRTY_MB", HAK_OPT_SIZE, 2, 0, MB_MAX, 20, "MiB", &g_hak_config.purge_dirty_max,
    "past this much EMPTY memory resident, purge down to 3/4 of it at once (raised while purged slabs are taken back within the delay)" },
  { "HAKMEM_PURGE_OUT_MB", HAK_OPT_SIZE, 16, 0, MB_MAX, 20, "MiB", &g_hak_config.purge_dirty_out_max,
    "the purge budget is also a quarter of the small-block memory in use, up to this" },
  { "HAKMEM_KEEP_EMPTY_SS", HAK_OPT_U32, 2, 0, 1024, 0, "", &g_hak_config.keep_empty_superslabs,
    "all-EMPTY SuperSlabs kept mapped per slab kind (more: unmapped after the purge delay)" },
  { "HAKMEM_HUGE_CACHE_MB", HAK_OPT_SIZE, 64, 0, MB_MAX, 20, "MiB", &g_hak_config.huge_cache_max,
    "freed huge mappings kept for reuse, each up to a quarter of this (a larger one while the program takes and frees "
    "its size in a loop)" },
  { "HAKMEM_HUGE_CACHE_DELAY_MS", HAK_OPT_U32, 1000, 0, 3600000, 0, "ms", &g_hak_config.huge_cache_delay_ms,
    "a cached huge mapping older than this is unmapped by the next huge call or small-block refill" },
  { "HAKMEM_LARGE_PURGE_DELAY_MS", HAK_OPT_U32, 1000, 0, 3600000, 0, "ms", &g_hak_config.large_purge_delay_ms,
    "page-heap purge passes are at least this far apart; each purges the runs freed this long ago" },
  { "HAKMEM_LARGE_DIRTY_MB", HAK_OPT_SIZE, 64, 0, MB_MAX, 20, "MiB", &g_hak_config.large_dirty_min,
    "the page heap purges at once past this many freed resident bytes (shared by its arenas; or 3x live, or the room below its recent peak)" },
  { "HAKMEM_FREE_BATCH", HAK_OPT_BOOL, 1, 0, 1, 0, "", &g_hak_config.free_batch,
    "a thread freeing mostly other threads' small blocks checks them 32 at a time (a double free is then reported up to 32 frees late)" },
  { "HAKMEM_POPULATE", HAK_OPT_BOOL, 1, 0, 1, 0, "", &g_hak_config.populate,
    "a slab being carved has its next pages faulted in with one system call (MADV_POPULATE_WRITE) where the program writes its blocks" },
  { "HAKMEM_PARK_THREADS", HAK_OPT_U32, 16, 0, 64, 0, "", &g_hak_config.park_threads,
    "heaps of exited threads kept whole (slabs and cached blocks) for the threads that start next, at most this many (0: each exit gives its heap back)" },
  { "HAKMEM_BIND_TRIM_KB", HAK_OPT_SIZE, 0, 0, 2048, 10, "KiB", &g_hak_config.bind_trim,
    "a thread's first slab of a class above 1 KiB keeps only this much of the pages an earlier life left resident (0: all)" },
  { "HAKMEM_STATS", HAK_OPT_STATS, HAK_STATS_OFF, 0, 0, 0, "", &g_hak_config.stats,
    "statistics per size class at exit: 0, 1 (a table) or json" },
  { "HAKMEM_STATS_FILE", HAK_OPT_PATH, 0, 0, 0, 0, "", g_hak_config.stats_file,
    "write the statistics to this file instead of stderr" },
};
const size_t g_hak_option_count = sizeof g_hak_options / sizeof g_hak_options[0];
#define OPTION_ROWS (sizeof g_hak_options / sizeof g_hak_options[0])

// Which rows took their value from the environment (for the start-up print).
static unsigned char g_from_env[OPTION_ROWS];

// HAKMEM_* names that are not allocator options (read by the test suites):
// known, so not reported as misspellings.
static const char *const g_not_options[] = { "HAKMEM_CONTRACT_GLIBC" };

// A fixed-buffer line: append, then write once.
typedef struct line { char buf[512]; size_t n; } line_t;
static void line_str(line_t *l, const char *s) { l->n = hak_fmt_str(l->buf, sizeof l->buf, l->n, s); }
static void line_strn(line_t *l, const char *s, size_t len) {
  for (size_t i = 0; i < len && s[i] && l->n + 1 < sizeof l->buf; i++) l->buf[l->n++] = s[i];
  l->buf[l->n] = '\0';
}
static void line_u64(line_t *l, unsigned long long v) {
  char num[32];
  hak_fmt_u64(num, sizeof num, v);
  line_str(l, num);
}
static void line_put(line_t *l, int fd) {
  if (l->n + 1 < sizeof l->buf) l->buf[l->n++] = '\n';
  else l->buf[sizeof l->buf - 2] = '\n', l->n = sizeof l->buf - 1;
  if (fd >= 0) os_write_all(fd, l->buf, l->n);
  l->n = 0;
  l->buf[0] = '\0';
}

// A decimal number with nothing else; 0 on junk or overflow.
static int parse_u64(const char *s, unsigned long long *out) {
  if (*s < '0' || *s > '9') return 0;
  unsigned long long v = 0;
  for (; *s >= '0' && *s <= '9'; s++) {
    if (v > (~0ull - 9) / 10) return 0;
    v = v * 10 + (unsigned)(*s - '0');
  }
  if (*s != '\0') return 0;
  *out = v;
  return 1;
}

static void store_number(const hak_option_t *o, unsigned long long v) {
  switch (o->kind) {
    case HAK_OPT_BOOL:
    case HAK_OPT_INT:
    case HAK_OPT_STATS: *(int *)o->field = (int)v; break;
    case HAK_OPT_U32:   *(uint32_t *)o->field = (uint32_t)v; break;
    case HAK_OPT_SIZE:  *(size_t *)o->field = (size_t)v << o->shift; break;
    case HAK_OPT_PATH:  break;
  }
}

static void default_text(line_t *l, const hak_option_t *o) {
  if (o->kind == HAK_OPT_PATH) line_str(l, "(stderr)");
  else if (o->kind == HAK_OPT_STATS) line_str(l, o->def == HAK_STATS_JSON ? "json" : o->def ? "1" : "0");
  else line_u64(l, o->def);
}

// "hakmem: HAKMEM_X=value is <why>; keeping the default D"
static void complain(int fd, const hak_option_t *o, const char *value, const char *why) {
  line_t l = { .n = 0 };
  line_str(&l, "hakmem: ");
  line_str(&l, o->name);
  line_str(&l, "='");
  line_strn(&l, value, 64);
  line_str(&l, "' ");
  line_str(&l, why);
  if (o->kind == HAK_OPT_BOOL) {
    line_str(&l, "0 or 1");
  } else if (o->kind != HAK_OPT_STATS && o->kind != HAK_OPT_PATH) {
    line_str(&l, "a whole number from ");
    line_u64(&l, o->min);
    line_str(&l, " to ");
    line_u64(&l, o->max);
    if (o->unit[0]) { line_str(&l, " ("); line_str(&l, o->unit); line_str(&l, ")"); }
  }
  line_str(&l, "; keeping the default ");
  default_text(&l, o);
  line_put(&l, fd);
}

// One option from its value; 1 if it complained.
static int apply(int fd, const hak_option_t *o, const char *s) {
  switch (o->kind) {
    case HAK_OPT_STATS:
      if (strcmp(s, "0") == 0 || strcmp(s, "off") == 0) { store_number(o, HAK_STATS_OFF); return 0; }
      if (strcmp(s, "1") == 0 || strcmp(s, "text") == 0) { store_number(o, HAK_STATS_TEXT); return 0; }
      if (strcmp(s, "json") == 0) { store_number(o, HAK_STATS_JSON); return 0; }
      complain(fd, o, s, "is not 0, 1, text or json");
      return 1;
    case HAK_OPT_PATH: {
      size_t n = strlen(s);
      if (n == 0 || n >= HAK_CONFIG_PATH_MAX) {
        complain(fd, o, s, n ? "is longer than 255 bytes" : "is empty");
        return 1;
      }
      memcpy(o->field, s, n + 1);
      return 0;
    }
    default: {
      unsigned long long v;
      if (!parse_u64(s, &v) || v < o->min || v > o->max) {
        complain(fd, o, s, "is not ");
        return 1;
      }
      store_number(o, v);
      return 0;
    }
  }
}

// Levenshtein distance of two short names (each cut at 64 bytes), no allocation.
static unsigned edit_distance(const char *a, size_t la, const char *b, size_t lb) {
  unsigned row[65];
  if (la > 64) la = 64;
  if (lb > 64) lb = 64;
  for (size_t j = 0; j <= lb; j++) row[j] = (unsigned)j;
  for (size_t i = 1; i <= la; i++) {
    unsigned diag = row[0];
    row[0] = (unsigned)i;
    for (size_t j = 1; j <= lb; j++) {
      unsigned up = row[j];
      unsigned best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

const char *hak_config_closest(const char *name, size_t len) {
  const char *best = g_hak_options[0].name;
  unsigned best_d = ~0u;
  for (size_t i = 0; i < g_hak_option_count; i++) {
    unsigned d = edit_distance(name, len, g_hak_options[i].name, strlen(g_hak_options[i].name));
    if (d < best_d) { best_d = d; best = g_hak_options[i].name; }
  }
  return best;
}

// The row of option `name` (len bytes), or OPTION_ROWS.
static size_t option_row(const char *name, size_t len) {
  for (size_t i = 0; i < g_hak_option_count; i++)
    if (strlen(g_hak_options[i].name) == len && memcmp(g_hak_options[i].name, name, len) == 0) return i;
  return OPTION_ROWS;
}

static int known_name(const char *name, size_t len) {
  if (option_row(name, len) < OPTION_ROWS) return 1;
  for (size_t i = 0; i < sizeof g_not_options / sizeof g_not_options[0]; i++)
    if (strlen(g_not_options[i]) == len && memcmp(g_not_options[i], name, len) == 0) return 1;
  return 0;
}

// One pass over the environment, looking only at HAKMEM_ names: a getenv per
// option scanned all of it once per row, 25 000 of the 213 000 instructions
// a preloaded /bin/true ran (callgrind). As getenv, the first NAME=value of
// a name counts.
// A set-user-ID or set-group-ID program (secure execution, AT_SECURE) keeps
// every default and says nothing, as jemalloc's MALLOC_CONF (secure_getenv)
// and glibc's tunables do: the environment is its caller's, and
// HAKMEM_STATS_FILE had such a program create or truncate any file its
// owner may write (root's, through a set-user-ID program linked with
// -lhakmem: a helper's probe), HAKMEM_ABORT_ON_ERROR=0 would let it go on
// past a corrupted heap.
int hak_config_parse(int fd) { return hak_config_parse_as(fd, getauxval(AT_SECURE) != 0); }

int hak_config_parse_as(int fd, int secure) {
  int complaints = 0;
  unsigned char seen[OPTION_ROWS] = {0};
  for (size_t i = 0; i < g_hak_option_count; i++) {
    const hak_option_t *o = &g_hak_options[i];
    if (o->kind == HAK_OPT_PATH) ((char *)o->field)[0] = '\0';
    else store_number(o, o->def);
    g_from_env[i] = 0;
  }
  if (environ == NULL || secure) return complaints;
  for (char **e = environ; *e != NULL; e++) {
    if (strncmp(*e, "HAKMEM_", 7) != 0) continue;
    const char *eq = strchr(*e, '=');
    size_t len = eq ? (size_t)(eq - *e) : strlen(*e);
    size_t row = option_row(*e, len);
    if (row < OPTION_ROWS) {
      if (eq == NULL || seen[row]) continue;
      seen[row] = 1;
      int bad = apply(fd, &g_hak_options[row], eq + 1);
      g_from_env[row] = !bad;
      complaints += bad;
      continue;
    }
    if (known_name(*e, len)) continue;
    line_t l = { .n = 0 };
    line_str(&l, "hakmem: unknown option ");
    line_strn(&l, *e, len < 64 ? len : 64);
    line_str(&l, " (ignored); did you mean ");
    line_str(&l, hak_config_closest(*e, len));
    line_str(&l, "?");
    line_put(&l, fd);
    complaints++;
  }
  return complaints;
}

void hak_config_print(int fd) {
  line_t l = { .n = 0 };
  line_str(&l, "hakmem ");
  line_str(&l, HAKMEM_VERSION);
  line_str(&l, ": configuration (HAKMEM_VERBOSE=1)");
  line_put(&l, fd);
  for (size_t i = 0; i < g_hak_option_count; i++) {
    const hak_option_t *o = &g_hak_options[i];
    line_str(&l, "hakmem:   ");
    line_str(&l, o->name);
    line_str(&l, "=");
    switch (o->kind) {
      case HAK_OPT_PATH: line_str(&l, (const char *)o->field); break;
      case HAK_OPT_STATS: {
        int v = *(const int *)o->field;
        line_str(&l, v == HAK_STATS_JSON ? "json" : v ? "1" : "0");
        break;
      }
      case HAK_OPT_U32: line_u64(&l, *(const uint32_t *)o->field); break;
      case HAK_OPT_SIZE: line_u64(&l, *(const size_t *)o->field >> o->shift); break;
      default: line_u64(&l, (unsigned long long)*(const int *)o->field); break;
    }
    if (o->unit[0]) { line_str(&l, " "); line_str(&l, o->unit); }
    line_str(&l, g_from_env[i] ? "" : " (default)");
    line_str(&l, "  # ");
    line_str(&l, o->meaning);
    line_put(&l, fd);
  }
}

void hak_config_load(void) {
  static int reported;
  if (reported) {
    hak_config_parse(-1);
    hak_report_set_abort(g_hak_config.abort_on_error);
    return;
  }
  reported = 1;
  hak_config_parse(2);
  hak_report_set_abort(g_hak_config.abort_on_error);
  if (g_hak_config.verbose) hak_config_print(2);
}
