#!/usr/bin/env python3
"""Workflow-tool polling against task throughput: the throughput benchmark's array of
trivial tasks, once alone and once while 20 pollers each run `squeue` or `sacct` (through
the Slurm links, alternating) 10 times a second, as workflow managers do. Alternates the two
in one invocation; prints every run, the medians, how many queries the pollers made, and
as its last line `ratio with-pollers/alone: X.XX`. Target (issue 10): <= 1.10.

`--null` adds a third configuration: the same pollers starting `/bin/true` at the same
rate. On a small machine the processes themselves (fork, exec, dynamic loading) take CPU
from the tasks whatever they ask; the ratio with-pollers/null-pollers is what rudel's
queries cost on top of that (client work, socket, head).

Usage: bench/pollers.py [--tasks 5000] [--runs 3] [--pollers 20] [--rate 10]
                        [--binary target/release/rudel] [--sacct-all] [--tls] [--null]
"""
import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import Cluster, run_rudel  # noqa: E402


def poller(cmds, env, cwd, rate, stop, counts, i):
    period = 1.0 / rate
    n = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        subprocess.run(cmds[n % len(cmds)], env=env, cwd=cwd, capture_output=True)
        n += 1
        rest = period - (time.perf_counter() - t0)
        if rest > 0:
            stop.wait(rest)
    counts[i] = n


def with_pollers(c, a, cmds):
    stop = threading.Event()
    counts = [0] * a.pollers
    # Pollers run on the head's machine, as workflow tools do on a login node: without
    # named credentials the CLI takes the head's Unix socket (no TLS handshake per poll);
    # --tls keeps them on TLS for comparison.
    env = dict(c.env)
    if not a.tls:
        env.pop("RUDEL_CREDENTIALS", None)
    threads = [threading.Thread(target=poller, args=(cmds, env, c.dir, a.rate, stop, counts, i))
               for i in range(a.pollers)]
    for t in threads:
        t.start()
    time.sleep(1)  # pollers running before the work starts
    t0 = time.perf_counter()
    dt = run_rudel(c, a.tasks, "none")
    polled = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join()
    return dt, sum(counts), polled


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pollers", type=int, default=20)
    ap.add_argument("--rate", type=float, default=10.0, help="queries per second per poller")
    ap.add_argument("--binary", default="target/release/rudel")
    ap.add_argument("--tls", action="store_true",
                    help="pollers use the TLS credentials instead of the head's Unix socket")
    ap.add_argument("--null", action="store_true",
                    help="also run with pollers that start /bin/true at the same rate (the cost of "
                         "the processes alone)")
    ap.add_argument("--sacct-all", action="store_true",
                    help="poll an unfiltered `sacct -X` (every job and task of the day) instead of "
                         "snakemake's query by workflow name")
    a = ap.parse_args()
    c = Cluster(os.path.abspath(a.binary), 2)
    try:
        bindir = os.path.join(c.dir, "bin")
        c.rudel("slurm", "install", bindir)
        # snakemake's Slurm executor asks sacct for its own workflow's jobs by name.
        sacct = [os.path.join(bindir, "sacct"), "-X", "-n", "-P", "-o", "JobIdRaw,State"]
        if not a.sacct_all:
            sacct += ["--name", "poller-workflow", "-S", "now-1hour"]
        cmds = [[os.path.join(bindir, "squeue"), "-h"], sacct]
        alone, polled, null = [], [], []
        for r in range(a.runs):
            alone.append(run_rudel(c, a.tasks, "none"))
            line = f"run {r + 1}: alone {alone[-1]:.2f} s"
            if a.null:
                dt, queries, span = with_pollers(c, a, [["/bin/true"]])
                null.append(dt)
                line += f", with null pollers {dt:.2f} s ({queries / (span + 1):.0f} processes/s)"
            dt, queries, span = with_pollers(c, a, cmds)
            polled.append(dt)
            print(f"{line}, with pollers {dt:.2f} s "
                  f"({queries} queries over {span + 1:.1f} s: {queries / (span + 1):.0f}/s)", flush=True)
        ma, mp = statistics.median(alone), statistics.median(polled)
        print(f"median: alone {ma:.2f} s ({a.tasks / ma:.0f}/s), with {a.pollers} pollers {mp:.2f} s "
              f"({a.tasks / mp:.0f}/s)")
        if a.null:
            mn = statistics.median(null)
            print(f"median with null pollers (/bin/true): {mn:.2f} s; ratio null-pollers/alone "
                  f"{mn / ma:.2f}, with-pollers/null-pollers {mp / mn:.2f}")
        print(f"ratio with-pollers/alone: {mp / ma:.2f}")
    finally:
        c.stop()


if __name__ == "__main__":
    main()
