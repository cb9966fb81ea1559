#!/usr/bin/env python3
"""Open MPI hello (an allreduce over the ranks) across 3 hosts through rudel, end to end:
from `rudel submit` of a batch script that runs `mpirun ./hello` to the job completed
(`rudel wait` returns), against the baseline `mpirun --oversubscribe -np 3 --host
localhost:3 ./hello` on this machine without rudel, measured in the same run.

Hosts are network namespaces (needs root): a bridge `rdbbr<pid>` with 10.214.0.254/24
(the head listens there, in the root namespace) and namespaces `rdb<pid>-h1..3` with
10.214.0.2-4 on `eth0`, each agent with a private tmpfs on `/tmp` (its own mount
namespace, so the hosts share no Open MPI session files, as separate machines would); the
program and results live in a directory every host sees (/var/tmp/...), as a shared home
would. Everything it creates (processes by pid, namespaces, veths, bridge, directories)
is removed at the end, also on failure or Ctrl-C. `--loopback` runs 3 agents on loopback
instead (no root needed for the network, ranks share /tmp).

Both sides use the same Open MPI transport: `btl=self,tcp`, `pml=ob1` (TCP over `eth0`
between the hosts, over `lo` for the baseline). Each rank checks the allreduce (sum of
ranks = 3); a run whose output is not the 3 expected lines fails the benchmark.

`--launch srun` runs `srun ./hello` in the batch script instead: the ranks are started by
rudel's srun itself through its PMI-1 server (docs/parallel-jobs.md), no mpirun or orted.

`--launch srun-outside` runs `srun -N 3 --ntasks-per-node 1 ./hello` from the bench
itself, outside any job, as from a login node: the time is from srun's start to its exit
(its own allocation, the step through the head, srun's PMI-1 server here in the root
namespace, the hand-back). `--program true` runs `true` instead of the MPI program (the
bare launch: `srun -N 3 -n 3 true` across 3 hosts; output not checked), against 3 local
`true` started by `xargs -P 3` as the baseline.

Prints the median and each run of both, and `ratio rudel/local` (medians). One warm-up
run of each side is not counted.

Usage: sudo bench/mpi_hello.py [--runs 10] [--binary target/release/rudel] [--loopback] [--launch mpirun|srun|srun-outside] [--program hello|true]
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HELLO = r"""
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
    int rank, size, sum = 0;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    printf("rank %d size %d sum %d\n", rank, size, sum);
    MPI_Finalize();
    return 0;
}
"""

SUBNET = "10.214.0"
BRIDGE_IP = f"{SUBNET}.254"
EXPECTED = ["rank 0 size 3 sum 3", "rank 1 size 3 sum 3", "rank 2 size 3 sum 3"]
OMPI_COMMON = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl": "self,tcp",
    "OMPI_MCA_pml": "ob1",
}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def sh(*argv, check=True):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.strip()}")
    return r


def check_output(text, what):
    lines = sorted(l for l in text.splitlines() if l.startswith("rank "))
    if lines != EXPECTED:
        raise RuntimeError(f"{what}: unexpected output {text!r}")


class Hosts:
    """A head in the root namespace and 3 agents, each in a network namespace of its own
    (or on loopback). Owns every process and network object it creates."""

    def __init__(self, binary, base, loopback):
        self.binary, self.base, self.loopback = binary, base, loopback
        self.pid = os.getpid()
        self.namespaces, self.bridge, self.procs = [], None, []

    def start(self):
        """Separate from __init__ so that `close` also runs when starting fails halfway."""
        binary, base, loopback = self.binary, self.base, self.loopback
        ip = "127.0.0.1" if loopback else BRIDGE_IP
        self.addr = f"{ip}:{free_port()}"
        head_data = os.path.join(base, "head")
        self.env = dict(os.environ, RUDEL_HEAD=self.addr, RUDEL_CREDENTIALS=os.path.join(head_data, "client"))
        self.env.pop("RUDEL_LOG", None)
        if not loopback:
            self.make_network()
        self.spawn(None, [binary, "head", "--data", head_data, "--listen", self.addr], "head")
        deadline = time.time() + 30
        while not os.path.exists(os.path.join(head_data, "join-token")) or self.rudel("nodes", "--json", check=False) is None:
            if time.time() > deadline:
                raise RuntimeError(f"the head did not start; see {base}/head.log")
            time.sleep(0.1)
        token = open(os.path.join(head_data, "join-token")).read().strip()
        for i in (1, 2, 3):
            agent = [binary, "agent", "--head", self.addr, "--token", token, "--name", f"host{i}",
                     "--cpus", "1", "--allow-root-jobs"]
            if loopback:
                self.spawn(None, agent + ["--data", os.path.join(base, f"agent{i}")], f"agent{i}")
            else:
                # Its own mount namespace with a tmpfs on /tmp; the data dir lives there too.
                inner = "mount -t tmpfs rdb-tmp /tmp && mkdir -p /tmp/agent && exec \"$@\""
                self.spawn(i, ["unshare", "-m", "--propagation", "private", "sh", "-c", inner, "sh",
                               *agent, "--data", "/tmp/agent"], f"agent{i}")
        deadline = time.time() + 30
        while (self.rudel("nodes", "--json", check=False) or "").count('"idle"') < 3:
            if time.time() > deadline:
                raise RuntimeError(f"the agents did not join; see {base}/agent*.log")
            time.sleep(0.2)

    def ns(self, i):
        return f"rdb{self.pid}-h{i}"

    def make_network(self):
        for i in (1, 2, 3):
            if os.path.exists(f"/run/netns/{self.ns(i)}"):
                raise RuntimeError(f"namespace {self.ns(i)} exists already")
        if sh("ip", "-o", "addr", "show", "to", f"{SUBNET}.0/24").stdout.strip():
            raise RuntimeError(f"{SUBNET}.0/24 is in use on this machine")
        self.bridge = f"rdbbr{self.pid}"
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i in (1, 2, 3):
            ns, inner, peer = self.ns(i), f"rdb{self.pid}c{i}", f"rdb{self.pid}p{i}"
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            sh("ip", "link", "add", inner, "type", "veth", "peer", "name", peer)
            sh("ip", "link", "set", inner, "netns", ns)
            sh("ip", "-n", ns, "link", "set", inner, "name", "eth0")
            sh("ip", "-n", ns, "addr", "add", f"{SUBNET}.{i + 1}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "link", "set", peer, "master", self.bridge)
            sh("ip", "link", "set", peer, "up")

    def spawn(self, host, argv, name):
        if host is not None:
            argv = ["ip", "netns", "exec", self.ns(host), *argv]
        log = open(os.path.join(self.base, f"{name}.log"), "w")
        # Daemons get no client settings (an agent must not mistake them for its own).
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUDEL_")}
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                           stdin=subprocess.DEVNULL))
        log.close()

    def rudel(self, *args, check=True, timeout=120):
        r = subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True,
                           cwd=self.base, timeout=timeout)
        if r.returncode != 0:
            if check:
                raise RuntimeError(f"rudel {' '.join(args)} failed ({r.returncode}): {r.stderr}")
            return None
        return r.stdout

    def netns_pids(self, ns):
        """Processes living in namespace `ns` (tasks the agents started outlive them)."""
        try:
            want = f"net:[{os.stat(f'/run/netns/{ns}').st_ino}]"
        except OSError:
            return []
        pids = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    if os.readlink(f"/proc/{d}/ns/net") == want:
                        pids.append(int(d))
                except OSError:
                    pass
        return pids

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for ns in self.namespaces:
            for _ in range(50):
                pids = self.netns_pids(ns)
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.05)
            sh("ip", "netns", "del", ns, check=False)
        if self.bridge:
            sh("ip", "link", "del", self.bridge, check=False)


def baseline_run(hello, tmp):
    env = dict(os.environ, **OMPI_COMMON, OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo")
    s = time.perf_counter()
    r = subprocess.run(["mpirun.openmpi", "--oversubscribe", "-np", "3", "--host", "localhost:3", hello],
                       env=env, capture_output=True, text=True, timeout=120, cwd=tmp)
    took = (time.perf_counter() - s) * 1000
    if r.returncode != 0:
        raise RuntimeError(f"baseline mpirun failed: {r.stdout} {r.stderr}")
    check_output(r.stdout, "baseline")
    return took


def rudel_run(hosts, shared, n, loopback, launch):
    iface = "lo" if loopback else "eth0"
    env = dict(OMPI_COMMON, OMPI_MCA_btl_tcp_if_include=iface, OMPI_MCA_oob_tcp_if_include=iface)
    if launch == "mpirun":
        env.update(OMPI_MCA_plm="slurm", OMPI_MCA_ras="slurm")
    starter = "mpirun.openmpi" if launch == "mpirun" else "srun"
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    out = os.path.join(shared, f"run{n}.out")
    script = os.path.join(shared, f"run{n}.sh")
    with open(script, "w") as f:
        f.write(f"#!/bin/sh\n#SBATCH -N 3 --ntasks-per-node 1\nexport {exports}\n"
                f"export PATH={shared}/bin:$PATH\n"
                f"{starter} {shared}/hello > {out} 2>&1\n")
    s = time.perf_counter()
    job = hosts.rudel("submit", "--output", "none", script).strip().split()[-1]
    r = subprocess.run([hosts.binary, "wait", job], env=hosts.env, capture_output=True, text=True, timeout=300)
    took = (time.perf_counter() - s) * 1000
    text = open(out).read() if os.path.exists(out) else ""
    if r.returncode != 0:
        raise RuntimeError(f"job {job} failed: {r.stdout} {r.stderr}\n{text}")
    check_output(text, f"job {job}")
    return took


def local_true_run():
    s = time.perf_counter()
    subprocess.run("seq 3 | xargs -P 3 -n 1 true", shell=True, check=True)
    return (time.perf_counter() - s) * 1000


def outside_run(hosts, shared, loopback, program):
    """`srun -N 3 --ntasks-per-node 1 PROGRAM` from here, outside every job."""
    iface = "lo" if loopback else "eth0"
    env = dict(hosts.env, **OMPI_COMMON, OMPI_MCA_btl_tcp_if_include=iface, OMPI_MCA_oob_tcp_if_include=iface)
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    prog = "true" if program == "true" else os.path.join(shared, "hello")
    s = time.perf_counter()
    r = subprocess.run([os.path.join(shared, "bin", "srun"), "-N", "3", "--ntasks-per-node", "1", prog],
                       env=env, capture_output=True, text=True, timeout=120, cwd=shared)
    took = (time.perf_counter() - s) * 1000
    if r.returncode != 0:
        raise RuntimeError(f"srun failed ({r.returncode}): {r.stdout} {r.stderr}")
    if program != "true":
        check_output(r.stdout, "srun outside")
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--binary", default="target/release/rudel")
    ap.add_argument("--loopback", action="store_true")
    ap.add_argument("--launch", choices=["mpirun", "srun", "srun-outside"], default="mpirun",
                    help="start the ranks with mpirun (daemons through srun) or with srun directly (PMI-1), "
                         "in a batch script or (srun-outside) from here, outside any job")
    ap.add_argument("--program", choices=["hello", "true"], default="hello",
                    help="with --launch srun-outside: the MPI program, or `true` (bare launch)")
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    if not a.loopback and os.geteuid() != 0:
        sys.exit("network-namespace hosts need root (or use --loopback)")
    if not a.loopback and (binary + "/").startswith("/tmp/"):
        sys.exit(f"{binary} is under /tmp, which each host hides behind its own tmpfs: copy it elsewhere")
    # Outside /tmp: the agents' hosts have a private /tmp.
    shared = tempfile.mkdtemp(prefix="rudel-mpibench-", dir="/var/tmp")
    os.chmod(shared, 0o755)
    hosts = None
    try:
        hello = os.path.join(shared, "hello")
        with open(hello + ".c", "w") as f:
            f.write(HELLO)
        sh("mpicc.openmpi", "-o", hello, hello + ".c")
        print(f"load average: {os.getloadavg()}")
        base = local_true_run if a.program == "true" else (lambda: baseline_run(hello, shared))
        base()  # warm-up
        local = [base() for _ in range(a.runs)]
        hosts = Hosts(binary, shared, a.loopback)
        hosts.start()
        hosts.rudel("slurm", "install", os.path.join(shared, "bin"))
        if a.launch == "srun-outside":
            one = lambda n: outside_run(hosts, shared, a.loopback, a.program)  # noqa: E731
        else:
            one = lambda n: rudel_run(hosts, shared, n, a.loopback, a.launch)  # noqa: E731
        one(0)  # warm-up
        runs = [one(n) for n in range(1, a.runs + 1)]
        print(f"load average: {os.getloadavg()}")
    except BaseException:
        # The daemons' logs go with the directory: show their ends first.
        for name in sorted(os.listdir(shared)):
            if name.endswith(".log"):
                lines = open(os.path.join(shared, name), errors="replace").read().splitlines()
                print(f"===== {name} =====", *lines[-15:], sep="\n", file=sys.stderr)
        raise
    finally:
        if hosts:
            hosts.close()
        shutil.rmtree(shared, ignore_errors=True)
    where = "3 agents on loopback" if a.loopback else "3 network-namespace hosts"
    mr, ml = statistics.median(runs), statistics.median(local)
    what = f"srun start -> exit, {a.program}" if a.launch == "srun-outside" else "submit -> completed"
    print(f"rudel ({where}, {a.launch}, {what}) median {mr:.0f} ms (runs: {', '.join(f'{x:.0f}' for x in runs)})")
    baseline = "local xargs -P 3 true" if a.program == "true" else "local mpirun -np 3"
    print(f"{baseline} median {ml:.1f} ms (runs: {', '.join(f'{x:.1f}' for x in local)})")
    print(f"ratio rudel/local: {mr / ml:.2f}")


if __name__ == "__main__":
    main()
