//! The agent's task executor: starts real processes, enforces time and memory limits,
//! reaps every child and reports each task's end exactly once.
//!
//! Threads: one spawner thread (all spawns, so CPU affinity can be set on that one
//! thread and inherited by the child; every spawn is a `vspawn`, see vspawn.rs) and one reaper
//! thread (`waitid`/`wait4` on any child: the process is a child subreaper, so orphaned
//! descendants of tasks are reaped too). Timers (time limit, SIGTERM→SIGKILL escalation)
//! are tokio tasks owned by the task's entry and aborted when the task is reaped.
//!
//! Locking: one mutex (`State`) guards the task table. The spawner holds it across a
//! spawn and the reaper holds it while reaping, so a child can never be reaped before
//! it is registered, and a task's pid (its process group id) cannot be reused while
//! anyone holding the lock sees the task as running.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rudel_core::{TaskKey, TaskOutcome, TaskReport};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tracing::warn;

pub(crate) mod contain;
mod fsid;
pub(crate) mod memlimit;
pub mod private_tmp;
mod reaper;
mod spawn;
#[cfg(test)]
mod tests;
mod vspawn;

pub use vspawn::Creds;

use contain::Contain;
use memlimit::{MemMode, TaskCgroup};

/// Where a task's standard error goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StderrTarget {
    /// Same file (and file offset) as standard output.
    SameAsStdout,
    /// `/dev/null`.
    Discard,
    /// Its own file (created or truncated, mode 0644).
    File(PathBuf),
}

/// Everything needed to start one attempt of one task.
#[derive(Clone, Debug)]
pub struct ExecSpec {
    pub key: TaskKey,
    pub attempt: u32,
    /// Non-empty; `argv[0]` is resolved via the task's `PATH` like `execvp`.
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// The complete environment of the task (nothing is inherited from the agent), to
    /// which the executor adds `RUDEL_TASK=job.index.attempt` (see [`contain::TASK_MARKER`]).
    pub env: Vec<(String, String)>,
    /// `None` = `/dev/null`. A relative path is relative to `cwd`.
    pub stdout: Option<PathBuf>,
    pub stderr: StderrTarget,
    /// CPU affinity; empty = no pinning.
    pub cores: Vec<u32>,
    /// 0 = no memory limit.
    pub mem_bytes: u64,
    pub time_limit: Option<Duration>,
    /// Signal the main process this long before the time limit (`--signal=B:SIG@TIME`).
    pub warn: Option<(i32, Duration)>,
    /// Append to the output files rather than truncate them (`--open-mode=append`).
    pub append_output: bool,
    /// Run as this user (output files opened as it too); `None` = the agent's user.
    pub run_as: Option<Creds>,
    /// The read end of a pipe to give the task as stdin (a job step's forwarded stdin);
    /// `None` = `/dev/null`. Shared so the spec stays `Clone`; the agent's copy is
    /// dropped after the spawn, so the task holds the only read end.
    pub stdin: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// Executor settings.
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// Delay between SIGTERM and SIGKILL on cancel and timeout.
    pub kill_grace: Duration,
    /// Name of the parent cgroup of the per-task cgroups, e.g. `rudel-<pid>`.
    pub cgroup_name: String,
    /// Most processes (threads included) one task may have (`pids.max`); 0 = no limit.
    pub pids_max: u64,
    /// Put tasks in cgroups when the machine has usable ones; `false` tracks them by
    /// process tree only (how an agent without cgroups behaves; tests use it).
    pub cgroups: bool,
    /// The agent's uid, part of every task's `RUDEL_TASK` marker (see
    /// [`contain::TASK_MARKER`]); empty in tests of the executor.
    pub marker_owner: String,
    /// Give each task a private `/tmp`: a fresh directory under this one, bind-mounted
    /// in the task's own mount namespace and removed when it ends (`--private-tmp`).
    pub private_tmp: Option<PathBuf>,
}

/// Default of [`ExecConfig::pids_max`]: far above what a normal task runs, low enough
/// that a fork bomb cannot exhaust the node's pid space.
pub const DEFAULT_TASK_PIDS_MAX: u64 = 1024;

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            kill_grace: Duration::from_secs(10),
            cgroup_name: format!("rudel-{}", std::process::id()),
            pids_max: DEFAULT_TASK_PIDS_MAX,
            cgroups: true,
            marker_owner: String::new(),
            private_tmp: None,
        }
    }
}

