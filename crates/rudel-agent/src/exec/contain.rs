//! Task containment: every process a task starts is found and killed when the task ends,
//! is cancelled or times out, also processes that left the task's process group
//! (`setsid cmd &`), and the number of processes (threads) of one task is limited.
//!
//! Without this, `sh -c 'setsid sleep 1000 & sleep 60'` left `sleep 1000` running after
//! the job ended and after `rudel cancel`, re-parented to the agent and pinned to the
//! task's core; and a fork bomb ran until the time limit (thousands of processes).
//!
//! Modes, best first:
//! - cgroup v1 `pids` controller: one cgroup per task under `<pids mount>/<own>/<name>`;
//!   `pids.max` limits the task. The `posix_spawn` fast path is kept: the spawner *thread*
//!   moves itself into the task's cgroup (`tasks` file, per thread in v1) right before the
//!   spawn and back right after, and the child inherits the thread's cgroup. Cost per task:
//!   mkdir, pids.max, two tid writes, rmdir.
//! - cgroup v2 with the `pids` controller: one cgroup per task under `<mount>/<name>`
//!   (memory limits share it). v2 moves only whole processes, so these tasks take the fork
//!   path and the child joins its cgroup before exec. `clone3(CLONE_INTO_CGROUP)` would
//!   avoid the fork, but glibc's `posix_spawn` has no way to pass it (glibc < 2.41 here) and
//!   a hand-written vfork-style clone3 is unsafe code we could not test on our v1 machines.
//! - process tree (no usable cgroup): members are found by the process tree and the
//!   `RUDEL_TASK` marker in their environment (the agent is a child subreaper, so a
//!   process that left the group is re-parented to the agent once its parent exits).
//!   No process limit for a root agent; `RLIMIT_NPROC` (per user, best effort) otherwise.
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rudel_core::TaskKey;
use tracing::{debug, info, warn};

use super::memlimit::{self, MemMode};

/// Name of the variable every task's environment carries: `job.index.attempt@owner`,
/// the owner being the agent's uid. Without a cgroup it tells a task's processes apart;
/// the same marker lets the next agent process find a task whose pid never reached the
/// journal. The owner is part of it because job ids repeat across clusters: two agents on
/// one machine (tests, or two clusters) must never match each other's tasks.
pub const TASK_MARKER: &str = "RUDEL_TASK";

/// The value of [`TASK_MARKER`] for one attempt run by the agent `owner` (`job.index.attempt`
/// alone when the owner is empty, as in tests of the executor).
pub fn task_marker(owner: &str, key: TaskKey, attempt: u32) -> String {
    if owner.is_empty() {
        format!("{}.{}.{}", key.job, key.index, attempt)
    } else {
        format!("{}.{}.{}@{owner}", key.job, key.index, attempt)
    }
}

/// How this agent contains its tasks.
#[derive(Debug)]
pub(crate) enum Contain {
    /// cgroup v1 `pids`: `root` is the parent of the task cgroups; `home` is the `tasks`
    /// file of the agent's own pids cgroup (where the spawner thread returns).
    V1 { root: PathBuf, home: File },
    /// cgroup v2 with `pids`: `root` is the parent of the task cgroups.
    V2 { root: PathBuf },
    /// No usable cgroup. `nproc`: `RLIMIT_NPROC` is set on tasks (non-root agent).
    Tree { nproc: bool },
}

impl Contain {
    /// The parent cgroup of the per-task cgroups, if any.
    pub(crate) fn root(&self) -> Option<&Path> {
        match self {
            Contain::V1 { root, .. } | Contain::V2 { root } => Some(root),
            Contain::Tree { .. } => None,
        }
    }

    pub(crate) fn is_v2(&self) -> bool {
        matches!(self, Contain::V2 { .. })
    }
}

/// What `rudel nodes` shows: the mechanism and, in parentheses, the protections it gives
/// or lacks, e.g. `cgroup-v1 (pids.max 1024, memory)` or
/// `process-tree (no process limit, memory via RLIMIT_AS)`.
pub(crate) fn describe(c: &Contain, mem: &MemMode, pids_max: u64) -> String {
    let (kind, limit) = match c {
        Contain::V1 { .. } | Contain::V2 { .. } if pids_max == 0 => (
            if c.is_v2() { "cgroup-v2" } else { "cgroup-v1" },
            "no process limit: --task-pids-max 0".to_string(),
        ),
        Contain::V1 { .. } => ("cgroup-v1", format!("pids.max {pids_max}")),
        Contain::V2 { .. } => ("cgroup-v2", format!("pids.max {pids_max}")),
        Contain::Tree { nproc: true } if pids_max > 0 => ("process-tree", format!("RLIMIT_NPROC {pids_max} per user")),
        Contain::Tree { .. } => ("process-tree", "no process limit".to_string()),
    };
    let memory = match mem {
        MemMode::V1 { .. } | MemMode::V2 { .. } => "memory",
        MemMode::Rlimit => "memory via RLIMIT_AS",
    };
    format!("{kind} ({limit}, {memory})")
}

