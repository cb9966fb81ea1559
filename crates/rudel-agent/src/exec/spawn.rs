//! The spawner thread: every task is started here, so the thread's CPU affinity (set per
//! task) is inherited by the child.
//!
//! Every task starts through [`vspawn`] (`clone(CLONE_VM|CLONE_VFORK)`, no page-table
//! copy): new session, signal reset, cgroups or `RLIMIT_AS`, the job's user, and its own
//! pid in `SLURM_TASK_PID`. On cgroup v1 the spawner thread joins the task's pids cgroup
//! around the spawn (see contain.rs); memory cgroups and v2 cgroups are joined by the
//! child. Output files are opened here with the job's user as the thread's filesystem
//! identity (see [`super::fsid`]), so a user can only write where the user may.
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use rudel_core::{TaskOutcome, TaskReport};
use tracing::warn;

use super::contain::{self, Contain};
use super::memlimit::{self, MemMode};
use super::private_tmp;
use super::vspawn::{vspawn, Plan, SpawnError, Stack, Step};
use super::{errno_text, now_ms, ExecSpec, Inner, StderrTarget, Task, Track};

pub(crate) enum Request {
    Launch {
        spec: Box<ExecSpec>,
        reply: mpsc::SyncSender<Option<u32>>,
    },
    Stop,
}

/// The spawner thread's loop.
pub(crate) fn run(inner: &Arc<Inner>, rx: mpsc::Receiver<Request>, devnull: OwnedFd) {
    let mut aff = Affinity::new();
    let stack = match Stack::new() {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot map the spawn stack; every task will fail to start");
            None
        }
    };
    while let Ok(req) = rx.recv() {
        match req {
            Request::Stop => break,
            Request::Launch { spec, reply } => {
                let pid = launch(inner, &mut aff, stack.as_ref(), &devnull, *spec);
                let _ = reply.send(pid);
            }
        }
    }
}

/// A task that could not start: why, and the exit code a shell would give.
struct Failure {
    code: i32,
    reason: String,
}

impl Failure {
    fn exec(errno: i32, what: &str) -> Failure {
        let code = if errno == libc::EACCES || errno == libc::ENOEXEC || errno == libc::EPERM {
            126
        } else {
            127
        };
        Failure {
            code,
            reason: format!("rudel: {what}: {}", errno_text(errno)),
        }
    }
}

/// The task's output files, opened by us (close-on-exec; dup2'ed in the child).
struct Stdio {
    out: Option<File>,
    err: ErrFile,
}

enum ErrFile {
    Discard,
    SameAsOut,
    File(File),
}

impl Stdio {
    /// Where a spawn-failure reason is written: error file, else output file.
    fn reason_sink(&self) -> Option<&File> {
        match &self.err {
            ErrFile::File(f) => Some(f),
            ErrFile::SameAsOut => self.out.as_ref(),
            ErrFile::Discard => None,
        }
    }
}

