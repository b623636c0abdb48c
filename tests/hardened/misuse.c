// misuse.c — one program per row of issue 12's table: each case does one bad
// thing and expects the hardened library (LD_PRELOAD=libhakmem-hardened.so) to
// stop the program with one line on stderr, "hakmem: <misuse> 0x<address>...",
// naming the misuse, and SIGABRT. Cases marked EXIT0 check a property with no
// report (read after free sees the fill; malloc(0) may be freed; randomised
// reuse; malloc(0) addresses distinct; a program's own SIGSEGV handler still
// gets its faults; the library's GOT read-only). The runner is faults.c's:
// each case in a forked child, stderr captured; the child ends with exit() so
// the library's exit checks run.
//
//   misuse            run every case      misuse -l   list them
//   misuse NAME...    run those only
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "child_run.h"

typedef int (*test_fn)(void);
enum { EXPECT_EXIT0, EXPECT_ABORT_REPORT };
// report: how the report starts (after "hakmem: "); "A ... B": starts with A,
// and its line says B further on.
typedef struct { const char *name; test_fn fn; int expect; const char *report; } test_t;

static volatile unsigned char g_sink;
static void *volatile g_keep;

// The C++ operators, called by their names (resolved in the preloaded library).
static void *cxx(const char *name) {
  void *f = dlsym(RTLD_DEFAULT, name);
  if (f == NULL) { fprintf(stderr, "no %s\n", name); exit(9); }
  return f;
}

// ---- write after free (small), write after free then reuse, read after free
static int t_write_after_free(void) {
  unsigned char *p = malloc(64);
  free(p);
  p[40] = 1;                         // found at exit (still quarantined)
  return 0;
}
static int t_write_after_free_then_reuse(void) {
  unsigned char *p = malloc(64);
  free(p);
  p[40] = 1;
  for (int i = 0; i < 1000; i++) free(malloc(64));   // p leaves the quarantine and comes back
  return 0;
}
// A write into a freed block's second cache line, then its reuse (an
// independent misuse program's: byte 65 of a 128-byte request, whose block is
// 160 bytes; byte 100 of a 32 KiB one): the fill reached 64 bytes, unseen.
static int t_write_after_free_second_line(void) {
  unsigned char *volatile p = malloc(128);
  free(p);
  p[65] = 1;
  for (int i = 0; i < 100000; i++) free(malloc(128));
  return 0;
}
static int t_write_after_free_second_line_medium(void) {
  unsigned char *volatile p = malloc(32768);
  free(p);
  p[100] = 1;
  for (int i = 0; i < 10000; i++) free(malloc(32768));
  return 0;
}
// The same through operator new and sized delete: new checks the fill on its
// own inline path (its way out for a changed fill is not malloc's).
static int t_write_after_free_then_new(void) {
  void *(*nw)(size_t) = cxx("_Znwm");
  void (*del)(void *, size_t) = cxx("_ZdlPvm");
  unsigned char *p = nw(64);
  del(p, 64);
  p[40] = 1;
  for (int i = 0; i < 1000; i++) del(nw(64), 64);   // p leaves the quarantine and comes back
  return 0;
}
static int t_read_after_free_sees_fill(void) {
  unsigned char *p = malloc(64);
  memset(p, 'S', 64);
  free(p);
  for (int i = 16; i < 64; i++)
    if (p[i] == 'S') return 1;       // old data readable after free
  return 0;
}
// A block malloc hands out, fresh or reused, does not show its free-list
// link and mark (its encoded link would tell a program reading it
// uninitialised the next block's address xor the process key).
static int t_handed_out_block_shows_no_link(void) {
  void *keep[512];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 512; i++) {
      size_t n = 8 + (size_t)(i % 4) * 600;   // tiny and medium
      const unsigned char *c = keep[i] = malloc(n);
      if (c == NULL) return 1;
      for (size_t k = 0; k < 16 && k < n; k++)   // the program's bytes (a canary follows a request under 16)
        if (c[k] != 0) return 1;
    }
    for (int i = 0; i < 512; i++) free(keep[i]);
  }
  return 0;
}

// ---- overflow past a small block (1 and 8 bytes)
static int t_overflow_1_byte(void) {
  unsigned char *p = malloc(24);
  p[malloc_usable_size(p)] = 0;      // the usable size is the request: one past it
  free(p);
  return 0;
}
// The overflows below change the bytes they hit: a fixed value would be the
// process's canary byte (random, never 0) in about one run of 255.
static int t_overflow_8_bytes(void) {
  unsigned char *p = malloc(32);
  for (int i = 32; i < 40; i++) p[i] ^= 0x5a;
  free(p);
  return 0;
}
static int t_overflow_medium(void) {
  unsigned char *p = malloc(5000);
  p[5000] ^= 1;
  free(p);
  return 0;
}
// A medium block needs only the canary's 16 bytes past the request (its size
// word is in its slab's table; a tiny one needs 20): the largest request of
// the 1280-byte class is 1264 bytes, used to its end with no report, and one
// byte past it is reported.
static int t_medium_request_at_class_end(void) {
  unsigned char *p = malloc(1264);
  memset(p, 'x', 1264);
  if (malloc_usable_size(p) != 1264) return 1;
  free(p);
  return 0;
}
static int t_overflow_medium_at_class_end(void) {
  unsigned char *p = malloc(1264);
  p[1264] ^= 1;
  free(p);
  return 0;
}

// realloc keeps a block that has room for the new request and its tail (the
// default build's rule): the canary moves to the new end, so one byte past it
// is still found, and an overflow before the realloc is found by the realloc
// as a free would find it.
static int t_overflow_after_realloc_in_place(void) {
  unsigned char *p = malloc(40);     // a 64-byte block: requests up to 44
  unsigned char *q = realloc(p, 44);
  if (q != p || malloc_usable_size(q) != 44) return 1;   // kept in place
  memset(q, 'x', 44);
  q[44] ^= 1;
  free(q);
  return 0;
}
static int t_overflow_before_realloc(void) {
  unsigned char *p = malloc(5000);
  p[5000] ^= 1;
  g_keep = realloc(p, 5100);
  return 0;
}

