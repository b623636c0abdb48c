// os_guard.c — the hardened build's kernel calls: page protection, reserved
// inaccessible address space, the fault hook that turns a touch of a guard
// page into a one-line report. Compiled to nothing in the default build.
#include "os/os.h"

#if defined(HAK_HARDENED) && HAK_HARDENED
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>

void os_protect(void *addr, size_t size, int rw) {
  int saved = errno;
  mprotect(addr, size, rw ? PROT_READ | PROT_WRITE : PROT_NONE);
  errno = saved;
}

void *os_reserve_none(size_t size) {
  int saved = errno;
  void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  errno = saved;
  return p == MAP_FAILED ? NULL : p;
}

static void (*g_fault_fn)(void *addr);

static void fault_handler(int sig, siginfo_t *si, void *ctx) {
  (void)ctx;
  g_fault_fn(si->si_addr);             // reports and aborts when the address is ours
  struct sigaction dfl;                // not ours: fault again, as without us
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigaction(sig, &dfl, NULL);
}

void os_on_fault(void (*fn)(void *addr)) {
  static const int sigs[2] = {SIGSEGV, SIGBUS};
  g_fault_fn = fn;
  for (int i = 0; i < 2; i++) {
    struct sigaction old, sa;
    if (sigaction(sigs[i], NULL, &old) != 0) continue;
    if (old.sa_handler != SIG_DFL || (old.sa_flags & SA_SIGINFO)) continue;   // the program's own
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(sigs[i], &sa, NULL);
  }
}
#else
typedef int os_guard_unused_t;   // ISO C: a translation unit is not empty
#endif
