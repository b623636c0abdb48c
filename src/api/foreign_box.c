// foreign_box.c — pointers that reach free/realloc/malloc_usable_size but are
// not hakmem's (DESIGN §4). Strong definitions of src/core/foreign.h.
//
// The engine calls these for an address in no live SuperSlab and no huge
// record. Two kinds arrive here:
//   - glibc's own chunks: a library opened with RTLD_DEEPBIND binds malloc to
//     glibc, then hands the block to the program, which frees it with ours.
//     These are forwarded to glibc's free/realloc/malloc_usable_size.
//   - wild pointers: stack, static data, interior of a hakmem block,
//     misaligned, unmapped, or memory that does not carry a plausible glibc
//     chunk header. These are reported in one line on stderr and abort.
// The classification is conservative: a pointer is forwarded to glibc only
// after every cheap "wild" test failed and its chunk header (and, for heap
// chunks, the next chunk's PREV_INUSE bit) looks like a live glibc chunk.
//
// glibc's functions are found without dlsym (DESIGN §2): dl_iterate_phdr
// gives libc.so.6's PT_DYNAMIC, whose DT_GNU_HASH (or DT_HASH), DT_SYMTAB,
// DT_STRTAB and DT_VERSYM we read ourselves, once, on first need. Nothing here
// allocates or uses stdio. If libc.so.6 is not loaded (a static program), a
// valid glibc chunk is leaked on free and copied out on realloc. The one
// kernel call the tests need (reading memory that may not be mapped) and the
// report's write(2) go through src/os/; dl_iterate_phdr is the loader's list,
// read in-process.
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hakmem.h"
#include "api/api.h"
#include "core/foreign.h"
#include "debug/report.h"
#include "large/huge.h"
#include "os/os.h"

// ---- glibc's allocator, found in libc.so.6's dynamic symbol table ----------

typedef void   (*glibc_free_fn)(void *);
typedef void  *(*glibc_realloc_fn)(void *, size_t);
typedef size_t (*glibc_usable_fn)(void *);

enum { GLIBC_UNRESOLVED = 0, GLIBC_RESOLVED = 1 };

#define VERSYM_HIDDEN_BIT 0x8000u   // versym bit 15: a hidden (non-default) version

static struct {
  int state;                     // GLIBC_UNRESOLVED until the first lookup finished
  glibc_free_fn free;            // NULL if libc.so.6 is not loaded
  glibc_realloc_fn realloc;
  glibc_usable_fn usable_size;
} g_glibc;

typedef struct {
  uintptr_t base;
  const ElfW(Sym) *symtab;
  const char *strtab;
  const uint32_t *gnu_hash;
  const uint32_t *sysv_hash;
  const ElfW(Half) *versym;
  int found;
} elf_dyn_t;

static int str_eq(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

static int name_is_libc(const char *name) {
  if (name == NULL) return 0;
  const char *base = name;
  for (const char *s = name; *s; s++)
    if (*s == '/') base = s + 1;
  return str_eq(base, "libc.so.6");
}

// glibc relocates most d_ptr entries of a loaded object in place; the vDSO's
// and some other loaders' are left as offsets. An offset is below the base.
static uintptr_t dyn_addr(uintptr_t base, ElfW(Addr) v) {
  return v < base ? base + v : (uintptr_t)v;
}

static int find_libc_cb(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  elf_dyn_t *d = arg;
  if (!name_is_libc(info->dlpi_name)) return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    if (info->dlpi_phdr[i].p_type != PT_DYNAMIC) continue;
    d->base = info->dlpi_addr;
    const ElfW(Dyn) *dyn = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    for (; dyn->d_tag != DT_NULL; dyn++) {
      switch (dyn->d_tag) {
      case DT_SYMTAB:   d->symtab = (const ElfW(Sym) *)dyn_addr(d->base, dyn->d_un.d_ptr); break;
      case DT_STRTAB:   d->strtab = (const char *)dyn_addr(d->base, dyn->d_un.d_ptr); break;
      case DT_GNU_HASH: d->gnu_hash = (const uint32_t *)dyn_addr(d->base, dyn->d_un.d_ptr); break;
      case DT_HASH:     d->sysv_hash = (const uint32_t *)dyn_addr(d->base, dyn->d_un.d_ptr); break;
      case DT_VERSYM:   d->versym = (const ElfW(Half) *)dyn_addr(d->base, dyn->d_un.d_ptr); break;
      default: break;
      }
    }
    d->found = d->symtab && d->strtab && (d->gnu_hash || d->sysv_hash);
    return 1;
  }
  return 0;
}

