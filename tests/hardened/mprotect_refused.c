// mprotect_refused.c — the hardened library when the kernel refuses to change
// a mapping's protection (ENOMEM at vm.max_map_count: protecting part of a
// mapping splits it). Run as
//   LD_PRELOAD="mprotect_shim.so libhakmem-hardened.so" mprotect_refused [NAME...]
// The shim (mprotect_shim.c) refuses what MPROTECT_FAIL names; each case sets
// it with setenv, in a forked child whose stderr is captured:
//   - opening a block refused: malloc returns NULL with errno ENOMEM, or a
//     block the program can write, never an inaccessible one (its first touch
//     was reported as a use after free);
//   - a guard page refused: the allocation fails, no block without its guard;
//   - closing a freed block refused: a use after free is still reported (the
//     range is discarded instead), and when that is refused too the run is kept
//     out of reuse;
//   - nothing refused: blocks of 300 KiB, 1 MiB and 64 MiB run clean.
// HAKMEM_HUGE_CACHE_MB=512 (set here by re-executing) lets the huge cache keep
// a 64 MiB mapping, so its re-opening is refused too.
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child_run.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
// Blocks past the slabs (HAK_SLAB_MAX, 256 KiB: a 64 KiB block is a slab's and
// needs no mprotect): the page heap twice, then huge.
static const size_t g_sizes[] = {300 * KiB, 1 * MiB, 64 * MiB};
#define NSIZES (sizeof g_sizes / sizeof g_sizes[0])

static unsigned long (*g_refused)(void);
static void refuse(const char *what) { setenv("MPROTECT_FAIL", what, 1); }
static void allow(void) { unsetenv("MPROTECT_FAIL"); }

// Write every usable byte of a fresh block of each size and free it: the
// page heap's runs and the huge cache then hold blocks to reuse.
static int write_and_free_each(void) {
  for (unsigned i = 0; i < NSIZES; i++) {
    unsigned char *p = malloc(g_sizes[i]);
    if (p == NULL) return 10 + (int)i;
    memset(p, 0x5a, malloc_usable_size(p));
    free(p);
  }
  return 0;
}

// ---- nothing refused
static int t_no_refusal_runs_clean(void) {
  for (int round = 0; round < 3; round++) {   // fresh, then reused runs and cached mappings
    int rc = write_and_free_each();
    if (rc) return rc;
  }
  return g_refused() != 0;
}

// ---- opening refused: NULL with ENOMEM, or a block that can be written
static int t_open_refused_is_enomem_or_usable(void) {
  int rc = write_and_free_each();
  if (rc) return rc;
  refuse("rw");
  for (unsigned i = 0; i < NSIZES; i++) {
    errno = 0;
    unsigned char *p = malloc(g_sizes[i]);
    if (p == NULL) {
      if (errno != ENOMEM) return 20 + (int)i;
      continue;
    }
    memset(p, 0x5a, malloc_usable_size(p));   // open after all (a fresh mapping)
    free(p);
  }
  if (g_refused() == 0) return 2;   // the case never met a refusal
  allow();
  return write_and_free_each();     // and the heap works again once allowed
}

// A cached huge mapping whose re-opening is refused: nothing else can serve it.
static int t_huge_reopen_refused_is_enomem(void) {
  int rc = write_and_free_each();
  if (rc) return rc;
  refuse("rw");
  errno = 0;
  void *p = malloc(64 * MiB);
  if (p != NULL) return 3;
  if (errno != ENOMEM) return 4;
  allow();
  return write_and_free_each();
}

// ---- a guard page refused: the allocation fails
static int t_guard_refused_is_enomem(void) {
  refuse("none");                     // from the start: no region, no mapping gets its guard
  for (unsigned i = 0; i < NSIZES; i++) {
    errno = 0;
    void *p = malloc(g_sizes[i]);
    if (p != NULL) return 30 + (int)i;
    if (errno != ENOMEM) return 40 + (int)i;
  }
  allow();
  return write_and_free_each();
}

static int t_open_and_guard_refused_is_enomem(void) {
  int rc = write_and_free_each();
  if (rc) return rc;
  refuse("rw none");
  for (unsigned i = 0; i < NSIZES; i++) {
    errno = 0;
    void *p = malloc(g_sizes[i]);
    if (p != NULL) return 30 + (int)i;
    if (errno != ENOMEM) return 40 + (int)i;
  }
  allow();
  return write_and_free_each();
}

// ---- closing refused: the freed block is discarded instead, and a use after
// free is still reported
static int t_close_refused_large_use_after_free_reported(void) {
  unsigned char *p = malloc(1 * MiB);
  if (p == NULL) return 9;
  memset(p, 1, 1 * MiB);             // resident: the close would keep it (mprotect)
  refuse("none");
  free(p);
  p[100] = 1;
  return 0;
}
static int t_close_refused_huge_use_after_free_reported(void) {
  unsigned char *p = malloc(64 * MiB);
  if (p == NULL) return 9;
  p[100] = 1;
  refuse("none");
  free(p);                            // would be cached, PROT_NONE
  p[100] = 2;
  return 0;
}

