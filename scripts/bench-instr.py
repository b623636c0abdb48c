#!/usr/bin/env python3
"""Instructions per malloc+free of the WS8192 row, counted with callgrind.

For each allocator (hakmem, glibc, each installed peer) the ws8192 program runs
under `valgrind --tool=callgrind` at two operation counts, N1 and N2, with the
same seed and working set. The difference of the two instruction totals
divided by N2 - N1 is the cost of one operation in steady state: start-up,
loader, the fill of the working set and the final clean-up are the same in
both runs and cancel. The same is done for `ws8192 --null` (the identical
loop without malloc/free: a slot takes a fixed piece of a preallocated pool),
which gives the benchmark's own cost per operation (PRNG, slot array, the two
byte writes); subtracting it leaves the allocator's instructions:

  per op   = (I(N2) - I(N1)) / (N2 - N1)                    [all, incl. the loop]
  alloc/op = per op - null per op                           [malloc or free alone]
  pair     = (Ialloc(N2) - Ialloc(N1)) / ((dmallocs + dfrees) / 2)
                                                             [one malloc + one free]

    scripts/bench-instr.py --lib build/libhakmem.so --bin build/bench/ws8192
                           [--n1 200000] [--n2 1200000] [--ws 8192] [--min 16] [--max 1024]
                           [--allocs hakmem,glibc] [--out results]

Writes results/bench-instr.csv and results/bench-instr.md, prints a markdown
table. Exit status 1 if hakmem's run fails. Python 3 standard library only.
"""

import argparse
import concurrent.futures
import csv
import os
import re
import shutil
import subprocess
import sys

LIBDIRS = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
           "/usr/local/lib"]
PEERS = [("jemalloc", "libjemalloc.so.2"), ("tcmalloc", "libtcmalloc_minimal.so.4"),
         ("mimalloc", "libmimalloc.so.2")]
EXPECT = {"hakmem": "libhakmem", "glibc": "glibc", "null": "glibc", "jemalloc": "libjemalloc",
          "tcmalloc": "libtcmalloc", "mimalloc": "libmimalloc"}


def find_peer(soname):
    for d in LIBDIRS:
        p = os.path.join(d, soname)
        if os.path.exists(p):
            return p
    return None


