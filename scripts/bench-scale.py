#!/usr/bin/env python3
"""Throughput against thread count: hakmem, glibc and the peer allocators.

For each row of ROWS and each thread count T, runs the program with -t T under
every allocator (LD_PRELOAD), interleaved (A B C D E, A B C D E, ...) REPS
times, and reports medians. Then, for hakmem only, runs each (row, T) twice
under the statistics build (build/stats/libhakmem.so, `make STATS=1`), at the
row's -n and at 3 times it, each printing at exit, on stderr:

    hakmem-sites: ops=<N> threads=<T>
    hakmem-site: <site-name> kind=<lock|lock-arena|rmw-global|rmw-slab> count=<N> per1k=<float>

and reports the steady state next to the throughput: the difference of the two
runs' counts per 1000 extra operations (steady_sites), so thread start-up and
exit, the same in both runs, cancel (the issue's "no more than one per 1000
operations in steady state"); a row whose threads come and go as its work
(whole_sites: mstress) reports the longer run whole. If the statistics library prints no such lines,
that is said and the run goes on.

    scripts/bench-scale.py --lib build/libhakmem.so --stats-lib build/stats/libhakmem.so
                           --bindir build/bench [--threads "1 2 4 8 16"] [--reps 3]
                           [--scale 1] [--rows ws-small,ring] [--allocs hakmem,mimalloc]
    scripts/bench-scale.py --self-test      # the site-line parser's doctests
    scripts/bench-scale.py --merge DIR... --ncpu 16 [--machine TEXT] --out OUT
                           # no runs: one report from several runs' CSVs (the parts of
                           # scripts/device-scale.sh, or two runs' reps pooled)

Work per run: the row's `n` is the per-thread -n at T <= nproc; above nproc it is
scaled by nproc/T, so the total work is n * min(T, nproc): each run takes about
the same wall time at every T on any machine (if the allocator scaled). mstress
keeps its -n (each thread's heap: how many blocks its final frees give back) and
scales its rounds instead, to 2 at least: with -n cut to 2 500 at 16 threads on 2
CPUs it showed none of the 16-core gap that `-n 20000` shows on 2 CPUs too.

Outputs (--out, default results/): bench-scale.csv (medians, ratio to the best
peer), bench-scale-runs.csv (every run), bench-scale-sites.csv (per-site
counters), bench-scale.md (tables) and bench-scale.png (gnuplot, one panel per
row). Reuses scripts/bench.py (run_capture, select_allocs, ...).
Python 3 standard library only.
"""

import argparse
import csv
import datetime
import os
import platform
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402  (scripts/bench.py)

TAG = "bench-scale"

# `n` = -n per thread at T <= nproc (see the module doc); `min_t` = fewest threads
# the row can run with; `smoke` = the tiny -n used by --smoke.
ROWS = [
    dict(id="ws-small", label="ws8192 small 16-1024 B, local", prog="ws8192",
         args=["-w", "8192", "--min", "16", "--max", "1024"], n=8_000_000, min_t=1),
    dict(id="ws-medium", label="ws8192 medium 1-32 KiB, local", prog="ws8192",
         args=["-w", "8192", "--min", "1K", "--max", "32K"], n=1_500_000, min_t=1),
    dict(id="ws-large", label="ws8192 large 256 KiB-2 MiB, local", prog="ws8192",
         args=["-w", "64", "--min", "256K", "--max", "2M"], n=100_000, min_t=1),
    dict(id="larson", label="larson 8-1000 B (-n = iterations: 2 calls each)", prog="larson",
         args=["-c", "1000", "--min", "8", "--max", "1000"], n=3_000_000, min_t=1),
    dict(id="cross", label="ws8192 small 16-1024 B, -x cross-thread ring", prog="ws8192",
         args=["-w", "8192", "--min", "16", "--max", "1024", "-x"], n=4_000_000, min_t=2),
    dict(id="ring", label="ring 16-1024 B, every free cross-thread", prog="ring",
         args=["--min", "16", "--max", "1024"], n=4_000_000, min_t=2),
    # whole_sites: its threads start and exit as the work itself, so its
    # per-site counters are the whole longer run's, not the two runs'
    # difference (threads whose heaps park at -n and not at 3x -n made the
    # difference rise while both runs' counts fell: CURRENT_TASK Known gaps 41).
    # rounds: its -n stays (the shape of each thread's work); the rounds scale.
    dict(id="mstress", label="mstress: T threads a round trading blocks (-n = allocations per thread and round)",
         prog="mstress", args=[], n=20_000, rounds=10, min_t=1, whole_sites=True),
]

