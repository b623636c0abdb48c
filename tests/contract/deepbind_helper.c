// deepbind_helper.c — a shared library that test_foreign opens with
// dlopen(RTLD_NOW | RTLD_DEEPBIND). Deep binding makes its malloc/memalign/
// calloc references resolve in its own dependencies first, i.e. to glibc, so
// the blocks it returns are glibc chunks that the program then frees,
// reallocs and measures through hakmem.
#include <malloc.h>
#include <stdlib.h>

__attribute__((visibility("default"))) void *deepbind_malloc(size_t n) { return malloc(n); }
__attribute__((visibility("default"))) void *deepbind_calloc(size_t n, size_t m) { return calloc(n, m); }
__attribute__((visibility("default"))) void *deepbind_memalign(size_t al, size_t n) { return memalign(al, n); }
__attribute__((visibility("default"))) void deepbind_free(void *p) { free(p); }
// Where this library's malloc lives (glibc's if deep binding worked).
__attribute__((visibility("default"))) void *deepbind_malloc_address(void) { return (void *)&malloc; }
