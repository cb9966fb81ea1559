#!/usr/bin/env python3
"""Differential tests against Slurm: runs the batch scripts of this corpus under an
`sbatch` (the real Slurm's, or rudel's link) and writes what happened, normalized, as
one JSON file per script.

  record:  python3 record.py --bin /usr/bin --out expected/          (real Slurm; SLURM_CONF set)
  check:   python3 record.py --bin DIR_OF_RUDEL_LINKS --out ACTUAL/ --jobs 8
           (crates/rudel/tests/slurm_corpus.rs does this and compares ACTUAL with expected/)

Ground truth per script: sbatch's exit code, refused or not, the shape of its stdout and
stderr; the state, exit code and time limit of every job (and array task) from
`scontrol show job`; the files the job left in its submit directory (names and contents);
the environment each task dumped into `env-$SLURM_JOB_ID.env`.

Normalized, because they legitimately differ between two clusters: job ids (`<J1>` is
the first job a script submitted, `<J1_3>` the job id of its array task 3 — Slurm gives
an array task its own id when it starts, rudel when it is submitted), host names
(`<HOST>`), the submit directory (`<DIR>`), pids, uids, the site's Slurm configuration.
Kept exact: array indices, counts, min/max/step, names, cpus, memory, states, exit codes.

Driver lines in a script (comments, so Slurm and rudel skip them):
  # corpus-args: ARGS          sbatch options before the script (shell words)
  # corpus-args-after: ARGS    arguments after the script
  # corpus-env: K=V ...        variables of the submitting shell
  # corpus-mkdir: DIR          a directory made in the submit dir first
  # corpus-file: NAME=TEXT     a file written in the submit dir first
  # corpus-mode: wrap|stdin    submit the args alone (--wrap) / the script on stdin
  # corpus-repeat: N           submit the script N times
  # corpus-then: FILE ARGS     then submit FILE with ARGS ({J1} = the first job's id)
  # corpus-part-of: FILE       only submitted by FILE's driver lines
"""
import argparse
import concurrent.futures
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
# How long one script may take, submit to last file (13-signal-checkpoint needs ~60 s on Slurm).
CASE_TIMEOUT = 150
# Keys of the task environment that name the host.
HOST_KEYS = {"SLURMD_NODENAME", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_SUBMIT_HOST",
             "SLURM_TOPOLOGY_ADDR", "HOSTNAME", "SLURM_STEP_NODELIST"}
# The site's Slurm configuration: differs by installation, not by job.
SITE_KEYS = {"SLURM_CONF", "SLURM_CLUSTER_NAME", "SLURM_WORKING_CLUSTER"}
PLACEHOLDER_KEYS = {"SLURM_TASK_PID": "<PID>", "SLURM_JOB_UID": "<UID>", "SLURM_JOB_GID": "<GID>",
                    "SLURM_JOB_USER": "<USER>"}
# Non-Slurm variables whose presence (not value) is recorded: what --export lets through.
PRESENCE_KEYS = {"HOME", "PATH", "USER", "SHELL", "LANG", "TERM"}


def meta(text):
    out = {}
    for line in text.splitlines():
        m = re.match(r"^# corpus-([a-z-]+):\s*(.*?)\s*$", line.rstrip("\r"))
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def one(m, key, default=None):
    return m[key][0] if key in m else default


