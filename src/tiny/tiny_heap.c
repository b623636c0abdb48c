// tiny_heap.c — a thread's slabs (see tiny_heap.h).
#include "tiny/tiny_heap.h"

#include <sched.h>

#include "stats/stats.h"
#include "tiny/slab_validate.h"
#include "tiny/tls_sll_box.h"

__thread tiny_heap_t *t_heap_p __attribute__((tls_model("initial-exec")));
__thread uint8_t t_thread_status __attribute__((tls_model("initial-exec")));

// ---- owner-only doubly-linked lists --------------------------------------

static void list_push(slab_meta_t **head, slab_meta_t *m, uint8_t where) {
  m->where = where;
  m->list_prev = NULL;
  m->list_next = *head;
  if (*head != NULL) (*head)->list_prev = m;
  *head = m;
}

static void list_remove(slab_meta_t **head, slab_meta_t *m) {
  if (m->list_prev != NULL) m->list_prev->list_next = m->list_next;
  else *head = m->list_next;
  if (m->list_next != NULL) m->list_next->list_prev = m->list_prev;
  m->list_next = m->list_prev = NULL;
  m->where = SLAB_IN_NONE;
}

static int list_has_at_least(const slab_meta_t *m, unsigned n) {
  for (; n > 0; n--, m = m->list_next)
    if (m == NULL) return 0;
  return 1;
}

// ---- the wake list ---------------------------------------------------------

void tiny_heap_notify_owner(slab_meta_t *m) {
  uint32_t armed = SLAB_NOTIFY_ARMED;
  // seq_cst load: pairs with the owner's seq_cst arming store and our
  // caller's seq_cst push on the remote list (one of the two sides sees the other).
  if (atomic_load_explicit(&m->notify, memory_order_seq_cst) != armed) return;
  if (!atomic_compare_exchange_strong_explicit(&m->notify, &armed, SLAB_NOTIFY_NOTIFYING, memory_order_acquire,
                                               memory_order_relaxed))
    return;
  HAK_SITE(SITE_NOTIFY);
  // The owner waits for NOTIFYING to end before it abandons m, so its heap
  // (in its TLS) is alive until our store below.
  tiny_heap_t *h = tiny_heap_of_owner(atomic_load_explicit(&m->owner, memory_order_relaxed));
  slab_meta_t *old = atomic_load_explicit(&h->wake, memory_order_relaxed);
  do {
    atomic_store_explicit(&m->wake_next, old, memory_order_relaxed);
    // release: the owner that takes the list (acquire) sees wake_next.
  } while (!atomic_compare_exchange_weak_explicit(&h->wake, &old, m, memory_order_release, memory_order_relaxed));
  HAK_SITE(SITE_NOTIFY);
  // The owner is woken: the next pushes count their blocks on the list (one
  // CAS each) instead of each lowering `used` until the owner takes its wake
  // list (cross at 16 threads: most pushes came in that wait). While still
  // NOTIFYING, so the owner cannot have given m up meanwhile (its detach
  // asks for attention again, and waits for NOTIFYING to end first).
  remote_list_unattend(m);
  atomic_store_explicit(&m->notify, SLAB_NOTIFY_NOTIFIED, memory_order_release);
}

static void heap_release_empty(tiny_heap_t *h, slab_meta_t *m);

// Take the whole wake list: each slab is IDLE again, and one still on the
// full list moves to the partial list (or back to the pool when EMPTY).
static void heap_take_wake(tiny_heap_t *h) {
  if (atomic_load_explicit(&h->wake, memory_order_relaxed) == NULL) return;
  // acquire: the pushers' wake_next stores (release) are visible.
  slab_meta_t *m = atomic_exchange_explicit(&h->wake, NULL, memory_order_acquire);
  while (m != NULL) {
    // The freer that pushed m stores NOTIFIED after its push: wait for that
    // store, or it would land after our IDLE and leave m NOTIFIED on no wake
    // list (never woken again, and heap_disarm waiting for it forever).
    while (atomic_load_explicit(&m->notify, memory_order_acquire) == SLAB_NOTIFY_NOTIFYING) sched_yield();
    slab_meta_t *next = atomic_load_explicit(&m->wake_next, memory_order_relaxed);
    atomic_store_explicit(&m->notify, SLAB_NOTIFY_IDLE, memory_order_relaxed);
    if (m->where == SLAB_IN_FULL) {
      list_remove(&h->full[m->cls], m);
      if (slab_live(m) == 0) heap_release_empty(h, m);
      else if (list_has_at_least(h->partial[m->cls], HEAP_PARTIAL_KEEP)) shared_pool_detach_slab(m);
      else list_push(&h->partial[m->cls], m, SLAB_IN_PARTIAL);
    }
    m = next;
  }
}