// ---- overflow past a large block, use after free of a large block
static int t_overflow_large(void) {
  unsigned char *p = malloc(300000);
  p[malloc_usable_size(p)] = 1;      // the guard page
  return 0;
}
static int t_use_after_free_large(void) {
  unsigned char *p = malloc(300000);
  free(p);
  p[100] = 1;
  return 0;
}
// A write far past a live block (a wild index; glibc's memset of a large
// overflow writes its tail first) lands in a freed run, past the guard page:
// the report names both causes it can be (mimalloc-bench's
// one_mbyte_overflow was reported as a use after free alone).
static int t_overflow_far_past_large_into_a_freed_run(void) {
  unsigned char *p = malloc(300000), *q = malloc(300000);
  free(q);
  ((volatile unsigned char *)p)[q - p + 100] = 1;   // (GCC drops a plain store past a free)
  return 0;
}
// The next block of the size does not take the run just freed (the page
// heap's quarantine of freed runs): the stale pointer still faults. Without
// it the run was opened again for that block and the write landed there.
static int t_use_after_free_large_after_malloc(void) {
  unsigned char *p = malloc(256 << 10);
  memset(p, 1, 256 << 10);
  free(p);
  unsigned char *q = malloc(256 << 10);
  g_keep = q;
  p[100] = 1;
  return 0;
}
static int t_double_free_large(void) {
  void *p = malloc(1 << 20);
  free(p);
  free(p);
  return 0;
}
// A freed large block is closed one of two ways (page_heap.c,
// hardened_close_block): kept resident when the program touched its pages,
// discarded when it touched few. The case above frees an untouched block;
// these free a touched one, and reuse a discarded run for a smaller block.
static int t_use_after_free_large_touched(void) {
  unsigned char *p = malloc(300000);
  memset(p, 1, 300000);
  free(p);
  p[100] = 1;
  return 0;
}
static int t_overflow_large_reused_run(void) {
  unsigned char *p = malloc(300000);
  free(p);
  unsigned char *q = malloc(280000);  // from the run p's block left (a smaller large block)
  q[0] = 1;
  q[malloc_usable_size(q)] = 1;      // its own guard page
  return 0;
}
static int t_use_after_free_huge(void) {
  unsigned char *p = malloc(40u << 20); // too large for the huge cache: its mapping goes
  p[100] = 1;
  free(p);
  p[100] = 2;
  return 0;
}
static int t_overflow_huge(void) {
  unsigned char *p = malloc(40u << 20);
  g_sink = p[malloc_usable_size(p)];
  return 0;
}
// One byte past a large block whose size is not a page multiple: the block
// ends at its guard page (page_heap.c ph_block_slack). Page aligned, the
// page's 3 104 bytes past the request took the write unseen.
static int t_overflow_large_page_slack(void) {
  volatile unsigned char *p = malloc(300000);
  p[300000] = 1;
  return 0;
}
static int t_overflow_large_calloc_page_slack(void) {
  volatile unsigned char *p = calloc(1, 300048);   // past the slabs' 256 KiB: the page heap
  if (p[0] != 0 || p[300047] != 0) return 1;
  p[300048] = 1;
  return 0;
}

// The same past a huge block, and a write just before a large or a huge
// block whose size is not a page multiple (the bytes before it are its
// run's: a canary there, checked at free; slack_canary.h).
static int t_overflow_huge_page_slack(void) {
  volatile unsigned char *p = malloc(40000000);
  p[40000000] = 1;
  return 0;
}
// 1-15 bytes past a large block whose size is not a multiple of 16: the
// guard page starts at the next 16-byte boundary, the bytes between hold a
// canary checked at free, and malloc_usable_size is the request.
static int t_overflow_large_unaligned_tail(void) {
  unsigned char *p = malloc(300001);
  if (malloc_usable_size(p) != 300001) return 9;
  p[300001] = 1;
  free(p);
  return 0;
}
static int t_large_unaligned_request_used_to_its_end(void) {
  for (size_t n = 262145; n < 262145 + 48; n += 7) {
    unsigned char *p = malloc(n);
    if (p == NULL || malloc_usable_size(p) != n) return 1;
    memset(p, 0xc5 ^ 0xff, n);
    p = realloc(p, n + 5);          // moves (the hardened build keeps a large request exact)
    if (p == NULL || malloc_usable_size(p) != n + 5) return 2;
    free(p);
  }
  return 0;
}
// The same past a huge block, and past an aligned one, whose end is below
// the guard page by up to its alignment less one.
static int t_overflow_huge_unaligned_tail(void) {
  unsigned char *p = malloc(40000001);
  if (malloc_usable_size(p) != 40000001) return 9;
  p[40000001] = 1;
  free(p);
  return 0;
}
static int t_overflow_huge_aligned_tail(void) {
  void *v;
  if (posix_memalign(&v, 8192, 40000000) != 0) return 9;
  unsigned char *p = v;
  if (malloc_usable_size(p) != 40000000) return 9;
  p[40000000 + 20] = 1;
  free(p);
  return 0;
}
static int t_underflow_large(void) {
  unsigned char *p = malloc(300000);
  p[-1] ^= 1;
  free(p);
  return 0;
}
// A page-aligned large block has no bytes before it in its run for a canary:
// the first one in the process starts its region's first run, whose page
// below was the region header's, open (a probe's valloc(300000) with 8 bytes
// written before it ran to exit 0; 128 KiB reached the header's records).
static int t_underflow_page_aligned_large_at_a_region_start(void) {
  unsigned char *p = valloc(300000);
  if (p == NULL || ((uintptr_t)p & ((64u << 20) - 1)) > (1u << 20)) return 9;   // not a region's first run
  p[-8] = 'x';
  free(p);
  return 0;
}
static int t_underflow_huge_slack(void) {
  unsigned char *p = malloc(40000000);
  p[-8] ^= 1;
  free(p);
  return 0;
}

// A write just before a small block: the 4 bytes there are the size word of
// the block below it (its class's), checked at free (hard_below_fast_ok): one
// byte, eight, and the block just above a live one of its class; before a
// slab's first block, the SuperSlab header's unused last bytes.
static int t_underflow_small(void) {
  unsigned char *p = malloc(24);
  p[-1] ^= 1;
  free(p);
  return 0;
}
static int t_underflow_8_bytes_small(void) {
  unsigned char *p = malloc(48);
  memset(p - 8, 'x', 8);
  free(p);
  return 0;
}
static int t_underflow_small_above_a_live_block(void) {
  enum { K = 64 };
  unsigned char *v[K];
  for (int i = 0; i < K; i++) v[i] = malloc(100);
  for (int i = 0; i < K; i++)
    for (int j = 0; j < K; j++)
      if (v[j] == v[i] + 128) {          // v[i] is the block just below v[j] (class 128)
        v[j][-2] ^= 0x40;
        free(v[j]);
        return 0;
      }
  return 9;
}
static int t_underflow_first_block_of_a_superslab(void) {
  for (int i = 0; i < 20000; i++) {       // blocks of 768 bytes until one starts a SuperSlab's slab 0
    unsigned char *p = malloc(700);
    if (((uintptr_t)p & ((2u << 20) - 1)) == 8192) {
      p[-1] = 'x';
      free(p);
      return 0;
    }
  }
  return 9;
}
// No false report: blocks below made by posix_memalign (their size word
// tagged), fresh, freed, and the slab's first block, in the classes a
// program of many sizes meets.
static int t_no_underflow_reported_next_to_any_block(void) {
  enum { K = 4000 };
  static void *v[K];
  for (int i = 0; i < K; i++) {
    size_t n = 1 + (size_t)(i * 7919 % 1000);
    if (i % 5 == 0) {
      if (posix_memalign(&v[i], 64, n) != 0) return 1;
    } else {
      v[i] = malloc(n);
    }
    memset(v[i], i & 255, n);
  }
  for (int i = 0; i < K; i += 2) free(v[i]);
  for (int i = 1; i < K; i += 2) free(v[i]);
  return 0;
}

