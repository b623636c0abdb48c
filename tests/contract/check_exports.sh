#!/usr/bin/env bash
# check_exports.sh LIB — libhakmem.so exports every symbol of the drop-in
# surface, nothing else but hak_*, and does not depend on libstdc++.
set -u
lib=${1:?usage: check_exports.sh path/to/libhakmem.so}
required="malloc free calloc realloc reallocarray posix_memalign aligned_alloc memalign valloc
pvalloc malloc_usable_size cfree free_sized free_aligned_sized __libc_malloc __libc_free __libc_calloc __libc_realloc
__libc_memalign __posix_memalign mallinfo mallinfo2 mallopt malloc_trim malloc_stats malloc_info
_Znwm _Znam _ZnwmRKSt9nothrow_t _ZnamRKSt9nothrow_t _ZnwmSt11align_val_t _ZnamSt11align_val_t
_ZnwmSt11align_val_tRKSt9nothrow_t _ZnamSt11align_val_tRKSt9nothrow_t
_ZdlPv _ZdaPv _ZdlPvm _ZdaPvm _ZdlPvSt11align_val_t _ZdaPvSt11align_val_t
_ZdlPvmSt11align_val_t _ZdaPvmSt11align_val_t _ZdlPvRKSt9nothrow_t _ZdaPvRKSt9nothrow_t
_ZdlPvSt11align_val_tRKSt9nothrow_t _ZdaPvSt11align_val_tRKSt9nothrow_t
hak_malloc hak_free hak_calloc hak_realloc hak_reallocarray hak_aligned_alloc hak_posix_memalign
hak_usable_size hak_owns hak_trim hak_thread_flush hak_get_stats hak_print_stats hak_version
hak_get_class_stats hak_print_class_stats"
exported=$(nm -D --defined-only "$lib" | awk '{print $3}' | sed 's/@.*//' | sort -u)
fail=0
for s in $required; do
  grep -qx -- "$s" <<<"$exported" || { echo "FAIL missing export: $s"; fail=1; }
done
for s in $exported; do
  case " $(echo $required) " in *" $s "*) continue ;; esac
  case $s in hak_*) continue ;; esac
  echo "FAIL unexpected export: $s"; fail=1
done
if ldd "$lib" | grep -q 'libstdc++'; then echo "FAIL $lib depends on libstdc++"; fail=1; fi
if readelf -d "$lib" | grep NEEDED | grep -q 'libstdc++'; then echo "FAIL $lib NEEDs libstdc++"; fail=1; fi
# Its calls to its own exports are bound at link time (-Bsymbolic-functions):
# no dynamic relocation names a function the library defines. Each such
# relocation was a symbol lookup at every program start (18 of them, 10 000
# instructions of a preloaded /bin/true), an indirect call (calloc into
# hak_calloc, hak_calloc into hak_malloc), and went to whichever free or
# realloc the program had interposed.
self_bound=$(readelf -rW "$lib" | awk '$3 ~ /R_X86_64_(GLOB_DAT|JUMP_SLOT)/ {print $5}' | sed 's/@.*//' | sort -u |
             grep -xF -f <(echo "$exported") || true)
if [ -n "$self_bound" ]; then echo "FAIL $lib looks up its own functions at load: $(echo $self_bound)"; fail=1; fi
[ $fail -eq 0 ] && echo "PASS exports of $lib: $(wc -w <<<"$exported") symbols, no libstdc++"
exit $fail
