// compile_ok_user_to_base.c — the control of compile_fail_user_as_base.c: the same
// code with the one legal conversion, hak_user_to_base(). Compiles with and
// without HAK_DEBUG.
#include "tiny/tls_sll_box.h"

int push_program_pointer(tls_cache_t *tc, unsigned cls, void *from_malloc);

int push_program_pointer(tls_cache_t *tc, unsigned cls, void *from_malloc) {
  hak_user_ptr_t u = hak_user_from_raw(from_malloc);
  return tls_sll_push(tc, cls, hak_user_to_base(u));
}