/// Finds the best containment. `enabled = false` forces the process-tree mode.
pub(crate) fn detect(cgroup_name: &str, enabled: bool) -> Contain {
    // SAFETY: plain syscall.
    let nproc = unsafe { libc::geteuid() } != 0;
    if !enabled {
        return Contain::Tree { nproc };
    }
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 4 && f[2] == "cgroup2" {
            if let Some(c) = probe_v2(Path::new(f[1]), cgroup_name) {
                return c;
            }
        }
    }
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 4 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "pids") {
            if let Some(c) = probe_v1(Path::new(f[1]), own_v1_path(&own, "pids").as_deref(), cgroup_name) {
                return c;
            }
        }
    }
    Contain::Tree { nproc }
}

/// Path of our own cgroup in the v1 hierarchy of `controller` (from /proc/self/cgroup).
fn own_v1_path(proc_cgroup: &str, controller: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _id = parts.next()?;
        let ctrls = parts.next()?;
        let path = parts.next()?;
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.trim_start_matches('/').to_string())
    })
}

fn probe_v1(mount: &Path, own: Option<&str>, name: &str) -> Option<Contain> {
    // Below our own cgroup first: the agent's service cgroup (and its limits) keeps
    // covering the tasks.
    let mut homes = vec![mount.to_path_buf()];
    if let Some(own) = own.filter(|o| !o.is_empty()) {
        homes.insert(0, mount.join(own));
    }
    for home_dir in homes {
        let root = home_dir.join(name);
        let Ok(home) = fs::OpenOptions::new().write(true).open(home_dir.join("tasks")) else {
            continue;
        };
        clean_stale(&home_dir, name, false);
        let probe = root.join("probe");
        let ok = ensure_root(&root, false).is_ok()
            && (fs::create_dir(&probe).is_ok() || probe.is_dir())
            && probe.join("pids.max").exists()
            && enter(&probe).is_ok()
            && leave(&home).is_ok();
        let _ = fs::remove_dir(&probe);
        let _ = fs::remove_dir(&root);
        if ok {
            return Some(Contain::V1 { root, home });
        }
        debug!(path = %root.display(), "pids cgroup not usable");
    }
    None
}

fn probe_v2(mount: &Path, name: &str) -> Option<Contain> {
    let ctl = fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
    if !ctl.split_whitespace().any(|c| c == "pids") {
        return None;
    }
    let _ = write_file(&mount.join("cgroup.subtree_control"), "+pids");
    clean_stale(mount, name, true);
    let root = mount.join(name);
    let probe = root.join("probe");
    let ok = ensure_root(&root, true).is_ok()
        && (fs::create_dir(&probe).is_ok() || probe.is_dir())
        && probe.join("pids.max").exists();
    let _ = fs::remove_dir(&probe);
    let _ = fs::remove_dir(&root);
    ok.then_some(Contain::V2 { root })
}

/// Creates the parent cgroup if missing (v2: with the pids and, if present, memory
/// controllers enabled for its children).
pub(crate) fn ensure_root(root: &Path, v2: bool) -> io::Result<()> {
    match fs::create_dir(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if v2 {
        write_file(&root.join("cgroup.subtree_control"), "+pids")?;
        // Memory limits share the task's cgroup on v2 (see memlimit.rs).
        let _ = write_file(&root.join("cgroup.subtree_control"), "+memory");
    }
    Ok(())
}

pub(crate) fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// Creates `<root>/<job>_<index>_<attempt>` with its process limit (0 = none).
pub(crate) fn create_task(root: &Path, v2: bool, key: TaskKey, attempt: u32, pids_max: u64) -> io::Result<PathBuf> {
    ensure_root(root, v2)?;
    let dir = root.join(format!("{}_{}_{}", key.job, key.index, attempt));
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Leftover of an earlier agent with the same pid: empty it and reuse it.
            kill_cgroup(&dir, v2, libc::SIGKILL, false);
        }
        Err(e) => return Err(e),
    }
    if pids_max > 0 {
        write_file(&dir.join("pids.max"), &pids_max.to_string())?;
    }
    Ok(dir)
}

fn gettid() -> String {
    // SAFETY: plain syscall.
    unsafe { libc::syscall(libc::SYS_gettid) }.to_string()
}

/// v1: moves the calling thread (not the whole agent) into the cgroup `dir`.
pub(crate) fn enter(dir: &Path) -> io::Result<()> {
    write_file(&dir.join("tasks"), &gettid())
}