// Closing and discarding both refused: the run is kept out of reuse (its
// stale pointer never aliases a new block), a touch is no wrong report, and a
// second free is still found.
static int t_close_and_discard_refused_keeps_run_out_of_reuse(void) {
  unsigned char *p = malloc(1 * MiB);
  if (p == NULL) return 9;
  memset(p, 1, 1 * MiB);
  refuse("none fixed");
  free(p);
  if (g_refused() == 0) return 2;
  allow();
  p[100] = 1;                         // not reported: the kernel would not close it
  for (int i = 0; i < 16; i++) {
    unsigned char *q = malloc(1 * MiB);
    if (q == NULL) return 3;
    if (q < p + 1 * MiB && p < q + 1 * MiB) return 4;   // the kept-out run handed out again
    memset(q, 2, 1 * MiB);
  }
  return 0;
}
static int t_close_and_discard_refused_double_free_reported(void) {
  unsigned char *p = malloc(1 * MiB);
  if (p == NULL) return 9;
  memset(p, 1, 1 * MiB);
  refuse("none fixed");
  free(p);
  allow();
  free(p);
  return 0;
}

typedef int (*test_fn)(void);
typedef struct { const char *name; test_fn fn; const char *report; } test_t;   // report NULL: exit 0, stderr empty
static const test_t g_tests[] = {
  {"no_refusal_runs_clean", t_no_refusal_runs_clean, NULL},
  {"open_refused_is_enomem_or_usable", t_open_refused_is_enomem_or_usable, NULL},
  {"huge_reopen_refused_is_enomem", t_huge_reopen_refused_is_enomem, NULL},
  {"guard_refused_is_enomem", t_guard_refused_is_enomem, NULL},
  {"open_and_guard_refused_is_enomem", t_open_and_guard_refused_is_enomem, NULL},
  {"close_refused_large_use_after_free_reported", t_close_refused_large_use_after_free_reported,
   "use after free of a large block"},
  {"close_refused_huge_use_after_free_reported", t_close_refused_huge_use_after_free_reported,
   "use after free of a huge block"},
  {"close_and_discard_refused_keeps_run_out_of_reuse", t_close_and_discard_refused_keeps_run_out_of_reuse, NULL},
  {"close_and_discard_refused_double_free_reported", t_close_and_discard_refused_double_free_reported,
   "double free of"},
};
#define NTESTS ((int)(sizeof g_tests / sizeof g_tests[0]))

// 0 pass, 1 fail
static int run_test(const test_t *t) {
  static child_result_t r;
  child_run(t->fn, &r);
  int st = r.status;
  const char *err = r.err;
  char why[256] = "";
  if (t->report == NULL) {
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      snprintf(why, sizeof why, "expected exit 0, child ended with %s %d", WIFSIGNALED(st) ? "signal" : "status",
               WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    else if (err[0] != 0)
      snprintf(why, sizeof why, "exit 0, but stderr is not empty");
  } else if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT) {
    snprintf(why, sizeof why, "expected abort (SIGABRT), child ended with %s %d",
             WIFSIGNALED(st) ? "signal" : "status", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
  } else if (strncmp(err, "hakmem: ", 8) != 0 || strstr(err, t->report) != err + 8) {
    snprintf(why, sizeof why, "aborted, but the report is not \"hakmem: %s ...\"", t->report);
  }
  if (why[0] == 0) {
    printf("PASS  %-50s %s", t->name, t->report != NULL ? err : "\n");
    return 0;
  }
  printf("FAIL  %-50s: %s\n", t->name, why);
  if (err[0]) printf("    | %s", err);
  return 1;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *cache = getenv("HAKMEM_HUGE_CACHE_MB");
  if (cache == NULL || strcmp(cache, "512") != 0) {   // read at start-up: run again with it
    setenv("HAKMEM_HUGE_CACHE_MB", "512", 1);
    execv("/proc/self/exe", argv);
    perror("execv");
    return 2;
  }
  g_refused = (unsigned long (*)(void))dlsym(RTLD_DEFAULT, "mprotect_shim_refused");
  if (g_refused == NULL) {
    fprintf(stderr, "mprotect_refused: run with LD_PRELOAD=\"mprotect_shim.so libhakmem-hardened.so\"\n");
    return 2;
  }
  allow();
  int run = 0, failed = 0;
  for (int i = 0; i < NTESTS; i++) {
    int sel = argc == 1;
    for (int a = 1; a < argc; a++) sel |= strcmp(argv[a], g_tests[i].name) == 0;
    if (!sel) continue;
    run++;
    failed += run_test(&g_tests[i]);
  }
  printf("mprotect_refused: %d passed, %d failed\n", run - failed, failed);
  return failed != 0;
}
