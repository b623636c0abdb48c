#!/usr/bin/env python3
"""Paired A/B rounds: one command under several allocators or builds.

On a shared, noisy machine two runs of the same program differ by more than
most changes do, so compare within rounds: each round runs every variant once,
in an order that rotates from round to round, and each round's time of a
variant is divided by that round's time of the first variant. The median of
those per-round ratios is the figure to quote (CURRENT_TASK.md's "paired
rounds"); the median times, peak RSS and page faults are printed beside it.

    scripts/ab.py [--rounds 9] [--cpu 1] [--env K=V ...] -- COMMAND VARIANT...

COMMAND is one shell word (quote it): e.g. 'build/bench/ring -t 2 -n 5000000'.
A VARIANT is NAME=LIB or NAME=LIB@K=V,K=V (LIB preloaded, the variables set):
  hak=build/libhakmem.so  exp=build/x/libhakmem.so  b8=build/libhakmem.so@HAKMEM_PURGE_DIRTY_MB=8
and NAME alone may be a peer, found as `make bench` finds it: glibc (nothing
preloaded), jemalloc, tcmalloc, mimalloc.

The time is the program's own `secs=` when it prints a RESULT line (the bench/
programs do: set-up and exit excluded), else the wall time of the command;
peak RSS and page faults likewise from `peak_rss_kb=` and `minflt=`, else from
the kernel's accounting of the child (wait4; its peak RSS can include what the
launching Python had mapped, so prefer the bench/ programs' own figures). --cpu pins every run to one CPU
(taskset), for single-thread rows.
"""
import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import PEERS, find_peer  # noqa: E402  (the peers `make bench` uses)


def parse_variant(text):
    name, _, rest = text.partition("=")
    if not name:
        sys.exit(f"ab: bad variant {text!r} (NAME=LIB[@K=V,...] or a peer's name)")
    env = {}
    if not rest:
        if name == "glibc":
            return name, None, env
        sonames = dict(PEERS)
        if name not in sonames:
            sys.exit(f"ab: {name!r} is not a peer (glibc, {', '.join(sonames)}); give NAME=LIB")
        lib = find_peer(sonames[name])
        if lib is None:
            sys.exit(f"ab: {name} is not installed (scripts/install-peers.sh)")
        return name, lib, env
    lib, _, assigns = rest.partition("@")
    for kv in filter(None, assigns.split(",")):
        k, eq, v = kv.partition("=")
        if not eq:
            sys.exit(f"ab: bad variable {kv!r} in {text!r}")
        env[k] = v
    if lib and lib != "none" and not os.path.exists(lib):
        sys.exit(f"ab: {lib}: no such library")
    return name, (lib if lib and lib != "none" else None), env


def run_once(argv, lib, env_extra):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.update(env_extra)
    if lib:
        env["LD_PRELOAD"] = os.path.abspath(lib)
    with tempfile.TemporaryFile(mode="w+") as errf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=errf, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.stdout.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errf.seek(0)
            return None, f"exit {proc.returncode}: {errf.read().strip()[-200:]}"
    rec = {"secs": wall, "rss_kb": usage.ru_maxrss, "minflt": usage.ru_minflt}
    m = re.search(r"^RESULT .*$", out, re.M)
    if m:
        fields = dict(kv.split("=", 1) for kv in m.group(0).split()[1:] if "=" in kv)
        if "secs" in fields:
            rec["secs"] = float(fields["secs"])
        if "peak_rss_kb" in fields:
            rec["rss_kb"] = int(fields["peak_rss_kb"])
        if "minflt" in fields:
            rec["minflt"] = int(fields["minflt"])
    return rec, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--cpu", help="pin every run to this CPU (taskset -c)")
    ap.add_argument("--env", action="append", default=[], help="K=V for every variant")
    ap.add_argument("command")
    ap.add_argument("variants", nargs="+")
    opt = ap.parse_args()
    if opt.rounds < 1:
        sys.exit("ab: --rounds must be at least 1")
    argv = shlex.split(opt.command)
    if opt.cpu is not None:
        argv = ["taskset", "-c", str(opt.cpu)] + argv
    common = dict(kv.split("=", 1) for kv in opt.env)
    variants = [parse_variant(v) for v in opt.variants]
    names = [v[0] for v in variants]
    if len(set(names)) != len(names):
        sys.exit("ab: two variants have the same name")
    recs = {n: [] for n in names}
    ratios = {n: [] for n in names}
    for r in range(opt.rounds):
        k = r % len(variants)
        this = {}
        for name, lib, env in variants[k:] + variants[:k]:
            rec, error = run_once(argv, lib, {**common, **env})
            if error:
                sys.exit(f"ab: {name}, round {r + 1}: {error}")
            this[name] = rec
            recs[name].append(rec)
        for n in names:
            ratios[n].append(this[n]["secs"] / this[names[0]]["secs"])
    print(f"ab: {opt.command!r}, {opt.rounds} rounds; time ratio = median of the rounds' time / {names[0]}'s")
    print(f"| variant | median s | time / {names[0]} | ratio range | peak RSS MB | page faults |")
    print("|---|---:|---:|---|---:|---:|")
    for n in names:
        secs = statistics.median(x["secs"] for x in recs[n])
        rss = [x["rss_kb"] for x in recs[n] if x["rss_kb"] is not None]
        flt = [x["minflt"] for x in recs[n] if x["minflt"] is not None]
        rss_s = f"{statistics.median(rss) / 1024:.1f}" if rss else "-"
        flt_s = f"{statistics.median(flt):.0f}" if flt else "-"
        print(f"| {n} | {secs:.4f} | {statistics.median(ratios[n]):.3f} | "
              f"{min(ratios[n]):.3f}-{max(ratios[n]):.3f} | {rss_s} | {flt_s} |")


if __name__ == "__main__":
    main()
