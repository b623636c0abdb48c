// os.c — mappings, purging, messages and clock (see os.h).
#include "os/os.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <gnu/libc-version.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/single_threaded.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define OS_PAGE_SIZE_FALLBACK 4096u   // x86-64's page, if the auxiliary vector has none

static size_t g_os_page_size;         // 0 until first asked

size_t os_page_size(void) {
  // Relaxed: every thread computes the same value, so a racing first use
  // stores the same number twice and needs no ordering.
  size_t ps = __atomic_load_n(&g_os_page_size, __ATOMIC_RELAXED);
  if (__builtin_expect(ps == 0, 0)) {
    ps = (size_t)getauxval(AT_PAGESZ);
    if (ps == 0 || (ps & (ps - 1)) != 0) ps = OS_PAGE_SIZE_FALLBACK;
    __atomic_store_n(&g_os_page_size, ps, __ATOMIC_RELAXED);
  }
  return ps;
}

static int (*g_pressure_fn)(void);
void os_on_address_pressure(int (*fn)(void)) { g_pressure_fn = fn; }
int os_address_pressure(void) { return g_pressure_fn != NULL && g_pressure_fn(); }

// Where the next aligned mapping may fit: just below the last one (Linux
// places mappings top-down), 0 when unknown.
static uintptr_t g_os_map_hint;

