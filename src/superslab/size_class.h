// size_class.h — request size -> size class, and each class's geometry.
//
// Classes are 16-byte steps up to 128 B, then four per power of two up to
// 256 KiB (HAK_SLAB_MAX): 16 32 48 ... 128 160 192 224 256 320 ... 1024 (the
// tiny classes, 0..19) 1280 ... 4096 4608 5120 ... 131072 (medium, slab kind
// 1) 163840 ... 262144 (slab kind 2), with one class more than the rule
// gives: 4608, a page and a header (HAK_CLASS_PAGE_AND_HEADER). Worst-case
// rounding waste is under 25% of the request (129 B -> 160 B) and 15 B for
// requests up to 128 B. Every class size is a multiple of 16, so every block
// is 16-byte aligned.
#ifndef HAK_SIZE_CLASS_H
#define HAK_SIZE_CLASS_H

#include "debug/hak_base.h"

#define HAK_NUM_CLASSES     53
#define HAK_TINY_CLASSES    20          // classes 0..19 are the tiny path (<= 1 KiB)
#define HAK_TINY_MAX        1024u
// Largest block the class exchange and batched frees hold (transfer_box.h,
// free_batch_box.h): "medium" there means 1-32 KiB.
#define HAK_MEDIUM_MAX      (32u << 10)
// Classes 0 .. HAK_EXCHANGE_CLASSES - 1 are those up to HAK_MEDIUM_MAX: the
// only ones the class exchange and a thread's hand-over chains hold
// (size_class.c checks the count by the LUT's rule, tests/unit/test_size_class.c
// against the table).
#define HAK_EXCHANGE_CLASSES 41u
// A page and a header: the class between 4 KiB and 5 KiB. Programs allocate
// a 4 KiB page with a header of their own in one block: sqlite3's page
// cache takes blocks of 4 104-4 368 bytes (a 4 KiB page, its PgHdr and its
// extra bytes), which the 5 KiB class (5 184 bytes a block, padded) held
// with 16-21% of each block unused: 2 777 of them live at the peak of
// bench-realprog's sqlite3 script. In this class (4 672 bytes a block) its
// peak RSS is 18.9-19.0 MB against 20.4 (glibc 17.7), its instructions the
// same (callgrind); python3's, python3-malloc's, perl's, git's, jq's and
// node's peaks the same, ws-medium's and mstress's time too (paired rounds,
// fifty-ninth session). One class, not a fifth per power of two: eight more
// classes of 4-8 KiB took python3-malloc's peak from 105-110 MB to 120-128
// (each class in use holds a slab and a TLS list of its own).
#define HAK_CLASS_PAGE_AND_HEADER 4608u
#define HAK_SLAB_MAX        (256u << 10) // largest slab class; above: the page heap (large/)

// Slab kinds: SuperSlabs hold slabs of one size; a class lives in one kind,
// and a FREE slab serves any class of its kind, never another kind's.
// Classes up to 128 KiB share the 512 KiB slabs (mimalloc's medium pages):
// in 2 MiB slabs of their own, a program whose buffer sizes drift upward
// (bench/drift) kept each kind's freed memory for that kind alone, 37 MB
// against 25.5 at 1.5x the time, and node's workload 1.03x the time at
// +18 MB. The price is more slabs per class for random sizes of 32-256 KiB
// (`ws8192 -w 1024 --min 32K --max 256K`: 1.07-1.09x the time, +4 MB: more
// slabs go EMPTY and the dirty budget purges them early).
#define HAK_SLAB_KINDS      3
#define HAK_KIND_SMALL      0   // 64 KiB slabs, classes <= 1 KiB
#define HAK_KIND_MEDIUM     1   // 512 KiB slabs, classes <= HAK_KIND_MEDIUM_MAX
#define HAK_KIND_LARGE      2   // one 2 MiB slab, classes <= 256 KiB
#define HAK_KIND_MEDIUM_MAX (128u << 10)
// A medium class's first slab in a process (its young slab: tiny_heap.c,
// slab_kind_for) is one of the small kind's 64 KiB slabs when two of its
// blocks fit one. Not in the hardened build, whose medium slabs end in a
// coloured size table that a 64 KiB slab of 1 280-byte blocks has no room for
// (hardened_box_init's check).
#ifndef YOUNG_SLAB_MAX_BLOCK
#if HAK_HARDENED
#define YOUNG_SLAB_MAX_BLOCK 0u
#else
#define YOUNG_SLAB_MAX_BLOCK (32u << 10)
#endif
#endif

