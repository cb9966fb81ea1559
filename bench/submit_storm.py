#!/usr/bin/env python3
"""Submit storm: one user ("stormer") runs N concurrent `rudel submit` loops while another
user ("quiet") submits sequentially; prints the quiet user's median/p90 submit latency idle
and under the storm, and as its last line `ratio storm/idle (median): X.XX`.
Target (issue 12): <= 2.00. The head decides the user: the admin credentials submit on each
user's behalf (`rudel submit --user U`), which the rate limits and quotas count as U's.

Jobs are held (`--hold`) so the agent does no work: the benchmark measures admission only.

`--rate R` first sets the per-user submit rate (`limits.submit_rate_per_user=R`, scheduling
version 2): the stormer's surplus is then refused at the door instead of filling the log.

`--socket`: every client (storm and quiet) reaches the head through its Unix socket (as
local users do: no TLS handshake per call) instead of TLS with admin credentials.

Usage: bench/submit_storm.py [--clients 20] [--quiet-submits 100] [--rate R] [--pace 0.05] [--nice]
                             [--socket] [--binary target/release/rudel]
"""
import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import Cluster  # noqa: E402


def submit(c, user, nice=False):
    t0 = time.perf_counter()
    r = subprocess.run([c.binary, "submit", "--user", user, "--hold", "--", "/bin/true"], env=c.env,
                       capture_output=True, text=True, cwd=c.dir,
                       preexec_fn=(lambda: os.nice(19)) if nice else None)
    return time.perf_counter() - t0, r.returncode


def quiet_latencies(c, n, pace):
    lat = []
    for _ in range(n):
        dt, rc = submit(c, "quiet")
        if rc != 0:
            sys.exit("the quiet user's submit failed")
        lat.append(dt * 1000)
        time.sleep(pace)
    return lat


def storm_loop(c, stop, counts, refused, i, nice):
    while not stop.is_set():
        _, rc = submit(c, "stormer", nice)
        counts[i] += 1
        refused[i] += rc != 0


def describe(lat):
    q = statistics.quantiles(lat, n=10)
    return statistics.median(lat), q[8]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--quiet-submits", type=int, default=100)
    ap.add_argument("--binary", default="target/release/rudel")
    ap.add_argument("--rate", type=int, default=0, help="per-user submit rate to configure first (0: none)")
    ap.add_argument("--pace", type=float, default=0.05,
                    help="seconds the quiet user waits between its submits (it is not a storm itself)")
    ap.add_argument("--nice", action="store_true",
                    help="run the storm's client processes at nice 19: on a small machine they then "
                         "stand in for clients on other machines, and the ratio shows the head's "
                         "share rather than this machine's CPU")
    ap.add_argument("--socket", action="store_true",
                    help="clients use the head's Unix socket (root: admin, so --user works) instead of TLS")
    a = ap.parse_args()
    c = Cluster(os.path.abspath(a.binary), 2)
    if a.socket:
        c.env.pop("RUDEL_CREDENTIALS", None)
        c.env["RUDEL_SOCKET"] = os.path.join(c.dir, "data", "head", "rudel.sock")
    try:
        if a.rate:
            c.rudel("admin", "config", "set", "version=2", f"limits.submit_rate_per_user={a.rate}")
        idle = quiet_latencies(c, a.quiet_submits, a.pace)
        stop = threading.Event()
        counts = [0] * a.clients
        refused = [0] * a.clients
        threads = [threading.Thread(target=storm_loop, args=(c, stop, counts, refused, i, a.nice))
                   for i in range(a.clients)]
        for t in threads:
            t.start()
        time.sleep(1)
        t0 = time.perf_counter()
        storm = quiet_latencies(c, a.quiet_submits, a.pace)
        span = time.perf_counter() - t0
        stop.set()
        for t in threads:
            t.join()
        (im, ip), (sm, sp) = describe(idle), describe(storm)
        print(f"idle:  median {im:.1f} ms, p90 {ip:.1f} ms")
        print(f"storm: median {sm:.1f} ms, p90 {sp:.1f} ms "
              f"({sum(counts)} storm submits, {sum(counts) / (span + 1):.0f}/s, {sum(refused)} refused)")
        print(f"ratio storm/idle (median): {sm / im:.2f}")
    finally:
        c.stop()


if __name__ == "__main__":
    main()
