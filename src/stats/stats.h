// stats.h — counters of rare events, kept off the fast path.
#ifndef HAK_STATS_H
#define HAK_STATS_H

#include <stdatomic.h>
#include <stddef.h>

extern _Atomic size_t g_stat_remote_frees;
extern _Atomic size_t g_stat_threads_live;

// Remote frees are counted per thread and added to the global counter in
// steps of 1024 (and when the thread flushes), so threads freeing into each
// other's slabs do not also fight over one counter's cache line.
extern __thread size_t t_stat_remote_frees __attribute__((tls_model("initial-exec"), visibility("hidden")));
static inline void hak_stat_add_remote_frees(size_t n) {
  if ((t_stat_remote_frees += n) >= 1024) {
    atomic_fetch_add_explicit(&g_stat_remote_frees, t_stat_remote_frees, memory_order_relaxed);
    t_stat_remote_frees = 0;
  }
}
static inline void hak_stat_flush_thread(void) {
  if (t_stat_remote_frees != 0) {
    atomic_fetch_add_explicit(&g_stat_remote_frees, t_stat_remote_frees, memory_order_relaxed);
    t_stat_remote_frees = 0;
  }
}

#endif