fn abs(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

fn open_out(path: &Path, append: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(!append)
        .append(append)
        .mode(0o644)
        .open(path)
}

/// Opens stdout/stderr files. On failure, the reason goes to the other file if it opened.
fn open_stdio(spec: &ExecSpec) -> Result<Stdio, (Failure, Option<File>)> {
    let out_path = spec.stdout.as_ref().map(|p| abs(&spec.cwd, p));
    let mut err_target = spec.stderr.clone();
    if let (StderrTarget::File(e), Some(o)) = (&err_target, &out_path) {
        if abs(&spec.cwd, e) == *o {
            err_target = StderrTarget::SameAsStdout;
        }
    }
    let out = match &out_path {
        None => Ok(None),
        Some(p) => open_out(p, spec.append_output).map(Some).map_err(|e| (p.clone(), e)),
    };
    let err = match &err_target {
        StderrTarget::File(p) => {
            let p = abs(&spec.cwd, p);
            open_out(&p, spec.append_output).map(ErrFile::File).map_err(|e| (p, e))
        }
        StderrTarget::Discard => Ok(ErrFile::Discard),
        StderrTarget::SameAsStdout => Ok(ErrFile::SameAsOut),
    };
    let fail = |what: &str, p: &Path, e: std::io::Error| {
        Failure::exec(
            e.raw_os_error().unwrap_or(libc::EIO),
            &format!("cannot open {what} file '{}'", p.display()),
        )
    };
    match (out, err) {
        (Ok(out), Ok(err)) => Ok(Stdio { out, err }),
        (Err((p, e)), Ok(err)) => {
            let sink = match err {
                ErrFile::File(f) => Some(f),
                _ => None,
            };
            Err((fail("output", &p, e), sink))
        }
        (Ok(out), Err((p, e))) => Err((fail("error", &p, e), out)),
        (Err((p, e)), Err(_)) => Err((fail("output", &p, e), None)),
    }
}

/// Resolves argv[0] like `execvp`, but with the task's `PATH` (glibc's `posix_spawnp`
/// would search the agent's own `PATH`).
fn resolve(spec: &ExecSpec) -> Result<PathBuf, i32> {
    let name = &spec.argv[0];
    if name.is_empty() {
        return Err(libc::ENOENT);
    }
    if name.contains('/') {
        // Relative to the task's cwd: the child changes directory before exec.
        return Ok(PathBuf::from(name));
    }
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/bin:/usr/bin");
    let mut saw_eacces = false;
    for dir in path.split(':') {
        let cand = if dir.is_empty() {
            spec.cwd.join(name)
        } else {
            abs(&spec.cwd, Path::new(dir)).join(name)
        };
        match std::fs::metadata(&cand) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(cand),
            Ok(_) => saw_eacces = true,
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => saw_eacces = true,
            Err(_) => {}
        }
    }
    Err(if saw_eacces { libc::EACCES } else { libc::ENOENT })
}

fn report_failure(inner: &Inner, spec: &ExecSpec, start_ms: u64, f: Failure, sink: Option<&File>) {
    if let Some(mut file) = sink {
        let _ = file.write_all(format!("{}\n", f.reason).as_bytes());
    }
    inner.send_report(TaskReport {
        key: spec.key,
        attempt: spec.attempt,
        outcome: TaskOutcome::SpawnFailed,
        exit_code: Some(f.code),
        signal: None,
        start_ms,
        end_ms: now_ms(),
        message: f.reason,
        usage: Default::default(),
    });
}

/// Starts one task; reports its failure itself. Returns the pid.
fn launch(
    inner: &Arc<Inner>,
    aff: &mut Affinity,
    stack: Option<&Stack>,
    devnull: &OwnedFd,
    mut spec: ExecSpec,
) -> Option<u32> {
    let start_ms = now_ms();
    set_marker(
        &mut spec.env,
        contain::task_marker(&inner.cfg.marker_owner, spec.key, spec.attempt),
    );
    {
        let st = inner.lock();
        if let Some(&pid) = st.by_key.get(&(spec.key, spec.attempt)) {
            return Some(pid);
        }
        if st.shutting_down {
            drop(st);
            let f = Failure {
                code: 127,
                reason: "rudel: the agent is shutting down".into(),
            };
            report_failure(inner, &spec, start_ms, f, None);
            return None;
        }
    }
    if spec.argv.is_empty() {
        let f = Failure {
            code: 127,
            reason: "rudel: empty command".into(),
        };
        report_failure(inner, &spec, start_ms, f, None);
        return None;
    }
    // Files are opened, and the program looked up, with the job's user as this thread's
    // filesystem identity: `-o /root/x` by alice fails with EACCES as it would for her.
    let fs_id = match spec.run_as.as_ref().map(super::fsid::FsId::assume).transpose() {
        Ok(g) => g,
        Err(e) => {
            let f = Failure::exec(
                e.raw_os_error().unwrap_or(libc::EPERM),
                "cannot take the job's user identity",
            );
            report_failure(inner, &spec, start_ms, f, None);
            return None;
        }
    };
    let stdio = match open_stdio(&spec) {
        Ok(s) => s,
        Err((f, sink)) => {
            drop(fs_id);
            report_failure(inner, &spec, start_ms, f, sink.as_ref());
            return None;
        }
    };
    let prog = resolve(&spec);
    drop(fs_id);
    let prog = match prog {
        Ok(p) => p,
        Err(errno) => {
            let f = Failure::exec(errno, &format!("cannot execute '{}'", spec.argv[0]));
            report_failure(inner, &spec, start_ms, f, stdio.reason_sink());
            return None;
        }
    };
    aff.apply(&spec.cores);
    let result = match (
        stack,
        Plan::new(
            prog.as_os_str().as_bytes(),
            spec.cwd.as_os_str().as_bytes(),
            &spec.argv,
            &spec.env,
        ),
    ) {
        (_, Err(_)) => Err(Failure {
            code: 127,
            reason: "rudel: invalid command: an argument, variable or path contains a NUL byte".into(),
        }),
        (None, Ok(_)) => Err(Failure {
            code: 127,
            reason: "rudel: the agent cannot start tasks (no spawn stack)".into(),
        }),
        (Some(stack), Ok(plan)) => spawn_task(inner, stack, devnull, &stdio, &spec, plan, start_ms),
    };
    match result {
        Ok(pid) => Some(pid),
        Err(f) => {
            report_failure(inner, &spec, start_ms, f, stdio.reason_sink());
            None
        }
    }
}

