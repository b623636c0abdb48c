#!/usr/bin/env bash
# test_install.sh — make install into a temporary prefix (and with DESTDIR),
# pkg-config builds and links a program against the installed copy, the
# installed hakmem command runs programs with it, make uninstall removes it all.
# Runs as any user. Usage: tests/install/test_install.sh (from the checkout root).
set -u
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d "${TMPDIR:-/tmp}/hakmem-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
ok()   { echo "ok: $*"; }
bad()  { echo "FAIL: $*"; fail=1; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

version=$(sed -n 's/^#define HAKMEM_VERSION  *"\(.*\)"/\1/p' include/hakmem.h)
prefix=$tmp/prefix
make --no-print-directory -s install PREFIX="$prefix" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; bad "make install PREFIX=$prefix"; exit 1; }
for f in bin/hakmem lib/libhakmem.so.$version lib/libhakmem.so.0 lib/libhakmem.so lib/libhakmem.a \
         lib/libhakmem-hardened.so include/hakmem.h lib/pkgconfig/hakmem.pc; do
  check "installed $f" test -e "$prefix/$f"
done
check "libhakmem.so.0 is a link to libhakmem.so.$version" test "$(readlink "$prefix/lib/libhakmem.so.0")" = "libhakmem.so.$version"
check "soname is libhakmem.so.0" bash -c "readelf -d '$prefix/lib/libhakmem.so.$version' | grep -q 'SONAME.*\[libhakmem.so.0\]'"

# pkg-config against the installed copy
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
check "pkg-config --modversion hakmem = $version" test "$(pkg-config --modversion hakmem)" = "$version"
cflags=$(pkg-config --cflags hakmem); cflags=${cflags% }; libs=$(pkg-config --libs hakmem)
check "pkg-config --cflags names the prefix" test "$cflags" = "-I$prefix/include"
if ${CC:-cc} -DPROBE_LINKED $cflags tests/install/probe.c -o "$tmp/probe-linked" $libs -ldl 2>"$tmp/cc.log"; then
  ok "cc \$(pkg-config --cflags --libs hakmem) builds and links"
  check "the linked program needs libhakmem.so.0" bash -c "readelf -d '$tmp/probe-linked' | grep -q 'NEEDED.*\[libhakmem.so.0\]'"
  out=$(LD_LIBRARY_PATH=$prefix/lib "$tmp/probe-linked" 2>&1)
  check "the linked program runs on the installed library ($out)" test "${out%% preload=*}" = "hakmem $version owns=1"
else
  cat "$tmp/cc.log"; bad "cc with pkg-config flags"
fi
${CC:-cc} tests/install/probe.c -o "$tmp/probe" -ldl || bad "cc probe.c"

# the installed hakmem command
hk=$prefix/bin/hakmem
check "hakmem --version" test "$("$hk" --version)" = "hakmem $version"
check "hakmem --help" bash -c "'$hk' --help | grep -q -- '--stats=json'"
out=$("$hk" "$tmp/probe" 2>&1)
check "hakmem program preloads the installed library ($out)" \
  test "$out" = "hakmem $version owns=1 preload=$prefix/lib/libhakmem.so.0"
"$hk" "$tmp/probe" 7 >/dev/null; rc=$?
check "the exit status is the program's (7, got $rc)" test $rc -eq 7
other=$(ldconfig -p 2>/dev/null | awk '/libm\.so\.6 .*x86-64/ {print $NF; exit}'); other=${other:-libm.so.6}
out=$(LD_PRELOAD=$other "$hk" "$tmp/probe" 2>&1)
check "hakmem goes first in an existing LD_PRELOAD ($out)" \
  test "$out" = "hakmem $version owns=1 preload=$prefix/lib/libhakmem.so.0:$other"
out=$("$hk" --hardened "$tmp/probe" 2>&1)
check "hakmem --hardened program preloads the installed hardened library ($out)" \
  test "$out" = "hakmem $version owns=1 preload=$prefix/lib/libhakmem-hardened.so"
check "hakmem -- program" bash -c "'$hk' -- '$tmp/probe' >/dev/null"
"$hk" --bogus true 2>"$tmp/err"; rc=$?
check "an unknown option is refused (rc 2, got $rc)" test $rc -eq 2
check "hakmem --stats=json program prints JSON" bash -c \
  "'$hk' --stats=json '$tmp/probe' 2>&1 >/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"version\"]==\"$version\"'"
check "hakmem --stats --stats-file=F writes F" bash -c \
  "'$hk' --stats --stats-file='$tmp/stats.txt' '$tmp/probe' >/dev/null 2>&1 && grep -q 'hakmem $version' '$tmp/stats.txt'"
check "hakmem --no-abort sets HAKMEM_ABORT_ON_ERROR=0" bash -c "'$hk' --no-abort env | grep -qx HAKMEM_ABORT_ON_ERROR=0"
check "hakmem --verbose prints the configuration" bash -c "'$hk' --verbose true 2>&1 | grep -q 'HAKMEM_PURGE_DELAY_MS'"

# from the checkout: scripts/hakmem finds build/libhakmem.so
out=$(scripts/hakmem "$tmp/probe" 2>&1)
check "scripts/hakmem from the checkout preloads build/libhakmem.so ($out)" \
  test "$out" = "hakmem $version owns=1 preload=$PWD/build/libhakmem.so"
out=$(scripts/hakmem --hardened "$tmp/probe" 2>&1)
check "scripts/hakmem --hardened preloads build/libhakmem-hardened.so ($out)" \
  test "$out" = "hakmem $version owns=1 preload=$PWD/build/libhakmem-hardened.so"
check "scripts/hakmem --version" test "$(scripts/hakmem --version)" = "hakmem $version"

# uninstall leaves nothing behind
make --no-print-directory -s uninstall PREFIX="$prefix" >/dev/null 2>&1 || bad "make uninstall"
left=$(find "$prefix" -type f -o -type l)
check "make uninstall removes every file${left:+ (left: $left)}" test -z "$left"

# DESTDIR: staged under DESTDIR, paths inside name PREFIX only
stage=$tmp/stage
make --no-print-directory -s install PREFIX=/usr DESTDIR="$stage" >/dev/null 2>&1 || bad "make install DESTDIR"
check "DESTDIR install stages usr/lib/libhakmem.so.0" test -e "$stage/usr/lib/libhakmem.so.0"
check "the staged hakmem.pc says prefix=/usr" grep -qx 'prefix=/usr' "$stage/usr/lib/pkgconfig/hakmem.pc"
check "the staged hakmem command names /usr/lib/libhakmem.so.0" grep -qx 'HAKMEM_INSTALLED_LIB=/usr/lib/libhakmem.so.0' "$stage/usr/bin/hakmem"
make --no-print-directory -s uninstall PREFIX=/usr DESTDIR="$stage" >/dev/null 2>&1
left=$(find "$stage" -type f -o -type l)
check "make uninstall DESTDIR removes every file" test -z "$left"

[ $fail -eq 0 ] && echo "PASS install" || echo "FAILED install"
exit $fail
