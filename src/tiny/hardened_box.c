// hardened_box.c — canaries, fill-on-free, quarantine and shuffled refills of
// the hardened build (see hardened_box.h). Empty in the default build.
#include "tiny/hardened_box.h"

#if HAK_HARDENED
#include <errno.h>
#include "debug/report.h"
#include "os/os.h"
#include "tiny/free_batch_box.h"
#include "tiny/tiny_heap.h"
#include "tiny/tiny_refill.h"
#include "tiny/tiny_thread.h"
#include "tiny/transfer_box.h"

hard_keys_t g_hard_keys = {{0xa5a5a5a5a5a5a5a5ull, 0xa5a5a5a5a5a5a5a5ull}, 0};

uint8_t hard_canary_byte_of(uint64_t cookie) {
  uint8_t b = (uint8_t)((cookie >> 16) | 1u);
  return b == HARD_FILL_BYTE ? (uint8_t)(b ^ 2u) : b;
}

// The canary and the size word's key are drawn apart from the link key: a
// program reads them past an unterminated string (the canary has no NUL, so
// that a stray NUL terminator is caught), and with them it learned bits
// 16-55 of the link key.
void hardened_box_init(void) {
  uint64_t k = os_random_seed();
  uint64_t canary = 0x0101010101010101ull * hard_canary_byte_of(k);
  g_hard_keys.canary[0] = canary;
  g_hard_keys.canary[1] = canary;
  g_hard_keys.size_key = (uint32_t)(k >> 24);
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++)   // g_hard_class copies size_class.c's list
    if (g_hard_class[c].size != g_size_class[c].size || (g_hard_class[c].cls_remote & (HARD_QUAR_REMOTE - 1)) != c)
      hak_report_invariant("g_hard_class differs from g_size_class at class", NULL, c);
  // A coloured size table (hard_size_table_slot) stays inside its slab: the
  // slack past a slab's blocks and table (the first slab is SS_HEADER_SIZE
  // shorter) holds the largest colour.
  for (unsigned c = 0; c < HAK_NUM_CLASSES; c++) {
    uint32_t bs = g_size_class[c].size;
    if (bs <= HAK_TINY_MAX) continue;
    size_t colour = bs >= HARD_TABLE_COLOUR_MIN ? HARD_TABLE_COLOUR_MAX : HARD_TABLE_COLOUR_BASE;
    size_t slab = (size_t)1 << g_kind_slab_shift[g_size_class[c].kind];
    for (size_t bytes = slab - SS_HEADER_SIZE; bytes <= slab; bytes += SS_HEADER_SIZE) {
      uint32_t cap = slab_capacity(bytes, bs);
      if (bytes - (size_t)cap * (bs + HARD_SIZE_BYTES) < colour)
        hak_report_invariant("no room for the size table's colour in class", NULL, c);
    }
  }
}

// The class list of size_class.c, each with its fill offsets (hardened_box.h);
// hardened_box_init checks it against g_size_class.
#define HC(c, sz) { (sz), HARD_FILL_AT((sz), 32u), HARD_FILL_AT((sz), 48u), \
                   (uint16_t)((c) | ((sz) < HARD_CACHE_LINE ? HARD_QUAR_REMOTE : 0u)), \
                   {HARD_FILL_SECOND((sz), 64u), HARD_FILL_SECOND((sz), 80u), HARD_FILL_SECOND((sz), 96u), \
                    HARD_FILL_SECOND((sz), 112u)}, 0 }
#define HQUAD(c, b) HC((c), (b) * 5 / 4), HC((c) + 1, (b) * 6 / 4), HC((c) + 2, (b) * 7 / 4), HC((c) + 3, (b) * 2)
const hard_class_t g_hard_class[HAK_NUM_CLASSES] = {
  HC(0, 16u), HC(1, 32u), HC(2, 48u), HC(3, 64u), HC(4, 80u), HC(5, 96u), HC(6, 112u), HC(7, 128u),
  HQUAD(8, 128u), HQUAD(12, 256u), HQUAD(16, 512u),
  HQUAD(20, 1024u), HQUAD(24, 2048u), HC(28, HAK_CLASS_PAGE_AND_HEADER), HQUAD(29, 4096u), HQUAD(33, 8192u),
  HQUAD(37, 16384u), HQUAD(41, 32768u), HQUAD(45, 65536u), HQUAD(49, 131072u),
};

