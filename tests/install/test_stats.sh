#!/usr/bin/env bash
# test_stats.sh LIB — what hakmem says about itself, read by parsers:
# HAKMEM_STATS=json (stderr and HAKMEM_STATS_FILE) through a JSON parser,
# HAKMEM_STATS=1 and malloc_stats() as a table, malloc_info() through an XML
# parser in glibc's format, and the options' start-up messages.
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

[ $fail -eq 0 ] && echo "PASS stats" || echo "FAILED stats"
exit $fail
