//! The reaper thread: reaps every child of the process (task leaders and, because the
//! process is a child subreaper, orphaned descendants of tasks) and turns task-leader
//! exits into [`TaskReport`]s.
//!
//! It blocks in `waitid(P_ALL, WEXITED|WNOWAIT)` until some child is a zombie, then, with
//! the state lock held (so no spawn is in progress, whose own error-path `waitpid` would
//! otherwise race with us), reaps every zombie. A task leader's process group gets
//! SIGKILL while the leader is still a zombie, so its id cannot have been reused. With no
//! children at all it sleeps on a condvar until the spawner has started something.
use std::sync::Arc;
use std::time::Duration;

use rudel_core::{TaskOutcome, TaskReport, TaskUsage};
use tracing::{error, warn};

use super::{contain, memlimit};
use super::{now_ms, Inner, KillReason, Task, Track};

pub(crate) fn run(inner: &Arc<Inner>) {
    loop {
        let gen = inner.lock().spawn_gen;
        // SAFETY: siginfo_t is plain data filled by the kernel.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == -1 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => {
                    let mut st = inner.lock();
                    while !st.stop && st.spawn_gen == gen {
                        st = inner.reaper_cv.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                    if st.stop {
                        return;
                    }
                    continue;
                }
                _ => {
                    error!(error = %e, "waitid failed");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
        }
        reap_all(inner);
    }
}

/// Reaps every zombie child now; reports finished tasks.
fn reap_all(inner: &Arc<Inner>) {
    let mut st = inner.lock();
    let mut any_task = false;
    loop {
        // SAFETY: plain syscalls on stack values.
        let (pid, status, usage) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT);
            if r == -1 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            let pid = info.si_pid();
            if pid <= 0 {
                break;
            }
            if st.tasks.contains_key(&(pid as u32)) {
                // The leader is a zombie: its pgid is still reserved. Leftover
                // background processes must not outlive the task.
                libc::kill(-pid, libc::SIGKILL);
            }
            let mut status: libc::c_int = 0;
            let mut ru: libc::rusage = std::mem::zeroed();
            let r = libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru);
            if r == 0 {
                // Not reapable although waitid said so: avoid spinning on it.
                warn!(pid, "child not reapable");
                break;
            }
            if r != pid {
                continue;
            }
            (pid as u32, status, usage_of(&ru))
        };
        let Some(task) = st.tasks.remove(&pid) else {
            continue; // an orphaned descendant of some task
        };
        any_task = true;
        st.by_key.remove(&(task.key, task.attempt));
        let report = finish(inner, task, status, usage);
        inner.send_report(report);
    }
    if any_task && st.tasks.is_empty() && st.cgroups_alive == 0 {
        inner.idle.notify_waiters();
    }
}

/// The leader has exited: every other member of the task is killed before its end is
/// reported (a `setsid` background process must not outlive its task, like Slurm's
/// proctrack/cgroup), and the task's cgroup is removed once empty.
fn kill_leftovers(inner: &Arc<Inner>, track: &Track, mem_dir: Option<&std::path::Path>) {
    match track {
        Track::Cgroup { dir, v2 } => {
            contain::kill_cgroup(dir, *v2, libc::SIGKILL, true);
            if mem_dir == Some(dir.as_path()) {
                return; // one directory (v2): removed with the memory cgroup below
            }
            let (dir, v2, i2) = (dir.clone(), *v2, Arc::clone(inner));
            inner.rt.spawn(async move {
                contain::remove(dir, v2).await;
                let mut st = i2.lock();
                i2.release_cgroup(&mut st);
            });
        }
        Track::Tree { marker, since } => {
            contain::sweep(None, marker, *since, libc::SIGKILL);
            // Members killed just now (in the group) re-parent their own children to the
            // agent a moment later: look again for those.
            let (marker, since) = (marker.clone(), *since);
            inner.rt.spawn(async move {
                for ms in [20u64, 100, 500] {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    contain::sweep(None, &marker, since, libc::SIGKILL);
                }
            });
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => "signal",
    }
}

/// Builds the report of a reaped task leader (state lock held by the caller; the cgroup
/// cleanup task takes it later) and schedules the
/// removal of its cgroup.
fn finish(inner: &Arc<Inner>, mut task: Task, status: libc::c_int, usage: TaskUsage) -> TaskReport {
    for h in task.timers.drain(..) {
        h.abort();
    }
    let (exit_code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    let status_text = match (exit_code, signal) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(s)) => format!("killed by {} ({s})", signal_name(s)),
        _ => "unknown status".to_string(),
    };
    let limit = memlimit::human_bytes(task.mem_bytes);
    let mut oom = false;
    let mem_dir = task.cgroup.as_ref().map(|c| c.dir.clone());
    kill_leftovers(inner, &task.track, mem_dir.as_deref());
    if let Some(dir) = task.private_tmp.take() {
        // Off the reaper thread: a job may leave a large tree behind.
        inner.rt.spawn_blocking(move || super::private_tmp::remove(&dir));
    }
    if let Some(cg) = task.cgroup.take() {
        oom = match memlimit::oom_kills(&cg) {
            Some(n) => n > 0,
            None => signal == Some(libc::SIGKILL) && memlimit::failcnt(&cg) > 0,
        };
        memlimit::kill_members(&cg.dir, libc::SIGKILL);
        let i2 = Arc::clone(inner);
        inner.rt.spawn(async move {
            memlimit::remove(cg).await;
            let mut st = i2.lock();
            i2.release_cgroup(&mut st);
        });
    }
    let (outcome, message) = match task.kill_reason {
        Some(KillReason::Timeout) => (TaskOutcome::Timeout, format!("time limit reached; {status_text}")),
        Some(KillReason::Cancelled) => (TaskOutcome::Cancelled, format!("cancelled; {status_text}")),
        None if oom => (
            TaskOutcome::OutOfMemory,
            format!("out of memory (limit {limit}): the kernel OOM killer fired; {status_text}"),
        ),
        None => {
            let mut m = match (exit_code, signal) {
                (Some(0), _) => String::new(),
                _ => status_text,
            };
            if task.mem_rlimit && exit_code != Some(0) {
                m.push_str(&format!(
                    "; memory limit {limit} is enforced as an address-space limit (RLIMIT_AS): \
                     allocations beyond it fail"
                ));
            }
            (TaskOutcome::Exited, m)
        }
    };
    TaskReport {
        key: task.key,
        attempt: task.attempt,
        outcome,
        exit_code,
        signal,
        start_ms: task.start_ms,
        end_ms: now_ms(),
        message,
        usage,
    }
}

/// A reaped leader's resource use. `wait4`'s rusage covers the leader and those of its
/// descendants it waited for itself; descendants orphaned to the agent (this process is
/// a child subreaper) or killed as leftovers are not counted, so a task that
/// backgrounds its real work reports less than it used. `ru_maxrss` is the peak of the
/// largest single process, not the sum over the tree (as Slurm's MaxRSS per step).
/// Linux keeps `ru_maxrss` across `execve`, so the agent's own resident size when it
/// forked the task is a floor (about 12 MiB): a task smaller than that reports the floor.
fn usage_of(ru: &libc::rusage) -> TaskUsage {
    let us = |t: libc::timeval| (t.tv_sec.max(0) as u64) * 1_000_000 + t.tv_usec.max(0) as u64;
    TaskUsage {
        max_rss_kb: ru.ru_maxrss.max(0) as u64,
        user_cpu_us: us(ru.ru_utime),
        sys_cpu_us: us(ru.ru_stime),
    }
}