def run(cmd, cwd, env, stdin=None, timeout=30):
    p = subprocess.run(cmd, cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def parse_records(text):
    """`scontrol show job` output: one dict per record."""
    recs = []
    for block in re.split(r"\n\s*\n", text.strip()):
        rec = {}
        for tok in block.split():
            if "=" in tok:
                k, v = tok.split("=", 1)
                rec.setdefault(k, v)
        if "JobId" in rec:
            recs.append(rec)
    return recs


def expand(spec):
    """Array indices of `1-7:2%2`, `0,3-4`."""
    spec = spec.split("%")[0]
    out = []
    for part in spec.split(","):
        m = re.match(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$", part)
        if not m:
            continue
        a = int(m.group(1))
        b = int(m.group(2) or a)
        step = int(m.group(3) or 1)
        out.extend(range(a, b + 1, step))
    return out


def wait_jobs(bin_dir, ids, cwd, env, deadline):
    """Polls `scontrol show job` until every job and array task is final; returns
    {(job_index, array_index or None): record}."""
    scontrol = os.path.join(bin_dir, "scontrol")
    final = {}
    pending = {(n, None) for n in range(len(ids))}
    while pending and time.time() < deadline:
        for key in sorted(pending, key=str):
            n, idx = key
            jid = ids[n] if idx is None else "%s_%d" % (ids[n], idx)
            rc, out, _ = run([scontrol, "show", "job", jid], cwd, env)
            if rc != 0:
                continue  # not known (yet, or purged: then it was seen final)
            for r in parse_records(out):
                task = r.get("ArrayTaskId")
                if task is None:
                    if r.get("JobState") in TERMINAL:
                        final[(n, None)] = r
                        pending.discard((n, None))
                    continue
                if task.isdigit():
                    k = (n, int(task))
                    pending.discard((n, None))
                    if r.get("JobState") in TERMINAL:
                        final[k] = r
                        pending.discard(k)
                    elif k not in final:
                        pending.add(k)
                else:
                    pending.discard((n, None))
                    for i in expand(task):
                        if (n, i) not in final:
                            pending.add((n, i))
        time.sleep(0.2)
    return final, sorted(pending, key=str)


class Norm:
    """Replaces what legitimately differs between clusters by placeholders."""

    def __init__(self, workdir, ids):
        self.dir = workdir
        self.ids = {str(j): "<J%d>" % (n + 1) for n, j in enumerate(ids)}
        self.tasks = {}  # task job id -> <Jn_a>
        self.hosts = set()

    def learn(self, env):
        arr, task, jid = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID"), env.get("SLURM_JOB_ID")
        if arr in self.ids and task is not None and jid:
            self.tasks[jid] = "%s_%s>" % (self.ids[arr][:-1], task)
        for k in ("SLURMD_NODENAME", "SLURM_SUBMIT_HOST"):
            if env.get(k):
                self.hosts.add(env[k])

    def text(self, s, prefer_jobs=False):
        s = s.replace(self.dir, "<DIR>")

        # `A_a` (%A_%a) names the array; a lone task id names the task (Slurm reuses the
        # array's id for one of its tasks, so a lone number prefers the task).
        def pair(m):
            a, i = m.group(1), m.group(2)
            return (self.ids[a] + "_" + i) if a in self.ids else m.group(0)

        s = re.sub(r"(?<!\d)(\d+)_(\d+)(?!\d)", pair, s)

        def lone(m):
            n = m.group(0)
            if prefer_jobs:
                return self.ids.get(n) or self.tasks.get(n) or n
            return self.tasks.get(n) or self.ids.get(n) or n

        s = re.sub(r"(?<![\d<_])\d+(?![\d>])", lone, s)
        return s

    def env(self, env):
        out = {}
        for k, v in sorted(env.items()):
            if k in PRESENCE_KEYS:
                out[k] = "<present>"
            elif not (k.startswith("SLURM") or k.startswith("CORPUS_") or k == "ENVIRONMENT"):
                continue
            elif k in SITE_KEYS:
                out[k] = "<SITE>"
            elif k in PLACEHOLDER_KEYS:
                out[k] = PLACEHOLDER_KEYS[k]
            elif k in HOST_KEYS:
                out[k] = "<HOST>"
            elif k in ("SLURM_JOB_ID", "SLURM_JOBID") and v in self.tasks:
                out[k] = self.tasks[v]
            elif k in ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_ARRAY_JOB_ID") and v in self.ids:
                out[k] = self.ids[v]
            else:
                out[k] = self.text(v)
        return out


def read_env(path):
    env = {}
    with open(path, errors="replace") as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
                    env[k] = v
    return env


def stderr_kinds(err):
    kinds = set()
    for line in err.splitlines():
        if not line.strip():
            continue
        if re.match(r"^sbatch: error:", line):
            kinds.add("error")
        elif re.match(r"^sbatch: warning:", line, re.I):
            kinds.add("warning")
        else:
            kinds.add("other")
    return sorted(kinds)


def stdout_shape(out, norm):
    # sbatch prints the job's own id (an array's, not one of its tasks').
    return norm.text(out.strip(), prefer_jobs=True)


def job_id_of(out):
    m = re.search(r"Submitted batch job (\d+)", out) or re.match(r"^(\d+)(;\S*)?\s*$", out.strip())
    return m.group(1) if m else None


def run_case(name, bin_dir, base_env, root):
    path = os.path.join(HERE, name)
    with open(path, newline="") as f:
        text = f.read()
    m = meta(text)
    work = os.path.join(root, name[:-3])
    os.makedirs(work)
    for d in m.get("mkdir", []):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    for spec in m.get("file", []):
        fname, content = spec.split("=", 1)
        with open(os.path.join(work, fname), "w") as f:
            f.write(content + "\n")
    env = dict(base_env)
    for spec in m.get("env", []):
        for kv in shlex.split(spec):
            k, v = kv.split("=", 1)
            env[k] = v
    submissions = []  # (script file or None, args before, args after, stdin)
    mode = one(m, "mode")
    args = shlex.split(one(m, "args", ""))
    after = shlex.split(one(m, "args-after", ""))
    for _ in range(int(one(m, "repeat", "1"))):
        if mode == "wrap":
            submissions.append((None, args, [], None))
        elif mode == "stdin":
            submissions.append((None, args, [], text))
        else:
            submissions.append((name, args, after, None))
    scripts = {name}
    for then in m.get("then", []):
        words = shlex.split(then)
        scripts.add(words[0])
        submissions.append((words[0], words[1:], [], None))
    for s in scripts:
        shutil.copyfile(os.path.join(HERE, s), os.path.join(work, s))
    sbatch = os.path.join(bin_dir, "sbatch")
    deadline = time.time() + CASE_TIMEOUT
    ids, subs = [], []
    for script, before, after_args, stdin in submissions:
        before = [a.replace("{J1}", ids[0] if ids else "") for a in before]
        cmd = [sbatch] + before + ([script] + after_args if script else [])
        rc, out, err = run(cmd, work, env, stdin=stdin)
        jid = job_id_of(out) if rc == 0 else None
        if jid:
            ids.append(jid)
        subs.append((rc, out, err))
    final, unfinished = wait_jobs(bin_dir, ids, work, env, deadline)
    time.sleep(0.5)  # output written by the last task's exit settles
    norm = Norm(work, ids)
    envs = {}
    for f in sorted(os.listdir(work)):
        if f.endswith(".env"):
            e = read_env(os.path.join(work, f))
            norm.learn(e)
            envs[f] = e
    result = {"script": name, "submissions": [], "jobs": {}, "files": {}, "env": {}}
    for rc, out, err in subs:
        result["submissions"].append({
            "exit": rc,
            "refused": rc != 0,
            "stdout": stdout_shape(out, norm),
            "stderr_kinds": stderr_kinds(err),
            "_stderr": norm.text(err.strip()),
        })
    for (n, idx), r in sorted(final.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1])):
        key = "<J%d>" % (n + 1) if idx is None else "<J%d>_%d" % (n + 1, idx)
        result["jobs"][key] = {
            "state": r.get("JobState"),
            "exit_code": r.get("ExitCode"),
            "time_limit": r.get("TimeLimit"),
            "name": r.get("JobName"),
        }
    for (n, idx) in unfinished:
        key = "<J%d>" % (n + 1) if idx is None else "<J%d>_%d" % (n + 1, idx)
        result["jobs"][key] = {"state": "<NOT FINISHED WITHIN %d s>" % CASE_TIMEOUT}
    for dirpath, _, files in os.walk(work):
        for f in sorted(files):
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, work)
            if rel in scripts:
                continue
            shown = norm.text(rel)
            if f.endswith(".env"):
                result["env"][shown] = norm.env(envs.get(rel) or read_env(full))
            elif f.endswith(".t"):
                with open(full) as fh:
                    result["files"][shown] = "<TIME>"
            else:
                with open(full, errors="replace") as fh:
                    result["files"][shown] = norm.text(fh.read())
    order = throttle_check(work)
    if order is not None:
        result["max_concurrent"] = order
    return result


