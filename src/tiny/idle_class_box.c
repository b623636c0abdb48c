// idle_class_box.c — idle and dying classes given back (see idle_class_box.h).
#include "tiny/idle_class_box.h"

#include "stats/stats.h"
#include "tiny/ticket_box.h"
#include "tiny/tiny_flush.h"
#include "tiny/tiny_thread.h"
#include "tiny/transfer_box.h"

_Static_assert(HAK_NUM_CLASSES <= 64, "tiny_heap_t.dying has a bit per class");

// Class c's list goes home, its current slab back if EMPTY then, its partial
// slabs trimmed (an idle or a dying class). Above HAK_MEDIUM_MAX its grown
// bound goes back to the class's too, with the overflows that would grow it
// at its next refill: a program that sweeps through sizes (bench/drift) grew
// each class again at the refill that began its next sweep, for blocks it
// would take back only a sweep later, and the lists held that many when the
// sweep moved on (with 4 MiB a class there, 8.7 k -> 13.5 k page faults,
// 1.05x the time: the slabs they went back to were purged early and faulted
// in again). The smaller classes keep theirs (1 MiB a class; drift level):
// a class that comes back regrows only after a round of slow paths.
static void give_class_back(tiny_heap_t *h, unsigned c) {
  hak_counters()->classes_given_back++;
  if (g_size_class[c].size > HAK_MEDIUM_MAX) tiny_class_ungrow(c);
  tiny_flush(c, UINT32_MAX);
  if (REMOTE_TICKETS && ticket_held(h, c)) ticket_leave(h, c, 1);   // for a thread that takes the class still
  tiny_heap_release_idle(h, c);
  if (!(h->left_gone >> c & 1u)) {   // (the looks after give it back again, empty)
    h->left_gone |= (uint64_t)1 << c;
    h->left_gone_at[c] = (uint8_t)h->left_look_count;
  }
}

// Class cls, given back, is refilled: within LEFT_BACK_LOOKS looks it was not
// left but between its bursts, and it is kept through the next
// LEFT_KEEP_LOOKS looks (neither look gives it back). A thread cycling
// through a few classes in bursts (30-60 blocks of a class taken, then freed,
// then the next class's) moves more bytes through its slow paths in a cycle
// than two looks' worth once its classes are 16-64 KiB: each class was given
// back (as left, or as dying at the next class's slow path after its frees
// overflowed) between its bursts, and every malloc was a refill of one
// carved block (tcmalloc 0.2x our time; bench/bursts). A class a sweep of
// sizes left (bench/drift) comes back a sweep later, 27-40 looks (six of its
// first sweep's within 12: with 8 and 64 here, drift kept 31 MB against
// 22.6).
void note_class_back(tiny_heap_t *h, unsigned cls) {
  h->left_gone &= ~((uint64_t)1 << cls);
  if ((uint8_t)(h->left_look_count - h->left_gone_at[cls]) <= LEFT_BACK_LOOKS) h->left_keep[cls] = LEFT_KEEP_LOOKS;
}

