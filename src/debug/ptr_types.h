// ptr_types.h — base pointers (start of a block in its slab) and user pointers
// (what malloc handed to the program), the seed's Phase 10.1 phantom types.
//
// In debug builds the two are distinct one-member structs, so passing one where
// the other is expected does not compile; hak_base_to_user()/hak_user_to_base()
// are the only conversions. In release builds both are plain pointers and the
// conversions are free. hakmem keeps no per-block header, so the conversion is
// the identity today; the types still keep "block start" and "program pointer"
// apart in the tls_sll, free_local and remote_free boxes, and a header would
// change only the two functions below.
#ifndef HAK_PTR_TYPES_H
#define HAK_PTR_TYPES_H

#include "debug/hak_base.h"

#define HAK_BLOCK_HEADER_BYTES 0

#if HAK_DEBUG
typedef struct { void *p; } hak_base_ptr_t;
typedef struct { void *p; } hak_user_ptr_t;
HAK_INLINE hak_base_ptr_t hak_base_from_raw(void *p) { hak_base_ptr_t b = {p}; return b; }
HAK_INLINE hak_user_ptr_t hak_user_from_raw(void *p) { hak_user_ptr_t u = {p}; return u; }
HAK_INLINE void *hak_base_raw(hak_base_ptr_t b) { return b.p; }
HAK_INLINE void *hak_user_raw(hak_user_ptr_t u) { return u.p; }
#define HAK_BASE_NULL ((hak_base_ptr_t){NULL})
#else
typedef void *hak_base_ptr_t;
typedef void *hak_user_ptr_t;
HAK_INLINE hak_base_ptr_t hak_base_from_raw(void *p) { return p; }
HAK_INLINE hak_user_ptr_t hak_user_from_raw(void *p) { return p; }
HAK_INLINE void *hak_base_raw(hak_base_ptr_t b) { return b; }
HAK_INLINE void *hak_user_raw(hak_user_ptr_t u) { return u; }
#define HAK_BASE_NULL ((hak_base_ptr_t)NULL)
#endif

HAK_INLINE hak_user_ptr_t hak_base_to_user(hak_base_ptr_t b) {
  return hak_user_from_raw((char *)hak_base_raw(b) + HAK_BLOCK_HEADER_BYTES);
}
HAK_INLINE hak_base_ptr_t hak_user_to_base(hak_user_ptr_t u) {
  return hak_base_from_raw((char *)hak_user_raw(u) - HAK_BLOCK_HEADER_BYTES);
}
HAK_INLINE int hak_base_is_null(hak_base_ptr_t b) { return hak_base_raw(b) == NULL; }

#endif