KINDS = ("lock", "lock-arena", "rmw-global", "rmw-slab")


def default_threads(ncpu):
    """Powers of two up to max(16, 2 * ncpu).

    >>> default_threads(2)
    [1, 2, 4, 8, 16]
    >>> default_threads(16)
    [1, 2, 4, 8, 16, 32]
    >>> default_threads(12)
    [1, 2, 4, 8, 16]
    """
    top = max(16, 2 * ncpu)
    out, t = [], 1
    while t <= top:
        out.append(t)
        t *= 2
    return out


def parse_threads(s):
    """'1 2 4' or '1,2,4' -> [1, 2, 4] (sorted, unique, each >= 1).

    >>> parse_threads("4, 1 2 2")
    [1, 2, 4]
    """
    vals = sorted({int(x) for x in s.replace(",", " ").split()})
    if not vals or vals[0] < 1:
        raise ValueError("thread counts must be >= 1: %r" % s)
    return vals


def per_thread_n(row, t, ncpu, scale=1.0):
    """-n per thread: the row's n while T <= ncpu, n * ncpu / T above.

    >>> r = dict(n=8_000_000)
    >>> [per_thread_n(r, t, 2) for t in (1, 2, 4, 16)]
    [8000000, 8000000, 4000000, 1000000]
    """
    return max(1000, int(row["n"] * scale * min(t, ncpu) / t))


def row_work(row, t, ncpu, scale=1.0):
    """(-n per thread, rounds or None) at T threads: a row with `rounds` keeps
    its n and scales its rounds (2 at least), the others scale n.

    >>> row_work(dict(n=8_000_000), 16, 2), row_work(dict(n=20_000, rounds=10), 16, 2)
    ((1000000, None), (20000, 2))
    >>> row_work(dict(n=20_000, rounds=10), 8, 16)
    (20000, 10)
    """
    if "rounds" in row:
        return max(1000, int(row["n"] * scale)), max(2, int(round(row["rounds"] * min(t, ncpu) / t)))
    return per_thread_n(row, t, ncpu, scale), None


def row_args(row, t, ncpu, scale=1.0, k=1):
    """The row's arguments at T threads; k > 1: k times the work (the
    statistics build's longer run: k times -n, or the rounds).

    >>> row_args(dict(args=["-w", "64"], n=8_000_000), 16, 2, k=3)
    ['-w', '64', '-t', '16', '-n', '3000000']
    >>> row_args(dict(args=[], n=20_000, rounds=10), 16, 2, k=3)
    ['-r', '6', '-t', '16', '-n', '20000']
    """
    n, rounds = row_work(row, t, ncpu, scale)
    if rounds is not None:
        return row["args"] + ["-r", str(k * rounds), "-t", str(t), "-n", str(n)]
    return row["args"] + ["-t", str(t), "-n", str(k * n)]


def steady_sites(short, long):
    """The steady state of two runs' per-site reports: (header, sites) of the
    difference, per 1000 extra operations (a negative difference, run-to-run
    noise, counts as 0). None unless both runs reported and long did more.

    >>> a = ({"ops": 1000, "threads": 2}, [dict(site="x", kind="lock", count=50, per1k=50.0)])
    >>> b = ({"ops": 3000, "threads": 2}, [dict(site="x", kind="lock", count=52, per1k=17.3),
    ...                                     dict(site="y", kind="rmw-slab", count=40, per1k=13.3)])
    >>> h, s = steady_sites(a, b)
    >>> h["ops"], [(x["site"], x["count"], x["per1k"]) for x in s]
    (2000, [('x', 2, 1.0), ('y', 40, 20.0)])
    >>> steady_sites((None, []), b) is None
    True
    """
    (h1, s1), (h3, s3) = short, long
    if h1 is None or h3 is None or h3["ops"] <= h1["ops"]:
        return None
    extra = h3["ops"] - h1["ops"]
    before = {s["site"]: s["count"] for s in s1}
    out = []
    for s in s3:
        d = max(0, s["count"] - before.get(s["site"], 0))
        out.append(dict(site=s["site"], kind=s["kind"], count=d, per1k=1000.0 * d / extra))
    return dict(ops=extra, threads=h3["threads"]), out


