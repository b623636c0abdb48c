// hardened_box.h — the hardened build's checks on slab blocks (HAK_HARDENED=1;
// nothing here exists in the default build).
//
// A live block of a slab (block_size bs, request n, n <= bs - HARD_TAIL_BYTES)
// is laid out as:
//   [0, n)                       the program's bytes
//   [n, min(n + 16, bs - 4))     canary: HARD_CANARY_BYTES or fewer bytes, each
//                                hard_canary_byte() (never 0: a stray NUL
//                                terminator is the classic one-byte overflow)
//   [bs - 4, bs)                 the request n, xor a per-process key
// so every request is served by the class of n + HARD_TAIL_BYTES (at least one
// canary byte and the size word): malloc_usable_size returns n, realloc copies
// n, sized delete compares with n, and free checks the canary and the size
// word (an overflow of one byte or more past n is caught there).
//
// A free block (on a quarantine, a TLS list, a slab's free or remote list) has
// its link and free mark in its first 16 bytes (tls_sll_box.h) and the fill
// pattern HARD_FILL_BYTE in [16, min(bs, HARD_FILL_MAX)): free writes it (so a
// read after free sees the pattern, not old data), carving writes it into
// fresh blocks, and malloc checks it is intact before handing the block out
// (a write after free is reported then). Only the first HARD_FILL_MAX bytes
// are filled and checked (all of a block up to 64 bytes; the first cache line
// or two of a larger one, where object headers, vtables and list pointers
// live): filling whole blocks made ws-small 2x and ws-medium 5x slower again,
// 128 bytes instead of 64 cost larson about 15% (measured; build with
// -DHARD_FILL_MAX=262144u for whole blocks).
//
// Quarantine (per thread, FIFO; 64 blocks / 128 KiB: a larger one that no
// longer fits in L1/L2 cost larson a third of its speed): a freed block waits, marked free and filled,
// until HARD_QUAR_SLOTS later frees or HARD_QUAR_BYTES of newer blocks push it
// out; its fill is checked then, and it goes on the TLS list where malloc can
// reuse it. The blocks still there at process exit are checked too. A double
// free of a quarantined block finds its free mark. The quarantine is drained
// at thread exit and by hak_thread_flush.
//
// Randomised reuse: a refill shuffles the batch it moves onto the TLS list
// (hardened_shuffle_chain), with a per-thread xorshift generator seeded from
// the process key and the thread.
#ifndef HAK_HARDENED_BOX_H
#define HAK_HARDENED_BOX_H

#include "debug/hak_base.h"

#if HAK_HARDENED
#include "superslab/superslab.h"
#include "tiny/tls_sll_box.h"

#define HARD_SIZE_BYTES   4u                    // the size word at the block's end
#define HARD_TAIL_BYTES   (HARD_SIZE_BYTES + 1u) // room a request needs past its end
#define HARD_CANARY_BYTES 16u                   // canary bytes written and checked, at most
#define HARD_FILL_BYTE    0xdfu                 // the pattern of a free block
#ifndef HARD_FILL_MAX
#define HARD_FILL_MAX     64u                   // bytes of a block filled and checked, at most
#endif
#ifndef HARD_QUAR_SLOTS
#define HARD_QUAR_SLOTS   64u                   // blocks a thread's quarantine holds, at most
#endif
#ifndef HARD_QUAR_BYTES
#define HARD_QUAR_BYTES   (128u << 10)          // ... and their bytes, at most
#endif
#define HARD_LINK_BYTES   16u                   // link word + free mark: not filled

_Static_assert(HAK_SLAB_MAX < (1u << 31), "a slab block's request fits the size word");
_Static_assert(HAK_NUM_CLASSES <= 256, "a quarantine slot keeps its class in a byte");
_Static_assert(HARD_LINK_BYTES == 2 * sizeof(void *), "the free list uses the first two words");

// Fill a free block from byte 16 on (carve, free).
void hardened_fill(hak_base_ptr_t b, uint32_t block_size);
// A block leaves the allocator for a request of n bytes: check its fill
// (report a write after free), then write its canary and size word.
void hardened_arm(uint32_t block_size, void *p, size_t n);
// The request recorded in a live block p of slab m (reported and taken as the
// whole block when the size word is corrupted).
size_t hardened_requested(const slab_meta_t *m, const void *p, const char *op);
// A live block p of slab m is freed by the program: check its canary, fill it
// and put it on the calling thread's quarantine (a LIVE thread), from which the
// oldest block goes to the TLS list.
void hardened_free_block(slab_meta_t *m, void *p);
// Check that no quarantined block of the calling thread was written since its
// free (process exit; each block is checked again when it leaves).
void hardened_quarantine_check(void);
// Send every quarantined block of the calling thread to its TLS lists.
void hardened_quarantine_drain(void);
// Shuffle the chain *first..*last of n blocks (a refill's batch).
void hardened_shuffle_chain(hak_base_ptr_t *first, hak_base_ptr_t *last, uint32_t n);
#endif

#endif
