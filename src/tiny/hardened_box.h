// hardened_box.h — the hardened build's checks on slab blocks (HAK_HARDENED=1;
// nothing here exists in the default build).
//
// A live block of a slab (block_size bs, request n, n <= hard_request_max(bs))
// is laid out as:
//   [0, n)                       the program's bytes
//   [n, n + 12)                  canary: 12 bytes or more, each the canary
//                                byte (never 0: a stray NUL terminator is
//                                the classic one-byte overflow); in a tiny
//                                block [n, min(n + 16, bs - 4)), 12 to 16
//                                bytes, in a medium one [n, min(n + 16, bs)),
//                                1 to 16 (hard_canary_start)
//   [bs - 4, bs)                 tiny classes (bs <= 1 KiB): the size word,
//                                the request n xor a per-process key
// A block of a larger class keeps its size word in its slab's size table
// instead: one 32-bit word per block after the slab's last block (such a slab
// holds bytes / (bs + 4) blocks in this build; hard_size_slot). At a medium
// block's end it was a cache line, often a page, that nothing else touched:
// ws-medium took 1.96x the default's time with it there, 1.84x with the
// table; a tiny block's end is near its start and its canary, and a table for
// every class (the slab lookup it needs in malloc) cost ws-small and ws-tiny
// more than it saved (1.81x -> 1.89x, 1.84x -> 1.96x; task-clock, 7 or 9
// interleaved runs).
// So every request is served by the class of n + HARD_TAIL_BYTES (16: 12
// canary bytes and the size word always fit, so malloc writes the canary's
// 16-byte window at n and then the size word, which may cover its last 4,
// and free compares the window's first 12 bytes, with no bound to compute;
// every block is 32 bytes or more; with 20, mstress's requests of 16, 32, 64
// and 128 bytes took 48, 64, 96 and 160, 1.61x the default's bytes, now
// 1.42x: `mstress -t 8 -n 10000 -r 20` 25.1 -> 23.4 MB, 1.545 -> 1.474x the
// default's time, make bench-instr +0.5-1 instruction per pair, the `and`),
// or above the tiny classes of n + HARD_TAIL_MEDIUM (1: a canary byte, no
// size word at the end; with 20, ws-medium's peak RSS was 48.5 MB, 1.30x the
// default's, 47.2 with 16, 39.2 with 1: see hard_canary_start):
// malloc_usable_size returns n, realloc keeps the block when it serves the
// new request (by the default build's rule; the canary and size word move)
// and otherwise copies n, sized delete compares with n,
// and free checks the canary and the size word (an overflow of one byte or
// more past n is caught there).
//
// No check branches on the request or the block size: the canary is two
// words at n, the fill seven 16-byte pieces at offsets clamped to the block
// (read from the class's g_hard_class entry on the hot paths). With a 5-byte
// tail the canary took 1 to 16 bytes and the fill 2 to 6 words, and the
// branches on those, taken at random with random sizes, cost ws-tiny 1.25
// mispredictions per operation (cachegrind --branch-sim) on top of 2x the
// default's instructions. With a 16-byte tail whose canary free compared to
// its bound min(n + 16, bs - 4): 8 instructions per pair more than a fixed
// window (the fixed 12 bytes now; the slow paths compare to the bound).
//
// A free block (on a quarantine, a TLS list, a slab's free or remote list) has
// its link and free mark in its first 16 bytes (tls_sll_box.h) and the fill
// pattern HARD_FILL_BYTE in [16, hard_fill_end(bs)): free writes it (so a
// read after free sees the pattern, not old data), carving writes it into
// fresh blocks, and malloc checks it is intact before handing the block out
// (a write after free is reported then). Only the first HARD_FILL_MAX bytes
// at most are filled and checked (all of a block up to 128 bytes; the first
// two cache lines of a larger one, where object headers, vtables and list
// pointers live, or the first line of a tiny block above 256 bytes: see
// HARD_FILL_TWO_MAX): filling whole blocks made ws-small 2x and ws-medium 5x
// slower again.
// 64 bytes were the fill until an independent misuse program wrote byte 65
// of a freed 128-byte request and another byte 100 of a freed 32 KiB one,
// unseen (build with -DHARD_FILL_MAX=262144u for whole blocks).
//
// Quarantine (per thread, FIFO, two rings: 64 blocks of the tiny classes, and
// 64 larger blocks / 2 MiB; more blocks, no longer in L1/L2, cost larson a
// third of its speed; the byte bound only matters for medium blocks, and at
// 128 KiB, ~8 of ws-medium's 1-32 KiB blocks, nearly every free there evicted
// past it: 13% of its hardened instructions, 169.8 -> 151.9 per operation with
// 2 MiB, peak RSS 44.8 -> 45.3 MB at -n 2M, the default's 36.8): a freed block
// waits, marked free and filled, until HARD_QUAR_SLOTS later frees into its
// ring or HARD_QUAR_BYTES of newer medium blocks push it out; its fill is
// checked then, and it goes on the TLS list where malloc can reuse it. The
// blocks still there at process exit are checked too. A double free of a
// quarantined block finds its free mark. The quarantine is drained
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
#include "superslab/ss_registry.h"
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "tiny/tiny_thread.h"
#include "tiny/tls_sll_box.h"