def parse_sites(text):
    """Parses the statistics build's report from a program's stderr.

    Returns (header, sites): header = {"ops": int, "threads": int} or None when
    there is no `hakmem-sites:` line; sites = [{"site", "kind", "count", "per1k"}]
    in the order printed. Other lines (the program's own) are ignored. per1k is
    recomputed from count and ops when missing. If the report appears more than
    once (a fork), the last one counts.

    >>> sample = '''ws8192: 200 ops in 0.1 s
    ... hakmem-sites: ops=20000 threads=2
    ... hakmem-site: g_alloc_lock kind=lock count=12 per1k=0.600
    ... hakmem-site: g_partial[cls] kind=rmw-global count=400 per1k=20.000
    ... hakmem-site: slab_remote_push kind=rmw-slab count=7
    ... some other stderr line
    ... '''
    >>> h, s = parse_sites(sample)
    >>> h
    {'ops': 20000, 'threads': 2}
    >>> [(x["site"], x["kind"], x["count"], x["per1k"]) for x in s]
    [('g_alloc_lock', 'lock', 12, 0.6), ('g_partial[cls]', 'rmw-global', 400, 20.0), ('slab_remote_push', 'rmw-slab', 7, 0.35)]
    >>> parse_sites("no report here\\n")
    (None, [])
    >>> parse_sites("hakmem-sites: ops=0 threads=1\\nhakmem-site: x kind=lock count=0 per1k=0.0\\n")[1][0]["per1k"]
    0.0
    >>> h, s = parse_sites("hakmem-sites: ops=10 threads=1\\nhakmem-site: a kind=lock count=1 per1k=100\\n"
    ...                    "hakmem-sites: ops=50 threads=3\\nhakmem-site: b kind=rmw-slab count=5 per1k=100\\n")
    >>> h["threads"], [x["site"] for x in s]
    (3, ['b'])
    """
    header, sites = None, []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("hakmem-sites:"):
            kv = dict(f.partition("=")[::2] for f in line.split()[1:])
            try:
                header = {"ops": int(kv["ops"]), "threads": int(kv["threads"])}
            except (KeyError, ValueError):
                continue
            sites = []                     # a later report replaces an earlier one
        elif line.startswith("hakmem-site:") and header is not None:
            parts = line.split()
            if len(parts) < 3:
                continue
            kv = dict(f.partition("=")[::2] for f in parts[2:])
            try:
                count = int(kv["count"])
            except (KeyError, ValueError):
                continue
            if "per1k" in kv:
                try:
                    per1k = float(kv["per1k"])
                except ValueError:
                    per1k = None
            else:
                per1k = None
            if per1k is None:
                per1k = count * 1000.0 / header["ops"] if header["ops"] else 0.0
            sites.append(dict(site=parts[1], kind=kv.get("kind", "?"), count=count, per1k=per1k))
    return header, sites


def summarize(rows, threads, allocs, runs):
    """{(row id, T): {"med": {alloc: {...}}, "best": peer, "ratio": hakmem/best}}."""
    out = {}
    for row in rows:
        for t in threads:
            if t < row["min_t"]:
                continue
            med = {}
            for a, _ in allocs:
                mine = [r for r in runs if r["row"] == row["id"] and r["threads"] == t and r["alloc"] == a]
                ok = [r for r in mine if r["status"] == "ok"]
                rates = [r["ops_per_sec"] for r in ok]
                med[a] = dict(rate=B.median(rates), lo=min(rates) if rates else None,
                              hi=max(rates) if rates else None, ok=len(ok), runs=len(mine),
                              rss=B.median([r["peak_rss_kb"] for r in ok]),
                              flt=B.median([r["minflt"] * 1000.0 / r["ops"] for r in ok
                                            if r.get("minflt") is not None and r["ops"]]),
                              vcsw=B.median([r["nvcsw"] * 1000.0 / r["ops"] for r in ok
                                             if r.get("nvcsw") is not None and r["ops"]]),
                              unit=ok[0]["unit"] if ok else "")
            # hakmem's builds are not peers (the hardened one would never be best,
            # but it is not a peer to beat either)
            peers = [a for a, _ in allocs if a not in B.NOT_PEERS and med[a]["rate"]]
            best = max(peers, key=lambda a: med[a]["rate"]) if peers else None
            h = med.get("hakmem", {})
            ratio = h["rate"] / med[best]["rate"] if (h.get("rate") and best) else None
            unit = next((m["unit"] for m in med.values() if m["unit"]), "ops")
            out[(row["id"], t)] = dict(med=med, best=best, ratio=ratio, unit=unit)
    return out


