// remote_free_box.h — frees into a slab the caller does not own.
//
// Blocks of another thread's slab (or of an abandoned slab) reach it in
// batches: a thread's TLS list takes any block of its class, and a flush
// gathers the blocks it gives back per destination slab (tiny_flush.c). Each
// gathered chain is pushed onto the slab's remote list with one CAS, which
// is all a batch costs the freer while the slab's owner keeps it and is not
// waiting to be woken: the list's word counts the blocks (superslab.h,
// REMOTE_COUNT_SHIFT), `used` still counts them, and the owner's test of
// EMPTY takes the word's count out (slab_live). The owner takes the whole
// list at once on refill (ss_remote_drain_to_freelist), reading each pushed
// chain's first block (tls_sll_box.h: block_set_chain), or for the 16-byte
// class walking it, at most `capacity` blocks either way, so a corrupted list
// is reported rather than followed forever.
//
// A slab nobody owns (abandoned: DETACHED, LISTED) and a full slab whose
// owner waits to be woken (notify ARMED) ask for attention (REMOTE_ATTEND in
// the word, read by the push's CAS): the freer then lists the abandoned slab
// or wakes the owner (tiny_heap_notify_owner), and drops `used` by the
// blocks it pushed, which the word does not count; whoever brings it to zero
// recycles the slab (shared_pool_slab_empty). The freer's blocks keep the
// slab from being recycled until that drop; on the CAS alone path nothing of
// the slab is touched after the CAS. (Two atomics a batch before, the CAS
// and a fetch_sub of `used`: cross at 16 threads 52.9 per 1 000 operations
// on slabs' lines, sixty-fifth session.)
//
// A remote list its owner does not take (larson's main thread builds the
// heap its workers then free, and sleeps) holds everything freed into the
// slab since. A pusher that finds an owned slab's list waiting
// REMOTE_STALE_STAMPS or more keeps one block of its chain back, a ticket
// (ticket_box.c flush_hold_ticket): still counted out of the slab, which
// therefore cannot be recycled nor its SuperSlab unmapped while the ticket
// is held. At its next refill of the class it takes a batch of the list
// (ss_remote_take) with the ticket onto its own TLS list, which takes any
// block of its class, and keeps the block after the batch as its next
// ticket. A thread that exits parks its ticket for any thread's refill of
// the class (one a class); a trim sends every ticket home.
#ifndef HAK_REMOTE_FREE_BOX_H
#define HAK_REMOTE_FREE_BOX_H

#include "debug/ptr_types.h"
#include "superslab/superslab.h"

#define REMOTE_STAMP_MS     16u   // slab_meta_t.remote_since's unit
#ifndef REMOTE_STALE_STAMPS
#define REMOTE_STALE_STAMPS 3u    // a list waiting 32-48 ms and more is stale
#endif
HAK_INLINE uint8_t remote_stamp(uint64_t now_ms) { return (uint8_t)(now_ms / REMOTE_STAMP_MS); }
// Has m's remote list waited REMOTE_STALE_STAMPS or more since it last went
// from empty to not (a relaxed look; the list may be taken any time)? The
// stamp wraps every 4 s: a list that waits on reads fresh for 3 stamps in 256.
HAK_INLINE int remote_list_stale(const slab_meta_t *m, uint64_t now_ms) {
  return (uint8_t)(remote_stamp(now_ms) - atomic_load_explicit(&m->remote_since, memory_order_relaxed)) >=
         REMOTE_STALE_STAMPS;
}

// Push first..last (n blocks of slab m, already linked and marked free) onto
// m's remote list.
void remote_free_push_chain(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n);
// Owner only: move the remote list onto the local free list; returns blocks moved.
uint32_t ss_remote_drain_to_freelist(slab_meta_t *m);
// A thread holding a block of m (a ticket) takes up to `max` blocks of m's
// remote list, first..last (linked, marked free, counted out of m again),
// and when more are left the one after them as its next ticket (*next, else
// NULL); the rest goes back on the list, which stays as stale as it was.
// Returns how many it took before *next (0: the list was empty, or
// corrupted: reported, dropped; or max was 0).
uint32_t ss_remote_take(slab_meta_t *m, uint32_t max, hak_base_ptr_t *first, hak_base_ptr_t *last,
                        hak_base_ptr_t *next);

#endif
