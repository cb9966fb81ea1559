#!/usr/bin/env python3
"""rudel throughput benchmark: N trivial tasks on `rudel up` vs `xargs -P <cpus>`.

Both run in the same invocation, alternating, so the ratio survives a noisy machine.
Prints the wall times of every run, the medians, and as its last line
`ratio rudel/xargs: X.XX` (median over median).

Usage: bench/throughput.py [--tasks 10000] [--runs 3] [--cpus 2] [--output none|files]
                           [--latency 50] [--memory 100000] [--binary target/release/rudel]
                           [--as-user NAME]

--as-user NAME (run as root): the timed arrays are submitted by that Unix user, so a root
agent starts every task as NAME (the issue 12 comparison: within 10% of root's ratio).
"""
import argparse
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, binary, cpus, up_args=()):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="rudel-bench-")
        self.addr = f"127.0.0.1:{free_port()}"
        self.env = dict(os.environ, RUDEL_HEAD=self.addr,
                        RUDEL_CREDENTIALS=os.path.join(self.dir, "data", "head", "client"))
        self.log = open(os.path.join(self.dir, "up.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "up", "--data", os.path.join(self.dir, "data"), "--listen", self.addr, "--cpus", str(cpus),
             *up_args],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + 30
        while time.time() < deadline:
            r = subprocess.run([binary, "nodes", "--json"], env=self.env, capture_output=True, text=True)
            if r.returncode == 0 and '"idle"' in r.stdout:
                return
            time.sleep(0.1)
        self.stop()
        sys.exit(f"rudel up did not become ready; see {self.dir}/up.log")

    def become(self, name):
        """Later `rudel` calls run as user `name` through the head's Unix socket, which
        identifies them by their uid (admin credentials would make the jobs root's)."""
        pw = pwd.getpwnam(name)
        os.chmod(self.dir, 0o711)
        self.env = dict(self.env, USER=name, HOME=self.dir)
        self.env.pop("RUDEL_CREDENTIALS", None)

        def drop():
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
        self.preexec = drop

    preexec = None

    def rudel(self, *args, check=True):
        r = subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True, cwd=self.dir,
                           preexec_fn=self.preexec)
        if check and r.returncode != 0:
            sys.exit(f"rudel {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r.stdout

    def head_rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_rudel(c, n, output):
    t0 = time.perf_counter()
    out = c.rudel("submit", "--json", "--array", f"1-{n}", "--output", output, "--", "/bin/true")
    job = out.split('"id":')[1].split(",")[0].strip()
    c.rudel("wait", "--quiet", job)
    return time.perf_counter() - t0


def run_xargs(n, cpus):
    t0 = time.perf_counter()
    subprocess.run(f"seq {n} | xargs -P {cpus} -I{{}} /bin/true", shell=True, check=True)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--output", default="none", help="'none' (discard) or a pattern such as out/%%j_%%a.out")
    ap.add_argument("--latency", type=int, default=50, help="separate submits to time (0 = skip)")
    ap.add_argument("--memory", type=int, default=100000, help="pending tasks for the memory check (0 = skip)")
    ap.add_argument("--as-user", default=None, help="submit the timed arrays as this Unix user (run as root)")
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "rudel"))
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} not found: run `cargo build --release` first")

    c = Cluster(binary, a.cpus)
    try:
        if a.latency:
            lat = []
            for _ in range(a.latency):
                t0 = time.perf_counter()
                c.rudel("submit", "--output", "none", "--", "/bin/true")
                lat.append((time.perf_counter() - t0) * 1000)
            print(f"submit latency (whole `rudel submit` process, {a.latency} runs): "
                  f"median {statistics.median(lat):.1f} ms, min {min(lat):.1f} ms, max {max(lat):.1f} ms")
            # Round trip of one trivial task through `rudel run`.
            rt = []
            for _ in range(min(a.latency, 20)):
                t0 = time.perf_counter()
                c.rudel("run", "--", "/bin/true")
                rt.append((time.perf_counter() - t0) * 1000)
            print(f"`rudel run -- /bin/true` round trip ({len(rt)} runs): median {statistics.median(rt):.1f} ms")
        if a.as_user:
            c.become(a.as_user)
            print(f"submitting as {a.as_user}")
        rudel_t, xargs_t = [], []
        for i in range(a.runs):
            xargs_t.append(run_xargs(a.tasks, a.cpus))
            rudel_t.append(run_rudel(c, a.tasks, a.output))
            print(f"run {i + 1}: rudel {rudel_t[-1]:.2f} s ({a.tasks / rudel_t[-1]:.0f}/s), "
                  f"xargs -P{a.cpus} {xargs_t[-1]:.2f} s ({a.tasks / xargs_t[-1]:.0f}/s)")
        if a.memory:
            c.rudel("submit", "--array", f"1-{a.memory}", "--output", "none", "--cpus", str(a.cpus),
                    "--priority", "-1000", "--", "/bin/sleep", "1000")
            # Block the queue behind a long task so the array stays pending.
            time.sleep(1.0)
            print(f"head+agent RSS with {a.memory} pending tasks: {c.head_rss_mb():.1f} MB")
        rm, xm = statistics.median(rudel_t), statistics.median(xargs_t)
        print(f"median: rudel {rm:.2f} s ({a.tasks / rm:.0f}/s), xargs {xm:.2f} s ({a.tasks / xm:.0f}/s)")
        print(f"ratio rudel/xargs: {rm / xm:.2f}")
    finally:
        c.stop()


if __name__ == "__main__":
    main()
