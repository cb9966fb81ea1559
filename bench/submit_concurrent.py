#!/usr/bin/env python3
"""Local `rudel submit` throughput from concurrent clients over the head's Unix socket.

C client processes (default 20) each run `rudel submit --hold -- true` back to back for D
seconds; the jobs are held so the agent does no work (admission only). Before and after,
the same C processes start `/bin/true` back to back for D seconds the same way: the rate
of process starts this harness and machine allow, measured in the same sitting, is the
baseline (no client command can go faster than starting a process).

Prints per run the submits/s, the baseline's starts/s, the share of one core `rudel up`
(head and its idle local agent) used, and as its last line
`ratio submits/true-starts (median): X.XX`. Ground truth: the number of submits counted
by the clients must equal the jobs the head lists afterwards. Target (issue 12): >= 500
submits/s from 20 concurrent local clients.

Usage: bench/submit_concurrent.py [--clients 20] [--seconds 10] [--runs 2]
                                  [--binary target/release/rudel]
"""
import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import Cluster  # noqa: E402  (same cluster setup as the throughput bench)


def client(cmd, env, cwd, start_at, seconds, out):
    """Runs `cmd` back to back from `start_at` for `seconds`; puts (ok, failed, first error)."""
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    ok = failed = 0
    error = ""
    while time.time() < end:
        r = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode == 0:
            ok += 1
        else:
            failed += 1
            error = error or r.stderr.decode(errors="replace").strip()
    out.put((ok, failed, error))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def storm(cmd, env, cwd, clients, seconds, head_pid):
    """C concurrent loops of `cmd`: (calls/s, failures, first error, head cores)."""
    out = multiprocessing.Queue()
    start_at = time.time() + 0.5
    procs = [multiprocessing.Process(target=client, args=(cmd, env, cwd, start_at, seconds, out))
             for _ in range(clients)]
    for p in procs:
        p.start()
    while time.time() < start_at:
        time.sleep(0.001)
    cpu0 = cpu_seconds(head_pid)
    results = [out.get() for _ in procs]
    cpu1 = cpu_seconds(head_pid)
    for p in procs:
        p.join()
    ok = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    error = next((r[2] for r in results if r[2]), "")
    return ok / seconds, ok, failed, error, (cpu1 - cpu0) / seconds


def jobs_listed(c, env):
    r = subprocess.run([c.binary, "jobs", "--json"], env=env, capture_output=True, text=True, cwd=c.dir)
    if r.returncode != 0:
        sys.exit(f"rudel jobs failed: {r.stderr}")
    v = json.loads(r.stdout)
    return len(v["jobs"] if isinstance(v, dict) else v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--binary", default="target/release/rudel")
    a = ap.parse_args()
    c = Cluster(os.path.abspath(a.binary), 2)
    try:
        env = {k: v for k, v in c.env.items() if k != "RUDEL_CREDENTIALS"}
        env["RUDEL_SOCKET"] = os.path.join(c.dir, "data", "head", "rudel.sock")
        who = subprocess.run([c.binary, "whoami", "--json"], env=env, capture_output=True, text=True)
        if '"transport":"socket"' not in who.stdout.replace(" ", ""):
            sys.exit(f"the socket path is not used: {who.stdout} {who.stderr}")
        submit = [c.binary, "submit", "--hold", "--", "true"]
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        ratios = []
        submitted = 0
        for run in range(a.runs):
            base, _, bfail, berr, _ = storm(["/bin/true"], env, c.dir, a.clients, a.seconds, c.proc.pid)
            if bfail:
                sys.exit(f"/bin/true failed: {berr}")
            rate, ok, failed, error, head = storm(submit, env, c.dir, a.clients, a.seconds, c.proc.pid)
            if failed:
                sys.exit(f"{failed} submits failed, first: {error}")
            submitted += ok
            listed = jobs_listed(c, env)
            if listed != submitted:
                sys.exit(f"the clients counted {submitted} submits, the head lists {listed} jobs")
            ratios.append(rate / base)
            print(f"run {run + 1}: {rate:.0f} submits/s ({ok} in {a.seconds:g} s, {a.clients} clients), "
                  f"/bin/true {base:.0f} starts/s, rudel up at {head * 100:.0f}% of one core, "
                  f"ratio {rate / base:.2f}")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"ratio submits/true-starts (median): {statistics.median(ratios):.2f}")
    finally:
        c.stop()


if __name__ == "__main__":
    main()
