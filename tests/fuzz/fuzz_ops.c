// fuzz_ops.c — libFuzzer target: the input is a program of allocator operations
// run against the hak_* API (libhakmem core built with ASan+UBSan, HAK_DEBUG=1).
//
// Byte stream: [op][args...] repeated; missing bytes read as 0. 32 slots hold
// live blocks. Invariants checked after every operation:
//   - a block's contents (a pattern derived from its address and size) are intact
//     when it is freed, reallocated or handed to another thread; realloc keeps the
//     prefix; calloc memory is zero;
//   - results of 16 bytes or more are 16-byte aligned; aligned requests honour the
//     alignment; non-power-of-two alignments fail with EINVAL (*out untouched);
//   - hak_usable_size >= request and stable for the block's life; hak_owns is 1 for
//     every byte of a live block and 0 for stack and static addresses;
//   - no hak_get_stats counter goes below zero (checked after each input);
//   - overflowing calloc/reallocarray and huge requests give NULL + ENOMEM and leave
//     the old block intact; malloc(0) gives distinct freeable pointers.
// Blocks handed off go to a helper thread that verifies and frees them (remote frees).
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hakmem.h"

#define NSLOTS     32
#define FULL_CHECK (16u << 10)   // larger blocks: head, tail and stripes

#define FAILF(...) do { fprintf(stderr, "fuzz_ops: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

// ---------------------------------------------------------------- input
typedef struct { const uint8_t *d; size_t n, i; } in_t;
static uint8_t get8(in_t *in) { return in->i < in->n ? in->d[in->i++] : 0; }
static uint32_t get16(in_t *in) { uint32_t a = get8(in); return a | (uint32_t)get8(in) << 8; }

// Sizes: mostly small, sometimes medium, rarely large.
static size_t get_size(in_t *in) {
  uint8_t b = get8(in);
  uint32_t r = get16(in);
  switch (b >> 5) {
  case 0:  return b & 31;                                 // 0..31
  case 1: case 2: case 3: case 4: return 16 + r % 1024;   // small
  case 5:  return 1024 + r % 15360;                       // ..16 KiB
  case 6:  return (b & 16) ? 16384 + ((size_t)r << 4) % (1008u << 10)   // ..1 MiB
                           : 16384 + ((size_t)r << 2) % (240u << 10);   // ..256 KiB
  default: return (b & 24) == 24 ? (1u << 20) + ((size_t)r << 7) % (7u << 20)  // ..8 MiB
                                 : (size_t)1 << (4 + (b & 15));         // 16 B..512 KiB
  }
}

// ---------------------------------------------------------------- pattern
// Byte i of a block handed out at addr for size bytes. Blocks up to FULL_CHECK
// carry it everywhere; larger ones in the first and last 4 KiB and in a 64-byte
// stripe every 16 KiB (so huge blocks stay mostly untouched and cheap). The
// checking loops carry no coverage instrumentation: they are the test, not the
// code under test.
#define NO_COV __attribute__((no_sanitize("coverage")))
static inline uint64_t pat_seed(uintptr_t addr, size_t size) {
  uint64_t s = (uint64_t)addr * 0x9E3779B97F4A7C15ULL ^ (uint64_t)size * 0xC2B2AE3D27D4EB4FULL;
  return s ^ (s >> 29);
}
static inline uint8_t pat_byte(uint64_t seed, size_t i) {
  return (uint8_t)((seed + (uint64_t)(i / 8) * 0x9E3779B97F4A7C15ULL) >> ((i & 7) * 8));
}
// Calls fn(lo, hi) for each patterned range of a block of `size` bytes, cut at len.
#define FOR_RANGES(size, len, RANGE) do {                                      \
    size_t lim_ = (len);                                                       \
    if ((size) <= FULL_CHECK) { RANGE(0, lim_); }                              \
    else {                                                                     \
      RANGE(0, lim_ < 4096 ? lim_ : 4096);                                     \
      for (size_t pg_ = 16384; pg_ + 64 <= (size) - 4096 && pg_ < lim_; pg_ += 16384) \
        RANGE(pg_, pg_ + 64 < lim_ ? pg_ + 64 : lim_);                         \
      if ((size) - 4096 < lim_) RANGE((size) - 4096, lim_);                    \
    }                                                                          \
  } while (0)

