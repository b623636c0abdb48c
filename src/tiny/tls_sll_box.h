// tls_sll_box.h — the per-thread freelist of each size class, and the one
// place that reads or writes a free block's words.
//
// head[c] (tc->lists[c].head) is a singly-linked list of free blocks of class
// c, linked through their first word (block_next / block_set_next: every free list of the
// engine — TLS lists, slab free lists, remote lists — goes through them).
// A TLS list ends at TLS_SLL_END (not NULL): a block no list hands out, whose
// link decodes to an implausible value, so the malloc fast path's link check
// also finds the empty list (no NULL test). room[c] (tc->lists[c].room) is
// how many more blocks it may take. Every thread starts with all heads at TLS_SLL_END and all
// rooms 0, so the first malloc misses and the first free overflows: both take
// the slow path, which sets the thread up (tiny_thread.h). Only the owning
// thread touches its lists: no locks, no atomics.
//
// Invariants (tls_sll_validate, debug builds), for a LIVE thread:
//   length(head[c]) + room[c] == cap[c] (tls_cap_for: the class's bound,
//   smaller for small classes when many threads are live)
//   every block on head[c] is a block start of a bound slab of class c and
//   carries its free mark.
// For a thread that is not LIVE: head[c] == TLS_SLL_END and room[c] == 0.
#ifndef HAK_TLS_SLL_BOX_H
#define HAK_TLS_SLL_BOX_H

#include "debug/ptr_types.h"
#include "superslab/size_class.h"
#include "superslab/superslab.h"

// One list: its head, its room and free's owner key of its class on one
// 16-byte unit, so all three are on one cache line (and the lists of
// neighbouring classes share lines).
typedef struct tls_list {
  hak_base_ptr_t head;
  // Blocks the list may take yet; below 0 only on the way to a flush (a
  // full list's failed push, a bound lowered). 32 bits, and every write of
  // it 32 bits wide (malloc's view: tls_cache_t.rooms), so none reaches the key.
  int32_t        room;
  // free's owner test (core/hakmem_fast.h): while the thread is LIVE, its
  // id's low 32 bits for a class below a cache line and 0 for the others (0
  // for all when not LIVE; FREE_BATCH_KEY while batching); compared with the
  // slab's owner_small. Beside the room: the list's offset from the thread
  // pointer finds it (tls_owner_key_at), on the line free writes anyway.
  uint32_t       owner_key;
} tls_list_t;
_Static_assert(sizeof(tls_list_t) == 2 * sizeof(uintptr_t) && offsetof(tls_list_t, room) == sizeof(uintptr_t) &&
                   offsetof(tls_list_t, owner_key) == sizeof(uintptr_t) + sizeof(int32_t),
               "a list is two words: the head, then the room and the owner key");

// The lists start the TLS block. malloc addresses a class's list by its TLS
// slot (size_class_tls_slot: 2 * class, the list's offset in words), from the
// block's TLS offset, with no displacement for the head and 8 bytes for the
// room (12 for the owner key). free addresses it from the thread pointer by the offset the
// slab metadata keeps (tls_off, tls_list_tp_offset): no load of the TLS offset.
typedef struct tls_cache {
  union {
    tls_list_t   lists[HAK_NUM_CLASSES];
    uintptr_t    words[2 * HAK_NUM_CLASSES];   // malloc's view: head words[slot] ...
    int32_t      rooms[4 * HAK_NUM_CLASSES];   // ... and room rooms[2 * slot + 2] (TLS_ROOM_OF_SLOT)
  };
  uintptr_t      self;   // the thread's id (thread_self_id) while LIVE, else 0
  // Slow paths only: this thread's bound of each list (tls_cap_for) and the
  // share it was computed for (tiny_thread.h: tiny_cache_share).
  uint16_t       cap[HAK_NUM_CLASSES];
  uint8_t        cap_share;
  // Medium classes (above 1 KiB) only: the bound is the class's halved
  // cap_shift times (tls_class_cap), once per TLS_SHRINK_STREAK overflows
  // with no refill between them (a thread that frees more of the class than
  // it takes: a consumer), and doubled back at each refill (tiny_refill.c).
  // A new thread starts at TLS_SHRINK_MAX (tiny_thread.c).
  uint8_t        cap_shift[HAK_NUM_CLASSES];
  uint8_t        overflows[HAK_NUM_CLASSES];   // overflows since the last refill
  // Classes to HAK_KIND_MEDIUM_MAX (128 KiB) only (the hardened build's
  // refills then take at most TLS_CACHE_MAX_BLOCKS, its shuffle's array): the
  // bound doubled cap_grow times (tls_class_cap), at each refill that
  // follows overflows whose flushes held none of other threads' blocks (the
  // thread freed a batch of its own blocks past the bound and takes them back:
  // a program building and freeing a structure of many blocks of one size),
  // as often as those overflows' batches need (tiny_refill.c class_grow);
  // back to 0 at an overflow that held other threads' blocks, and at a
  // medium class's shrink (only frees) before its bound halves.
  uint8_t        cap_grow[HAK_NUM_CLASSES];
  uint8_t        local_overflow[HAK_NUM_CLASSES];   // such overflows since the last refill (saturating)
} tls_cache_t;
// The room of the list of TLS slot `slot` in malloc's view (rooms[]).
#define TLS_ROOM_OF_SLOT(slot) (2u * (slot) + 2u)
_Static_assert(offsetof(tls_cache_t, lists) == 0, "the slot of a class is its list's offset in words");

