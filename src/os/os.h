// os.h — the only box that talks to the kernel: mappings, purging, messages,
// the clock, the auxiliary vector and guarded reads of memory that may not be
// mapped. Nothing here allocates. (The environment is read by config.c.)
#ifndef HAK_OS_H
#define HAK_OS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

// The system page size, asked once (getauxval(AT_PAGESZ), cached; no system
// call, no allocation). Every mapping length and alignment the kernel checks
// is a multiple of it.
size_t os_page_size(void);

// Anonymous read/write mapping of `size` bytes aligned to `align` (a power of
// two >= page size). NULL when the kernel refuses.
void  *os_map_aligned(size_t size, size_t align);
void   os_unmap(void *addr, size_t size);
// Give the pages back: 1, and the range reads as zero afterwards; 0 when the
// kernel refused (locked memory: mlock, mlockall(MCL_FUTURE), mlock2's
// MLOCK_ONFAULT): the pages keep their data, and whoever counted on zeros
// must clear them or keep them counted dirty. errno is preserved.
int    os_purge(void *addr, size_t size);
// Fault the pages of [addr, addr + size) in now, writable, in one call
// (MADV_POPULATE_WRITE, Linux 5.14): what a program's first writes would fault
// one page at a time. Page aligned. Nothing when the kernel lacks it (asked
// once) or refuses (the pages then fault as they would have). errno is
// preserved.
void   os_populate(void *addr, size_t size);
// How many of the `pages` pages at addr (page aligned) are resident: mincore,
// one call per 1024 pages, no page touched. SIZE_MAX when the kernel refuses.
// errno is preserved.
size_t os_resident_pages(const void *addr, size_t pages);
// Resize a mapping in place or by moving it; NULL on failure.
void  *os_remap(void *addr, size_t old_size, size_t new_size);

// write(2) the whole buffer to fd, retrying on EINTR; errno is preserved.
void   os_write_all(int fd, const char *buf, size_t len);
// Can m be taken by `by` (CLOCK_REALTIME)? Taken and released at once: 1;
// still held then (by another thread that is slow, or by this one: exit()
// from a signal handler that interrupted the allocator): 0.
struct timespec;
int    os_mutex_settles(pthread_mutex_t *m, const struct timespec *by);
// Monotonic milliseconds (coarse clock, vDSO, cheap).
uint64_t os_now_ms(void);
// The CPUs this thread may run on (sched_getaffinity: taskset and cpusets
// count, the machine's other CPUs do not); 0 when the kernel does not say.
// One system call, no allocation; errno is preserved.
unsigned os_cpus_allowed(void);
// Copy len bytes at addr into out without faulting: 1 if every byte was
// readable, 0 otherwise (unmapped or unreadable). Costs a system call or two;
// errno is preserved.
int    os_read_safely(uintptr_t addr, void *out, size_t len);
// 64 random bits from the kernel (getrandom, one system call, no allocation;
// each call new ones), or, where it fails, from AT_RANDOM. errno is preserved.
uint64_t os_random_seed(void);
// Is version string v ("2.36", "2.41.9000") major.minor or later? 0 when it
// does not parse. os_libc_at_least asks it of the C library the process runs
// on (gnu_get_libc_version), for behaviour that changed between versions.
int os_version_at_least(const char *v, unsigned major, unsigned minor);
int os_libc_at_least(unsigned major, unsigned minor);
// 1 when the process has never started a thread (glibc's
// __libc_single_threaded, 2.32 on: it stays 0 once a thread was created,
// in a fork child too), so no other thread can be inside the library.
int os_process_single_threaded(void);

// os_map_aligned, refused a mapping, calls fn (set once at start-up), which
// gives back address space kept only for later reuse or to catch misuse; 1 if
// it gave any (the mapping is then tried again). fn must not wait for a lock a
// mapping's caller may hold.
void   os_on_address_pressure(int (*fn)(void));
int    os_address_pressure(void);

// os sits below debug/hak_base.h, which defines HAK_HARDENED: test it defined.
#if defined(HAK_HARDENED) && HAK_HARDENED
// The hardened build's kernel calls (os_guard.c).
// Make [addr, addr + size) readable and writable (rw = 1) or inaccessible
// (rw = 0); page aligned. 1 if the kernel did it, 0 when it refused (ENOMEM
// at vm.max_map_count: protecting part of a mapping splits it); a refused
// call may have changed part of the range. errno is preserved.
int    os_protect(void *addr, size_t size, int rw);
// Reserve size bytes of address space no access can touch (PROT_NONE, no
// memory behind it); NULL when the kernel refuses.
void  *os_reserve_none(size_t size);
// Drop the pages of [addr, addr + size) and keep it as address space no access
// can touch, in one call (a fresh PROT_NONE mapping in its place); page
// aligned. 0 when the kernel refuses. errno is preserved.
int    os_discard_none(void *addr, size_t size);
// The same for a range inside a larger mapping that will be opened again
// (os_protect): the fresh mapping is charged like the one around it (no
// MAP_NORESERVE), so the kernel can merge them. 0 when refused.
int    os_purge_none(void *addr, size_t size);
// Call fn with the faulting address on SIGSEGV (and SIGBUS); fn returns when
// the address is not the allocator's: the handler that was in place before
// (the program's, or another library's) is then called, or with none the
// default action is restored and the access faults again as it would have
// without the hook.
void   os_on_fault(void (*fn)(void *addr));
#endif

#endif
