//! Test harness: real `rudel` processes on loopback, each cluster in its own temp dir.
//!
//! Every wait in here has a bound; a misbehaving rudel makes a test fail, never hang.
#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const RUDEL: &str = env!("CARGO_BIN_EXE_rudel");

/// Default bound of one CLI call.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a cluster may take to come up.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Options of a test cluster.
#[derive(Clone, Debug)]
pub struct Opts {
    pub cpus: u32,
    pub mem: String,
    pub kill_grace: String,
    pub name: String,
    /// More options for `rudel up`.
    pub up_args: Vec<String>,
    /// Agents started by the harness run root's jobs (`--allow-root-jobs`): the suite runs
    /// as root and submits as root. `rudel up` as root allows them by itself.
    pub root_jobs: bool,
    /// More environment for the daemons (a skewed clock: [`skewed_clock`]).
    pub env: Vec<(String, String)>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            cpus: 2,
            mem: "2G".into(),
            kill_grace: "2s".into(),
            name: "n1".into(),
            up_args: Vec::new(),
            root_jobs: true,
            env: Vec::new(),
        }
    }
}

impl Opts {
    pub fn cpus(mut self, n: u32) -> Opts {
        self.cpus = n;
        self
    }
    pub fn kill_grace(mut self, d: &str) -> Opts {
        self.kill_grace = d.into();
        self
    }
    pub fn name(mut self, n: &str) -> Opts {
        self.name = n.into();
        self
    }
    pub fn up_args(mut self, args: &[&str]) -> Opts {
        self.up_args = args.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// Result of one CLI call.
#[derive(Debug)]
pub struct Out {
    /// Exit code (`None` if killed by a signal or by our timeout).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}{} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            if self.timed_out { " (TIMED OUT, killed)" } else { "" },
            self.elapsed,
            tail(&self.stdout, 40),
            tail(&self.stderr, 40)
        )
    }
}