extern HAK_INTERNAL __thread tls_cache_t t_tls_cache __attribute__((tls_model("initial-exec")));

// Every free block (on a TLS list, a slab's free list or its remote list)
// carries a mark in its second word: its address xor a per-process random
// key. malloc clears it; free finds it already there on a double free. A live
// block holds that exact value only by a 2^-64 chance.
//
// Its first word, the link to the next free block, is stored encoded with the
// same key and the block's own address (safe-linking, as glibc since 2.32
// with a secret as mimalloc's secure mode): word = next ^ block ^ key. The key
// has its top bit set, so a plain address written into a freed block (a use
// after free) decodes to a value with high bits set, which no user address
// has: block_link_plausible fails and the list is reported before the value
// is returned or followed. HAK_LINK_ENCODE=0 (make LINK_ENCODE=0) stores
// links raw; it exists only to measure what the encoding costs.
#ifndef HAK_LINK_ENCODE
#define HAK_LINK_ENCODE 1
#endif
// The key, and the bits no decoded link may have (BLOCK_LINK_BAD_BITS), kept
// in memory beside it: malloc's link check tests against the word in one
// instruction (a 64-bit constant would take a 10-byte movabs first), on the
// line it reads the key from.
typedef struct block_keys {
  uintptr_t cookie;
  uintptr_t link_bad_bits;
} block_keys_t;
extern HAK_INTERNAL block_keys_t g_block_keys;
#define g_block_cookie (g_block_keys.cookie)
// Seed the key (process start-up, before any block is marked).
void tls_sll_seed_cookie(uint64_t seed);
// Fill g_class_tls_off (process start-up, before any slab is bound).
void tls_sll_init_offsets(void);

// The forms taking the cookie are for loops that store into fresh blocks: the
// compiler loads g_block_cookie again after every store there (a block could
// alias it), where a copy in a register serves them all.
HAK_INLINE uintptr_t block_free_mark_keyed(hak_base_ptr_t b, uintptr_t cookie) { return (uintptr_t)hak_base_raw(b) ^ cookie; }
HAK_INLINE uintptr_t block_free_mark(hak_base_ptr_t b) { return block_free_mark_keyed(b, g_block_cookie); }
// The mark word of block b (a block start, so the word lies inside it).
HAK_INLINE uintptr_t block_mark(hak_base_ptr_t b) { return ((const uintptr_t *)hak_base_raw(b))[1]; }
HAK_INLINE int block_is_free(hak_base_ptr_t b) { return block_mark(b) == block_free_mark(b); }
HAK_INLINE void block_set_free_keyed(hak_base_ptr_t b, uintptr_t cookie) {
  ((uintptr_t *)hak_base_raw(b))[1] = block_free_mark_keyed(b, cookie);
}
HAK_INLINE void block_set_free(hak_base_ptr_t b) { block_set_free_keyed(b, g_block_cookie); }
HAK_INLINE void block_clear_free(hak_base_ptr_t b) { ((uintptr_t *)hak_base_raw(b))[1] = 0; }

// Bits no decoded link may have: above the 47-bit user address space, and
// below the 16-byte alignment of every block.
#define BLOCK_LINK_BAD_BITS (~(((uintptr_t)1 << 47) - 1) | (uintptr_t)15)

