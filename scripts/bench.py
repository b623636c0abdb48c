#!/usr/bin/env python3
"""Side-by-side benchmark of hakmem, glibc and the peer allocators.

Runs every row of ROWS against each allocator (swapped in with LD_PRELOAD),
interleaved and repeated, the order rotating from rep to rep (A B C D E,
B C D E A, ...), and reports medians: a markdown table on stdout and in
results/<tag>.md, CSV files
(results/<tag>.csv: medians and ratios; results/<tag>-runs.csv: every run)
and a chart (results/<tag>.png, gnuplot) when gnuplot is installed.

    scripts/bench.py --lib build/libhakmem.so --bindir build/bench [--reps 3]
                     [--scale 1] [--tag bench] [--rows ws-small,larson]
                     [--allocs hakmem,glibc] [--smoke] [--peers-dir build/peers]

"hakmem / best" is paired, as scripts/ab.py's rounds are: the best peer is
the one with the highest median, and the figure is the median over the reps
of hakmem's rate over that peer's in the same rep (a slow spell of the
machine then moves both); so are the hardened build's and mimalloc secure's
time ratios. A row whose program runs one thread (SINGLE_THREAD
below) runs pinned to one CPU, every allocator alike: on this shared 2-CPU VM
a single-thread row moved by 10-25% from run to run unpinned (ws-big-read
0.81 in one `make bench`, 1.06x in paired pinned rounds).

hakmem is not optional: a missing library, or one that does not load
(LD_PRELOAD ignored, crash), ends the run with exit status 1 before any row
runs. A peer that is not installed is named and left out. A run that fails
later is shown as FAIL and makes the exit status 1 (for hakmem) after the
tables are written. Python 3 standard library only.

Yardsticks: when --peers-dir (build/peers) holds libmimalloc-secure.so and
libmimalloc-src.so (scripts/build-mimalloc-secure.sh: mimalloc's secure mode
and its default, one source, one set of flags), both run as columns too and
the tables gain "mimalloc secure time / its default" beside the hardened
build's "hardened time / hakmem". They are not peers: "best" and "leanest"
stay the installed libraries'.
"""

import argparse
import csv
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