// A usable definition: a defined function, and the default version (not a
// hidden compatibility version) when the object is versioned.
static const void *sym_if_usable(const elf_dyn_t *d, uint32_t ix, const char *name) {
  const ElfW(Sym) *s = &d->symtab[ix];
  if (s->st_shndx == SHN_UNDEF || s->st_value == 0) return NULL;
  if (ELF64_ST_TYPE(s->st_info) != STT_FUNC) return NULL;    // (an IFUNC would need calling)
  if (d->versym != NULL && (d->versym[ix] & VERSYM_HIDDEN_BIT)) return NULL;
  if (!str_eq(d->strtab + s->st_name, name)) return NULL;
  return (const void *)(d->base + s->st_value);
}

// The GNU hash function (Bernstein's h*33 + c, seeded 5381), as the ELF
// DT_GNU_HASH section defines it.
#define GNU_HASH_SEED 5381u
#define GNU_HASH_MULT 33u
static uint32_t gnu_hash_of(const char *name) {
  uint32_t h = GNU_HASH_SEED;
  for (const unsigned char *s = (const unsigned char *)name; *s; s++) h = h * GNU_HASH_MULT + *s;
  return h;
}

static const void *elf_lookup(const elf_dyn_t *d, const char *name) {
  if (d->gnu_hash != NULL) {
    // DT_GNU_HASH: nbuckets, symoffset, bloom_size, bloom_shift, then the
    // bloom words, the buckets and the chain (bit 0 of a chain entry ends it).
    const uint32_t *gh = d->gnu_hash;
    uint32_t nbuckets = gh[0], symoffset = gh[1], bloom_size = gh[2];
    const ElfW(Addr) *bloom = (const ElfW(Addr) *)&gh[4];
    const uint32_t *buckets = (const uint32_t *)&bloom[bloom_size];
    const uint32_t *chain = &buckets[nbuckets];
    if (nbuckets == 0) return NULL;
    uint32_t h = gnu_hash_of(name);
    uint32_t ix = buckets[h % nbuckets];
    if (ix < symoffset) return NULL;
    for (;; ix++) {
      uint32_t h2 = chain[ix - symoffset];
      if ((h | 1) == (h2 | 1)) {
        const void *p = sym_if_usable(d, ix, name);
        if (p != NULL) return p;
      }
      if (h2 & 1) break;
    }
    return NULL;
  }
  uint32_t nchain = d->sysv_hash[1];         // DT_HASH: nchain == number of symbols
  for (uint32_t ix = 1; ix < nchain; ix++) {
    const void *p = sym_if_usable(d, ix, name);
    if (p != NULL) return p;
  }
  return NULL;
}

static void glibc_resolve(void) {
  // Acquire, so a thread that sees RESOLVED also sees the three pointers
  // stored before the release below.
  if (__atomic_load_n(&g_glibc.state, __ATOMIC_ACQUIRE) == GLIBC_RESOLVED) return;
  elf_dyn_t d;
  memset(&d, 0, sizeof d);
  dl_iterate_phdr(find_libc_cb, &d);
  glibc_free_fn f = NULL;
  glibc_realloc_fn r = NULL;
  glibc_usable_fn u = NULL;
  if (d.found) {
    f = (glibc_free_fn)elf_lookup(&d, "free");
    r = (glibc_realloc_fn)elf_lookup(&d, "realloc");
    u = (glibc_usable_fn)elf_lookup(&d, "malloc_usable_size");
    // Never forward to ourselves (a libc.so.6 that is really us, statically merged...).
    if (f == &free || r == &realloc || u == (glibc_usable_fn)&malloc_usable_size) {
      f = NULL;
      r = NULL;
      u = NULL;
    }
    if (f == NULL || r == NULL || u == NULL) f = NULL, r = NULL, u = NULL;   // all or none
  }
  // Concurrent first users compute the same values; last store wins harmlessly.
  __atomic_store_n(&g_glibc.free, f, __ATOMIC_RELAXED);
  __atomic_store_n(&g_glibc.realloc, r, __ATOMIC_RELAXED);
  __atomic_store_n(&g_glibc.usable_size, u, __ATOMIC_RELAXED);
  // Release, so the pointers stored above are visible to whoever sees RESOLVED.
  __atomic_store_n(&g_glibc.state, GLIBC_RESOLVED, __ATOMIC_RELEASE);
}

// ---- wild pointer tests ----------------------------------------------------

extern void *__libc_stack_end __attribute__((weak));   // top of the main thread's stack

