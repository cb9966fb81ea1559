//! Memory limits: per-task cgroups (v2 or v1 memory controller) or, without a usable
//! cgroup, `RLIMIT_AS`.
//!
//! Layout: `<mount>/<cgroup_name>/<job>_<index>_<attempt>`. The parent is created lazily
//! when a memory-limited task starts and removed when the last per-task cgroup is gone.
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rudel_core::TaskKey;
use tracing::{debug, warn};

/// Which mechanism enforces `mem_bytes` on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MemMode {
    /// cgroup v2 with the memory controller: `root` is the parent cgroup of the tasks.
    V2 { root: PathBuf },
    /// cgroup v1 memory controller: `root` is the parent cgroup of the tasks.
    V1 { root: PathBuf },
    /// No usable cgroup: `setrlimit(RLIMIT_AS)` in the child.
    Rlimit,
}

impl MemMode {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            MemMode::V2 { .. } => "cgroup-v2",
            MemMode::V1 { .. } => "cgroup-v1",
            MemMode::Rlimit => "rlimit",
        }
    }
}

/// Finds how memory limits can be enforced; `cgroup_name` names the parent cgroup of the
/// per-task cgroups. Probes by creating (and removing) the parent cgroup.
pub(crate) fn detect(cgroup_name: &str) -> MemMode {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut v2_mounts = Vec::new();
    let mut v1_mounts = Vec::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let (dir, fstype, opts) = (f[1], f[2], f[3]);
        if fstype == "cgroup2" {
            v2_mounts.push(PathBuf::from(dir));
        } else if fstype == "cgroup" && opts.split(',').any(|o| o == "memory") {
            v1_mounts.push(PathBuf::from(dir));
        }
    }
    for m in v2_mounts {
        let ctl = fs::read_to_string(m.join("cgroup.controllers")).unwrap_or_default();
        if !ctl.split_whitespace().any(|c| c == "memory") {
            continue;
        }
        // Enable the memory controller for children of the mount root, then in our parent.
        let _ = write_file(&m.join("cgroup.subtree_control"), "+memory");
        let root = m.join(cgroup_name);
        if probe_parent(&root, true) {
            return MemMode::V2 { root };
        }
    }
    for m in v1_mounts {
        let mut candidates = vec![m.join(cgroup_name)];
        // Fallback: below our own memory cgroup (a delegated subtree in a container).
        if let Some(own) = own_v1_memory_cgroup() {
            let own = own.trim_start_matches('/');
            if !own.is_empty() {
                candidates.push(m.join(own).join(cgroup_name));
            }
        }
        for root in candidates {
            if let Some(parent) = root.parent() {
                // Memory cgroups of agents killed with -9 (their tasks are orphans).
                super::contain::clean_stale(parent, cgroup_name, false);
            }
            if probe_parent(&root, false) {
                return MemMode::V1 { root };
            }
        }
    }
    MemMode::Rlimit
}

fn own_v1_memory_cgroup() -> Option<String> {
    let s = fs::read_to_string("/proc/self/cgroup").ok()?;
    s.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _id = parts.next()?;
        let ctrls = parts.next()?;
        let path = parts.next()?;
        ctrls.split(',').any(|c| c == "memory").then(|| path.to_string())
    })
}

/// Creates the parent cgroup and a child in it to check that we may and that the child
/// gets the memory controller, then removes both.
fn probe_parent(root: &Path, v2: bool) -> bool {
    if let Err(e) = ensure_parent(root, v2) {
        debug!(path = %root.display(), error = %e, "cgroup not usable");
        return false;
    }
    let probe = root.join("probe");
    let ok = fs::create_dir(&probe).is_ok() || probe.exists();
    let limit = if v2 { "memory.max" } else { "memory.limit_in_bytes" };
    let ok = ok && probe.join(limit).exists();
    let _ = fs::remove_dir(&probe);
    let _ = fs::remove_dir(root);
    ok
}