// "hakmem: <what> 0x<p><text1><n><text2>"
static HAK_COLD void report_at(const char *what, const void *p, const char *t1, size_t n, const char *t2) {
  hak_report_pointer_numbers(what, p, t1, n, t2, 0, NULL);
}

void hardened_report_fill(const void *p, uint32_t bs, const char *when) {
  const unsigned char *c = p;
  size_t end = hard_fill_end(bs), i = HARD_LINK_BYTES;
  while (i < end && c[i] == HARD_FILL_BYTE) i++;
  report_at("write after free of", p, " (byte ", i, when);   // going on: the block is used as it is
}

void *hardened_arm_bad(uint32_t bs, void *p, size_t n, uint32_t *size) {
  hardened_report_fill(p, bs, " of the freed block changed before its reuse)");
  hardened_arm_words_in(p, n, bs, size);   // going on: the block is used as it is
  return p;
}

void *hardened_arm_bad_slot(unsigned slot, void *p, size_t n) {
  uint32_t bs = hard_class_of_slot(slot)->size;
  return hardened_arm_bad(bs, p, n, hard_size_tail(p, bs));
}

// A quarantined block's first 16 bytes: a NULL link and its free mark.
static inline int quarantine_words_ok(const void *p) {
  hak_base_ptr_t b = hak_base_from_raw((void *)p);
  return hak_base_is_null(block_next(b)) && block_is_free(b);
}

void hardened_report_canary(const void *p, size_t n) {
  report_at("heap buffer overflow past", p, " (canary after the ", n, " requested bytes overwritten)");
}

size_t hardened_size_bad(const void *p, uint32_t bs) {
  report_at("heap buffer overflow past", p, " (the size word of its ", bs, "-byte block is overwritten)");
  return hard_request_max(bs);
}

// A size word past the largest request: an aligned block's tag, or an overflow.
size_t hardened_requested_slow(const slab_meta_t *m, const void *p) {
  uint32_t n;
  unsigned lg;
  if (hard_request_decode(*hard_size_slot(m, p) ^ hard_size_key(), m->block_size, &n, &lg)) return n;
  return hardened_size_bad(p, m->block_size);
}

unsigned hardened_alignment_lg(const slab_meta_t *m, const void *p) {
  uint32_t n;
  unsigned lg;
  return hard_request_decode(*hard_size_slot(m, p) ^ hard_size_key(), m->block_size, &n, &lg) ? lg : 0;
}

// ---- quarantine --------------------------------------------------------------

void hardened_thread_first(void) {
  int saved = errno;
  int after_exit = t_thread_status == THREAD_DONE;
  int live = thread_setup();       // the process is set up: a slab block was freed
  // Past the thread's exit hook (a later key destructor's free) no hook would
  // drain the ring again: the block goes home now (as core/hakmem.c's
  // alloc_after_exit does for a malloc there).
  if (live && after_exit) thread_teardown();
  errno = saved;
}

__thread hard_quarantine_t t_quar __attribute__((tls_model("initial-exec")));
__thread hard_quarantine_t t_quar_medium __attribute__((tls_model("initial-exec")));

void hardened_free_medium(const slab_meta_t *m, void *p, size_t want) {
  uint32_t bs = m->block_size;                // 64 or more: never for the remote buffer
  uint32_t n = *hard_size_table_slot(m, p) ^ hard_size_key();
  if (HAK_UNLIKELY(n > bs - HARD_TAIL_MEDIUM || (want != HARD_NO_SIZE && want != n) || hard_canary_diff_in(p, n, bs) != 0)) {
    hardened_free_bad(m, m->cls, p, want);
    return;
  }
  hardened_quarantine_put_in(&t_quar_medium, 1, m->cls, bs, p, HARD_MEDIUM_FILL);
}

