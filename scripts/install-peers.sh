#!/usr/bin/env bash
# Installs the peer allocators the benchmark compares hakmem with (jemalloc,
# tcmalloc-minimal, mimalloc) from Debian when one is missing.
#   scripts/install-peers.sh          install what is missing (needs root + apt-get)
#   scripts/install-peers.sh --check  only report; exit 1 if one is missing
# Without root the missing packages are named and the script exits 0: the
# benchmark then runs without those peers and says so.
set -uo pipefail
libdir=/usr/lib/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
declare -A peers=(
  [libjemalloc2]=libjemalloc.so.2
  [libtcmalloc-minimal4]=libtcmalloc_minimal.so.4
  [libmimalloc2.0]=libmimalloc.so.2
)
missing=()
for pkg in "${!peers[@]}"; do
  [ -e "$libdir/${peers[$pkg]}" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "${1:-}" = --check ]; then
  echo "peer allocators missing: ${missing[*]}" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing peer allocators: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq >/dev/null &&
         apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "install-peers: apt-get failed; the benchmark runs without: ${missing[*]}" >&2
  fi
else
  echo "install-peers: not root (or no apt-get); to compare with every peer run:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
fi
exit 0