HAK_INLINE uintptr_t block_link_key_keyed(hak_base_ptr_t b, uintptr_t cookie) {
  return HAK_LINK_ENCODE ? (uintptr_t)hak_base_raw(b) ^ cookie : 0;
}
HAK_INLINE uintptr_t block_link_key(hak_base_ptr_t b) { return block_link_key_keyed(b, g_block_cookie); }
// The next block as stored (no check): for lists the caller just built.
// The key (block ^ cookie) is formed before the load and the load xored into
// it (`xor (%rax),%rdx`): a walk or a pop then waits for the load and one
// xor, not two (GCC otherwise xors the block in after the load); the empty
// asm only fixes that order, the instructions are as many (and is left out
// of the HAK_LINK_ENCODE=0 build, whose key is 0).
HAK_INLINE hak_base_ptr_t block_next(hak_base_ptr_t b) {
  uintptr_t key = block_link_key(b);
  if (HAK_LINK_ENCODE) __asm__("" : "+r"(key));
  return hak_base_from_raw((void *)(*(const uintptr_t *)hak_base_raw(b) ^ key));
}
HAK_INLINE void block_set_next_keyed(hak_base_ptr_t b, hak_base_ptr_t next, uintptr_t cookie) {
  *(uintptr_t *)hak_base_raw(b) = (uintptr_t)hak_base_raw(next) ^ block_link_key_keyed(b, cookie);
}
HAK_INLINE void block_set_next(hak_base_ptr_t b, hak_base_ptr_t next) { block_set_next_keyed(b, next, g_block_cookie); }
// A chain of free blocks on a slab's free list or remote list (a run of one
// slab's blocks given back together: an overflow's flush, a remote push, a
// drain) carries a record of its last block, its length and the first block
// of the chain after it (the last block's link), encoded with the first
// block's key as links are. A refill then takes a whole chain, and a drain a
// whole remote list, reading one block per chain: walking every link waits
// for one cache miss after another (mstress, blocks freed by an exited
// thread's round: 93% of the refill's samples on the link's load).
// Blocks of 32 bytes or more keep it in their words 2 and 3. A 16-byte block
// has two words, its link and its free mark, so a chain of two or more keeps
// it in its first block's link word instead, packed as block indices in the
// slab (BLOCK_CHAIN16_*: the second block, the last, the next chain, and the
// length), with bit 0 set, which no link has; a chain of one block is its
// plain link. Whoever takes such a chain off the slab's list writes the
// first block's link back (block_chain_release) before it joins any other
// list. Every class has them, but not in the hardened build, whose free
// blocks carry its fill pattern there.
#define BLOCK_CHAIN_RECORDS (!HAK_HARDENED)
// The length sits above the 47-bit address of the last block.
#define BLOCK_CHAIN_LEN_SHIFT 48
_Static_assert(BLOCK_CHAIN_LEN_SHIFT >= 47 && 64 - BLOCK_CHAIN_LEN_SHIFT >= 16, "a slab's capacity (16 bits) fits");
// The 16-byte class's packed record: four 13-bit fields above the flag bit.
#define BLOCK_CHAIN16_SIZE  16u
#define BLOCK_CHAIN16_BITS  13u
#define BLOCK_CHAIN16_MASK  (((uintptr_t)1 << BLOCK_CHAIN16_BITS) - 1)
#define BLOCK_CHAIN16_NONE  BLOCK_CHAIN16_MASK       // the next chain's index at the list's end
#define BLOCK_CHAIN16_USED  (1u + 4u * BLOCK_CHAIN16_BITS)   // bits above these are 0
// The 16-byte class is in the small kind's 64 KiB slabs (superslab.c: g_kind_slab_shift).
_Static_assert((1u << 16) / BLOCK_CHAIN16_SIZE < BLOCK_CHAIN16_NONE, "a 16-byte slab's block indices fit");
typedef struct block_chain_info {
  hak_base_ptr_t last, next;   // next: NULL at the list's end
  hak_base_ptr_t second;       // the chain's second block (n >= 2)
  uint32_t       n;
} block_chain_info_t;
// Does m's class keep its chain records packed in the first block's link word?
HAK_INLINE int block_chain_packed(const slab_meta_t *m) { return m->block_size == BLOCK_CHAIN16_SIZE; }
HAK_INLINE uintptr_t block_chain16_index(const slab_meta_t *m, hak_base_ptr_t b) {
  return hak_base_is_null(b) ? BLOCK_CHAIN16_NONE : (uintptr_t)((char *)hak_base_raw(b) - m->base) / BLOCK_CHAIN16_SIZE;
}
HAK_INLINE hak_base_ptr_t block_chain16_block(const slab_meta_t *m, uintptr_t index) {
  return index == BLOCK_CHAIN16_NONE ? HAK_BASE_NULL : hak_base_from_raw(m->base + index * BLOCK_CHAIN16_SIZE);
}
// Record first..last (n blocks of m, linked, the last linked to next) as a chain.
HAK_INLINE void block_set_chain(const slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n,
                                hak_base_ptr_t next) {
  uintptr_t *w = (uintptr_t *)hak_base_raw(first), key = block_link_key(first);
  if (!block_chain_packed(m)) {
    w[2] = ((uintptr_t)hak_base_raw(last) | (uintptr_t)n << BLOCK_CHAIN_LEN_SHIFT) ^ key;
    w[3] = (uintptr_t)hak_base_raw(next) ^ key;
    return;
  }
  if (n < 2) return;                 // one block: its link is the next chain
  uintptr_t w0 = (uintptr_t)hak_base_raw(block_next(first)), second;   // a link, or the record (bit 0)
  if (w0 & 1u) second = w0 >> 1 & BLOCK_CHAIN16_MASK;    // recorded already (a drain, a retried push)
  else second = block_chain16_index(m, hak_base_from_raw((void *)w0));
  w[0] = (1u | second << 1 | block_chain16_index(m, last) << (1u + BLOCK_CHAIN16_BITS) |
          block_chain16_index(m, next) << (1u + 2u * BLOCK_CHAIN16_BITS) |
          (uintptr_t)n << (1u + 3u * BLOCK_CHAIN16_BITS)) ^ key;
}
// As stored (the caller checks it against its slab: slab_chain_plausible).
HAK_INLINE block_chain_info_t block_chain(const slab_meta_t *m, hak_base_ptr_t first) {
  const uintptr_t *w = (const uintptr_t *)hak_base_raw(first);
  uintptr_t key = block_link_key(first), w0 = (uintptr_t)hak_base_raw(block_next(first));
  block_chain_info_t ci;
  if (!block_chain_packed(m)) {
    uintptr_t lw = w[2] ^ key;
    ci.last = hak_base_from_raw((void *)(lw & (((uintptr_t)1 << BLOCK_CHAIN_LEN_SHIFT) - 1)));
    ci.next = hak_base_from_raw((void *)(w[3] ^ key));
    ci.second = hak_base_from_raw((void *)w0);
    ci.n = (uint32_t)(lw >> BLOCK_CHAIN_LEN_SHIFT);
  } else if (w0 & 1u) {
    ci.second = block_chain16_block(m, w0 >> 1 & BLOCK_CHAIN16_MASK);
    ci.last = block_chain16_block(m, w0 >> (1u + BLOCK_CHAIN16_BITS) & BLOCK_CHAIN16_MASK);
    ci.next = block_chain16_block(m, w0 >> (1u + 2u * BLOCK_CHAIN16_BITS) & BLOCK_CHAIN16_MASK);
    // Bits above the record make the length implausible.
    ci.n = w0 >> BLOCK_CHAIN16_USED ? 0u : (uint32_t)(w0 >> (1u + 3u * BLOCK_CHAIN16_BITS));
  } else {                           // a chain of one block
    ci.last = first;
    ci.next = hak_base_from_raw((void *)w0);
    ci.second = HAK_BASE_NULL;
    ci.n = 1;
  }
  return ci;
}
// first's chain (ci) leaves the slab's list whole or in part: a 16-byte
// chain's first block gets its link back (its record would read as a
// corrupted link anywhere else).
HAK_INLINE void block_chain_release(const slab_meta_t *m, hak_base_ptr_t first, block_chain_info_t ci) {
  if (block_chain_packed(m) && ci.n >= 2) block_set_next(first, ci.second);
}
// Could ci be a chain of slab m: 1 to capacity blocks, its last block and the
// next chain's first (or NULL) block starts of m below its carve point (and
// its second block, for a 16-byte chain of two or more)?
HAK_INLINE int slab_chain_plausible(const slab_meta_t *m, block_chain_info_t ci) {
  return ci.n - 1u < m->capacity && slab_block_start(m, hak_base_raw(ci.last)) &&
         (hak_base_is_null(ci.next) || slab_block_start(m, hak_base_raw(ci.next))) &&
         (!block_chain_packed(m) || ci.n < 2 || slab_block_start(m, hak_base_raw(ci.second)));
}

