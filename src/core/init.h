// init.h — process start-up and shutdown: the HAKMEM_* options, the free-mark
// key, the thread exit hook, the fork handlers (every allocator lock in one
// order) and the report at exit.
#ifndef HAK_INIT_H
#define HAK_INIT_H

// Global one-time initialisation; cheap after the first call. Safe from any
// thread at any time, including re-entrantly from inside itself.
void hak_init_once(void);
// Can every allocator lock be taken within `ms` milliseconds (each taken and
// released at once, in the fork handlers' order)? 0 when one stays held: by
// a slow thread, or by the caller itself, an exit() from a signal handler
// that interrupted the allocator, where the report at exit would wait for
// ever (a helper's probe: 15 of 20 such exits hung with HAKMEM_STATS=1).
int hak_locks_settle(unsigned ms);

#include "tiny/tiny_thread.h"

// The calling thread set up (and the process before it) on its first slow
// path: 1, or 0 when it could not be (thread_setup: out of memory).
HAK_INLINE int thread_ready(void) {
  if (HAK_LIKELY(t_thread_status == THREAD_LIVE)) return 1;
  hak_init_once();
  return thread_setup();
}

#endif