// Bound of a class's TLS list: TLS_CACHE_BYTES worth of blocks (classes above
// 1 KiB: TLS_CACHE_BYTES_MEDIUM, so a refill or flush of a 32 KiB class moves
// 8 blocks, not 2: ws-medium at 1 thread costs 87 instructions per operation
// instead of 108 under callgrind, peak RSS unchanged), at least
// TLS_CACHE_CLASS_MIN_BLOCKS (the classes above 64 KiB: those above 128 KiB had
// 2-3 and a refill or flush moved one block, `ws8192 -w 1024 --min 64K --max
// 256K` made a refill every 9 operations, tcmalloc 0.67-0.69x our time; with 4,
// 1.16-1.28x faster at 1, 2 and 16 threads at less peak RSS; with 8, 1.26x
// faster again, tcmalloc 1.2x our time) and at most TLS_CACHE_MAX_BLOCKS (a
// flush walks at most half of that). A thread's bound shrunk or shared
// (tls_class_cap) stays at least TLS_CACHE_MIN_BLOCKS.
// A refill or flush moves half the bound (size_class_info_t.batch).
#define TLS_CACHE_BYTES       (64u << 10)    // small classes: ring at 16 threads 44 -> 29 MiB peak
                                             // RSS, ws-small +0.7 instructions per pair
