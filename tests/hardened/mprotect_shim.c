// mprotect_shim.c — an LD_PRELOAD object, placed before the hardened library
// (LD_PRELOAD="mprotect_shim.so libhakmem-hardened.so"), that makes the kernel
// calls which change a mapping's protection fail with ENOMEM, as the kernel
// does at vm.max_map_count (protecting part of a mapping splits it).
//
// MPROTECT_FAIL, read at every call, is a list of words:
//   rw     mprotect asking for PROT_READ|PROT_WRITE fails (opening a block)
//   none   mprotect asking for PROT_NONE fails (closing a block, a guard page)
//   fixed  mmap with MAP_FIXED fails (discarding a range, os_discard_none)
// Unset or empty: every call goes to the real function. A program changes it
// with setenv between calls. mprotect_shim_refused() counts the refusals, so
// a test can tell that its case really ran into one.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static unsigned long g_refused;

unsigned long mprotect_shim_refused(void) { return g_refused; }

static int mode_has(const char *word) {
  const char *m = getenv("MPROTECT_FAIL");
  size_t n = strlen(word);
  while (m != NULL && *m != 0) {
    size_t len = strcspn(m, " ,");
    if (len == n && strncmp(m, word, n) == 0) return 1;
    m += len;
    m += strspn(m, " ,");
  }
  return 0;
}

static int refuse(void) {
  g_refused++;
  errno = ENOMEM;
  return -1;
}

// The real functions through dlsym(RTLD_NEXT); a call made while dlsym itself
// runs (it may allocate, and the allocator may call us) goes to the kernel.
static int (*g_real_mprotect)(void *, size_t, int);
static void *(*g_real_mmap)(void *, size_t, int, int, int, off_t);
static int g_resolving;

int mprotect(void *addr, size_t len, int prot) {
  if (prot == (PROT_READ | PROT_WRITE) && mode_has("rw")) return refuse();
  if (prot == PROT_NONE && mode_has("none")) return refuse();
  if (g_real_mprotect == NULL && !g_resolving) {
    g_resolving = 1;
    g_real_mprotect = (int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "mprotect");
    g_resolving = 0;
  }
  if (g_real_mprotect == NULL) return (int)syscall(SYS_mprotect, addr, len, prot);
  return g_real_mprotect(addr, len, prot);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  if ((flags & MAP_FIXED) && mode_has("fixed")) {
    refuse();
    return MAP_FAILED;
  }
  if (g_real_mmap == NULL && !g_resolving) {
    g_resolving = 1;
    g_real_mmap = (void *(*)(void *, size_t, int, int, int, off_t))dlsym(RTLD_NEXT, "mmap");
    g_resolving = 0;
  }
  if (g_real_mmap == NULL) return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
  return g_real_mmap(addr, len, prot, flags, fd, off);
}
