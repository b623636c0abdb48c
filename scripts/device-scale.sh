#!/usr/bin/env bash
# The 16-core run of issue 9, prepared here and run in one call on a borrowed
# many-core machine (the `device` tool: one command, ~10 minutes, no network,
# maybe no compiler and no peer packages).
#
#   scripts/device-scale.sh prepare      here: build everything the run needs into
#                                        build/device/ (one folder to carry)
#   scripts/device-scale.sh run [OUT]    there: bench-scale from build/device/,
#                                        results under OUT (default results/device)
#   scripts/device-scale.sh build-variants   here: only the experiment builds
#                                        (`make test-layers` runs it)
#
# e.g. device run with carry ["build/device"] and the command
#   PACK=$OUT/device.tgz scripts/device-scale.sh run /tmp/res
#
# build/device/ holds: libhakmem.so (the default build), libhakmem-stats.so
# (STATS=1: the per-site counters), libhakmem-pfw.so (the free-path prefetchw
# experiment, HAK_FREE_PREFETCHW=1, CURRENT_TASK Known gaps 11),
# libhakmem-nomark.so (free without its double-free test, HAK_FREE_SKIP_MARK_TEST=1:
# unsafe, for this measurement only, Known gaps 15), libhakmem-nohome.so (another thread's
# block under a cache line stays where it is freed, HAK_SEND_HOME_BELOW=1u:
# what the passive-false-sharing rule costs), libhakmem-nostop.so (a thread
# that started batching its frees never stops, FREE_BATCH_STOP_WINDOW huge:
# the ring of two threads in `ab OUT rows`), bench/ (the
# programs) and peers/ (copies of this machine's jemalloc, tcmalloc-minimal and
# mimalloc, found there only when the machine has none of its own).
#
# The run, each part its own bench-scale call with its own output folder, so
# what finished survives a timeout:
#   1. every row at T=16, 8, 4, 2 and 1: hakmem, glibc and the peers (the
#      hardened build left out: its large rows take minutes in the kernel at
#      16 threads), REPS=3, hakmem's per-site counters at 16 and 8;
#   2. ring, cross and larson at T=16: the default with HAKMEM_FREE_BATCH=0
#      (what the batched frees of consumer threads win), the build without
#      free's mark test (what exact double-free detection at the free costs)
#      and the prefetchw build.
# Each part is bounded (`timeout`), and the whole run stops starting parts
# after DEVICE_BUDGET_S seconds (default 480). The device tool brings back at
# most 8 files: with PACK=FILE (e.g. PACK=$OUT/device.tgz) the results are
# packed into one archive after each part. Merge the parts into one report
# here: scripts/bench-scale.py --merge DIR/t1 DIR/t2 ... --ncpu 16 --out OUT.
#
# `all OUT` runs the run and the modes below in one call (one machine start):
#   REPS=5 PACK=$OUT/device.tgz scripts/device-scale.sh all /tmp/res
# with carry ["build/device", "build/perfkit"], timeout_s 600.
# The other modes, for the questions a run leaves (each writes one file; PACK
# copies it): `ab OUT rows|kernel|home`: paired rounds (scripts/ab.py, ROUNDS=7) of
# rows against the builds and settings that might move them; `phases OUT`:
# mstress's round phases under hakmem and mimalloc; `perfkit` (here) and
# `profile OUT` (there, carrying build/perfkit too): cpu-clock profiles, as
# the machine has no perf.
set -uo pipefail
cd "$(dirname "$0")/.."
dev=build/device

# The experiment builds the run carries: a name (build/NAME/libhakmem.so, and
# libhakmem-NAME.so on the device) and the compiler flags that make it. `make
# test-layers` builds them all (`build-variants`), so a change that breaks one
# fails here and not at the start of a lent machine's session (a batch of 64
# held frees, the earlier b64, stopped compiling when the batch moved into the
# thread's record and was dropped: measured on 16 cores in the thirtieth
# session, no gain past the noise).
variants() {
  cat <<'EOF'
pfw -DHAK_FREE_PREFETCHW=1
nomark -DHAK_FREE_SKIP_MARK_TEST=1
nohome -DHAK_SEND_HOME_BELOW=1u
nostop -DFREE_BATCH_STOP_WINDOW=0x7fffffffu
EOF
}

build_variants() {
  local name flags
  while read -r name flags; do
    make -j"$(nproc)" BUILD="build/$name" EXTRA_CFLAGS="$flags" "build/$name/libhakmem.so" || return 1
  done < <(variants)
}