#define HARD_SIZE_BYTES   4u                    // the size word: a tiny block's end, else its slab's size table
#define HARD_CANARY_BYTES 16u                   // the canary's window: bytes written (and read) at once
#define HARD_CANARY_TINY  12u                   // canary bytes a tiny block always has, and free checks
#define HARD_TAIL_BYTES   (HARD_CANARY_TINY + HARD_SIZE_BYTES)    // room a request needs past its end, tiny
#define HARD_TAIL_MEDIUM  1u                    // ... in a larger block: a canary byte (its size word is in its slab's table)
#define HARD_FILL_BYTE    0xdfu                 // the pattern of a free block
#ifndef HARD_FILL_MAX
#define HARD_FILL_MAX     128u                  // bytes of a block filled and checked, at most
#endif
#ifndef HARD_QUAR_SLOTS
#define HARD_QUAR_SLOTS   64u                   // blocks a thread's quarantine holds, at most
#endif
#ifndef HARD_QUAR_BYTES
#define HARD_QUAR_BYTES   (2u << 20)            // ... and their bytes, at most (64 blocks of 32 KiB)
#endif
#define HARD_LINK_BYTES   16u                   // link word + free mark: not filled
#define HARD_CACHE_LINE   64u                   // another thread's smaller blocks go home (HARD_QUAR_REMOTE)

_Static_assert(HAK_SLAB_MAX < (1u << 31), "a slab block's request fits the size word");
_Static_assert(HAK_NUM_CLASSES <= 256, "a quarantine slot keeps its class in a byte");
_Static_assert(HARD_LINK_BYTES == 2 * sizeof(void *), "the free list uses the first two words");

#define HARD_FILL_WORD    0xdfdfdfdfdfdfdfdfull // eight fill bytes: stored and compared a word at a time

HAK_INLINE uint64_t hard_load64(const void *p) { uint64_t w; memcpy(&w, p, sizeof w); return w; }
HAK_INLINE void hard_store64(void *p, uint64_t w) { memcpy(p, &w, sizeof w); }
HAK_INLINE uint32_t hard_load32(const void *p) { uint32_t w; memcpy(&w, p, sizeof w); return w; }
HAK_INLINE void hard_store32(void *p, uint32_t w) { memcpy(p, &w, sizeof w); }

// The canary byte (never 0: a stray NUL terminator is the classic one-byte
// overflow) repeated eight times, and the size word's key: from the process key.
// Kept apart from the cookie, so a use is one load (no shift; the canary's 16
// bytes one aligned vector for malloc's store).
typedef struct __attribute__((aligned(16))) hard_keys {
  uint64_t canary[2];               // the canary word, twice
  uint32_t size_key;                // random bits of their own (hardened_box_init)
} hard_keys_t;
extern HAK_INTERNAL hard_keys_t g_hard_keys;   // set by hardened_box_init
// The canary byte of a process key: odd (never 0) and never the free fill's
// byte, or a live block's canary inside bytes 16-63 read as an intact fill (a
// process in 128 took a calloc'd 8-byte block for one freed before).
uint8_t hard_canary_byte_of(uint64_t cookie);
HAK_INLINE uint64_t hard_canary_word(void) { return g_hard_keys.canary[0]; }
HAK_INLINE uint32_t hard_size_key(void) { return g_hard_keys.size_key; }
// The size word of block p of slab m: at the end of a tiny block; else its
// index (slab_block_start's multiply) into the table after the slab's last
// block (superslab.h, slab_capacity).
HAK_INLINE uint32_t *hard_size_tail(void *p, uint32_t bs) { return (uint32_t *)((char *)p + bs - HARD_SIZE_BYTES); }
// The table starts 64 to 512 bytes past the slab's last block (the colour,
// by bits 19-21 of the slab's base: its slot in a SuperSlab of 512 KiB slabs
// and one bit of the SuperSlab; 64 bytes for block sizes under 4 KiB). In a
// slab of 4, 8, 12, 16, ... KiB blocks the last block ends on a page boundary,
// so every table began on an L2 set of the blocks' own first lines (4 KiB
// aligned: 16 of the 1024 sets of a 1 MiB 16-way L2) and they pushed each
// other out, the quarantine's blocks among them. Cachegrind, LL set to this
// VM's L2 (1 MiB, 16-way), ws8192 -w 8192 --min 1K --max 32K -n 400000: LL
// read+write misses 701K -> 521K (the default build's 398K), 8 instructions
// per operation more; 4 colours with no test of the size, 578K and 4 more.
// The slack past a slab's table holds the largest colour (checked at start-up,
// hardened_box_init).
#define HARD_TABLE_COLOUR_MIN  4096u                // block sizes whose table takes 8 colours
#define HARD_TABLE_COLOUR_MAX  512u                 // ... the largest of them, bytes
#define HARD_TABLE_COLOUR_BASE 64u                  // the colour of the other tables
HAK_INLINE uintptr_t hard_table_colour(const slab_meta_t *m, uint32_t bs) {
  uintptr_t base = (uintptr_t)m->base;
  _Static_assert(HARD_TABLE_COLOUR_MIN == 1u << 12 && HARD_TABLE_COLOUR_MAX == 0x1c0u + HARD_TABLE_COLOUR_BASE,
                 "the colour's mask and test");
  return (((base >> 13) & 0x1c0u) & -(uintptr_t)(bs >> 12)) + HARD_TABLE_COLOUR_BASE;
}
HAK_INLINE uint32_t *hard_size_table_slot(const slab_meta_t *m, const void *p) {   // bs > HAK_TINY_MAX
  uintptr_t off = (uintptr_t)p - (uintptr_t)m->base;
  uintptr_t colour = hard_table_colour(m, m->block_size);
  // off / block_size: the high half of off * magic, with magic = floor(2^64 /
  // size) + 1 or + 2 (size_class.h): exact for an offset in a slab (< 2^21),
  // since the excess off * (magic - 2^64 / size) < 2^22 never carries into the
  // high half (tests/unit/test_size_class.c checks every offset).
  uint64_t idx = (uint64_t)(((unsigned __int128)off * m->size_magic) >> 64);
  return (uint32_t *)(slab_end(m) + colour) + idx;
}
HAK_INLINE uint32_t *hard_size_slot(const slab_meta_t *m, const void *p) {
  if (HAK_LIKELY(m->block_size <= HAK_TINY_MAX)) return hard_size_tail((void *)p, m->block_size);
  return hard_size_table_slot(m, p);
}
_Static_assert(HARD_CANARY_BYTES == 16, "two words are the canary");

