// ws8192 — random malloc/free over a fixed working set of slots.
//
// Each thread owns WS slots (default 8192), all empty at the start, and performs
// exactly N operations (default 20M). One operation: draw a slot uniformly; if it
// holds a block, free it; if it is empty, malloc(size) with size uniform in
// [MIN, MAX], write the first and the last byte, and keep it in the slot. So
// N operations are exactly N calls of malloc or free (the blocks still held at
// the end are freed after the clock stops and are not counted). In steady state
// half the slots are full, so WS/2 blocks are live per thread.
//
// Cross-thread mode (-x, needs T >= 2): the threads form a ring, and no thread
// ever frees a block it allocated. A block thread t mallocs goes to thread t+1
// through a single-producer/single-consumer queue; when t+1 next mallocs into an
// empty slot it also moves one received block into that slot, to be freed by a
// later operation. If the queue to t+1 is full (t+1 is behind), t frees blocks
// it received itself (each one an operation) until there is room. Every free in
// this mode is a free of a block allocated by a different thread.
//
// C++ mode (--cxx, local only): the same loop through C++'s operator new and
// the sized operator delete g++ emits since C++14 (`_Znwm`, `_ZdlPvm`), the
// calls a C++ program compiles `new T` and `delete p` to. They are looked up
// at start-up after libstdc++ is loaded: the preloaded allocator's when it
// defines them (hakmem and the three peers do), else libstdc++'s, which call
// malloc and free (glibc's row).
//
// Read mode (--read, local only): the block's first word is read before its
// free, as a program reads a field of what it is about to free (a
// destructor, a list walk); mimalloc-bench's alloc-test reads each block
// whole. Its line is then in L1 when the allocator's free reads the block.
//
// Ends mode (--ends, local only): before it writes a new block's first and
// last byte, the thread asks the kernel (mincore) whether their pages are
// resident already, and the RESULT line adds the shares of blocks whose first
// (ends_first) and last (ends_last) page were: where an allocator places
// blocks that a program touches at their ends (large blocks of which it uses
// a header and a tail), whose misses are its page faults. Allocator-independent
// like drift --reuse; it costs two system calls a malloc, so time it without.
//
// Options: -w WS, -n N (per thread), -s SEED, --min, --max (bytes, K/M suffixes),
// -t THREADS, -x (cross-thread), --cxx, --read, --ends, --null (no allocator: each slot gets a
// fixed piece of a preallocated pool; measures the benchmark's own cost, used by
// bench-instr). Throughput = all threads' operations / wall time from the
// common start to the last thread's last operation.
#include "bench_common.h"

#include <dlfcn.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
  int id;
  char **slots;
  uint32_t *sizes;                // --cxx: each slot's size, for the sized delete
  uint64_t mallocs;
  uint64_t ends_first, ends_last;   // --ends: new blocks whose first / last page was resident
  double finish;
  spsc_t *in, *out;               // cross mode: from thread id-1, to thread id+1
  _Alignas(64) char pad[1];
} worker_t;

static uint64_t g_ops = 20000000, g_seed = 42;
static uint32_t g_ws = 8192;
static size_t g_min = 16, g_max = 1024;
static int g_threads = 1, g_cross = 0, g_null = 0, g_cxx = 0, g_read = 0, g_ends = 0;
static volatile uint64_t g_read_sink;       // --read: what the reads add up to
static void *(*g_op_new)(size_t);          // --cxx: operator new(std::size_t)
static void (*g_op_delete)(void *, size_t); // --cxx: operator delete(void *, std::size_t)
static char *g_pool;                       // --null: slot s uses g_pool + s * g_max
static pthread_barrier_t g_start;
static _Atomic int g_finished;

// --ends: is the page holding p resident (mincore)?
static int page_resident(const char *p) {
  uintptr_t page = (uintptr_t)p & ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1);
  unsigned char v = 0;
  return mincore((void *)page, 1, &v) == 0 && (v & 1u);
}