# One row = one program and its arguments. `n` is the size option scaled by
# --scale (bench-full uses a larger scale); `smoke` replaces it in --smoke.
ROWS = [
    dict(id="ws-tiny", label="WS8192 tiny 16-128 B", prog="ws8192",
         args=["-w", "8192", "--min", "16", "--max", "128"], nopt="-n", n=20_000_000, smoke=20_000),
    dict(id="ws-small", label="WS8192 small 16-1024 B (headline)", prog="ws8192",
         args=["-w", "8192", "--min", "16", "--max", "1024"], nopt="-n", n=20_000_000, smoke=20_000),
    dict(id="cxx-small", label="C++ new/sized delete, WS8192 16-1024 B", prog="ws8192",
         args=["-w", "8192", "--min", "16", "--max", "1024", "--cxx"], nopt="-n", n=20_000_000, smoke=20_000),
    dict(id="ws-big-read", label="WS262144 tiny 16-128 B, each block read before its free", prog="ws8192",
         args=["-w", "262144", "--min", "16", "--max", "128", "--read"], nopt="-n", n=10_000_000, smoke=20_000),
    dict(id="ws-medium", label="WS8192 medium 1-32 KiB", prog="ws8192",
         args=["-w", "8192", "--min", "1K", "--max", "32K"], nopt="-n", n=4_000_000, smoke=10_000),
    dict(id="ws-large", label="WS256 large 32 KiB-1 MiB", prog="ws8192",
         args=["-w", "256", "--min", "32K", "--max", "1M"], nopt="-n", n=200_000, smoke=1_000),
    dict(id="large-mt-2", label="WS64 large 256 KiB-2 MiB, 2 threads local", prog="ws8192",
         args=["-w", "64", "--min", "256K", "--max", "2M", "-t", "2"], nopt="-n", n=200_000, smoke=1_000),
    dict(id="mt-local-2", label="WS8192 small, 2 threads local", prog="ws8192",
         args=["-w", "8192", "--min", "16", "--max", "1024", "-t", "2"], nopt="-n", n=10_000_000,
         smoke=10_000),
    dict(id="mt-local-4", label="WS8192 small, 4 threads local", prog="ws8192",
         args=["-w", "8192", "--min", "16", "--max", "1024", "-t", "4"], nopt="-n", n=5_000_000,
         smoke=10_000),
    dict(id="cross-2", label="WS8192 small, 2 threads cross-thread free", prog="ws8192",
         args=["-w", "8192", "--min", "16", "--max", "1024", "-t", "2", "-x"], nopt="-n",
         n=10_000_000, smoke=10_000),
    dict(id="ring-2", label="ring, 2 threads, every free cross-thread 16-1024 B", prog="ring",
         args=["-t", "2", "--min", "16", "--max", "1024"], nopt="-n", n=5_000_000, smoke=10_000),
    dict(id="ring-medium-8", label="ring, 8 threads, every free cross-thread 1-16 KiB", prog="ring",
         args=["-t", "8", "--min", "1K", "--max", "16K"], nopt="-n", n=500_000, smoke=2_000),
    dict(id="larson", label="larson server, 2 threads 8-1000 B", prog="larson",
         args=["-t", "2", "-c", "1000", "--min", "8", "--max", "1000"], nopt="-n", n=4_000_000,
         smoke=10_000),
    # The original larson's shape: the main thread allocates the workers' first
    # blocks and waits; each worker hands its blocks to a new thread every
    # 100 k iterations (their slabs abandoned, the main thread's left to it).
    dict(id="larson-respawn", label="larson, 4 threads handing on to new ones, main's first blocks",
         prog="larson", args=["-t", "4", "-c", "1250", "--min", "8", "--max", "1000", "--respawn", "100000",
                              "--main-fills"], nopt="-n", n=10_000_000, smoke=10_000),
    dict(id="prodcons", label="producer/consumer 16-512 B", prog="prodcons",
         args=["--min", "16", "--max", "512"], nopt="-n", n=2_000_000, smoke=10_000),
    dict(id="prodcons-4", label="4 producers, 4 consumers, 1-32 KiB", prog="prodcons",
         args=["-t", "4", "--min", "1K", "--max", "32K"], nopt="-n", n=400_000, smoke=2_000),
    dict(id="prodcons-pool", label="1 producer, 16 consumers that only free, 4-32 KiB", prog="prodcons",
         args=["-t", "1", "-c", "16", "--min", "4K", "--max", "32K", "-q", "2"], nopt="-n", n=400_000, smoke=2_000),
    dict(id="prodcons-large", label="2 producers, 2 consumers, 300 KiB-1 MiB, pages written", prog="prodcons",
         args=["-t", "2", "--min", "300K", "--max", "1M", "--touch", "pages"], nopt="-n", n=10_000, smoke=100),
    dict(id="fs-scratch", label="false sharing, cache-scratch, 2 threads", prog="falseshare",
         args=["-m", "scratch", "-t", "2", "-i", "1000", "-o", "8"], nopt="-r", n=30_000, smoke=10),
    dict(id="fs-thrash", label="false sharing, cache-thrash, 2 threads", prog="falseshare",
         args=["-m", "thrash", "-t", "2", "-i", "1000", "-o", "8"], nopt="-r", n=30_000, smoke=10),
    dict(id="reallocgrow", label="realloc growth, 1000 buffers to 64 KiB", prog="reallocgrow",
         args=["-b", "1000", "--max", "64K"], nopt="-n", n=1_000_000, smoke=5_000),
    dict(id="drift", label="buffer sizes drifting up 500 B-111 KB, 150 live, written", prog="drift",
         args=["-k", "150"], nopt="-n", n=30_000, smoke=300),
    dict(id="drift-2", label="the same, freed by a second thread", prog="drift",
         args=["-k", "150", "-t", "2"], nopt="-n", n=30_000, smoke=300),
    dict(id="rounds", label="rounds of 32 MB of 20 KB blocks, written, all freed", prog="rounds",
         args=["--mb", "32", "--size", "20K"], nopt="-n", n=6, smoke=1),
    dict(id="rounds-mixed", label="rounds of 32 MB of 256 B blocks, then of 20 KB", prog="rounds",
         args=["--mb", "32", "--size", "256", "--then", "20K"], nopt="-n", n=6, smoke=1),
    dict(id="rounds-shuffled", label="rounds of 32 MB of 32 B blocks, written, freed in a shuffled order",
         prog="rounds", args=["--mb", "32", "--size", "32", "--shuffle"], nopt="-n", n=6, smoke=1),
    dict(id="bursts", label="bursts of 60 blocks, 4 sizes of 16-64 KiB in turn", prog="bursts",
         args=["-k", "4", "-b", "60", "--step", "16K"], nopt="-n", n=2_000, smoke=20),
    dict(id="sh6", label="sh6bench shape: runs of one size 1-999 B into a ring, bulk frees", prog="shbench",
         args=["--sh", "6"], nopt="-n", n=1_500, smoke=2),
    dict(id="sh8-2", label="sh8bench shape, 2 threads: a size histogram, main's 8 B blocks freed by them",
         prog="shbench", args=["--sh", "8", "-t", "2"], nopt="-n", n=25_000, smoke=24),
    dict(id="large", label="large blocks 64 KiB-8 MiB, pages touched", prog="large",
         args=["-w", "32", "--min", "64K", "--max", "8M"], nopt="-n", n=2_000, smoke=50),
    dict(id="large-few", label="a few blocks of 1-32 MiB, pages touched", prog="large",
         args=["-w", "4", "--min", "1M", "--max", "32M"], nopt="-n", n=1_000, smoke=20),
    dict(id="churn", label="thread churn, 4 at a time, 200 blocks each", prog="churn",
         args=["-c", "4", "-k", "200"], nopt="-n", n=2_000, smoke=20),
    dict(id="threads-16", label="thread starts, 16 at a time, default stacks, 16 blocks each", prog="churn",
         args=["-c", "16", "-k", "16", "--default-stack"], nopt="-n", n=4_000, smoke=32),
    dict(id="crowd", label="256 threads live at once, 16 blocks of 12 sizes 16 B-5 KB each", prog="crowd",
         args=["-t", "256", "-k", "16"], nopt="-n", n=4, smoke=1),
    dict(id="spawn", label="child processes, one at a time: fork, 2 blocks, exit", prog="spawn",
         args=[], nopt="-n", n=1_000, smoke=20),
    dict(id="spawn-exec", label="child processes, one at a time: fork, exec /bin/true", prog="spawn",
         args=["--exec"], nopt="-n", n=500, smoke=10),
    dict(id="mstress", label="mstress: 8 threads a round trading blocks", prog="mstress",
         args=["-t", "8", "-n", "10000"], nopt="-r", n=20, smoke=1),
]