// Could `next` be a link the allocator wrote (NULL or a block address)?
// On x86-64 one `test` of the register against the word in memory (a
// one-line asm: GCC loads the word into a register and ands it first).
HAK_INLINE int block_link_plausible(hak_base_ptr_t next) {
#if defined(__x86_64__) && !HAK_SANITIZED
  int plausible;
  __asm__("testq %2, %1" : "=@ccz"(plausible) : "r"((uintptr_t)hak_base_raw(next)), "m"(g_block_keys.link_bad_bits));
  return plausible;
#else
  return ((uintptr_t)hak_base_raw(next) & g_block_keys.link_bad_bits) == 0;
#endif
}

// The end of every TLS list (tls_sll_box.c): two words, the link 0 (1 when
// links are stored raw). 0 decodes to its own address xor the key, whose top
// bit is set: never plausible. Read, never written.
extern HAK_INTERNAL const uintptr_t g_tls_sll_end[2];
#define TLS_SLL_END hak_base_from_raw((void *)g_tls_sll_end)
HAK_INLINE int tls_sll_is_end(hak_base_ptr_t b) { return hak_base_raw(b) == (const void *)g_tls_sll_end; }
HAK_INLINE int tls_sll_empty(const tls_cache_t *tc, unsigned cls) { return tls_sll_is_end(tc->lists[cls].head); }