#define TLS_CACHE_BYTES_MEDIUM (512u << 10)   // classes above 1 KiB (issue 9: see CURRENT_TASK)
#define TLS_CACHE_MIN_BLOCKS  2u
#define TLS_CACHE_CLASS_MIN_BLOCKS 8u
#define TLS_SHRINK_MAX        3u             // a consumer's medium bound: down to 1/8 (tiny_flush_overflow)
#define TLS_SHRINK_STREAK     8u             // overflows with no refill between that halve it
#define TLS_CACHE_MAX_BLOCKS  256u
// A class's bound (to HAK_KIND_MEDIUM_MAX, 128 KiB) grows (doubles, TLS_GROW_MAX
// times at most) while the thread frees its own blocks past the bound and then
// takes them back, up to tls_grown_bytes_of its block size and TLS_GROWN_MAX_BLOCKS
// (tiny_refill.c, tls_sll_box.h cap_grow). Medium classes too: at 8 blocks of
// 32 KiB a refill or flush, random 1-32 KiB blocks in a working set of 8192
// (`ws8192 --min 1K --max 32K`) made 150 k refills in 16 M operations, and
// ran at 1.11x the time (tcmalloc, whose caches hold more, 0.91x ours); random
// 32-128 KiB blocks 1.12x. Not the classes of the 2 MiB slabs (above 128
// KiB): a ring of two threads handing each other 64-256 KiB blocks grew their
// bounds on its own blocks coming back, each holding slabs of 8-12 blocks,
// and took 1.36x the time at 2.3x the RSS.
#ifndef TLS_GROW_MAX
#define TLS_GROW_MAX          6u                   // (-DTLS_GROW_MAX=0u: never, for measurements)
#endif
// A small class (to 1 KiB) may grow to 2 MiB of blocks: glibc's
// bench-malloc-simple takes and frees rounds of up to 1 600 blocks of one
// size, and at 1 MiB the list of 1 KiB blocks stopped at 1 024, so each round
// of 1 600 went home and came back (454 k refills in 12.8 M mallocs, tcmalloc
// 0.78x our time); at 2 MiB 774 refills and 0.76x the time (tcmalloc's
// level). Paired against 1 MiB: ws-small, mstress, larson, drift, rounds,
// sh8 and the realprog workloads level in time and peak RSS (mstress -t 16
// 36.3 -> 37.1 MB), the whole thread still within TLS_GROWN_TOTAL_BYTES.
#ifndef TLS_GROWN_BYTES
#define TLS_GROWN_BYTES       (2u << 20)
#endif
// The medium classes to HAK_MEDIUM_MAX (1-32 KiB) may grow to 2 MiB as well
// (twice the small classes' 1 MiB before the forty-sixth session; within the
// same total): 1 MiB is 32 blocks of 32 KiB, and a thread
// cycling through four sizes of 16-64 KiB in bursts of 60 (bench/bursts)
// refilled its 32 KiB class 18 times a round while the others held theirs:
// 0.69x the time with 2 MiB, tcmalloc's level; ws-medium 0.986x, drift
// 0.999x (11 pinned rounds), and at 4 to 16 threads ws-medium, ring of
// 1-16 KiB, mstress and prodcons -t 4 level in time at a few MB less peak
// RSS (9 rounds; an earlier set of 5 rounds had shown a few MB more).
#ifndef TLS_GROWN_BYTES_MEDIUM
#define TLS_GROWN_BYTES_MEDIUM (2u << 20)
#endif
// The classes above HAK_MEDIUM_MAX (40-128 KiB) may grow to 4 MiB (four
// times the small classes' 1 MiB of then): 1 MiB is 8-12 of their blocks, hardly past their own bound of 8 (random
// 32-128 KiB blocks 0.91x the time with 2 MiB, 64-256 KiB 0.90x), and 2 MiB
// 16-25, which random sizes over their eight classes still walked past every
// 25 operations (a refill each; tcmalloc 0.71x our time). With 4 MiB and a
// total of their own (TLS_GROWN_TOTAL_BYTES_LARGE): 0.73x the time, and less
// peak RSS (20.7 -> 16.5 MB: fewer flushes, fewer slabs left partial).
#ifndef TLS_GROWN_BYTES_LARGE
#define TLS_GROWN_BYTES_LARGE (4u << 20)
#endif
#ifndef TLS_GROWN_MAX_BLOCKS
#define TLS_GROWN_MAX_BLOCKS  16384u
#endif
// What all of a thread's grown bounds may add over their classes' bounds
// together, checked when a bound grows (the blocks they hold are the
// thread's own, reused, but no other class or thread can have them until it
// flushes): the classes to HAK_MEDIUM_MAX, and those above it apart, with a
// total of their own (a thread's 4 MiB for all was 2-4 of their grown
// bounds: 32-128 KiB at 0.84x the time with 16 MiB for all but 2 MiB a class,
// 0.73x with 4 MiB a class). 8 MiB for the classes to 32 KiB: with 4, random
// 1-32 KiB blocks (ws-medium, twenty classes) refilled 55.7 k times in 15 M
// operations, the 20-32 KiB classes every ~20 mallocs (24.2 k with 8 MiB,
// 21.8 k with 16): 0.958x the time in 21 pinned rounds (tcmalloc's level, at
// 0.95-0.96x ours before), 16 threads 0.94x, peak RSS level; 2 threads, drift,
// prodcons -t 4 of 1-32 KiB, rounds, mstress -t 16 and 32-128 KiB level
// (forty-first session).
#ifndef TLS_GROWN_TOTAL_BYTES
#define TLS_GROWN_TOTAL_BYTES (8u << 20)
#endif
#ifndef TLS_GROWN_TOTAL_BYTES_LARGE
#define TLS_GROWN_TOTAL_BYTES_LARGE (16u << 20)
#endif

