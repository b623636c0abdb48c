// hardened.h — the hardened build's malloc and free (HAK_HARDENED=1; see
// tiny/hardened_box.h for the block layout, large/page_heap.c for guard pages).
// Their common paths are inline in core/hakmem_fast.h; the rest is here.
#ifndef HAK_CORE_HARDENED_H
#define HAK_CORE_HARDENED_H

#include <stddef.h>

#include "debug/hak_base.h"

#if HAK_HARDENED
// malloc and free themselves are inline (core/hakmem_fast.h): a tiny class's
// TLS pop and arm, and a slab block's free; each way out is one of these,
// called in last place so the common path keeps to registers.
// malloc: the tiny path's miss (an empty or corrupt TLS list): the refill, then arm.
void  *hak_hardened_malloc_refill(size_t size) HAK_NOINLINE;
// malloc's way out of the tiny path when the popped block p of TLS slot
// `slot` fails its checks: its fill changed (reported, then handed out as
// hardened_arm_bad_slot does), or it lies in no SuperSlab (a forged link:
// reported as a corrupted list, which is dropped; going on, a refilled block).
void  *hak_hardened_pop_bad(unsigned slot, void *p, size_t n) HAK_NOINLINE;
// A block of cls from the TLS list (as tls_sll_pop), NULL when the list is
// empty or its block lies in no SuperSlab (reported, the list dropped).
void  *hak_hardened_pop(unsigned cls);
// malloc of HARD_MEDIUM_MIN .. HAK_SLAB_MAX - 1 bytes: a medium class.
void  *hak_hardened_malloc_medium(size_t size) HAK_NOINLINE;
// malloc of 0 bytes -> a pointer into a PROT_NONE reservation; past the slabs
// -> the page heap (guard page after each block) or a huge mapping.
void  *hak_hardened_malloc_other(size_t size) HAK_NOINLINE;
// free of anything but a live slab block: NULL, malloc(0), what the slow path
// reports or frees (bad pointers, double frees, large and huge blocks; the
// page heap protects freed runs).
void   hak_hardened_free_other(void *p) HAK_NOINLINE;
// A sized delete's (size `want`) of what is not a live slab block: the size
// checked as hak_hardened_check_delete does, then hak_hardened_free_other.
void   hak_hardened_delete_other(void *p, size_t want) HAK_NOINLINE;
// A slab block p just handed out for a request of n bytes: check and arm it.
void   hak_hardened_arm(void *p, size_t n);
// The same for the aligned path: an alignment above 16 is kept with the
// request (the size word's tag), for an aligned delete's check.
void   hak_hardened_arm_aligned(void *p, size_t n, size_t alignment);
// realloc of live slab block p (request old) to size: when its block serves
// size as the default build's realloc would keep it (size <= the block's
// largest request, and more than half the block or a block of 64 bytes), its
// canary is checked as a free checks it, then moved to size with the size
// word; returns 1. Else 0: the caller moves it.
int    hak_hardened_realloc_in_place(void *p, size_t old, size_t size);
// Is p a malloc(0) pointer?
int    hak_hardened_is_zero_block(const void *p);
// p (hak_hardened_is_zero_block) is a live malloc(0) block: 1. Else 0,
// reported as `invalid` (an address never handed out) or `freed` (freed
// before). `release`: it is being freed (it is not live after).
int    hak_hardened_zero_block_live(const void *p, const char *invalid, const char *freed, int release);
// The request recorded for a live slab block (its usable size in this build).
size_t hak_hardened_slab_size(const void *p, const char *op);
// Sized / aligned delete: report a size or alignment that does not match the
// block (size 0 / align 0: not given).
void   hak_hardened_check_delete(const void *p, size_t size, size_t align);
// free_aligned_sized's checks: an alignment that is a power of two (C23:
// aligned_alloc's), then those of an aligned sized delete.
void   hak_hardened_check_free_aligned_sized(const void *p, size_t align, size_t size);
// Process exit: check the calling thread's quarantined blocks.
void   hak_hardened_at_exit(void);
// Start-up: reserve the malloc(0) pages, hook faults on guard pages.
void   hak_hardened_init(void);
#endif

#endif