// What the last block of slab m's free list links to: TLS_SLL_END where chain
// records keep the chains (each chain's record, not the links, says where the
// next chain is and where the list ends: NULL), so a refill can make a whole
// list an empty TLS list as it lies (tiny_refill.c slab_take_whole); NULL for
// the 16-byte class, whose one-block chains keep the next chain in their
// link, and in the hardened build (no records).
HAK_INLINE hak_base_ptr_t slab_list_end(const slab_meta_t *m) {
  return BLOCK_CHAIN_RECORDS && !block_chain_packed(m) ? TLS_SLL_END : HAK_BASE_NULL;
}
// Push first..last (n blocks of m, linked) on m's free list: the last block
// links to the list's first, or to its end; free_n counts them. (A chain
// record, written by the caller, names the old head: hak_base_from_raw(m->freelist)
// before this call.)
// slab_list_push_onto: the same with m's list as the caller read it before
// writing the chain's blocks (head: m->freelist, had: slab_free_count), which
// the compiler cannot tell from m and would load again.
HAK_INLINE void slab_list_push_onto(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n,
                                    void *head, uint32_t had) {
  block_set_next(last, head != NULL ? hak_base_from_raw(head) : slab_list_end(m));
  m->free_n = (uint16_t)(had + n);
  m->freelist = hak_base_raw(first);
}
HAK_INLINE void slab_list_push(slab_meta_t *m, hak_base_ptr_t first, hak_base_ptr_t last, uint32_t n) {
  slab_list_push_onto(m, first, last, n, m->freelist, slab_free_count(m));
}
// Is b where a walk of a slab's free list by its links stops?
HAK_INLINE int slab_list_is_end(hak_base_ptr_t b) { return hak_base_is_null(b) || tls_sll_is_end(b); }

// Could `next` be a link in a free list of slab m: NULL, or an address in the
// part of m that has been handed out (a range check: nothing is read there)?
#define block_link_in_slab(m, next)                                                          \
  (hak_base_is_null(next) || ((char *)hak_base_raw(next) >= (m)->base &&                      \
                              (char *)hak_base_raw(next) < slab_carve(m)))

// Report a corrupted link in a free list of class cls at block b, and abort
// (HAKMEM_ABORT_ON_ERROR=1, the default).
void tls_sll_report_corrupt(hak_base_ptr_t b, unsigned cls) __attribute__((cold));
// The TLS list of cls has a corrupted link at its head block b: reported;
// when the program goes on, the rest of the list is dropped (leaked) and b,
// itself a proper free block, is handed out.
hak_base_ptr_t tls_sll_pop_corrupt(tls_cache_t *tc, unsigned cls, hak_base_ptr_t b) __attribute__((noinline, cold));