// ... nor a false one for untouched blocks across slabs' first blocks (whose
// 4 bytes before are not a size word: hardened_free_below). In one process in
// 128 a slab's first block of 48 bytes never written was reported as a double
// free (its canary's byte was the fill's); tests/unit/hardened_test_underflow.c
// forces that key.
static int t_no_report_freeing_untouched_blocks_across_slabs(void) {
  enum { K = 6000 };               // 80-byte blocks: several 64 KiB slabs' first blocks
  static void *v[K];
  for (int i = 0; i < K; i++)
    if ((v[i] = malloc(48)) == NULL) return 1;
  for (int i = 0; i < K; i++) free(v[i]);
  return 0;
}

// A write just below a huge block: the page below its mapping is (nearly
// always: mappings grow down from the last) no one's, and the fault was a
// bare SIGSEGV; now reported.
static int t_underflow_huge(void) {
  volatile unsigned char *p = malloc(40u << 20);
  p[-1] ^= 1;
  return 0;
}

// ---- use of a freed block soon after free (quarantine)
static int t_quarantine_delays_reuse(void) {
  unsigned char *p = malloc(48);
  free(p);
  for (int i = 0; i < 100; i++) {
    void *q = malloc(48);
    if (q == p) return 1;            // reused at once: a dangling p aliases it
    g_keep = q;
  }
  p[20] = 1;                         // the use: found (the block is still quarantined)
  return 0;
}
// A thread whose only call is a free still gets its quarantine drained at its
// exit (it is set up on its first free), so the block comes back to the
// program and the write after free is found at its reuse. Left in a thread
// that was never set up, the block would never come back.
static void *free_then_write(void *arg) {
  unsigned char *p = arg;
  free(p);
  p[40] = 1;                         // the use: after the free, before the thread ends
  return NULL;
}
static int t_quarantine_of_free_only_thread_drains(void) {
  unsigned char *p = malloc(64);
  pthread_t t;
  if (pthread_create(&t, NULL, free_then_write, p) != 0 || pthread_join(t, NULL) != 0) return 1;
  for (int i = 0; i < 200000; i++) {
    void *q = malloc(64);            // p comes back among these: reported there
    if (q == p) return 0;
    g_keep = q;
  }
  return 0;
}
// The tiny and the larger classes have a quarantine ring each: a small block
// waits for 64 later frees of small blocks, however many larger blocks are
// freed meanwhile; the use is found at exit, the block still quarantined.
static int t_quarantine_small_not_pushed_by_medium(void) {
  unsigned char *p = malloc(48);
  free(p);
  for (int i = 0; i < 200; i++) free(malloc(5000));
  p[20] = 1;
  return 0;
}
static int t_double_free_in_quarantine(void) {
  void *p = malloc(48);
  free(p);
  free(p);
  return 0;
}
// A block freed, out of the quarantine (200 more frees), its free mark
// cleared by a write after free, and freed again: the second free cannot see
// the mark; a small block's fill covers its canary, so the free finds the fill
// where its canary was and reports the double free.
static int double_free_mark_cleared(size_t n) {
  unsigned char *o[200];
  for (int i = 0; i < 200; i++) o[i] = malloc(n);
  unsigned char *p = malloc(n);
  free(p);
  for (int i = 0; i < 200; i++) free(o[i]);
  memset(p + 8, 0, 8);
  free(p);
  for (int i = 0; i < 800; i++) g_keep = malloc(n);
  return 0;
}
static int t_double_free_mark_cleared_small(void) { return double_free_mark_cleared(40); }
// The same with a request past the fill (128 bytes): the second free passes
// its checks and quarantines the block, which is also on a TLS list: the
// quarantine's NULL link is found by the pop (a NULL head was followed by the
// next malloc: SIGSEGV with no report).
static int t_double_free_mark_cleared_128(void) { return double_free_mark_cleared(128); }

// A forged free-list link: a read after free of a quarantined-and-released
// block's second word (its free mark, block ^ key) gives the process key, and
// a link to a static buffer made to look like free blocks (links, marks and
// the free fill) is written into it. The fill check alone handed the buffer
// out (an independent misuse program); the pop's SuperSlab test reports it.
static unsigned char g_forge[64 * 1024] __attribute__((aligned(4096)));
static int t_forged_link_to_static_buffer(void) {
  enum { N = 48, PUSH = 200 };
  void *o[PUSH];
  for (int i = 0; i < PUSH; i++) o[i] = malloc(N);
  uintptr_t *a = malloc(N);
  free(a);
  for (int i = 0; i < PUSH; i++) free(o[i]);   // a leaves the quarantine for its TLS list
  uintptr_t key = ((volatile uintptr_t *)a)[1] ^ (uintptr_t)a;
  uintptr_t t0 = (uintptr_t)g_forge + 4096;
  for (int i = 0; i < 32; i++) {
    uintptr_t b = t0 + 128u * (uintptr_t)i, nx = b + 128u;
    ((uintptr_t *)b)[0] = nx ^ b ^ key;
    ((uintptr_t *)b)[1] = b ^ key;
    memset((char *)b + 16, 0xdf, 112);
  }
  a[0] = t0 ^ (uintptr_t)a ^ key;
  for (int i = 0; i < PUSH + 64; i++) {
    unsigned char *r = malloc(N);
    if (r >= g_forge && r < g_forge + sizeof g_forge) return 3;   // handed out: no report
  }
  return 0;
}

// ---- read or write of a malloc(0) block
static int t_malloc0_write(void) {
  volatile unsigned char *p = malloc(0);
  p[0] = 1;
  return 0;
}
static int t_malloc0_read(void) {
  unsigned char *p = malloc(0);
  g_sink = p[0];
  return 0;
}
static int t_malloc0_free_is_fine(void) {
  void *a = malloc(0), *b = malloc(0);
  if (a == NULL || b == NULL || a == b || malloc_usable_size(a) != 0) return 1;
  free(a);
  free(b);
  void *c = realloc(malloc(0), 10);
  if (c == NULL) return 2;
  free(c);
  return 0;
}
// A malloc(0) block is checked as any other: a double free, a free of an
// address in the reservation never handed out, and a realloc or
// malloc_usable_size of a freed one are reported (they were taken as live
// blocks: the default build, whose malloc(0) is a real block, reported them).
static int t_malloc0_double_free(void) {
  void *p = malloc(0);
  free(p);
  free(p);
  return 0;
}
static int t_malloc0_free_never_handed_out(void) {
  char *p = malloc(0);
  free(p + 16 * 500000);              // an address of the reservation, not handed out yet
  return 0;
}
static int t_malloc0_free_inside(void) {
  char *p = malloc(0);
  free(p + 8);
  return 0;
}
static int t_malloc0_realloc_freed(void) {
  void *p = malloc(0);
  free(p);
  g_sink = realloc(p, 32) != NULL;
  return 0;
}
static int t_malloc0_usable_size_freed(void) {
  void *p = malloc(0);
  free(p);
  g_sink = (unsigned char)malloc_usable_size(p);
  return 0;
}

