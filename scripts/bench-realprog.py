#!/usr/bin/env python3
"""Real programs under each allocator: wall time and peak RSS, interleaved.

The bench/ rows are shapes; this is what a user of LD_PRELOAD sees. Each
program below that is installed runs REPS times under hakmem, glibc and every
installed peer (found as `make bench` finds them), every allocator once per
round in an order that alternates from round to round; the medians of the
wall time and of the peak RSS (the kernel's accounting of the child and the
children it waited for, wait4) are printed, with the best peer's time over
hakmem's (above 1: hakmem is faster) and hakmem's peak RSS over the leanest
peer's (below 1: hakmem is leaner). A run that exits non-zero is reported and
its figures left out.

    scripts/bench-realprog.py --lib build/libhakmem.so --bindir build/bench
                              [--reps 3] [--progs sort,node] [--allocs hakmem,glibc]
                              [--peers-dir build/peers] [--out results] [--smoke]

The inputs (a file of 600 000 random lines, a 150 000-record JSON file, an SQL
script) are generated into a temporary folder with a fixed seed (~2 s). The programs:
sort, sqlite3, python3 (pymalloc, and PYTHONMALLOC=malloc), perl, gcc and clang
compiling src/large/page_heap.c, node, git log -p of this checkout, jq and
gawk; tests/realprog's workloads for python3, perl and node. --smoke: sort
only, hakmem and glibc, one round (a test that the script runs).

Writes OUT/bench-realprog.csv (every run) and OUT/bench-realprog.md. Python 3
standard library only.
"""
import argparse
import csv
import datetime
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402  (scripts/bench.py: the peers and the check that hakmem loads)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REALPROG = os.path.join(ROOT, "tests", "realprog")
SOURCE = os.path.join(ROOT, "src", "large", "page_heap.c")


def programs(tmp):
    """[(id, shell command, the executables it needs)]."""
    inc = "-I%s -I%s" % (os.path.join(ROOT, "src"), os.path.join(ROOT, "include"))
    progs = [
        ("sort", "sort %s/lines.txt" % tmp, ["sort"]),
        ("sqlite3", "sqlite3 :memory: < %s/inserts.sql" % tmp, ["sqlite3"]),
        ("python3", "python3 %s/workload.py" % REALPROG, ["python3"]),
        ("python3-malloc", "PYTHONMALLOC=malloc python3 %s/workload.py" % REALPROG, ["python3"]),
        ("perl", "perl %s/workload.pl" % REALPROG, ["perl"]),
        ("gcc", "gcc -O2 %s -c %s -o /dev/null" % (inc, SOURCE), ["gcc"]),
        ("clang", "clang -O2 %s -c %s -o /dev/null" % (inc, SOURCE), ["clang"]),
        ("node", "node %s/workload.js" % REALPROG, ["node"]),
        ("jq", "jq '[.[] | select(.id %% 3 == 0) | {id, s: (.name + \"x\")}] | length' %s/records.json" % tmp,
         ["jq"]),
        ("gawk", "gawk '{a[$1]++; b[substr($1,1,3)]+=length($1)} END{n=0; for(k in a) n++; print n}' "
         "%s/lines.txt" % tmp, ["gawk"]),
    ]
    if os.path.isdir(os.path.join(ROOT, ".git")):
        progs.append(("git", "git -C %s log -p -n 300" % ROOT, ["git"]))
    return progs


