// hardened_box.c — canaries, fill-on-free, quarantine and shuffled refills of
// the hardened build (see hardened_box.h). Empty in the default build.
#include "tiny/hardened_box.h"

#if HAK_HARDENED
#include <errno.h>
#include <string.h>

#include "debug/report.h"
#include "tiny/tiny_heap.h"
#include "tiny/tiny_refill.h"

// One byte of the process key (never 0) for canaries; the size word's key.
static inline unsigned char hard_canary_byte(void) { return (unsigned char)((g_block_cookie >> 16) | 1u); }
static inline uint32_t hard_size_key(void) { return (uint32_t)(g_block_cookie >> 24); }

static inline size_t hard_fill_end(uint32_t block_size) {
  return block_size < HARD_FILL_MAX ? block_size : HARD_FILL_MAX;
}

void hardened_fill(hak_base_ptr_t b, uint32_t block_size) {
  size_t end = hard_fill_end(block_size);
  if (end > HARD_LINK_BYTES) memset((char *)hak_base_raw(b) + HARD_LINK_BYTES, HARD_FILL_BYTE, end - HARD_LINK_BYTES);
}

// "hakmem: <what> 0x<p> (<text1><n><text2>)"
static HAK_COLD void report_at(const char *what, const void *p, const char *t1, size_t n, const char *t2) {
  char detail[96];
  size_t at = hak_fmt_str(detail, sizeof detail, 0, t1);
  at += hak_fmt_u64(detail + at, sizeof detail - at, n);
  hak_fmt_str(detail, sizeof detail, at, t2);
  hak_report_pointer_error(what, p, detail);
}

// A quarantined block's first 16 bytes: a NULL link and its free mark.
static inline int quarantine_words_ok(const void *p) {
  hak_base_ptr_t b = hak_base_from_raw((void *)p);
  return hak_base_is_null(block_next(b)) && block_is_free(b);
}

// Report a write after free when the fill of free block p (bs bytes) is not
// intact; `when` says when it was found. A quarantined block's first 16 bytes
// are known too: a NULL link and its free mark.
static void fill_check(const void *p, uint32_t bs, const char *when, int quarantined) {
  const unsigned char *c = p;
  if (quarantined && !quarantine_words_ok(p)) {
    hak_report_pointer_error("write after free of", p, " (its first 16 bytes changed in quarantine)");
    return;
  }
  size_t end = hard_fill_end(bs);
  for (size_t i = HARD_LINK_BYTES; i < end; i += sizeof(uint64_t)) {
    uint64_t w;
    memcpy(&w, c + i, sizeof w);
    if (HAK_UNLIKELY(w != 0xdfdfdfdfdfdfdfdfull)) {
      while (c[i] == HARD_FILL_BYTE) i++;
      report_at("write after free of", p, " (byte ", i, when);
      return;                             // going on: the block is used as it is
    }
  }
}

void hardened_arm(uint32_t bs, void *p, size_t n) {
  fill_check(p, bs, " of the freed block changed before its reuse)", 0);
  unsigned char *t = (unsigned char *)p;
  size_t size_at = bs - HARD_SIZE_BYTES;
  size_t canary_end = n + HARD_CANARY_BYTES < size_at ? n + HARD_CANARY_BYTES : size_at;
  memset(t + n, hard_canary_byte(), canary_end - n);
  uint32_t word = (uint32_t)n ^ hard_size_key();
  memcpy(t + size_at, &word, sizeof word);
}

size_t hardened_requested(const slab_meta_t *m, const void *p, const char *op) {
  uint32_t bs = m->block_size, word;
  memcpy(&word, (const char *)p + bs - HARD_SIZE_BYTES, sizeof word);
  uint32_t n = word ^ hard_size_key();
  if (HAK_UNLIKELY(n > bs - HARD_TAIL_BYTES)) {
    (void)op;
    report_at("heap buffer overflow past", p, " (the size word at the end of its ", bs, "-byte block is overwritten)");
    return bs - HARD_TAIL_BYTES;
  }
  return n;
}

// ---- quarantine --------------------------------------------------------------

typedef struct hard_quarantine {
  void    *slot[HARD_QUAR_SLOTS];   // a ring: oldest at head
  uint32_t size[HARD_QUAR_SLOTS];   // each block's size and class: the eviction
  uint8_t  cls[HARD_QUAR_SLOTS];    //   reads no slab metadata
  uint32_t head, count;
  size_t   bytes;                   // block bytes of the slots in use
} hard_quarantine_t;

static __thread hard_quarantine_t t_quar __attribute__((tls_model("initial-exec")));

