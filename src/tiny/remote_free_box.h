// remote_free_box.h — frees into a slab the caller does not own.
//
// Blocks of another thread's slab (or of an abandoned slab) reach it in
// batches: a thread's TLS list takes any block of its class, and a flush
// gathers the blocks it gives back per destination slab (tiny_refill.c). Each
// gathered chain is pushed onto the slab's remote list with one CAS. The
// owner takes the whole list at once on refill (ss_remote_drain_to_freelist),
// reading each pushed chain's first block (tls_sll_box.h: block_set_chain), or
// for the 16-byte class walking it, at most `capacity` blocks either way, so a
// corrupted list is reported rather than followed forever. The pusher then
// drops the slab's live count; whoever brings it to zero recycles the slab
// (shared_pool_slab_empty). A full slab's
// owner is woken by the first push (tiny_heap_notify_owner).
#ifndef HAK_REMOTE_FREE_BOX_H
#define HAK_REMOTE_FREE_BOX_H

#include "debug/ptr_types.h"
#include "superslab/superslab.h"

// Push first..last (n blocks of slab m, already linked and marked free) onto
// m's remote list.
void remote_free_push_chain(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n);
// Owner only: move the remote list onto the local free list; returns blocks moved.
uint32_t ss_remote_drain_to_freelist(slab_meta_t *m);

#endif