def make_inputs(tmp, part=1):
    """The inputs, 1/part of their full size (--smoke: a twentieth)."""
    rnd = random.Random(1)
    letters = "abcdefghijklmnopqrstuvwxyz"
    with open(os.path.join(tmp, "lines.txt"), "w") as f:
        for _ in range(600_000 // part):
            f.write("".join(rnd.choices(letters, k=rnd.randint(5, 60))) + "\n")
    with open(os.path.join(tmp, "inserts.sql"), "w") as f:
        f.write("create table t(id integer primary key, name text, v real);\n"
                "with recursive c(i) as (select 1 union all select i+1 from c where i<300000) "
                "insert into t(name,v) select 'n'||(i*7919%300000), i*0.5 from c;\n"
                "create index t_name on t(name);\n"
                "select count(*), sum(v) from t where name like 'n1%';\n")
    with open(os.path.join(tmp, "records.json"), "w") as f:
        f.write("[")
        for i in range(150_000 // part):
            tags = ",".join('"t%d"' % (i % 13) for _ in range(i % 5))
            f.write('%s{"id":%d,"name":"n%d","tags":[%s],"v":%.6f,"nested":{"a":%d,"b":[1,2,3]}}'
                    % ("," if i else "", i, i, tags, rnd.random(), i))
        f.write("]\n")


def run(cmd, lib):
    """(seconds, peak RSS in KiB) of one run, or None if it failed."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if lib:
        env["LD_PRELOAD"] = os.path.abspath(lib)
    t0 = time.perf_counter()
    p = subprocess.Popen(["/bin/sh", "-c", cmd], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t0
    if status != 0:
        return None
    return secs, ru.ru_maxrss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True)
    ap.add_argument("--bindir", required=True, help="build/bench (its ws8192 checks that hakmem loads)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--progs", default="")
    ap.add_argument("--allocs", default="")
    ap.add_argument("--peers-dir", default=None)
    ap.add_argument("--out", default="results")
    ap.add_argument("--smoke", action="store_true")
    opt = ap.parse_args()
    if opt.smoke:
        opt.progs, opt.allocs, opt.reps = "sort", "hakmem,glibc", 1
    allocs = B.select_allocs(opt.lib, opt.bindir, opt.allocs or None, peers_dir=opt.peers_dir)
    if allocs is None:
        return 1
    if not opt.allocs:   # the hardened library's cost is `make bench`'s column, not this table's
        allocs = [a for a in allocs if a[0] != "hakmem-hardened"]
    names = [a for a, _ in allocs]
    tmp = tempfile.mkdtemp(prefix="hakmem-realprog-")
    try:
        make_inputs(tmp, 20 if opt.smoke else 1)
        want = opt.progs.split(",") if opt.progs else None
        progs = []
        for pid, cmd, needs in programs(tmp):
            if want and pid not in want:
                continue
            missing = [n for n in needs if shutil.which(n) is None]
            if missing:
                print("bench-realprog: %s not installed: %s left out" % (" ".join(missing), pid), file=sys.stderr)
                continue
            progs.append((pid, cmd))
        rows, runs = [], []
        for pid, cmd in progs:
            res = {n: [] for n in names}
            for r in range(opt.reps):
                order = allocs if r % 2 == 0 else allocs[::-1]
                for name, lib in order:
                    got = run(cmd, lib)
                    if got is None:
                        print("bench-realprog: %s failed under %s" % (pid, name), file=sys.stderr)
                        runs.append((pid, name, r, "", ""))
                        continue
                    res[name].append(got)
                    runs.append((pid, name, r, "%.4f" % got[0], got[1]))
            med = {n: (statistics.median(s for s, _ in v), statistics.median(k for _, k in v))
                   for n, v in res.items() if v}
            rows.append((pid, cmd, med))
            print("bench-realprog: %-15s %s" % (pid, "  ".join("%s %.3fs %.0fMB" % (n, m[0], m[1] / 1024)
                                                              for n, m in med.items())), file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    peers = [n for n in names if n != "hakmem"]
    head = "hakmem %s, real programs, %s, %d CPUs, Linux %s, %s; %d rounds" % (
        B.git_rev(os.path.dirname(os.path.abspath(opt.lib)) or "."), B.cpu_name(), os.cpu_count() or 0,
        platform.release(), datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), opt.reps)
    lines = [head, "", "Wall time in seconds (median; lower is better)", "",
             "| program | " + " | ".join(names) + " | best peer | best peer time / hakmem |",
             "|---|" + "---:|" * len(names) + "---|---:|"]
    for pid, _, med in rows:
        cells = ["%.3f" % med[n][0] if n in med else "-" for n in names]
        have = [n for n in peers if n in med]
        best = min(have, key=lambda n: med[n][0]) if have else None
        ratio = "%.2f" % (med[best][0] / med["hakmem"][0]) if best and "hakmem" in med else "-"
        lines.append("| %s | %s | %s | %s |" % (pid, " | ".join(cells), best or "-", ratio))
    lines += ["", "Peak RSS in MiB (median; lower is better)", "",
              "| program | " + " | ".join(names) + " | leanest peer | hakmem / leanest |",
              "|---|" + "---:|" * len(names) + "---|---:|"]
    for pid, _, med in rows:
        cells = ["%.1f" % (med[n][1] / 1024) if n in med else "-" for n in names]
        have = [n for n in peers if n in med]
        lean = min(have, key=lambda n: med[n][1]) if have else None
        ratio = "%.2f" % (med["hakmem"][1] / med[lean][1]) if lean and "hakmem" in med else "-"
        lines.append("| %s | %s | %s | %s |" % (pid, " | ".join(cells), lean or "-", ratio))
    lines += ["", "Programs:"] + ["- `%s`: `%s`" % (pid, cmd.replace(tmp, "$TMP")) for pid, cmd, _ in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(opt.out, exist_ok=True)
    with open(os.path.join(opt.out, "bench-realprog.md"), "w") as f:
        f.write(text)
    with open(os.path.join(opt.out, "bench-realprog.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["program", "allocator", "round", "seconds", "peak_rss_kb"])
        w.writerows(runs)
    print("wrote %s, %s" % (os.path.join(opt.out, "bench-realprog.md"), os.path.join(opt.out, "bench-realprog.csv")))
    return 0 if rows and all("hakmem" in med for _, _, med in rows if "hakmem" in names) else 1


if __name__ == "__main__":
    sys.exit(main())
