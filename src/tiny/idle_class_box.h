// idle_class_box.h — classes a thread no longer uses, given back from its
// slow paths: an idle class (no slow path of it for LEFT_LOOKS looks, its
// list head and exchange standing still) and a dying one (a class that only
// frees lately, its list head standing still while other classes' slow paths
// run) send their TLS list, exchange chains and ticket home, their current
// slab back to the pool when EMPTY and their partial slabs trimmed
// (give_class_back). Every refill and overflow's flush calls note_slow_path.
// Only the owning thread touches its heap's looks; no atomics here.
#ifndef HAK_IDLE_CLASS_BOX_H
#define HAK_IDLE_CLASS_BOX_H

#include <stdint.h>

#include "config/config.h"
#include "os/os.h"
#include "superslab/size_class.h"
#include "tiny/tiny_heap.h"
#include "tiny/tls_sll_box.h"

// Idle classes: every LEFT_LOOK_BYTES that a thread's refills take or its
// overflows flush (or half a second), a look at the classes it had no slow
// path of since; one whose list head and exchange stood still for LEFT_LOOKS
// looks in a row is given back.
#define LEFT_LOOK_BYTES ((uint64_t)4 << 20)
#ifndef LEFT_LOOKS
#define LEFT_LOOKS      2u
#endif
// A class given back (by that look, or as dying) that the thread refills
// within LEFT_BACK_LOOKS looks was not left: it is kept through the next
// LEFT_KEEP_LOOKS looks (note_class_back).
#define LEFT_BACK_LOOKS 2u
#define LEFT_KEEP_LOOKS 16u

// Idle classes: blocks on a TLS list, and its class's current slab, stay
// with the thread however long the class goes unused, and each keeps its
// slab from going back: a program that moves on through sizes (buffers that
// grow a little each time, the last 150 kept) kept a medium or large slab
// (512 KiB, 2 MiB) per class it no longer used, until the thread exited.
// And when one thread allocates a class and another frees it (a collector's
// sweeper and the thread it frees for, a consumer) and the sizes move on,
// neither has a slow path of the class again: the allocating thread's
// current slab, emptied by the other's frees, the freeing thread's last
// blocks of it (too few to overflow, so the class never dies there: below)
// and the class exchange's last chains of it each pin a slab (bench/drift -t
// 2, sizes sweeping 500 B-111 KB every 10 ms: a 512 KiB slab for each of its
// 27 medium classes, 45 MB peak against mimalloc's 23).
// So at a slow path of the thread (a refill or an overflow's flush), once
// its refills have taken or its overflows flushed LEFT_LOOK_BYTES since
// the last look, or TLS_IDLE_DELAYS / LEFT_LOOKS purge delays have passed
// (0.5 s by default), a look at every class: one with no slow path since
// and whose list head (no block taken or given, or the same one taken and
// given back) and exchange (its count of chains put and taken) have not
// moved for LEFT_LOOKS looks in a row sends the exchange's chains home and
// gives its list back to its slabs, its current slab to the pool if EMPTY,
// and its partial slabs are trimmed (tcmalloc's thread cache scavenge, with
// the head for its low-water mark: the fast paths count nothing).
// What goes back is dirty FREE memory, which the dirty budget purges: a
// program that comes back to the class soon faults it in again. With looks
// 10 ms apart, bench/drift took 2x its time at 2.6x the page faults and the
// same peak; one look with the exchange's takes for its count was too few
// for a ring of 8 threads of 1-16 KiB (nearly every operation a slow path, a
// look every few hundred: classes went that long untaken by chance, 1.23x
// the time at +8 MB); at four looks bench/drift gave the classes of a
// sweep's top back after the next sweep had begun, over the dirty budget (64
// slabs purged early against 29, 1.2x the time). With two: drift -t 2 27 MB,
// 0.77x the time; drift 22.7 MB, 0.90x. One sweep, then 3 s of small blocks:
// RSS 3.5-12 MB at the end, was 38 (glibc 2.2, mimalloc 2.7, tcmalloc 50).
// A thread in a steady state has few slow paths, so every one reads the clock
// (every eighth or 64th came too rarely to look twice in that program's
// 3 s); `make bench-instr` is the same, 59.1. (The bytes' look and the
// clock's were two looks until the twenty-third session's review: the same
// test on the list head, the clock's with one look and no exchange.)
#define TLS_IDLE_DELAYS 10u

// The looks (noinline: note_slow_path calls them when due).
HAK_NOINLINE void look_idle_classes(tls_cache_t *tc, tiny_heap_t *h, uint64_t now);
HAK_NOINLINE void look_dying_classes(tls_cache_t *tc, tiny_heap_t *h, unsigned busy);
// After an overflow's flush of cls with its bound shrunk: cls is dying when
// its list could hold every block of its current slab still out, or it has
// no current slab.
void note_dying_class(tls_cache_t *tc, tiny_heap_t *h, unsigned cls);
// A refill of cls, given back before (h->left_gone): kept through the next
// looks if it came back soon.
void note_class_back(tiny_heap_t *h, unsigned cls);

// A slow path of cls (a refill asking for, or an overflow's flush of,
// `blocks`): the look at dying classes, and the look at idle ones when due.
// Returns the clock it read (os_now_ms), for the purge look after it.
HAK_INLINE uint64_t note_slow_path(tls_cache_t *tc, tiny_heap_t *h, unsigned cls, uint32_t blocks) {
  if (HAK_UNLIKELY(h->dying != 0)) look_dying_classes(tc, h, cls);
  h->left_touched |= (uint64_t)1 << cls;
  h->left_bytes += (uint64_t)blocks * g_size_class[cls].size;
  uint64_t now = os_now_ms();
  if (h->left_bytes >= LEFT_LOOK_BYTES ||
      now - h->left_look_ms >= (uint64_t)g_hak_config.purge_delay_ms * TLS_IDLE_DELAYS / LEFT_LOOKS)
    look_idle_classes(tc, h, now);
  return now;
}

#endif