// The fill covers bytes [16, hard_fill_end(bs)) of a free block: whole
// words (block sizes are multiples of 16, 32 and more). With HARD_FILL_MAX
// 128, seven 16-byte pieces at 16 and at min(off, bs - 16) for off = 32, 48,
// 64, ..., 112: a smaller block repeats its last piece instead of a branch on
// its size.
#define HARD_FILL_AT(bs, off) ((off) < (bs) - 16u ? (off) : (bs) - 16u)
// The second line's pieces (64 .. 112) cover blocks up to HARD_FILL_TWO_MAX
// bytes and the medium ones (whose second line costs little beside their
// other misses: ws-medium level); a tiny block above it repeats its first
// line's last piece (48). On larson (8-1000 bytes, blocks freed by the
// thread that did not write them) the second line of every block cost 1.19x
// the hardened time (9 paired rounds), up to 256 bytes 1.09x: a line the
// program's free and malloc touch nowhere else in blocks of 272 bytes and
// more. Where the fill ends: hard_fill_end.
#define HARD_FILL_TWO_MAX 256u
#define HARD_FILL_SECOND(bs, off) ((bs) > HARD_FILL_TWO_MAX && (bs) <= HAK_TINY_MAX ? 48u : HARD_FILL_AT((bs), (off)))
HAK_INLINE uint32_t hard_fill_end(uint32_t bs) {
  uint32_t end = HARD_FILL_MAX == 128u && bs > HARD_FILL_TWO_MAX && bs <= HAK_TINY_MAX ? 64u : HARD_FILL_MAX;
  return bs < end ? bs : end;
}
// Each class's block size and its pieces' offsets after the first: one table
// line instead of compares and moves (hardened_box.c).
typedef struct hard_class {
  uint32_t size;                    // the block size (g_size_class)
  uint8_t  fill_a, fill_b;          // HARD_FILL_AT(size, 32), HARD_FILL_AT(size, 48)
  uint16_t cls_remote;              // the class, with HARD_QUAR_REMOTE if a block of it
                                    //   freed by another thread than its slab's owner goes
                                    //   home through the remote buffer (under a cache line)
  uint8_t  fill_c[4];               // HARD_FILL_SECOND(size, 64), ... (size, 112): the second line
  uint32_t unused;                  // (an entry of 16 bytes: indexed with one scale)
} hard_class_t;
#define HARD_QUAR_REMOTE 0x100u     // in a quarantine slot's class (see hard_class_t)
_Static_assert(HAK_NUM_CLASSES <= HARD_QUAR_REMOTE, "a class fits below the remote flag");
_Static_assert(sizeof(hard_class_t) == 16, "an entry is indexed by cls * 16");
extern HAK_INTERNAL const hard_class_t g_hard_class[HAK_NUM_CLASSES];
// The entry of the class whose TLS slot is `slot` (size_class_tls_slot).
_Static_assert(HAK_TLS_SLOT_OF(1) == 2 && sizeof(hard_class_t) == 16, "a slot indexes the table by 8 bytes");
HAK_INLINE const hard_class_t *hard_class_of_slot(unsigned slot) {
  return (const hard_class_t *)((const char *)g_hard_class + (size_t)slot * (sizeof(hard_class_t) / 2));
}

// A block's pieces after the first: its class entry's offsets, or, above the
// tiny classes (blocks of 1280 bytes and more), the constants 32, 48, ..., 112
// (no class entry to read).
typedef struct hard_fill_at {
  unsigned a, b, c[4];
} hard_fill_at_t;
HAK_INLINE hard_fill_at_t hard_fill_of_class(const hard_class_t *hc) {
  return (hard_fill_at_t){hc->fill_a, hc->fill_b, {hc->fill_c[0], hc->fill_c[1], hc->fill_c[2], hc->fill_c[3]}};
}
HAK_INLINE hard_fill_at_t hard_fill_of_size(uint32_t bs) {
  return (hard_fill_at_t){HARD_FILL_AT(bs, 32u), HARD_FILL_AT(bs, 48u),
                          {HARD_FILL_SECOND(bs, 64u), HARD_FILL_SECOND(bs, 80u), HARD_FILL_SECOND(bs, 96u),
                           HARD_FILL_SECOND(bs, 112u)}};
}
#define HARD_MEDIUM_FILL ((hard_fill_at_t){32u, 48u, {64u, 80u, 96u, 112u}})
_Static_assert(HARD_FILL_AT(HAK_TINY_MAX + 1u, 32u) == 32u && HARD_FILL_AT(HAK_TINY_MAX + 1u, 112u) == 112u,
               "a medium block's fill offsets are the constants");