NO_COV static void fill_range(uint8_t *p, uint64_t seed, size_t lo, size_t hi) {
  size_t i = lo;
  for (; i < hi && (i & 7); i++) p[i] = pat_byte(seed, i);
  for (; i + 8 <= hi; i += 8) {
    uint64_t v = seed + (uint64_t)(i / 8) * 0x9E3779B97F4A7C15ULL;
    memcpy(p + i, &v, 8);
  }
  for (; i < hi; i++) p[i] = pat_byte(seed, i);
}
NO_COV static long check_range(const uint8_t *p, uint64_t seed, size_t lo, size_t hi) {
  size_t i = lo;
  for (; i < hi && (i & 7); i++) if (p[i] != pat_byte(seed, i)) return (long)i;
  for (; i + 8 <= hi; i += 8) {
    uint64_t v = seed + (uint64_t)(i / 8) * 0x9E3779B97F4A7C15ULL, got;
    memcpy(&got, p + i, 8);
    if (got != v) break;
  }
  for (; i < hi; i++) if (p[i] != pat_byte(seed, i)) return (long)i;
  return -1;
}
NO_COV static long zero_check(const uint8_t *p, size_t n) {
  static const uint8_t zero[4096];
  for (size_t i = 0; i < n; i += sizeof zero) {
    size_t len = n - i < sizeof zero ? n - i : sizeof zero;
    if (memcmp(p + i, zero, len))
      for (size_t k = i; k < i + len; k++) if (p[k]) return (long)k;
  }
  return -1;
}

static void pat_fill(uint8_t *p, size_t size) {
  uint64_t seed = pat_seed((uintptr_t)p, size);
#define FILL_(lo, hi) fill_range(p, seed, lo, hi)
  FOR_RANGES(size, size, FILL_);
#undef FILL_
}
// Checks the first len bytes of p against the pattern of a block that was
// handed out at addr for size bytes (after realloc, addr is the old address).
static void pat_check(const uint8_t *p, uintptr_t addr, size_t size, size_t len, const char *what) {
  uint64_t seed = pat_seed(addr, size);
  long bad = -1;
#define CHECK_(lo, hi) do { if (bad < 0) bad = check_range(p, seed, lo, hi); } while (0)
  FOR_RANGES(size, len, CHECK_);
#undef CHECK_
  if (bad >= 0)
    FAILF("%s: block %p (%zu bytes, from %#lx) corrupted at offset %ld", what, (void *)p, size,
          (unsigned long)addr, bad);
}

// ---------------------------------------------------------------- slots
typedef struct { uint8_t *p; size_t size, usable, align; } slot_t;
static slot_t g_slot[NSLOTS];

static void check_new(void *p, size_t size, size_t align, const char *what) {
  if (!p) FAILF("%s(%zu) returned NULL (errno %d)", what, size, errno);
  uintptr_t a = (uintptr_t)p;
  if (size >= 16 && (a & 15)) FAILF("%s(%zu) = %p not 16-byte aligned", what, size, p);
  if (align && (a & (align - 1))) FAILF("%s(align %zu, %zu) = %p misaligned", what, align, size, p);
  size_t us = hak_usable_size(p);
  if (us < size) FAILF("%s(%zu) = %p: usable size %zu < request", what, size, p, us);
  if (!hak_owns(p)) FAILF("%s(%zu) = %p: hak_owns says not ours", what, size, p);
  if (size > 1 && !hak_owns((uint8_t *)p + size - 1))
    FAILF("%s(%zu) = %p: hak_owns(last byte) says not ours", what, size, p);
}

static void slot_set(unsigned k, void *p, size_t size, size_t align) {
  g_slot[k].p = p;
  g_slot[k].size = size;
  g_slot[k].usable = hak_usable_size(p);
  g_slot[k].align = align;
  pat_fill(p, size);
}

static void slot_verify(unsigned k, const char *what) {
  slot_t *s = &g_slot[k];
  pat_check(s->p, (uintptr_t)s->p, s->size, s->size, what);
  size_t us = hak_usable_size(s->p);
  if (us != s->usable) FAILF("usable size of %p changed from %zu to %zu", (void *)s->p, s->usable, us);
}

static void slot_free(unsigned k) {
  if (!g_slot[k].p) return;
  slot_verify(k, "free");
  hak_free(g_slot[k].p);
  g_slot[k].p = NULL;
}