/// Puts `RUDEL_TASK=<marker>` in the task's environment (replacing any given one): how
/// the task's processes are recognised when they leave its process group and there is
/// no cgroup, and how the next agent process finds the task after a crash.
fn set_marker(env: &mut Vec<(String, String)>, marker: String) {
    env.retain(|(k, _)| k != contain::TASK_MARKER);
    env.push((contain::TASK_MARKER.into(), marker));
}

/// The containment cgroup made for a task about to be spawned.
#[derive(Default)]
struct Placement {
    /// (directory, is v2).
    cgroup: Option<(PathBuf, bool)>,
    /// v1: the spawner thread is in the task's cgroup and must leave after the spawn.
    entered: bool,
}

impl Placement {
    /// Makes the task's cgroup (state lock held, so that removal of the empty parent
    /// cannot race) and, on v1, moves the spawner thread into it: the child inherits the
    /// thread's cgroup. Without a usable cgroup the task is tracked by process tree.
    fn make(inner: &Inner, st: &mut super::State, spec: &ExecSpec) -> Placement {
        let (root, v2) = match &inner.contain {
            Contain::V1 { root, .. } => (root, false),
            Contain::V2 { root } => (root, true),
            Contain::Tree { .. } => return Placement::default(),
        };
        let dir = match contain::create_task(root, v2, spec.key, spec.attempt, inner.cfg.pids_max) {
            Ok(d) => d,
            Err(e) => {
                warn!(task = %spec.key, error = %e, "cannot create the task's cgroup; tracking it by process tree");
                return Placement::default();
            }
        };
        if !v2 {
            if let Err(e) = contain::enter(&dir) {
                warn!(task = %spec.key, error = %e, "cannot join the task's cgroup; tracking it by process tree");
                let _ = std::fs::remove_dir(&dir);
                return Placement::default();
            }
        }
        st.cgroups_alive += 1;
        Placement {
            cgroup: Some((dir, v2)),
            entered: !v2,
        }
    }

    /// Right after the spawn: the spawner thread goes back to the agent's cgroup.
    fn leave(&mut self, inner: &Inner) {
        if !std::mem::take(&mut self.entered) {
            return;
        }
        if let Contain::V1 { home, .. } = &inner.contain {
            if let Err(e) = contain::leave(home) {
                // The next spawn moves the thread again; this cgroup stays until then.
                tracing::error!(error = %e, "cannot move the spawner thread back to the agent's cgroup");
            }
        }
    }

    /// The spawn failed: remove the (empty) cgroup.
    fn undo(self, inner: &Inner, st: &mut super::State) {
        if let Some((dir, _)) = self.cgroup {
            let _ = std::fs::remove_dir(&dir);
            inner.release_cgroup(st);
        }
    }

    /// How the spawned task `pid` is tracked.
    fn track(self, inner: &Inner, spec: &ExecSpec, pid: u32) -> Track {
        match self.cgroup {
            Some((dir, v2)) => Track::Cgroup { dir, v2 },
            None => {
                if let Contain::Tree { nproc: true } = inner.contain {
                    if inner.cfg.pids_max > 0 {
                        contain::set_nproc(pid, inner.cfg.pids_max);
                    }
                }
                Track::Tree {
                    marker: contain::task_marker(&inner.cfg.marker_owner, spec.key, spec.attempt),
                    since: contain::start_time(pid).unwrap_or(0),
                }
            }
        }
    }
}