// Every malloc(0) pointer is distinct from every other one still live (a
// stale one is then never a live one): more of them than the reservation
// holds (64 MiB / 16 = 4 Mi), all kept, none repeated.
static int cmp_ptr(const void *a, const void *b) {
  uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
  return x < y ? -1 : x > y;
}
static int t_malloc0_addresses_do_not_repeat(void) {
  enum { N = (16 << 20) / 16 + 100000 };   // the reservation's addresses (core/hardened.c), then real blocks
  void **v = mmap(NULL, N * sizeof *v, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (v == MAP_FAILED) return 9;
  for (int i = 0; i < N; i++) {
    v[i] = malloc(0);
    if (v[i] == NULL || malloc_usable_size(v[i]) != 0) return 1;
  }
  qsort(v, N, sizeof *v, cmp_ptr);
  for (int i = 1; i < N; i++)
    if (v[i] == v[i - 1]) return 2;
  for (int i = 0; i < N; i++) free(v[i]);
  return 0;
}

// ---- sized delete with the wrong size, aligned sized delete with the wrong size or alignment
static int t_sized_delete_wrong_size(void) {
  void *(*nw)(size_t) = cxx("_Znwm");
  void (*del)(void *, size_t) = cxx("_ZdlPvm");
  void *p = nw(40);
  del(p, 48);
  return 0;
}
static int t_sized_delete_wrong_size_large(void) {   // a page short: one size class in the default build
  void *(*nw)(size_t) = cxx("_Znwm");
  void (*del)(void *, size_t) = cxx("_ZdlPvm");
  void *p = nw(300000);
  del(p, 300000 - 4096);
  return 0;
}
static int t_sized_delete_wrong_size_medium(void) {   // above 1 KiB: the size word is in the slab's table
  void *(*nw)(size_t) = cxx("_Znwm");
  void (*del)(void *, size_t) = cxx("_ZdlPvm");
  void *p = nw(5000);
  del(p, 4999);
  return 0;
}
static int t_sized_delete_right_size(void) {
  void *(*nw)(size_t) = cxx("_Znam");
  void (*del)(void *, size_t) = cxx("_ZdaPvm");
  size_t sizes[] = {1, 16, 40, 1000, 5000, 300000, 40u << 20};
  for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) del(nw(sizes[i]), sizes[i]);
  return 0;
}
static int t_aligned_sized_delete_wrong_size(void) {
  void *(*nw)(size_t, size_t) = cxx("_ZnwmSt11align_val_t");
  void (*del)(void *, size_t, size_t) = cxx("_ZdlPvmSt11align_val_t");
  void *p = nw(100, 64);
  del(p, 50, 64);
  return 0;
}
// C23's sized frees, checked as C++'s sized and aligned deletes are.
static int t_free_sized_wrong_size(void) {
  void (*fs)(void *, size_t) = cxx("free_sized");
  fs(malloc(100), 50);
  return 0;
}
static int t_free_sized_right_sizes(void) {
  void (*fs)(void *, size_t) = cxx("free_sized");
  fs(malloc(100), 100);
  fs(calloc(10, 10), 100);
  fs(realloc(malloc(10), 5000), 5000);
  fs(malloc(0), 0);
  fs(malloc(300000), 300000);
  fs(NULL, 7);
  return 0;
}
static int t_free_aligned_sized_not_a_power_of_two(void) {   // hardened_malloc's invalid_free_aligned_sized_small
  void (*fas)(void *, size_t, size_t) = cxx("free_aligned_sized");
  fas(malloc(16), 3, 16);
  return 0;
}
static int t_free_aligned_sized_right(void) {   // posix_memalign(16, 0): hardened_malloc's min_align case
  void (*fas)(void *, size_t, size_t) = cxx("free_aligned_sized");
  void *p = NULL;
  if (posix_memalign(&p, 16, 0) != 0) return 1;
  fas(p, 16, 0);
  fas(aligned_alloc(64, 640), 64, 640);
  fas(aligned_alloc(8192, 9000), 8192, 9000);
  return 0;
}
// Aligned above a page, a block is a huge mapping; a delete with a smaller size
// passed (hardened_malloc's invalid_aligned_sized_delete_large: 9000 bytes at
// 8192, deleted as 8990), the check taking a huge block's usable size as a bound.
static int t_aligned_sized_delete_smaller_size_huge(void) {
  void *(*nw)(size_t, size_t) = cxx("_ZnwmSt11align_val_t");
  void (*del)(void *, size_t, size_t) = cxx("_ZdlPvmSt11align_val_t");
  void *p = nw(9000, 8192);
  del(p, 8990, 8192);
  return 0;
}
static int t_aligned_sized_delete_right_size_huge(void) {
  void *(*nw)(size_t, size_t) = cxx("_ZnwmSt11align_val_t");
  void (*del)(void *, size_t, size_t) = cxx("_ZdlPvmSt11align_val_t");
  for (int i = 0; i < 4; i++) del(nw(9000, 8192), 9000, 8192);   // a cached mapping reused included
  return 0;
}
// A request of 0 bytes aligned above a page (a page-heap block up to 1 MiB,
// a huge mapping past it, each made for one byte) deleted with its size, 0:
// aborted as "given 0, the block's is 1" (a helper's probe); C23's
// free_aligned_sized the same. (The page heap's case came with its aligned
// blocks, sixty-fifth session.)
static int t_aligned_sized_delete_of_zero_bytes_large_and_huge(void) {
  void *(*nw)(size_t, size_t) = cxx("_ZnwmSt11align_val_t");
  void (*del)(void *, size_t, size_t) = cxx("_ZdlPvmSt11align_val_t");
  void (*fas)(void *, size_t, size_t) = cxx("free_aligned_sized");
  for (size_t a = 65536; a <= ((size_t)2 << 20); a *= 32) {
    del(nw(0, a), 0, a);
    fas(aligned_alloc(a, 0), a, 0);
  }
  return 0;
}
static int t_aligned_delete_wrong_alignment(void) {
  void *(*nw)(size_t, size_t) = cxx("_ZnwmSt11align_val_t");
  void (*del)(void *, size_t, size_t) = cxx("_ZdlPvmSt11align_val_t");
  void *p = nw(100, 64);
  size_t wrong = (size_t)1 << (__builtin_ctzll((uintptr_t)p) + 1);   // more than p has
  del(p, 100, wrong);
  return 0;
}