// ---------------------------------------------------------------- helper thread
#define RING 64
typedef struct { uint8_t *p; size_t size; } handoff_t;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv_work = PTHREAD_COND_INITIALIZER, g_cv_idle = PTHREAD_COND_INITIALIZER;
static handoff_t g_ring[RING];
static unsigned g_head, g_tail;     // g_tail - g_head = queued
static int g_busy;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void *helper_main(void *arg) {
  (void)arg;
  unsigned n = 0;
  pthread_mutex_lock(&g_mu);
  for (;;) {
    while (g_head == g_tail) {
      g_busy = 0;
      pthread_cond_broadcast(&g_cv_idle);
      pthread_cond_wait(&g_cv_work, &g_mu);
    }
    g_busy = 1;
    handoff_t h = g_ring[g_head++ % RING];
    pthread_mutex_unlock(&g_mu);
    pat_check(h.p, (uintptr_t)h.p, h.size, h.size, "free in helper thread");
    hak_free(h.p);
    if (++n % 8 == 0) {             // the helper allocates too, so it has a cache of its own
      void *q = hak_malloc(n % 512);
      if (!q) FAILF("helper malloc failed");
      hak_free(q);
    }
    pthread_mutex_lock(&g_mu);
  }
  return NULL;
}
static void helper_start(void) {
  pthread_t t;
  if (pthread_create(&t, NULL, helper_main, NULL)) FAILF("pthread_create failed");
  pthread_detach(t);
}
static int handoff(uint8_t *p, size_t size) {
  pthread_mutex_lock(&g_mu);
  int ok = g_tail - g_head < RING;
  if (ok) {
    g_ring[g_tail++ % RING] = (handoff_t){p, size};
    pthread_cond_signal(&g_cv_work);
  }
  pthread_mutex_unlock(&g_mu);
  return ok;
}
static void helper_drain(void) {
  pthread_mutex_lock(&g_mu);
  while (g_head != g_tail || g_busy) pthread_cond_wait(&g_cv_idle, &g_mu);
  pthread_mutex_unlock(&g_mu);
}

// ---------------------------------------------------------------- operations
static char g_static_byte[64];

static void op_malloc(in_t *in, unsigned k) {
  size_t n = get_size(in);
  slot_free(k);
  void *p = hak_malloc(n);
  check_new(p, n, 0, "malloc");
  slot_set(k, p, n, 0);
}

static void op_realloc(in_t *in, unsigned k) {
  size_t n = get_size(in);
  if (n == 0) n = 1;                   // realloc(p, 0) frees: covered elsewhere
  slot_t *s = &g_slot[k];
  if (!s->p) {
    void *p = hak_realloc(NULL, n);
    check_new(p, n, 0, "realloc(NULL)");
    slot_set(k, p, n, 0);
    return;
  }
  slot_verify(k, "realloc");
  uintptr_t old = (uintptr_t)s->p;
  size_t old_size = s->size;
  void *q = hak_realloc(s->p, n);
  check_new(q, n, 0, "realloc");
  pat_check(q, old, old_size, old_size < n ? old_size : n, "realloc prefix");
  slot_set(k, q, n, 0);
}

static void op_calloc(in_t *in, unsigned k) {
  uint8_t c = get8(in);
  size_t n = get_size(in);
  slot_free(k);
  if (c == 0xff) {                      // overflow
    errno = 0;
    void *p = hak_calloc(SIZE_MAX / 2 + 1 + n, 2 + n % 7);
    if (p || errno != ENOMEM) FAILF("overflowing calloc returned %p errno %d", p, errno);
    return;
  }
  size_t cnt = 1 + c % 16, each = n / cnt;
  void *p = hak_calloc(cnt, each);
  check_new(p, cnt * each, 0, "calloc");
  long nz = zero_check(p, cnt * each);
  if (nz >= 0) FAILF("calloc(%zu, %zu) = %p: byte %ld is not zero", cnt, each, p, nz);
  slot_set(k, p, cnt * each, 0);
}

static void op_aligned(in_t *in, unsigned k) {
  uint8_t a = get8(in);
  size_t n = get_size(in);
  slot_free(k);
  if (a >= 0xf0) {                      // not a power of two: EINVAL, *out untouched
    size_t bad = 24 + (size_t)(a & 15) * 16;
    void *out = (void *)0x1234;
    int rc = hak_posix_memalign(&out, bad, n);
    if (rc != EINVAL || out != (void *)0x1234)
      FAILF("posix_memalign(align %zu) gave %d, out %p", bad, rc, out);
    errno = 0;
    void *p = hak_aligned_alloc(bad, n);
    if (p || errno != EINVAL) FAILF("aligned_alloc(align %zu) gave %p errno %d", bad, p, errno);
    return;
  }
  size_t align = (size_t)1 << (a % 22);   // 1 .. 2 MiB
  size_t want = align < 16 ? 16 : align;
  void *p = NULL;
  if (a & 0x80) {
    int rc = hak_posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, n);
    if (rc) FAILF("posix_memalign(%zu, %zu) failed: %d", align, n, rc);
  } else {
    p = hak_aligned_alloc(align, n);
  }
  check_new(p, n, want, "aligned");
  slot_set(k, p, n, want);
}