LIBDIRS = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
           "/usr/local/lib"]
PEERS = [("jemalloc", "libjemalloc.so.2"), ("tcmalloc", "libtcmalloc_minimal.so.4"),
         ("mimalloc", "libmimalloc.so.2")]
# What the program's `alloc=` field must start with for each allocator.
EXPECT = {"hakmem": "libhakmem", "hakmem-hardened": "libhakmem", "glibc": "glibc", "jemalloc": "libjemalloc",
          "tcmalloc": "libtcmalloc", "mimalloc": "libmimalloc",
          "mimalloc-src": "libmimalloc-src", "mimalloc-secure": "libmimalloc-secure"}
# Columns that are not peers (never "best" or "leanest"): hakmem's own builds
# and the yardstick pair for the hardened build's cost.
YARDSTICKS = [("mimalloc-src", "libmimalloc-src.so"), ("mimalloc-secure", "libmimalloc-secure.so")]
NOT_PEERS = ("hakmem", "hakmem-hardened") + tuple(a for a, _ in YARDSTICKS)


def log(msg):
    print(msg, flush=True)


def find_peer(soname):
    for d in LIBDIRS:
        p = os.path.join(d, soname)
        if os.path.exists(p):
            return p
    return None


def parse_result(stdout):
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            out = {}
            for kv in line.split()[1:]:
                k, _, v = kv.partition("=")
                out[k] = v
            return out
    return None