/// v1: moves the calling thread back to the agent's own cgroup.
pub(crate) fn leave(mut home: &File) -> io::Result<()> {
    home.write_all(gettid().as_bytes())
}

/// Signals every process of a task cgroup. `freeze` first sets `pids.max` to 0 so that
/// nothing can fork while we kill (a fork bomb would otherwise outrun one pass).
/// An empty cgroup (the common case at a task's end) costs one read.
pub(crate) fn kill_cgroup(dir: &Path, v2: bool, sig: i32, freeze: bool) {
    let pids = memlimit::members(dir);
    if pids.is_empty() {
        return;
    }
    if freeze {
        let _ = write_file(&dir.join("pids.max"), "0");
    }
    // v2 (kernel >= 5.14) kills the whole cgroup atomically.
    if v2 && sig == libc::SIGKILL && write_file(&dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    memlimit::signal_pids(&pids, sig);
    if freeze {
        // Forks that were under way when we read the list.
        memlimit::kill_members(dir, sig);
    }
}

/// Kills what is left and removes the cgroup; retries while dying processes keep it busy.
pub(crate) async fn remove(dir: PathBuf, v2: bool) {
    for i in 0..100u32 {
        // The first try is a bare rmdir: the reaper has just emptied the cgroup.
        if i > 0 {
            kill_cgroup(&dir, v2, libc::SIGKILL, true);
        }
        match fs::remove_dir(&dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                if i == 99 {
                    warn!(path = %dir.display(), error = %e, "cannot remove task cgroup");
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(if i < 10 { 5 } else { 50 })).await;
    }
}

/// The trailing `-<pid>` of a parent cgroup name such as `rudel-123` or `rudel-test-123`.
fn owner_pid(dir_name: &str) -> Option<u32> {
    if !dir_name.starts_with("rudel-") {
        return None;
    }
    dir_name.rsplit('-').next()?.parse().ok()
}

/// Removes parent cgroups left by agents that died (kill -9, crash) in the directory
/// where ours goes, and leftovers in a directory of our own name (a previous agent
/// process with the same pid, as in a container). Their members are orphans of the dead
/// agent: killed, then the cgroups removed. A directory whose agent pid is alive is left
/// alone (it may be another agent on this machine).
pub(crate) fn clean_stale(home_dir: &Path, own_name: &str, v2: bool) {
    let Ok(rd) = fs::read_dir(home_dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        let ours = name == own_name;
        if !ours && Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = e.path();
        if !dir.is_dir() {
            continue;
        }
        let removed = remove_tree_now(&dir, v2);
        info!(path = %dir.display(), removed, "removed cgroups left by a previous agent process");
    }
}

/// Kills the members of every task cgroup in `parent` and removes them and `parent`
/// (bounded wait for the killed processes to die). Returns whether all went.
fn remove_tree_now(parent: &Path, v2: bool) -> bool {
    let subdirs: Vec<PathBuf> = fs::read_dir(parent)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    for d in &subdirs {
        if memlimit::members(d).contains(&0) {
            // Members from another pid namespace: not ours to kill.
            return false;
        }
    }
    let mut left = subdirs;
    for i in 0..100u32 {
        left.retain(|d| {
            kill_cgroup(d, v2, libc::SIGKILL, i == 0);
            fs::remove_dir(d).is_err() && d.exists()
        });
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(if i < 10 { 5 } else { 20 }));
    }
    left.is_empty() && fs::remove_dir(parent).is_ok()
}

// ---------------------------------------------------------------------------------------
// Process-tree tracking (no cgroup).

/// (ppid, state, start time) from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u32, u8, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may contain spaces and parentheses: fields after the last ')'.
    let rest: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
    Some((
        rest.get(1)?.parse().ok()?,
        *rest.first()?.as_bytes().first()?,
        rest.get(19)?.parse().ok()?,
    ))
}

/// Field 22 of `/proc/<pid>/stat` (clock ticks since boot).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.2)
}

/// Whether the kernel has `/proc/<pid>/task/<tid>/children` (CONFIG_PROC_CHILDREN).
fn have_children_files() -> bool {
    static HAVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAVE.get_or_init(|| {
        let me = std::process::id();
        Path::new(&format!("/proc/{me}/task/{me}/children")).exists()
    })
}

/// Children of `pid` (of all its threads).
fn children(pid: u32) -> Vec<u32> {
    if !have_children_files() {
        return scan_children(pid);
    }
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in rd.flatten() {
        let Ok(s) = fs::read_to_string(t.path().join("children")) else {
            continue;
        };
        out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}

/// Children of `pid` by a full scan of /proc (kernels without children files).
fn scan_children(pid: u32) -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|&p| stat(p).is_some_and(|s| s.0 == pid))
        .collect()
}