// Fill free block p of bs bytes at its pieces f.
HAK_INLINE void hard_fill_pieces(void *p, uint32_t bs, hard_fill_at_t f) {
  char *c = p;
  if (HARD_FILL_MAX == 128) {
#if defined(__SSE2__)
    const __m128i v = _mm_set1_epi8((char)HARD_FILL_BYTE);
#define HARD_FILL_PIECE(off) _mm_store_si128((__m128i *)(c + (off)), v)
#else
#define HARD_FILL_PIECE(off) (hard_store64(c + (off), HARD_FILL_WORD), hard_store64(c + (off) + 8, HARD_FILL_WORD))
#endif
    HARD_FILL_PIECE(16);
    HARD_FILL_PIECE(f.a);
    HARD_FILL_PIECE(f.b);
    HARD_FILL_PIECE(f.c[0]);
    HARD_FILL_PIECE(f.c[1]);
    HARD_FILL_PIECE(f.c[2]);
    HARD_FILL_PIECE(f.c[3]);
#undef HARD_FILL_PIECE
    return;
  }
  size_t end = hard_fill_end(bs);
  for (size_t i = HARD_LINK_BYTES; i < end; i += 8) hard_store64(c + i, HARD_FILL_WORD);
}
HAK_INLINE void hard_fill_words(void *p, uint32_t bs) { hard_fill_pieces(p, bs, hard_fill_of_size(bs)); }

// Nonzero when the fill of free block p (bs bytes) is not intact. On x86-64
// seven aligned 16-byte compares (blocks and the pieces' offsets are multiples
// of 16), one mask (three pieces took 11 instructions where the word-at-a-time
// form took 18).
HAK_INLINE uint64_t hard_fill_diff_pieces(const void *p, uint32_t bs, hard_fill_at_t f) {
  const char *c = p;
#if defined(__SSE2__)
  if (HARD_FILL_MAX == 128) {
    const __m128i v = _mm_set1_epi8((char)HARD_FILL_BYTE);
#define HARD_EQ_AT(off) _mm_cmpeq_epi8(_mm_load_si128((const __m128i *)(c + (off))), v)
    __m128i first = _mm_and_si128(HARD_EQ_AT(16), _mm_and_si128(HARD_EQ_AT(f.a), HARD_EQ_AT(f.b)));
    __m128i second = _mm_and_si128(_mm_and_si128(HARD_EQ_AT(f.c[0]), HARD_EQ_AT(f.c[1])),
                                   _mm_and_si128(HARD_EQ_AT(f.c[2]), HARD_EQ_AT(f.c[3])));
#undef HARD_EQ_AT
    return (uint32_t)_mm_movemask_epi8(_mm_and_si128(first, second)) ^ 0xffffu;
  }
#endif
  (void)f;
  uint64_t d = 0;
  size_t end = hard_fill_end(bs);
  for (size_t i = HARD_LINK_BYTES; i < end; i += 8) d |= hard_load64(c + i) ^ HARD_FILL_WORD;
  return d;
}
HAK_INLINE uint64_t hard_fill_diff(const void *p, uint32_t bs) { return hard_fill_diff_pieces(p, bs, hard_fill_of_size(bs)); }

// Write the canary bytes [n, n + 16).
HAK_INLINE void hard_canary_write(unsigned char *c, size_t n) {
#if defined(__SSE2__)
  _mm_storeu_si128((__m128i *)(c + n), _mm_load_si128((const __m128i *)g_hard_keys.canary));
#else
  uint64_t kw = hard_canary_word();
  hard_store64(c + n, kw);
  hard_store64(c + n + 8, kw);
#endif
}

// Nonzero when a canary byte in [n, n + 16) changed.
// On x86-64 one unaligned 16-byte load compared with the canary vector (4
// instructions where two words took 6).
HAK_INLINE uint64_t hard_canary_diff(const unsigned char *c, size_t n) {
#if defined(__SSE2__)
  __m128i eq = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(c + n)), _mm_load_si128((const __m128i *)g_hard_keys.canary));
  return (uint32_t)_mm_movemask_epi8(eq) ^ 0xffffu;
#else
  uint64_t kw = hard_canary_word();
  return (hard_load64(c + n) ^ kw) | (hard_load64(c + n + 8) ^ kw);
#endif
}
// Nonzero when a byte of a tiny block's canary, [n, n + 12), changed: the
// window's first 12 bytes (its last 4 may be the size word's; one `and` more).
HAK_INLINE uint64_t hard_canary_diff_tiny(const unsigned char *c, size_t n) {
  _Static_assert(HARD_CANARY_TINY == 12, "the mask and the words are 12 bytes");
#if defined(__SSE2__)
  return hard_canary_diff(c, n) & 0xfffu;
#else
  uint64_t kw = hard_canary_word();
  return (hard_load64(c + n) ^ kw) | (hard_load32(c + n + 8) ^ (uint32_t)kw);
#endif
}