static void op_check(unsigned k) {
  slot_t *s = &g_slot[k];
  if (!s->p) return;
  slot_verify(k, "check");
  if (s->usable < s->size) FAILF("usable size %zu < %zu", s->usable, s->size);
  if (!hak_owns(s->p) || (s->size > 1 && !hak_owns(s->p + s->size / 2)) ||
      (s->size > 1 && !hak_owns(s->p + s->size - 1)))
    FAILF("hak_owns denies a byte of live block %p (%zu bytes)", (void *)s->p, s->size);
  if (s->align && ((uintptr_t)s->p & (s->align - 1))) FAILF("alignment changed?");
  // The whole usable area may be written.
  if (s->usable > s->size) {
    memset(s->p + s->size, 0xee, s->usable - s->size);
    for (size_t i = s->size; i < s->usable; i++) s->p[i] = 0;
  }
}

static void op_handoff(unsigned k) {
  slot_t *s = &g_slot[k];
  if (!s->p) return;
  slot_verify(k, "handoff");
  if (handoff(s->p, s->size)) s->p = NULL;
  else slot_free(k);
}

static void op_edge(in_t *in) {
  uint8_t e = get8(in);
  char stack_byte[16];
  void *volatile sp = stack_byte;
  switch (e % 8) {
  case 0:
    hak_free(NULL);
    if (hak_usable_size(NULL) != 0) FAILF("usable_size(NULL) != 0");
    break;
  case 1:
    if (hak_owns(sp)) FAILF("hak_owns(stack address) == 1");
    if (hak_owns(g_static_byte)) FAILF("hak_owns(static address) == 1");
    break;
  case 2: {
    void *a = hak_malloc(0), *b = hak_malloc(0);
    if (!a || !b || a == b) FAILF("malloc(0) gave %p and %p", a, b);
    hak_free(a);
    hak_free(b);
    break;
  }
  case 3: {
    errno = 0;
    void *p = hak_malloc((size_t)PTRDIFF_MAX + 1 + e);
    if (p || errno != ENOMEM) FAILF("malloc(PTRDIFF_MAX+) gave %p errno %d", p, errno);
    break;
  }
  case 4: {                               // reallocarray overflow keeps the block
    unsigned k = get8(in) % NSLOTS;
    if (!g_slot[k].p) break;
    errno = 0;
    void *q = hak_reallocarray(g_slot[k].p, SIZE_MAX / 4, 8);
    if (q || errno != ENOMEM) FAILF("overflowing reallocarray gave %p errno %d", q, errno);
    slot_verify(k, "after failed reallocarray");
    break;
  }
  case 5: {                               // reallocarray that fits
    unsigned k = get8(in) % NSLOTS;
    size_t cnt = 1 + get8(in) % 8, each = 1 + get8(in);
    slot_t *s = &g_slot[k];
    if (!s->p) break;
    slot_verify(k, "reallocarray");
    uintptr_t old = (uintptr_t)s->p;
    size_t old_size = s->size, n = cnt * each;
    void *q = hak_reallocarray(s->p, cnt, each);
    check_new(q, n, 0, "reallocarray");
    pat_check(q, old, old_size, old_size < n ? old_size : n, "reallocarray prefix");
    slot_set(k, q, n, 0);
    break;
  }
  case 6: {                               // realloc to 0 frees (glibc returns NULL)
    unsigned k = get8(in) % NSLOTS;
    if (!g_slot[k].p) break;
    slot_verify(k, "realloc to 0");
    void *q = hak_realloc(g_slot[k].p, 0);
    if (q) hak_free(q);
    g_slot[k].p = NULL;
    break;
  }
  default:
    if (e & 0x80) hak_trim(); else hak_thread_flush();
    break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pthread_once(&g_once, helper_start);
  in_t in = {data, size, 0};
  unsigned steps = 0;
  while (in.i < in.n && steps++ < 4096) {
    uint8_t op = get8(&in);
    unsigned k = (op >> 4) % NSLOTS ^ (get8(&in) & 16);
    k %= NSLOTS;
    switch (op % 10) {
    case 0: case 1: op_malloc(&in, k); break;
    case 2: slot_free(k); break;
    case 3: op_realloc(&in, k); break;
    case 4: op_calloc(&in, k); break;
    case 5: op_aligned(&in, k); break;
    case 6: op_check(k); break;
    case 7: case 8: op_handoff(k); break;
    default: op_edge(&in); break;
    }
  }
  for (unsigned k = 0; k < NSLOTS; k++) slot_free(k);
  helper_drain();
  // No counter of the engine may go below zero (byte counts near 2^64).
  hak_stats_t st;
  hak_get_stats(&st);
  const size_t *f = (const size_t *)&st;
  for (size_t i = 0; i < sizeof st / sizeof(size_t); i++)
    if (f[i] > ((size_t)1 << 50)) FAILF("hak_get_stats field %zu is %zu (underflow)", i, f[i]);
  return 0;
}