// A block made with alignment 16 that happens to sit 64-aligned, deleted with
// 64: the alignment it was made with is kept with it (its size word's tag),
// so the delete is reported whatever the address (an independent misuse
// program passed one time in two: a 96-byte class is 64-aligned every other
// block).
static int t_aligned_delete_wrong_alignment_by_chance(void) {
  void *(*nw)(size_t, size_t) = cxx("_ZnwmSt11align_val_t");
  void (*del)(void *, size_t) = cxx("_ZdlPvSt11align_val_t");
  void *p = NULL;
  for (int i = 0; i < 64 && p == NULL; i++) {
    void *q = nw(100, 32);                      // the blocks passed over stay live
    if (((uintptr_t)q & 63u) == 0) p = q;
    else g_keep = q;
  }
  if (p == NULL) return 3;
  del(p, 64);
  return 0;
}
// The right alignment (and sizes) pass, every alignment the slabs serve, and
// aligned blocks behave as others through malloc_usable_size, realloc and free.
// A block of 0 bytes asked for with an alignment (a slab's up to 4 KiB, the
// page heap's past it) grows with realloc: its usable size is 0, and realloc
// took that for a reported bad pointer and failed with ENOMEM, no report, at
// every alignment a slab serves (a helper's probe).
static int t_realloc_of_a_zero_byte_aligned_block_grows(void) {
  for (size_t al = 32; al <= 65536; al *= 2) {
    void *p = NULL;
    if (posix_memalign(&p, al, 0) != 0) return 3;
    unsigned char *q = realloc(p, 100);
    if (q == NULL) return 4;
    memset(q, 1, 100);
    if (malloc_usable_size(q) != 100) return 5;
    free(q);
  }
  return 0;
}

static int t_aligned_blocks_with_their_alignment_pass(void) {
  void *(*nw)(size_t, size_t) = cxx("_ZnwmSt11align_val_t");
  void (*del)(void *, size_t) = cxx("_ZdlPvSt11align_val_t");
  void (*sdel)(void *, size_t, size_t) = cxx("_ZdlPvmSt11align_val_t");
  for (size_t al = 32; al <= 4096; al *= 2)
    for (size_t n = 1; n < 3000; n += 97) {
      unsigned char *p = nw(n, al);
      if (((uintptr_t)p & (al - 1)) != 0) return 3;
      memset(p, 1, n);
      if (malloc_usable_size(p) != n) return 4;
      if (n & 1) del(p, al);
      else sdel(p, n, al);
      void *q = NULL;
      if (posix_memalign(&q, al, n) != 0) return 5;
      memset(q, 2, n);
      if (malloc_usable_size(q) != n) return 6;
      q = realloc(q, n + 50);
      if (q == NULL || malloc_usable_size(q) != n + 50) return 7;
      free(q);
    }
  return 0;
}

// ---- malloc_usable_size of a freed or never-allocated block
static int t_usable_size_freed(void) {
  void *p = malloc(40);
  free(p);
  return (int)malloc_usable_size(p);
}
static int t_usable_size_never_allocated(void) {
  char *p = malloc(48);              // a 64-byte class in a 64 KiB slab
  // The slab's last 64-byte block: a block start far beyond what was carved.
  char *last = (char *)(((uintptr_t)p | 0xffff) - 63);
  return (int)malloc_usable_size(last);
}

// ---- the fault hook and a program's own SIGSEGV handler
// A program whose handler is in place before the library starts (here: from
// the executable's preinit_array, which runs before any library's constructor;
// the case re-executes itself with MISUSE_OWN_SEGV set): a guard-page hit is
// still reported in one line, and a fault anywhere else still reaches the
// program's handler.
static sigjmp_buf g_own_jmp;
static volatile sig_atomic_t g_own_hits;
static void own_segv(int sig) {
  (void)sig;
  g_own_hits++;
  siglongjmp(g_own_jmp, 1);
}
// A handler that faults itself (no SA_NODEFER: the kernel blocks SIGSEGV while
// it runs, so its own fault ends the program); it counts its entries in
// shared memory for the parent.
static volatile unsigned char *g_nested_page;
static volatile int *g_nested_entries;
static void nested_segv(int sig) {
  (void)sig;
  if (g_nested_entries != NULL) (*g_nested_entries)++;
  g_nested_page[0] = 1;
}
static void preinit_own_segv(int argc, char **argv, char **envp) {
  (void)argc;
  (void)argv;
  for (char **e = envp; *e != NULL; e++)
    if (strcmp(*e, "MISUSE_OWN_SEGV=nested") == 0) {
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_handler = nested_segv;
      sigemptyset(&sa.sa_mask);
      sigaction(SIGSEGV, &sa, NULL);
    } else if (strcmp(*e, "MISUSE_OWN_SEGV=1") == 0 || strcmp(*e, "MISUSE_OWN_SEGV=resethand") == 0) {
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_handler = own_segv;
      sa.sa_flags = strcmp(*e, "MISUSE_OWN_SEGV=resethand") == 0 ? SA_RESETHAND : 0;
      sigemptyset(&sa.sa_mask);
      sigaction(SIGSEGV, &sa, NULL);
    }
}
__attribute__((section(".preinit_array"), used)) static void (*const g_preinit)(int, char **, char **) = preinit_own_segv;