// Where a block's canary may reach: a tiny block's size word (its last 4
// bytes), else its end.
HAK_INLINE size_t hard_canary_limit(uint32_t bs) { return bs <= HAK_TINY_MAX ? bs - HARD_SIZE_BYTES : bs; }
// The canary of a block of bs bytes for a request of n (n below its limit):
// the bytes [n, min(n + 16, limit)), 12 to 16 of them in a tiny block and 1
// to 16 in a larger one. A medium request takes the smallest
// class with a byte to spare (HARD_TAIL_MEDIUM), so the classes keep the
// default build's boundaries to a byte: with 16 bytes to spare, the requests
// within 16 bytes under a class went a class up, and their last byte, which
// the program writes, one page below where that class's requests end (its
// blocks' last page); over a block's many lives half of ws-medium's blocks of
// 8 KiB and more got that page touched: 47.2 MB peak RSS against the
// default's 36.6, 2.7 k more page faults. Every canary byte is the same
// value, so the window of 16 bytes is written and read at
// hard_canary_start (n, or bs - 16 when fewer bytes are spare: the program's
// own bytes below n are not looked at) and only its bytes from n compared.
HAK_INLINE size_t hard_canary_start(size_t n, uint32_t bs) {
  size_t limit = hard_canary_limit(bs);
  return n + HARD_CANARY_BYTES <= limit ? n : limit - HARD_CANARY_BYTES;
}
// The canary's end: min(n + 16, limit), the window's end.
HAK_INLINE size_t hard_canary_end(size_t n, uint32_t bs) { return hard_canary_start(n, bs) + HARD_CANARY_BYTES; }
// Write the canary of a block handed out for n bytes (malloc: what is below n
// is the program's to write; realloc in place keeps those bytes, and uses
// hard_canary_write_kept).
HAK_INLINE void hard_canary_write_in(unsigned char *c, size_t n, uint32_t bs) {
  hard_canary_write(c, hard_canary_start(n, bs));
}
// Write only the canary's bytes, [n, min(n + 16, bs)) (realloc in place: the
// bytes below n are the program's and stay).
HAK_INLINE void hard_canary_write_kept(unsigned char *c, size_t n, uint32_t bs) {
  memset(c + n, (int)(hard_canary_word() & 0xffu), hard_canary_end(n, bs) - n);
}
// Nonzero when a byte of the canary of a block of bs bytes for n changed.
HAK_INLINE uint64_t hard_canary_diff_in(const unsigned char *c, size_t n, uint32_t bs) {
#if defined(__SSE2__)
  size_t s = hard_canary_start(n, bs);
  return hard_canary_diff(c, s) >> (n - s);   // bit i: byte s + i
#else
  uint64_t d = 0;
  for (size_t i = n, end = hard_canary_end(n, bs); i < end; i++) d |= (uint64_t)(c[i] ^ (unsigned char)hard_canary_word());
  return d;
#endif
}

// Start-up, after the process key is seeded: the canary word.
void hardened_box_init(void);
// Report the write after free that hard_fill_diff found in p (cold).
void hardened_report_fill(const void *p, uint32_t bs, const char *when) HAK_COLD;

// Fill a free block from byte 16 on (a carve: inline, as the carve loop runs
// once per block). A 16-byte block has no fill (none is handed out: every
// request takes 16 bytes more; hard_fill_words assumes 32 and more).
// A fresh tiny block past the fill's reach also gets a size word (a request
// of 0): the free of the block above it checks it (hard_below_fast_ok).
HAK_INLINE void hardened_fill(hak_base_ptr_t b, uint32_t block_size) {
  if (block_size >= 2 * HARD_LINK_BYTES) hard_fill_words(hak_base_raw(b), block_size);
  if (block_size > HARD_FILL_MAX && block_size <= HAK_TINY_MAX) *hard_size_tail(hak_base_raw(b), block_size) = hard_size_key();
}

// A block of bs bytes leaves the allocator for a request of n bytes: check its
// fill (report a write after free), then write its canary and size word at
// *size (hard_size_slot; a tiny block's end with no slab lookup).
// Returns p; a changed fill is reported by a call in last place, so the
// common path keeps to registers.
void *hardened_arm_bad(uint32_t bs, void *p, size_t n, uint32_t *size) HAK_NOINLINE;
// A block handed out has its free-list link and mark cleared first: a program
// reading its fresh block uninitialised saw its encoded link (next ^ block ^
// the process key: with the block's address, next ^ key) in bytes 0-7
// (hardened_malloc's uninitialized_read_small wants zeros there). Before the
// canary, which a request under 16 bytes writes over some of these bytes.
HAK_INLINE void hard_clear_link(void *p) {
#if defined(__SSE2__)
  _mm_store_si128((__m128i *)p, _mm_setzero_si128());
#else
  hard_store64(p, 0);
  hard_store64((char *)p + 8, 0);
#endif
}
// A tiny block: 16 bytes or more to its end, so the window at n stays in the
// block; its last 4 may be the size word's, which is stored after it.
HAK_INLINE void hardened_arm_words(void *p, size_t n, uint32_t *size) {
  hard_clear_link(p);
  hard_canary_write(p, n);
  *size = (uint32_t)n ^ hard_size_key();
}
HAK_INLINE void hardened_arm_words_in(void *p, size_t n, uint32_t bs, uint32_t *size) {   // any block
  hard_clear_link(p);
  hard_canary_write_in(p, n, bs);
  *size = (uint32_t)n ^ hard_size_key();
}
// f: the block's fill offsets (its class entry's, or HARD_MEDIUM_FILL).
HAK_INLINE void *hardened_arm_at(hard_fill_at_t f, uint32_t bs, void *p, size_t n, uint32_t *size) {
  if (HAK_UNLIKELY(hard_fill_diff_pieces(p, bs, f) != 0)) return hardened_arm_bad(bs, p, n, size);
  hardened_arm_words_in(p, n, bs, size);
  return p;
}
// The malloc fast path's: a tiny block popped from the list of TLS slot
// `slot`. Its way out takes the slot, not the block size, so the common path
// keeps no copy of the size for the call.
void *hardened_arm_bad_slot(unsigned slot, void *p, size_t n) HAK_NOINLINE;
// `bad`: what a changed fill calls (malloc: hardened_arm_bad_slot; operator
// new one that also runs the new_handler loop when it returns NULL).
// Is p, a block a TLS list handed out, in a live SuperSlab (one load of its
// byte in the map)? The list's links are encoded with the process key, but a
// program that reads a free block's words (a use after free) learns the key
// and can forge a link to any address with the free fill written there: the
// fill check alone let malloc return a static buffer (an independent misuse
// program). This bounds a forged link to the heap's own slabs.
HAK_INLINE int hard_in_superslab(const void *p) { return ss_registry_meta_shift(ss_of_masked(p)) != 0; }
HAK_INLINE void *hardened_arm_tiny(unsigned slot, void *p, size_t n, void *(*bad)(unsigned, void *, size_t)) {
  const hard_class_t *hc = hard_class_of_slot(slot);
  uint32_t bs = hc->size;
  if (HAK_UNLIKELY(!hard_in_superslab(p))) return bad(slot, p, n);
  if (HAK_UNLIKELY(hard_fill_diff_pieces(p, bs, hard_fill_of_class(hc)) != 0)) return bad(slot, p, n);
  hardened_arm_words(p, n, hard_size_tail(p, bs));
  return p;
}
HAK_INLINE void *hardened_arm(const slab_meta_t *m, void *p, size_t n) {
  const hard_class_t *hc = &g_hard_class[m->cls];
  return hardened_arm_at(hard_fill_of_class(hc), m->block_size, p, n, hard_size_slot(m, p));
}

