// stats.h — counters of rare events, kept off the fast path.
#ifndef HAK_STATS_H
#define HAK_STATS_H

#include <stdatomic.h>
#include <stddef.h>

extern _Atomic size_t g_stat_remote_frees;
extern _Atomic size_t g_stat_threads_live;

static inline void hak_stat_add_remote_frees(size_t n) {
  atomic_fetch_add_explicit(&g_stat_remote_frees, n, memory_order_relaxed);
}

#endif