/// Registers a spawned task (state lock held by the caller) and wakes the reaper.
#[allow(clippy::too_many_arguments)]
fn register(
    inner: &Arc<Inner>,
    st: &mut super::State,
    spec: &ExecSpec,
    pid: u32,
    start_ms: u64,
    cgroup: Option<memlimit::TaskCgroup>,
    track: Track,
    mem_rlimit: bool,
    private_tmp: Option<PathBuf>,
) {
    st.tasks.insert(
        pid,
        Task {
            key: spec.key,
            attempt: spec.attempt,
            start_ms,
            kill_reason: None,
            timers: Vec::new(),
            cgroup,
            track,
            mem_bytes: spec.mem_bytes,
            mem_rlimit,
            private_tmp,
        },
    );
    st.by_key.insert((spec.key, spec.attempt), pid);
    st.spawn_gen = st.spawn_gen.wrapping_add(1);
    if let Some(limit) = spec.time_limit {
        inner.arm_time_limit(st, pid, limit);
        if let Some(warn) = spec.warn {
            inner.arm_warning(st, pid, limit, warn);
        }
    }
    inner.reaper_cv.notify_one();
}

/// Starts the task through [`vspawn`]: the child joins the task's cgroups (or sets
/// `RLIMIT_AS`), switches to the job's user and execs. Reports nothing itself.
fn spawn_task(
    inner: &Arc<Inner>,
    stack: &Stack,
    devnull: &OwnedFd,
    stdio: &Stdio,
    spec: &ExecSpec,
    mut plan: Plan,
    start_ms: u64,
) -> Result<u32, Failure> {
    let null = devnull.as_raw_fd();
    let out = stdio.out.as_ref().map_or(null, |f| f.as_raw_fd());
    let err = match &stdio.err {
        ErrFile::Discard => null,
        ErrFile::SameAsOut => out,
        ErrFile::File(f) => f.as_raw_fd(),
    };
    let input = spec.stdin.as_ref().map_or(null, |f| f.as_raw_fd());
    plan.stdio = [input, out, err];
    plan.creds = spec.run_as.clone();

    let mut st = inner.lock();
    if let Some(&pid) = st.by_key.get(&(spec.key, spec.attempt)) {
        // Launched concurrently by another request: still a no-op.
        return Ok(pid);
    }
    // After the check above: a second launch of a running attempt must not empty its /tmp.
    let tmp_dir = task_tmp(inner, spec)?;
    plan.private_tmp = tmp_dir
        .as_ref()
        .and_then(|d| std::ffi::CString::new(d.as_os_str().as_bytes()).ok());
    // Cgroups are made under the lock so that removal of the (empty) parent cannot race.
    let mut place = Placement::make(inner, &mut st, spec);
    let cg_root = match &inner.mem {
        _ if spec.mem_bytes == 0 => None,
        MemMode::V1 { root } => Some((root.clone(), false)),
        MemMode::V2 { root } => Some((root.clone(), true)),
        MemMode::Rlimit => None,
    };
    let prepared = cg_root.and_then(|(root, v2)| {
        match memlimit::create_task_cgroup(&root, v2, spec.key, spec.attempt, spec.mem_bytes) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!(task = %spec.key, error = %e, "cannot create task cgroup; using RLIMIT_AS");
                None
            }
        }
    });
    // On v2 the memory limit and the process limit share one cgroup.
    let same_dir = matches!((&place.cgroup, &prepared), (Some((d, _)), Some(p)) if *d == p.cgroup.dir);
    if prepared.is_some() && !same_dir {
        st.cgroups_alive += 1;
    }
    // v2 containment without a memory cgroup in the same directory: the child joins it
    // (v2 cannot move a single thread, so the spawner thread cannot join it for us).
    let v2_procs = match &place.cgroup {
        Some((dir, true)) if !same_dir => {
            match std::fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs")) {
                Ok(f) => Some(OwnedFd::from(f)),
                Err(e) => {
                    warn!(task = %spec.key, error = %e, "cannot open the task's cgroup; tracking it by process tree");
                    std::mem::take(&mut place).undo(inner, &mut st);
                    None
                }
            }
        }
        _ => None,
    };
    plan.procs_fds = [
        prepared.as_ref().map_or(-1, memlimit::procs_fd),
        v2_procs.as_ref().map_or(-1, |f| f.as_raw_fd()),
    ];
    plan.rlimit_as = if prepared.is_some() { 0 } else { spec.mem_bytes };
    let spawned = vspawn(&plan, stack);
    place.leave(inner);
    match spawned {
        Ok(pid) => {
            let cg = prepared.map(|p| p.cgroup);
            let track = place.track(inner, spec, pid);
            register(
                inner,
                &mut st,
                spec,
                pid,
                start_ms,
                cg,
                track,
                plan.rlimit_as > 0,
                tmp_dir,
            );
            Ok(pid)
        }
        Err(e) => {
            if let Some(p) = prepared {
                if !same_dir {
                    let _ = std::fs::remove_dir(&p.cgroup.dir);
                    inner.release_cgroup(&mut st);
                }
            }
            place.undo(inner, &mut st);
            drop(st);
            if let Some(d) = &tmp_dir {
                private_tmp::remove(d);
            }
            Err(child_failure(spec, e))
        }
    }
}