// TLS slot of a request of n <= HAK_TINY_MAX bytes (g_tiny_class_lut times 2).
extern HAK_INTERNAL const uint8_t g_tls_slot_lut[HAK_TINY_MAX + 1];
HAK_INLINE unsigned tls_slot_of_size(size_t n) { return g_tls_slot_lut[n]; }
// The list of a request of n <= HAK_TINY_MAX bytes as its offset from the
// thread pointer (the same in every thread), filled at start-up
// (tls_sll_init_offsets): the default build's malloc finds its list with one
// load and no TLS offset from the GOT. Until then every entry is 0, the
// thread control block, whose first word is its own address (x86-64's TLS
// ABI: %fs:0 holds the thread pointer): the pop reads it as a list head
// whose link decodes to the cookie, never a plausible link (its top bit is
// set), and takes the slow path. (Elsewhere an entry of 0 is tested for.)
// (The size table was in the TLS block, a per-thread copy addressed from the
// lists' TLS offset: 1 025 of its 2 621 bytes. glibc copies a library's TLS
// block into every new thread's stack, and past the 1 728 bytes below the
// thread pointer in the stack's top page the creating thread faults the page
// below too: `churn -c 16 -k 16 --default-stack`, fresh stacks, 0.91-0.93x
// glibc's time with the TLS at 2.6 KB; see CURRENT_TASK Known gaps 53.)
extern HAK_INTERNAL int32_t g_size_list_tpoff[HAK_TINY_MAX + 1];

// free's addressing: the list at a constant offset from the thread pointer
// (the TLS block of an initial-exec variable is at the same offset in every
// thread). On x86-64 (HAK_TLS_SEG_FS, debug/hak_base.h) the list is a
// %fs-relative operand, so free reads neither the thread pointer nor the TLS
// offset from the GOT.
#if HAK_TLS_SEG_FS
typedef __seg_fs tls_list_t tls_list_tp_t;
typedef __seg_fs const char tls_bytes_tp_t;
typedef __seg_fs const uint32_t tls_u32_tp_t;
HAK_INLINE tls_list_tp_t *tls_list_at_tp(int32_t off) { return (tls_list_tp_t *)(intptr_t)off; }
#else
typedef tls_list_t tls_list_tp_t;
typedef const char tls_bytes_tp_t;
typedef const uint32_t tls_u32_tp_t;
HAK_INLINE tls_list_tp_t *tls_list_at_tp(int32_t off) { return (tls_list_tp_t *)(hak_thread_pointer() + off); }
#endif
// The owner key of the class whose list l is (tls_list_t.owner_key).
HAK_INLINE uint32_t tls_owner_key_at(tls_list_tp_t *l) {
  return *(tls_u32_tp_t *)((tls_bytes_tp_t *)l + offsetof(tls_list_t, owner_key));
}
// The offset of cls's list from the thread pointer (the same in every thread):
// kept in the slab metadata of a slab bound to cls (tls_off).
HAK_INLINE int32_t tls_list_tp_offset(unsigned cls) {
  return (int32_t)((intptr_t)&t_tls_cache.lists[cls] - (intptr_t)hak_thread_pointer());
}