/// Whether the process's (initial) environment carries `RUDEL_TASK=<marker>`.
fn has_marker(pid: u32, marker: &str) -> bool {
    let Ok(env) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let want = format!("{TASK_MARKER}={marker}");
    env.split(|&b| b == 0).any(|v| v == want.as_bytes())
}

/// Signals `pid` if it is still the child of `parent` and started no earlier than the
/// task (`since`): a pidfd pins the process, so a pid reused after the check is never hit.
fn signal_checked(pid: u32, parent: u32, since: u64, sig: i32) -> bool {
    // SAFETY: plain syscalls; the fd is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) } as libc::c_int;
    let ok = matches!(stat(pid), Some((pp, st, start)) if pp == parent && st != b'Z' && start >= since);
    if fd < 0 {
        // No pidfd (old kernel): the check and the kill are two steps.
        if ok {
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid as i32, sig) };
        }
        return ok;
    }
    if ok {
        // SAFETY: plain syscall on our fd.
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, sig, std::ptr::null::<u8>(), 0) };
    }
    // SAFETY: we own fd.
    unsafe { libc::close(fd) };
    ok
}

/// Signals every process of a task outside its process group, found by the tree: the
/// descendants of the leader and every child of the agent that carries the task's marker
/// (other task leaders carry other markers), with their descendants. Returns how many
/// were signalled. The leader's own group is signalled by the caller. `leader` is `None`
/// once it has been reaped (its pid may be reused; its children went to the agent when
/// it exited).
pub(crate) fn sweep(leader: Option<u32>, marker: &str, since: u64, sig: i32) -> usize {
    let me = std::process::id();
    let mut roots: Vec<(u32, u32)> = match leader {
        Some(l) => children(l).into_iter().map(|c| (c, l)).collect(),
        None => Vec::new(),
    };
    for c in children(me) {
        if Some(c) != leader && has_marker(c, marker) {
            roots.push((c, me));
        }
    }
    let mut n = 0;
    // Depth-first; bounded so that a malformed /proc cannot keep us here.
    let mut stack = roots;
    let mut visited = 0usize;
    while let Some((pid, parent)) = stack.pop() {
        visited += 1;
        if visited > 100_000 {
            break;
        }
        // Children first, while `pid` still holds them (killing it re-parents them).
        stack.extend(children(pid).into_iter().map(|c| (c, pid)));
        if signal_checked(pid, parent, since, sig) {
            n += 1;
        }
    }
    n
}

/// Best-effort process limit for a non-root agent without cgroups: `RLIMIT_NPROC` counts
/// every process of the user, not only the task's.
pub(crate) fn set_nproc(pid: u32, max: u64) {
    let rl = libc::rlimit {
        rlim_cur: max,
        rlim_max: max,
    };
    // SAFETY: plain syscall on a stack value.
    if unsafe { libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NPROC, &rl, std::ptr::null_mut()) } != 0 {
        debug!(pid, error = %io::Error::last_os_error(), "cannot set RLIMIT_NPROC");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_agent_and_test_names() {
        assert_eq!(owner_pid("rudel-123"), Some(123));
        assert_eq!(owner_pid("rudel-test-child-77"), Some(77));
        assert_eq!(owner_pid("rudel-abc"), None);
        assert_eq!(owner_pid("other-1"), None);
    }

    #[test]
    fn descriptions_name_missing_protections() {
        let tree = Contain::Tree { nproc: false };
        assert_eq!(
            describe(&tree, &MemMode::Rlimit, 1024),
            "process-tree (no process limit, memory via RLIMIT_AS)"
        );
        let v2 = Contain::V2 { root: "/x".into() };
        let mem = MemMode::V2 { root: "/x".into() };
        assert_eq!(describe(&v2, &mem, 1024), "cgroup-v2 (pids.max 1024, memory)");
        assert_eq!(
            describe(&v2, &mem, 0),
            "cgroup-v2 (no process limit: --task-pids-max 0, memory)"
        );
        assert_eq!(
            describe(&Contain::Tree { nproc: true }, &MemMode::Rlimit, 10),
            "process-tree (RLIMIT_NPROC 10 per user, memory via RLIMIT_AS)"
        );
    }

    #[test]
    fn own_path_from_proc_cgroup() {
        let s = "9:name=systemd:/\n8:pids:/a/b\n4:memory:/m\n0::/\n";
        assert_eq!(own_v1_path(s, "pids").as_deref(), Some("a/b"));
        assert_eq!(own_v1_path(s, "memory").as_deref(), Some("m"));
        assert_eq!(own_v1_path(s, "cpuset"), None);
    }
}
