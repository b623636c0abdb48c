#!/usr/bin/env bash
# check-layers.sh — every #include "dir/..." in src/ points to the file's own
# layer or a lower one (README.md, "Layout"). Prints one line per violation,
# file:line and the two layers, and exits 1 if there is any.
#   scripts/check-layers.sh [ROOT]     ROOT: the repository (default: this script's ..)
set -euo pipefail

root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
# Top to bottom. A directory may include its own headers and those of any layer
# after it here; include/hakmem.h (#include "hakmem.h") any layer may include.
LAYERS="api core tiny shared_pool superslab large stats config debug os"

cd "$root"
files=$(find src -type f \( -name '*.c' -o -name '*.h' \) | LC_ALL=C sort)
[ -n "$files" ] || { echo "check-layers: no sources under $root/src" >&2; exit 1; }

# shellcheck disable=SC2086
awk -v layers="$LAYERS" '
  BEGIN {
    n = split(layers, order, " ")
    for (i = 1; i <= n; i++) rank[order[i]] = i
    bad = 0
  }
  FNR == 1 {
    split(FILENAME, parts, "/")          # src/<layer>/...
    layer = parts[2]
    if (!(layer in rank)) {
      printf "%s: directory src/%s/ is not in the layer order (%s)\n", FILENAME, layer, layers
      bad++
    }
  }
  /^[ \t]*#[ \t]*include[ \t]*"/ {
    line = $0
    sub(/^[ \t]*#[ \t]*include[ \t]*"/, "", line)
    sub(/".*/, "", line)
    if (line == "hakmem.h") next         # the public header: any layer
    if (index(line, "/") == 0) {
      printf "%s:%d: #include \"%s\" names no layer (write \"dir/file.h\")\n", FILENAME, FNR, line
      bad++
      next
    }
    dir = substr(line, 1, index(line, "/") - 1)
    if (!(dir in rank)) {
      printf "%s:%d: #include \"%s\": %s is not a layer (%s)\n", FILENAME, FNR, line, dir, layers
      bad++
    } else if ((layer in rank) && rank[dir] < rank[layer]) {
      printf "%s:%d: layer %s includes \"%s\" from higher layer %s\n", FILENAME, FNR, layer, line, dir
      bad++
    }
  }
  END {
    if (bad) { printf "check-layers: %d include(s) break the layer order %s\n", bad, layers; exit 1 }
    printf "check-layers: every include in src/ points down (%s)\n", layers
  }
' $files