// Make sure no remote freer will touch m's notify word or wake link again
// (m leaves this heap): ARMED becomes IDLE, a push in flight is waited for,
// and a slab on the wake list is taken off it.
static void heap_disarm(tiny_heap_t *h, slab_meta_t *m) {
  for (;;) {
    uint32_t v = atomic_load_explicit(&m->notify, memory_order_acquire);
    if (v == SLAB_NOTIFY_IDLE) return;
    if (v == SLAB_NOTIFY_ARMED) {
      if (atomic_compare_exchange_strong_explicit(&m->notify, &v, SLAB_NOTIFY_IDLE, memory_order_acq_rel,
                                                  memory_order_relaxed))
        return;
    } else if (v == SLAB_NOTIFY_NOTIFYING) {
      sched_yield();                 // a freer between its two stores: a few instructions
    } else {
      heap_take_wake(h);             // NOTIFIED: m is on our wake list
    }
  }
}

// Stop a slab leaving this heap from being pushed on the wake list again: ARMED
// becomes IDLE and a push in flight is waited for. 1 when it is on the wake
// list (NOTIFIED), to be taken off by heap_take_wake.
static int heap_disarm_pending(slab_meta_t *m) {
  for (;;) {
    uint32_t v = atomic_load_explicit(&m->notify, memory_order_acquire);
    if (v == SLAB_NOTIFY_IDLE) return 0;
    if (v == SLAB_NOTIFY_NOTIFIED) return 1;
    if (v == SLAB_NOTIFY_NOTIFYING) sched_yield();
    else if (atomic_compare_exchange_strong_explicit(&m->notify, &v, SLAB_NOTIFY_IDLE, memory_order_acq_rel,
                                                     memory_order_relaxed))
      return 0;
  }
}

// An owned slab whose every block is free (used == 0) goes back to the pool.
static void heap_release_empty(tiny_heap_t *h, slab_meta_t *m) {
  h->owned_lines -= tiny_heap_slab_lines(m);
  heap_disarm(h, m);
  m->where = SLAB_IN_NONE;
  shared_pool_release_owned(m, &h->stash[ss_of_meta(m)->kind]);
}

// ---- refill side ---------------------------------------------------------

// Before a slab of a kind comes from the Shared Pool: the partial slabs of
// the kind's other classes that other threads' frees emptied go back first
// (tiny_heap_trim_partial). A class this thread no longer allocates is
// never refilled, so nothing else looks at its slabs: with a second thread
// freeing the buffers of bench/drift, each class the sizes moved past kept
// its emptied slabs until the thread exited.
// (Only refilled classes have slabs: tiny_heap_abandon_all.)
static HAK_NOINLINE void heap_trim_kind(tiny_heap_t *h, unsigned kind, unsigned cls) {
  for (uint64_t bits = h->refilled & ~((uint64_t)1 << cls); bits != 0; bits &= bits - 1) {
    unsigned c = (unsigned)__builtin_ctzll(bits);
    if (h->partial[c] != NULL && g_size_class[c].kind == kind) tiny_heap_trim_partial(h, c, NULL);
  }
}

_Atomic uint64_t g_class_young_taken;
_Static_assert(HAK_NUM_CLASSES <= 64, "a bit a class");

// The kind of cls's next fresh slab: its own, but the small kind's for its
// young slab (tiny_heap.h), when no medium memory waits to be reused
// resident: a young slab would be new pages where a dirty one costs none
// (bench/drift, whose sizes move through the classes, faulted 9 053 times
// with young slabs whatever the pool held, 7 447 so, 7 979 without them). One
// a process, not a thread: with one a thread, the threads of each of
// mstress's rounds took theirs, 4 560 page faults against 3 700-3 800 and
// +1 MB peak RSS (`-t 8 -n 10000 -r 20`).
static unsigned slab_kind_for(const tiny_heap_t *h, unsigned cls) {
  unsigned kind = g_size_class[cls].kind;
  if (!size_class_has_young_slab(cls)) return kind;
  uint64_t bit = (uint64_t)1 << cls;
  if (atomic_load_explicit(&g_class_young_taken, memory_order_relaxed) & bit) return kind;
  if (h->stash[kind].n != 0 || shared_pool_has_dirty_free(kind)) return kind;
  atomic_fetch_or_explicit(&g_class_young_taken, bit, memory_order_relaxed);
  return HAK_KIND_SMALL;
}

