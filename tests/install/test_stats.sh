#!/usr/bin/env bash
# test_stats.sh LIB [STATS_LIB] — what hakmem says about itself, read by parsers:
# HAKMEM_STATS=json (stderr and HAKMEM_STATS_FILE) through a JSON parser,
# HAKMEM_STATS=1 and malloc_stats() as a table, malloc_info() through an XML
# parser in glibc's format, and the options' start-up messages; with
# STATS_LIB (make STATS=1), its per-site lines at exit, which
# scripts/bench-scale.py reads.
set -u
cd "$(dirname "$0")/../.."
lib=$(readlink -f "${1:?usage: test_stats.sh path/to/libhakmem.so}")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/hakmem-stats.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
ok()  { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
version=$(sed -n 's/^#define HAKMEM_VERSION  *"\(.*\)"/\1/p' include/hakmem.h)
${CC:-cc} -O1 -pthread tests/install/stats_prog.c -o "$tmp/prog" || { bad "cc stats_prog.c"; exit 1; }
clean_env="env -u HAKMEM_STATS -u HAKMEM_STATS_FILE -u HAKMEM_VERBOSE"

$clean_env HAKMEM_STATS=json LD_PRELOAD=$lib "$tmp/prog" >"$tmp/info.xml" 2>"$tmp/stats.json"
check "HAKMEM_STATS=json is one JSON object with the workload's figures" python3 - "$tmp/stats.json" "$version" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["version"] == sys.argv[2], d["version"]
by_size = {c["block_size"]: c for c in d["classes"]}
assert by_size[48]["blocks_in_use"] >= 1000, by_size[48]
assert by_size[48]["bytes_in_use"] == by_size[48]["blocks_in_use"] * 48
assert by_size[48]["slabs"] >= 1
assert by_size[112]["remote_frees"] >= 1000, by_size[112]   # 100 B requests: the 112 B class
assert d["totals"]["blocks_in_use"] == sum(c["blocks_in_use"] for c in d["classes"])
assert d["totals"]["refills"] >= 1
for k in ("large", "huge", "mapped_bytes", "threads_live", "heaps_parked", "superslabs_rekinded"): assert k in d, k
assert d["dirty_budget"] >= 2 << 20, d["dirty_budget"]      # HAKMEM_PURGE_DIRTY_MB's 2 MiB at least
assert d["purged_early_taken_back"] <= d["purged_early"], d
assert d["purged_early"] <= d["purged_slabs"], d
assert d["purge_calls"] <= d["purged_slabs"], d              # a call purges a run of neighbours
r = d["resident"]                                            # where the slabs' resident pages are
for k in ("bound_bytes", "bound_carved_bytes", "abandoned_bytes", "empty_bytes", "free_bytes"): assert k in r, k
assert r["bound_bytes"] >= 4096, r                           # the 1000 blocks of 48 bytes the program holds
assert r["bound_bytes"] + r["abandoned_bytes"] + r["empty_bytes"] + r["free_bytes"] <= d["mapped_bytes"], (r, d["mapped_bytes"])
PY
check "malloc_info() parses as XML with one <size> per class in glibc's format" python3 - "$tmp/info.xml" "$version" <<'PY'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
assert r.tag == "malloc" and r.get("version") == "hakmem-" + sys.argv[2], r.attrib
sizes = r.findall("heap/sizes/size")
assert len(sizes) >= 50, len(sizes)
prev = 0
for s in sizes:
    assert set(s.attrib) == {"from", "to", "total", "count"}, s.attrib
    f, t, total, count = (int(s.get(k)) for k in ("from", "to", "total", "count"))
    assert f == prev + 1 and t >= f and total == count * t, s.attrib
    prev = t
assert any(int(s.get("count")) > 0 for s in sizes)
totals = {t.get("type"): int(t.get("size")) for t in r.findall("total")}
assert totals["free"] == sum(int(s.get("total")) for s in sizes), (totals["free"], "sizes' sum")
assert totals["in_use"] >= 1000 * 48, totals                 # the blocks the program holds
heap = {t.get("type"): int(t.get("size")) for t in r.findall("heap/total")}
assert heap["slabs_in_use"] <= totals["in_use"], (heap, totals)
PY

$clean_env HAKMEM_STATS=json HAKMEM_STATS_FILE=$tmp/out.json LD_PRELOAD=$lib "$tmp/prog" >/dev/null 2>"$tmp/err"
check "HAKMEM_STATS_FILE gets the JSON, stderr stays quiet" bash -c \
  "python3 -c 'import json,sys; json.load(open(sys.argv[1]))' '$tmp/out.json' && ! grep -q blocks_in_use '$tmp/err'"

$clean_env HAKMEM_STATS=1 LD_PRELOAD=$lib "$tmp/prog" stats >/dev/null 2>"$tmp/table"
check "HAKMEM_STATS=1 and malloc_stats() print the table with a version header" bash -c \
  "[ \$(grep -c '^hakmem $version statistics per size class' '$tmp/table') -eq 2 ] && grep -q '^class block size  blocks in use' '$tmp/table' && grep -q '^total ' '$tmp/table'"
check "the table says where the slabs' resident pages are" bash -c \
  "[ \$(grep -c '^resident in slabs: [0-9]* bytes bound to threads' '$tmp/table') -eq 2 ]"
check "the table's row for 48-byte blocks shows the 1000 held" bash -c \
  "awk '\$2 == 48 && \$3 >= 1000 {found=1} END {exit !found}' '$tmp/table'"

$clean_env HAKMEM_STATS=1 LD_PRELOAD=$lib "$tmp/prog" close-stderr >/dev/null 2>"$tmp/closed"
check "HAKMEM_STATS=1 reports on stderr though the program closed it at exit (GNU sort, xz)" bash -c \
  "grep -q '^hakmem $version statistics per size class' '$tmp/closed' && grep -q '^total ' '$tmp/closed'"
check "without HAKMEM_STATS the library keeps no descriptor of its own" bash -c \
  "[ \"\$($clean_env LD_PRELOAD=$lib ls /proc/self/fd | wc -l)\" = \"\$($clean_env ls /proc/self/fd | wc -l)\" ]"

out=$($clean_env HAKMEM_PURGE_DELAY_MS=abc LD_PRELOAD=$lib true 2>&1)
check "a bad value: one line naming variable, value and default ($out)" test "$out" = \
  "hakmem: HAKMEM_PURGE_DELAY_MS='abc' is not a whole number from 0 to 3600000 (ms); keeping the default 100"
out=$($clean_env HAKMEM_VERBSE=1 LD_PRELOAD=$lib true 2>&1)
check "a misspelt name: one line with the closest name ($out)" test "$out" = \
  "hakmem: unknown option HAKMEM_VERBSE (ignored); did you mean HAKMEM_VERBOSE?"
out=$($clean_env HAKMEM_VERBOSE=1 LD_PRELOAD=$lib true 2>&1)
# (the output goes in as an argument: an option's meaning may hold a quote)
check "HAKMEM_VERBOSE=1 prints the version and every option at start-up" bash -c \
  'grep -q "^hakmem $1: configuration" <<<"$2" && grep -q "HAKMEM_HUGE_CACHE_MB=64 MiB" <<<"$2" &&
   grep -q "HAKMEM_FREE_BATCH=1" <<<"$2"' _ "$version" "$out"
out=$($clean_env HAKMEM_STATS=1 HAKMEM_STATS_FILE=/nonexistent/dir/x LD_PRELOAD=$lib true 2>&1)
check "an unwritable HAKMEM_STATS_FILE is reported and stderr used" bash -c \
  "grep -q 'cannot open HAKMEM_STATS_FILE=/nonexistent/dir/x' <<<'$out' && grep -q '^total ' <<<'$out'"
$clean_env HAKMEM_STATS=1 HAKMEM_STATS_FILE=/nonexistent/dir/x LD_PRELOAD=$lib "$tmp/prog" close-stderr >/dev/null 2>"$tmp/closed2"
check "... also by a program that closed stderr at exit (both were lost)" bash -c \
  "grep -q 'cannot open HAKMEM_STATS_FILE=/nonexistent/dir/x' '$tmp/closed2' && grep -q '^total ' '$tmp/closed2'"

# Where the report may not go (a helper's probe, sixty-fifth session).
$clean_env HAKMEM_STATS=1 LD_PRELOAD=$lib "$tmp/prog" reuse-fd2 "$tmp/data" >/dev/null 2>"$tmp/err2"
check "a data file the program opened as fd 2 gets no report; the start-up stderr does" bash -c \
  "[ \"\$(cat '$tmp/data')\" = DATA ] && grep -q '^total ' '$tmp/err2'"
mkfifo "$tmp/fifo"
$clean_env HAKMEM_STATS=1 HAKMEM_STATS_FILE=$tmp/fifo timeout 20 env LD_PRELOAD=$lib "$tmp/prog" >/dev/null 2>"$tmp/err3"
check "a HAKMEM_STATS_FILE FIFO nobody reads does not hold the exit (rc $?)" bash -c \
  "grep -q 'cannot open HAKMEM_STATS_FILE=' '$tmp/err3' && grep -q '^total ' '$tmp/err3'"
torn=0
for i in $(seq 20); do
  # (through cat, which reads until the last of the 17 has exited: the
  # parent does not wait for its children, and a look at the file while
  # they still wrote read a report half written)
  $clean_env HAKMEM_STATS=json HAKMEM_STATS_FILE=$tmp/race.json LD_PRELOAD=$lib "$tmp/prog" fork 16 2>&1 | cat >/dev/null
  python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$tmp/race.json" 2>/dev/null || torn=$((torn + 1))
done
check "17 processes exiting at once leave HAKMEM_STATS_FILE one whole JSON object ($torn of 20 torn)" test $torn -eq 0
$clean_env HAKMEM_STATS=json HAKMEM_STATS_FILE=$tmp/locked.json timeout 20 env LD_PRELOAD=$lib "$tmp/prog" flock "$tmp/locked.json" >/dev/null 2>&1
rc=$?
check "a stats file the program itself holds a flock on does not hold the exit (rc $rc)" bash -c \
  "[ $rc -eq 0 ] && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' '$tmp/locked.json'"
check "a report to a pipe whose reader is gone keeps the exit status (3, not SIGPIPE's)" python3 - "$lib" "$tmp/prog" <<'PY'
import os, subprocess, sys
r, w = os.pipe()
os.close(r)
env = {k: v for k, v in os.environ.items() if not k.startswith("HAKMEM_")}
env.update(HAKMEM_STATS="1", LD_PRELOAD=sys.argv[1])
p = subprocess.run([sys.argv[2], "exit3"], stderr=w, stdout=subprocess.DEVNULL, env=env)
assert p.returncode == 3, p.returncode
PY
hung=0
for i in 1 2 3 4 5; do
  $clean_env HAKMEM_STATS=1 timeout 20 env LD_PRELOAD=$lib "$tmp/prog" signal-exit >/dev/null 2>&1
  [ $? -eq 124 ] && hung=$((hung + 1))
done
check "exit() from a signal handler that interrupted malloc does not hang the report ($hung of 5 hung)" test $hung -eq 0

# A set-user-ID program reads no HAKMEM_* variable (AT_SECURE): its report
# truncated a root-only file named by its unprivileged caller. Needs root,
# setpriv and a file system that honours the set-user-ID bit.
archive=$(dirname "$lib")/libhakmem.a
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null && [ -f "$archive" ]; then
  suid=$(mktemp -d /tmp/hakmem-suid.XXXXXX)
  chmod 755 "$suid"
  if ${CC:-cc} -O1 -pthread tests/install/stats_prog.c "$archive" -o "$suid/prog" 2>/dev/null; then
    chmod 4755 "$suid/prog"
    printf 'root only\n' >"$suid/secret"
    chmod 600 "$suid/secret"
    setpriv --reuid=65534 --regid=65534 --clear-groups env HAKMEM_STATS=1 HAKMEM_STATS_FILE="$suid/secret" \
      "$suid/prog" exit3 >/dev/null 2>"$tmp/suid.err"
    rc=$?
    if [ $rc -eq 3 ] && [ "$(stat -c %u "$suid/prog")" = 0 ]; then
      check "a set-user-ID program ignores HAKMEM_STATS_FILE and prints no report" bash -c \
        "[ \"\$(cat '$suid/secret')\" = 'root only' ] && ! grep -q 'statistics per size class' '$tmp/suid.err'"
    else
      echo "skip: the set-user-ID case (the program ran with rc $rc)"
    fi
  else
    echo "skip: the set-user-ID case (no static link)"
  fi
  rm -rf "$suid"
else
  echo "skip: the set-user-ID case (needs root, setpriv and $archive)"
fi

if [ -n "${2:-}" ]; then
  stats_lib=$(readlink -f "$2")
  $clean_env LD_PRELOAD=$stats_lib "$tmp/prog" >/dev/null 2>"$tmp/sites"
  check "the statistics build prints its per-site lines at exit without HAKMEM_STATS" bash -c \
    "grep -q '^hakmem-sites: ops=[1-9][0-9]* threads=' '$tmp/sites' && grep -q '^hakmem-site: pool_lock kind=lock count=' '$tmp/sites'"
fi

[ $fail -eq 0 ] && echo "PASS stats" || echo "FAILED stats"
exit $fail