prepare() {
  set -e
  make -j"$(nproc)" all bench-bins
  make -j"$(nproc)" STATS=1 DEBUG=0 SAN= build/stats/libhakmem.so
  build_variants
  rm -rf "$dev"
  mkdir -p "$dev/bench" "$dev/peers"
  cp build/libhakmem.so "$dev/libhakmem.so"
  cp build/stats/libhakmem.so "$dev/libhakmem-stats.so"
  local name flags
  while read -r name flags; do cp "build/$name/libhakmem.so" "$dev/libhakmem-$name.so"; done < <(variants)
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
    # the device tool brings back at most 8 files: one archive, rewritten after each part
    [ -n "${PACK:-}" ] && tar czf "$PACK" -C "$out" .
  }
  local all=hakmem,glibc,jemalloc,tcmalloc,mimalloc
  # every row at every thread count first (the per-site counters at 16 and 8
  # only), then what the batched frees and the mark test cost at 16 threads.
  part t16 150 --lib "$dev/libhakmem.so" --threads 16 --allocs "$all"
  part t8 120 --lib "$dev/libhakmem.so" --threads 8 --allocs "$all"
  local t
  for t in 4 2 1; do part "t$t" 90 --stats-lib '' --lib "$dev/libhakmem.so" --threads "$t" --allocs "$all"; done
  local xrows=(--stats-lib '' --threads 16 --rows ring,cross,larson --allocs hakmem)
  PART_ENV=HAKMEM_FREE_BATCH=0 part nobatch 45 --lib "$dev/libhakmem.so" "${xrows[@]}"
  part nomark 45 --lib "$dev/libhakmem-nomark.so" "${xrows[@]}"
  part pfw 45 --lib "$dev/libhakmem-pfw.so" "${xrows[@]}"
  echo "device-scale: done in $(( SECONDS - t0 ))s; results under $out"
}