slab_meta_t *tiny_heap_next_slab(tiny_heap_t *h, unsigned cls) {
  slab_meta_t *m = tiny_heap_partial_with_free(h, cls);
  if (m != NULL) {
    list_remove(&h->partial[cls], m);
  } else {
    unsigned kind = slab_kind_for(h, cls);
    heap_trim_kind(h, kind, cls);
    m = shared_pool_acquire_slab(cls, kind, thread_self_id(), &h->stash[kind]);
    if (m == NULL) return NULL;
    h->owned_lines += tiny_heap_slab_lines(m);
  }
  m->where = SLAB_IN_CURRENT;
  h->cur[cls] = m;
  return m;
}

// m (on no list) has no block known free: park it on the full list, armed so
// that the first remote free wakes us.
static void heap_park_full(tiny_heap_t *h, slab_meta_t *m) {
  unsigned cls = m->cls;
  list_push(&h->full[cls], m, SLAB_IN_FULL);
  uint32_t v;
  while ((v = atomic_load_explicit(&m->notify, memory_order_acquire)) == SLAB_NOTIFY_NOTIFYING) sched_yield();
  if (v == SLAB_NOTIFY_NOTIFIED) return;   // on the wake list already: it comes back from there
  // ARMED, then the remote list's word asks for attention while the list is
  // empty (one CAS, ordered with every push's CAS, whose release makes this
  // store seen by a push that reads it): a later push wakes us; if blocks
  // came first, m is not full after all.
  atomic_store_explicit(&m->notify, SLAB_NOTIFY_ARMED, memory_order_relaxed);
  if (remote_list_attend_if_empty(m)) return;
  uint32_t armed = SLAB_NOTIFY_ARMED;
  if (atomic_compare_exchange_strong_explicit(&m->notify, &armed, SLAB_NOTIFY_IDLE, memory_order_acq_rel,
                                              memory_order_relaxed)) {
    list_remove(&h->full[cls], m);         // a remote free came in between: usable again
    list_push(&h->partial[cls], m, SLAB_IN_PARTIAL);
  }                                         // else a freer is waking us: it comes back from the wake list
}

void tiny_heap_retire_current(tiny_heap_t *h, unsigned cls) {
  slab_meta_t *m = h->cur[cls];
  h->cur[cls] = NULL;
#if HAK_DEBUG
  slab_validate(m);
#endif
  heap_park_full(h, m);
}

slab_meta_t *tiny_heap_partial_with_free(tiny_heap_t *h, unsigned cls) {
  for (;;) {
    slab_meta_t *m = h->partial[cls];
    if (m == NULL) {
      heap_take_wake(h);
      if ((m = h->partial[cls]) == NULL) break;
    }
    if (slab_has_free_blocks(m)) return m;
    list_remove(&h->partial[cls], m);      // taken dry by earlier refills
    heap_park_full(h, m);
  }
  // None of ours: a slab another thread gave up, before new memory is carved.
  slab_meta_t *m = shared_pool_adopt_slab(cls, thread_self_id());
  if (m != NULL) {
    h->owned_lines += tiny_heap_slab_lines(m);
    list_push(&h->partial[cls], m, SLAB_IN_PARTIAL);
  }
  return m;
}

// Blocks that other threads sent home pile up in the partial slabs an owner
// is not refilling from: in a ring (every free remote, each block reused by
// the thread that freed it until its list overflows) each thread's share of
// the class's free blocks is a random walk, and the thread whose slabs run
// dry carves while the others' fill (ring at 16 threads: half the carved
// bytes free in partial slabs, peak RSS growing with the run's length). At
// each refill the owner looks along the partial list: a slab that remote
// frees emptied goes back (stash, then pool), and one with a quarter of it
// free and remote frees still arriving is given up to the abandoned stack,
// where the next thread that would carve adopts it. A partial slab fed only
// by its owner's own frees stays (local rows keep their slabs).
#define HEAP_TRIM_WALK 8u