// Was block p of bs bytes, failing its free's checks, freed before (its mark
// overwritten since, so the free did not see it)? Its fill is intact where a
// live block's checked words would be: the whole block past its link and mark
// up to 128 bytes (the size word of a tiny block of 128 bytes or less is in the
// fill), or the canary's first byte at n when the fill covers it.
static int freed_before(const void *p, uint32_t bs, size_t n) {
  if (hard_fill_diff(p, bs) != 0) return 0;
  if (bs <= HARD_FILL_MAX) return 1;
  return n >= HARD_LINK_BYTES && n + HARD_CANARY_BYTES <= hard_fill_end(bs) && ((const unsigned char *)p)[n] == HARD_FILL_BYTE;
}

_Static_assert(sizeof(superslab_t) <= SS_HEADER_SIZE - sizeof(uint32_t), "the 4 bytes before slab 0 are never written");

// Is w, the size word of a tiny block of bs bytes, that block being armed by
// another thread: its canary window (16 bytes, one store) written, its size
// word not yet? A request within 16 bytes of the class has a window over the
// word's 4 bytes (the canary's bytes throughout); one 17-19 bytes under it
// has a window that ends inside the word (seen once in CI: stress_malloc -t
// 8 under the hardened library, "heap buffer underflow before P (or an
// overflow past the 224-byte block below it)"): its low 1-3 bytes are the
// canary's and the rest what the word held before, a free block's (the
// fill's bytes or the size key's) or, armed in place, a live size word's (a
// request of at most bs bytes under the key).
static int being_armed(uint32_t w, uint32_t bs) {
  uint32_t c = (uint32_t)hard_canary_word();
  for (unsigned k = 1; k <= 4; k++) {
    uint32_t lo = k < 4 ? (1u << (8 * k)) - 1u : UINT32_MAX;
    if ((w & lo) != (c & lo)) return 0;
    if ((w & ~lo) == ((uint32_t)HARD_FILL_WORD & ~lo) || ((w ^ hard_size_key()) & ~lo) <= bs) return 1;
  }
  return 0;
}

// The 4 bytes before tiny block p of slab m: the size word of the block
// below (hard_below_fast_ok), an aligned block's tag included, or the
// canary's bytes (being_armed): another thread arming the block below (malloc, realloc in
// place) writes its canary window, which covers the size word for a request
// within 16 bytes of the class, and then the size word, so a free of p
// between the two stores reads the canary (sh8bench's shape at 2 threads
// was reported as an underflow about once in a few hundred runs; an
// underflow that writes the process's secret canary byte into all four is
// not a guess to make). Before a slab's first block: in slab 0 the
// SuperSlab header's last bytes, which nothing writes (0); in another slab
// the slab below's last bytes, which may be anything.
static int below_ok(const slab_meta_t *m, const void *p) {
  uint32_t w = ((const uint32_t *)p)[-1], bs = m->block_size, n;
  unsigned lg;
  if ((const char *)p == m->base) return m->index != 0 || w == 0;
  return hard_below_fast_ok(w, bs) || being_armed(w, bs) || hard_request_decode(w ^ hard_size_key(), bs, &n, &lg);
}

static void check_below(const slab_meta_t *m, const void *p) {
  if (below_ok(m, p)) return;
  if ((const char *)p == m->base)
    hak_report_pointer_error("heap buffer underflow before", p,
                             " (the first block of its slab: the bytes before it changed)");
  else
    report_at("heap buffer underflow before", p, " (or an overflow past the ", m->block_size,
              "-byte block below it: that block's size word is overwritten)");
}

// In the order the checks had as two calls (the sized delete's, then free's):
// the size word, the size given, the canary. A block freed before is reported
// as the double free it is, and left where it is (going on).
void hardened_free_bad(const slab_meta_t *m, unsigned cls, void *p, size_t want) {
  uint32_t bs = m->block_size;
  uint32_t raw = *hard_size_slot(m, p) ^ hard_size_key();
  if (freed_before(p, bs, raw)) {
    hak_report_pointer_error("double free of", p, " (freed before: its fill is intact, its free mark overwritten)");
    return;
  }
  size_t n = hardened_requested(m, p);       // reports a size word out of range
  if (want != HARD_NO_SIZE && want != n) hardened_report_delete("sized delete with the wrong size of", p, want, n);
  if (hard_canary_diff_in(p, n, bs) != 0) hardened_report_canary(p, n);
  if (bs <= HAK_TINY_MAX) check_below(m, p);
  hardened_quarantine_put(cls, bs, p, &g_hard_class[m->cls]);   // going on (HAKMEM_ABORT_ON_ERROR=0)
}

