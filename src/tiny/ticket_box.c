// ticket_box.c — tickets: blocks of stale remote lists kept back for the
// next refill of their class (see ticket_box.h).
#include "tiny/ticket_box.h"

#include "os/os.h"
#include "stats/stats.h"
#include "superslab/ss_registry.h"
#include "tiny/remote_free_box.h"
#include "tiny/thread_record.h"
#include "tiny/tiny_flush.h"
#include "tiny/tiny_refill.h"

// What the calling thread's flushes do with a stale list
// (tiny_tickets_mode): a LIVE thread's overflow (tiny_flush_overflow,
// tiny_free_remote) keeps its tickets; a thread's exit, or a parked heap's
// release, parks one in g_parked_ticket, where any thread's refill of the
// class finds it (larson's workers exit one after another, and their exits'
// flushes are what fill the lists of the slabs its sleeping main thread
// carved); any other flush (a trim) keeps none.
static __thread uint8_t t_tickets_mode __attribute__((tls_model("initial-exec")));
_Atomic(void *) g_parked_ticket[HAK_NUM_CLASSES];   // (ticket_box.h)
#if HAK_DEBUG
void (*g_ticket_parked_hook)(void);
#endif

static void ticket_keep(tiny_heap_t *h, unsigned cls, hak_base_ptr_t t) {
  h->ticket_classes |= (uint64_t)1 << cls;
  thread_record_of(h)->ticket[cls] = t;
}
// The ticket h holds of cls, no longer held.
static hak_base_ptr_t ticket_take(tiny_heap_t *h, unsigned cls) {
  hak_base_ptr_t t = thread_record_of(h)->ticket[cls];
  thread_record_of(h)->ticket[cls] = HAK_BASE_NULL;
  h->ticket_classes &= ~((uint64_t)1 << cls);
  return t;
}
static int ticket_park(unsigned cls, hak_base_ptr_t t) {
  void *none = NULL;
  if (atomic_load_explicit(&g_parked_ticket[cls], memory_order_relaxed) != NULL) return 0;
  HAK_SITE(SITE_PARKED_TICKET);
  // release: the block's link and mark, written before, go with it.
  return atomic_compare_exchange_strong_explicit(&g_parked_ticket[cls], &none, hak_base_raw(t), memory_order_release,
                                                 memory_order_relaxed);
}

unsigned tiny_tickets_mode(unsigned mode) {
  unsigned old = t_tickets_mode;
  t_tickets_mode = (uint8_t)mode;
  return old;
}

// Is m, another thread's slab whose remote list is not empty, one whose
// list a ticket may take: owned (ACTIVE: its owner keeps it, waiting or not)
// and the list stale? An abandoned slab's list goes with it to the thread
// that adopts it, and the last free into it recycles it, which a ticket would
// put off until a refill of its class.
static int ticket_worth(const slab_meta_t *m, uint64_t now) {
  return SLAB_STATE(atomic_load_explicit(&m->state, memory_order_relaxed)) == SLAB_ACTIVE && remote_list_stale(m, now);
}

// c (blocks of m, another thread's slab, whose remote list is not empty)
// keeps its first block back as a ticket if the list is worth one
// (ticket_worth) and there is a place for it.
HAK_NOINLINE void flush_hold_ticket(slab_meta_t *m, block_chain_t *c) {
  tiny_heap_t *h = t_heap_p;
  unsigned cls = m->cls;
  unsigned mode = t_tickets_mode;
  if (mode == TICKETS_HOME ||
      (mode == TICKETS_KEEP ? ticket_held(h, cls)
                            : atomic_load_explicit(&g_parked_ticket[cls], memory_order_relaxed) != NULL))
    return;
  if (!ticket_worth(m, os_now_ms())) return;
  // The rest of the chain first: a parked ticket is any thread's at once,
  // and its taker writes its link (ticket_home, refill_with_ticket).
  hak_base_ptr_t t = c->first, rest = c->n > 1 ? block_next(t) : HAK_BASE_NULL;
  if (mode == TICKETS_KEEP) ticket_keep(h, cls, t);
  else if (!ticket_park(cls, t)) return;
#if HAK_DEBUG
  if (g_ticket_parked_hook != NULL) g_ticket_parked_hook();
#endif
  if (--c->n != 0) c->first = rest;
}