// Report the canary after the n requested bytes of p overwritten (cold).
void hardened_report_canary(const void *p, size_t n) HAK_COLD;
// The request recorded in a live block p of slab m (reported and taken as the
// whole block when the size word is corrupted).
size_t hardened_size_bad(const void *p, uint32_t bs) HAK_COLD;
// The largest request a block of bs bytes serves.
HAK_INLINE uint32_t hard_request_max(uint32_t bs) {
  return bs - (bs <= HAK_TINY_MAX ? HARD_TAIL_BYTES : HARD_TAIL_MEDIUM);
}
// A block handed out by the aligned path (posix_memalign, aligned_alloc, an
// aligned operator new) for an alignment above 16 keeps log2 of it in its size
// word's bits 24-27 (the request is under 2^18), so that an aligned delete is
// compared with the alignment the block was made with, not with its address's
// (a block made with 16 sits 64-aligned one time in two in a 96-byte class: a
// delete with 64 passed then). The tag puts the word past hard_request_max, so
// the free's fast check sends such a block to its slow path, which decodes it
// (hard_request_decode); no fast path pays for it.
#define HARD_ALIGN_TAG_SHIFT 24u
#define HARD_ALIGN_TAG_MIN   5u        // 32
#define HARD_ALIGN_TAG_MAX   12u       // 4096 (HAK_SLAB_ALIGN_MAX)
// The request and the alignment's log2 (0: none) of size word w (decoded with
// the key) of a block of bs bytes; 0 when w is neither a request nor a tagged
// one that the block's class could serve.
HAK_INLINE int hard_request_decode(uint32_t w, uint32_t bs, uint32_t *n, unsigned *lg) {
  unsigned tag = w >> HARD_ALIGN_TAG_SHIFT;
  uint32_t req = w & ((1u << HARD_ALIGN_TAG_SHIFT) - 1u);
  if (req > hard_request_max(bs)) return 0;
  if (tag != 0 && (tag < HARD_ALIGN_TAG_MIN || tag > HARD_ALIGN_TAG_MAX || (bs & ((1u << tag) - 1u)) != 0)) return 0;
  *n = req;
  *lg = tag;
  return 1;
}
size_t hardened_requested_slow(const slab_meta_t *m, const void *p) HAK_NOINLINE;
HAK_INLINE size_t hardened_requested(const slab_meta_t *m, const void *p) {
  uint32_t n = *hard_size_slot(m, p) ^ hard_size_key();
  if (HAK_UNLIKELY(n > hard_request_max(m->block_size))) return hardened_requested_slow(m, p);
  return n;
}
// log2 of the alignment live slab block p of m was made with (0: none above 16).
unsigned hardened_alignment_lg(const slab_meta_t *m, const void *p);

// The quarantine: two rings of HARD_QUAR_SLOTS slots, one for the tiny
// classes (t_quar) and one for the larger ones (t_quar_medium); the blocks in
// a ring fill the `used` slots before `next` (oldest first), the others have
// p == NULL. A free puts its block in the slot at `next`: when the ring is
// full, the oldest block was there and leaves. The medium ring's `bytes` counts
// its blocks; past HARD_QUAR_BYTES the oldest ones leave early. The tiny ring
// needs no byte count (64 blocks of 1 KiB at most): with one ring for both,
// every free kept it, 8 instructions per pair. A block waits for
// HARD_QUAR_SLOTS later frees of its own kind, so a tiny block is not pushed
// out sooner by medium frees (nor the other way round).
// A slot's info is the block's class and way out, stored as the free has it
// (its size is the class's, g_hard_class: the eviction reads no slab
// metadata; a size kept beside it cost 2 instructions per pair to pack and
// unpack). The way out: HARD_QUAR_REMOTE is set for a block under a cache
// line of a slab another thread owned when it was freed, which goes home
// through the remote buffer (the default build's rule, tiny/tiny_flush.c
// tiny_free_checked; decided at free, where the slab's metadata is at hand, as
// the default build does).
typedef struct hard_quar_slot {
  void    *p;
  uint64_t info;                    // class | HARD_QUAR_REMOTE?
} hard_quar_slot_t;
#define HARD_QUAR_INFO(bs, cls) ((void)(bs), (uint64_t)(cls))
HAK_INLINE unsigned hard_quar_cls(uint64_t info) { return (unsigned)info; }
HAK_INLINE uint32_t hard_quar_size(uint64_t info) { return g_hard_class[info & (HARD_QUAR_REMOTE - 1)].size; }

typedef struct hard_quarantine {
  union {
    hard_quar_slot_t slot[HARD_QUAR_SLOTS];
    uint64_t         word[2 * HARD_QUAR_SLOTS];   // the free's view: slot i's p at 2i, info at 2i + 1
  };
  uint32_t next;                    // the slot the next free fills
  uint32_t used;                    // blocks in the ring
  size_t   bytes;                   // and their bytes (the medium ring only)
} hard_quarantine_t;