#define STACK_SLACK        ((uintptr_t)64 << 10)  // below sp (red zone, callee frames), and above it on an unknown stack
#define STACK_MAX_SPAN     ((uintptr_t)1 << 32)   // farther from sp than this is not the same stack
#define STACK_ENV_AREA     ((uintptr_t)1 << 20)   // argv/environment/auxv strings above __libc_stack_end
#define TP_ROUND           ((uintptr_t)4095)      // struct pthread ends within the stack block's last page
#define LOWEST_HEAP_ADDR   ((uintptr_t)65536)     // below: the kernel's mmap_min_addr, never a heap
#define GLIBC_ALIGN_MASK   ((uintptr_t)15)        // glibc's chunks are 16-byte aligned

static uintptr_t thread_pointer(void) {
#if defined(__x86_64__)
  uintptr_t tp;
  __asm__("mov %%fs:0, %0" : "=r"(tp));
  return tp;
#else
  return (uintptr_t)__builtin_thread_pointer();
#endif
}

// Is a on the calling thread's stack? The range is [sp - STACK_SLACK, top):
// top is __libc_stack_end (+ the argv/environment area above it) on the main
// thread, and the thread pointer (glibc puts struct pthread at the top of a
// thread's stack block) on other threads; on an unknown stack (coroutines)
// sp + STACK_SLACK.
__attribute__((noinline)) static int on_current_stack(uintptr_t a) {
  volatile char here = 0;
  uintptr_t sp = (uintptr_t)&here;
  uintptr_t lo = sp > STACK_SLACK ? sp - STACK_SLACK : 0;
  uintptr_t top;
  uintptr_t se = &__libc_stack_end != NULL ? (uintptr_t)__libc_stack_end : 0;
  uintptr_t tp = thread_pointer();
  if (se != 0 && sp < se && se - sp < STACK_MAX_SPAN)
    top = se + STACK_ENV_AREA;
  else if (tp > sp && tp - sp < STACK_MAX_SPAN)
    top = (tp | TP_ROUND) + 1;
  else
    top = sp + STACK_SLACK;
  return a >= lo && a < top;
}

typedef struct {
  uintptr_t addr;
  const char *object;            // name of the object whose segment holds addr
  int found;
} seg_query_t;

static int in_segment_cb(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  seg_query_t *q = arg;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD) continue;
    uintptr_t start = info->dlpi_addr + ph->p_vaddr;
    if (q->addr >= start && q->addr < start + ph->p_memsz) {
      q->found = 1;
      q->object = info->dlpi_name;
      return 1;
    }
  }
  return 0;
}

// glibc chunk layout (x86-64): [prev_size][size|A|M|P] user data...
#define GLIBC_PREV_INUSE     1u
#define GLIBC_IS_MMAPPED     2u
#define GLIBC_NON_MAIN_ARENA 4u
#define GLIBC_FLAG_BITS      7u                  // the three flags above, in size's low bits
#define GLIBC_HEADER         16u                 // prev_size + size, before the user pointer
#define GLIBC_SIZE_FIELD     8u                  // an in-use heap chunk's usable bytes end at the next size field
#define GLIBC_MINSIZE        32u
#define GLIBC_MAX_CHUNK      ((size_t)1 << 46)   // beyond any real chunk: a garbage size word

typedef struct {
  const char *why;               // NULL: a live glibc chunk
  const char *object;            // for "static data of"
  size_t usable;                 // usable bytes of the glibc chunk
} foreign_verdict_t;

static foreign_verdict_t foreign_classify(const void *ptr) {
  foreign_verdict_t v = {NULL, NULL, 0};
  uintptr_t a = (uintptr_t)ptr;
  size_t ps = os_page_size();
  if (a < LOWEST_HEAP_ADDR) { v.why = "not a heap address"; return v; }
  if (a & GLIBC_ALIGN_MASK) { v.why = "misaligned"; return v; }
  if (hak_owns(ptr)) { v.why = "interior pointer of a hakmem block"; return v; }
  if (on_current_stack(a)) { v.why = "on the stack"; return v; }
  seg_query_t q = {a, NULL, 0};
  dl_iterate_phdr(in_segment_cb, &q);
  if (q.found) { v.why = "static data"; v.object = q.object; return v; }

  size_t hdr[2];                             // prev_size, size
  if (!os_read_safely(a - GLIBC_HEADER, hdr, sizeof hdr)) { v.why = "unmapped memory"; return v; }
  size_t flags = hdr[1] & GLIBC_FLAG_BITS, csize = hdr[1] & ~(size_t)GLIBC_FLAG_BITS;
  if (csize < GLIBC_MINSIZE || (csize & GLIBC_ALIGN_MASK) || csize > GLIBC_MAX_CHUNK) {
    v.why = "no heap block header";
    return v;
  }
  if (flags & GLIBC_IS_MMAPPED) {
    size_t off = hdr[0];
    uintptr_t chunk = a - GLIBC_HEADER;
    if ((flags & GLIBC_NON_MAIN_ARENA) || off > chunk || csize < ps ||
        (((chunk - off) | (off + csize)) & (ps - 1)) != 0) {
      v.why = "no heap block header";
      return v;
    }
    v.usable = csize - GLIBC_HEADER;
    return v;
  }
  size_t next[2];                            // the next chunk must say "previous in use"
  if (!os_read_safely(a - GLIBC_HEADER + csize, next, sizeof next) || !(next[1] & GLIBC_PREV_INUSE) ||
      (next[1] & ~(size_t)GLIBC_FLAG_BITS) < GLIBC_HEADER) {
    v.why = "no heap block header";
    return v;
  }
  v.usable = csize - GLIBC_SIZE_FIELD;
  return v;
}