/// The task's fresh private `/tmp` directory, when the agent gives tasks one.
fn task_tmp(inner: &Arc<Inner>, spec: &ExecSpec) -> Result<Option<PathBuf>, Failure> {
    let Some(base) = &inner.cfg.private_tmp else {
        return Ok(None);
    };
    private_tmp::prepare(base, spec.key, spec.attempt)
        .map(Some)
        .map_err(|e| {
            Failure::exec(
                e.raw_os_error().unwrap_or(libc::EIO),
                &format!("cannot make the task's private /tmp under {}", base.display()),
            )
        })
}

/// The diagnostics of a child that could not exec: which step failed, and why.
fn child_failure(spec: &ExecSpec, e: SpawnError) -> Failure {
    let (step, errno) = match e {
        SpawnError::Clone(errno) => return Failure::exec(errno, "cannot start the task (clone)"),
        SpawnError::Child(c) => (c.step, c.errno),
    };
    let user = || match &spec.run_as {
        Some(c) => format!("uid {} gid {}", c.uid, c.gid),
        None => "the agent's user".into(),
    };
    let what = match step {
        Step::Chdir => format!("cannot change directory to '{}'", spec.cwd.display()),
        Step::Exec | Step::None => format!("cannot execute '{}'", spec.argv[0]),
        Step::Setsid => "cannot start a new session".into(),
        Step::Cgroup => "cannot join the task's cgroup".into(),
        Step::Rlimit => "cannot set the memory limit (RLIMIT_AS)".into(),
        Step::Setgroups | Step::Setgid | Step::Setuid => format!("cannot switch to {}", user()),
        Step::Dup => "cannot set up standard input/output".into(),
        Step::Namespace => "cannot make the task's mount namespace (private /tmp)".into(),
        Step::Mount => "cannot mount the task's private /tmp".into(),
    };
    Failure::exec(errno, &what)
}

/// The spawner thread's CPU affinity (inherited by children).
struct Affinity {
    full: Option<libc::cpu_set_t>,
    current: Vec<u32>,
}

impl Affinity {
    fn new() -> Affinity {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
        let full = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0).then_some(set)
        };
        Affinity {
            full,
            current: Vec::new(),
        }
    }

    fn set(set: &libc::cpu_set_t) -> bool {
        // SAFETY: valid cpu_set_t of the size passed.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) == 0 }
    }

    fn apply(&mut self, cores: &[u32]) {
        if cores == self.current.as_slice() {
            return;
        }
        let Some(full) = self.full else {
            return;
        };
        if cores.is_empty() {
            if !Self::set(&full) {
                warn!(error = %std::io::Error::last_os_error(), "cannot reset CPU affinity");
            }
            self.current.clear();
            return;
        }
        // The head numbers cores 0..cpus; they are the agent's allowed CPUs in order (the
        // agent may itself be confined to, say, CPUs 4-7).
        let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: CPU_ISSET reads a valid cpu_set_t within its capacity.
        let allowed: Vec<usize> = (0..max).filter(|&c| unsafe { libc::CPU_ISSET(c, &full) }).collect();
        if allowed.is_empty() {
            return;
        }
        // SAFETY: cpu_set_t is plain data.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in cores {
            let cpu = allowed[c as usize % allowed.len()];
            // SAFETY: cpu comes from `allowed`, so it is below the set's capacity.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        if Self::set(&set) {
            self.current = cores.to_vec();
        } else {
            warn!(?cores, error = %std::io::Error::last_os_error(), "cannot pin task; running unpinned");
            let _ = Self::set(&full);
            self.current.clear();
        }
    }
}
