// transfer_box.c — the per-class exchange (see transfer_box.h).
#include "tiny/transfer_box.h"

#include <pthread.h>
#include <stdatomic.h>

#include "os/os.h"
#include "stats/stats.h"
#include "superslab/size_class.h"
#include "tiny/tls_sll_box.h"

// Who put a chain: the thread's id, its low 32 bits (0 for a thread not
// LIVE; two threads whose ids differ only above them would only take each
// other's chains as their own).
static inline uint32_t transfer_key(void) { return (uint32_t)t_tls_cache.self; }

typedef struct transfer_chain {
  hak_base_ptr_t first, last;
  uint32_t       n;
  uint32_t       putter;   // transfer_key() of the thread that put it
} transfer_chain_t;

// A class's lock and counts, one line (a put or take touches it and the line
// of its chain entry, as when the entries followed them in one struct), in
// .data for the lock's initialiser; the entries are zero-initialised .bss, so
// no page of them is resident until a thread uses its class's exchange (in
// .data, 43 KB of every process's RSS: a read of any .data word maps its
// neighbours in from the library's file).
typedef struct transfer_class {
  pthread_mutex_t  lock;
  _Atomic uint32_t chains;   // read without the lock: an empty exchange costs no lock
  _Atomic uint32_t blocks;
  _Atomic uint32_t moves;    // chains put or taken (or parts of one taken) so far (wraps)
} __attribute__((aligned(64))) transfer_class_t;
_Static_assert(sizeof(transfer_class_t) == 64, "a class's lock and counts are one line");

// On a page of its own (3.3 KB): the atfork handlers take every class's
// lock, and a fork then costs each process one fault here, not two. The
// whole page (the classes past HAK_NUM_CLASSES unused), so the variables
// laid out after .data1 (.bss) start on a page of their own: its 7 KB of
// small variables on two pages, not three (test_process --startup-pages).
#define TRANSFER_PAGE_CLASSES (4096u / sizeof(transfer_class_t))
_Static_assert(HAK_NUM_CLASSES <= TRANSFER_PAGE_CLASSES, "every class's lock fits the page");
// The classes past HAK_EXCHANGE_CLASSES (above TRANSFER_MAX_BLOCK) keep an
// entry, always empty, so that a look at any class's counts reads zeros; no
// chain is put there, so their locks are never taken and a fork does not
// take them either (core/init.c counts the locks a fork holds).
HAK_PAGE_DATA static transfer_class_t g_transfer[TRANSFER_PAGE_CLASSES] = {
  // adaptive: the critical section is a few stores, so a waiter spins a
  // while before it sleeps in the kernel
  [0 ... HAK_NUM_CLASSES - 1] = {.lock = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP},
};
// Class c's chains: g_transfer_chain[c][0 .. chains) (its lock).
HAK_BIG_BSS static transfer_chain_t g_transfer_chain[HAK_EXCHANGE_CLASSES][TRANSFER_MAX_CHAINS] __attribute__((aligned(64)));

int transfer_put(unsigned cls, uint32_t limit, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n) {
  HAK_ASSERT(cls < HAK_EXCHANGE_CLASSES);
  transfer_class_t *t = &g_transfer[cls];
  if (limit > TRANSFER_MAX_CHAINS) limit = TRANSFER_MAX_CHAINS;
  if (atomic_load_explicit(&t->chains, memory_order_relaxed) >= limit) return 0;
  HAK_SITE(SITE_TRANSFER_LOCK);
  pthread_mutex_lock(&t->lock);
  uint32_t c = atomic_load_explicit(&t->chains, memory_order_relaxed);
  int kept = c < limit;
  if (kept) {
    g_transfer_chain[cls][c] = (transfer_chain_t){first, last, n, transfer_key()};
    atomic_store_explicit(&t->chains, c + 1, memory_order_relaxed);
    atomic_store_explicit(&t->moves, atomic_load_explicit(&t->moves, memory_order_relaxed) + 1, memory_order_relaxed);
    atomic_store_explicit(&t->blocks, atomic_load_explicit(&t->blocks, memory_order_relaxed) + n,
                          memory_order_relaxed);
  }
  pthread_mutex_unlock(&t->lock);
  return kept;
}

int transfer_full(unsigned cls, uint32_t limit) {
  if (limit > TRANSFER_MAX_CHAINS) limit = TRANSFER_MAX_CHAINS;
  return atomic_load_explicit(&g_transfer[cls].chains, memory_order_relaxed) >= limit;
}