# Paired rounds (scripts/ab.py) of the rows where the bench-scale figures of
# the first 16-core run (2026-12-04) were too noisy to rank or fell short,
# each with the builds and settings that might move them (`rows`), and what
# the kernel's work for purges and page population costs (`kernel`), and what
# the passive-false-sharing rule costs (`home`).
ab() {
  local out=${1:-results/device}
  local budget=${DEVICE_BUDGET_S:-480} t0=$SECONDS rounds=${ROUNDS:-7}
  mkdir -p "$out"
  [ -f "$dev/libhakmem.so" ] || { echo "device-scale: $dev is missing (prepare it and carry it)" >&2; return 1; }
  local b=$dev/bench p=$dev/peers
  local base=base=$dev/libhakmem.so pfw=pfw=$dev/libhakmem-pfw.so
  local je=jemalloc=$p/libjemalloc.so.2 tc=tcmalloc=$p/libtcmalloc_minimal.so.4 mi=mimalloc=$p/libmimalloc.so.2
  one() {   # one <seconds> <command> <variants...>
    local limit=$1 cmd=$2; shift 2
    local left=$(( budget - (SECONDS - t0) ))
    if [ "$left" -lt 15 ]; then echo "device-scale: skipped (budget spent): $cmd" | tee -a "$out/ab.txt"; return; fi
    [ "$limit" -gt "$left" ] && limit=$left
    timeout "$limit" python3 scripts/ab.py --rounds "$rounds" -- "$cmd" "$@" >>"$out/ab.txt" 2>&1
    echo "   exit $? after $(( SECONDS - t0 ))s" >>"$out/ab.txt"
    [ -n "${PACK:-}" ] && cp "$out/ab.txt" "$PACK"
  }
  local small="-w 8192 --min 16 --max 1024" lib=$dev/libhakmem.so
  case "${2:-rows}" in
  rows)     # the rows, the free-path builds and the batch switch
    one 60 "$b/ring --min 16 --max 1024 -t 16 -n 4000000" "$base" "$pfw" "nobatch=$lib@HAKMEM_FREE_BATCH=0" "$je" "$tc"
    one 60 "$b/ws8192 $small -x -t 16 -n 4000000" "$base" "$pfw" "$je" "$tc"
    one 50 "$b/mstress -r 10 -t 16 -n 20000" "$base" "$pfw" "purge256=$lib@HAKMEM_PURGE_DIRTY_MB=256" "nopop=$lib@HAKMEM_POPULATE=0" "trim32=$lib@HAKMEM_BIND_TRIM_KB=32" "$mi" "$tc"
    one 50 "$b/larson -c 1000 --min 8 --max 1000 -t 2 -n 3000000" "$base" "$pfw" "$tc" "$je"
    one 40 "$b/ring --min 16 --max 1024 -t 2 -n 5000000" "$base" "nostop=$dev/libhakmem-nostop.so" "$je" "$tc"
    one 50 "$b/larson -c 1000 --min 8 --max 1000 -t 16 -n 3000000" "$base" "$pfw" "$tc"
    one 40 "$b/ws8192 -w 8192 --min 1K --max 32K -t 1 -n 1500000" "$base" "$tc"
    one 40 "$b/ws8192 $small -t 8 -n 8000000" "$base" "$tc" "$mi"
    one 40 "$b/mstress -r 10 -t 1 -n 20000" "$base" "$mi" ;;
  kernel)   # what the kernel work of purges and populates costs at 8 and 16 threads
    local nopop=nopop=$lib@HAKMEM_POPULATE=0 purge=purge256=$lib@HAKMEM_PURGE_DIRTY_MB=256
    local both=both=$lib@HAKMEM_POPULATE=0,HAKMEM_PURGE_DIRTY_MB=256
    one 60 "$b/mstress -r 10 -t 16 -n 20000" "$base" "$nopop" "$purge" "$both" "$mi"
    one 40 "$b/mstress -r 10 -t 8 -n 20000" "$base" "$nopop" "$purge" "$mi"
    one 40 "$b/ws8192 -w 8192 --min 1K --max 32K -t 16 -n 1500000" "$base" "$nopop" "$mi"
    one 30 "$b/ws8192 $small -t 16 -n 8000000" "$base" "$nopop" "$mi"
    one 40 "$b/ws8192 $small -x -t 16 -n 4000000" "$base" "$nopop" "$tc"
    one 40 "$b/ws8192 -w 64 --min 256K --max 2M -t 16 -n 100000" "$base" "$purge" "$mi" ;;
  home)     # the passive-false-sharing rule (blocks under a cache line go home) on many cores
    local nohome=nohome=$dev/libhakmem-nohome.so
    one 40 "$b/falseshare -m scratch -t 16 -i 1000 -o 8 -r 3000" "$base" "$nohome" "$tc" "$mi"
    one 40 "$b/falseshare -m scratch -t 2 -i 1000 -o 8 -r 30000" "$base" "$nohome" "$tc" "$mi"
    one 50 "$b/ws8192 $small -x -t 16 -n 4000000" "$base" "$nohome" "$tc" "$je"
    one 50 "$b/ring --min 16 --max 1024 -t 16 -n 4000000" "$base" "$nohome" "$je" "$tc"
    one 50 "$b/mstress -r 10 -t 16 -n 20000" "$base" "$nohome" "$mi" ;;
  esac
  echo "device-scale: ab done in $(( SECONDS - t0 ))s" | tee -a "$out/ab.txt"
  [ -n "${PACK:-}" ] && cp "$out/ab.txt" "$PACK"
  cat "$out/ab.txt"
}

# Profiles on the many-core machine, where `perf` is not installed: `perfkit`
# copies this machine's perf and the libraries it needs (those the other
# machine has anyway left out) into build/perfkit/ (carry it too); `profile`
# records cpu-clock samples of the rows that lost to a peer at 8-16 threads,
# under hakmem and that peer, and reports the hottest symbols (and tries the
# hardware counters) into OUT/profile.txt.
perfkit() {
  set -e
  rm -rf build/perfkit && mkdir -p build/perfkit/lib
  cp "$(command -v perf)" build/perfkit/perf
  local l
  for l in $(ldd "$(command -v perf)" | awk '{print $3}' | grep /); do
    case $(basename "$l") in libc.so.6|libm.so.6|libstdc++.so.6|libgcc_s.so.1) ;; *) cp -L "$l" build/perfkit/lib/ ;; esac
  done
  du -sh build/perfkit
}

