// foreign_default.c — what the core library does with a pointer that is not
// ours: report and abort. The drop-in layer (src/api/) overrides these weak
// definitions to forward glibc's chunks to glibc.
#include "core/foreign.h"

#include <errno.h>

#include "debug/report.h"

__attribute__((weak)) void hak_foreign_free(void *ptr) {
  hak_report_pointer_error("free of a pointer hakmem did not allocate:", ptr, NULL);
}

__attribute__((weak)) void *hak_foreign_realloc(void *ptr, size_t size) {
  (void)size;
  hak_report_pointer_error("realloc of a pointer hakmem did not allocate:", ptr, NULL);
  errno = EINVAL;
  return NULL;
}

__attribute__((weak)) size_t hak_foreign_usable_size(const void *ptr) {
  hak_report_pointer_error("malloc_usable_size of a pointer hakmem did not allocate:", ptr, NULL);
  return 0;
}