void tiny_heap_trim_partial(tiny_heap_t *h, unsigned cls, const slab_meta_t *skip) {
  slab_meta_t *m = h->partial[cls];
  for (unsigned i = 0; m != NULL && i < HEAP_TRIM_WALK; i++) {
    slab_meta_t *next = m->list_next;
    // IDLE: no remote freer touches its notify word or wake link (only the
    // owner arms a slab, and only on the full list), so it may leave.
    if (m != skip && atomic_load_explicit(&m->notify, memory_order_acquire) == SLAB_NOTIFY_IDLE) {
      uint32_t used = slab_live(m);
      uint32_t carved = (uint32_t)((size_t)(slab_carve(m) - m->base) / m->block_size);
      if (used == 0) {
        list_remove(&h->partial[cls], m);
        heap_release_empty(h, m);
      } else if ((carved - used) * 4u >= m->capacity &&
                 remote_word_has_list(slab_remote_word(m, memory_order_relaxed))) {
        list_remove(&h->partial[cls], m);
        h->owned_lines -= tiny_heap_slab_lines(m);
        shared_pool_detach_slab(m);
      }
    }
    m = next;
  }
}

// ---- free side -----------------------------------------------------------

void tiny_heap_slab_moved(tiny_heap_t *h, slab_meta_t *m, int empty) {
#if HAK_DEBUG
  slab_validate(m);
#endif
  switch (m->where) {
  case SLAB_IN_CURRENT:
    return;                                // the current slab stays, empty or not (tiny_heap_release_idle)
  case SLAB_IN_FULL:
    list_remove(&h->full[m->cls], m);
    if (!empty) {
      // Disarmed when we can (else it is being or was pushed on the wake
      // list, where a slab that is no longer full is just made IDLE).
      uint32_t armed = SLAB_NOTIFY_ARMED;
      if (atomic_compare_exchange_strong_explicit(&m->notify, &armed, SLAB_NOTIFY_IDLE, memory_order_acq_rel,
                                                  memory_order_relaxed))
        remote_list_unattend(m);
      list_push(&h->partial[m->cls], m, SLAB_IN_PARTIAL);
      return;
    }
    break;
  case SLAB_IN_PARTIAL:
    if (!empty) return;
    list_remove(&h->partial[m->cls], m);
    break;
  default:
    HAK_ASSERT(0 && "a slab of this heap is on no list");
    return;
  }
  heap_release_empty(h, m);
}

void tiny_heap_release_idle(tiny_heap_t *h, unsigned cls) {
  heap_take_wake(h);
  slab_meta_t *m = h->cur[cls];
  // acquire: the frees that brought it to zero are done with it.
  if (m != NULL && slab_live(m) == 0) {
    h->cur[cls] = NULL;
    heap_release_empty(h, m);
  }
  tiny_heap_trim_partial(h, cls, NULL);
}

// ---- thread exit ---------------------------------------------------------

// Only the classes the thread refilled hold slabs (a slab comes to a heap
// only through a refill of its class: tiny_heap_next_slab,
// tiny_heap_partial_with_free): a thread of a few classes walked all 52 twice
// (churn -c 16 -k 16: 2.2 k of its exit's instructions).
void tiny_heap_abandon_all(tiny_heap_t *h) {
#if HAK_DEBUG
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++)
    if (!(h->refilled >> c & 1u)) HAK_ASSERT(h->cur[c] == NULL && h->partial[c] == NULL && h->full[c] == NULL);