/// Why the executor could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("an executor is already running in this process (only one per process)")]
    AlreadyStarted,
    #[error("Executor::start must be called inside a tokio runtime")]
    NoRuntime,
    #[error("prctl(PR_SET_CHILD_SUBREAPER) failed: {0}")]
    Subreaper(std::io::Error),
    #[error("cannot open /dev/null: {0}")]
    DevNull(std::io::Error),
    #[error("cannot start executor thread: {0}")]
    Thread(std::io::Error),
}

/// Why we signalled a task (decides the outcome when it ends).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum KillReason {
    Timeout,
    Cancelled,
}

/// How the processes of one task are found.
#[derive(Debug)]
pub(crate) enum Track {
    /// Its own cgroup (v1 pids or v2): the members are `cgroup.procs`.
    Cgroup { dir: PathBuf, v2: bool },
    /// No cgroup: by process tree and the `RUDEL_TASK` marker; `since` is the leader's
    /// start time (no member started earlier: tells reused pids apart).
    Tree { marker: String, since: u64 },
}

/// A running task (keyed by its pid in [`State::tasks`]).
pub(crate) struct Task {
    pub(crate) key: TaskKey,
    pub(crate) attempt: u32,
    pub(crate) start_ms: u64,
    pub(crate) kill_reason: Option<KillReason>,
    /// Timers owned by the task (time limit, kill escalation): aborted when it ends.
    pub(crate) timers: Vec<AbortHandle>,
    /// The memory cgroup (OOM detection); on v2 the same directory as `track`.
    pub(crate) cgroup: Option<TaskCgroup>,
    pub(crate) track: Track,
    pub(crate) mem_bytes: u64,
    /// The limit is an address-space rlimit (no OOM detection possible).
    pub(crate) mem_rlimit: bool,
    /// Its private `/tmp` directory, removed when it ends.
    pub(crate) private_tmp: Option<PathBuf>,
}

#[derive(Default)]
pub(crate) struct State {
    /// Running tasks by pid (= process group id = session id).
    pub(crate) tasks: HashMap<u32, Task>,
    pub(crate) by_key: HashMap<(TaskKey, u32), u32>,
    /// Bumped on every successful spawn (wakes the reaper when it had no children).
    pub(crate) spawn_gen: u64,
    /// Per-task cgroups not yet removed (the parent is removed when this drops to 0).
    pub(crate) cgroups_alive: usize,
    pub(crate) shutting_down: bool,
    /// Tells the reaper to exit once it has no children.
    pub(crate) stop: bool,
}

