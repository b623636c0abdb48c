#!/usr/bin/env bash
# Builds mimalloc's secure mode, the yardstick of issue 12 ("the hardened
# build's cost relative to its default, better than mimalloc's secure mode
# relative to its default"). Debian ships no secure mimalloc, so this fetches
# the source of the installed peer's version (apt-get source, with a private
# sources list: nothing under /etc changes) and builds it twice with the same
# compiler and flags, MI_SECURE=ON and plain, so their ratio is the secure
# mode's cost alone and not Debian's flags against ours:
#   build/peers/libmimalloc-secure.so   cmake -DMI_SECURE=ON (guard pages, encoded
#                                       free lists, randomised reuse, double-free checks)
#   build/peers/libmimalloc-src.so      the same source and flags, default mode
# `make bench` adds both as columns when they exist (not counted as peers for
# "best" and "leanest"), with the ratio secure / src beside hakmem's own.
#   scripts/build-mimalloc-secure.sh [OUTDIR]      (default build/peers)
# Needs network access to deb.debian.org, cmake and a C compiler (installs
# cmake when root and it is missing). Exits 1, saying why, when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/peers}
die() { echo "build-mimalloc-secure: $*" >&2; exit 1; }

ver=$(dpkg-query -W -f='${Version}' libmimalloc2.0 2>/dev/null || true)
[ -n "$ver" ] || ver=2.0.9+ds-2   # bookworm's, when the peer is not installed
if ! command -v cmake >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cmake >/dev/null ||
      die "apt-get install cmake failed"
  else
    die "cmake is missing (sudo apt-get install cmake)"
  fi
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/src"
# bookworm's main archive (signed by the key every Debian 12 has)
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
  >"$work/sources.list"
apt_opts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "Debug::NoLocking=1")
mkdir -p "$work/cache/archives/partial"
apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1 || die "apt-get update of the source index failed (network?)"
(cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only "mimalloc=$ver" >/dev/null 2>&1) ||
  die "apt-get source mimalloc=$ver failed"
tarball=$(ls "$work"/src/mimalloc_*.orig.tar.* 2>/dev/null | head -1)
[ -n "$tarball" ] || die "no source tarball in what apt-get fetched"
tar -C "$work/src" -xf "$tarball"
srcdir=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'mimalloc*' | head -1)
[ -f "$srcdir/CMakeLists.txt" ] || die "unexpected source layout in $tarball"

build() {   # build <dir> <cmake options...>
  local dir=$1; shift
  cmake -S "$srcdir" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DMI_BUILD_TESTS=OFF \
    -DMI_BUILD_STATIC=OFF -DMI_BUILD_OBJECT=OFF "$@" >/dev/null || die "cmake configure failed"
  cmake --build "$dir" -j "$(nproc)" >/dev/null || die "cmake build failed"
}
build "$work/b-secure" -DMI_SECURE=ON
build "$work/b-src"
mkdir -p "$out"
cp "$(ls "$work"/b-secure/libmimalloc-secure.so.* | head -1)" "$out/libmimalloc-secure.so"
cp "$(ls "$work"/b-src/libmimalloc.so.* | head -1)" "$out/libmimalloc-src.so"
echo "build-mimalloc-secure: mimalloc $ver: $out/libmimalloc-secure.so and $out/libmimalloc-src.so"