// ---- reporting -------------------------------------------------------------

static size_t put_str(char *buf, size_t at, size_t cap, const char *s) {
  while (s && *s && at < cap) buf[at++] = *s++;
  return at;
}

// The report's line, then abort() unless HAKMEM_ABORT_ON_ERROR=0 (which it
// ignored: a wild pointer's free, realloc or malloc_usable_size aborted
// whatever the setting said, where the engine's own reports went on).
__attribute__((cold, noinline)) static void foreign_report(const char *op, const void *ptr,
                                                           const foreign_verdict_t *v) {
  char buf[512];
  size_t n = 0, cap = sizeof buf - 2;        // room left for the newline (and hak_fmt_hex's NUL)
  n = put_str(buf, n, cap, "hakmem: ");
  n = put_str(buf, n, cap, op);
  n = put_str(buf, n, cap, " of invalid pointer ");
  n += hak_fmt_hex(buf + n, cap - n, (unsigned long long)(uintptr_t)ptr);
  n = put_str(buf, n, cap, " (");
  n = put_str(buf, n, cap, v->why);
  if (v->object != NULL) {
    n = put_str(buf, n, cap, " of ");
    n = put_str(buf, n, cap, v->object[0] ? v->object : "the main program");
  }
  n = put_str(buf, n, cap, ")");
  buf[n++] = '\n';
  os_write_all(STDERR_FILENO, buf, n);
  if (hak_report_aborts()) abort();
}

// ---- the three entry points the engine calls -------------------------------

void hak_foreign_free(void *ptr) {
  foreign_verdict_t v = foreign_classify(ptr);
  if (v.why != NULL) {
    // Not a glibc chunk either: one of our huge blocks freed again reads as one.
    if (huge_freed_recently(ptr)) hak_report_pointer_error("double free of", ptr, " (a huge block, freed before)");
    else foreign_report("free", ptr, &v);
    return;
  }
  glibc_resolve();
  glibc_free_fn f = __atomic_load_n(&g_glibc.free, __ATOMIC_RELAXED);
  if (f != NULL) f(ptr);
  // else: no glibc to give it back to; a valid chunk is leaked, not corrupted
}

void *hak_foreign_realloc(void *ptr, size_t size) {
  foreign_verdict_t v = foreign_classify(ptr);
  if (v.why != NULL) {   // reported, going on: the pointer is left alone (as foreign_default.c)
    foreign_report("realloc", ptr, &v);
    errno = EINVAL;
    return NULL;
  }
  glibc_resolve();
  glibc_realloc_fn r = __atomic_load_n(&g_glibc.realloc, __ATOMIC_RELAXED);
  if (r != NULL) return r(ptr, size);        // glibc 2.36: size 0 frees and returns NULL
  if (size == 0) return NULL;                // "freed" (leaked, see hak_foreign_free)
  void *n = hak_malloc(size);                // move it into hakmem
  if (n != NULL) memcpy(n, ptr, v.usable < size ? v.usable : size);
  return n;
}

size_t hak_foreign_usable_size(const void *ptr) {
  foreign_verdict_t v = foreign_classify(ptr);
  if (v.why != NULL) {
    foreign_report("malloc_usable_size", ptr, &v);
    return 0;
  }
  glibc_resolve();
  glibc_usable_fn u = __atomic_load_n(&g_glibc.usable_size, __ATOMIC_RELAXED);
  if (u != NULL) return u((void *)ptr);
  return v.usable;
}
