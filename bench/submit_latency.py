#!/usr/bin/env python3
"""Local `rudel submit` latency and sequential rate over the head's Unix socket (peer
credentials, no TLS) against mutual TLS, in the same sitting, alternating calls so both
see the same machine load.

Prints, per transport, the median and p90 latency and the sequential rate (calls / total
time), and as its last line `ratio tls/socket: X.XX` (medians). Targets (issue 12): local
submit median <= 3 ms, >= 300 sequential submits/s.

`/bin/true`, started the same way in the same alternation, is the baseline: what starting
any process costs this harness on this machine. Its median and the ratio socket/true are
printed too (`ratio socket/true: X.XX`).

`socket (held)` submits a held job (`--hold`) the same way: admission only, as
`submit_concurrent.py` measures it. The other submits start their task (`true`) at once,
and on a 2-core machine the agent starting it competes with the client still exiting and
with the next call.

`--compare OTHER` adds a third client, another build's binary, alternating with the
others against the same head: a change's effect on the client's cost, measured in one
sitting (`ratio socket/compare: X.XX`; below 1 means this build is faster).

Usage: bench/submit_latency.py [--calls 1000] [--binary target/release/rudel]
                               [--compare OTHER_BINARY]
"""
import argparse
import os
import random
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
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--binary", default="target/release/rudel")
    ap.add_argument("--compare", help="another build's rudel, run as a client the same way")
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    c = Cluster(binary, 2)
    try:
        sock = os.path.join(c.dir, "data", "head", "rudel.sock")
        socket_env = {k: v for k, v in c.env.items() if k != "RUDEL_CREDENTIALS"}
        socket_env["RUDEL_SOCKET"] = sock
        tls_env = {k: v for k, v in c.env.items() if k != "RUDEL_SOCKET"}
        who = subprocess.run([binary, "whoami", "--json"], env=socket_env, capture_output=True, text=True)
        if '"transport":"socket"' not in who.stdout.replace(" ", ""):
            sys.exit(f"the socket path is not used: {who.stdout} {who.stderr}")
        submit = [binary, "submit", "--output", "none", "--", "true"]
        held = [binary, "submit", "--output", "none", "--hold", "--", "true"]
        s, t, base, other, h = [], [], [], [], []
        other_submit = [os.path.abspath(a.compare), *submit[1:]] if a.compare else None
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        calls = [(s, submit, socket_env), (t, submit, tls_env), (base, ["/bin/true"], socket_env),
                 (h, held, socket_env)]
        if other_submit:
            calls.append((other, other_submit, socket_env))
        # Each round runs the calls in a new random order: a call right after a submit
        # competes with the head and agent still handling that job (its task starts and
        # ends), and a fixed order would charge that to whichever call comes next.
        rng = random.Random(1)
        for _ in range(a.calls):
            rng.shuffle(calls)
            for out, cmd, env in calls:
                out.append(timed(cmd, env, c.dir))
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        rows = [("/bin/true", base), ("socket", s), ("socket (held)", h), ("tls", t)]
        if other:
            rows.append(("compare (socket)", other))
        for name, xs in rows:
            rate = len(xs) / (sum(xs) / 1000)
            print(f"{name}: median {statistics.median(xs):.2f} ms, p90 {p90(xs):.2f} ms, "
                  f"{rate:.0f} sequential calls/s ({a.calls} calls)")
        print(f"ratio socket/true: {statistics.median(s) / statistics.median(base):.2f}")
        print(f"ratio socket-held/true: {statistics.median(h) / statistics.median(base):.2f}")
        print(f"ratio tls/socket: {statistics.median(t) / statistics.median(s):.2f}")
        if other:
            print(f"ratio socket/compare: {statistics.median(s) / statistics.median(other):.2f}")
    finally:
        c.stop()


if __name__ == "__main__":
    main()
