// tiny_thread.h — a thread's allocator state beyond its TLS lists: its
// current slab per class, and its life (set up on the first slow path, torn
// down by a pthread key destructor when the thread exits, which gives every
// cached block and owned slab back to the Shared Pool).
#ifndef HAK_TINY_THREAD_H
#define HAK_TINY_THREAD_H

#include "superslab/superslab.h"
#include "tiny/tls_sll_box.h"

enum thread_status { THREAD_NEW = 0, THREAD_LIVE = 1, THREAD_DONE = 2 };

typedef struct thread_state {
  slab_meta_t *cur[HAK_NUM_CLASSES];   // the slab this thread owns and refills from, per class
  uint8_t      status;                 // enum thread_status
} thread_state_t;

extern HAK_INTERNAL __thread thread_state_t t_thread __attribute__((tls_model("initial-exec")));

// A per-thread id for slab ownership: never 0, unique among live threads.
HAK_INLINE uintptr_t thread_self_id(void) { return (uintptr_t)&t_tls_cache; }

// Make the calling thread LIVE (global init on first use, TLS bounds, exit hook).
void thread_setup(void);
HAK_INLINE void thread_ensure_setup(void) {
  if (HAK_UNLIKELY(t_thread.status != THREAD_LIVE)) thread_setup();
}
// Give every cached block and owned slab back (thread exit, hak_thread_flush).
void thread_release_all(void);

// Global one-time initialisation (config, exit hook key, fork handlers).
void hak_init_once(void);

#endif