// Run the inner case `inner` in this program re-executed (its environment
// read again at start-up: a handler installed before main, a knob).
static int rerun_inner(const char *inner) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return 9;
  self[n] = 0;
  execl(self, self, "--inner", inner, (char *)NULL);
  return 9;
}
static int rerun_with_handler(const char *inner, const char *how) {
  setenv("MISUSE_OWN_SEGV", how, 1);
  return rerun_inner(inner);
}
// calloc of a huge block that reuses a cached mapping (the cache raised so
// one of 40 MiB is kept): it zeroed the guard page too, a SIGSEGV.
static int t_inner_calloc_huge_from_cache(void) {
  for (int i = 0; i < 3; i++) {
    unsigned char *p = calloc(1, 40u << 20);
    if (p == NULL || p[0] != 0 || p[(40u << 20) - 1] != 0) return 1;
    p[0] = p[(40u << 20) - 1] = 1;
    free(p);
  }
  return 0;
}
static int t_calloc_huge_from_cache(void) {
  setenv("HAKMEM_HUGE_CACHE_MB", "1024", 1);
  return rerun_inner("inner_calloc_huge_from_cache");
}
static int t_inner_own_handler_guard_hit(void) {
  struct sigaction sa;
  if (sigaction(SIGSEGV, NULL, &sa) != 0 || sa.sa_handler == SIG_DFL) return 8;   // no preinit handler
  return t_use_after_free_large();
}
static int t_inner_own_handler_own_fault(void) {
  volatile unsigned char *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) return 9;
  for (int i = 0; i < 3; i++)
    if (sigsetjmp(g_own_jmp, 1) == 0) page[i] = 1;   // the program's own fault, its own handler
  return g_own_hits == 3 ? 0 : 1;
}
// A handler installed with SA_RESETHAND runs for the first fault only; the
// second ends the program (checked in a child) as it would without us.
static int t_inner_resethand_handler_runs_once(void) {
  volatile unsigned char *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) return 9;
  if (sigsetjmp(g_own_jmp, 1) == 0) page[0] = 1;
  if (g_own_hits != 1) return 1;
  pid_t pid = fork();
  if (pid < 0) return 9;
  if (pid == 0) {
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
    if (sigsetjmp(g_own_jmp, 1) == 0) page[1] = 1;
    _exit(g_own_hits == 2 ? 3 : 4);    // the handler ran a second time
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
  return WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV ? 0 : 2;
}
// A fault inside the program's handler (installed without SA_NODEFER) ends the
// program at once: the handler is entered once, not again for its own fault.
static int t_inner_nested_fault_in_handler_ends_program(void) {
  g_nested_page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  int *entries = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (g_nested_page == MAP_FAILED || entries == MAP_FAILED) return 9;
  g_nested_entries = entries;
  pid_t pid = fork();
  if (pid < 0) return 9;
  if (pid == 0) {
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
    g_nested_page[1] = 1;
    _exit(5);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
  if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV) return 2;
  return *entries == 1 ? 0 : 3;
}
// A SIGSEGV or SIGBUS sent by raise or kill (no fault to repeat) ends the
// program with that signal, as without the fault hook: the hook returned
// after putting the default action back, and the program ran on to exit 0.
static int signal_sent_ends_child(int sig, int by_kill) {
  pid_t pid = fork();
  if (pid < 0) return 9;
  if (pid == 0) {
    struct rlimit rl = {0, 0};
    setrlimit(RLIMIT_CORE, &rl);
    if (by_kill) kill(getpid(), sig);
    else raise(sig);
    _exit(0);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
  return WIFSIGNALED(st) && WTERMSIG(st) == sig ? 0 : 1;
}
static int t_segv_or_bus_sent_by_raise_or_kill_ends_the_program(void) {
  free(malloc(300000));   // (the library set up, its hook in place)
  int r = signal_sent_ends_child(SIGSEGV, 0) | signal_sent_ends_child(SIGSEGV, 1) << 1 |
          signal_sent_ends_child(SIGBUS, 0) << 2 | signal_sent_ends_child(SIGBUS, 1) << 3;
  return r;
}
static int t_guard_hit_with_program_handler(void) { return rerun_with_handler("inner_own_handler_guard_hit", "1"); }
static int t_program_handler_fault_inside_it_ends_program(void) {
  return rerun_with_handler("inner_nested_fault_in_handler_ends_program", "nested");
}
static int t_program_handler_gets_its_faults(void) { return rerun_with_handler("inner_own_handler_own_fault", "1"); }
static int t_program_resethand_handler_runs_once(void) {
  return rerun_with_handler("inner_resethand_handler_runs_once", "resethand");
}

// ---- the library's own pointers to libc (its GOT) are read-only once the
// program runs: bound at load (DF_BIND_NOW / DF_1_NOW) and inside its RELRO
// segment, which /proc/self/maps shows mapped without write permission. (The
// default library binds them at their first call: Makefile.)
typedef struct { uintptr_t relro_start, relro_end; int found, bind_now; } got_probe_t;
static int find_hardened_library(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  got_probe_t *g = arg;
  if (info->dlpi_name == NULL || strstr(info->dlpi_name, "libhakmem-hardened") == NULL) return 0;
  g->found = 1;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type == PT_GNU_RELRO) {
      g->relro_start = info->dlpi_addr + ph->p_vaddr;
      g->relro_end = g->relro_start + ph->p_memsz;
    } else if (ph->p_type == PT_DYNAMIC) {
      for (const ElfW(Dyn) *d = (const ElfW(Dyn) *)(info->dlpi_addr + ph->p_vaddr); d->d_tag != DT_NULL; d++) {
        if (d->d_tag == DT_FLAGS && (d->d_un.d_val & DF_BIND_NOW)) g->bind_now = 1;
        if (d->d_tag == DT_FLAGS_1 && (d->d_un.d_val & DF_1_NOW)) g->bind_now = 1;
      }
    }
  }
  return 1;
}
static int t_library_got_read_only(void) {
  got_probe_t g = { 0, 0, 0, 0 };
  dl_iterate_phdr(find_hardened_library, &g);
  if (!g.found || !g.bind_now || g.relro_start == 0) {
    fprintf(stderr, "found %d, bound at load %d, RELRO %#lx\n", g.found, g.bind_now, (unsigned long)g.relro_start);
    return 1;
  }
  // Every page of the RELRO segment (its start rounded down, its end as
  // the loader protects it: rounded down to a page) lies in a mapping
  // without 'w'.
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t lo = g.relro_start & ~(page - 1), hi = g.relro_end & ~(page - 1);
  if (hi <= lo) return 2;            // (no whole page: nothing the loader protects)
  FILE *f = fopen("/proc/self/maps", "r");
  if (f == NULL) return 3;
  char line[512];
  uintptr_t covered = lo;
  while (fgets(line, sizeof line, f) != NULL) {
    unsigned long a, b;
    char perm[8];
    if (sscanf(line, "%lx-%lx %7s", &a, &b, perm) != 3 || b <= covered || a > covered) continue;
    if (perm[1] == 'w') {
      fprintf(stderr, "RELRO page %#lx is writable: %s", (unsigned long)covered, line);
      fclose(f);
      return 4;
    }
    covered = b;
    if (covered >= hi) break;
  }
  fclose(f);
  return covered >= hi ? 0 : 5;
}

// ---- randomised reuse: a refill hands its batch out in a random order
static int t_randomised_reuse(void) {
  enum { N = 64 };
  char *p[N];
  int sequential = 0;
  for (int i = 0; i < N; i++) p[i] = malloc(200);
  for (int i = 1; i < N; i++) sequential += p[i] - p[i - 1] == 208 || p[i] - p[i - 1] == -208;
  for (int i = 0; i < N; i++) free(p[i]);
  return sequential > N / 4;         // in carve order every step would be one block
}