def throttle_check(work):
    """For scripts that record start/end times (`start-N.t`, `end-N.t`): the most tasks
    that ran at the same time."""
    starts = [f for f in os.listdir(work) if re.match(r"^start-\d+\.t$", f)]
    if not starts:
        return None
    spans = []
    for f in starts:
        i = f[len("start-"):-2]
        try:
            with open(os.path.join(work, f)) as a, open(os.path.join(work, "end-%s.t" % i)) as b:
                spans.append((int(a.read()), int(b.read())))
        except (OSError, ValueError):
            return -1
    return max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)


def cases(only):
    names = sorted(f for f in os.listdir(HERE) if re.match(r"^\d\d-.*\.sh$", f))
    out = []
    for n in names:
        with open(os.path.join(HERE, n), newline="") as f:
            if "part-of" in meta(f.read()):
                continue
        if only and not any(o in n for o in only):
            continue
        out.append(n)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="directory holding sbatch and scontrol")
    ap.add_argument("--out", required=True, help="directory for the NN-what.json results")
    ap.add_argument("--jobs", type=int, default=1, help="scripts run at the same time")
    ap.add_argument("--keep", action="store_true", help="keep the submit directories")
    ap.add_argument("only", nargs="*", help="run only scripts whose name contains one of these")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("SBATCH_") or k.startswith("CORPUS_")
                   or (k.startswith("SLURM_") and k != "SLURM_CONF"))}
    root = tempfile.mkdtemp(prefix="slurm-corpus-")
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.jobs) as ex:
        futs = {ex.submit(run_case, n, a.bin, env, root): n for n in cases(a.only)}
        for fut in concurrent.futures.as_completed(futs):
            n = futs[fut]
            try:
                res = fut.result()
            except Exception as e:  # a broken case is reported, the others still run
                failed += 1
                res = {"script": n, "driver_error": repr(e)}
            with open(os.path.join(a.out, n[:-3] + ".json"), "w") as f:
                json.dump(res, f, indent=1, sort_keys=True)
                f.write("\n")
            print("done", n, file=sys.stderr)
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print("submit dirs kept in", root, file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