// A class of 5 KiB to 56 KiB that is not a power of two takes HAK_CLASS_PAD
// bytes more than its size in its slab (the default build): its blocks then
// start on different L1 sets. A slab's blocks of a 4 KiB multiple all
// started on one set (L1's sets are 4 KiB of addresses apart), those of a 1
// KiB multiple on 2-4 of the 64: free reads a block's first line (its mark)
// and malloc its link, and with more than 12 such blocks in turn both missed
// L1. 64 slots of 4-64 KiB replaced at random: 0.035-0.046 s for 4 M
// rounds, tcmalloc 0.022 (which only stores at its free); these classes
// padded 0.021-0.024 (the 4-32 KiB powers of two too: 0.020-0.021);
// ws-medium (1-32 KiB) 0.96x the time (0.93x).
// The powers of two stay whole: a padded block is aligned to 64 only, and an
// aligned request lands on a power of two (size_class_aligned) whenever its
// size is one (a page-aligned page: posix_memalign(4096, 4096) in a loop
// took 7x the time from the page heap). From 64 KiB up a slab holds 2-8
// blocks: their lines are few.
#define HAK_CLASS_PAD 64u
#define HAK_CLASS_PADDED(sz) \
  (!HAK_HARDENED && (sz) > 4096u && (sz) < 65536u && ((sz) & ((sz) - 1u)) != 0u)

typedef struct size_class_info {
  uint32_t size;       // the largest request the class serves
  uint32_t block;      // the bytes a block takes in its slab: its stride, and
                       // what malloc_usable_size says (size, or size +
                       // HAK_CLASS_PAD: HAK_CLASS_PADDED)
  uint64_t magic;      // M = floor(2^64 / block) + 1 or + 2, whichever is odd: the block
                       // start test of slab_block_start (core/hakmem_fast.h) and the
                       // block index (off * M) >> 64 of the hardened build
  uint16_t tls_cap;    // bound of the tls_sll list for this class
  uint16_t batch;      // blocks moved per refill / flush
  uint8_t  kind;       // HAK_KIND_*
} size_class_info_t;

extern HAK_INTERNAL const size_class_info_t g_size_class[HAK_NUM_CLASSES];
// What one class's grown bound may hold, by its block size.
HAK_INLINE uint32_t tls_grown_bytes_of(uint32_t size) {
  return size > HAK_MEDIUM_MAX ? TLS_GROWN_BYTES_LARGE : size > HAK_TINY_MAX ? TLS_GROWN_BYTES_MEDIUM : TLS_GROWN_BYTES;
}
// The total a thread's grown bounds on cls's side of HAK_MEDIUM_MAX may add.
HAK_INLINE uint32_t tls_grown_total_of(unsigned cls) {
  return g_size_class[cls].size > HAK_MEDIUM_MAX ? TLS_GROWN_TOTAL_BYTES_LARGE : TLS_GROWN_TOTAL_BYTES;
}
extern HAK_INTERNAL const uint8_t g_tiny_class_lut[HAK_TINY_MAX + 1];
#define HAK_MEDIUM_LUT_SHIFT 8u
#define HAK_MEDIUM_LUT_STEPS (HAK_SLAB_MAX >> HAK_MEDIUM_LUT_SHIFT)
extern HAK_INTERNAL const uint8_t g_medium_class_lut[HAK_MEDIUM_LUT_STEPS];
// A class's TLS slot: the offset in words of its list in a thread's TLS lists
// (tls_list_of_slot, tiny/tls_sll_box.h), 2 * class, as malloc addresses it.
// Kept in each thread's size table.
#define HAK_TLS_SLOT_OF(cls) (2u * (cls))
HAK_INLINE unsigned size_class_tls_slot(unsigned cls) { return HAK_TLS_SLOT_OF(cls); }
HAK_INLINE unsigned size_class_of_tls_slot(unsigned slot) { return slot / 2u; }
// The offset of each class's TLS list from the thread pointer, the same in
// every thread (tls_list_tp_offset, tiny/tls_sll_box.h): set once at start-up
// (tls_sll_init_offsets), copied into a slab's metadata when it is bound.
extern HAK_INTERNAL int32_t g_class_tls_off[HAK_NUM_CLASSES];
_Static_assert(HAK_TLS_SLOT_OF(HAK_NUM_CLASSES - 1) <= 255, "a TLS slot is a byte");