#endif
  // First no freer may reach this heap any more, then the slabs go.
  for (uint64_t bits = h->refilled; bits != 0; bits &= bits - 1) {
    unsigned c = (unsigned)__builtin_ctzll(bits);
    if (h->cur[c] != NULL) heap_disarm_pending(h->cur[c]);
    for (slab_meta_t *m = h->partial[c]; m != NULL; m = m->list_next) heap_disarm_pending(m);
    for (slab_meta_t *m = h->full[c]; m != NULL; m = m->list_next) heap_disarm_pending(m);
  }
  heap_take_wake(h);   // may move slabs from full to partial, or release EMPTY ones
  for (uint64_t bits = h->refilled; bits != 0; bits &= bits - 1) {
    unsigned c = (unsigned)__builtin_ctzll(bits);
    slab_meta_t *m = h->cur[c];
    if (m != NULL) {
      h->cur[c] = NULL;
#if HAK_DEBUG
      slab_validate(m);
#endif
      m->where = SLAB_IN_NONE;
      shared_pool_detach_slab(m);
    }
    slab_meta_t **lists[2] = {&h->partial[c], &h->full[c]};
    for (unsigned l = 0; l < 2; l++) {
      while ((m = *lists[l]) != NULL) {
#if HAK_DEBUG
        slab_validate(m);
#endif
        list_remove(lists[l], m);
        shared_pool_detach_slab(m);
      }
    }
  }
  for (unsigned k = 0; k < HAK_SLAB_KINDS; k++) shared_pool_stash_release(&h->stash[k]);
  h->owned_lines = 0;
}

// fork() child: a remote freer of the parent that was between its two
// notify stores does not exist here, so no slab may stay NOTIFYING (the owner
// would wait for it forever): one that made it onto the wake list is
// NOTIFIED, any other IDLE.
static void fork_settle(tiny_heap_t *h, slab_meta_t *m) {
  if (atomic_load_explicit(&m->notify, memory_order_relaxed) != SLAB_NOTIFY_NOTIFYING) return;
  uint32_t v = SLAB_NOTIFY_IDLE;
  for (slab_meta_t *w = atomic_load_explicit(&h->wake, memory_order_relaxed); w != NULL;
       w = atomic_load_explicit(&w->wake_next, memory_order_relaxed))
    if (w == m) v = SLAB_NOTIFY_NOTIFIED;
  atomic_store_explicit(&m->notify, v, memory_order_relaxed);
}

void tiny_heap_fork_child(tiny_heap_t *h) {
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    if (h->cur[c] != NULL) fork_settle(h, h->cur[c]);
    for (slab_meta_t *m = h->partial[c]; m != NULL; m = m->list_next) fork_settle(h, m);
    for (slab_meta_t *m = h->full[c]; m != NULL; m = m->list_next) fork_settle(h, m);
  }
}

#if HAK_DEBUG
static void validate_list(const tiny_heap_t *h, const slab_meta_t *head, unsigned cls, uint8_t where) {
  const slab_meta_t *prev = NULL;
  for (const slab_meta_t *m = head; m != NULL; prev = m, m = m->list_next) {
    HAK_CHECK(m->where == where, "heap slab on a list its `where` does not name", m);
    HAK_CHECK(m->list_prev == prev, "heap list links broken", m);
    HAK_CHECK(m->cls == cls, "heap slab on another class's list", m);
    HAK_CHECK(tiny_heap_of_owner(atomic_load(&m->owner)) == h, "heap slab owned by another thread", m);
    slab_validate(m);
  }
}

void tiny_heap_validate(const tiny_heap_t *h) {
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    const slab_meta_t *m = h->cur[c];
    if (m != NULL) {
      HAK_CHECK(m->where == SLAB_IN_CURRENT && m->cls == c, "current slab not marked current", m);
      HAK_CHECK(tiny_heap_of_owner(atomic_load(&m->owner)) == h, "current slab owned by another thread", m);
      slab_validate(m);
    }
    validate_list(h, h->partial[c], c, SLAB_IN_PARTIAL);
    validate_list(h, h->full[c], c, SLAB_IN_FULL);
  }
  for (unsigned k = 0; k < HAK_SLAB_KINDS; k++) shared_pool_stash_validate(&h->stash[k], k);
  for (unsigned c = 0; c < TINY_REMOTE_CLASSES; c++) {
    HAK_CHECK(h->remote_count[c] < TINY_REMOTE_BUF_BLOCKS, "remote buffer over its bound", h);
    for (uint32_t k = 0; k < h->remote_count[c]; k++) {
      hak_base_ptr_t b = h->remote_buf[c][k];
      HAK_CHECK(block_is_free(b), "remote buffer block without its free mark", hak_base_raw(b));
      HAK_CHECK(ss_slab_of(ss_of(hak_base_raw(b)), hak_base_raw(b))->cls == c, "remote buffer block of another class",
                hak_base_raw(b));
    }
  }
}
#endif