static const test_t g_tests[] = {
  {"write_after_free_small", t_write_after_free, EXPECT_ABORT_REPORT, "write after free of"},
  {"write_after_free_then_reuse", t_write_after_free_then_reuse, EXPECT_ABORT_REPORT, "write after free of"},
  {"write_after_free_then_new", t_write_after_free_then_new, EXPECT_ABORT_REPORT, "write after free of"},
  {"write_after_free_second_line", t_write_after_free_second_line, EXPECT_ABORT_REPORT, "write after free of"},
  {"write_after_free_second_line_medium", t_write_after_free_second_line_medium, EXPECT_ABORT_REPORT,
   "write after free of"},
  {"read_after_free_sees_fill", t_read_after_free_sees_fill, EXPECT_EXIT0, NULL},
  {"handed_out_block_shows_no_link", t_handed_out_block_shows_no_link, EXPECT_EXIT0, NULL},
  {"overflow_1_byte_small", t_overflow_1_byte, EXPECT_ABORT_REPORT, "heap buffer overflow past"},
  {"overflow_8_bytes_small", t_overflow_8_bytes, EXPECT_ABORT_REPORT, "heap buffer overflow past"},
  {"overflow_medium", t_overflow_medium, EXPECT_ABORT_REPORT, "heap buffer overflow past"},
  {"medium_request_at_class_end", t_medium_request_at_class_end, EXPECT_EXIT0, NULL},
  {"overflow_medium_at_class_end", t_overflow_medium_at_class_end, EXPECT_ABORT_REPORT, "heap buffer overflow past"},
  {"overflow_after_realloc_in_place", t_overflow_after_realloc_in_place, EXPECT_ABORT_REPORT, "heap buffer overflow past"},
  {"overflow_before_realloc", t_overflow_before_realloc, EXPECT_ABORT_REPORT, "heap buffer overflow past"},
  {"overflow_large_guard_page", t_overflow_large, EXPECT_ABORT_REPORT, "heap buffer overflow past a large block"},
  {"use_after_free_large", t_use_after_free_large, EXPECT_ABORT_REPORT, "use after free of a large block"},
  {"overflow_far_past_large_into_a_freed_run", t_overflow_far_past_large_into_a_freed_run, EXPECT_ABORT_REPORT,
   "use after free of a large block ... (a freed run, or an overflow of a block below it)"},
  {"use_after_free_large_after_malloc", t_use_after_free_large_after_malloc, EXPECT_ABORT_REPORT, "use after free of a large block"},
  {"double_free_large", t_double_free_large, EXPECT_ABORT_REPORT, "double free of"},
  {"use_after_free_large_touched", t_use_after_free_large_touched, EXPECT_ABORT_REPORT, "use after free of a large block"},
  {"overflow_large_reused_run", t_overflow_large_reused_run, EXPECT_ABORT_REPORT, "heap buffer overflow past a large block"},
  {"use_after_free_huge", t_use_after_free_huge, EXPECT_ABORT_REPORT, "use after free of a huge block"},
  {"overflow_huge_guard_page", t_overflow_huge, EXPECT_ABORT_REPORT, "heap buffer overflow past a huge block"},
  {"underflow_huge", t_underflow_huge, EXPECT_ABORT_REPORT, "heap buffer underflow before a huge block"},
  {"overflow_large_page_slack", t_overflow_large_page_slack, EXPECT_ABORT_REPORT, "heap buffer overflow past a large block"},
  {"overflow_large_calloc_page_slack", t_overflow_large_calloc_page_slack, EXPECT_ABORT_REPORT,
   "heap buffer overflow past a large block"},
  {"overflow_huge_page_slack", t_overflow_huge_page_slack, EXPECT_ABORT_REPORT, "heap buffer overflow past a huge block"},
  {"overflow_large_unaligned_tail", t_overflow_large_unaligned_tail, EXPECT_ABORT_REPORT,
   "heap buffer overflow past a large block"},
  {"large_unaligned_request_used_to_its_end", t_large_unaligned_request_used_to_its_end, EXPECT_EXIT0, NULL},
  {"overflow_huge_unaligned_tail", t_overflow_huge_unaligned_tail, EXPECT_ABORT_REPORT,
   "heap buffer overflow past a huge block"},
  {"overflow_huge_aligned_tail", t_overflow_huge_aligned_tail, EXPECT_ABORT_REPORT,
   "heap buffer overflow past a huge block"},
  {"underflow_large", t_underflow_large, EXPECT_ABORT_REPORT, "heap buffer underflow before a large block"},
  {"underflow_page_aligned_large_at_a_region_start", t_underflow_page_aligned_large_at_a_region_start,
   EXPECT_ABORT_REPORT, "heap buffer underflow before a large block"},
  {"underflow_small", t_underflow_small, EXPECT_ABORT_REPORT, "heap buffer underflow before"},
  {"underflow_8_bytes_small", t_underflow_8_bytes_small, EXPECT_ABORT_REPORT, "heap buffer underflow before"},
  {"underflow_small_above_a_live_block", t_underflow_small_above_a_live_block, EXPECT_ABORT_REPORT,
   "heap buffer underflow before"},
  {"underflow_first_block_of_a_superslab", t_underflow_first_block_of_a_superslab, EXPECT_ABORT_REPORT,
   "heap buffer underflow before"},
  {"no_underflow_reported_next_to_any_block", t_no_underflow_reported_next_to_any_block, EXPECT_EXIT0, NULL},
  {"no_report_freeing_untouched_blocks_across_slabs", t_no_report_freeing_untouched_blocks_across_slabs, EXPECT_EXIT0,
   NULL},
  {"underflow_huge_slack", t_underflow_huge_slack, EXPECT_ABORT_REPORT, "heap buffer underflow before a huge block"},
  {"quarantine_delays_reuse", t_quarantine_delays_reuse, EXPECT_ABORT_REPORT, "write after free of"},
  {"quarantine_small_not_pushed_by_medium", t_quarantine_small_not_pushed_by_medium, EXPECT_ABORT_REPORT, "write after free of"},
  {"double_free_in_quarantine", t_double_free_in_quarantine, EXPECT_ABORT_REPORT, "double free of"},
  {"double_free_mark_cleared_small", t_double_free_mark_cleared_small, EXPECT_ABORT_REPORT, "double free of"},
  {"double_free_mark_cleared_128", t_double_free_mark_cleared_128, EXPECT_ABORT_REPORT, "corrupted free list in class"},
  {"quarantine_of_free_only_thread_drains", t_quarantine_of_free_only_thread_drains, EXPECT_ABORT_REPORT, "write after free of"},
  {"forged_link_to_static_buffer", t_forged_link_to_static_buffer, EXPECT_ABORT_REPORT, "corrupted free list in class"},
  {"malloc0_write", t_malloc0_write, EXPECT_ABORT_REPORT, "read or write of a malloc(0) block"},
  {"malloc0_read", t_malloc0_read, EXPECT_ABORT_REPORT, "read or write of a malloc(0) block"},
  {"malloc0_free_is_fine", t_malloc0_free_is_fine, EXPECT_EXIT0, NULL},
  {"malloc0_addresses_do_not_repeat", t_malloc0_addresses_do_not_repeat, EXPECT_EXIT0, NULL},
  {"malloc0_double_free", t_malloc0_double_free, EXPECT_ABORT_REPORT, "double free of"},
  {"malloc0_free_never_handed_out", t_malloc0_free_never_handed_out, EXPECT_ABORT_REPORT, "free of invalid pointer"},
  {"malloc0_free_inside", t_malloc0_free_inside, EXPECT_ABORT_REPORT, "free of invalid pointer"},
  {"malloc0_realloc_freed", t_malloc0_realloc_freed, EXPECT_ABORT_REPORT, "realloc of invalid pointer"},
  {"malloc0_usable_size_freed", t_malloc0_usable_size_freed, EXPECT_ABORT_REPORT, "malloc_usable_size of invalid pointer"},
  {"sized_delete_wrong_size", t_sized_delete_wrong_size, EXPECT_ABORT_REPORT, "sized delete with the wrong size"},
  {"sized_delete_wrong_size_large", t_sized_delete_wrong_size_large, EXPECT_ABORT_REPORT, "sized delete with the wrong size"},
  {"sized_delete_wrong_size_medium", t_sized_delete_wrong_size_medium, EXPECT_ABORT_REPORT, "sized delete with the wrong size"},
  {"sized_delete_right_size", t_sized_delete_right_size, EXPECT_EXIT0, NULL},
  {"aligned_sized_delete_wrong_size", t_aligned_sized_delete_wrong_size, EXPECT_ABORT_REPORT, "sized delete with the wrong size"},
  {"free_sized_wrong_size", t_free_sized_wrong_size, EXPECT_ABORT_REPORT, "sized delete with the wrong size"},
  {"free_sized_right_sizes", t_free_sized_right_sizes, EXPECT_EXIT0, NULL},
  {"free_aligned_sized_not_a_power_of_two", t_free_aligned_sized_not_a_power_of_two, EXPECT_ABORT_REPORT,
   "free_aligned_sized with an alignment that is not a power of two"},
  {"free_aligned_sized_right", t_free_aligned_sized_right, EXPECT_EXIT0, NULL},
  {"aligned_sized_delete_smaller_size_huge", t_aligned_sized_delete_smaller_size_huge, EXPECT_ABORT_REPORT,
   "sized delete with the wrong size"},
  {"aligned_sized_delete_right_size_huge", t_aligned_sized_delete_right_size_huge, EXPECT_EXIT0, NULL},
  {"aligned_sized_delete_of_zero_bytes_large_and_huge", t_aligned_sized_delete_of_zero_bytes_large_and_huge,
   EXPECT_EXIT0, NULL},
  {"aligned_delete_wrong_alignment", t_aligned_delete_wrong_alignment, EXPECT_ABORT_REPORT, "aligned delete with the wrong alignment"},
  {"aligned_delete_wrong_alignment_by_chance", t_aligned_delete_wrong_alignment_by_chance, EXPECT_ABORT_REPORT,
   "aligned delete with the wrong alignment"},
  {"aligned_blocks_with_their_alignment_pass", t_aligned_blocks_with_their_alignment_pass, EXPECT_EXIT0, NULL},
  {"realloc_of_a_zero_byte_aligned_block_grows", t_realloc_of_a_zero_byte_aligned_block_grows, EXPECT_EXIT0, NULL},
  {"usable_size_of_freed_block", t_usable_size_freed, EXPECT_ABORT_REPORT, "malloc_usable_size of invalid pointer"},
  {"usable_size_never_allocated", t_usable_size_never_allocated, EXPECT_ABORT_REPORT, "malloc_usable_size of invalid pointer"},
  {"randomised_reuse", t_randomised_reuse, EXPECT_EXIT0, NULL},
  {"library_got_read_only", t_library_got_read_only, EXPECT_EXIT0, NULL},
  {"guard_hit_with_program_handler", t_guard_hit_with_program_handler, EXPECT_ABORT_REPORT, "use after free of a large block"},
  {"program_handler_gets_its_faults", t_program_handler_gets_its_faults, EXPECT_EXIT0, NULL},
  {"segv_or_bus_sent_by_raise_or_kill_ends_the_program", t_segv_or_bus_sent_by_raise_or_kill_ends_the_program, EXPECT_EXIT0,
   NULL},
  {"program_resethand_handler_runs_once", t_program_resethand_handler_runs_once, EXPECT_EXIT0, NULL},
  {"program_handler_fault_inside_it_ends_program", t_program_handler_fault_inside_it_ends_program, EXPECT_EXIT0, NULL},
  {"calloc_huge_from_cache", t_calloc_huge_from_cache, EXPECT_EXIT0, NULL},
};
// Run only by the cases above, in a re-executed child (misuse --inner NAME).
static const test_t g_inner[] = {
  {"inner_own_handler_guard_hit", t_inner_own_handler_guard_hit, EXPECT_ABORT_REPORT, NULL},
  {"inner_calloc_huge_from_cache", t_inner_calloc_huge_from_cache, EXPECT_EXIT0, NULL},
  {"inner_own_handler_own_fault", t_inner_own_handler_own_fault, EXPECT_EXIT0, NULL},
  {"inner_resethand_handler_runs_once", t_inner_resethand_handler_runs_once, EXPECT_EXIT0, NULL},
  {"inner_nested_fault_in_handler_ends_program", t_inner_nested_fault_in_handler_ends_program, EXPECT_EXIT0, NULL},
};
#define NTESTS ((int)(sizeof g_tests / sizeof g_tests[0]))

