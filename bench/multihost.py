#!/usr/bin/env python3
"""Multi-host benchmark in network namespaces (needs root and iproute2).

Builds a head host and N agent hosts as network namespaces on a bridge (10.214.0.0/24,
addresses owned by this script only), then measures:
  1. throughput: T `/bin/true` tasks as one array over all agents, against
     `xargs -P <total cpus>` in the same run (medians; last line of this part is the ratio);
  2. failover of work: the time from cutting one agent off the network until its
     `--requeue` tasks run elsewhere, with the head's default --node-timeout (10 s).
Everything it creates is removed at the end, also on failure.

Usage: sudo bench/multihost.py [--agents 3] [--cpus 2] [--tasks 6000] [--runs 3]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PREFIX = f"rdb{os.getpid() % 100000}"
NET = "10.214.0"


def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r


class Net:
    def __init__(self, hosts):
        self.hosts = hosts
        self.bridge = f"{PREFIX}br"
        self.procs = []
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{NET}.254/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i in range(hosts):
            ns, peer = self.ns(i), f"{PREFIX}p{i}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", peer, "master", self.bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def ns(self, i):
        return f"{PREFIX}h{i}"

    def ip(self, i):
        return f"{NET}.{i + 1}"

    def spawn(self, i, argv, log):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(i), *argv], stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def cut(self, i, up=False):
        sh("ip", "link", "set", f"{PREFIX}p{i}", "up" if up else "down")

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 15
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for i in range(self.hosts):
            pids = sh("ip", "netns", "pids", self.ns(i), check=False).stdout.split()
            for pid in pids:
                sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "del", self.ns(i), check=False)
            sh("ip", "link", "del", f"{PREFIX}p{i}", check=False)
        sh("ip", "link", "del", self.bridge, check=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=6000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "rudel"))
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    if os.geteuid() != 0 or not shutil.which("ip"):
        sys.exit("needs root and iproute2 (ip netns)")
    tmp = tempfile.mkdtemp(prefix="rudel-mh-bench-")
    net = Net(a.agents + 1)
    head = f"{net.ip(0)}:7117"
    env = dict(os.environ, RUDEL_HEAD=head, RUDEL_CREDENTIALS=f"{tmp}/head/client")

    def rudel(*args):
        r = subprocess.run([binary, *args], env=env, capture_output=True, text=True, cwd=tmp)
        if r.returncode != 0:
            raise RuntimeError(f"rudel {' '.join(args)}: {r.stderr}")
        return r.stdout

    try:
        log = open(os.path.join(tmp, "daemons.log"), "w")
        net.spawn(0, [binary, "head", "--data", f"{tmp}/head", "--listen", head], log)
        token_file = f"{tmp}/head/join-token"
        deadline = time.time() + 30
        while not os.path.exists(token_file) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        token = open(token_file).read().strip()
        for i in range(1, a.agents + 1):
            net.spawn(i, [binary, "agent", "--head", head, "--data", f"{tmp}/a{i}", "--name", f"host{i}",
                          "--cpus", str(a.cpus), "--allow-root-jobs", "--token", token], log)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                nodes = json.loads(rudel("nodes", "--json"))
                if sum(n["state"] == "idle" for n in nodes) == a.agents:
                    break
            except RuntimeError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("agents did not come up")
        total = a.agents * a.cpus
        rt, xt = [], []
        for run in range(a.runs):
            t0 = time.perf_counter()
            subprocess.run(f"seq {a.tasks} | xargs -P {total} -I{{}} /bin/true", shell=True, check=True)
            xt.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            job = json.loads(rudel("submit", "--json", "--array", f"1-{a.tasks}", "--output", "none", "--", "/bin/true"))["id"]
            rudel("wait", "--quiet", str(job))
            rt.append(time.perf_counter() - t0)
            print(f"run {run + 1}: rudel {rt[-1]:.2f} s ({a.tasks / rt[-1]:.0f}/s), xargs -P{total} {xt[-1]:.2f} s")
        print(f"median: rudel {statistics.median(rt):.2f} s, xargs -P{total} {statistics.median(xt):.2f} s")
        print(f"ratio rudel/xargs ({a.agents} agents in namespaces): {statistics.median(rt) / statistics.median(xt):.2f}")

        # Failover of work with default settings: cut host1, time until its tasks run elsewhere.
        # One task per agent (placement spreads them), so the others have room for host1's.
        job = json.loads(rudel("submit", "--json", "--array", f"1-{a.agents}", "--output", "none", "--", "sleep", "60"))["id"]
        time.sleep(2)
        victims = {t["index"] for t in json.loads(rudel("show", str(job), "--json"))["task_details"]
                   if t["node"] == "host1" and t["state"] == "running"}
        t_cut = time.perf_counter()
        net.cut(1)
        moved = None
        while time.perf_counter() - t_cut < 60:
            tasks = json.loads(rudel("show", str(job), "--json"))["task_details"]
            if any(t["index"] in victims and t["attempt"] > 1 and t["state"] == "running" for t in tasks):
                moved = time.perf_counter() - t_cut
                break
            time.sleep(0.1)
        net.cut(1, up=True)
        rudel("cancel", str(job))
        print(f"cut host1 -> its tasks running elsewhere: {moved:.1f} s (default --node-timeout 10s)" if moved
              else "cut host1 -> tasks not moved within 60 s")
    finally:
        net.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
