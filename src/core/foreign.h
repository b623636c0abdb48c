// foreign.h — what the engine does with a pointer that is not ours.
//
// hak_free/hak_realloc/hak_usable_size call these for an address that lies in
// no live SuperSlab and no huge-block record. The core library defines weak
// versions that report the pointer on stderr and abort; the drop-in layer
// (src/api/) overrides them to forward glibc's own chunks (RTLD_DEEPBIND
// libraries, __libc_malloc callers) to glibc and to report wild pointers.
#ifndef HAK_FOREIGN_H
#define HAK_FOREIGN_H
#include <stddef.h>

void   hak_foreign_free(void *ptr);
void  *hak_foreign_realloc(void *ptr, size_t size);
size_t hak_foreign_usable_size(const void *ptr);

#endif