// One loop for every mode; `cxx`, `read` and `ends` are constants at each
// call, so none pays for another's branch.
static inline __attribute__((always_inline)) void run_local_as(worker_t *w, int cxx, int read, int ends) {
  bench_rng_t rng = bench_rng(g_seed, (uint64_t)w->id);
  char **slots = w->slots;
  const uint32_t ws = g_ws;
  const uint32_t span = (uint32_t)(g_max - g_min + 1);
  const size_t min = g_min;
  const int null = g_null;
  uint64_t mallocs = 0, sum = 0;
  for (uint64_t i = 0; i < g_ops; i++) {
    uint64_t r = bench_rand(&rng);
    uint32_t s = bench_below((uint32_t)(r >> 32), ws);
    char *p = slots[s];
    if (p != NULL) {
      if (read) sum += *(const uint64_t *)(const void *)p;
      if (cxx) g_op_delete(p, w->sizes[s]);
      else if (!null) free(p);
      slots[s] = NULL;
    } else {
      size_t size = min + bench_below((uint32_t)r, span);
      if (cxx) w->sizes[s] = (uint32_t)size;
      p = cxx ? g_op_new(size) : null ? g_pool + (size_t)s * g_max : malloc(size);
      if (__builtin_expect(p == NULL, 0)) {
        fprintf(stderr, "malloc(%zu) failed\n", size);
        exit(3);
      }
      if (ends) {
        w->ends_first += (uint64_t)page_resident(p);
        w->ends_last += (uint64_t)page_resident(p + size - 1);
      }
      p[0] = 1;
      p[size - 1] = 2;
      slots[s] = p;
      mallocs++;
    }
  }
  w->mallocs = mallocs;
  if (read) g_read_sink += sum;
}
static void run_local(worker_t *w) { run_local_as(w, 0, 0, 0); }
static void run_local_cxx(worker_t *w) { run_local_as(w, 1, 0, 0); }
static void run_local_read(worker_t *w) { run_local_as(w, 0, 1, 0); }
static void run_local_ends(worker_t *w) { run_local_as(w, 0, 0, 1); }

// --cxx: the operators as a C++ program would bind them (see the top).
static void find_cxx_operators(void) {
  if (dlopen("libstdc++.so.6", RTLD_NOW | RTLD_GLOBAL) == NULL) {
    fprintf(stderr, "ws8192 --cxx: %s\n", dlerror());
    exit(3);
  }
  g_op_new = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "_Znwm");
  g_op_delete = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "_ZdlPvm");
  if (g_op_new == NULL || g_op_delete == NULL) {
    fprintf(stderr, "ws8192 --cxx: operator new or delete not found\n");
    exit(3);
  }
}

static void run_cross(worker_t *w) {
  bench_rng_t rng = bench_rng(g_seed, (uint64_t)w->id);
  char **slots = w->slots;
  const uint32_t ws = g_ws;
  const uint32_t span = (uint32_t)(g_max - g_min + 1);
  uint64_t mallocs = 0, done = 0;
  while (done < g_ops) {
    uint64_t r = bench_rand(&rng);
    uint32_t s = bench_below((uint32_t)(r >> 32), ws);
    char *p = slots[s];
    if (p != NULL) {                       // a block another thread allocated
      free(p);
      slots[s] = NULL;
      done++;
      continue;
    }
    size_t size = g_min + bench_below((uint32_t)r, span);
    p = malloc(size);
    if (__builtin_expect(p == NULL, 0)) {
      fprintf(stderr, "malloc(%zu) failed\n", size);
      exit(3);
    }
    p[0] = 1;
    p[size - 1] = 2;
    mallocs++;
    done++;
    while (!spsc_push(w->out, p)) {        // the next thread is behind
      char *q = spsc_pop(w->in);
      if (q != NULL) {
        free(q);
        if (done < g_ops) done++;          // past N it is part of the clean-up
      } else {
        sched_yield();
      }
    }
    slots[s] = spsc_pop(w->in);            // may stay empty
  }
  w->mallocs = mallocs;
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  pthread_barrier_wait(&g_start);
  if (g_cross) run_cross(w);
  else if (g_cxx) run_local_cxx(w);
  else if (g_read) run_local_read(w);
  else if (g_ends) run_local_ends(w);
  else run_local(w);
  w->finish = bench_now();
  atomic_fetch_add(&g_finished, 1);
  if (g_cross) {                            // keep draining so no producer waits forever
    while (atomic_load(&g_finished) < g_threads) {
      void *q = spsc_pop(w->in);
      if (q != NULL) free(q); else sched_yield();
    }
  }
  return NULL;
}