def row_tables(row, threads, allocs, summ, sites):
    """Markdown for one row: throughput (threads x allocators) and hakmem's sites."""
    names = [a for a, _ in allocs]
    ts = [t for t in threads if t >= row["min_t"] and (row["id"], t) in summ]
    lines = []
    if not ts:
        return ""
    unit = summ[(row["id"], ts[0])]["unit"]
    lines.append("Throughput, M %s/s (median; higher is better)\n" % unit)
    hdr = ["threads"] + names + ["best peer"] + (["hakmem / best"] if "hakmem" in names else [])
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "|".join(["---:"] + ["---:"] * len(names) + ["---"] +
                                (["---:"] if "hakmem" in names else [])) + "|")
    for t in ts:
        s = summ[(row["id"], t)]
        cells = [str(t)]
        for a in names:
            m = s["med"][a]
            cells.append("%.3g" % (m["rate"] / 1e6) if m["rate"] is not None else "FAIL")
        cells.append(s["best"] or "-")
        if "hakmem" in names:
            cells.append("**%.2f**" % s["ratio"] if s["ratio"] is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(kernel_table(ts, names, summ, row))
    lines.append(sites_table(row, ts, sites))
    return "\n".join(lines)


def kernel_table(ts, names, summ, row):
    """Page faults / voluntary context switches per 1000 operations, threads x
    allocators (getrusage of the whole process, start-up included)."""
    if all(summ[(row["id"], t)]["med"][a].get("flt") is None for t in ts for a in names):
        return ""
    out = ["In the kernel, per 1000 operations (median): page faults / voluntary context switches "
           "(sleeps on a lock, a futex, the address space). Two cores hide what these cost on "
           "many: each fault and each purge takes the address space's locks, a purge or unmap "
           "of memory other threads touched interrupts their CPUs.\n"]
    out.append("| threads | " + " | ".join(names) + " |")
    out.append("|---:|" + "|".join(["---:"] * len(names)) + "|")
    for t in ts:
        cells = [str(t)]
        for a in names:
            m = summ[(row["id"], t)]["med"][a]
            cells.append("%.3g / %.3g" % (m["flt"], m["vcsw"]) if m.get("flt") is not None else "-")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def sites_table(row, ts, sites):
    """hakmem's per-site counters per 1000 operations, sites x threads."""
    got = {t: sites.get((row["id"], t)) for t in ts}
    if all(g is None for g in got.values()):
        return "hakmem per-site counters: not measured (no statistics library).\n"
    if all(g is not None and g["header"] is None for g in got.values()):
        fails = [t for t in ts if got[t]["error"]]
        return ("hakmem per-site counters: **no report** (the statistics library printed no "
                "`hakmem-sites:` line%s).\n" % ("; runs failed at T=" + ",".join(map(str, fails))
                                               if fails else ""))
    names, kinds = [], {}
    for t in ts:
        g = got[t]
        for s in (g["sites"] if g else []):
            if s["site"] not in kinds:
                names.append(s["site"])
                kinds[s["site"]] = s["kind"]
    how = ("the whole run at 3 x the work: its threads start and exit as the work itself" if row.get("whole_sites")
           else "steady state: the runs at -n and 3 x -n subtracted")
    out = ["hakmem per-site counters (statistics build, %s): operations on shared lines per 1000 "
           "operations\n" % how]
    out.append("| site | kind | " + " | ".join("T=%d" % t for t in ts) + " |")
    out.append("|---|---|" + "|".join(["---:"] * len(ts)) + "|")
    for name in names:
        cells = [name, kinds[name]]
        for t in ts:
            g = got[t]
            hit = [s for s in g["sites"] if s["site"] == name] if g else []
            cells.append("%.3g" % hit[0]["per1k"] if hit else ("-" if g else "n/a"))
        out.append("| " + " | ".join(cells) + " |")
    totals = ["**all sites**", ""]
    for t in ts:
        g = got[t]
        totals.append("%.3g" % sum(s["per1k"] for s in g["sites"]) if g and g["header"] else "n/a")
    out.append("| " + " | ".join(totals) + " |")
    ops = ["extra ops counted", ""]
    for t in ts:
        g = got[t]
        ops.append(str(g["header"]["ops"]) if g and g["header"] else
                   ("no report" if g and g.get("error") is None else "FAIL" if g else "n/a"))
    out.append("| " + " | ".join(ops) + " |")
    if any(g is not None and g["header"] is None for g in got.values()):
        out.append("\n`no report`: the statistics library printed no `hakmem-sites:` line.")
    return "\n".join(out) + "\n"


def overview(rows, threads, summ):
    """One line per row: hakmem / best peer at each thread count."""
    out = ["hakmem / best peer (median throughput; > 1: hakmem is faster than every peer)\n"]
    out.append("| row | " + " | ".join("T=%d" % t for t in threads) + " |")
    out.append("|---|" + "|".join(["---:"] * len(threads)) + "|")
    for row in rows:
        cells = [row["id"]]
        for t in threads:
            s = summ.get((row["id"], t))
            cells.append("%.2f" % s["ratio"] if s and s["ratio"] is not None else "—")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_chart(rows, threads, allocs, summ, outdir, ncpu):
    gp = shutil.which("gnuplot")
    if gp is None:
        B.log("gnuplot not found (apt-get install gnuplot-nox): no chart written")
        return None
    names = [a for a, _ in allocs]
    dat = os.path.join(outdir, TAG + "-chart.dat")
    panels = []
    with open(dat, "w") as f:
        idx = 0
        for row in rows:
            ts = [t for t in threads if (row["id"], t) in summ]
            if not ts:
                continue
            f.write("# %s: threads %s (M ops/s)\n" % (row["id"], " ".join(names)))
            for t in ts:
                med = summ[(row["id"], t)]["med"]
                f.write("%d %s\n" % (t, " ".join("%.4f" % (med[a]["rate"] / 1e6) if med[a]["rate"]
                                                  else "nan" for a in names)))
            f.write("\n\n")
            panels.append((idx, row, summ[(row["id"], ts[0])]["unit"]))
            idx += 1
    if not panels:
        return None
    png = os.path.join(outdir, TAG + ".png")
    cols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + cols - 1) // cols
    xt = ", ".join('"%d" %d' % (t, t) for t in threads)
    cpu_mark = ""
    if max(threads) > ncpu:   # beyond this line the machine is oversubscribed
        cpu_mark = ("set arrow from %d, graph 0 to %d, graph 1 nohead dt 2 lc rgb 'gray40'\n"
                    "set label '%d CPUs' at %d, graph 0.04 offset 0.5,0 font ',8' tc rgb 'gray40'\n"
                    % (ncpu, ncpu, ncpu, ncpu))
    script = [f"""
set terminal pngcairo size {700 * cols},{420 * nrows + 60} font ',10' noenhanced
set output '{png}'
set datafile missing 'nan'
set logscale x 2
set xrange [{min(threads) / 1.3}:{max(threads) * 1.3}]
set xtics ({xt})
set yrange [0:*]
set grid
set key top left font ',9'
set xlabel 'threads'
{cpu_mark}set multiplot layout {nrows},{cols} title 'hakmem bench-scale: median throughput vs threads ({ncpu} CPUs)'
"""]
    for idx, row, unit in panels:
        plots = []
        for i, a in enumerate(names):
            lw = 3 if a == "hakmem" else 1.5
            plots.append("'%s' index %d using 1:%d with linespoints lw %g pt 7 ps 0.7 title '%s'"
                         % (dat, idx, 2 + i, lw, a))
        script.append("set title '%s'\nset ylabel 'M %s/s'\nplot %s\n"
                      % (row["label"].replace("'", ""), unit, ", ".join(plots)))
    script.append("unset multiplot\n")
    p = subprocess.run([gp], input="".join(script), capture_output=True, text=True)
    if p.returncode != 0:
        B.log("gnuplot failed: " + p.stderr.strip()[:300])
        return None
    return png


