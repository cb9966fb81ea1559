//! Multi-host test harness: several "hosts", each a Linux network namespace with its own
//! address, joined by a bridge in the root namespace; real `rudel` processes run inside.
//!
//! Layout (all names carry the test process's pid, so parallel runs never share a name):
//! - namespaces `rdl<pid>-h<i>`, each with `lo` up and `eth0` = 10.213.0.<i+1>/24;
//! - a veth pair per host: `eth0` inside, `rdl<pid>p<i>` on the bridge in the root ns;
//! - the bridge `rdlbr<pid>` with 10.213.0.254/24, so the test process reaches every host.
//!
//! Faults: [`Net::cut`] / [`Net::heal`] take the root-ns end of a host's veth down / up,
//! [`kill9`], [`pause`] (SIGSTOP) and [`resume`] (SIGCONT) act on one process; packet
//! loss, a disk that fills up and a skewed clock are in [`faults`].
//!
//! Everything created is removed on drop (also when the test panicked): processes started
//! here and every process still living in one of our namespaces (tasks the agents spawned)
//! are killed, then the namespaces, veths and bridge are deleted and the temp dir removed.
//! Leftovers of an earlier run that crashed (its pid is gone) are removed at start.
//!
//! All tests using the subnet serialize: a static mutex within this process, and an
//! `flock` across processes (two test binaries running at once would share 10.213.0.0/24).
//! If namespaces cannot be created, [`Net::new`] panics and says why: never a silent pass.
//!
//! Opt-in: [`Net::private_fs`] gives a host a filesystem view of its own (see [`mountns`]):
//! its processes see a private tmpfs on `/tmp` and the work directory, like a separate
//! machine; hosts without it share the test process's filesystem.
#![allow(dead_code)]

pub mod faults;
pub mod mountns;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const RUDEL: &str = env!("CARGO_BIN_EXE_rudel");
/// The /24 every test network uses (first three octets).
pub const SUBNET: &str = "10.213.0";
/// The bridge's (test process's) address.
pub const BRIDGE_IP: &str = "10.213.0.254";
/// Port the head listens on in host 0.
pub const HEAD_PORT: u16 = 7117;

/// Serializes the tests of this process: they share the subnet.
static SUBNET_LOCK: Mutex<()> = Mutex::new(());

/// Cross-process lock file (held while a `Net` lives).
fn lock_path() -> PathBuf {
    std::env::temp_dir().join("rudel-multihost-10.213.0.0.lock")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub use crate::common::{run_bounded, tail, Out};

/// Runs `ip ARGS` (bounded); returns the output.
fn ip(args: &[&str]) -> Out {
    let mut c = Command::new("ip");
    c.args(args);
    run_bounded(c, Duration::from_secs(20))
}

// ---------------------------------------------------------------------------------------
// Signals (by pid; the `Net` keeps every child unreaped until it reaps it itself, so a pid
// it handed out is never reused while the `Net` lives)

fn signal(pid: i32, sig: i32) {
    assert!(pid > 1, "refusing to signal pid {pid}");
    // SAFETY: kill(2) with a positive pid of a process we started.
    unsafe { libc::kill(pid, sig) };
}

/// `kill -9 PID`.
pub fn kill9(pid: i32) {
    signal(pid, libc::SIGKILL);
}

/// SIGSTOP.
pub fn pause(pid: i32) {
    signal(pid, libc::SIGSTOP);
}

/// SIGCONT.
pub fn resume(pid: i32) {
    signal(pid, libc::SIGCONT);
}

// ---------------------------------------------------------------------------------------
// Processes inside namespaces

/// A process found in /proc.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    pub pid: i32,
    pub cmdline: String,
    pub env: BTreeMap<String, String>,
}

/// The inode that identifies the network namespace mounted at /run/netns/NAME.
fn netns_inode(name: &str) -> Option<u64> {
    std::fs::metadata(format!("/run/netns/{name}")).ok().map(|m| m.ino())
}