void hardened_free_below(const slab_meta_t *m, unsigned cls, void *p) {
  check_below(m, p);
  hardened_quarantine_put(cls, m->block_size, p, &g_hard_class[m->cls]);
}

void hardened_report_delete(const char *what, const void *p, size_t given, size_t actual) {
  hak_report_pointer_numbers(what, p, " (given ", given, ", the block's is ", actual, ")");
}

// A block leaving the quarantine that hardened_release_fast could not push:
// its first words changed (reported), its list is full (flushed first), or it
// is another thread's block under a cache line (the remote buffer). Keeps
// errno (a flush may reach the kernel).
void hardened_release_slow(unsigned cls, uint32_t bs, void *p) {
  (void)bs;
  int saved = errno;
  hak_base_ptr_t b = hak_base_from_raw(p);
  if (!quarantine_words_ok(p)) {
    hak_report_pointer_error("write after free of", p, " (its first 16 bytes changed in quarantine)");
    block_set_free(b);                     // going on: it leaves as a free block
  }
  int remote = (cls & HARD_QUAR_REMOTE) != 0;
  cls &= HARD_QUAR_REMOTE - 1;
  if (remote) tiny_free_remote(cls, b);
  else tiny_push_flushing(cls, b);
  errno = saved;
}

int hardened_handover(unsigned cls, void *p) {
  // As the default build's drain: a batching thread's blocks of the classes
  // the exchange takes (larger ones go home; the exchange's looks at idle
  // classes never see theirs: drift -t 2 peaked at 48 MB against 29).
  if (!t_free_batch_active || g_size_class[cls].size > TRANSFER_MAX_BLOCK) return 0;
  slab_meta_t *m = ss_registry_slab_of(p);
  if (atomic_load_explicit(&m->owner, memory_order_relaxed) == thread_self_id() || !quarantine_words_ok(p)) return 0;
  tiny_handover(cls, hak_base_from_raw(p));
  return 1;
}

static void quarantine_release(void *p, unsigned cls, uint32_t bs) {
  if (bs > HAK_TINY_MAX && t_tls_cache.cap_shift[cls] != 0 && hardened_handover(cls, p)) return;
  if (!hardened_release_fast(&t_tls_cache, cls, p, 1)) hardened_release_slow(cls, bs, p);
}

// The oldest block of ring q out of it (the ring is not empty); its info in *info.
static void *quarantine_take_oldest(hard_quarantine_t *q, uint64_t *info) {
  hard_quar_slot_t *s = &q->slot[(q->next - q->used) & (HARD_QUAR_SLOTS - 1)];
  void *p = s->p;
  *info = s->info;
  s->p = NULL;
  q->used--;
  if (q == &t_quar_medium) q->bytes -= hard_quar_size(s->info);
  return p;
}

// The oldest block of ring q leaves (the ring is not empty).
static void quarantine_release_oldest(hard_quarantine_t *q) {
  uint64_t info;
  void *p = quarantine_take_oldest(q, &info);
  quarantine_release(p, hard_quar_cls(info), hard_quar_size(info));
}

// Past the byte bound after a free into the medium ring: the block the ring
// pushed out (if any) leaves, then the oldest ones until the rest fit (the
// newest always stays).
void hardened_quarantine_trim(void *old, unsigned old_cls, uint32_t old_bs) {
  hard_quarantine_t *q = &t_quar_medium;
  if (old != NULL) quarantine_release(old, old_cls, old_bs);
  while (q->bytes > HARD_QUAR_BYTES && q->used > 1) quarantine_release_oldest(q);
}

void hardened_quarantine_drain(void) {
  while (t_quar.used > 0) quarantine_release_oldest(&t_quar);
  while (t_quar_medium.used > 0) quarantine_release_oldest(&t_quar_medium);
}

