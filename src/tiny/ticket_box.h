// ticket_box.h — tickets (remote_free_box.h): a chain sent to another
// thread's slab whose remote list waits stale keeps a block back, and the
// next refill of the class takes it with a batch of that list, keeping the
// block after the batch as the next ticket while the list lasts. A ticket is
// counted out of its slab (in use), so the slab, and its metadata, stay
// while it is held. A thread holds at most one a class (its heap's
// ticket_classes, the block in its thread record); at most one a class waits
// parked for any thread (g_parked_ticket). Not in the hardened build, whose
// refill shuffles what it takes from the slabs.
#ifndef HAK_TICKET_BOX_H
#define HAK_TICKET_BOX_H

#include <stdatomic.h>
#include <stdint.h>

#include "debug/ptr_types.h"
#include "superslab/superslab.h"
#include "tiny/block_chain.h"
#include "tiny/tiny_heap.h"
#include "tiny/tls_sll_box.h"

#define REMOTE_TICKETS (!HAK_HARDENED)

// What the calling thread's flushes do with a block of a stale remote list:
// nothing (HOME), keep it as the thread's ticket of its class (KEEP: an
// overflow's flush), or park it for any thread's next refill of the class
// (PARK: a thread's exit, whose tickets are parked too, or sent home).
// Returns the mode before.
enum { TICKETS_HOME = 0, TICKETS_KEEP = 1, TICKETS_PARK = 2 };
unsigned tiny_tickets_mode(unsigned mode);
// The tickets whole flushes parked back to their slabs: a trim's, so that
// nothing keeps a slab from its release.
void tiny_parked_tickets_home(void);
// Tickets parked now, one a class at most (a relaxed look).
uint32_t tiny_parked_tickets(void);

// One parked ticket a class at most (a relaxed load at every refill of a
// line written only when a ticket is parked or taken).
extern HAK_INTERNAL _Atomic(void *) g_parked_ticket[HAK_NUM_CLASSES];

HAK_INLINE int ticket_held(const tiny_heap_t *h, unsigned cls) { return (int)(h->ticket_classes >> cls & 1u); }
// A ticket of cls for h's refill: its own or the one parked.
HAK_INLINE int ticket_waiting(const tiny_heap_t *h, unsigned cls) {
  return ticket_held(h, cls) || atomic_load_explicit(&g_parked_ticket[cls], memory_order_relaxed) != NULL;
}
// c (blocks of m, another thread's slab, whose remote list is not empty)
// keeps its first block back as a ticket if the list is worth one (owned and
// stale) and there is a place for it in the calling thread's mode.
HAK_NOINLINE void flush_hold_ticket(slab_meta_t *m, block_chain_t *c);
// The thread's ticket of cls, or the one parked, with up to want - 1 blocks
// of its slab's remote list onto the list of cls; 0 when there is none.
HAK_NOINLINE int refill_from_ticket(tls_cache_t *tc, tiny_heap_t *h, unsigned cls, uint32_t want);
#if HAK_DEBUG
// Tests only (debug builds): called right after flush_hold_ticket parks a
// ticket, the moment any other thread may take it (test_remote_free).
extern HAK_INTERNAL void (*g_ticket_parked_hook)(void);
#endif
// The ticket h holds of class c leaves it: parked if `park`, its list is
// still worth one and the class has none parked; else home.
void ticket_leave(tiny_heap_t *h, unsigned c, int park);
// A whole flush's: every ticket h holds leaves it, parked in TICKETS_PARK mode.
void tickets_leave(tiny_heap_t *h);

#endif