profile() {
  local out=${1:-results/device}
  mkdir -p "$out"
  local perf=(env LD_LIBRARY_PATH=build/perfkit/lib build/perfkit/perf) f=$out/profile.txt
  local b=$dev/bench p=$dev/peers
  prof() {   # prof <name> <lib> <command...>
    local name=$1 lib=$2; shift 2
    echo "===== $name: $*" >>"$f"
    timeout 60 "${perf[@]}" stat -e task-clock,context-switches,cycles,instructions,cache-misses -- \
      env LD_PRELOAD="$lib" "$@" >>"$f" 2>&1
    timeout 60 "${perf[@]}" record -q -e cpu-clock -F 4999 -o /tmp/perf.data -- env LD_PRELOAD="$lib" "$@" >/dev/null 2>>"$f"
    timeout 60 "${perf[@]}" report -i /tmp/perf.data --stdio --no-children --sort dso,sym 2>/dev/null |
      grep -v '^#' | grep -v '^$' | head -45 >>"$f"
    [ -n "${PACK:-}" ] && cp "$f" "$PACK"
  }
  prof hakmem-mstress16 "$dev/libhakmem.so" "$b/mstress" -r 40 -t 16 -n 20000
  prof mimalloc-mstress16 "$p/libmimalloc.so.2" "$b/mstress" -r 40 -t 16 -n 20000
  prof hakmem-cross16 "$dev/libhakmem.so" "$b/ws8192" -w 8192 --min 16 --max 1024 -x -t 16 -n 8000000
  prof tcmalloc-cross16 "$p/libtcmalloc_minimal.so.4" "$b/ws8192" -w 8192 --min 16 --max 1024 -x -t 16 -n 8000000
  prof hakmem-ring16 "$dev/libhakmem.so" "$b/ring" --min 16 --max 1024 -t 16 -n 8000000
  prof jemalloc-ring16 "$p/libjemalloc.so.2" "$b/ring" --min 16 --max 1024 -t 16 -n 8000000
  echo "device-scale: profile done" >>"$f"
  [ -n "${PACK:-}" ] && cp "$f" "$PACK"
  tail -5 "$f"
}

# mstress's round phases (bench/mstress.c: start_ms work_ms free_ms exit_ms)
# under hakmem and mimalloc, interleaved, at 16 and 8 threads.
phases() {
  local out=${1:-results/device} rounds=${ROUNDS:-7} r t lib
  mkdir -p "$out"
  for t in 16 8; do
    for r in $(seq "$rounds"); do
      for lib in "$dev/libhakmem.so" "$dev/peers/libmimalloc.so.2"; do
        printf '%s T=%s ' "$(basename "$lib")" "$t" >>"$out/phases.txt"
        LD_PRELOAD=$lib timeout 30 "$dev/bench/mstress" -r 10 -t "$t" -n 20000 |
          grep -o 'secs=[^ ]*\|start_ms.*' | tr '\n' ' ' >>"$out/phases.txt"
        echo >>"$out/phases.txt"
      done
    done
  done
  [ -n "${PACK:-}" ] && cp "$out/phases.txt" "$PACK"
  cat "$out/phases.txt"
}

# Everything above in one call (each device call starts a machine, ~30 s of
# the lease): the bench-scale run (REPS=5), the paired rounds of `rows` and
# `home`, mstress's phases and, when build/perfkit/ was carried, the
# profiles; all results under OUT, packed after each step into PACK (one
# archive). ~6 minutes there; DEVICE_BUDGET_S (default 540) bounds the whole.
all() {
  local out=${1:-results/device} total=${DEVICE_BUDGET_S:-540} t0=$SECONDS pack=${PACK:-}
  mkdir -p "$out"
  step() {   # step <share of what is left, %> <function> <args...>
    local share=$1; shift
    local left=$(( total - (SECONDS - t0) ))
    if [ "$left" -lt 20 ]; then echo "device-scale: all: $1 skipped (budget spent)"; return; fi
    echo "== device-scale all: $* ($(( left * share / 100 ))s of ${left}s left)"
    DEVICE_BUDGET_S=$(( left * share / 100 )) PACK= "$@" >"$out/$1-${2##*/}.log" 2>&1
    [ -n "$pack" ] && tar czf "$pack" -C "$out" .
  }
  REPS=${REPS:-5} step 60 run "$out/scale"
  step 40 ab "$out/ab-rows" rows
  step 50 ab "$out/ab-home" home
  step 50 phases "$out/phases"
  [ -x build/perfkit/perf ] && step 90 profile "$out/profile"
  echo "device-scale: all done in $(( SECONDS - t0 ))s; results under $out"
}

case "${1:-}" in
  prepare) prepare ;;
  build-variants) build_variants ;;
  all) all "${2:-}" ;;
  phases) phases "${2:-}" ;;
  perfkit) perfkit ;;
  profile) profile "${2:-}" ;;
  run) run "${2:-}" ;;
  ab) ab "${2:-}" "${3:-}" ;;
  *) echo "usage: $0 prepare | build-variants | run [OUT] | all [OUT] | ab [OUT [rows|kernel|home]] | phases [OUT] | perfkit | profile [OUT]" >&2; exit 2 ;;
esac