def run_once(binpath, args, alloc, lib, timeout, cpu=None):
    """Runs one program (on CPU `cpu` alone if not None); returns (result dict
    or None, error string)."""
    res, err, _ = run_capture(binpath, args, alloc, lib, timeout, cpu=cpu)
    return res, err


def run_capture(binpath, args, alloc, lib, timeout, extra_env=None, cpu=None):
    """run_once that also returns the program's stderr (bench-scale reads the
    statistics build's report there): (result dict or None, error, stderr)."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if extra_env:
        env.update(extra_env)
    if lib:
        env["LD_PRELOAD"] = os.path.abspath(lib)
    cmd = [binpath] + args
    try:
        pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=pin)
    except subprocess.TimeoutExpired:
        return None, "timeout after %ds" % timeout, ""
    if p.returncode != 0:
        sig = " (signal %d)" % -p.returncode if p.returncode < 0 else ""
        tail = (p.stderr.strip().splitlines() or [""])[-1][:160]
        return None, "exit %d%s %s" % (p.returncode, sig, tail), p.stderr
    res = parse_result(p.stdout)
    if res is None:
        return None, "no RESULT line", p.stderr
    if "cannot be preloaded" in p.stderr:
        return None, "LD_PRELOAD ignored: " + p.stderr.strip().splitlines()[0][:160], p.stderr
    if not res.get("alloc", "").startswith(EXPECT[alloc]):
        return None, "ran with %s, not %s" % (res.get("alloc"), alloc), p.stderr
    return res, "", p.stderr


# Programs that run one thread unless given -t (their rows without it, or
# with -t 1, run pinned: see the module's doc).
SINGLE_THREAD = {"ws8192", "rounds", "drift", "reallocgrow", "bursts", "large", "shbench"}


def single_thread(row):
    args = row["args"]
    t = args[args.index("-t") + 1] if "-t" in args else "1"
    return row["prog"] in SINGLE_THREAD and t == "1"


def pin_cpu():
    """The CPU single-thread rows run on: the last this process may use (not
    CPU 0, which takes more of the machine's interrupts), None on one CPU."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return cpus[-1] if len(cpus) > 1 else None


def row_args(row, scale, smoke):
    n = row["smoke"] if smoke else max(1, int(row["n"] * scale))
    return row["args"] + [row["nopt"], str(n)]


def fmt_rate(v, unit):
    """Scales a rate to k/M/G; returns (number string, 'M ops/s')."""
    for div, pre in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")):
        if v >= div:
            return div, "%s%s/s" % (pre, unit)
    return 1, unit + "/s"


def median(xs):
    return statistics.median(xs) if xs else None


def git_rev(root):
    try:
        return subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def paired_ratio(runs, row_id, a, b):
    """The median over the reps where both ran of a's rate over b's."""
    rate = {}
    for r in runs:
        if r["row"] == row_id and r["status"] == "ok" and r["alloc"] in (a, b):
            rate[(r["alloc"], r["rep"])] = r["ops_per_sec"]
    ratios = [rate[(a, rep)] / rate[(b, rep)] for (x, rep) in rate if x == a and rate.get((b, rep))]
    return median(ratios)


def summarize(rows, allocs, runs):
    """Medians per (row, alloc), the ratio of hakmem to the best peer, and the
    hardened build's cost: its time and peak RSS over the default build's."""
    summary = []
    for row in rows:
        med = {}
        for a, _ in allocs:
            ok = [r for r in runs if r["row"] == row["id"] and r["alloc"] == a and r["status"] == "ok"]
            rates = [r["ops_per_sec"] for r in ok]
            rss = [r["peak_rss_kb"] for r in ok]
            nruns = len([r for r in runs if r["row"] == row["id"] and r["alloc"] == a])
            med[a] = dict(rate=median(rates), rss=median(rss), lo=min(rates) if rates else None,
                          hi=max(rates) if rates else None, ok=len(ok), runs=nruns,
                          unit=ok[0]["unit"] if ok else "")
        peers = [a for a, _ in allocs if a not in NOT_PEERS and med[a]["rate"] is not None]
        best = max(peers, key=lambda a: med[a]["rate"]) if peers else None
        leanest = min(peers, key=lambda a: med[a]["rss"]) if peers else None
        h = med.get("hakmem", {})
        ratio = paired_ratio(runs, row["id"], "hakmem", best) if (h.get("rate") and best) else None
        rss_ratio = (h["rss"] / med[leanest]["rss"]) if (h.get("rss") and leanest
                                                         and med[leanest]["rss"]) else None
        hd = med.get("hakmem-hardened", {})
        hard_time = (paired_ratio(runs, row["id"], "hakmem", "hakmem-hardened")
                     if (h.get("rate") and hd.get("rate")) else None)
        hard_rss = (hd["rss"] / h["rss"]) if (h.get("rss") and hd.get("rss")) else None
        ms, mc = med.get("mimalloc-src", {}), med.get("mimalloc-secure", {})
        sec_time = (paired_ratio(runs, row["id"], "mimalloc-src", "mimalloc-secure")
                    if (ms.get("rate") and mc.get("rate")) else None)
        sec_rss = (mc["rss"] / ms["rss"]) if (ms.get("rss") and mc.get("rss")) else None
        unit = next((m["unit"] for m in med.values() if m["unit"]), "ops")
        summary.append(dict(row=row, med=med, best=best, ratio=ratio, leanest=leanest,
                            rss_ratio=rss_ratio, unit=unit, hard_time=hard_time, hard_rss=hard_rss,
                            sec_time=sec_time, sec_rss=sec_rss))
    return summary


def tables(summary, allocs):
    names = [a for a, _ in allocs]
    has_h = "hakmem" in names
    # ratio columns after the per-allocator ones: (header, summary key, shown?)
    time_cols = [("hakmem / best", "ratio", has_h),
                 ("hardened time / hakmem", "hard_time", has_h and "hakmem-hardened" in names),
                 ("mimalloc secure time / its default", "sec_time",
                  "mimalloc-src" in names and "mimalloc-secure" in names)]
    rss_cols = [("hakmem / leanest", "rss_ratio", has_h),
                ("hardened RSS / hakmem", "hard_rss", time_cols[1][2]),
                ("mimalloc secure RSS / its default", "sec_rss", time_cols[2][2])]
    time_cols = [(h, k) for h, k, on in time_cols if on]
    rss_cols = [(h, k) for h, k, on in rss_cols if on]

    def ratio_cells(s, cols):
        return ["%.2f" % s[k] if s[k] is not None else "-" for _, k in cols]

    out = []
    out.append("Throughput (median; higher is better)\n")
    hdr = ["row", "unit"] + names + ["best peer"] + [h for h, _ in time_cols]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "|".join(["---"] * 2 + ["---:"] * len(names) + ["---"] + ["---:"] * len(time_cols)) + "|")
    for s in summary:
        rates = [m["rate"] for m in s["med"].values() if m["rate"]]
        div, unit = fmt_rate(max(rates) if rates else 0, s["unit"])
        cells = [s["row"]["id"], unit]
        for a in names:
            m = s["med"][a]
            cells.append("%.3g" % (m["rate"] / div) if m["rate"] is not None else "FAIL")
        cells.append(s["best"] or "-")
        cells += ratio_cells(s, time_cols)
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("Peak RSS in MiB (median; lower is better)\n")
    hdr = ["row"] + names + ["leanest peer"] + [h for h, _ in rss_cols]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * len(names) + ["---"] + ["---:"] * len(rss_cols)) + "|")
    for s in summary:
        cells = [s["row"]["id"]]
        for a in names:
            m = s["med"][a]
            cells.append("%.1f" % (m["rss"] / 1024) if m["rss"] is not None else "FAIL")
        cells.append(s["leanest"] or "-")
        cells += ratio_cells(s, rss_cols)
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_chart(summary, allocs, outdir, tag):
    gp = shutil.which("gnuplot")
    if gp is None:
        log("gnuplot not found (apt-get install gnuplot-nox): no chart written")
        return None
    names = [a for a, _ in allocs]
    base = "glibc" if "glibc" in names else names[0]
    dat = os.path.join(outdir, tag + "-chart.dat")
    with open(dat, "w") as f:
        f.write("# row " + " ".join("%s_rate %s_rss" % (a, a) for a in names) + "\n")
        for s in summary:
            b = s["med"][base]
            cells = [s["row"]["id"]]
            for a in names:
                m = s["med"][a]
                r = (m["rate"] / b["rate"]) if (m["rate"] and b["rate"]) else float("nan")
                q = (m["rss"] / b["rss"]) if (m["rss"] and b["rss"]) else float("nan")
                cells += ["%.4f" % r, "%.4f" % q]
            f.write(" ".join(cells) + "\n")
    png = os.path.join(outdir, tag + ".png")
    plots_rate = ", ".join("'%s' using %d:xtic(1) title '%s'" % (dat, 2 + 2 * i, a)
                           for i, a in enumerate(names))
    plots_rss = ", ".join("'%s' using %d:xtic(1) title '%s'" % (dat, 3 + 2 * i, a)
                          for i, a in enumerate(names))
    script = f"""
set terminal pngcairo size 1400,1000 font ',10' noenhanced
set output '{png}'
set datafile missing 'nan'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y 2
set grid ytics
set xtics rotate by -30
set key outside right top
set tmargin 3
set multiplot layout 2,1 title 'hakmem benchmark ({tag}): medians relative to {base} = 1'
set title 'throughput relative to {base} (higher is better)'
plot {plots_rate}
set title 'peak RSS relative to {base} (lower is better)'
plot {plots_rss}
unset multiplot
"""
    p = subprocess.run([gp], input=script, capture_output=True, text=True)
    if p.returncode != 0:
        log("gnuplot failed: " + p.stderr.strip()[:300])
        return None
    return png