// The oldest block goes where the default build's free sends a checked block
// (core/hakmem.c, hak_free_checked): a block under a cache line of a slab
// another thread owns to this thread's remote buffer, any other to the TLS
// list of its class (it keeps its fill and mark either way).
#define HARD_CACHE_LINE 64u
static void quarantine_release_oldest(hard_quarantine_t *q) {
  void *p = q->slot[q->head];
  unsigned cls = q->cls[q->head];
  uint32_t bs = q->size[q->head];
  q->bytes -= bs;
  q->head = (q->head + 1) % HARD_QUAR_SLOTS;
  q->count--;
  // Its first 16 bytes now (the list words overwrite them next); the fill is
  // checked when malloc hands the block out again.
  if (HAK_UNLIKELY(!quarantine_words_ok(p)))
    hak_report_pointer_error("write after free of", p, " (its first 16 bytes changed in quarantine)");
  hak_base_ptr_t b = hak_base_from_raw(p);
  int saved = errno;                    // free keeps errno; a flush may reach the kernel
  if (bs < HARD_CACHE_LINE &&
      atomic_load_explicit(&ss_slab_of(ss_of(p), p)->owner, memory_order_relaxed) != thread_self_id()) {
    tiny_free_remote(cls, b);
  } else {
    tls_cache_t *tc = &t_tls_cache;
    if (tc->room[cls] == 0) tiny_flush(cls, g_size_class[cls].batch);
    tls_sll_push(tc, cls, b);
  }
  errno = saved;
}

void hardened_free_block(slab_meta_t *m, void *p) {
  uint32_t bs = m->block_size;
  size_t n = hardened_requested(m, p, "heap buffer overflow past");
  const unsigned char *c = p;
  size_t size_at = bs - HARD_SIZE_BYTES;
  size_t canary_end = n + HARD_CANARY_BYTES < size_at ? n + HARD_CANARY_BYTES : size_at;
  unsigned char k = hard_canary_byte();
  int bad = 0;
  size_t i = n;
  if (canary_end - n >= 8) {            // whole words, the last one overlapping
    uint64_t kw = 0x0101010101010101ull * k, w;
    for (; i + 8 <= canary_end; i += 8) { memcpy(&w, c + i, 8); bad |= w != kw; }
    memcpy(&w, c + canary_end - 8, 8);
    bad |= w != kw;
  } else {
    for (; i < canary_end; i++) bad |= c[i] != k;
  }
  if (HAK_UNLIKELY(bad)) report_at("heap buffer overflow past", p, " (canary after the ", n, " requested bytes overwritten)");
  hak_base_ptr_t b = hak_base_from_raw(p);
  hardened_fill(b, bs);
  block_set_free(b);                      // a second free is a double free from now on
  block_set_next(b, HAK_BASE_NULL);       // checked, with the mark, when it leaves
  hard_quarantine_t *q = &t_quar;
  while (q->count == HARD_QUAR_SLOTS || (q->count > 0 && q->bytes + bs > HARD_QUAR_BYTES))
    quarantine_release_oldest(q);
  uint32_t at = (q->head + q->count) % HARD_QUAR_SLOTS;
  q->slot[at] = p;
  q->size[at] = bs;
  q->cls[at] = (uint8_t)m->cls;
  q->count++;
  q->bytes += bs;
}

void hardened_quarantine_drain(void) {
  hard_quarantine_t *q = &t_quar;
  while (q->count > 0) quarantine_release_oldest(q);
}

void hardened_quarantine_check(void) {
  hard_quarantine_t *q = &t_quar;
  for (uint32_t i = 0; i < q->count; i++) {
    void *p = q->slot[(q->head + i) % HARD_QUAR_SLOTS];
    fill_check(p, q->size[(q->head + i) % HARD_QUAR_SLOTS], " of the freed block changed after its free)", 1);
  }
}

// ---- randomised reuse ----------------------------------------------------------

static __thread uint64_t t_rng __attribute__((tls_model("initial-exec")));

static inline uint64_t rng_next(void) {
  uint64_t x = t_rng;
  if (HAK_UNLIKELY(x == 0)) x = (g_block_cookie ^ (uint64_t)thread_self_id()) | 1u;
  x ^= x << 13;                          // xorshift64 (Marsaglia): cheap, never 0
  x ^= x >> 7;
  x ^= x << 17;
  t_rng = x;
  return x * 0x2545f4914f6cdd1dull;
}

void hardened_shuffle_chain(hak_base_ptr_t *first, hak_base_ptr_t *last, uint32_t n) {
  hak_base_ptr_t v[TLS_CACHE_MAX_BLOCKS];
  if (n < 2 || n > TLS_CACHE_MAX_BLOCKS) return;
  hak_base_ptr_t b = *first;
  for (uint32_t i = 0; i < n; i++) {
    v[i] = b;
    if (i + 1 < n) b = block_next(b);
  }
  for (uint32_t i = n - 1; i > 0; i--) {  // Fisher-Yates
    uint32_t j = (uint32_t)((rng_next() >> 32) % (i + 1));
    hak_base_ptr_t t = v[i];
    v[i] = v[j];
    v[j] = t;
  }
  for (uint32_t i = 0; i + 1 < n; i++) block_set_next(v[i], v[i + 1]);
  *first = v[0];
  *last = v[n - 1];
}
#else
typedef int hardened_box_unused_t;   // ISO C: a translation unit is not empty
#endif