_Static_assert((HARD_QUAR_SLOTS & (HARD_QUAR_SLOTS - 1)) == 0, "the ring index wraps with a mask");
_Static_assert(sizeof(hard_quar_slot_t) == 2 * sizeof(uint64_t) && offsetof(hard_quar_slot_t, info) == sizeof(uint64_t),
               "a slot is two words: p, then info");

extern HAK_INTERNAL __thread hard_quarantine_t t_quar __attribute__((tls_model("initial-exec")));
extern HAK_INTERNAL __thread hard_quarantine_t t_quar_medium __attribute__((tls_model("initial-exec")));

// The ways out of the common path (hardened_box.c), each called last, so the
// common path keeps to registers: a block above the tiny classes (its size
// word in its slab's table, the medium ring); a block whose size word or
// canary changed (reported, then freed as hardened_free_block would); a block
// leaving the quarantine that does not go on its TLS list at once (its first
// 16 bytes changed, its list full, another thread's small block); the byte
// bound passed.
// `want`: the size a sized delete gives, checked against the request the
// block keeps; HARD_NO_SIZE for free and the unsized forms.
#define HARD_NO_SIZE SIZE_MAX
void hardened_free_medium(const slab_meta_t *m, void *p, size_t want) HAK_NOINLINE;
void hardened_free_bad(const slab_meta_t *m, unsigned cls, void *p, size_t want) HAK_NOINLINE;
// A tiny block p whose own checks passed, but whose 4 bytes before are not the
// common size word below (hard_below_fast_ok): an aligned block's tag, a
// slab's first block, or an underflow (reported); then freed as usual. Not
// hardened_free_bad, whose guesses assume a check of the block failed (a live
// block with its fill intact there is taken for one freed before).
void hardened_free_below(const slab_meta_t *m, unsigned cls, void *p) HAK_NOINLINE;
// "sized delete with the wrong size of P (given G, the block's is A)" (or the
// alignment's, `what`), reported for a delete whose size or alignment is not
// the block's.
void hardened_report_delete(const char *what, const void *p, size_t given, size_t actual) HAK_COLD;
void hardened_release_slow(unsigned cls, uint32_t bs, void *p) HAK_NOINLINE;
void hardened_quarantine_trim(void *old, unsigned old_cls, uint32_t old_bs) HAK_NOINLINE;
// The calling thread's first block in the quarantine, and it is not set up
// yet: set it up, so the quarantine drains at its exit. Torn down already
// (past its exit hook): set up, drained home and torn down again.
void hardened_thread_first(void) HAK_NOINLINE;

// Can the block p leaving the quarantine go on its TLS list at once: its first
// 16 bytes are as free left them (a NULL link and its free mark, each the
// block's key; the fill is checked when malloc hands it out again), its list
// has room, and it is not for the remote buffer (may_remote 0: the medium
// ring's blocks never are). One branch.
HAK_INLINE int hardened_release_fast(tls_cache_t *tc, unsigned cls, void *p, int may_remote) {
  uintptr_t key = (uintptr_t)p ^ g_block_cookie;
  const uintptr_t *w = p;
  unsigned c = may_remote ? cls & (HARD_QUAR_REMOTE - 1) : cls;
  uintptr_t remote = may_remote ? (cls & HARD_QUAR_REMOTE) : 0;
  // The list through malloc's view (head words[slot], room rooms[TLS_ROOM_OF_SLOT(slot)]):
  // indexed from the TLS block's offset with no address built first.
  unsigned slot = size_class_tls_slot(c);
  if (HAK_LIKELY(((w[0] ^ key) | (w[1] ^ key) | remote) == 0 && tc->rooms[TLS_ROOM_OF_SLOT(slot)] != 0)) {
    block_set_next(hak_base_from_raw(p), hak_base_from_raw((void *)tc->words[slot]));   // the mark stays
    tc->words[slot] = (uintptr_t)p;
    tc->rooms[TLS_ROOM_OF_SLOT(slot)]--;
    return 1;
  }
  return 0;
}

// A medium block p of class cls leaving the quarantine on a thread whose
// bound of cls has shrunk (it frees the class and takes none): another
// thread's block, its first words intact, goes to the class's hand-over
// chain (tiny_handover) instead of the TLS list; 0 otherwise.
int hardened_handover(unsigned cls, void *p) HAK_NOINLINE;