/// Runs `cmd` to completion within `timeout` (killing it when the bound passes).
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Out {
    let start = Instant::now();
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Out {
                code: None,
                stdout: String::new(),
                stderr: format!("cannot spawn {cmd:?}: {e}"),
                timed_out: false,
                elapsed: start.elapsed(),
            }
        }
    };
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() > timeout => {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("waiting for {cmd:?}: {e}"),
        }
    };
    let elapsed = start.elapsed();
    Out {
        code: status.and_then(|s| s.code()),
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
        timed_out,
        elapsed,
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A long-running rudel process (up, head or agent).
pub struct Daemon {
    pub role: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Exited already? Then its exit code (-1 for a signal).
    pub fn exited(&mut self) -> Option<i32> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.code().unwrap_or(-1)),
            _ => None,
        }
    }

    /// Sends `sig`, then waits up to `grace` for the exit; SIGKILL after that.
    /// Returns the exit status code if it exited by itself within the grace.
    pub fn stop(&mut self, sig: i32, grace: Duration) -> Option<i32> {
        if let Some(c) = self.exited() {
            return Some(c);
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), sig) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(c) = self.exited() {
                return Some(c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Logs that mean "the port was taken under us": retry with another (or the same, later).
fn addr_in_use(log: &str) -> bool {
    log.contains("ddress already in use") || log.contains("os error 98") || log.contains("AddrInUse")
}

/// Logs that mean "the data directory is locked by another process".
pub fn data_dir_locked(log: &str) -> bool {
    log.contains("is in use by another rudel process")
        || log.contains("another rudel agent is using this data directory")
}

/// A cluster of real rudel processes in one temp dir.
pub struct Cluster {
    pub tmp: tempfile::TempDir,
    /// Head address (host:port).
    pub addr: String,
    /// Data directory (`rudel up --data`; `head/` and `agent/` under it for split roles).
    pub data: PathBuf,
    /// The directory CLI commands run in.
    pub work: PathBuf,
    pub opts: Opts,
    pub daemons: Vec<Daemon>,
    /// Starts that found the data directory still locked and were retried.
    pub locked_restarts: usize,
    log_seq: usize,
}

impl Cluster {
    fn empty(opts: Opts) -> Cluster {
        let tmp = tempfile::Builder::new().prefix("rudel-it-").tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Cluster {
            tmp,
            addr: String::new(),
            data,
            work,
            opts,
            daemons: Vec::new(),
            locked_restarts: 0,
            log_seq: 0,
        }
    }

    /// `rudel up` with a local agent; returns once the node is idle.
    pub fn up(opts: Opts) -> Cluster {
        let mut c = Cluster::empty(opts);
        c.start_up(None);
        c
    }

    /// `rudel head` only (no agent yet); returns once the head answers.
    pub fn head_only(opts: Opts) -> Cluster {
        let mut c = Cluster::empty(opts);
        c.start_head(None);
        c
    }

    pub fn spawn_daemon(&mut self, role: &str, args: &[String]) -> Daemon {
        self.log_seq += 1;
        let log = self.tmp.path().join(format!("{role}-{}.log", self.log_seq));
        let f = File::create(&log).unwrap();
        let f2 = f.try_clone().unwrap();
        let child = Command::new(RUDEL)
            .args(args)
            .current_dir(self.tmp.path())
            .env_remove("RUDEL_HEAD")
            .env_remove("RUDEL_DATA")
            .env_remove("RUDEL_CREDENTIALS")
            .env_remove("RUDEL_TOKEN")
            .env("RUDEL_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(f2))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rudel {role}: {e}"));
        Daemon {
            role: role.into(),
            child,
            log,
        }
    }

    /// Starts a daemon on `port` (a fresh one if `None`), retrying while the address is in
    /// use; `ready` says when it is up. Returns the index in `self.daemons`.
    fn start_listening(
        &mut self,
        role: &str,
        fixed_port: Option<u16>,
        args: impl Fn(&str) -> Vec<String>,
        ready: impl Fn(&Cluster) -> bool,
    ) -> usize {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let port = fixed_port.unwrap_or_else(free_port);
            self.addr = format!("127.0.0.1:{port}");
            let d = self.spawn_daemon(role, &args(&self.addr));
            self.daemons.push(d);
            let i = self.daemons.len() - 1;
            loop {
                if let Some(code) = self.daemons[i].exited() {
                    let log = self.daemons[i].log_text();
                    if data_dir_locked(&log) && Instant::now() < deadline {
                        // A restart right after a kill -9: a child of the killed process
                        // may hold the lock until its exec closes it. Retry, as a
                        // supervisor would, and count it.
                        self.locked_restarts += 1;
                        std::thread::sleep(Duration::from_millis(20));
                        break;
                    }
                    if addr_in_use(&log) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(200));
                        break; // retry
                    }
                    panic!("rudel {role} exited with {code} during startup:\n{}", tail(&log, 40));
                }
                if ready(self) {
                    return i;
                }
                if Instant::now() > deadline {
                    panic!(
                        "rudel {role} not ready within {STARTUP_TIMEOUT:?}:\n{}",
                        tail(&self.daemons[i].log_text(), 40)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Starts `rudel up` (on `port`, or a fresh port).
    pub fn start_up(&mut self, port: Option<u16>) -> usize {
        let o = self.opts.clone();
        let data = self.data.display().to_string();
        self.start_listening(
            "up",
            port,
            |addr| {
                let mut v: Vec<String> = ["up", "--data", &data, "--listen", addr]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                v.extend(["--cpus".into(), o.cpus.to_string(), "--mem".into(), o.mem.clone()]);
                v.extend([
                    "--kill-grace".into(),
                    o.kill_grace.clone(),
                    "--name".into(),
                    o.name.clone(),
                ]);
                v.extend(o.up_args.iter().cloned());
                v
            },
            // Fresh: wait for the idle node. Restarted: it may still be busy with old tasks.
            |c| {
                if port.is_none() {
                    c.node_idle()
                } else {
                    c.node_up()
                }
            },
        )
    }

    /// Starts `rudel head` (on `port`, or a fresh port).
    pub fn start_head(&mut self, port: Option<u16>) -> usize {
        let data = self.data.join("head").display().to_string();
        self.start_listening(
            "head",
            port,
            |addr| {
                ["head", "--data", &data, "--listen", addr]
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            },
            |c| c.try_rudel(&["nodes", "--json"], Duration::from_secs(5)).ok(),
        )
    }

    /// Starts `rudel agent` for this cluster's head; returns once its node is idle.
    pub fn start_agent(&mut self) -> usize {
        let i = self.spawn_own_agent();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !self.node_idle() {
            if let Some(code) = self.daemons[i].exited() {
                panic!(
                    "rudel agent exited with {code} during startup:\n{}",
                    tail(&self.daemons[i].log_text(), 40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "agent not idle within {STARTUP_TIMEOUT:?}:\n{}",
                self.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        i
    }

    /// Spawns `rudel agent` for this cluster's head (same name and data directory every
    /// time, so a restart finds its journal) without waiting for anything; returns the
    /// index in `self.daemons`.
    pub fn spawn_own_agent(&mut self) -> usize {
        let o = self.opts.clone();
        let args: Vec<String> = vec![
            "agent".into(),
            "--head".into(),
            self.addr.clone(),
            "--data".into(),
            self.data.join("agent").display().to_string(),
            "--name".into(),
            o.name.clone(),
            "--cpus".into(),
            o.cpus.to_string(),
            "--mem".into(),
            o.mem.clone(),
            "--kill-grace".into(),
            o.kill_grace.clone(),
            "--token".into(),
            self.join_token(),
        ];
        let mut args = args;
        if o.root_jobs {
            args.push("--allow-root-jobs".into());
        }
        let d = self.spawn_daemon("agent", &args);
        self.daemons.push(d);
        self.daemons.len() - 1
    }

    /// Starts `rudel agent --name NAME --data DATA --token TOKEN EXTRA...` and returns at
    /// once (its index in `self.daemons`), for tests that expect it to be refused.
    pub fn spawn_agent(&mut self, name: &str, data: &Path, token: &str, extra: &[&str]) -> usize {
        let o = self.opts.clone();
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--head".into(),
            self.addr.clone(),
            "--data".into(),
            data.display().to_string(),
            "--name".into(),
            name.into(),
            "--cpus".into(),
            o.cpus.to_string(),
            "--mem".into(),
            o.mem.clone(),
            "--token".into(),
            token.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        if o.root_jobs {
            args.push("--allow-root-jobs".into());
        }
        let d = self.spawn_daemon("agent", &args);
        self.daemons.push(d);
        self.daemons.len() - 1
    }

    /// Waits (bounded) until daemon `i` exits; returns its exit code.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.daemons[i].exited() {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "rudel {} did not exit within {timeout:?}:\n{}",
                self.daemons[i].role,
                self.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts another `rudel agent` named `name` (its own data directory); returns once
    /// that node is idle.
    pub fn start_named_agent(&mut self, name: &str) -> usize {
        self.start_named_agent_with(name, &[])
    }

    /// Like `start_named_agent`, with extra agent options (e.g. `--label gpu`).
    pub fn start_named_agent_with(&mut self, name: &str, extra: &[&str]) -> usize {
        let data = self.data.join(format!("agent-{name}"));
        let token = self.join_token();
        let i = self.spawn_agent(name, &data, &token, extra);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let idle = self
                .nodes_json()
                .iter()
                .any(|n| n["name"] == name && n["state"] == "idle");
            if idle {
                return i;
            }
            if let Some(code) = self.daemons[i].exited() {
                panic!(
                    "rudel agent {name} exited with {code} during startup:\n{}",
                    tail(&self.daemons[i].log_text(), 40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "agent {name} not idle in time:\n{}",
                self.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The most recently started daemon with this role.
    pub fn daemon(&mut self, role: &str) -> &mut Daemon {
        self.daemons
            .iter_mut()
            .rev()
            .find(|d| d.role == role)
            .unwrap_or_else(|| panic!("no {role} daemon"))
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Is our node registered and idle?
    pub fn node_idle(&self) -> bool {
        let o = self.try_rudel(&["nodes", "--json"], Duration::from_secs(5));
        if !o.ok() {
            return false;
        }
        let Ok(v) = serde_json::from_str::<Value>(&o.stdout) else {
            return false;
        };
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|n| n["name"] == self.opts.name.as_str() && n["state"] == "idle")
        })
    }

    /// Is our node registered and connected (in any state but `down`)?
    pub fn node_up(&self) -> bool {
        let o = self.try_rudel(&["nodes", "--json"], Duration::from_secs(5));
        let Ok(v) = serde_json::from_str::<Value>(&o.stdout) else {
            return false;
        };
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|n| n["name"] == self.opts.name.as_str() && n["state"].is_string() && n["state"] != "down")
        })
    }

    /// A CLI command for this cluster (RUDEL_HEAD set, cwd = `dir`).
    pub fn command_in(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(RUDEL);
        cmd.args(args)
            .current_dir(dir)
            .env("RUDEL_HEAD", &self.addr)
            .env("RUDEL_CREDENTIALS", self.admin_credentials())
            .env_remove("RUDEL_LOG");
        cmd
    }

    /// The admin credentials the head wrote for the CLI on its machine.
    pub fn admin_credentials(&self) -> PathBuf {
        self.data.join("head/client")
    }

    /// The initial join token the head wrote (agents need it for their first start).
    pub fn join_token(&self) -> String {
        let p = self.data.join("head/join-token");
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("cannot read the join token {}: {e}", p.display()))
            .trim()
            .to_string()
    }

    /// Runs the CLI in `dir` with a bound.
    pub fn rudel_in_bounded(&self, dir: &Path, args: &[&str], timeout: Duration) -> Out {
        run_bounded(self.command_in(dir, args), timeout)
    }

    /// Runs the CLI in the work dir; a timeout is a test failure.
    pub fn rudel(&self, args: &[&str]) -> Out {
        let o = self.rudel_in_bounded(&self.work, args, CLI_TIMEOUT);
        assert!(
            !o.timed_out,
            "`rudel {}` did not finish within {CLI_TIMEOUT:?}: {o}\n{}",
            args.join(" "),
            self.logs_tail()
        );
        o
    }

    /// Runs the CLI in the work dir; a timeout is reported in `Out`, not a panic.
    pub fn try_rudel(&self, args: &[&str], timeout: Duration) -> Out {
        self.rudel_in_bounded(&self.work, args, timeout)
    }

    /// Runs the CLI and requires exit 0.
    pub fn rudel_ok(&self, args: &[&str]) -> Out {
        let o = self.rudel(args);
        assert!(o.ok(), "`rudel {}` failed: {o}", args.join(" "));
        o
    }

    /// `rudel submit --json ARGS` → the job id.
    pub fn submit(&self, args: &[&str]) -> u64 {
        self.submit_in(&self.work, args)
    }

    pub fn submit_in(&self, dir: &Path, args: &[&str]) -> u64 {
        let mut a = vec!["submit", "--json"];
        a.extend_from_slice(args);
        let o = self.rudel_in_bounded(dir, &a, CLI_TIMEOUT);
        assert!(o.ok(), "`rudel {}` failed: {o}", a.join(" "));
        let v: Value = serde_json::from_str(o.stdout.trim())
            .unwrap_or_else(|e| panic!("submit --json printed no JSON ({e}): {o}"));
        v["id"].as_u64().unwrap_or_else(|| panic!("no id in {v}"))
    }

    /// `rudel show ID --json`.
    pub fn show_json(&self, id: u64) -> Value {
        let o = self.rudel_ok(&["show", &id.to_string(), "--json"]);
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("show --json: {e}: {o}"))
    }

    /// `rudel jobs --all --json`.
    pub fn jobs_all(&self) -> Vec<Value> {
        let o = self.rudel_ok(&["jobs", "--all", "--json"]);
        match serde_json::from_str::<Value>(&o.stdout) {
            Ok(Value::Array(a)) => a,
            other => panic!("jobs --all --json: {other:?}: {o}"),
        }
    }

    /// `rudel nodes --json`.
    pub fn nodes_json(&self) -> Vec<Value> {
        let o = self.rudel_ok(&["nodes", "--json"]);
        match serde_json::from_str::<Value>(&o.stdout) {
            Ok(Value::Array(a)) => a,
            other => panic!("nodes --json: {other:?}: {o}"),
        }
    }

    /// Polls `show ID --json` every 50 ms until `pred` holds; panics after `timeout`.
    pub fn wait_state(&self, id: u64, mut pred: impl FnMut(&Value) -> bool, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.show_json(id);
            if pred(&v) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "job {id}: condition not reached within {timeout:?}; last state:\n{v:#}\n{}",
                    self.logs_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the job has a final state; returns its JSON.
    pub fn wait_finished(&self, id: u64, timeout: Duration) -> Value {
        self.wait_state(id, |v| is_final(v["state"].as_str().unwrap_or("")), timeout)
    }

    /// A file in the work dir, as text ("" if missing).
    pub fn read_work(&self, name: &str) -> String {
        std::fs::read_to_string(self.work.join(name)).unwrap_or_default()
    }

    /// The last lines of every daemon log.
    pub fn logs_tail(&self) -> String {
        let mut s = String::new();
        for d in &self.daemons {
            s.push_str(&format!(
                "\n===== {} ({}) log tail =====\n{}\n",
                d.role,
                d.log.display(),
                tail(&d.log_text(), 30)
            ));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stop agents (and `up`) first so they take their tasks with them.
        let order: Vec<usize> = {
            let mut v: Vec<usize> = (0..self.daemons.len()).collect();
            v.sort_by_key(|&i| if self.daemons[i].role == "head" { 1 } else { 0 });
            v
        };
        for i in order {
            self.daemons[i].stop(libc::SIGTERM, Duration::from_secs(5));
        }
        if std::thread::panicking() {
            eprintln!(
                "cluster in {} (head {}):{}",
                self.tmp.path().display(),
                self.addr,
                self.logs_tail()
            );
        }
    }
}

/// Final job/task states.
pub fn is_final(state: &str) -> bool {
    matches!(state, "completed" | "failed" | "cancelled" | "timeout" | "node_fail")
}

/// A count from the `counts` object of a job.
pub fn count(v: &Value, state: &str) -> u64 {
    v["counts"][state].as_u64().unwrap_or(0)
}

/// A marker unique to this test process, e.g. for `sleep 301.<pid>`.
pub fn marker(base: u32) -> String {
    format!("{base}.{}", std::process::id())
}

/// Processes whose command line contains `needle` (pid, command line).
pub fn procs_matching(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(needle) {
            found.push((pid, cmd.trim().to_string()));
        }
    }
    found
}

/// (state, ppid) of a process from /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Zombie children of `ppid`.
pub fn zombies_of(ppid: i32) -> Vec<i32> {
    let mut z = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return z;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(('Z', pp)) = proc_stat(pid) {
            if pp == ppid {
                z.push(pid);
            }
        }
    }
    z
}

/// Waits (bounded) until `cond` holds; returns whether it did.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `path` exists and is non-empty; returns its content.
pub fn wait_file(path: &Path, timeout: Duration) -> String {
    let mut s = String::new();
    let ok = eventually(timeout, || {
        s = std::fs::read_to_string(path).unwrap_or_default();
        !s.trim().is_empty()
    });
    assert!(ok, "{} not written within {timeout:?}", path.display());
    s
}

/// Environment that runs a program with its wall clock `offset` seconds off (libfaketime;
/// the monotonic clock, which timeouts use, stays true as it does on a real machine whose
/// clock is wrong).
pub fn skewed_clock(offset_s: i64) -> Vec<(String, String)> {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    let lib = candidates
        .iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or_else(|| panic!("libfaketime not found in {candidates:?} (install the faketime package)"));
    vec![
        ("LD_PRELOAD".into(), lib.to_string()),
        ("FAKETIME".into(), format!("{offset_s:+}s")),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("FAKETIME_NO_CACHE".into(), "1".into()),
    ]
}