// A mapping of size bytes at hint, aligned to align, or NULL (nothing
// mapped). An aligned mapping otherwise costs an mmap of size + align and
// two munmaps to trim it, each taking the address space's lock for writing,
// which every other thread's mincore, madvise and older page faults then
// wait behind (ws8192 -t 16 of 1-32 KiB: ~240 chunk mappings).
static char *map_at_hint(size_t size, size_t align) {
  uintptr_t hint = __atomic_load_n(&g_os_map_hint, __ATOMIC_RELAXED);
  if (hint < size + align) return NULL;   // (0: none yet)
  uintptr_t want = (hint - size) & ~(uintptr_t)(align - 1);
  char *p = mmap((void *)want, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  if (((uintptr_t)p & (align - 1)) == 0) return p;   // want, or another aligned place
  munmap(p, size);   // the room below was taken: the next one is over-mapped and trimmed
  __atomic_store_n(&g_os_map_hint, 0, __ATOMIC_RELAXED);
  return NULL;
}

// Places of aligned mappings given back (os_unmap), for the next mapping of
// the same size: the kernel's own placement reuses a freed gap, the hint
// above walks on below the last mapping. Without them every page-heap region
// mapped after one was unmapped went lower: the fuzz target (hak_trim every
// few inputs) walked ~40 GiB down the address space per 1 500 inputs, and
// under ASan the shadow of each place touched stays resident, so its RSS grew
// by ~200 MB per 1 000 inputs until libFuzzer's 4
// GiB limit stopped `make fuzz FUZZ_SECONDS=900` after 21 k inputs. Kept:
// places of a power-of-two size of OS_PLACE_MIN or more, aligned to it, which
// leaves the low bits of a slot for log2 of the size; 0 is an empty slot. A
// slot is emptied by one compare-exchange, so two threads never try one
// place. The hardened build keeps none: a freed block's place is not handed
// out again at once.
#if defined(HAK_HARDENED) && HAK_HARDENED
#define OS_KEEP_PLACES 0
#else
#define OS_KEEP_PLACES 1
#endif
#define OS_PLACE_SLOTS 8u
#define OS_PLACE_MIN   ((size_t)1 << 21)
#define OS_PLACE_MAX   ((size_t)1 << 40)   // merged no further
static _Atomic uintptr_t g_os_places[OS_PLACE_SLOTS];
static _Atomic unsigned g_os_place_turn;

static uintptr_t place_word(uintptr_t a, size_t size) { return a | (uintptr_t)__builtin_ctzll(size); }

static void place_keep(void *addr, size_t size) {
  uintptr_t a = (uintptr_t)addr;
  if (!OS_KEEP_PLACES) return;
  if (size < OS_PLACE_MIN || (size & (size - 1)) != 0 || (a & (size - 1)) != 0) return;
  // A kept buddy (the other half of the place twice the size) merges with it:
  // the SuperSlabs of a chunk, unmapped one by one, make the chunk's place.
  for (unsigned i = 0; i < OS_PLACE_SLOTS && size < OS_PLACE_MAX;) {
    uintptr_t buddy = place_word(a ^ size, size);
    if (atomic_load_explicit(&g_os_places[i], memory_order_relaxed) == buddy &&
        atomic_compare_exchange_strong_explicit(&g_os_places[i], &buddy, 0, memory_order_relaxed,
                                                memory_order_relaxed)) {
      a &= ~size;
      size <<= 1;
      i = 0;
    } else {
      i++;
    }
  }
  uintptr_t v = place_word(a, size);
  for (unsigned i = 0; i < OS_PLACE_SLOTS; i++) {
    uintptr_t empty = 0;
    if (atomic_compare_exchange_strong_explicit(&g_os_places[i], &empty, v, memory_order_relaxed,
                                                memory_order_relaxed))
      return;
  }
  // All kept: the newest replaces one in turn (SuperSlabs, unmapped one by
  // one, leave places no chunk fits; they must not crowd out the regions').
  unsigned i = atomic_fetch_add_explicit(&g_os_place_turn, 1, memory_order_relaxed) % OS_PLACE_SLOTS;
  atomic_store_explicit(&g_os_places[i], v, memory_order_relaxed);
}

// A kept place of `size` bytes aligned to `align`, mapped again, or NULL.
static char *map_at_kept_place(size_t size, size_t align) {
  if ((size & (size - 1)) != 0) return NULL;
  for (unsigned i = 0; i < OS_PLACE_SLOTS; i++) {
    uintptr_t v = atomic_load_explicit(&g_os_places[i], memory_order_relaxed);
    char *at = (char *)(v & ~(uintptr_t)(OS_PLACE_MIN - 1));
    if (v == 0 || v != place_word((uintptr_t)at, size) || ((uintptr_t)at & (align - 1)) != 0) continue;
    if (!atomic_compare_exchange_strong_explicit(&g_os_places[i], &v, 0, memory_order_relaxed, memory_order_relaxed))
      continue;
    char *p = mmap(at, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == at) return p;
    if (p != MAP_FAILED) munmap(p, size);   // taken meanwhile by a mapping not ours
  }
  return NULL;
}

void *os_map_aligned(size_t size, size_t align) {
  int saved = errno;
  size_t page = os_page_size();
  if (align < page) align = page;
  if (size > SIZE_MAX - align) return NULL;
  if (align > page) {
    char *p = map_at_kept_place(size, align);
    if (p != NULL) {
      errno = saved;
      return p;
    }
    // Below the last one only when of its alignment's size (SuperSlabs,
    // chunks, regions): a block of a large alignment (huge.c) went below the
    // last mapping, each one lower, and its place was seldom taken again (the
    // fuzz target's aligned allocations: 11 k 4 KiB mappings 2 MiB apart and
    // ~800 others per 1 500 inputs); over-mapped, it lands in a gap the
    // kernel chooses, as the others of its kind did.
    p = size == align ? map_at_hint(size, align) : NULL;
    if (p != NULL) {
      __atomic_store_n(&g_os_map_hint, (uintptr_t)p, __ATOMIC_RELAXED);
      errno = saved;
      return p;
    }
  }
  size_t span = size + (align > page ? align : 0);
  char *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  // Out of address space: what is kept mapped for reuse, or (hardened) kept
  // inaccessible to catch misuse, goes back, and the mapping is tried again.
  if (p == MAP_FAILED && os_address_pressure()) p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) { errno = saved; return NULL; }
  uintptr_t a = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
  size_t head = a - (uintptr_t)p;
  size_t tail = span - head - size;
  if (head) munmap(p, head);
  if (tail) munmap((char *)a + size, tail);
  if (align > page && size == align) __atomic_store_n(&g_os_map_hint, a, __ATOMIC_RELAXED);
  errno = saved;
  return (void *)a;
}

void os_unmap(void *addr, size_t size) {
  int saved = errno;
  if (munmap(addr, size) == 0) place_keep(addr, size);
  errno = saved;
}

#define OS_RESIDENT_CHUNK 1024u   // pages per mincore call: a 1 KiB vector on the stack

size_t os_resident_pages(const void *addr, size_t pages) {
  unsigned char vec[OS_RESIDENT_CHUNK];
  size_t page = os_page_size(), resident = 0;
  int saved = errno;
  for (size_t done = 0; done < pages;) {
    size_t n = pages - done < OS_RESIDENT_CHUNK ? pages - done : OS_RESIDENT_CHUNK;
    if (mincore((char *)addr + done * page, n * page, vec) != 0) {
      errno = saved;
      return SIZE_MAX;
    }
    for (size_t i = 0; i < n; i++) resident += vec[i] & 1u;
    done += n;
  }
  errno = saved;
  return resident;
}