// Ticket t of cls and up to want - 1 blocks of its slab's remote list onto
// the list of cls (want <= its room); the block after them, while the list
// holds more, is the thread's next ticket. A ticket, counted out of its
// slab, keeps the slab from being recycled, so its metadata is there to read.
static HAK_NOINLINE void refill_with_ticket(tls_cache_t *tc, tiny_heap_t *h, unsigned cls, uint32_t want,
                                            hak_base_ptr_t t) {
  hak_base_ptr_t first, last = t, next;
  uint32_t n = ss_remote_take(ss_registry_slab_of(hak_base_raw(t)), want > 1u ? want - 1u : 0u, &first, &last, &next);
  if (n != 0) block_set_next(t, first);
  tls_sll_push_chain(tc, cls, t, last, n + 1u);
  count_refill(tc, cls, n + 1u);
  hak_counters()->ticket_blocks += n + 1u;
  if (!hak_base_is_null(next)) ticket_keep(h, cls, next);
}

// The thread's ticket of cls, or the one parked.
HAK_NOINLINE int refill_from_ticket(tls_cache_t *tc, tiny_heap_t *h, unsigned cls, uint32_t want) {
  hak_base_ptr_t t;
  if (ticket_held(h, cls)) {
    t = ticket_take(h, cls);
  } else {
    HAK_SITE(SITE_PARKED_TICKET);
    // acquire: the parker's release (the block's words).
    t = hak_base_from_raw(atomic_exchange_explicit(&g_parked_ticket[cls], NULL, memory_order_acquire));
    if (hak_base_is_null(t)) return 0;
  }
  refill_with_ticket(tc, h, cls, want, t);
  return 1;
}

// Ticket t back to its slab (which may be this thread's by now: adopted).
static void ticket_home(hak_base_ptr_t t) {
  slab_meta_t *m = ss_registry_slab_of(hak_base_raw(t));
  block_set_next(t, HAK_BASE_NULL);
  if (atomic_load_explicit(&m->owner, memory_order_relaxed) == thread_self_id()) flush_deliver_own(m, t, t, 1);
  else remote_free_push_chain(m, t, t, 1);
}

void ticket_leave(tiny_heap_t *h, unsigned c, int park) {
  hak_base_ptr_t t = ticket_take(h, c);
  slab_meta_t *m = ss_registry_slab_of(hak_base_raw(t));
  if (park && remote_word_has_list(slab_remote_word(m, memory_order_relaxed)) && ticket_worth(m, os_now_ms()) &&
      ticket_park(c, t))
    return;
  ticket_home(t);
}

void tickets_leave(tiny_heap_t *h) {
  while (h->ticket_classes != 0)
    ticket_leave(h, (unsigned)__builtin_ctzll(h->ticket_classes), t_tickets_mode == TICKETS_PARK);
}

uint32_t tiny_parked_tickets(void) {
  uint32_t n = 0;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) n += atomic_load_explicit(&g_parked_ticket[c], memory_order_relaxed) != NULL;
  return n;
}

void tiny_parked_tickets_home(void) {
  if (!REMOTE_TICKETS) return;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    if (atomic_load_explicit(&g_parked_ticket[c], memory_order_relaxed) == NULL) continue;
    HAK_SITE(SITE_PARKED_TICKET);
    void *t = atomic_exchange_explicit(&g_parked_ticket[c], NULL, memory_order_acquire);
    if (t != NULL) ticket_home(hak_base_from_raw(t));
  }
}
