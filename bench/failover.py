#!/usr/bin/env python3
"""High-availability head group benchmark in network namespaces (needs root and iproute2).

Builds four hosts as network namespaces on a bridge (10.215.0.0/24, addresses owned by
this script only): hosts 0-2 run heads, host 3 runs one agent (2 cpus). It measures:
  1. replication cost: N `/bin/true` tasks as one array, timed from submit until
     `rudel wait` returns, on (i) a fresh 1-head cluster and (ii) a 3-head group, each
     against `seq N | xargs -P 2 /bin/true` in the same runs (medians; prints
     `ratio 3-head/1-head: X.XX`, target <= 1.3);
  2. failover with the default head settings: while a steady stream of sequential
     `rudel submit` runs, the leader head is killed with SIGKILL, and per round we measure
       (a) kill -> the first submit started after the kill succeeds (a new leader accepts),
       (b) kill -> that job is seen completed, i.e. the agent got it from the new leader and
           reported back (the head shows a task "running" as soon as it assigns it, even to
           an agent that has not reconnected yet, so "running" is printed only as info),
       (c) successful submits/s in the 3 s before the kill and in the 3 s after (a).
     The killed head is restarted (same data dir, no --join) before the next round.
     Medians of (a) and (b) are the numbers to compare with the target (<= 3 s).
The CLI runs in the root namespace with RUDEL_HEAD listing all three heads.
Everything it creates (namespaces, bridge, veths, processes, temp dir) is removed at
the end, also on failure or Ctrl-C.

Usage: sudo python3 bench/failover.py [--rounds 5] [--tasks 5000] [--runs 3]
                                      [--binary target/release/rudel] [--keep-logs DIR]
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PREFIX = f"rdf{os.getpid() % 100000}"
NET = "10.215.0"
PORT = 7117          # the 3-head group
PORT_SINGLE = 7118   # the 1-head cluster
CPUS = 2             # cpus of the agent on host 3
AGENT_HOST = 3
CALL_TIMEOUT = 60    # every CLI call
now = time.monotonic


def sh(*args, check=True, timeout=CALL_TIMEOUT):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r


def tail(path, lines=25):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"({e})\n"


class Net:
    def __init__(self, hosts, tmp):
        self.hosts = hosts
        self.tmp = tmp
        self.bridge = f"{PREFIX}br"
        self.daemons = []   # dicts: name, proc, argv, log (path), data
        self.created = 0
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self):
        hosts = self.hosts
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{NET}.254/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i in range(hosts):
            ns, peer = self.ns(i), f"{PREFIX}p{i}"
            sh("ip", "netns", "add", ns)
            self.created = i + 1
            sh("ip", "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", peer, "master", self.bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.ip(i)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def ns(self, i):
        return f"{PREFIX}h{i}"

    def ip(self, i):
        return f"{NET}.{i + 1}"

    def spawn(self, i, name, argv, data):
        """Start a daemon in namespace i; its output goes to TMP/logs/NAME.log (appended)."""
        path = os.path.join(self.tmp, "logs", f"{name}.log")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        log = open(path, "a")
        log.write(f"==== {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n")
        log.flush()
        # Own session: a Ctrl-C reaches only this script, which then stops the daemons itself.
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(i), *argv], stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        d = dict(name=name, proc=p, argv=argv, log=path, data=data, host=i)
        self.daemons.append(d)
        return d

    @staticmethod
    def rudel_pid(d):
        """The pid of the rudel process itself (`ip netns exec` execs it, but check, and
        fall back to its children or to any process whose command line has its data dir)."""
        def is_it(pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                return False
            return (os.path.basename(args[0]).startswith(b"rudel")
                    and d["data"].encode() in args)
        p = d["proc"]
        if is_it(p.pid):
            return p.pid
        for pid in sh("pgrep", "-P", str(p.pid), check=False).stdout.split():
            if is_it(pid):
                return int(pid)
        for pid in os.listdir("/proc"):
            if pid.isdigit() and is_it(pid):
                return int(pid)
        return None

    def kill9(self, d):
        pid = self.rudel_pid(d)
        if pid is None:
            raise RuntimeError(f"no rudel process found for {d['name']} (exit code {d['proc'].poll()})")
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self, d, grace=10):
        p = d["proc"]
        if p.poll() is None:
            pid = self.rudel_pid(d)
            try:
                os.kill(pid if pid else p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                pid = self.rudel_pid(d)
                for q in {pid, p.pid} - {None}:
                    try:
                        os.kill(q, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                p.wait(10)

    def close(self):
        for d in self.daemons:
            if d["proc"].poll() is None:
                try:
                    d["proc"].terminate()
                except ProcessLookupError:
                    pass
        deadline = time.time() + 15
        for d in self.daemons:
            try:
                d["proc"].wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                d["proc"].kill()
                try:
                    d["proc"].wait(10)
                except subprocess.TimeoutExpired:
                    pass
        for i in range(self.created):
            pids = sh("ip", "netns", "pids", self.ns(i), check=False).stdout.split()
            for pid in pids:
                sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "del", self.ns(i), check=False)
            sh("ip", "link", "del", f"{PREFIX}p{i}", check=False)
        sh("ip", "link", "del", self.bridge, check=False)


class Rudel:
    """The CLI (root namespace) against one cluster."""

    def __init__(self, binary, heads, creds, cwd):
        self.binary = binary
        self.cwd = cwd
        self.env = dict(os.environ, RUDEL_HEAD=",".join(heads), RUDEL_CREDENTIALS=creds)
        self.env.pop("RUDEL_TOKEN", None)

    def run(self, *args, timeout=CALL_TIMEOUT):
        try:
            r = subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True,
                               cwd=self.cwd, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"rudel {' '.join(args)}: no answer within {timeout} s")
        if r.returncode != 0:
            raise RuntimeError(f"rudel {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
        return r.stdout

    def json(self, *args, timeout=CALL_TIMEOUT):
        return json.loads(self.run(*args, timeout=timeout))


def wait_for(what, fn, timeout=60, interval=0.2):
    """Call fn until it returns a true value; RuntimeError errors count as not yet."""
    deadline = now() + timeout
    last = None
    while now() < deadline:
        try:
            v = fn()
            if v:
                return v
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            last = e
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}" + (f" (last error: {last})" if last else ""))


def wait_file(path, timeout=30):
    wait_for(f"{path}", lambda: os.path.exists(path) and os.path.getsize(path) > 0, timeout, 0.1)


def wait_agent(cli, name):
    wait_for(f"agent {name} idle",
             lambda: any(n["name"] == name and n["state"] == "idle" for n in cli.json("nodes", "--json")))


def heads_info(cli):
    return cli.json("admin", "heads", "--json")


def wait_group(cli, addrs, timeout=60):
    """3 voters, one leader, every head answering with the same leader/term and log index."""
    def ready():
        h = heads_info(cli)
        voters = [x for x in h["heads"] if x["role"] == "voter"]
        if len(voters) != len(addrs) or not any(x["leader"] for x in h["heads"]):
            return None
        st = [json.loads(cli.run("status", "--json", "--head", a, timeout=10)) for a in addrs]
        if len({(s["leader"], s["term"]) for s in st}) != 1 or len({s["last_applied"] for s in st}) != 1:
            return None
        return h
    return wait_for(f"{len(addrs)} voters with a leader, all heads caught up", ready, timeout, 0.3)


def leader_addr(h):
    for x in h["heads"]:
        if x["leader"]:
            return x["addr"]
    return None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec=".2f", unit=" s"):
    return "n/a" if x is None else f"{x:{spec}}{unit}"


class Stream(threading.Thread):
    """Sequential submits as fast as possible; records (start, end, ok, job id)."""

    def __init__(self, cli, tag):
        super().__init__(daemon=True)
        self.cli = cli
        self.tag = tag
        self.stop_ev = threading.Event()
        self.records = []
        self.lock = threading.Lock()
        self.proc = None

    def run(self):
        n = 0
        while not self.stop_ev.is_set():
            n += 1
            t0 = now()
            job, ok = None, False
            try:
                self.proc = subprocess.Popen(
                    [self.cli.binary, "submit", "--json", "--output", "none", "--request-id",
                     f"{self.tag}-{n}", "--", "/bin/true"],
                    env=self.cli.env, cwd=self.cli.cwd, stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
                out, _ = self.proc.communicate(timeout=30)
                if self.proc.returncode == 0:
                    job, ok = json.loads(out)["id"], True
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            except (ValueError, KeyError, OSError):
                pass
            with self.lock:
                self.records.append((t0, now(), ok, job))

    def snapshot(self):
        with self.lock:
            return list(self.records)

    def halt(self):
        self.stop_ev.set()
        p = self.proc
        self.join(35)
        if self.is_alive() and p and p.poll() is None:
            p.kill()
            self.join(5)


def array_runs(cli, label, tasks, runs):
    """(rudel times, xargs times), alternating xargs and rudel in each run."""
    rt, xt = [], []
    for run in range(runs):
        t0 = now()
        subprocess.run(f"seq {tasks} | xargs -P {CPUS} -I{{}} /bin/true", shell=True, check=True,
                       timeout=600)
        xt.append(now() - t0)
        t0 = now()
        job = cli.json("submit", "--json", "--array", f"1-{tasks}", "--output", "none", "--", "/bin/true")["id"]
        cli.run("wait", "--quiet", str(job), timeout=max(600, tasks // 10))
        rt.append(now() - t0)
        print(f"  {label} run {run + 1}: rudel {rt[-1]:.2f} s ({tasks / rt[-1]:.0f} tasks/s), "
              f"xargs -P{CPUS} {xt[-1]:.2f} s", flush=True)
    return rt, xt


def scan_logs(tmp):
    """Count warning/error/panic lines per daemon log; show a few distinct ones."""
    out = []
    d = os.path.join(tmp, "logs")
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        bad = []
        with open(os.path.join(d, name), errors="replace") as f:
            for line in f:
                low = line.lower()
                if "panic" in low or " error" in low or " warn" in low or "error:" in low:
                    bad.append(line.rstrip())
        if bad:
            out.append(f"  {name}: {len(bad)} warn/error lines, e.g.:")
            seen = set()
            for line in bad:
                key = line.split(" ", 1)[-1][:200]
                # strip a leading timestamp for de-duplication
                key = " ".join(w for w in key.split() if not w[:1].isdigit())[:160]
                if key in seen:
                    continue
                seen.add(key)
                out.append(f"    {line[:300]}")
                if len(seen) >= 6:
                    break
        else:
            out.append(f"  {name}: no warn/error lines")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="failover rounds")
    ap.add_argument("--tasks", type=int, default=5000, help="array size for the replication-cost runs")
    ap.add_argument("--runs", type=int, default=3, help="replication-cost runs per cluster")
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                     "..", "target", "release", "rudel"))
    ap.add_argument("--keep-logs", metavar="DIR", help="copy the daemon logs to DIR before cleaning up")
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    if os.geteuid() != 0 or not shutil.which("ip"):
        sys.exit("needs root and iproute2 (ip netns): sudo python3 bench/failover.py")
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary}: not found or not executable (cargo build --release)")
    routes = sh("ip", "-4", "route", "show").stdout
    if f"{NET}." in routes:
        sys.exit(f"{NET}.0/24 is already in use on this machine:\n{routes}")

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    tmp = tempfile.mkdtemp(prefix="rudel-failover-bench-")
    net = None
    stream = None
    failed = False
    try:
        net = Net(4, tmp)
        print(f"namespaces {net.ns(0)}..{net.ns(3)} on {NET}.0/24, temp dir {tmp}", flush=True)

        # ---- 2(i): replication cost on a fresh 1-head cluster ----
        print(f"\n== replication cost: {a.tasks} x /bin/true as one array, {a.runs} runs ==", flush=True)
        single = f"{net.ip(0)}:{PORT_SINGLE}"
        d1 = f"{tmp}/single-head"
        h1 = net.spawn(0, "single-head", [binary, "head", "--data", d1, "--listen", single], d1)
        wait_file(f"{d1}/join-token")
        wait_file(f"{d1}/client/key.pem")
        cli1 = Rudel(binary, [single], f"{d1}/client", tmp)
        wait_for("the 1-head cluster answering", lambda: cli1.json("status", "--json"))
        token = open(f"{d1}/join-token").read().strip()
        ag1 = net.spawn(AGENT_HOST, "single-agent",
                        [binary, "agent", "--head", single, "--data", f"{tmp}/single-agent", "--name",
                         f"host{AGENT_HOST}", "--cpus", str(CPUS), "--allow-root-jobs", "--token", token], f"{tmp}/single-agent")
        wait_agent(cli1, f"host{AGENT_HOST}")
        rt1, xt1 = array_runs(cli1, "1-head", a.tasks, a.runs)
        net.stop(ag1)
        net.stop(h1)

        # ---- the 3-head group ----
        addrs = [f"{net.ip(i)}:{PORT}" for i in range(3)]
        data = [f"{tmp}/head{i}" for i in range(3)]
        heads = [None] * 3
        head_argv = [[binary, "head", "--data", data[i], "--listen", addrs[i]] for i in range(3)]
        heads[0] = net.spawn(0, "head0", head_argv[0], data[0])
        wait_file(f"{data[0]}/join-token")
        wait_file(f"{data[0]}/client/key.pem")
        cli = Rudel(binary, addrs, f"{data[0]}/client", tmp)
        wait_for("head0 answering", lambda: cli.json("status", "--json", "--head", addrs[0], timeout=10))
        for i in (1, 2):
            htoken = cli.run("token", "create", "--role", "head").strip()
            heads[i] = net.spawn(i, f"head{i}", head_argv[i] + ["--join", addrs[0], "--token", htoken], data[i])
            wait_for(f"head{i} a voter",
                     lambda: sum(x["role"] == "voter" for x in heads_info(cli)["heads"]) == i + 1, 60, 0.3)
        h = wait_group(cli, addrs)
        print(f"3-head group up: leader {leader_addr(h)}, term {h['term']}", flush=True)
        token = open(f"{data[0]}/join-token").read().strip()
        net.spawn(AGENT_HOST, "agent",
                  [binary, "agent", "--head", ",".join(addrs), "--data", f"{tmp}/agent", "--name",
                   f"host{AGENT_HOST}", "--cpus", str(CPUS), "--allow-root-jobs", "--token", token], f"{tmp}/agent")
        wait_agent(cli, f"host{AGENT_HOST}")

        # ---- 2(ii): replication cost on the 3-head group ----
        rt3, xt3 = array_runs(cli, "3-head", a.tasks, a.runs)

        # ---- 1: failover rounds ----
        print(f"\n== failover: kill -9 the leader during a submit stream, {a.rounds} rounds "
              f"(default head settings) ==", flush=True)
        res = []
        for rnd in range(1, a.rounds + 1):
            h = wait_group(cli, addrs)
            wait_agent(cli, f"host{AGENT_HOST}")
            victim_addr = leader_addr(h)
            victim = addrs.index(victim_addr)
            stream = Stream(cli, f"{PREFIX}-r{rnd}")
            stream.start()
            wait_for("the first successful submit of the stream",
                     lambda: any(r[2] for r in stream.snapshot()), 30, 0.02)
            time.sleep(3)
            # the leader may have changed meanwhile (unlikely): ask again right before the kill
            victim_addr = leader_addr(heads_info(cli))
            victim = addrs.index(victim_addr)
            pid = net.kill9(heads[victim])
            t_kill = now()
            try:
                heads[victim]["proc"].wait(10)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"head{victim} (pid {pid}) did not die on SIGKILL")

            def first_ok():
                for r in stream.snapshot():
                    if r[0] >= t_kill and r[2]:
                        return r
                return None
            first = wait_for("a submit accepted after the kill", first_ok, 60, 0.01)
            t_a = first[1]
            # (b): the head marks a task "running" when it assigns it, even to an agent that
            # is not connected (yet) to the new leader, so only "completed" (the agent ran
            # /bin/true and reported back) proves dispatch works; "running" is shown as info.
            t_b, state_b, t_assigned = None, None, None
            deadline = now() + 60
            while now() < deadline:
                try:
                    v = cli.json("show", str(first[3]), "--json", timeout=15)
                    if v["state"] != "pending" and t_assigned is None:
                        t_assigned = now()
                    if v["state"] not in ("pending", "running"):
                        t_b, state_b = now(), v["state"]
                        break
                except RuntimeError:
                    pass
                time.sleep(0.02)
            while now() < t_a + 3:
                time.sleep(0.05)
            stream.halt()
            recs = stream.records
            stream = None
            before = sum(1 for r in recs if r[2] and t_kill - 3 <= r[1] < t_kill) / 3
            after = sum(1 for r in recs if r[2] and t_a <= r[1] < t_a + 3) / 3
            fails = sum(1 for r in recs if not r[2])
            any_ok = min((r[1] for r in recs if r[2] and r[1] >= t_kill), default=None)
            try:
                nh = heads_info(cli)
                new_leader = leader_addr(nh)
                new_term = nh["term"]
            except RuntimeError:
                new_leader, new_term = "?", "?"
            r = dict(a=t_a - t_kill, b=(t_b - t_kill) if t_b else None, before=before, after=after,
                     fails=fails, any_ok=(any_ok - t_kill) if any_ok else None,
                     assigned=(t_assigned - t_kill) if t_assigned else None)
            res.append(r)
            print(f"round {rnd}: killed leader head{victim} ({victim_addr}, term {h['term']}); "
                  f"(a) new leader accepts submits {fmt(r['a'])} "
                  f"[first success of any submit {fmt(r['any_ok'])}], "
                  f"(b) dispatches again {fmt(r['b'])}"
                  f"{f' (job {first[3]} {state_b}' if state_b else f' (job {first[3]} not finished in 60 s'}"
                  f"; head said running after {fmt(r['assigned'])}); "
                  f"submits/s before {before:.1f}, after {after:.1f}; failed submits {fails} of {len(recs)}; "
                  f"new leader {new_leader} term {new_term}", flush=True)
            # restart the killed head, without --join: it rejoins as a follower
            heads[victim] = net.spawn(victim, f"head{victim}", head_argv[victim], data[victim])
            wait_group(cli, addrs)

        # ---- summary ----
        print("\n== summary ==")
        print(f"failover ({len(res)} rounds, default settings; target (a),(b) <= 3 s median):")
        print(f"  median (a) kill -> new leader accepts submits: {fmt(median([r['a'] for r in res]))}"
              f"  (per round: {', '.join(fmt(r['a'], '.2f', '') for r in res)})")
        print(f"  median (b) kill -> a new job completed on the agent: {fmt(median([r['b'] for r in res]))}"
              f"  (per round: {', '.join(fmt(r['b'], '.2f', '') for r in res)})")
        print(f"  median submit throughput: before kill {fmt(median([r['before'] for r in res]), '.1f', '/s')}, "
              f"3 s after (a) {fmt(median([r['after'] for r in res]), '.1f', '/s')}")
        m1, m3 = statistics.median(rt1), statistics.median(rt3)
        mx1, mx3 = statistics.median(xt1), statistics.median(xt3)
        print(f"replication cost ({a.tasks} x /bin/true as one array, median of {a.runs}; agent with {CPUS} cpus):")
        print(f"  1-head: rudel {m1:.2f} s ({a.tasks / m1:.0f}/s), xargs -P{CPUS} {mx1:.2f} s, "
              f"ratio 1-head/xargs: {m1 / mx1:.2f}")
        print(f"  3-head: rudel {m3:.2f} s ({a.tasks / m3:.0f}/s), xargs -P{CPUS} {mx3:.2f} s, "
              f"ratio 3-head/xargs: {m3 / mx3:.2f}")
        print(f"ratio 3-head/1-head: {m3 / m1:.2f}  (target <= 1.3)")
        print("\ndaemon logs:")
        print("\n".join(scan_logs(tmp)), flush=True)
    except BaseException as e:
        failed = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(f"\nFAILED: {type(e).__name__}: {e}", file=sys.stderr)
        d = os.path.join(tmp, "logs")
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            print(f"---- tail of {name} ----\n{tail(os.path.join(d, name))}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if stream is not None:
            stream.halt()
        if net is not None:
            net.close()
        if a.keep_logs and os.path.isdir(os.path.join(tmp, "logs")):
            shutil.copytree(os.path.join(tmp, "logs"), a.keep_logs, dirs_exist_ok=True)
            print(f"daemon logs copied to {a.keep_logs}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