// 0 pass, 1 fail
// Does err (a report) match `report` (test_t): "hakmem: " and its start, and
// after " ... " in it, the rest further on the same line?
static int report_matches(const char *err, const char *report) {
  if (strncmp(err, "hakmem: ", 8) != 0) return 0;
  const char *dots = strstr(report, " ... ");
  size_t head = dots != NULL ? (size_t)(dots - report) : strlen(report);
  if (strncmp(err + 8, report, head) != 0) return 0;
  if (dots == NULL) return 1;
  const char *rest = strstr(err + 8 + head, dots + 5), *eol = strchr(err, '\n');
  return rest != NULL && (eol == NULL || rest < eol);
}

static int run_test(const test_t *t) {
  static child_result_t r;
  child_run(t->fn, &r);
  int st = r.status, lines = r.err_lines;
  double secs = r.secs;
  const char *err = r.err;
  char why[256] = "";
  if (t->expect == EXPECT_EXIT0) {
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      snprintf(why, sizeof why, "child ended with %s %d", WIFSIGNALED(st) ? "signal" : "status",
               WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
  } else if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT) {
    snprintf(why, sizeof why, "expected abort (SIGABRT), child ended with %s %d",
             WIFSIGNALED(st) ? "signal" : "status", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
  } else if (!report_matches(err, t->report)) {
    snprintf(why, sizeof why, "aborted, but the report is not \"hakmem: %s ...\"", t->report);
  } else if (strstr(err, " 0x") == NULL) {
    snprintf(why, sizeof why, "aborted, but the report names no address");
  } else if (lines != 1) {
    snprintf(why, sizeof why, "aborted, but the report is %d lines, not one", lines);
  }
  if (why[0] == 0) {
    printf("PASS  %-36s (%.1f s)  %s", t->name, secs, t->expect == EXPECT_ABORT_REPORT ? err : "\n");
    return 0;
  }
  printf("FAIL  %-36s (%.1f s): %s\n", t->name, secs, why);
  if (err[0]) printf("    | %s", err);
  return 1;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 3 && strcmp(argv[1], "--inner") == 0) {
    for (unsigned i = 0; i < sizeof g_inner / sizeof g_inner[0]; i++)
      if (strcmp(argv[2], g_inner[i].name) == 0) exit(g_inner[i].fn());
    return 9;
  }
  if (argc > 1 && strcmp(argv[1], "-l") == 0) {
    for (int i = 0; i < NTESTS; i++) printf("%s\n", g_tests[i].name);
    return 0;
  }
  int run = 0, failed = 0;
  for (int i = 0; i < NTESTS; i++) {
    int sel = argc == 1;
    for (int a = 1; a < argc; a++) sel |= strcmp(argv[a], g_tests[i].name) == 0;
    if (!sel) continue;
    run++;
    failed += run_test(&g_tests[i]);
  }
  printf("misuse: %d passed, %d failed\n", run - failed, failed);
  return failed != 0;
}