// The malloc fast path's pop: NULL when the list is empty (the end's link is
// implausible) or its head's link is corrupted (the slow path's tls_sll_pop
// then reports it).
// It takes a TLS slot (size_class_tls_slot).
//
// On x86-64 the head is pinned to the return register (an empty asm with an
// "a" constraint: no instruction): GCC otherwise puts the TLS offset there
// first and ends malloc with a register move (16 -> 15 instructions).
#if defined(__x86_64__)
#define TLS_SLL_IN_RETURN_REGISTER(raw) __asm__("" : "+a"(raw))
#else
#define TLS_SLL_IN_RETURN_REGISTER(raw) ((void)0)
#endif
// Can a pop follow the head's link `next`? Not when it is implausible (the
// list's end, or corrupted: the slow path tells which). A TLS list ends at
// TLS_SLL_END, never NULL; the hardened build's quarantine leaves a NULL link
// in every block it holds, so a block freed twice with its mark cleared in
// between (a write after free) is on a TLS list with that link, and the next
// pop would follow it. The default build writes a NULL link nowhere on a TLS
// list's way (one test more per malloc).
HAK_INLINE int tls_sll_pop_link_ok(hak_base_ptr_t next) {
  return block_link_plausible(next) && !(HAK_HARDENED && hak_base_is_null(next));
}
// The pop from the list at thread-pointer offset l (tls_list_of_size:
// malloc's tiny path); tls_sll_pop_fast below is the same by TLS slot.
HAK_INLINE hak_base_ptr_t tls_sll_pop_at(tls_list_tp_t *l) {
  void *raw = hak_base_raw(l->head);
  TLS_SLL_IN_RETURN_REGISTER(raw);
  hak_base_ptr_t b = hak_base_from_raw(raw);
  hak_base_ptr_t next = block_next(b);
  if (HAK_UNLIKELY(!tls_sll_pop_link_ok(next))) return HAK_BASE_NULL;
  l->head = next;
  l->room++;
  block_clear_free(b);
  return b;
}
#if defined(__x86_64__)
HAK_INLINE tls_list_tp_t *tls_list_of_size(size_t n) { return tls_list_at_tp(g_size_list_tpoff[n]); }
#else
extern HAK_INTERNAL tls_list_t g_tls_list_unset;   // an empty list: the entries not filled yet
HAK_INLINE tls_list_tp_t *tls_list_of_size(size_t n) {
  int32_t off = g_size_list_tpoff[n];
  return HAK_LIKELY(off != 0) ? tls_list_at_tp(off) : (tls_list_tp_t *)&g_tls_list_unset;
}
#endif
HAK_INLINE hak_base_ptr_t tls_sll_pop_fast(tls_cache_t *tc, uintptr_t slot) {
  void *raw = (void *)tc->words[slot];
  TLS_SLL_IN_RETURN_REGISTER(raw);
  hak_base_ptr_t b = hak_base_from_raw(raw);
  hak_base_ptr_t next = block_next(b);
  if (HAK_UNLIKELY(!tls_sll_pop_link_ok(next))) return HAK_BASE_NULL;
  tc->words[slot] = (uintptr_t)hak_base_raw(next);
  tc->rooms[TLS_ROOM_OF_SLOT(slot)]++;
  block_clear_free(b);
  return b;
}

// NULL when the list is empty: the caller takes the refill path.
HAK_INLINE hak_base_ptr_t tls_sll_pop(tls_cache_t *tc, unsigned cls) {
  hak_base_ptr_t b = tls_sll_pop_fast(tc, size_class_tls_slot(cls));
  if (HAK_UNLIKELY(hak_base_is_null(b)) && !tls_sll_empty(tc, cls))
    return tls_sll_pop_corrupt(tc, cls, tc->lists[cls].head);
  return b;
}

// The free fast path's push, on the list at a thread-pointer offset (the
// slab's tls_off). 0 when the list is full (or the thread is not set up): the
// room is decremented in memory and sign-tested, and a full list is left with
// its room at -1 (putting it back would cost the fast path an instruction:
// the address of the room, kept for the store). The caller's slow path, taken
// right after, calls tls_sll_room_settle before anything else reads the room.
_Static_assert(TLS_GROWN_MAX_BLOCKS <= INT32_MAX, "a room is an int32_t");
HAK_INLINE int tls_sll_push_fast(tls_list_tp_t *l, hak_base_ptr_t b) {
  uintptr_t mark = block_free_mark(b);   // before the store to l, which GCC cannot tell from g_block_cookie
  l->room--;
  if (HAK_UNLIKELY(l->room < 0)) return 0;
  ((uintptr_t *)hak_base_raw(b))[1] = mark;
  block_set_next(b, l->head);
  l->head = b;
  return 1;
}
HAK_INLINE void tls_sll_room_settle(tls_cache_t *tc, unsigned cls) {
  if (HAK_UNLIKELY(tc->lists[cls].room < 0)) tc->lists[cls].room = 0;
}
// The same by class (tc is the calling thread's t_tls_cache), the room put
// back at once: 0 when the list is full (the caller flushes a batch back to
// the slabs).
HAK_INLINE int tls_sll_push(tls_cache_t *tc, unsigned cls, hak_base_ptr_t b) {
  HAK_ASSERT(tc == &t_tls_cache);
  if (HAK_LIKELY(tls_sll_push_fast(tls_list_at_tp(tls_list_tp_offset(cls)), b))) return 1;
  tls_sll_room_settle(tc, cls);
  return 0;
}