// Ring q drained: another heap's blocks straight home, this heap's as above.
static void quarantine_drain_home(hard_quarantine_t *q, uintptr_t self) {
  while (q->used > 0) {
    uint64_t info;
    void *p = quarantine_take_oldest(q, &info);
    slab_meta_t *m = ss_registry_slab_of(p);
    if (atomic_load_explicit(&m->owner, memory_order_relaxed) == self) {
      quarantine_release(p, hard_quar_cls(info), hard_quar_size(info));
      continue;
    }
    if (!quarantine_words_ok(p))
      hak_report_pointer_error("write after free of", p, " (its first 16 bytes changed in quarantine)");
    tiny_free_after_exit(m, hak_base_from_raw(p));   // its owner takes it, or whoever adopts the slab
  }
}

void hardened_quarantine_drain_home(void) {
  uintptr_t self = thread_self_id();
  quarantine_drain_home(&t_quar, self);
  quarantine_drain_home(&t_quar_medium, self);
}

static void quarantine_check_ring(hard_quarantine_t *q) {
  for (uint32_t i = 0; i < HARD_QUAR_SLOTS; i++) {
    hard_quar_slot_t *s = &q->slot[(q->next + i) & (HARD_QUAR_SLOTS - 1)];
    if (s->p == NULL) continue;
    if (!quarantine_words_ok(s->p))
      hak_report_pointer_error("write after free of", s->p, " (its first 16 bytes changed in quarantine)");
    else if (hard_fill_diff(s->p, hard_quar_size(s->info)) != 0)
      hardened_report_fill(s->p, hard_quar_size(s->info), " of the freed block changed after its free)");
  }
}

void hardened_quarantine_check(void) {
  quarantine_check_ring(&t_quar);
  quarantine_check_ring(&t_quar_medium);
}

// ---- randomised reuse ----------------------------------------------------------

static __thread uint64_t t_rng __attribute__((tls_model("initial-exec")));

// A multiplicative congruential generator mod 2^64 (Steele and Vigna's
// multiplier for an MCG): one multiply, where xorshift64 took six shifts and
// xors and three moves in the shuffle's loop (callgrind, prodcons -n 400000:
// the shuffle's 8.3M instructions of 118M -> 6.3M). The state stays odd (the
// seed is); only its high 32 bits are used, the MCG's good ones.
#define RNG_MCG_MULT 0xf1357aea2e62a9c5ull
static inline uint64_t rng_step(uint64_t x) { return x * RNG_MCG_MULT; }

// One pass of the inside-out Fisher-Yates shuffle (Durstenfeld's, as the
// chain is read: block i goes to a uniform j <= i, the one there to i), then
// one pass linking the blocks in their new order. The generator's state, the
// cookie and the array stay in registers and on the stack: the block stores
// could alias TLS and globals, and the form with rng_next() per swap, a `%`
// (a divide) and a separate collecting pass cost 44 instructions per block
// (prodcons refills on nearly every malloc: 12% of its hardened
// instructions). The index is the high half of a 32-bit random number times
// i + 1 (Lemire's multiply-shift; its bias is below 2^-24 for i < 256).
void hardened_shuffle_chain(hak_base_ptr_t *first, hak_base_ptr_t *last, uint32_t n) {
  hak_base_ptr_t v[TLS_CACHE_MAX_BLOCKS];
  if (n < 2 || n > TLS_CACHE_MAX_BLOCKS) return;
  uint64_t x = t_rng;
  if (HAK_UNLIKELY(x == 0)) x = (g_block_cookie ^ (uint64_t)thread_self_id()) | 1u;
  const uintptr_t cookie = g_block_cookie;
  hak_base_ptr_t b = *first;
  v[0] = b;
  for (uint32_t i = 1; i < n; i++) {
    b = hak_base_from_raw((void *)(*(const uintptr_t *)hak_base_raw(b) ^ (uintptr_t)hak_base_raw(b) ^ cookie));   // block_next
    x = rng_step(x);
    uint32_t j = (uint32_t)(((x >> 32) * (uint64_t)(i + 1)) >> 32);
    v[i] = v[j];
    v[j] = b;
  }
  t_rng = x;
  for (uint32_t i = 0; i + 1 < n; i++)   // block_set_next
    *(uintptr_t *)hak_base_raw(v[i]) = (uintptr_t)hak_base_raw(v[i + 1]) ^ (uintptr_t)hak_base_raw(v[i]) ^ cookie;
  *first = v[0];
  *last = v[n - 1];
}
#else
typedef int hardened_box_unused_t;   // ISO C: a translation unit is not empty
#endif
