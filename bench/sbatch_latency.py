#!/usr/bin/env python3
"""sbatch latency on an idle head: the whole `sbatch --parsable --wrap true` process (through
the link `rudel slurm install` makes), against `rudel submit` in the same run, alternating.

Prints every run's median, the overall medians and p90, and as its last line
`ratio sbatch/rudel-submit: X.XX`. Target (issue 10): sbatch median <= 10 ms.

Usage: bench/sbatch_latency.py [--calls 200] [--binary target/release/rudel]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import Cluster  # noqa: E402  (same cluster setup as the throughput bench)


def timed(cmd, env, cwd):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    dt = (time.perf_counter() - t0) * 1000
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr}")
    return dt


def p90(xs):
    return sorted(xs)[int(len(xs) * 0.9) - 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--binary", default="target/release/rudel")
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    c = Cluster(binary, 2)
    try:
        bindir = os.path.join(c.dir, "bin")
        c.rudel("slurm", "install", bindir)
        sbatch = [os.path.join(bindir, "sbatch"), "--parsable", "-o", "/dev/null", "--wrap", "true"]
        submit = [binary, "submit", "--output", "none", "--", "true"]
        s, r = [], []
        for _ in range(a.calls):
            s.append(timed(sbatch, c.env, c.dir))
            r.append(timed(submit, c.env, c.dir))
        print(f"sbatch: median {statistics.median(s):.1f} ms, p90 {p90(s):.1f} ms ({a.calls} calls)")
        print(f"rudel submit: median {statistics.median(r):.1f} ms, p90 {p90(r):.1f} ms ({a.calls} calls)")
        print(f"ratio sbatch/rudel-submit: {statistics.median(s) / statistics.median(r):.2f}")
    finally:
        c.stop()


if __name__ == "__main__":
    main()
