#!/usr/bin/env bash
# The 16-core run of issue 9, prepared here and run in one call on a borrowed
# many-core machine (the `device` tool: one command, ~10 minutes, no network,
# maybe no compiler and no peer packages).
#
#   scripts/device-scale.sh prepare      here: build everything the run needs into
#                                        build/device/ (one folder to carry)
#   scripts/device-scale.sh run [OUT]    there: bench-scale from build/device/,
#                                        results under OUT (default results/device)
#
# e.g. device run with carry ["build/device"] and the command
#   scripts/device-scale.sh run "$OUT"
#
# build/device/ holds: libhakmem.so (the default build), libhakmem-stats.so
# (STATS=1: the per-site counters), libhakmem-pfw.so (the free-path prefetchw
# experiment, HAK_FREE_PREFETCHW=1, CURRENT_TASK Known gaps 11),
# libhakmem-nomark.so (free without its double-free test, HAK_FREE_SKIP_MARK_TEST=1:
# unsafe, for this measurement only, Known gaps 15), bench/ (the
# programs) and peers/ (copies of this machine's jemalloc, tcmalloc-minimal and
# mimalloc, found there only when the machine has none of its own).
#
# The run, most important first, each part its own bench-scale call with its
# own output folder, so what finished survives a timeout:
#   1. every row at T=16, then 8: hakmem, glibc and the peers (the hardened
#      build left out: its large rows take minutes in the kernel at 16
#      threads), REPS=3, with hakmem's per-site counters;
#   2. ring, cross and larson at T=8 and 16: the build without free's mark test
#      (what exact double-free detection at the free costs on 16 cores), the
#      default with HAKMEM_FREE_BATCH=0 (every free tests its block at once:
#      what the batched frees of consumer threads win), the default, and the
#      prefetchw build;
#   3. every row at T=4, 1 and 2.
# Each part is bounded (`timeout`), and the whole run stops starting parts
# after DEVICE_BUDGET_S seconds (default 480).
set -uo pipefail
cd "$(dirname "$0")/.."
dev=build/device

prepare() {
  set -e
  make -j"$(nproc)" all bench-bins
  make -j"$(nproc)" STATS=1 DEBUG=0 SAN= build/stats/libhakmem.so
  make -j"$(nproc)" BUILD=build/pfw EXTRA_CFLAGS=-DHAK_FREE_PREFETCHW=1 build/pfw/libhakmem.so
  make -j"$(nproc)" BUILD=build/nomark EXTRA_CFLAGS=-DHAK_FREE_SKIP_MARK_TEST=1 build/nomark/libhakmem.so
  rm -rf "$dev"
  mkdir -p "$dev/bench" "$dev/peers"
  cp build/libhakmem.so "$dev/libhakmem.so"
  cp build/stats/libhakmem.so "$dev/libhakmem-stats.so"
  cp build/pfw/libhakmem.so "$dev/libhakmem-pfw.so"
  cp build/nomark/libhakmem.so "$dev/libhakmem-nomark.so"
  cp build/bench/* "$dev/bench/"
  libdir=/usr/lib/$(gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
  for so in libjemalloc.so.2 libtcmalloc_minimal.so.4 libmimalloc.so.2; do
    if [ -e "$libdir/$so" ]; then cp -L "$libdir/$so" "$dev/peers/$so"
    else echo "device-scale: $so not installed here (scripts/install-peers.sh): not carried" >&2; fi
  done
  du -sh "$dev"
  echo "device-scale: prepared $dev; carry it and run: scripts/device-scale.sh run \"\$OUT\""
}

run() {
  local out=${1:-results/device}
  local budget=${DEVICE_BUDGET_S:-480}
  local t0=$SECONDS
  mkdir -p "$out"
  [ -f "$dev/libhakmem.so" ] || { echo "device-scale: $dev is missing (prepare it and carry it)" >&2; return 1; }
  { date -u; nproc; lscpu 2>/dev/null | grep -E 'Model name|^CPU\(s\)|NUMA node\(s\)|L3'; uname -r;
    ldd --version 2>/dev/null | head -1; } >"$out/machine.txt"
  cat "$out/machine.txt"
  local scale=(python3 scripts/bench-scale.py --stats-lib "$dev/libhakmem-stats.so" --bindir "$dev/bench"
               --peers-dir "$dev/peers" --reps "${REPS:-3}")
  part() {   # [PART_ENV=VAR=value] part <name> <seconds> <bench-scale options...>
    local name=$1 limit=$2; shift 2
    local left=$(( budget - (SECONDS - t0) ))
    if [ "$left" -lt 20 ]; then echo "device-scale: $name skipped (budget spent)"; return; fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== device-scale: $name (at most ${limit}s; $(( SECONDS - t0 ))s used)"
    mkdir -p "$out/$name"
    timeout "$limit" env ${PART_ENV:-} "${scale[@]}" --out "$out/$name" "$@" >"$out/$name/log.txt" 2>&1
    echo "   exit $? after $(( SECONDS - t0 ))s"; tail -n 30 "$out/$name/log.txt" | grep -E '^\|' | head -12
  }
  local all=hakmem,glibc,jemalloc,tcmalloc,mimalloc
  for t in 16 8; do part "t$t" 150 --lib "$dev/libhakmem.so" --threads "$t" --allocs "$all"; done
  local xrows=(--stats-lib '' --threads "8 16" --rows ring,cross,larson --allocs hakmem)
  part nomark 60 --lib "$dev/libhakmem-nomark.so" "${xrows[@]}"
  PART_ENV=HAKMEM_FREE_BATCH=0 part nobatch 60 --lib "$dev/libhakmem.so" "${xrows[@]}"
  part pfw-base 60 --lib "$dev/libhakmem.so" "${xrows[@]}"
  part pfw 60 --lib "$dev/libhakmem-pfw.so" "${xrows[@]}"
  for t in 4 1 2; do part "t$t" 150 --lib "$dev/libhakmem.so" --threads "$t" --allocs "$all"; done
  echo "device-scale: done in $(( SECONDS - t0 ))s; results under $out"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run "${2:-}" ;;
  *) echo "usage: $0 prepare | run [OUT]" >&2; exit 2 ;;
esac