// Fill and mark checked block p, put it in quarantine ring q and let the
// oldest go; counted: q is the medium ring (its byte count and bound; its
// blocks never go to the remote buffer). cls carries HARD_QUAR_REMOTE
// (hardened_free_block decides it); f: its fill offsets.
HAK_INLINE void hardened_quarantine_put_in(hard_quarantine_t *q, int counted, unsigned cls, uint32_t bs, void *p,
                                           hard_fill_at_t f) {
  hard_fill_pieces(p, bs, f);
  uintptr_t key = (uintptr_t)p ^ g_block_cookie;
  ((uintptr_t *)p)[0] = key;        // a NULL link (block_set_next)
  ((uintptr_t *)p)[1] = key;        // the free mark: a second free is a double free
  // Through the word view (an index scaled by 8, as malloc's TLS lists): from
  // the TLS offset with no slot address built first.
  unsigned w = 2u * q->next;
  q->next = (q->next + 1) & (HARD_QUAR_SLOTS - 1);
  void *old = (void *)q->word[w];
  // The block that leaves at the next free: its first words are checked then
  // (quarantine_words_ok), on a line 64 frees old that another thread may
  // have taken back by writing a neighbour (larson -t 2: 28% of
  // hardened_test_and_free's samples on that load). Asked for a free ahead:
  // 0.970x and 0.984x the time in two sets of 9 and 11 paired rounds, the
  // local rows level. (The slot may be NULL: see hak_prefetch_for_write.)
  hak_prefetch_for_write((const void *)q->word[2u * q->next]);
  uint64_t old_info = q->word[w + 1];
  unsigned old_cls = hard_quar_cls(old_info);
  uint32_t old_bs = counted ? hard_quar_size(old_info) : 0;
  q->word[w] = (uintptr_t)p;
  q->word[w + 1] = HARD_QUAR_INFO(bs, cls);
  if (counted) {
    size_t bytes = q->bytes + bs;
    if (HAK_LIKELY(old != NULL)) bytes -= old_bs;
    q->bytes = bytes;
    if (HAK_UNLIKELY(bytes > HARD_QUAR_BYTES)) {
      if (old == NULL) q->used++;
      hardened_quarantine_trim(old, old_cls, old_bs);
      return;
    }
  }
  if (old == NULL) {                // one of the ring's first blocks (a new or drained ring)
    q->used++;
    // Here, not on every free: a thread's first frees find its ring empty.
    if (HAK_UNLIKELY(t_thread_status != THREAD_LIVE)) hardened_thread_first();
    return;
  }
  if (counted && HAK_UNLIKELY(t_tls_cache.cap_shift[old_cls] != 0) && hardened_handover(old_cls, old)) return;
  if (HAK_LIKELY(hardened_release_fast(&t_tls_cache, old_cls, old, !counted))) return;
  hardened_release_slow(old_cls, old_bs, old);
}
_Static_assert(HAK_LINK_ENCODE, "a NULL link is the block's key");
HAK_INLINE void hardened_quarantine_put(unsigned cls, uint32_t bs, void *p, const hard_class_t *hc) {
  if (bs <= HAK_TINY_MAX) hardened_quarantine_put_in(&t_quar, 0, cls, bs, p, hard_fill_of_class(hc));
  else hardened_quarantine_put_in(&t_quar_medium, 1, cls, bs, p, HARD_MEDIUM_FILL);
}

// Underflow before a tiny block: the 4 bytes before it are the size word of
// the block below (the same class, the same slab), which is always one of a
// live block's request (hard_request_decode), a free block's fill (a block
// of 128 bytes or less: the fill reaches its end), or a freed or fresh
// block's last request (hardened_fill writes 0 into a fresh one). Anything
// else was written from outside: an underflow before this block (glibc's
// free stops it: the chunk header it checks sits there), or an overflow
// past the one below. Free reads the word; the common cases pass with two
// compares, the rest (an aligned block's tag, the slab's first block, whose
// word is not a block's) go to hardened_free_bad. The word is on the block's
// first line unless the block starts a line; then it is the line of the block
// below, which another thread may be writing: a batching thread asks for it
// with the block's other lines (free_batch_box.c hold_prefetch_tail).
// Without that request ring -t 2 ran at 0.71x and larson at 0.63x of the
// hardened speed before this check; with it at 0.96x and 0.83x (ws-small,
// whose frees are its own, 0.95x; the programs' own rates, 7 runs).
HAK_INLINE int hard_below_fast_ok(uint32_t w, uint32_t bs) {
  return (w ^ hard_size_key()) <= bs - HARD_TAIL_BYTES || w == (uint32_t)HARD_FILL_WORD;
}

// A live block p of slab m is freed by the program: check its size word,
// the size a sized delete gives (`sized`, a constant: 1 for a sized delete,
// whose `want` is compared with the request; 0 for free, which compares
// nothing more and passes HARD_NO_SIZE on) and its canary, fill and mark it, and put it
// in the calling thread's quarantine (a LIVE thread), from which the oldest
// block leaves. A sized delete is checked on the size word free reads anyway:
// a separate lookup before the free (hak_hardened_check_delete) took a
// quarantine-like 28% of the hardened cxx-small row's samples.
HAK_INLINE void hardened_free_block(const slab_meta_t *m, void *p, size_t want, int sized) {
  uint32_t bs = m->block_size;
  if (HAK_UNLIKELY(bs > HAK_TINY_MAX)) {
    hardened_free_medium(m, p, want);
    return;
  }
  const hard_class_t *hc = &g_hard_class[m->cls];
  // Its way out, now that the slab's metadata is at hand (see HARD_QUAR_REMOTE):
  // a select, no branch (larson frees other threads' blocks at random).
  unsigned cls = m->cls;
  unsigned away = hc->cls_remote;
  if (atomic_load_explicit(&m->owner, memory_order_relaxed) != t_tls_cache.self) cls = away;
  uint32_t n = *hard_size_tail(p, bs) ^ hard_size_key();
  uint32_t below = ((const uint32_t *)p)[-1];
  if (HAK_UNLIKELY(n > bs - HARD_TAIL_BYTES || (sized && want != n) || hard_canary_diff_tiny(p, n) != 0)) {
    hardened_free_bad(m, cls, p, want);
    return;
  }
  if (HAK_UNLIKELY(!hard_below_fast_ok(below, bs))) {
    hardened_free_below(m, cls, p);      // its own checks passed: only the word below is looked at
    return;
  }
  hardened_quarantine_put_in(&t_quar, 0, cls, bs, p, hard_fill_of_class(hc));
}

// Check that no quarantined block of the calling thread was written since its
// free (process exit; each block is checked again when it leaves).
void hardened_quarantine_check(void);
// Send every quarantined block of the calling thread to its TLS lists.
void hardened_quarantine_drain(void);
// ... but another heap's blocks home, at once (a heap parked at its thread's
// exit: tiny_thread.c; its owner's next malloc of one checks its fill).
void hardened_quarantine_drain_home(void);
// Shuffle the chain *first..*last of n blocks (a refill's batch).
void hardened_shuffle_chain(hak_base_ptr_t *first, hak_base_ptr_t *last, uint32_t n);
#endif

#endif
