#!/usr/bin/env python3
"""Job step launch time: `srun -N N -n N true` inside an allocation of N nodes, from srun's
start to its exit, against the same N `true` processes started locally by `xargs -P N`
(the baseline, measured in the same run). Nodes are agents on loopback ("simulated
nodes": real agents and processes, one machine), started with `rudel up` plus N-1 agents.

Prints per N the median and each run of both, and `ratio srun/local` (medians).

`--outside` runs srun from the bench itself, outside any job, as a user at a login node
would (`srun -N N -n N true`): each run then also gets its own allocation, holds it,
starts the step through the head and hands the allocation back (docs/parallel-jobs.md).

Steps on more nodes than the head's --step-tree-threshold go through a tree of agents
(docs/parallel-jobs.md, "Launch tree"); `--tree off` sets the threshold above N, so every
launch goes from the head directly, for comparison. `--fanout K` sets the tree's fanout.

Usage: bench/srun_launch.py [--nodes 1,8,64] [--runs 20] [--outside] [--tree on|off] [--fanout K] [--binary target/release/rudel]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from throughput import Cluster  # noqa: E402


def start_agents(cl, n):
    token = open(os.path.join(cl.dir, "data", "head", "join-token")).read().strip()
    procs = []
    for i in range(2, n + 1):
        data = os.path.join(cl.dir, f"agent-{i}")
        log = open(os.path.join(cl.dir, f"agent-{i}.log"), "w")
        procs.append(subprocess.Popen(
            [cl.binary, "agent", "--head", cl.addr, "--token", token, "--name", f"n{i}", "--data", data,
             "--cpus", "1", "--mem", "256M", "--allow-root-jobs"], stdout=log, stderr=subprocess.STDOUT, env=cl.env))
    deadline = time.time() + 120
    while time.time() < deadline:
        out = cl.rudel("nodes", "--json")
        if out.count('"idle"') >= n:
            return procs
        time.sleep(0.2)
    sys.exit(f"only {out.count(chr(34) + 'idle' + chr(34))} of {n} nodes idle; see {cl.dir}")


def srun_runs(cl, n, runs):
    """Runs srun `runs` times inside one job of n nodes; the job records each duration."""
    bin_dir = os.path.join(cl.dir, "bin")
    cl.rudel("slurm", "install", bin_dir)
    out = os.path.join(cl.dir, f"srun-{n}.txt")
    script = os.path.join(cl.dir, f"srun-{n}.sh")
    with open(script, "w") as f:
        f.write(f"#!/bin/sh\n#SBATCH -N {n} -n {n}\n"
                f"for i in $(seq {runs}); do s=$(date +%s%N); {bin_dir}/srun -N {n} -n {n} true || exit 1; "
                f"e=$(date +%s%N); echo $(( (e - s) / 1000 )) >> {out}; done\n")
    job = cl.rudel("submit", "--output", "none", script).strip().split()[-1]
    r = subprocess.run([cl.binary, "wait", job], env=cl.env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        sys.exit(f"job {job} failed: {r.stdout} {r.stderr}; see {cl.dir}")
    return [int(x) / 1000 for x in open(out).read().split()]


def srun_outside_runs(cl, n, runs):
    """Runs srun `runs` times from here, outside every job: allocation, step, hand-back."""
    bin_dir = os.path.join(cl.dir, "bin")
    cl.rudel("slurm", "install", bin_dir)
    env = {k: v for k, v in cl.env.items() if not k.startswith("SLURM_")}
    xs = []
    for _ in range(runs):
        s = time.perf_counter()
        r = subprocess.run([os.path.join(bin_dir, "srun"), "-N", str(n), "-n", str(n), "true"],
                           env=env, capture_output=True, text=True, timeout=120, cwd=cl.dir)
        xs.append((time.perf_counter() - s) * 1000)
        if r.returncode != 0:
            sys.exit(f"srun failed: {r.stdout} {r.stderr}; see {cl.dir}")
    return xs


def local_runs(n, runs):
    xs = []
    for _ in range(runs):
        s = time.perf_counter()
        subprocess.run(f"seq {n} | xargs -P {n} -n 1 true", shell=True, check=True)
        xs.append((time.perf_counter() - s) * 1000)
    return xs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", default="1,8,64")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--binary", default="target/release/rudel")
    ap.add_argument("--tree", choices=["on", "off"], default="on")
    ap.add_argument("--fanout", type=int, default=None)
    ap.add_argument("--outside", action="store_true", help="srun outside any job (allocation included)")
    a = ap.parse_args()
    up_args = [] if a.tree == "on" else ["--step-tree-threshold", "1000000"]
    if a.fanout is not None:
        up_args += ["--step-tree-fanout", str(a.fanout)]
    binary = os.path.abspath(a.binary)
    where = "outside any job" if a.outside else "inside one job"
    print(f"load average: {os.getloadavg()}; srun {where}; tree {a.tree} {' '.join(up_args)}")
    for n in [int(x) for x in a.nodes.split(",")]:
        cl = Cluster(binary, 1, up_args)
        agents = []
        try:
            agents = start_agents(cl, n)
            s = srun_outside_runs(cl, n, a.runs) if a.outside else srun_runs(cl, n, a.runs)
            cl.log.flush()
            tree_steps = open(os.path.join(cl.dir, "up.log")).read().count("launching the step through a tree")
            loc = local_runs(n, a.runs)
        finally:
            for p in agents:
                p.terminate()
            for p in agents:
                p.wait(30)
            cl.stop()
        ms, ml = statistics.median(s), statistics.median(loc)
        print(f"N={n}: srun median {ms:.1f} ms (runs: {', '.join(f'{x:.1f}' for x in s)})")
        print(f"N={n}: local xargs median {ml:.1f} ms (runs: {', '.join(f'{x:.1f}' for x in loc)})")
        print(f"N={n}: steps launched through the tree of agents: {tree_steps} of {a.runs}")
        print(f"N={n}: ratio srun/local: {ms / ml:.2f} (load average after: {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