/// Every process (other than this one) whose network namespace is the given inode.
fn procs_in_netns_inode(ino: u64) -> Vec<ProcInfo> {
    let want = format!("net:[{ino}]");
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if link.to_string_lossy() != want {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_string())
            .unwrap_or_default();
        let env = std::fs::read(format!("/proc/{pid}/environ"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter_map(|kv| {
                        let s = String::from_utf8_lossy(kv);
                        s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.push(ProcInfo { pid, cmdline, env });
    }
    v
}

/// SIGKILLs every process in namespace `name` (bounded wait until none is left).
fn kill_all_in_netns(name: &str) {
    let Some(ino) = netns_inode(name) else { return };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = procs_in_netns_inode(ino);
        if procs.is_empty() || Instant::now() > deadline {
            if !procs.is_empty() {
                eprintln!(
                    "netns harness: processes survive in {name}: {:?}",
                    procs.iter().map(|p| p.pid).collect::<Vec<_>>()
                );
            }
            return;
        }
        for p in &procs {
            // SAFETY: plain kill(2) of a process living in our own test namespace.
            unsafe {
                libc::kill(p.pid, libc::SIGCONT);
                libc::kill(p.pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The owner pid encoded in one of our names (`rdl<pid>-h<i>`, `rdl<pid>p<i>`, `rdlbr<pid>`).
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("rdlbr").or_else(|| name.strip_prefix("rdl"))?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return None;
    }
    let after = &rest[digits.len()..];
    let ours = name.starts_with("rdlbr") && after.is_empty()
        || after.starts_with("-h") && after[2..].chars().all(|c| c.is_ascii_digit()) && after.len() > 2
        || after.starts_with('p') && after[1..].chars().all(|c| c.is_ascii_digit()) && after.len() > 1
        || after.starts_with('c') && after[1..].chars().all(|c| c.is_ascii_digit()) && after.len() > 1;
    if !ours {
        return None;
    }
    digits.parse().ok()
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and links of earlier runs whose process is gone (or that carry our
/// own pid: a previous life of this pid). Leftovers of a live process are left alone.
fn remove_leftovers() {
    let me = std::process::id() as i32;
    let stale = |name: &str| owner_pid(name).is_some_and(|p| p == me || !pid_alive(p));
    let o = ip(&["netns", "list"]);
    for line in o.stdout.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if stale(name) {
            eprintln!("netns harness: removing leftover namespace {name}");
            kill_all_in_netns(name);
            let _ = ip(&["netns", "del", name]);
        }
    }
    mountns::remove_stale(stale);
    // Temp dirs `rdl<pid>-XXXXXX` of crashed runs.
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((head, _)) = name.split_once('-') else {
                continue;
            };
            let is_ours = head.len() > 3 && head.starts_with("rdl") && head[3..].chars().all(|c| c.is_ascii_digit());
            if is_ours && stale(&format!("{head}-h0")) && e.path().is_dir() {
                faults::unmount_under(&e.path());
                eprintln!("netns harness: removing leftover directory {}", e.path().display());
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let o = ip(&["-o", "link", "show"]);
    for line in o.stdout.lines() {
        // "12: rdl123p1@if11: <...>"
        let Some(name) = line
            .split(':')
            .nth(1)
            .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
        else {
            continue;
        };
        if stale(&name) {
            eprintln!("netns harness: removing leftover link {name}");
            let _ = ip(&["link", "del", &name]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The network

/// One process started by the harness.
struct Started {
    child: Child,
    host: usize,
    label: String,
    log: PathBuf,
}

/// A set of hosts (network namespaces) on one bridge.
pub struct Net {
    pub prefix: String,
    pub n_hosts: usize,
    pub bridge: String,
    /// Scratch space for logs and data directories (removed on drop).
    pub tmp: tempfile::TempDir,
    namespaces: Vec<String>,
    links: Vec<String>,
    bridge_created: bool,
    started: Vec<Started>,
    /// Mount namespace file per host with a private filesystem view.
    mount_ns: BTreeMap<usize, PathBuf>,
    _flock: Option<File>,
    _guard: MutexGuard<'static, ()>,
}

/// Why the environment cannot run these tests, if we can tell up front.
fn precondition_problem() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some(
            "the multi-host tests must run as root (they create network namespaces, veths and a bridge)".into(),
        );
    }
    match Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("`ip -V` failed ({s}); install iproute2")),
        Err(e) => Some(format!("cannot run `ip` ({e}); install iproute2")),
    }
}

fn take_flock() -> File {
    let path = lock_path();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("netns harness: cannot open lock file {}: {e}", path.display()));
    use std::os::unix::io::AsRawFd;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "netns harness: another process held {} (the 10.213.0.0/24 test subnet) for 5 minutes",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Net {
    /// Creates `n_hosts` hosts: namespaces `rdl<pid>-h<i>` with 10.213.0.<i+1>, all on one
    /// bridge that has 10.213.0.254. Panics (with the reason) if that is not possible.
    pub fn new(n_hosts: usize) -> Net {
        assert!((1..=200).contains(&n_hosts), "1..=200 hosts");
        let guard = SUBNET_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = precondition_problem() {
            panic!("cannot create the multi-host test network: {why}");
        }
        let flock = take_flock();
        remove_leftovers();
        // Someone else (not one of our runs) on the subnet? Then we must not touch it.
        let o = ip(&["-o", "addr", "show", "to", &format!("{SUBNET}.0/24")]);
        assert!(
            o.stdout.trim().is_empty(),
            "cannot create the multi-host test network: the subnet {SUBNET}.0/24 is already in use in the root namespace:\n{}",
            o.stdout
        );
        let pid = std::process::id();
        let prefix = format!("rdl{pid}");
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .expect("tempdir");
        let mut net = Net {
            bridge: format!("rdlbr{pid}"),
            prefix,
            n_hosts,
            tmp,
            namespaces: Vec::new(),
            links: Vec::new(),
            bridge_created: false,
            started: Vec::new(),
            mount_ns: BTreeMap::new(),
            _flock: Some(flock),
            _guard: guard,
        };
        // From here on a panic drops `net`, which removes whatever was created.
        let br = net.bridge.clone();
        net.must(&["link", "add", &br, "type", "bridge"], "create the bridge");
        net.bridge_created = true;
        net.must(
            &["addr", "add", &format!("{BRIDGE_IP}/24"), "dev", &br],
            "address the bridge",
        );
        net.must(&["link", "set", &br, "up"], "bring the bridge up");
        for i in 0..n_hosts {
            let ns = net.ns(i);
            net.must(&["netns", "add", &ns], "create a network namespace");
            net.namespaces.push(ns.clone());
            let peer = net.peer(i);
            let inner = format!("{}c{i}", net.prefix);
            net.must(
                &["link", "add", &inner, "type", "veth", "peer", "name", &peer],
                "create a veth pair",
            );
            net.links.push(peer.clone());
            net.must(&["link", "set", &inner, "netns", &ns], "move a veth into its namespace");
            net.must(&["-n", &ns, "link", "set", &inner, "name", "eth0"], "rename the veth");
            net.must(
                &["-n", &ns, "addr", "add", &format!("{}/24", net.ip(i)), "dev", "eth0"],
                "address a host",
            );
            net.must(&["-n", &ns, "link", "set", "eth0", "up"], "bring eth0 up");
            net.must(&["-n", &ns, "link", "set", "lo", "up"], "bring lo up");
            net.must(&["link", "set", &peer, "master", &br], "attach a veth to the bridge");
            net.must(&["link", "set", &peer, "up"], "bring a veth up");
        }
        net
    }

    fn must(&self, args: &[&str], what: &str) {
        let o = ip(args);
        if !o.ok() {
            panic!(
                "cannot create the multi-host test network: failed to {what}: `ip {}`: {}{}",
                args.join(" "),
                o.stderr.trim(),
                if o.stderr.contains("Operation not permitted") {
                    " (needs root / CAP_NET_ADMIN and network-namespace support)"
                } else {
                    ""
                }
            );
        }
    }

    /// Namespace name of host `i`.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-h{i}", self.prefix)
    }

    /// Root-ns end of host `i`'s veth.
    pub fn peer(&self, i: usize) -> String {
        format!("{}p{i}", self.prefix)
    }

    /// Address of host `i`.
    pub fn ip(&self, i: usize) -> String {
        format!("{SUBNET}.{}", i + 1)
    }

    /// Runs `argv` inside host `host` (`ip netns exec`, which execs: the pid is the process
    /// itself), stdout and stderr to `log`. Returns the pid; the `Net` owns the child.
    pub fn spawn(&mut self, host: usize, argv: &[&str], log: &Path) -> i32 {
        self.spawn_env(host, argv, log, &[])
    }

    /// [`Net::spawn`] with extra environment variables.
    pub fn spawn_env(&mut self, host: usize, argv: &[&str], log: &Path, env: &[(&str, &str)]) -> i32 {
        assert!(host < self.n_hosts, "no host {host}");
        let f = File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let f2 = f.try_clone().unwrap();
        let mut cmd = self.host_command(host, argv);
        cmd.current_dir(self.tmp.path())
            .env_remove("RUDEL_HEAD")
            .env_remove("RUDEL_DATA")
            .env_remove("RUDEL_CREDENTIALS")
            .env_remove("RUDEL_TOKEN")
            .env("RUDEL_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(f2));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?} in host {host}: {e}"));
        let pid = child.id() as i32;
        self.started.push(Started {
            child,
            host,
            label: format!(
                "host{host}:{}",
                argv.iter().take(2).copied().collect::<Vec<_>>().join(" ")
            ),
            log: log.to_path_buf(),
        });
        pid
    }

    /// Gives host `host` a filesystem view of its own: a private tmpfs on `/tmp` and on each
    /// of `dirs`. Call before starting the host's processes.
    pub fn private_fs(&mut self, host: usize, dirs: &[PathBuf]) {
        assert!(host < self.n_hosts, "no host {host}");
        let file = mountns::create(&self.prefix, host, dirs);
        self.mount_ns.insert(host, file);
    }

    /// `argv` run inside host `host`: its network namespace, and its mount namespace if it
    /// has a private filesystem (`nsenter` and `ip netns exec` both exec: the pid is the
    /// process itself).
    pub fn host_command(&self, host: usize, argv: &[&str]) -> Command {
        let mut full: Vec<String> = self.mount_ns.get(&host).map(|f| mountns::enter(f)).unwrap_or_default();
        full.extend(["ip".into(), "netns".into(), "exec".into(), self.ns(host)]);
        full.extend(argv.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(&full[0]);
        cmd.args(&full[1..]);
        cmd
    }

    /// Has the process `pid` (started here) exited? Its exit code (-1: signal).
    pub fn exited(&mut self, pid: i32) -> Option<i32> {
        let s = self.started.iter_mut().find(|s| s.child.id() as i32 == pid)?;
        match s.child.try_wait() {
            Ok(Some(st)) => Some(st.code().unwrap_or(-1)),
            _ => None,
        }
    }

    /// Waits (bounded) for `pid` to exit after a kill; reaps it. True if it exited.
    pub fn reap(&mut self, pid: i32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.exited(pid).is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Cuts host `i` off the network (root-ns end of its veth down).
    pub fn cut(&self, i: usize) {
        self.must(&["link", "set", &self.peer(i), "down"], "cut a host off");
    }

    /// Reconnects host `i`.
    pub fn heal(&self, i: usize) {
        self.must(&["link", "set", &self.peer(i), "up"], "reconnect a host");
    }

    /// Every process currently in host `i`'s namespace.
    pub fn procs_in(&self, i: usize) -> Vec<ProcInfo> {
        match netns_inode(&self.ns(i)) {
            Some(ino) => procs_in_netns_inode(ino),
            None => Vec::new(),
        }
    }

    /// Tails of the logs of every process started here.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        for p in &self.started {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            s.push_str(&format!(
                "===== {} (pid {}, {}) =====\n{}\n",
                p.label,
                p.child.id(),
                p.log.display(),
                tail(&text, lines)
            ));
        }
        s
    }

    fn teardown(&mut self) {
        // 1. Our own processes: SIGCONT (paused ones) + SIGTERM, short grace, then SIGKILL.
        for s in &mut self.started {
            if let Ok(None) = s.child.try_wait() {
                let pid = s.child.id() as i32;
                // SAFETY: kill(2) of our own unreaped child.
                unsafe {
                    libc::kill(pid, libc::SIGCONT);
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && self.started.iter_mut().any(|s| matches!(s.child.try_wait(), Ok(None))) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for s in &mut self.started {
            if let Ok(None) = s.child.try_wait() {
                let _ = s.child.kill();
            }
            let _ = s.child.wait();
        }
        // 2. Whatever still lives in our namespaces (tasks the agents started, which run in
        //    their own sessions and outlive the agent).
        for ns in &self.namespaces {
            kill_all_in_netns(ns);
        }
        // 3. Mount namespaces (their tmpfs go with them), network namespaces, veths, bridge.
        if !self.mount_ns.is_empty() {
            mountns::remove(&self.prefix);
            self.mount_ns.clear();
        }
        for ns in self.namespaces.drain(..) {
            let o = ip(&["netns", "del", &ns]);
            if !o.ok() {
                eprintln!("netns harness: cannot delete namespace {ns}: {}", o.stderr.trim());
            }
        }
        for l in self.links.drain(..) {
            // Usually gone with its namespace already.
            let _ = ip(&["link", "del", &l]);
        }
        if self.bridge_created {
            let o = ip(&["link", "del", &self.bridge]);
            if !o.ok() {
                eprintln!(
                    "netns harness: cannot delete bridge {}: {}",
                    self.bridge,
                    o.stderr.trim()
                );
            }
            self.bridge_created = false;
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.started.is_empty() {
            eprintln!("---- daemon logs (the test failed) ----\n{}", self.logs_tail(40));
        }
        self.teardown();
        // The temp dir is removed when `tmp` drops, after this.
    }
}

// ---------------------------------------------------------------------------------------
// A rudel cluster on the network: head in host 0, agents in hosts 1..=N

/// Options of a multi-host cluster.
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    pub agents: usize,
    pub cpus: u32,
    /// `--node-timeout` of the head (None: the head's default).
    pub node_timeout: Option<String>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            agents: 3,
            cpus: 2,
            node_timeout: Some("3s".into()),
        }
    }
}

/// A head and agents in their own hosts.
pub struct Cluster {
    pub opts: ClusterOpts,
    pub head_addr: String,
    pub head_pid: i32,
    /// Log file of the current head.
    pub head_log: PathBuf,
    /// Pid of the agent of host i (index 0 unused: the head's host).
    pub agent_pids: Vec<Option<i32>>,
    /// Where CLI commands run (and tasks' working directory).
    pub work: PathBuf,
    log_seq: usize,
    /// Dropped last (declared last): kills everything and removes the network.
    pub net: Net,
}

impl Cluster {
    /// Starts a head in host 0 and `opts.agents` agents in hosts 1..=N; returns once
    /// `rudel nodes` shows every agent connected.
    pub fn start(opts: ClusterOpts) -> Cluster {
        Self::start_with(opts, false)
    }

    /// [`Cluster::start`] where every agent host has a filesystem view of its own (private
    /// `/tmp` and work directory): nothing an agent writes there is visible to the test
    /// process, the CLI it runs, the head or other agents.
    pub fn start_private_fs(opts: ClusterOpts) -> Cluster {
        Self::start_with(opts, true)
    }

    fn start_with(opts: ClusterOpts, private_fs: bool) -> Cluster {
        let mut net = Net::new(opts.agents + 1);
        let work = net.tmp.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        if private_fs {
            // /dev/shm too: MPI ranks of one host meet there, and two hosts sharing it
            // (and a host name) would open each other's shared-memory segments.
            let dirs = [work.clone(), PathBuf::from("/dev/shm")];
            for i in 1..=opts.agents {
                net.private_fs(i, &dirs);
            }
        }
        let head_addr = format!("{}:{HEAD_PORT}", net.ip(0));
        let mut c = Cluster {
            agent_pids: vec![None; opts.agents + 1],
            opts,
            head_addr,
            head_pid: 0,
            head_log: PathBuf::new(),
            work,
            log_seq: 0,
            net,
        };
        c.start_head();
        for i in 1..=c.opts.agents {
            c.start_agent(i);
        }
        c.wait_for_agents(Duration::from_secs(20));
        c
    }

    fn log_path(&mut self, role: &str) -> PathBuf {
        self.log_seq += 1;
        self.net.tmp.path().join(format!("{:02}-{role}.log", self.log_seq))
    }

    /// Data directory of the head / of host i's agent.
    pub fn data_dir(&self, host: usize) -> PathBuf {
        if host == 0 {
            self.net.tmp.path().join("h0")
        } else {
            self.net.tmp.path().join(format!("a{host}"))
        }
    }

    /// Node name of host i's agent.
    pub fn node_name(host: usize) -> String {
        format!("host{host}")
    }

    pub fn start_head(&mut self) {
        let data = self.data_dir(0).display().to_string();
        let addr = self.head_addr.clone();
        let mut argv = vec![RUDEL, "head", "--data", &data, "--listen", &addr];
        let nt;
        if let Some(t) = &self.opts.node_timeout {
            nt = t.clone();
            argv.extend(["--node-timeout", &nt]);
        }
        let log = self.log_path("head");
        let pid = self.net.spawn(0, &argv, &log);
        self.head_pid = pid;
        self.head_log = log.clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(code) = self.net.exited(pid) {
                panic!(
                    "rudel head exited with {code} during startup (argv {argv:?}):\n{}",
                    tail(&std::fs::read_to_string(&log).unwrap_or_default(), 40)
                );
            }
            if self.try_rudel(&["nodes", "--json"], Duration::from_secs(3)).ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rudel head not answering within 20 s:\n{}",
                self.net.logs_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts (or restarts, same --data) the agent of host `i` with the initial join token
    /// (used only if it has no certificate yet). Does not wait.
    pub fn start_agent(&mut self, i: usize) -> i32 {
        let token = self.join_token();
        self.start_agent_with_token(i, &token)
    }

    /// Starts the agent of host `i` with `token`. Does not wait.
    pub fn start_agent_with_token(&mut self, i: usize, token: &str) -> i32 {
        let data = self.data_dir(i).display().to_string();
        let name = Self::node_name(i);
        let cpus = self.opts.cpus.to_string();
        let head = self.head_addr.clone();
        let log = self.log_path(&format!("agent{i}"));
        let argv = [
            RUDEL,
            "agent",
            "--head",
            &head,
            "--name",
            &name,
            "--cpus",
            &cpus,
            "--data",
            &data,
            "--kill-grace",
            "1s",
            "--token",
            token,
            // The suite runs as root and submits as root.
            "--allow-root-jobs",
        ];
        let pid = self.net.spawn(i, &argv, &log);
        self.agent_pids[i] = Some(pid);
        pid
    }

    /// Waits until every agent host shows up in `rudel nodes` in a state other than `down`.
    pub fn wait_for_agents(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            for i in 1..=self.opts.agents {
                if let Some(pid) = self.agent_pids[i] {
                    if let Some(code) = self.net.exited(pid) {
                        panic!("the agent of host {i} exited with {code}:\n{}", self.net.logs_tail(40));
                    }
                }
            }
            let nodes = self.nodes_opt();
            let all = (1..=self.opts.agents).all(|i| {
                nodes.as_ref().is_some_and(|ns| {
                    ns.iter().any(|n| {
                        n["name"] == Self::node_name(i).as_str() && n["state"].is_string() && n["state"] != "down"
                    })
                })
            });
            if all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not every agent joined within {timeout:?}; nodes: {nodes:?}\n{}",
                self.net.logs_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A CLI command against the head, run in the root namespace from the work dir.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(RUDEL);
        cmd.args(args)
            .current_dir(&self.work)
            .env("RUDEL_HEAD", &self.head_addr)
            .env("RUDEL_CREDENTIALS", self.admin_credentials())
            .env_remove("RUDEL_LOG");
        cmd
    }

    /// The admin credentials the head wrote in its data directory.
    pub fn admin_credentials(&self) -> PathBuf {
        self.data_dir(0).join("client")
    }

    /// The initial join token the head wrote in its data directory.
    pub fn join_token(&self) -> String {
        let p = self.data_dir(0).join("join-token");
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("cannot read the join token {}: {e}", p.display()))
            .trim()
            .to_string()
    }

    pub fn try_rudel(&self, args: &[&str], timeout: Duration) -> Out {
        run_bounded(self.command(args), timeout)
    }

    /// The CLI run inside host `i`'s namespace with the credentials directory `creds`
    /// (a remote user's machine), bounded to 30 s.
    pub fn rudel_on_host(&self, i: usize, creds: &Path, args: &[&str]) -> Out {
        let mut argv = vec![RUDEL];
        argv.extend_from_slice(args);
        let mut cmd = self.net.host_command(i, &argv);
        cmd.current_dir(&self.work)
            .env("RUDEL_HEAD", &self.head_addr)
            .env("RUDEL_CREDENTIALS", creds)
            .env_remove("RUDEL_LOG");
        run_bounded(cmd, Duration::from_secs(30))
    }

    /// The current head's log.
    pub fn head_log_text(&self) -> String {
        std::fs::read_to_string(&self.head_log).unwrap_or_default()
    }

    /// Runs the CLI (bounded: 60 s); a timeout fails the test.
    pub fn rudel(&self, args: &[&str]) -> Out {
        let o = self.try_rudel(args, Duration::from_secs(60));
        assert!(
            !o.timed_out,
            "`rudel {}` did not finish within 60 s: {o}\n{}",
            args.join(" "),
            self.net.logs_tail(40)
        );
        o
    }

    pub fn rudel_ok(&self, args: &[&str]) -> Out {
        let o = self.rudel(args);
        assert!(o.ok(), "`rudel {}` failed: {o}", args.join(" "));
        o
    }

    /// `rudel submit --json ARGS` → job id.
    pub fn submit(&self, args: &[&str]) -> u64 {
        let mut a = vec!["submit", "--json"];
        a.extend_from_slice(args);
        let o = self.rudel_ok(&a);
        let v: Value =
            serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("submit output not JSON ({e}): {o}"));
        v["id"].as_u64().unwrap_or_else(|| panic!("no id in {v}"))
    }

    /// `rudel show ID --json` (None if the call failed).
    pub fn show(&self, id: u64) -> Option<Value> {
        let o = self.try_rudel(&["show", &id.to_string(), "--json"], Duration::from_secs(5));
        if !o.ok() {
            return None;
        }
        serde_json::from_str(o.stdout.trim()).ok()
    }

    pub fn show_ok(&self, id: u64) -> Value {
        let o = self.rudel_ok(&["show", &id.to_string(), "--json"]);
        serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("show output not JSON ({e}): {o}"))
    }

    /// `rudel nodes --json` (None if the call failed).
    pub fn nodes_opt(&self) -> Option<Vec<Value>> {
        let o = self.try_rudel(&["nodes", "--json"], Duration::from_secs(5));
        if !o.ok() {
            return None;
        }
        serde_json::from_str::<Value>(o.stdout.trim())
            .ok()
            .and_then(|v| v.as_array().cloned())
    }

    /// State of host i's node as `rudel nodes` shows it.
    pub fn node_state(&self, host: usize) -> Option<String> {
        let name = Self::node_name(host);
        self.nodes_opt()?
            .iter()
            .find(|n| n["name"] == name.as_str())
            .and_then(|n| n["state"].as_str().map(String::from))
    }

    /// Waits (bounded) until every task of `id` has finished; returns the final `show`.
    pub fn wait_finished(&self, id: u64, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(j) = self.show(id) {
                let c = &j["counts"];
                let busy = c["pending"].as_u64().unwrap_or(0) + c["running"].as_u64().unwrap_or(0);
                if busy == 0 && j["state"] != "pending" && j["state"] != "running" {
                    return j;
                }
                assert!(
                    Instant::now() < deadline,
                    "job {id} not finished within {timeout:?}: counts {c}\n{}",
                    self.net.logs_tail(30)
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "job {id}: `rudel show` failing for {timeout:?}\n{}",
                    self.net.logs_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Host i dies the way a machine does: its agent and every process living in its
    /// namespace (tasks, step tasks, scripts) get SIGKILL at once; nothing of it is left.
    pub fn kill_host(&mut self, i: usize) {
        if self.agent_pids[i].is_some() {
            self.kill9_agent(i);
        }
        kill_all_in_netns(&self.net.ns(i));
        let left = self.net.procs_in(i);
        assert!(left.is_empty(), "host {i} still runs {left:?} after SIGKILL");
    }

    /// Kills host i's agent with SIGKILL and reaps it.
    pub fn kill9_agent(&mut self, i: usize) {
        let pid = self.agent_pids[i].take().expect("agent not running");
        kill9(pid);
        assert!(
            self.net.reap(pid, Duration::from_secs(5)),
            "agent {pid} did not die from SIGKILL"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The ground-truth file tasks append to

/// One line of the ground-truth file: `JOB INDEX ATTEMPT NODE [EVENT MS]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub job: u64,
    pub index: u32,
    pub attempt: u32,
    pub node: String,
    pub what: String,
    pub ms: u64,
}

/// Parses the ground-truth file (a malformed line fails the test: lines must be atomic).
pub fn read_events(path: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(
                f.len() == 4 || f.len() == 6,
                "malformed ground-truth line {l:?} in {}",
                path.display()
            );
            let num = |s: &str| {
                s.parse::<u64>()
                    .unwrap_or_else(|_| panic!("malformed ground-truth line {l:?}"))
            };
            Event {
                job: num(f[0]),
                index: num(f[1]) as u32,
                attempt: num(f[2]) as u32,
                node: f[3].to_string(),
                what: f.get(4).map_or(String::new(), |s| s.to_string()),
                ms: f.get(5).map_or(0, |s| num(s)),
            }
        })
        .collect()
}

/// Count of events per key.
pub fn count_by<K: Ord>(events: &[Event], key: impl Fn(&Event) -> K) -> BTreeMap<K, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(key(e)).or_insert(0) += 1;
    }
    m
}

/// Processes in a host that belong to the given task attempts (by their environment,
/// which every process of a task inherits: RUDEL_JOB_ID, RUDEL_ARRAY_INDEX, RUDEL_ATTEMPT).
pub fn task_procs(procs: &[ProcInfo], attempts: &[(u64, u32, u32)]) -> Vec<ProcInfo> {
    procs
        .iter()
        .filter(|p| {
            let g = |k: &str| p.env.get(k).and_then(|v| v.parse::<u64>().ok());
            match (g("RUDEL_JOB_ID"), g("RUDEL_ARRAY_INDEX"), g("RUDEL_ATTEMPT")) {
                (Some(j), Some(i), Some(a)) => attempts.contains(&(j, i as u32, a as u32)),
                _ => false,
            }
        })
        .cloned()
        .collect()
}

pub fn epoch_ms() -> u64 {
    now_ms()
}
