// hardened.h — the hardened build's malloc and free (HAK_HARDENED=1; see
// tiny/hardened_box.h for the block layout, large/page_heap.c for guard pages).
// hakmem_fast.h routes the malloc/free fast paths here in that build.
#ifndef HAK_CORE_HARDENED_H
#define HAK_CORE_HARDENED_H

#include <stddef.h>

#include "debug/hak_base.h"

#if HAK_HARDENED
// malloc: 0 bytes -> a pointer into a PROT_NONE reservation; a slab block ->
// its fill checked, canary and size written; larger -> the page heap (guard
// page after each block) or a huge mapping.
void  *hak_hardened_malloc(size_t size) HAK_NOINLINE;
// free: the canary checked, the block filled and quarantined (slab blocks);
// the rest as the default build does (the page heap protects freed runs).
void   hak_hardened_free(void *p) HAK_NOINLINE;
// A slab block p just handed out for a request of n bytes: check and arm it.
void   hak_hardened_arm(void *p, size_t n);
// realloc of live slab block p (request old) to size: when its block serves
// size as the default build's realloc would keep it (size <= the block's
// largest request, and more than half the block or a block of 64 bytes), its
// canary is checked as a free checks it, then moved to size with the size
// word; returns 1. Else 0: the caller moves it.
int    hak_hardened_realloc_in_place(void *p, size_t old, size_t size);
// Is p a malloc(0) pointer?
int    hak_hardened_is_zero_block(const void *p);
// The request recorded for a live slab block (its usable size in this build).
size_t hak_hardened_slab_size(const void *p, const char *op);
// Sized / aligned delete: report a size or alignment that does not match the
// block (size 0 / align 0: not given).
void   hak_hardened_check_delete(const void *p, size_t size, size_t align);
// Process exit: check the calling thread's quarantined blocks.
void   hak_hardened_at_exit(void);
// Start-up: reserve the malloc(0) pages, hook faults on guard pages.
void   hak_hardened_init(void);
#endif

#endif