// The newest chain not put by `mine` (0: the newest), else the newest: *own
// says which. A chain below the top taken whole leaves its place to the top
// one.
static uint32_t take(unsigned cls, uint32_t max, uint32_t mine, hak_base_ptr_t *first, hak_base_ptr_t *last,
                     int *own) {
  transfer_class_t *t = &g_transfer[cls];
  *own = 0;
  if (max == 0 || atomic_load_explicit(&t->chains, memory_order_relaxed) == 0) return 0;
  HAK_SITE(SITE_TRANSFER_LOCK);
  pthread_mutex_lock(&t->lock);
  uint32_t c = atomic_load_explicit(&t->chains, memory_order_relaxed), n = 0, gone = 0, i = c;
  while (i > 0 && mine != 0 && g_transfer_chain[cls][i - 1].putter == mine) i--;
  if (i == 0 && c > 0) {   // none but its own
    i = c;
    *own = mine != 0;
  }
  hak_base_ptr_t corrupt = HAK_BASE_NULL;
  if (i > 0) {
    transfer_chain_t *x = &g_transfer_chain[cls][i - 1];
    *first = x->first;
    if (x->n <= max) {
      *last = x->last;
      n = gone = x->n;
      *x = g_transfer_chain[cls][c - 1];
      atomic_store_explicit(&t->chains, c - 1, memory_order_relaxed);
    } else {   // a thread with a smaller bound: the first max blocks, links checked
      hak_base_ptr_t b = x->first;
      for (n = 1; n < max; n++) {
        hak_base_ptr_t next = block_next(b);
        if (HAK_UNLIKELY(!block_link_plausible(next))) break;
        b = next;
      }
      *last = b;
      hak_base_ptr_t rest = block_next(b);
      if (HAK_UNLIKELY(n < max || !block_link_plausible(rest))) {
        corrupt = b;   // a use after free wrote here: the rest of the chain is dropped (leaked)
        gone = x->n;
        *x = g_transfer_chain[cls][c - 1];
        atomic_store_explicit(&t->chains, c - 1, memory_order_relaxed);
      } else {
        x->first = rest;
        x->n -= n;
        gone = n;
      }
    }
    atomic_store_explicit(&t->blocks, atomic_load_explicit(&t->blocks, memory_order_relaxed) - gone,
                          memory_order_relaxed);
    atomic_store_explicit(&t->moves, atomic_load_explicit(&t->moves, memory_order_relaxed) + 1, memory_order_relaxed);
  }
  pthread_mutex_unlock(&t->lock);
  if (HAK_UNLIKELY(!hak_base_is_null(corrupt))) tls_sll_report_corrupt(corrupt, cls);
  return n;
}

uint32_t transfer_take(unsigned cls, uint32_t max, hak_base_ptr_t *first, hak_base_ptr_t *last) {
  int own;
  return take(cls, max, 0, first, last, &own);
}

uint32_t transfer_take_others_first(unsigned cls, uint32_t max, hak_base_ptr_t *first, hak_base_ptr_t *last, int *own) {
  return take(cls, max, transfer_key(), first, last, own);
}

uint32_t transfer_take_next(unsigned *cls, uint32_t over, hak_base_ptr_t *first, hak_base_ptr_t *last) {
  for (unsigned c = *cls; c < HAK_EXCHANGE_CLASSES; c++) {
    if (atomic_load_explicit(&g_transfer[c].chains, memory_order_relaxed) <= over) continue;
    uint32_t n = transfer_take(c, UINT32_MAX, first, last);
    if (n > 0) {
      *cls = c;
      return n;
    }
  }
  *cls = HAK_NUM_CLASSES;
  return 0;
}

uint32_t transfer_blocks(unsigned cls) { return atomic_load_explicit(&g_transfer[cls].blocks, memory_order_relaxed); }
uint32_t transfer_chains(unsigned cls) { return atomic_load_explicit(&g_transfer[cls].chains, memory_order_relaxed); }
uint32_t transfer_moves(unsigned cls) { return atomic_load_explicit(&g_transfer[cls].moves, memory_order_relaxed); }

int transfer_locks_settle(const struct timespec *by) {
  for (unsigned c = 0; c < HAK_EXCHANGE_CLASSES; c++)
    if (!os_mutex_settles(&g_transfer[c].lock, by)) return 0;
  return 1;
}

void transfer_fork_prepare(void) {
  for (unsigned c = 0; c < HAK_EXCHANGE_CLASSES; c++) pthread_mutex_lock(&g_transfer[c].lock);
}
void transfer_fork_parent(void) {
  for (unsigned c = HAK_EXCHANGE_CLASSES; c-- > 0;) pthread_mutex_unlock(&g_transfer[c].lock);
}
void transfer_fork_child(void) { transfer_fork_parent(); }