// g_tiny_class_lut's contents (GNU range designators), for the copies that need
// them: HAK_TINY_CLASS_LUT_INIT_AS(f) holds f(class) (the TLS copy holds TLS slots).
#define HAK_TINY_CLASS_LUT_INIT_AS(f)                                                      \
  [0 ... 16] = f(0), [17 ... 32] = f(1), [33 ... 48] = f(2), [49 ... 64] = f(3), \
  [65 ... 80] = f(4), [81 ... 96] = f(5), [97 ... 112] = f(6),                      \
  [113 ... 128] = f(7), [129 ... 160] = f(8), [161 ... 192] = f(9),                 \
  [193 ... 224] = f(10), [225 ... 256] = f(11), [257 ... 320] = f(12),              \
  [321 ... 384] = f(13), [385 ... 448] = f(14), [449 ... 512] = f(15),              \
  [513 ... 640] = f(16), [641 ... 768] = f(17), [769 ... 896] = f(18),              \
  [897 ... 1024] = f(19)
#define HAK_TINY_CLASS_OF(cls) (cls)
#define HAK_TINY_CLASS_LUT_INIT HAK_TINY_CLASS_LUT_INIT_AS(HAK_TINY_CLASS_OF)

// Class of a request of n bytes, n <= HAK_TINY_MAX: one table load (1 KiB).
HAK_INLINE unsigned size_class_tiny(size_t n) { return g_tiny_class_lut[n]; }

// Class of a request of n bytes, HAK_TINY_MAX < n <= HAK_SLAB_MAX: one load.
// Every class above 1 KiB is a multiple of 256 bytes, so all requests of one
// 256-byte step ((n - 1) >> 8) take one class (tests/unit/test_size_class.c
// checks every n); a bit scan and shifts took 10 instructions.
HAK_INLINE unsigned size_class_medium(size_t n) { return g_medium_class_lut[(n - 1) >> HAK_MEDIUM_LUT_SHIFT]; }

// Class of a request of n bytes, n <= HAK_SLAB_MAX.
HAK_INLINE unsigned size_class_of(size_t n) {
  if (HAK_LIKELY(n <= HAK_TINY_MAX)) return size_class_tiny(n);
  return size_class_medium(n);
}

HAK_INLINE size_t size_class_size(unsigned cls) { return g_size_class[cls].size; }
// Can cls's first slab be a young one (YOUNG_SLAB_MAX_BLOCK)?
HAK_INLINE int size_class_has_young_slab(unsigned cls) {
  return g_size_class[cls].kind == HAK_KIND_MEDIUM && g_size_class[cls].block <= YOUNG_SLAB_MAX_BLOCK;
}

// The smallest class whose size is a multiple of `alignment` (a power of two,
// 16 .. 4 KiB) and at least need (alignment <= need <= HAK_SLAB_MAX): the class of
// need rounded up to the alignment, with no search. j * alignment for j <= 8
// is itself a class size (a power of two, or 5, 6 or 7 quarters of one), and
// above 8 * alignment classes are 2 * alignment or more apart, all multiples
// of it, but for 4608 = 9 * 512, itself a multiple (so the class of a need
// rounded to 512 past 4 KiB is still the first multiple that fits)
// (tests/unit/test_size_class.c checks every need and alignment against
// the search the aligned path made: posix_memalign(64) spent half its time in
// it, with a divide per class tried).
HAK_INLINE unsigned size_class_aligned(size_t need, size_t alignment) {
  return size_class_of((need + alignment - 1) & ~(alignment - 1));
}

#endif