def select_rows(all_rows, rows_csv, bindir, who):
    """The rows named in rows_csv (all of them when empty); exits when a name is
    unknown or a row's program is not built."""
    rows = all_rows
    if rows_csv:
        want = rows_csv.split(",")
        known = [r["id"] for r in all_rows]
        bad = [w for w in want if w not in known]
        if bad:
            sys.exit("unknown rows: %s (known: %s)" % (",".join(bad), ",".join(known)))
        rows = [r for r in all_rows if r["id"] in want]
    for r in rows:
        b = os.path.join(bindir, r["prog"])
        if not os.access(b, os.X_OK):
            sys.exit("%s: program %s is missing (make bench-bins)" % (who, b))
    return rows


def select_allocs(lib, bindir, allocs_csv, smoke=False, peers_dir=None, yardsticks=False):
    """The allocators to run, [(name, library path or None)], hakmem first.
    hakmem must exist and load (a short ws8192 run must report alloc=libhakmem)
    unless allocs_csv leaves it out; returns None (after saying why) if not.
    Peers that are not installed are named and left out. peers_dir: a
    folder searched after the system's for the peers' libraries (copies
    carried to a machine that lacks the packages, scripts/device-scale.sh)
    and, with `yardsticks`, for the YARDSTICKS pair, which joins when both
    are there."""
    want_allocs = allocs_csv.split(",") if allocs_csv else None
    if (want_allocs is None or "hakmem" in want_allocs) and not os.path.exists(lib):
        log("bench: ERROR: hakmem library %s does not exist (did `make` fail?)" % lib)
        return None
    allocs = [("hakmem", lib)]
    if not smoke:
        # The hardened build beside it (make builds both): its cost is a column.
        hardened = os.path.join(os.path.dirname(lib), "libhakmem-hardened.so")
        if os.path.exists(hardened):
            allocs.append(("hakmem-hardened", hardened))
        allocs.append(("glibc", None))
        for name, soname in PEERS:
            path = find_peer(soname)
            if path is None and peers_dir and os.path.exists(os.path.join(peers_dir, soname)):
                path = os.path.join(peers_dir, soname)
            if path:
                allocs.append((name, path))
            else:
                log("bench: peer %s (%s) not installed: left out (scripts/install-peers.sh)"
                    % (name, soname))
        if peers_dir and yardsticks:
            paths = [(name, os.path.join(peers_dir, so)) for name, so in YARDSTICKS]
            if all(os.path.exists(p) for _, p in paths):
                allocs += paths
    if want_allocs:
        allocs = [a for a in allocs if a[0] in want_allocs]
        if "hakmem" not in want_allocs:
            log("bench: hakmem left out on request (--allocs)")
    if any(a == "hakmem" for a, _ in allocs):
        res, err = run_once(os.path.join(bindir, "ws8192"), ["-n", "10000"], "hakmem", lib, 60)
        if res is None:
            log("bench: ERROR: hakmem (%s) does not run the benchmark: %s" % (lib, err))
            return None
    return allocs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default="build/libhakmem.so", help="hakmem's drop-in library")
    ap.add_argument("--bindir", default="build/bench", help="where the bench programs are")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply each row's size")
    ap.add_argument("--tag", default="bench", help="name of the result files")
    ap.add_argument("--out", default="results")
    ap.add_argument("--rows", default="", help="comma-separated row ids (default: all)")
    ap.add_argument("--allocs", default="", help="comma-separated allocators (default: all found)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per run")
    ap.add_argument("--peers-dir", default="build/peers",
                    help="where scripts/build-mimalloc-secure.sh put the yardstick pair (and where "
                         "peers missing from the system are looked for)")
    ap.add_argument("--smoke", action="store_true",
                    help="every program once, tiny sizes, hakmem only; exit 1 on any failure")
    opt = ap.parse_args()

    rows = select_rows(ROWS, opt.rows, opt.bindir, "bench")

    allocs = select_allocs(opt.lib, opt.bindir, opt.allocs, opt.smoke, opt.peers_dir, yardsticks=True)
    if allocs is None:
        return 1

    if opt.smoke:
        fails = 0
        t0 = time.time()
        for r in rows:
            args = row_args(r, 1, True)
            res, err = run_once(os.path.join(opt.bindir, r["prog"]), args, "hakmem", opt.lib, 60)
            if res is None:
                fails += 1
                log("bench-smoke: FAIL %-12s %s %s: %s" % (r["id"], r["prog"], " ".join(args), err))
            else:
                log("bench-smoke: ok   %-12s %s %s" % (r["id"], r["prog"], " ".join(args)))
        log("bench-smoke: %d rows, %d failed, %.1f s" % (len(rows), fails, time.time() - t0))
        return 1 if fails else 0

    os.makedirs(opt.out, exist_ok=True)
    log("bench: %d rows x %d allocators (%s) x %d reps, scale %g"
        % (len(rows), len(allocs), " ".join(a for a, _ in allocs), opt.reps, opt.scale))
    runs = []
    t_start = time.time()
    cpu = pin_cpu()
    for row in rows:
        args = row_args(row, opt.scale, False)
        binpath = os.path.join(opt.bindir, row["prog"])
        row_cpu = cpu if single_thread(row) else None
        for rep in range(1, opt.reps + 1):
            k = (rep - 1) % len(allocs)
            for a, lib in allocs[k:] + allocs[:k]:
                res, err = run_once(binpath, args, a, lib, opt.timeout, cpu=row_cpu)
                rec = dict(row=row["id"], alloc=a, rep=rep, status="ok" if res else "FAIL",
                           error=err, ops_per_sec=0.0, peak_rss_kb=0, secs=0.0, unit="",
                           command=" ".join([row["prog"]] + args))
                if res:
                    rec.update(ops_per_sec=float(res["ops_per_sec"]),
                               peak_rss_kb=int(res["peak_rss_kb"]), secs=float(res["secs"]),
                               unit=res["unit"])
                else:
                    log("bench: FAIL %s %s rep %d: %s" % (row["id"], a, rep, err))
                runs.append(rec)
            order = [a for a, _ in allocs]
            this = sorted(runs[-len(allocs):], key=lambda r: order.index(r["alloc"]))
            ok = [r for r in this if r["status"] == "ok"]
            div, u = fmt_rate(max(r["ops_per_sec"] for r in ok), ok[0]["unit"]) if ok else (1, "")
            line = ["%s %.3g" % (r["alloc"], r["ops_per_sec"] / div) if r["status"] == "ok"
                    else "%s FAIL" % r["alloc"] for r in this]
            log("%-12s rep %d/%d [%s]: %s" % (row["id"], rep, opt.reps, u, ", ".join(line)))
    elapsed = time.time() - t_start

    summary = summarize(rows, allocs, runs)
    table = tables(summary, allocs)
    meta = ("hakmem %s, %s, %d CPUs, Linux %s, %s; %d reps, scale %g, %.0f s; %s"
            % (git_rev(os.path.dirname(os.path.abspath(opt.lib)) or "."), cpu_name(),
               os.cpu_count() or 0, platform.release(),
               datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), opt.reps, opt.scale, elapsed,
               "single-thread rows pinned to CPU %d" % cpu if cpu is not None else "nothing pinned"))

    runs_csv = os.path.join(opt.out, opt.tag + "-runs.csv")
    with open(runs_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "alloc", "rep", "status", "ops_per_sec", "unit", "peak_rss_kb", "secs",
                    "command", "error"])
        for r in runs:
            w.writerow([r["row"], r["alloc"], r["rep"], r["status"], "%.0f" % r["ops_per_sec"],
                        r["unit"], r["peak_rss_kb"], "%.6f" % r["secs"], r["command"], r["error"]])
    sum_csv = os.path.join(opt.out, opt.tag + ".csv")
    with open(sum_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "label", "unit", "alloc", "runs_ok", "runs", "median_ops_per_sec",
                    "min_ops_per_sec", "max_ops_per_sec", "median_peak_rss_kb",
                    "hakmem_over_best_peer", "best_peer", "hakmem_rss_over_leanest_peer",
                    "leanest_peer"])
        for s in summary:
            for a, _ in allocs:
                m = s["med"][a]
                w.writerow([s["row"]["id"], s["row"]["label"], s["unit"], a, m["ok"], m["runs"],
                            "%.0f" % m["rate"] if m["rate"] is not None else "",
                            "%.0f" % m["lo"] if m["lo"] is not None else "",
                            "%.0f" % m["hi"] if m["hi"] is not None else "",
                            "%.0f" % m["rss"] if m["rss"] is not None else "",
                            "%.4f" % s["ratio"] if s["ratio"] is not None else "",
                            s["best"] or "",
                            "%.4f" % s["rss_ratio"] if s["rss_ratio"] is not None else "",
                            s["leanest"] or ""])
    md = os.path.join(opt.out, opt.tag + ".md")
    rows_doc = "\n".join("- `%s`: %s — `%s`" % (r["id"], r["label"], " ".join([r["prog"]] + row_args(r, opt.scale, False)))
                         for r in rows)
    with open(md, "w") as f:
        f.write("# %s\n\n%s\n\n%s\n\nRows:\n%s\n" % (opt.tag, meta, table, rows_doc))
    png = write_chart(summary, allocs, opt.out, opt.tag)

    log("")
    log(meta)
    log("")
    log(table)
    log("")
    log("wrote %s, %s, %s%s" % (sum_csv, runs_csv, md, (", " + png) if png else ""))
    hfail = [r for r in runs if r["alloc"] == "hakmem" and r["status"] != "ok"]
    if hfail:
        log("bench: ERROR: %d hakmem runs failed (see %s)" % (len(hfail), runs_csv))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