int os_purge(void *addr, size_t size) {
  int saved = errno;
  int done = madvise(addr, size, MADV_DONTNEED) == 0;
  errno = saved;
  return done;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23        // Linux 5.14's uapi value, for older headers
#endif
static int g_os_no_populate;          // the kernel lacks MADV_POPULATE_WRITE, or a filter refuses it

void os_populate(void *addr, size_t size) {
  if (__atomic_load_n(&g_os_no_populate, __ATOMIC_RELAXED)) return;
  int saved = errno;
  // EINVAL: a kernel before 5.14; ENOSYS, EPERM: a seccomp filter. (ENOMEM,
  // EFAULT, EHWPOISON: this range only; the pages fault in as they would.)
  if (madvise(addr, size, MADV_POPULATE_WRITE) != 0 && (errno == EINVAL || errno == ENOSYS || errno == EPERM))
    __atomic_store_n(&g_os_no_populate, 1, __ATOMIC_RELAXED);
  errno = saved;
}

void *os_remap(void *addr, size_t old_size, size_t new_size) {
  int saved = errno;
  void *p = mremap(addr, old_size, new_size, MREMAP_MAYMOVE);
  errno = saved;
  return p == MAP_FAILED ? NULL : p;
}

void os_write_all(int fd, const char *buf, size_t len) {
  int saved = errno;
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) { if (errno == EINTR) continue; break; }
    buf += n; len -= (size_t)n;
  }
  errno = saved;
}

int os_mutex_settles(pthread_mutex_t *m, const struct timespec *by) {
  int saved = errno;
  int ok = pthread_mutex_timedlock(m, by) == 0;
  if (ok) pthread_mutex_unlock(m);
  errno = saved;
  return ok;
}

unsigned os_cpus_allowed(void) {
  int saved = errno;
  cpu_set_t set;
  unsigned n = sched_getaffinity(0, sizeof set, &set) == 0 ? (unsigned)CPU_COUNT(&set) : 0u;
  errno = saved;
  return n;
}

uint64_t os_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

// process_vm_readv on ourselves answers EFAULT instead of raising SIGSEGV;
// where that system call is refused (seccomp), writing the range into a
// short-lived pipe makes the same check (write(2) fails with EFAULT).
int os_read_safely(uintptr_t addr, void *out, size_t len) {
  int saved = errno, ok;
  struct iovec local = {out, len};
  struct iovec remote = {(void *)addr, len};
  ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
  if (n == (ssize_t)len) ok = 1;
  else if (n >= 0 || errno == EFAULT) ok = 0;
  else {
    int fds[2];
    ok = 0;
    if (pipe2(fds, O_CLOEXEC) == 0) {
      ok = write(fds[1], (const void *)addr, len) == (ssize_t)len &&
           read(fds[0], out, len) == (ssize_t)len;
      close(fds[0]);
      close(fds[1]);
    }
  }
  errno = saved;
  return ok;
}

// "major.minor" parsed digit by digit: no sscanf (stdio may allocate) and
// nothing past the minor number read (glibc's "2.41.9000" is 2.41).
int os_version_at_least(const char *v, unsigned major, unsigned minor) {
  unsigned part[2] = {0, 0};
  for (unsigned i = 0; i < 2; i++) {
    if (*v < '0' || *v > '9') return 0;
    for (; *v >= '0' && *v <= '9'; v++)
      if (part[i] < 100000u) part[i] = part[i] * 10u + (unsigned)(*v - '0');   // clamped: no overflow
    if (i == 0 && *v++ != '.') return 0;
  }
  return part[0] > major || (part[0] == major && part[1] >= minor);
}

int os_libc_at_least(unsigned major, unsigned minor) {
  return os_version_at_least(gnu_get_libc_version(), major, minor);
}

int os_process_single_threaded(void) { return __libc_single_threaded != 0; }

// The kernel's bits, as glibc's malloc seeds its tcache key (getrandom with
// GRND_NONBLOCK at start-up; a sandbox that runs glibc's malloc allows it).
// AT_RANDOM was the source: its bytes 8-15 are glibc's pointer guard (the
// key of PTR_MANGLE: setjmp buffers, atexit handlers), so a program that
// learned the link key (a free block's words read after free, a size word
// read past an unterminated string) learned the pointer guard xor a stack
// address. It stays the fallback (an early-boot pool, a kernel before 3.17),
// with a count so two calls differ.
uint64_t os_random_seed(void) {
  static _Atomic uint64_t calls;
  int saved = errno;
  uint64_t r;
  ssize_t got = getrandom(&r, sizeof r, GRND_NONBLOCK);
  errno = saved;
  if (got == (ssize_t)sizeof r) return r;
  r = 0x9e3779b97f4a7c15ull;
  const unsigned char *rnd = (const unsigned char *)getauxval(AT_RANDOM);
  if (rnd != NULL) memcpy(&r, rnd + 8, sizeof r);
  return r ^ (uint64_t)(uintptr_t)&r ^ (atomic_fetch_add(&calls, 1) * 0xbf58476d1ce4e5b9ull);
}
