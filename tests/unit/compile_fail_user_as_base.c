// compile_fail_user_as_base.c — MUST NOT COMPILE with -DHAK_DEBUG=1.
//
// A pointer the program holds (hak_user_ptr_t) is handed to the tls_sll box, which
// takes block starts (hak_base_ptr_t), without hak_user_to_base(). In debug builds
// the two phantom types are distinct structs and this is a type error; in release
// builds both are void * and this compiles (make test-unit-compile-fail checks both).
// compile_ok_user_to_base.c is the same code with the conversion.
#include "tiny/tls_sll_box.h"

int push_program_pointer(tls_cache_t *tc, unsigned cls, void *from_malloc);

int push_program_pointer(tls_cache_t *tc, unsigned cls, void *from_malloc) {
  hak_user_ptr_t u = hak_user_from_raw(from_malloc);
  return tls_sll_push(tc, cls, u);     // wrong: a user pointer where a base pointer is expected
}