def self_test():
    import doctest
    res = doctest.testmod(sys.modules[__name__], verbose=False)
    print("bench-scale self-test: %d examples, %d failed" % (res.attempted, res.failed))
    return 1 if res.failed else 0


def merge(opt):
    """--merge: one report from the outputs of several runs (scripts/device-scale.sh
    runs each thread count apart, so that what finished survives a timeout)."""
    runs, sites, threads, names, row_ids = [], {}, set(), [], set()
    for d in opt.merge:
        with open(os.path.join(d, TAG + "-runs.csv"), newline="") as f:
            for r in csv.DictReader(f):
                rec = dict(row=r["row"], threads=int(r["threads"]), alloc=r["alloc"], rep=int(r["rep"]),
                           status=r["status"], ops_per_sec=float(r["ops_per_sec"] or 0), unit=r["unit"],
                           peak_rss_kb=int(r["peak_rss_kb"] or 0), secs=float(r["secs"] or 0),
                           minflt=int(r["minflt"]) if r["minflt"] else None,
                           nvcsw=int(r["nvcsw"]) if r["nvcsw"] else None, command=r["command"],
                           error=r["error"])
                # ops: the figure's count (per-1000 kernel figures); rate x time
                rec["ops"] = int(round(rec["ops_per_sec"] * rec["secs"]))
                runs.append(rec)
                threads.add(rec["threads"])
                row_ids.add(rec["row"])
                if rec["alloc"] not in names:
                    names.append(rec["alloc"])
        path = os.path.join(d, TAG + "-sites.csv")
        if os.path.exists(path):   # a later folder's counters of a point replace an earlier one's
            mine = {}
            with open(path, newline="") as f:
                for r in csv.DictReader(f):
                    g = mine.setdefault((r["row"], int(r["threads"])),
                                        dict(header=dict(ops=int(r["ops"]), threads=int(r["threads"])),
                                             sites=[], error=None))
                    g["sites"].append(dict(site=r["site"], kind=r["kind"], count=int(r["count"]),
                                           per1k=float(r["per1k"])))
            sites.update(mine)
    rows = [row for row in ROWS if row["id"] in row_ids]
    allocs = [(a, None) for a in names]
    threads = sorted(threads)
    ncpu = opt.ncpu or os.cpu_count() or 1
    meta = "merged from %s; %d CPUs there%s" % (", ".join(opt.merge), ncpu,
                                                  ("; " + opt.machine) if opt.machine else "")
    note = "" if sites else "per-site counters: none in the merged runs"
    os.makedirs(opt.out, exist_ok=True)
    return report(opt, rows, threads, allocs, runs, sites, ncpu, meta, note)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default="build/libhakmem.so", help="hakmem's drop-in library")
    ap.add_argument("--stats-lib", default="build/stats/libhakmem.so",
                    help="hakmem built with STATS=1 (per-site counters); '' to skip")
    ap.add_argument("--bindir", default="build/bench", help="where the bench programs are")
    ap.add_argument("--threads", default="", help="thread counts, e.g. '1 2 4' "
                    "(default: powers of two up to max(16, 2 x nproc))")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply each row's -n")
    ap.add_argument("--out", default="results")
    ap.add_argument("--rows", default="", help="comma-separated row ids (default: all)")
    ap.add_argument("--allocs", default="", help="comma-separated allocators (default: all found)")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per run")
    ap.add_argument("--peers-dir", default="build/peers",
                    help="where peers missing from the system are looked for (copies of their libraries)")
    ap.add_argument("--self-test", action="store_true", help="run the parser's doctests and exit")
    ap.add_argument("--merge", nargs="+", metavar="DIR",
                    help="no runs: one report (--out) from these folders' bench-scale CSVs")
    ap.add_argument("--ncpu", type=int, default=0, help="with --merge: the CPUs of the machine that ran them")
    ap.add_argument("--machine", default="", help="with --merge: a line naming that machine")
    opt = ap.parse_args()
    if opt.self_test:
        return self_test()
    if opt.merge:
        return merge(opt)

    ncpu = os.cpu_count() or 1
    threads = parse_threads(opt.threads) if opt.threads.strip() else default_threads(ncpu)
    rows = B.select_rows(ROWS, opt.rows, opt.bindir, "bench-scale")
    allocs = B.select_allocs(opt.lib, opt.bindir, opt.allocs, peers_dir=opt.peers_dir)
    if allocs is None:
        return 1
    points = [(row, t) for row in rows for t in threads if t >= row["min_t"]]

    os.makedirs(opt.out, exist_ok=True)
    B.log("bench-scale: %d rows, threads %s (%d points) x %d allocators (%s) x %d reps; %d CPUs%s"
          % (len(rows), " ".join(map(str, threads)), len(points), len(allocs),
             " ".join(a for a, _ in allocs), opt.reps, ncpu,
             (": T > %d is oversubscribed here, not scaling" % ncpu) if max(threads) > ncpu else ""))
    runs = []
    t_start = time.time()
    for row, t in points:
        args = row_args(row, t, ncpu, opt.scale)
        binpath = os.path.join(opt.bindir, row["prog"])
        for rep in range(1, opt.reps + 1):
            this = []
            for a, lib in allocs:
                res, err, _ = B.run_capture(binpath, args, a, lib, opt.timeout)
                rec = dict(row=row["id"], threads=t, alloc=a, rep=rep, status="ok" if res else "FAIL",
                           error=err, ops_per_sec=0.0, peak_rss_kb=0, secs=0.0, unit="",
                           command=" ".join([row["prog"]] + args))
                if res:
                    rec.update(ops_per_sec=float(res["ops_per_sec"]), peak_rss_kb=int(res["peak_rss_kb"]),
                               secs=float(res["secs"]), unit=res["unit"], ops=int(res["ops"]),
                               minflt=int(res["minflt"]) if "minflt" in res else None,
                               nvcsw=int(res["nvcsw"]) if "nvcsw" in res else None)
                else:
                    B.log("bench-scale: FAIL %s T=%d %s rep %d: %s" % (row["id"], t, a, rep, err))
                runs.append(rec)
                this.append(rec)
            B.log("%-9s T=%-3d rep %d/%d [M %s/s]: %s" % (
                row["id"], t, rep, opt.reps, next((r["unit"] for r in this if r["unit"]), "ops"),
                ", ".join("%s %.3g" % (r["alloc"], r["ops_per_sec"] / 1e6) if r["status"] == "ok"
                          else "%s FAIL" % r["alloc"] for r in this)))
    t_runs = time.time() - t_start

    # hakmem's per-site counters: each point once under the statistics build.
    sites = {}
    stats_note = ""
    if not opt.stats_lib:
        stats_note = "per-site counters skipped (--stats-lib '')"
    elif not os.path.exists(opt.stats_lib):
        stats_note = "per-site counters skipped: %s does not exist (make STATS=1)" % opt.stats_lib
    else:
        for row, t in points:
            reports, res, err = [], None, None
            for k in (1, 3):   # two lengths: their difference is the steady state
                args = row_args(row, t, ncpu, opt.scale, k)
                res, err, stderr = B.run_capture(os.path.join(opt.bindir, row["prog"]), args, "hakmem",
                                                 opt.stats_lib, opt.timeout)
                reports.append(parse_sites(stderr or ""))
                if res is None:
                    break
            if len(reports) != 2 or reports[1][0] is None:
                steady = None
            elif row.get("whole_sites"):
                steady = reports[1]   # the longer run whole (see ROWS)
            else:
                steady = steady_sites(reports[0], reports[1])
            header, ss = steady if steady else (None, [])
            sites[(row["id"], t)] = dict(header=header, sites=ss, error=err or None)
            if res is None:
                B.log("bench-scale: stats run FAILED %s T=%d: %s" % (row["id"], t, err))
            elif header is None:
                B.log("bench-scale: stats %s T=%d: NO per-site report (no `hakmem-sites:` line "
                      "on stderr from %s)" % (row["id"], t, opt.stats_lib))
            else:
                top = sorted(ss, key=lambda s: -s["per1k"])[:4]
                B.log("bench-scale: stats %s T=%d: ops=%d, %d sites, all %.3g/1k; top: %s" % (
                    row["id"], t, header["ops"], len(ss), sum(s["per1k"] for s in ss),
                    ", ".join("%s %.3g" % (s["site"], s["per1k"]) for s in top) or "-"))
        if sites and all(v["header"] is None for v in sites.values()):
            stats_note = ("NO per-site counters: %s printed no `hakmem-sites:` report in any run "
                          "(is the STATS=1 output implemented?)" % opt.stats_lib)
    elapsed = time.time() - t_start

    meta = ("hakmem %s, %s, %d CPUs, Linux %s, %s; threads %s; %d reps, scale %g; %.0f s "
            "(%.0f s throughput runs)"
            % (B.git_rev(os.path.dirname(os.path.abspath(opt.lib)) or "."), B.cpu_name(), ncpu,
               platform.release(), datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
               " ".join(map(str, threads)), opt.reps, opt.scale, elapsed, t_runs))
    return report(opt, rows, threads, allocs, runs, sites, ncpu, meta, stats_note)