static void usage(void) {
  fprintf(stderr,
          "usage: ws8192 [-w WS] [-n OPS_PER_THREAD] [-s SEED] [--min BYTES] [--max BYTES]\n"
          "              [-t THREADS] [-x] [--cxx] [--read] [--ends] [--null]\n"
          "  defaults: -w 8192 -n 20M -s 42 --min 16 --max 1024 -t 1\n"
          "  -x        cross-thread: every block is freed by another thread (T >= 2)\n"
          "  --cxx     operator new and sized operator delete instead of malloc/free (not with -x)\n"
          "  --read    read each block's first word before its free (not with -x, --cxx, --null)\n"
          "  --ends    count new blocks whose first and last pages were resident (mincore; not with\n"
          "            -x, --cxx, --read, --null)\n"
          "  --null    no malloc/free, same loop (the benchmark's own cost; -t 1 only)\n");
  exit(2);
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
    { "ws", required_argument, NULL, 'w' },   { "ops", required_argument, NULL, 'n' },
    { "seed", required_argument, NULL, 's' }, { "min", required_argument, NULL, 'a' },
    { "max", required_argument, NULL, 'b' },  { "threads", required_argument, NULL, 't' },
    { "cross", no_argument, NULL, 'x' },      { "null", no_argument, NULL, 'z' },
    { "cxx", no_argument, NULL, 'c' },        { "read", no_argument, NULL, 'r' },
    { "ends", no_argument, NULL, 'e' },
    { "help", no_argument, NULL, 'h' },       { NULL, 0, NULL, 0 },
  };
  int c;
  while ((c = getopt_long(argc, argv, "w:n:s:t:xh", longopts, NULL)) != -1) {
    switch (c) {
    case 'w': g_ws = (uint32_t)bench_parse_count("-w", optarg); break;
    case 'n': g_ops = bench_parse_count("-n", optarg); break;
    case 's': g_seed = bench_parse_count("-s", optarg); break;
    case 'a': g_min = bench_parse_size("--min", optarg); break;
    case 'b': g_max = bench_parse_size("--max", optarg); break;
    case 't': g_threads = (int)bench_parse_count("-t", optarg); break;
    case 'x': g_cross = 1; break;
    case 'z': g_null = 1; break;
    case 'c': g_cxx = 1; break;
    case 'r': g_read = 1; break;
    case 'e': g_ends = 1; break;
    default: usage();
    }
  }
  if (optind != argc || g_ws < 1 || g_min < 1 || g_max < g_min || g_max - g_min >= UINT32_MAX ||
      g_threads < 1 || g_threads > 1024 || (g_cross && g_threads < 2) ||
      (g_null && g_threads != 1) || (g_cxx && (g_cross || g_null)) || (g_read && (g_cross || g_cxx || g_null)) ||
      (g_ends && (g_cross || g_cxx || g_read || g_null)))
    usage();
  if (g_cxx) find_cxx_operators();

  if (g_null) g_pool = bench_xmalloc((size_t)g_ws * g_max);
  worker_t *w = calloc((size_t)g_threads, sizeof *w);
  spsc_t *queues = NULL;
  if (w == NULL) return 3;
  uint64_t cap = 1024;
  while (cap < g_ws) cap <<= 1;
  if (g_cross) {
    queues = aligned_alloc(64, sizeof(spsc_t) * (size_t)g_threads);
    if (queues == NULL) return 3;
    memset(queues, 0, sizeof(spsc_t) * (size_t)g_threads);
    for (int i = 0; i < g_threads; i++) {
      queues[i].buf = bench_xmalloc(cap * sizeof(void *));
      queues[i].mask = cap - 1;
    }
  }
  for (int i = 0; i < g_threads; i++) {
    w[i].id = i;
    w[i].slots = calloc(g_ws, sizeof(char *));
    w[i].sizes = g_cxx ? calloc(g_ws, sizeof(uint32_t)) : NULL;
    if (w[i].slots == NULL || (g_cxx && w[i].sizes == NULL)) return 3;
    if (g_cross) {
      w[i].out = &queues[i];
      w[i].in = &queues[(i + g_threads - 1) % g_threads];
    }
  }

  double t0, t1;
  if (g_threads == 1) {                    // the main thread, as most programs do
    t0 = bench_now();
    if (g_cxx) run_local_cxx(&w[0]);
    else if (g_read) run_local_read(&w[0]);
    else if (g_ends) run_local_ends(&w[0]);
    else run_local(&w[0]);
    t1 = bench_now();
  } else {
    pthread_t *tid = calloc((size_t)g_threads, sizeof *tid);
    pthread_barrier_init(&g_start, NULL, (unsigned)g_threads + 1);
    for (int i = 0; i < g_threads; i++) {
      if (pthread_create(&tid[i], NULL, worker_main, &w[i]) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        return 3;
      }
    }
    pthread_barrier_wait(&g_start);
    t0 = bench_now();
    for (int i = 0; i < g_threads; i++) pthread_join(tid[i], NULL);
    t1 = t0;
    for (int i = 0; i < g_threads; i++) if (w[i].finish > t1) t1 = w[i].finish;
    free(tid);
  }

  uint64_t ops = g_ops * (uint64_t)g_threads, mallocs = 0, ends_first = 0, ends_last = 0;
  for (int i = 0; i < g_threads; i++) {
    mallocs += w[i].mallocs;
    ends_first += w[i].ends_first;
    ends_last += w[i].ends_last;
  }
  char extra[320];
  int len = snprintf(extra, sizeof extra,
                     "mallocs=%" PRIu64 " frees=%" PRIu64 " ws=%u threads=%d cross=%d min=%zu max=%zu null=%d cxx=%d read=%d",
                     mallocs, ops - mallocs, g_ws, g_threads, g_cross, g_min, g_max, g_null, g_cxx, g_read);
  if (g_ends && mallocs > 0 && len > 0 && (size_t)len < sizeof extra)
    snprintf(extra + len, sizeof extra - (size_t)len, " ends_first=%.3f ends_last=%.3f",
             (double)ends_first / (double)mallocs, (double)ends_last / (double)mallocs);
  bench_result("ws8192", "ops", ops, t1 - t0, extra);

  // Clean-up, not timed: what the slots and queues still hold.
  for (int i = 0; i < g_threads; i++) {
    if (g_cxx) {
      for (uint32_t s = 0; s < g_ws; s++)
        if (w[i].slots[s] != NULL) g_op_delete(w[i].slots[s], w[i].sizes[s]);
    } else if (!g_null) {
      for (uint32_t s = 0; s < g_ws; s++) free(w[i].slots[s]);
    }
    free(w[i].slots);
    free(w[i].sizes);
  }
  if (g_cross) {
    for (int i = 0; i < g_threads; i++) {
      void *q;
      while ((q = spsc_pop(&queues[i])) != NULL) free(q);
      free(queues[i].buf);
    }
    free(queues);
  }
  free(w);
  free(g_pool);
  return 0;
}