// Splice a chain first..last of n blocks, already marked free, onto the list
// (n <= room).
HAK_INLINE void tls_sll_push_chain(tls_cache_t *tc, unsigned cls, hak_base_ptr_t first, hak_base_ptr_t last,
                                   uint32_t n) {
  block_set_next(last, tc->lists[cls].head);
  tc->lists[cls].head = first;
  tc->lists[cls].room -= (int32_t)n;
}
// A slab's whole free list, first and n blocks more, its last block linked to
// TLS_SLL_END (slab_list_end), as cls's list, which is empty.
HAK_INLINE void tls_sll_adopt_list(tls_cache_t *tc, unsigned cls, hak_base_ptr_t first, uint32_t n) {
  HAK_ASSERT(tls_sll_empty(tc, cls));
  tc->lists[cls].head = first;
  tc->lists[cls].room -= (int32_t)n;
}

// The bound of a list of cls for a thread holding 1/2^share of the small
// classes' budget (tiny_thread.h says when): classes above 1 KiB keep theirs.
HAK_INLINE uint16_t tls_cap_for(unsigned cls, unsigned share) {
  uint32_t cap = g_size_class[cls].tls_cap;
  if (g_size_class[cls].size > HAK_TINY_MAX) return (uint16_t)cap;
  cap >>= share;
  return (uint16_t)(cap < TLS_CACHE_MIN_BLOCKS ? TLS_CACHE_MIN_BLOCKS : cap);
}
// This thread's bound of cls: tls_cap_for its share, halved cap_shift times,
// doubled cap_grow times (within tls_grown_bytes_of its block size and
// TLS_GROWN_MAX_BLOCKS).
HAK_INLINE uint16_t tls_class_cap(const tls_cache_t *tc, unsigned cls, unsigned share) {
  uint32_t cap = (uint32_t)tls_cap_for(cls, share) >> tc->cap_shift[cls];
  if (tc->cap_grow[cls] != 0) {
    uint32_t size = g_size_class[cls].size;
    uint32_t most = tls_grown_bytes_of(size) / size;
    if (most > TLS_GROWN_MAX_BLOCKS) most = TLS_GROWN_MAX_BLOCKS;
    uint32_t grown = cap << tc->cap_grow[cls];
    cap = grown > most ? (most > cap ? most : cap) : grown;
  }
  return (uint16_t)(cap < TLS_CACHE_MIN_BLOCKS ? TLS_CACHE_MIN_BLOCKS : cap);
}
_Static_assert(TLS_GROWN_MAX_BLOCKS <= UINT16_MAX, "a grown bound fits the cap's 16 bits");
// Set this thread's bound of cls, keeping length + room == bound: the room
// goes negative when the list is over the new bound (the caller flushes).
HAK_INLINE void tls_set_cap(tls_cache_t *tc, unsigned cls, uint16_t cap) {
  tc->lists[cls].room += (int32_t)cap - (int32_t)tc->cap[cls];
  tc->cap[cls] = cap;
}
// A LIVE thread's owner key of class c when it is not batching its frees
// (free_batch_box.h): its id's low 32 bits for a class under a cache line, else 0.
HAK_INLINE uint32_t tls_owner_key_of_class(const tls_cache_t *tc, unsigned c) {
  return g_size_class[c].size < HAK_SEND_HOME_BELOW ? (uint32_t)tc->self : 0u;
}
// Blocks a refill or an overflow's flush moves: half the bound.
HAK_INLINE uint32_t tls_batch(const tls_cache_t *tc, unsigned cls) { return tc->cap[cls] / 2u; }
// Blocks on the list of cls (a LIVE thread).
HAK_INLINE uint32_t tls_cached(const tls_cache_t *tc, unsigned cls) {
  return tc->lists[cls].room < (int32_t)tc->cap[cls] ? tc->cap[cls] - (uint32_t)tc->lists[cls].room : 0;
}

// Report a double free of b (a block of class cls, block_size bytes) and abort.
void tls_sll_report_double_free(hak_base_ptr_t b, unsigned cls, uint32_t block_size) __attribute__((cold));

#if HAK_DEBUG
// Check the calling thread's list of cls against the invariants above.
void tls_sll_validate(unsigned cls);
#endif

#endif
