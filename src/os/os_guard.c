// os_guard.c — the hardened build's kernel calls: page protection, reserved
// inaccessible address space, the fault hook that turns a touch of a guard
// page into a one-line report. Compiled to nothing in the default build.
#include "os/os.h"

#if defined(HAK_HARDENED) && HAK_HARDENED
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

int os_protect(void *addr, size_t size, int rw) {
  int saved = errno;
  int rc = mprotect(addr, size, rw ? PROT_READ | PROT_WRITE : PROT_NONE);
  errno = saved;
  return rc == 0;
}

// A fresh anonymous PROT_NONE mapping (flags: MAP_FIXED, MAP_NORESERVE);
// MAP_FAILED when refused. errno is preserved.
static void *map_none(void *addr, size_t size, int flags) {
  int saved = errno;
  void *p = mmap(addr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
  errno = saved;
  return p;
}

void *os_reserve_none(size_t size) {
  void *p = map_none(NULL, size, MAP_NORESERVE);
  return p == MAP_FAILED ? NULL : p;
}

int os_discard_none(void *addr, size_t size) { return map_none(addr, size, MAP_FIXED | MAP_NORESERVE) != MAP_FAILED; }

int os_purge_none(void *addr, size_t size) { return map_none(addr, size, MAP_FIXED) != MAP_FAILED; }

// The fault hook. A handler the program (or a library before us) had in place
// when the hook was installed is kept and called for every fault that is not
// the allocator's, as if we were not there; a handler installed after the hook
// replaces it (the program's choice: its faults are its own then).
static void (*g_fault_fn)(void *addr);
static struct sigaction g_fault_prev[2];   // SIGSEGV, SIGBUS: what was there before

static void fault_handler(int sig, siginfo_t *si, void *ctx) {
  // A signal sent by kill, raise or sigqueue (si_code <= 0) is no fault: its
  // si_addr means nothing, and nothing repeats it once we return.
  int sent = si->si_code <= 0;
  if (!sent) g_fault_fn(si->si_addr);   // reports and aborts when the address is ours
  struct sigaction *kept = &g_fault_prev[sig == SIGBUS];
  struct sigaction prev = *kept;
  // A handler installed with SA_RESETHAND runs once: the kernel would have
  // put the default action back as it called it, so the next fault that is
  // not ours ends the program (our hook stays for the allocator's own).
  if (prev.sa_flags & SA_RESETHAND) {
    memset(kept, 0, sizeof *kept);
    kept->sa_handler = SIG_DFL;
  }
  // Without SA_NODEFER the kernel blocks the signal while the handler runs (the
  // hook itself has SA_NODEFER, so that a fault inside a report ends the
  // program): a fault inside the program's handler then ends the program
  // instead of entering the handler again. The mask comes back when the
  // handler returns (sigreturn) or siglongjmps, as it would without the hook.
  if (!(prev.sa_flags & SA_NODEFER) && prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, sig);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
  }
  if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction != NULL) {
    prev.sa_sigaction(sig, si, ctx);
    return;
  }
  if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
    return;
  }
  if (sent && prev.sa_handler == SIG_IGN) return;   // ignored, as without us
  struct sigaction dfl;                // not ours, none of the program's: fault
  memset(&dfl, 0, sizeof dfl);         // again, as without us (an ignored fault
  dfl.sa_handler = SIG_DFL;            // kills the program all the same)
  sigaction(sig, &dfl, NULL);
  // A sent one again, now with the default action: returning left the
  // program running (`kill -SEGV` of the hardened library's process, and
  // Python's faulthandler re-raising its SIGSEGV, exited 0; an independent
  // probe, sixty-sixth session).
  if (sent) raise(sig);
}

void os_on_fault(void (*fn)(void *addr)) {
  static const int sigs[2] = {SIGSEGV, SIGBUS};
  g_fault_fn = fn;
  for (int i = 0; i < 2; i++) {
    struct sigaction old, sa;
    if (sigaction(sigs[i], NULL, &old) != 0) continue;
    g_fault_prev[i] = old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fault_handler;
    // The previous handler's mask, and its alternate stack if it asked for one
    // (a stack-overflow handler needs it); SA_NODEFER: a fault inside the
    // report still ends the program.
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | (old.sa_flags & SA_ONSTACK);
    sa.sa_mask = old.sa_mask;
    sigaction(sigs[i], &sa, NULL);
  }
}
#else
typedef int os_guard_unused_t;   // ISO C: a translation unit is not empty
#endif