def report(opt, rows, threads, allocs, runs, sites, ncpu, meta, stats_note):
    """Writes the CSVs, the tables and the chart under opt.out; 1 if a hakmem run failed."""
    points = [(row, t) for row in rows for t in threads if t >= row["min_t"]]
    summ = summarize(rows, threads, allocs, runs)
    names = [a for a, _ in allocs]

    runs_csv = os.path.join(opt.out, TAG + "-runs.csv")
    with open(runs_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "threads", "alloc", "rep", "status", "ops_per_sec", "unit", "peak_rss_kb",
                    "secs", "minflt", "nvcsw", "command", "error"])
        for r in runs:
            w.writerow([r["row"], r["threads"], r["alloc"], r["rep"], r["status"],
                        "%.0f" % r["ops_per_sec"], r["unit"], r["peak_rss_kb"], "%.6f" % r["secs"],
                        "" if r.get("minflt") is None else r["minflt"],
                        "" if r.get("nvcsw") is None else r["nvcsw"], r["command"], r["error"]])
    sum_csv = os.path.join(opt.out, TAG + ".csv")
    with open(sum_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "threads", "alloc", "median_ops_per_sec", "unit", "ratio_to_best_peer",
                    "best_peer", "min_ops_per_sec", "max_ops_per_sec", "runs_ok", "runs",
                    "median_peak_rss_kb"])
        for row, t in points:
            s = summ[(row["id"], t)]
            bestrate = s["med"][s["best"]]["rate"] if s["best"] else None
            for a in names:
                m = s["med"][a]
                w.writerow([row["id"], t, a, "%.0f" % m["rate"] if m["rate"] is not None else "",
                            s["unit"], "%.4f" % (m["rate"] / bestrate) if (m["rate"] and bestrate) else "",
                            s["best"] or "", "%.0f" % m["lo"] if m["lo"] is not None else "",
                            "%.0f" % m["hi"] if m["hi"] is not None else "", m["ok"], m["runs"],
                            "%.0f" % m["rss"] if m["rss"] is not None else ""])
    sites_csv = os.path.join(opt.out, TAG + "-sites.csv")
    with open(sites_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "threads", "site", "kind", "count", "per1k", "ops"])
        for row, t in points:
            g = sites.get((row["id"], t))
            if g and g["header"]:
                for s in g["sites"]:
                    w.writerow([row["id"], t, s["site"], s["kind"], s["count"], "%.4f" % s["per1k"],
                                g["header"]["ops"]])

    parts = ["# %s\n" % TAG, meta + "\n",
             "Work: -n per thread = the row's n while T <= %d (the CPUs here), n x %d / T above (mstress: "
             "its -n stays, its rounds scale, 2 at least); "
             "rows that need two threads start at T=2.%s\n"
             % (ncpu, ncpu, (" **T > %d: more threads than CPUs here, so those figures show "
                             "oversubscription, not scaling.**" % ncpu) if max(threads) > ncpu else ""),
             overview(rows, threads, summ) + "\n"]
    if stats_note:
        parts.append("**%s**\n" % stats_note)
    for row in rows:
        at = []
        for t in threads:
            if t >= row["min_t"]:
                n, rounds = row_work(row, t, ncpu, opt.scale)
                at.append("T=%d: %d%s" % (t, n, " x %d rounds" % rounds if rounds else ""))
        n_at = ", ".join(at)
        parts.append("## %s — %s\n\n`%s%s -t T -n N` (N per thread: %s)\n"
                     % (row["id"], row["label"], " ".join([row["prog"]] + row["args"]),
                        " -r R" if "rounds" in row else "", n_at))
        parts.append(row_tables(row, threads, allocs, summ, sites))
    md_text = "\n".join(parts)
    md = os.path.join(opt.out, TAG + ".md")
    with open(md, "w") as f:
        f.write(md_text)
    png = write_chart(rows, threads, allocs, summ, opt.out, ncpu)

    B.log("")
    B.log(md_text)
    B.log("wrote %s, %s, %s, %s%s" % (sum_csv, runs_csv, sites_csv, md, (", " + png) if png else ""))
    if stats_note:
        B.log("bench-scale: " + stats_note)
    hfail = [r for r in runs if r["alloc"] == "hakmem" and r["status"] != "ok"]
    if hfail:
        B.log("bench-scale: ERROR: %d hakmem runs failed (see %s)" % (len(hfail), runs_csv))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