HAK_NOINLINE void look_idle_classes(tls_cache_t *tc, tiny_heap_t *h, uint64_t now) {
  uint64_t touched = h->left_touched;
  h->left_touched = 0;
  h->left_bytes = 0;
  h->left_look_ms = now;
  h->left_look_count++;
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    if (h->left_keep[c] != 0) {   // came back too soon once (note_class_back)
      h->left_keep[c]--;
      continue;
    }
    void *head = hak_base_raw(tc->lists[c].head);
    if ((touched >> c & 1u) || head != h->left_head[c]) {
      h->left_head[c] = head;
      h->left_looks[c] = 0;
      continue;
    }
    // Quiet here: the exchange's count, read only now (its line is written
    // by every thread that puts or takes the class: a look read 40 such
    // lines, most of them another core's). The first quiet look takes it as
    // the baseline.
    uint32_t moves = g_size_class[c].size <= TRANSFER_MAX_BLOCK ? transfer_moves(c) : 0;
    if (h->left_looks[c] == 0 || moves != h->left_moves[c]) {
      h->left_moves[c] = moves;
      h->left_looks[c] = 1;
      continue;
    }
    if (h->left_looks[c] < LEFT_LOOKS) h->left_looks[c]++;
    if (h->left_looks[c] < LEFT_LOOKS) continue;
    // Idle for LEFT_LOOKS looks: every look from now on gives back what
    // came since (the other thread's last frees reach the slabs later).
    if (moves != 0 && transfer_chains(c) != 0) {
      exchange_send_home(c);
      h->left_moves[c] = transfer_moves(c);
    }
    // Given back before and nothing here since (no block on its list or
    // hand-over chain, no slab of it on any list of the heap): nothing for
    // later frees to reach. A thread whose every malloc was a refill looked
    // every few hundred operations and gave back every idle class each time
    // (`bursts -k 8 -b 100`: 134 k give-backs in 100 rounds, a fifth of its
    // instructions).
    if ((h->left_gone >> c & 1u) && tls_cached(tc, c) == 0 && tiny_heap_handover_n(h, c) == 0 && h->cur[c] == NULL &&
        h->partial[c] == NULL && h->full[c] == NULL)
      continue;
    give_class_back(h, c);
    h->left_head[c] = hak_base_raw(tc->lists[c].head);
  }
  // The heaps parked at threads' exits as long as an idle class waits (its
  // lists and slabs given back whole: tiny_thread.c).
  thread_parked_expire(0);
}

// Dying classes: a class whose bound shrank (it only frees lately) keeps
// the last blocks freed on its list, and each pins the slab it is in, the
// current one too (bench/drift, when 32-256 KiB had 2 MiB slabs: a slab or
// two per class the sizes moved past, 20 of its 58 MB), until the idle look a second
// later. Such a class is marked dying at an overflow (tiny_flush_overflow)
// when its list could hold every block of its current slab still out, or
// when it has no current slab (a thread that frees other threads' blocks).
// At every slow path of another class the head of each dying list is looked
// at; one that has not moved for DYING_LOOKS looks in a row (one for a class
// with a current slab) gives its list back, its current slab if that is
// EMPTY then, and its partial slabs are trimmed (tiny_heap_release_idle). A
// refill of the class ends its dying. A thread freeing other threads' blocks
// of many classes at random leaves a class alone for a few of its slow paths
// often, and its lists feed the class exchange: flushed after one look,
// prodcons -t 4 of 1-32 KiB took 1.12x the time and +2.7 k page faults.
#define DYING_LOOKS 64u

HAK_NOINLINE void look_dying_classes(tls_cache_t *tc, tiny_heap_t *h, unsigned busy) {
  for (uint64_t bits = h->dying & ~((uint64_t)1 << busy); bits != 0; bits &= bits - 1) {
    unsigned c = (unsigned)__builtin_ctzll(bits);
    void *head = hak_base_raw(tc->lists[c].head);
    if (head != h->dying_head[c]) {
      h->dying_head[c] = head;
      h->dying_looks[c] = 0;
      continue;
    }
    if (++h->dying_looks[c] < (h->cur[c] != NULL ? 1u : DYING_LOOKS) || h->left_keep[c] != 0) continue;
    h->dying &= ~((uint64_t)1 << c);
    give_class_back(h, c);
  }
}

// After an overflow's flush of cls with its bound shrunk.
void note_dying_class(tls_cache_t *tc, tiny_heap_t *h, unsigned cls) {
  slab_meta_t *m = h->cur[cls];
  if (m != NULL && slab_live(m) > tls_cached(tc, cls)) return;
  if (!(h->dying >> cls & 1u)) h->dying_looks[cls] = 0;
  h->dying |= (uint64_t)1 << cls;
  h->dying_head[cls] = hak_base_raw(tc->lists[cls].head);
}