pub(crate) struct Inner {
    pub(crate) cfg: ExecConfig,
    pub(crate) mem: MemMode,
    pub(crate) contain: Contain,
    /// [`contain::describe`] of this executor (shown by `rudel nodes`).
    pub(crate) containment: String,
    pub(crate) state: Mutex<State>,
    /// Paired with `state`: signalled when something was spawned or on stop.
    pub(crate) reaper_cv: Condvar,
    pub(crate) reports: UnboundedSender<TaskReport>,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) spawn_tx: Mutex<Option<mpsc::Sender<spawn::Request>>>,
    /// Notified when the task table or the cgroup count drops to zero.
    pub(crate) idle: Notify,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn send_report(&self, r: TaskReport) {
        // A dropped receiver means the agent is going away: nothing to do.
        let _ = self.reports.send(r);
    }

    /// SIGTERM/SIGKILL to every process of the task: its process group, its cgroups, and
    /// (without a cgroup) the processes found by tree and marker. SIGKILL also stops
    /// forks first (`pids.max` 0). Call with the state lock held and the task still in
    /// the table (its pid cannot have been reused).
    pub(crate) fn signal_task(pid: u32, task: &Task, sig: i32) {
        // SAFETY: plain syscalls.
        unsafe {
            libc::kill(-(pid as i32), sig);
        }
        Self::signal_members(pid, task, sig);
    }

    /// The part of [`Inner::signal_task`] beyond the process group.
    pub(crate) fn signal_members(pid: u32, task: &Task, sig: i32) {
        match &task.track {
            Track::Cgroup { dir, v2 } => contain::kill_cgroup(dir, *v2, sig, sig == libc::SIGKILL),
            Track::Tree { marker, since } => {
                contain::sweep(Some(pid), marker, *since, sig);
            }
        }
        if let Some(cg) = &task.cgroup {
            memlimit::kill_members(&cg.dir, sig);
        }
    }

    /// Starts the SIGKILL escalation timer of a task just sent SIGTERM.
    fn escalate_later(self: &Arc<Self>, st: &mut State, pid: u32, after: Duration) {
        let Some(task) = st.tasks.get_mut(&pid) else {
            return;
        };
        let (key, attempt) = (task.key, task.attempt);
        let inner = Arc::clone(self);
        let h = self.rt.spawn(async move {
            tokio::time::sleep(after).await;
            inner.kill_if_running(pid, key, attempt, libc::SIGKILL, None);
        });
        task.timers.push(h.abort_handle());
    }

    /// Signals the task if (pid, key, attempt) is still running; sets the kill reason if
    /// none was set. Returns whether it was running.
    pub(crate) fn kill_if_running(
        &self,
        pid: u32,
        key: TaskKey,
        attempt: u32,
        sig: i32,
        reason: Option<KillReason>,
    ) -> bool {
        let mut st = self.lock();
        match st.tasks.get_mut(&pid) {
            Some(t) if t.key == key && t.attempt == attempt => {
                if t.kill_reason.is_none() {
                    t.kill_reason = reason;
                }
                Self::signal_task(pid, t, sig);
                true
            }
            _ => false,
        }
    }

    /// Starts the warning-signal timer of a freshly spawned task (state lock held): the
    /// signal goes to the main process only (Slurm's `B:`), whose trap may checkpoint.
    /// A warning due before the task started is sent at once, as Slurm does.
    pub(crate) fn arm_warning(self: &Arc<Self>, st: &mut State, pid: u32, limit: Duration, warn: (i32, Duration)) {
        let Some(task) = st.tasks.get_mut(&pid) else {
            return;
        };
        let (key, attempt) = (task.key, task.attempt);
        let inner = Arc::clone(self);
        let (sig, before) = warn;
        let h = self.rt.spawn(async move {
            tokio::time::sleep(limit.saturating_sub(before)).await;
            let st = inner.lock();
            if matches!(st.tasks.get(&pid), Some(t) if t.key == key && t.attempt == attempt) {
                // SAFETY: plain syscall; the task is still in the table, so `pid` is ours.
                unsafe {
                    libc::kill(pid as i32, sig);
                }
            }
        });
        task.timers.push(h.abort_handle());
    }

    /// Starts the time-limit timer of a freshly spawned task (state lock held).
    pub(crate) fn arm_time_limit(self: &Arc<Self>, st: &mut State, pid: u32, limit: Duration) {
        let Some(task) = st.tasks.get_mut(&pid) else {
            return;
        };
        let (key, attempt) = (task.key, task.attempt);
        let inner = Arc::clone(self);
        let grace = self.cfg.kill_grace;
        let h = self.rt.spawn(async move {
            tokio::time::sleep(limit).await;
            if inner.kill_if_running(pid, key, attempt, libc::SIGTERM, Some(KillReason::Timeout)) {
                tokio::time::sleep(grace).await;
                inner.kill_if_running(pid, key, attempt, libc::SIGKILL, None);
            }
        });
        task.timers.push(h.abort_handle());
    }

    /// A task cgroup is gone (state lock held). The last one removes the (empty) parent.
    pub(crate) fn release_cgroup(&self, st: &mut State) {
        st.cgroups_alive = st.cgroups_alive.saturating_sub(1);
        if st.cgroups_alive == 0 {
            if let MemMode::V1 { root } | MemMode::V2 { root } = &self.mem {
                let _ = std::fs::remove_dir(root);
            }
            if let Some(root) = self.contain.root() {
                let _ = std::fs::remove_dir(root);
            }
            if st.tasks.is_empty() {
                self.idle.notify_waiters();
            }
        }
    }

    /// Waits until no task is running and no task cgroup is left, or the timeout passes.
    async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.lock();
                if st.tasks.is_empty() && st.cgroups_alive == 0 {
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

static STARTED: AtomicBool = AtomicBool::new(false);

/// Handle to the executor (cheap to clone).
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl Executor {
    /// Starts the executor. Must be called inside a tokio runtime (its handle runs the
    /// timers). Makes the process a child subreaper (`PR_SET_CHILD_SUBREAPER`) and starts
    /// one spawner thread and one reaper thread.
    ///
    /// **Only one executor per process**: the reaper reaps *every* child of the process
    /// (`wait4(-1)`), including children started by any other code (`std::process`,
    /// `tokio::process`), whose own `wait` would then fail. Start processes only through
    /// the executor. A second `start` while one is running returns
    /// [`ExecError::AlreadyStarted`]; tests must share one instance.
    pub fn start(cfg: ExecConfig) -> Result<(Executor, tokio::sync::mpsc::UnboundedReceiver<TaskReport>), ExecError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| ExecError::NoRuntime)?;
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(ExecError::AlreadyStarted);
        }
        match Self::start_inner(cfg, rt) {
            Ok(x) => Ok(x),
            Err(e) => {
                STARTED.store(false, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    fn start_inner(
        cfg: ExecConfig,
        rt: tokio::runtime::Handle,
    ) -> Result<(Executor, tokio::sync::mpsc::UnboundedReceiver<TaskReport>), ExecError> {
        // SAFETY: plain prctl.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            return Err(ExecError::Subreaper(std::io::Error::last_os_error()));
        }
        let devnull = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(ExecError::DevNull)?;
        let mem = if cfg.cgroups {
            memlimit::detect(&cfg.cgroup_name)
        } else {
            MemMode::Rlimit
        };
        let contain = contain::detect(&cfg.cgroup_name, cfg.cgroups);
        let mut containment = contain::describe(&contain, &mem, cfg.pids_max);
        if cfg.private_tmp.is_some() {
            containment.push_str(", private /tmp");
        }
        tracing::info!(mem_enforcement = mem.name(), %containment, "executor starting");
        let (report_tx, report_rx) = tokio::sync::mpsc::unbounded_channel();
        let (spawn_tx, spawn_rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            cfg,
            mem,
            contain,
            containment,
            state: Mutex::new(State::default()),
            reaper_cv: Condvar::new(),
            reports: report_tx,
            rt,
            spawn_tx: Mutex::new(Some(spawn_tx)),
            idle: Notify::new(),
        });
        let i2 = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("rudel-reaper".into())
            .spawn(move || {
                reaper::run(&i2);
                STARTED.store(false, Ordering::SeqCst);
            })
            .map_err(ExecError::Thread)?;
        let i3 = Arc::clone(&inner);
        let spawner = std::thread::Builder::new()
            .name("rudel-spawner".into())
            .spawn(move || spawn::run(&i3, spawn_rx, devnull.into()));
        if let Err(e) = spawner {
            inner.lock().stop = true;
            inner.reaper_cv.notify_all();
            return Err(ExecError::Thread(e));
        }
        Ok((Executor { inner }, report_rx))
    }

    /// `"cgroup-v2"`, `"cgroup-v1"` or `"rlimit"`: how `mem_bytes` is enforced here.
    pub fn mem_enforcement(&self) -> &'static str {
        self.inner.mem.name()
    }

    /// How tasks are contained here and which protections are missing, e.g.
    /// `cgroup-v1 (pids.max 1024, memory)` or `process-tree (no process limit, memory via
    /// RLIMIT_AS)`.
    pub fn containment(&self) -> &str {
        &self.inner.containment
    }

    /// Starts the task; its end (any outcome, including spawn failure) arrives exactly
    /// once on the report receiver. Returns the pid (`None` if the spawn failed).
    /// Launching a (key, attempt) that is already running is a no-op returning its pid.
    /// Blocks the caller for the duration of the spawn (a fraction of a millisecond).
    pub fn launch(&self, spec: ExecSpec) -> Option<u32> {
        let (tx, rx) = mpsc::sync_channel(1);
        let sender = self.inner.spawn_tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let failed = |spec: ExecSpec| {
            let now = now_ms();
            self.inner.send_report(TaskReport {
                key: spec.key,
                attempt: spec.attempt,
                outcome: TaskOutcome::SpawnFailed,
                exit_code: Some(127),
                signal: None,
                start_ms: now,
                end_ms: now,
                message: "rudel: the agent is shutting down".into(),
                usage: Default::default(),
            });
            None
        };
        let Some(sender) = sender else {
            return failed(spec);
        };
        if let Err(mpsc::SendError(req)) = sender.send(spawn::Request::Launch {
            spec: Box::new(spec),
            reply: tx,
        }) {
            return match req {
                spawn::Request::Launch { spec, .. } => failed(*spec),
                spawn::Request::Stop => None,
            };
        }
        // The spawner always replies (and reports) once it has taken the request.
        rx.recv().ok().flatten()
    }

    /// Cancels a task: SIGTERM to its process group (and cgroup), SIGKILL after
    /// `kill_grace`; the outcome is `Cancelled`. Unknown or finished task → `false`.
    pub fn kill(&self, key: TaskKey, attempt: u32) -> bool {
        self.stop(key, attempt, &[libc::SIGTERM], self.inner.cfg.kill_grace)
    }

    /// Preempts a task (the head's `preempt`): SIGCONT (it may be stopped) and SIGTERM to
    /// its process group, SIGKILL after `grace` (Slurm's GraceTime); the outcome is
    /// `Cancelled`. Unknown or finished task → `false`.
    pub fn preempt(&self, key: TaskKey, attempt: u32, grace: Duration) -> bool {
        self.stop(key, attempt, &[libc::SIGCONT, libc::SIGTERM], grace)
    }

    /// Sends `signals` to a task and SIGKILL after `grace` (only the first stop of a task
    /// sets its reason and the SIGKILL).
    fn stop(&self, key: TaskKey, attempt: u32, signals: &[libc::c_int], grace: Duration) -> bool {
        let mut st = self.inner.lock();
        let Some(&pid) = st.by_key.get(&(key, attempt)) else {
            return false;
        };
        let Some(t) = st.tasks.get_mut(&pid) else {
            return false;
        };
        let first = t.kill_reason.is_none();
        if first {
            t.kill_reason = Some(KillReason::Cancelled);
        }
        for sig in signals {
            Inner::signal_task(pid, t, *sig);
        }
        if first {
            self.inner.escalate_later(&mut st, pid, grace);
        }
        true
    }

    /// (key, attempt, pid) of every running task.
    pub fn running(&self) -> Vec<(TaskKey, u32, u32)> {
        let st = self.inner.lock();
        let mut v: Vec<_> = st.tasks.iter().map(|(&pid, t)| (t.key, t.attempt, pid)).collect();
        v.sort_unstable();
        v
    }

    /// Kills every running task (SIGTERM, SIGKILL after min(kill_grace, 2 s)), waits
    /// (bounded) until all are reaped and their cgroups removed, then stops the threads.
    /// Launches after this report `SpawnFailed`.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        {
            let mut st = inner.lock();
            st.shutting_down = true;
            for (&pid, t) in st.tasks.iter_mut() {
                if t.kill_reason.is_none() {
                    t.kill_reason = Some(KillReason::Cancelled);
                }
                Inner::signal_task(pid, t, libc::SIGTERM);
            }
        }
        let grace = inner.cfg.kill_grace.min(Duration::from_secs(2));
        if !inner.wait_idle(grace).await {
            let mut st = inner.lock();
            for (&pid, t) in st.tasks.iter_mut() {
                Inner::signal_task(pid, t, libc::SIGKILL);
            }
        }
        if !inner.wait_idle(Duration::from_secs(5)).await {
            let st = inner.lock();
            warn!(
                tasks = st.tasks.len(),
                cgroups = st.cgroups_alive,
                "executor shutdown: tasks still not reaped"
            );
        }
        {
            let mut st = inner.lock();
            for t in st.tasks.values_mut() {
                for h in t.timers.drain(..) {
                    h.abort();
                }
            }
            st.stop = true;
        }
        inner.reaper_cv.notify_all();
        if let Some(tx) = inner.spawn_tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(spawn::Request::Stop);
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `strerror` text of an errno, without Rust's " (os error N)" suffix.
pub(crate) fn errno_text(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