def callgrind(binpath, args, name, lib):
    """Returns (instructions, RESULT fields) of one run, or raises RuntimeError."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if lib:
        env["LD_PRELOAD"] = os.path.abspath(lib)
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", binpath] + args
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    m = re.search(r"Collected\s*:\s*(\d+)", p.stderr)
    res = None
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            res = dict(kv.partition("=")[::2] for kv in line.split()[1:])
    if p.returncode != 0 or m is None or res is None:
        tail = " / ".join(p.stderr.strip().splitlines()[-3:])[:300]
        raise RuntimeError("%s: exit %d: %s" % (" ".join(cmd[3:]), p.returncode, tail))
    if not res.get("alloc", "").startswith(EXPECT[name]):
        raise RuntimeError("%s ran with %s" % (name, res.get("alloc")))
    return int(m.group(1)), res


def measure(binpath, base_args, name, lib, n1, n2):
    extra = ["--null"] if name == "null" else []
    i1, r1 = callgrind(binpath, base_args + extra + ["-n", str(n1)], name, lib)
    i2, r2 = callgrind(binpath, base_args + extra + ["-n", str(n2)], name, lib)
    return dict(i1=i1, i2=i2, dm=int(r2["mallocs"]) - int(r1["mallocs"]),
                df=int(r2["frees"]) - int(r1["frees"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default="build/libhakmem.so")
    ap.add_argument("--bin", default="build/bench/ws8192")
    ap.add_argument("--n1", type=int, default=200_000)
    ap.add_argument("--n2", type=int, default=1_200_000)
    ap.add_argument("--ws", default="8192")
    ap.add_argument("--min", default="16")
    ap.add_argument("--max", default="1024")
    ap.add_argument("--allocs", default="", help="comma-separated (default: all found)")
    ap.add_argument("--out", default="results")
    opt = ap.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("bench-instr: valgrind is not installed (apt-get install valgrind)")
    if opt.n2 <= opt.n1:
        sys.exit("bench-instr: --n2 must be larger than --n1")
    want = opt.allocs.split(",") if opt.allocs else None

    allocs = []
    if want is None or "hakmem" in want:
        if not os.path.exists(opt.lib):
            print("bench-instr: ERROR: hakmem library %s does not exist (did `make` fail?)" % opt.lib)
            return 1
        allocs.append(("hakmem", opt.lib))
    allocs.append(("glibc", None))
    for name, soname in PEERS:
        path = find_peer(soname)
        if path:
            allocs.append((name, path))
        else:
            print("bench-instr: peer %s (%s) not installed: left out" % (name, soname))
    if want:
        allocs = [a for a in allocs if a[0] in want]

    base_args = ["-w", opt.ws, "--min", opt.min, "--max", opt.max, "-s", "42"]
    print("bench-instr: callgrind, ws8192 %s, N = %d and %d, allocators: %s"
          % (" ".join(base_args), opt.n1, opt.n2, " ".join(a for a, _ in allocs)), flush=True)
    jobs = [("null", None)] + allocs
    results, errors = {}, {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as ex:
        futs = {ex.submit(measure, opt.bin, base_args, n, lib, opt.n1, opt.n2): n for n, lib in jobs}
        for f in concurrent.futures.as_completed(futs):
            n = futs[f]
            try:
                results[n] = f.result()
            except (RuntimeError, subprocess.SubprocessError) as e:
                errors[n] = str(e)
                print("bench-instr: FAIL %s: %s" % (n, e), flush=True)
    if "null" not in results:
        print("bench-instr: ERROR: the --null baseline failed")
        return 1

    dn = opt.n2 - opt.n1
    null = results["null"]
    null_per_op = (null["i2"] - null["i1"]) / dn
    rows = []
    for name, _ in allocs:
        r = results.get(name)
        if r is None:
            rows.append(dict(alloc=name, ok=False))
            continue
        d = r["i2"] - r["i1"]
        per_op = d / dn
        alloc_total = d - (null["i2"] - null["i1"])
        pairs = (r["dm"] + r["df"]) / 2
        rows.append(dict(alloc=name, ok=True, per_op=per_op, alloc_per_op=per_op - null_per_op,
                         pair=alloc_total / pairs if pairs else float("nan"), dm=r["dm"],
                         df=r["df"], i1=r["i1"], i2=r["i2"]))
    peers = [r for r in rows if r["ok"] and r["alloc"] != "hakmem"]
    best = min(peers, key=lambda r: r["pair"]) if peers else None

    lines = ["Instructions per operation, WS8192 row (ws8192 %s; callgrind, N %d -> %d; "
             "the benchmark loop alone: %.1f instructions/op)\n"
             % (" ".join(base_args), opt.n1, opt.n2, null_per_op),
             "| allocator | instr/op (with loop) | allocator instr/op | malloc+free pair | vs best peer |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        if not r["ok"]:
            lines.append("| %s | FAIL | | | |" % r["alloc"])
            continue
        vs = "%.2f" % (r["pair"] / best["pair"]) if best and best["pair"] > 0 else "-"
        if best is r:
            vs += " (best)"
        lines.append("| %s | %.1f | %.1f | %.1f | %s |" % (r["alloc"], r["per_op"],
                                                            r["alloc_per_op"], r["pair"], vs))
    table = "\n".join(lines)
    os.makedirs(opt.out, exist_ok=True)
    csv_path = os.path.join(opt.out, "bench-instr.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["alloc", "status", "instr_per_op", "alloc_instr_per_op", "instr_per_pair",
                    "null_instr_per_op", "n1", "n2", "instr_n1", "instr_n2", "d_mallocs", "d_frees"])
        for r in rows:
            if r["ok"]:
                w.writerow([r["alloc"], "ok", "%.2f" % r["per_op"], "%.2f" % r["alloc_per_op"],
                            "%.2f" % r["pair"], "%.2f" % null_per_op, opt.n1, opt.n2, r["i1"],
                            r["i2"], r["dm"], r["df"]])
            else:
                w.writerow([r["alloc"], "FAIL", "", "", "", "%.2f" % null_per_op, opt.n1, opt.n2,
                            "", "", "", ""])
    with open(os.path.join(opt.out, "bench-instr.md"), "w") as f:
        f.write("# bench-instr\n\n" + table + "\n")
    print()
    print(table)
    print()
    print("wrote %s, %s" % (csv_path, os.path.join(opt.out, "bench-instr.md")))
    return 1 if "hakmem" in errors else 0


if __name__ == "__main__":
    sys.exit(main())
