#!/usr/bin/env bash
# test_deb.sh — make deb builds hakmem_<version>_<arch>.deb holding what
# `make install PREFIX=/usr` installs. As root (with dpkg) it also installs the
# package on this machine, runs `hakmem python3 -c 'print(1)'` from it and
# removes it again; as another user those steps are skipped with a message.
set -u
cd "$(dirname "$0")/../.."
fail=0
ok()  { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

command -v dpkg-deb >/dev/null || { echo "SKIP test-deb: no dpkg-deb on this machine"; exit 0; }
version=$(sed -n 's/^#define HAKMEM_VERSION  *"\(.*\)"/\1/p' include/hakmem.h)
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
deb=build/hakmem_${version}_${arch}.deb
rm -f "$deb"
make --no-print-directory -s deb >build/deb.log 2>&1 || { cat build/deb.log; bad "make deb"; exit 1; }
check "make deb built $deb" test -f "$deb"
contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/hakmem ./usr/lib/libhakmem.so.$version ./usr/lib/libhakmem.so.0 ./usr/lib/libhakmem.so \
         ./usr/lib/libhakmem.a ./usr/include/hakmem.h ./usr/lib/pkgconfig/hakmem.pc; do
  check "the package holds $f" grep -q " $f\( ->.*\)\?\$" <<<"$contents"
done
check "files are owned by root" bash -c "! grep -v ' root/root ' <<<'$contents' | grep -q ."
check "Package: hakmem, Version: $version" bash -c \
  "[ \"\$(dpkg-deb -f '$deb' Package Version | tr '\n' ' ')\" = 'Package: hakmem Version: $version ' ]"

if [ "$(id -u)" != 0 ] || ! command -v dpkg >/dev/null; then
  echo "SKIP (not root): installing $deb into this machine and running hakmem from it"
elif dpkg -s hakmem >/dev/null 2>&1; then
  echo "SKIP: a hakmem package is already installed here; not replacing it"
else
  if dpkg -i "$deb" >build/deb-install.log 2>&1; then
    ok "dpkg -i $deb"
    out=$(/usr/bin/hakmem python3 -c 'print(1)' 2>&1)
    check "hakmem python3 -c 'print(1)' from the package prints 1 (got: $out)" test "$out" = 1
    check "the packaged hakmem preloads /usr/lib/libhakmem.so.0" bash -c \
      "/usr/bin/hakmem env | grep -q '^LD_PRELOAD=/usr/lib/libhakmem.so.0'"
    check "pkg-config finds the package's hakmem.pc" bash -c \
      "PKG_CONFIG_PATH=/usr/lib/pkgconfig pkg-config --modversion hakmem | grep -qx '$version'"
    dpkg --purge hakmem >>build/deb-install.log 2>&1 || bad "dpkg --purge hakmem"
    check "dpkg --purge removes /usr/lib/libhakmem.so.0" test ! -e /usr/lib/libhakmem.so.0
  else
    cat build/deb-install.log; bad "dpkg -i $deb"
  fi
fi
[ $fail -eq 0 ] && echo "PASS deb" || echo "FAILED deb"
exit $fail