/// Creates the parent cgroup if missing.
pub(crate) fn ensure_parent(root: &Path, v2: bool) -> io::Result<()> {
    match fs::create_dir(root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if v2 {
        write_file(&root.join("cgroup.subtree_control"), "+memory")?;
    }
    Ok(())
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// The cgroup of one running task.
#[derive(Debug)]
pub(crate) struct TaskCgroup {
    pub(crate) dir: PathBuf,
    pub(crate) v2: bool,
}

/// A freshly made task cgroup and the open `cgroup.procs` the child writes "0" to.
pub(crate) struct Prepared {
    pub(crate) cgroup: TaskCgroup,
    pub(crate) procs: OwnedFd,
}

/// Creates `<root>/<job>_<index>_<attempt>` with the limit set.
pub(crate) fn create_task_cgroup(
    root: &Path,
    v2: bool,
    key: TaskKey,
    attempt: u32,
    mem_bytes: u64,
) -> io::Result<Prepared> {
    ensure_parent(root, v2)?;
    let dir = root.join(format!("{}_{}_{}", key.job, key.index, attempt));
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Leftover of an earlier agent: empty it and reuse it.
            kill_members(&dir, libc::SIGKILL);
        }
        Err(e) => return Err(e),
    }
    let cg = TaskCgroup { dir, v2 };
    let limit = mem_bytes.to_string();
    if v2 {
        write_file(&cg.dir.join("memory.max"), &limit)?;
        let swap = cg.dir.join("memory.swap.max");
        if swap.exists() {
            let _ = write_file(&swap, "0");
        }
    } else {
        // memsw must stay >= limit: raise it first when shrinking is not the case.
        let memsw = cg.dir.join("memory.memsw.limit_in_bytes");
        let has_memsw = memsw.exists();
        if has_memsw {
            let _ = write_file(&memsw, "-1");
        }
        write_file(&cg.dir.join("memory.limit_in_bytes"), &limit)?;
        if has_memsw {
            if let Err(e) = write_file(&memsw, &limit) {
                debug!(error = %e, "cannot set memory.memsw.limit_in_bytes");
            }
        }
    }
    let procs = fs::OpenOptions::new().write(true).open(cg.dir.join("cgroup.procs"))?;
    Ok(Prepared {
        cgroup: cg,
        procs: OwnedFd::from(procs),
    })
}

/// Raw fd of a prepared cgroup.procs (for the child's pre-exec hook).
pub(crate) fn procs_fd(p: &Prepared) -> i32 {
    p.procs.as_raw_fd()
}

/// Pids currently in the cgroup.
pub(crate) fn members(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Sends `sig` to every process of the cgroup. Returns how many were signalled.
pub(crate) fn kill_members(dir: &Path, sig: i32) -> usize {
    signal_pids(&members(dir), sig)
}

/// Sends `sig` to each pid. Never to the agent itself: on cgroup v1 its spawner thread
/// is inside a task's cgroup for the instant of a spawn, which lists the agent's pid.
pub(crate) fn signal_pids(pids: &[i32], sig: i32) -> usize {
    let me = std::process::id() as i32;
    for &pid in pids {
        if pid > 0 && pid != me {
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid, sig) };
        }
    }
    pids.len()
}

/// How many OOM kills happened in the cgroup (`None` if not readable).
pub(crate) fn oom_kills(cg: &TaskCgroup) -> Option<u64> {
    let file = if cg.v2 { "memory.events" } else { "memory.oom_control" };
    let s = fs::read_to_string(cg.dir.join(file)).ok()?;
    s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some("oom_kill"))
            .then(|| it.next().and_then(|v| v.parse().ok()))
            .flatten()
    })
}

/// v1 fallback for kernels without the `oom_kill` counter: how often the limit was hit.
pub(crate) fn failcnt(cg: &TaskCgroup) -> u64 {
    if cg.v2 {
        return 0;
    }
    fs::read_to_string(cg.dir.join("memory.failcnt"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Kills leftovers and removes the cgroup; retries while dying processes keep it busy.
pub(crate) async fn remove(cg: TaskCgroup) {
    for i in 0..100u32 {
        kill_members(&cg.dir, libc::SIGKILL);
        match fs::remove_dir(&cg.dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                if i == 99 {
                    warn!(path = %cg.dir.display(), error = %e, "cannot remove task cgroup");
                    return;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(if i < 10 { 5 } else { 50 })).await;
    }
}

/// "50M"-style size.
pub(crate) fn human_bytes(b: u64) -> String {
    const K: u64 = 1024;
    for (unit, div) in [("T", K * K * K * K), ("G", K * K * K), ("M", K * K), ("K", K)] {
        if b >= div && b.checked_rem(div) == Some(0) {
            return format!("{}{}", b / div, unit);
        }
    }
    if b >= K * K {
        return format!("{:.1}M", b as f64 / (K * K) as f64);
    }
    format!("{b}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human() {
        assert_eq!(human_bytes(50 * 1024 * 1024), "50M");
        assert_eq!(human_bytes(2 * 1024 * 1024 * 1024), "2G");
        assert_eq!(human_bytes(1000), "1000B");
        assert_eq!(human_bytes(4096), "4K");
    }
}
