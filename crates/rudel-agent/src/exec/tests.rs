//! Executor tests. The executor reaps every child of the process, so all tests share one
//! executor (on its own runtime) and route reports to each test by job id.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rudel_core::{TaskKey, TaskOutcome, TaskReport};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::*;
use crate::journal::{proc_start_time, reap_orphans, Orphan};

type Routes = Arc<Mutex<HashMap<u64, UnboundedSender<TaskReport>>>>;

struct Harness {
    rt: tokio::runtime::Runtime,
    exec: Executor,
    routes: Routes,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();
static NEXT_JOB: AtomicU64 = AtomicU64::new(1000);
const GRACE: Duration = Duration::from_secs(1);
/// Process limit of the shared executor's tasks (the fork-bomb test runs into it).
const PIDS_MAX: u64 = 256;

fn h() -> &'static Harness {
    HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (exec, mut rx) = {
            let _g = rt.enter();
            Executor::start(ExecConfig {
                kill_grace: GRACE,
                cgroup_name: format!("rudel-test-{}", std::process::id()),
                pids_max: PIDS_MAX,
                cgroups: true,
                marker_owner: String::new(),
                private_tmp: None,
            })
            .expect("executor")
        };
        let routes: Routes = Arc::default();
        let r2 = Arc::clone(&routes);
        rt.spawn(async move {
            while let Some(rep) = rx.recv().await {
                let tx = r2.lock().expect("routes").get(&rep.key.job).cloned();
                match tx {
                    Some(tx) => {
                        let _ = tx.send(rep);
                    }
                    None => panic!("report for unknown job: {rep:?}"),
                }
            }
        });
        Harness { rt, exec, routes }
    })
}

/// A fresh job id and the receiver of its reports.
fn new_job() -> (u64, UnboundedReceiver<TaskReport>) {
    let job = NEXT_JOB.fetch_add(1, Ordering::SeqCst);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    h().routes.lock().expect("routes").insert(job, tx);
    (job, rx)
}

fn base_env() -> Vec<(String, String)> {
    vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())]
}

fn spec(job: u64, index: u32, argv: &[&str]) -> ExecSpec {
    ExecSpec {
        key: TaskKey { job, index },
        attempt: 0,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        cwd: PathBuf::from("/"),
        env: base_env(),
        stdout: None,
        stderr: StderrTarget::SameAsStdout,
        cores: vec![],
        mem_bytes: 0,
        time_limit: None,
        warn: None,
        append_output: false,
        stdin: None,
        run_as: None,
    }
}

fn recv(rx: &mut UnboundedReceiver<TaskReport>, secs: u64) -> TaskReport {
    h().rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(secs), rx.recv())
            .await
            .expect("report in time")
            .expect("report channel open")
    })
}

/// Runs a spec whose job came from `new_job` and waits for its report.
fn run_with(rx: &mut UnboundedReceiver<TaskReport>, s: ExecSpec) -> TaskReport {
    let key = s.key;
    h().exec.launch(s);
    let r = recv(rx, 60);
    assert_eq!(r.key, key);
    r
}

fn run(f: impl FnOnce(u64) -> ExecSpec) -> TaskReport {
    let (job, mut rx) = new_job();
    run_with(&mut rx, f(job))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// (pid, state, ppid, pgrp, session) of every process.
fn all_procs() -> Vec<(u32, char, u32, u32, u32)> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(i) = s.rfind(')') else { continue };
        let f: Vec<&str> = s[i + 1..].split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let n = |x: &str| x.parse::<u32>().unwrap_or(0);
        let state = f[0].chars().next().unwrap_or('?');
        v.push((pid, state, n(f[1]), n(f[2]), n(f[3])));
    }
    v
}

fn in_session(sid: u32) -> Vec<u32> {
    all_procs()
        .into_iter()
        .filter(|p| p.4 == sid || p.3 == sid)
        .map(|p| p.0)
        .collect()
}

/// Waits until the session is empty (bounded); returns what is left.
fn wait_session_empty(sid: u32) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = in_session(sid);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_session_size(sid: u32, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while in_session(sid).len() < n {
        assert!(Instant::now() < deadline, "session {sid} never had {n} processes");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Zombie children of this process that stay zombies (the reaper must reap them all).
fn lasting_zombies() -> Vec<u32> {
    let me = std::process::id();
    let zombies = |v: Vec<(u32, char, u32, u32, u32)>| -> Vec<u32> {
        v.into_iter().filter(|p| p.2 == me && p.1 == 'Z').map(|p| p.0).collect()
    };
    let first = zombies(all_procs());
    std::thread::sleep(Duration::from_millis(300));
    let second = zombies(all_procs());
    first.into_iter().filter(|p| second.contains(p)).collect()
}

#[test]
fn echo_output_captured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.txt");
    let r = run(|job| ExecSpec {
        stdout: Some(out.clone()),
        ..spec(job, 0, &["echo", "hello", "world"])
    });
    assert_eq!(r.outcome, TaskOutcome::Exited, "{r:?}");
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.signal, None);
    assert!(r.start_ms > 1_600_000_000_000 && r.end_ms >= r.start_ms, "{r:?}");
    assert_eq!(read(&out), "hello world\n");
}

#[test]
fn stderr_separate_and_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("o"), dir.path().join("e"));
    let script = ["sh", "-c", "echo out; echo err >&2"];
    let r = run(|job| ExecSpec {
        stdout: Some(out.clone()),
        stderr: StderrTarget::File(err.clone()),
        ..spec(job, 0, &script)
    });
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(read(&out), "out\n");
    assert_eq!(read(&err), "err\n");

    let same = dir.path().join("same");
    let r = run(|job| ExecSpec {
        stdout: Some(same.clone()),
        stderr: StderrTarget::SameAsStdout,
        ..spec(job, 0, &script)
    });
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(read(&same), "out\nerr\n");

    // An error path equal to the output path shares the file too.
    let r = run(|job| ExecSpec {
        stdout: Some(same.clone()),
        stderr: StderrTarget::File(same.clone()),
        ..spec(job, 0, &script)
    });
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(read(&same), "out\nerr\n");

    let r = run(|job| ExecSpec {
        stdout: Some(out.clone()),
        stderr: StderrTarget::Discard,
        ..spec(job, 0, &script)
    });
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(read(&out), "out\n");
}

#[test]
fn exit_code_reported() {
    let r = run(|job| spec(job, 0, &["sh", "-c", "exit 3"]));
    assert_eq!(r.outcome, TaskOutcome::Exited);
    assert_eq!(r.exit_code, Some(3));
    assert_eq!(r.signal, None);
    assert!(r.message.contains('3'), "{r:?}");
    let r = run(|job| spec(job, 0, &["sh", "-c", "kill -USR1 $$"]));
    assert_eq!(r.outcome, TaskOutcome::Exited);
    assert_eq!((r.exit_code, r.signal), (None, Some(libc::SIGUSR1)), "{r:?}");
}

/// The report carries the reaped leader's rusage: peak RSS of what it touched (a child it
/// waited for counts), and CPU time.
#[test]
fn usage_reported_from_rusage() {
    // The shell waits for `head | tail`; tail holds the 40 MiB "line" (no newline) in memory.
    let r = run(|job| spec(job, 0, &["sh", "-c", "head -c 40M /dev/zero | tail >/dev/null"]));
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert!(
        (30 << 10..400 << 10).contains(&r.usage.max_rss_kb),
        "peak RSS {} KiB: {r:?}",
        r.usage.max_rss_kb
    );
    let r = run(|job| {
        spec(
            job,
            0,
            &["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"],
        )
    });
    assert!(r.usage.user_cpu_us >= 50_000, "a busy loop used {:?}", r.usage);
    assert!(r.usage.max_rss_kb < 40 << 10, "{:?}", r.usage);
}

#[test]
fn spawn_failures_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("o"), dir.path().join("e"));
    // Missing command: reason in the error file.
    let r = run(|job| ExecSpec {
        stdout: Some(out.clone()),
        stderr: StderrTarget::File(err.clone()),
        ..spec(job, 0, &["nosuchcmd-rudel", "x"])
    });
    let reason = "rudel: cannot execute 'nosuchcmd-rudel': No such file or directory";
    assert_eq!(r.outcome, TaskOutcome::SpawnFailed, "{r:?}");
    assert_eq!(r.exit_code, Some(127));
    assert_eq!(r.message, reason);
    assert_eq!(read(&err), format!("{reason}\n"));
    assert_eq!(read(&out), "");

    // Same with only an output file; absolute path variant.
    let r = run(|job| ExecSpec {
        stdout: Some(out.clone()),
        ..spec(job, 0, &["/no/such/bin"])
    });
    assert_eq!((r.outcome, r.exit_code), (TaskOutcome::SpawnFailed, Some(127)));
    assert_eq!(
        read(&out),
        "rudel: cannot execute '/no/such/bin': No such file or directory\n"
    );

    // Not executable → 126.
    let script = dir.path().join("noexec.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write");
    let r = run(|job| spec(job, 0, &[script.to_str().expect("utf8")]));
    assert_eq!((r.outcome, r.exit_code), (TaskOutcome::SpawnFailed, Some(126)), "{r:?}");
    assert!(r.message.contains("Permission denied"), "{r:?}");

    // Missing working directory.
    let r = run(|job| ExecSpec {
        cwd: dir.path().join("nodir"),
        ..spec(job, 0, &["true"])
    });
    assert_eq!((r.outcome, r.exit_code), (TaskOutcome::SpawnFailed, Some(127)), "{r:?}");
    assert!(r.message.contains("cannot change directory"), "{r:?}");

    // Missing output directory (not created, like Slurm).
    let r = run(|job| ExecSpec {
        stdout: Some(dir.path().join("nodir/out")),
        ..spec(job, 0, &["true"])
    });
    assert_eq!(r.outcome, TaskOutcome::SpawnFailed, "{r:?}");
    assert!(r.message.contains("cannot open output file"), "{r:?}");

    // The same failures on the fork (memory-limited) path.
    let r = run(|job| ExecSpec {
        mem_bytes: 100 << 20,
        stderr: StderrTarget::File(err.clone()),
        ..spec(job, 0, &["nosuchcmd-rudel"])
    });
    assert_eq!((r.outcome, r.exit_code), (TaskOutcome::SpawnFailed, Some(127)), "{r:?}");
    assert_eq!(read(&err), format!("{reason}\n"));
    let r = run(|job| ExecSpec {
        mem_bytes: 100 << 20,
        cwd: dir.path().join("nodir"),
        ..spec(job, 0, &["true"])
    });
    assert_eq!(r.outcome, TaskOutcome::SpawnFailed, "{r:?}");
    assert!(r.message.contains("cannot change directory"), "{r:?}");

    // The executor keeps working.
    let r = run(|job| spec(job, 0, &["true"]));
    assert_eq!((r.outcome, r.exit_code), (TaskOutcome::Exited, Some(0)));
}

#[test]
fn env_is_exactly_the_given_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("o");
    let mut env = base_env();
    env.push(("RUDEL_X".into(), "a b=c".into()));
    let r = run(|job| ExecSpec {
        stdout: Some(out.clone()),
        env: env.clone(),
        ..spec(job, 0, &["sh", "-c", "echo \"$RUDEL_X|${HOME-unset}|${CARGO-unset}\""])
    });
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(read(&out), "a b=c|unset|unset\n");
}

#[test]
fn cwd_honoured_and_relative_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path().canonicalize().expect("canon");
    let r = run(|job| ExecSpec {
        cwd: cwd.clone(),
        stdout: Some(PathBuf::from("rel.out")),
        ..spec(job, 0, &["pwd"])
    });
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(read(&cwd.join("rel.out")), format!("{}\n", cwd.display()));
    // A relative command path is relative to the cwd, too.
    std::fs::write(cwd.join("s.sh"), "#!/bin/sh\necho script\n").expect("write");
    std::fs::set_permissions(cwd.join("s.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let r = run(|job| ExecSpec {
        cwd: cwd.clone(),
        stdout: Some(PathBuf::from("s.out")),
        ..spec(job, 0, &["./s.sh"])
    });
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(read(&cwd.join("s.out")), "script\n");
}

fn cpus_allowed(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn affinity_honoured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("o");
    let own = cpus_allowed(&read(Path::new("/proc/self/status")));
    // SAFETY: plain data filled by the kernel.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(r, 0);
    let cpus: Vec<u32> = (0..1024u32)
        .filter(|&c| unsafe { libc::CPU_ISSET(c as usize, &set) })
        .collect();
    let core = *cpus.last().expect("some cpu");
    let r = run(|job| ExecSpec {
        stdout: Some(out.clone()),
        cores: vec![core],
        ..spec(job, 0, &["cat", "/proc/self/status"])
    });
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(cpus_allowed(&read(&out)), core.to_string());
    // No cores: back to the full mask.
    let r = run(|job| ExecSpec {
        stdout: Some(out.clone()),
        ..spec(job, 0, &["cat", "/proc/self/status"])
    });
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    assert_eq!(cpus_allowed(&read(&out)), own);
}

#[test]
fn time_limit_kills() {
    let limit = Duration::from_millis(800);
    let (job, mut rx) = new_job();
    let t0 = Instant::now();
    let p0 = h().exec.launch(ExecSpec {
        time_limit: Some(limit),
        ..spec(job, 0, &["sleep", "100"])
    });
    // Ignores SIGTERM (the ignored disposition is inherited by sleep): needs SIGKILL.
    let p1 = h().exec.launch(ExecSpec {
        time_limit: Some(limit),
        ..spec(job, 1, &["sh", "-c", "trap '' TERM; sleep 100"])
    });
    let mut got: Vec<(TaskReport, Duration)> = (0..2)
        .map(|_| {
            let r = recv(&mut rx, 30);
            (r, t0.elapsed())
        })
        .collect();
    got.sort_by_key(|(r, _)| r.key);
    let (a, ta) = &got[0];
    assert_eq!(a.outcome, TaskOutcome::Timeout, "{a:?}");
    assert_eq!((a.exit_code, a.signal), (None, Some(libc::SIGTERM)), "{a:?}");
    assert!(*ta >= limit && *ta < limit + Duration::from_millis(1500), "{ta:?}");
    let (b, tb) = &got[1];
    assert_eq!(b.outcome, TaskOutcome::Timeout, "{b:?}");
    assert_eq!(b.signal, Some(libc::SIGKILL), "{b:?}");
    assert!(
        *tb >= limit + GRACE && *tb < limit + GRACE + Duration::from_secs(2),
        "{tb:?}"
    );
    assert!(b.message.contains("time limit"), "{b:?}");
    for p in [p0, p1] {
        assert_eq!(wait_session_empty(p.expect("spawned")), Vec::<u32>::new());
    }
}

#[test]
fn cancel_leaves_no_process() {
    let (job, mut rx) = new_job();
    let key = TaskKey { job, index: 0 };
    let pid = h()
        .exec
        .launch(spec(job, 0, &["sh", "-c", "sleep 1000 & sleep 1000 & wait"]))
        .expect("spawned");
    wait_session_size(pid, 3);
    assert!(h().exec.running().contains(&(key, 0, pid)));
    // Relaunching a running (key, attempt) is a no-op.
    assert_eq!(
        h().exec
            .launch(spec(job, 0, &["sh", "-c", "sleep 1000 & sleep 1000 & wait"])),
        Some(pid)
    );
    assert!(h().exec.kill(key, 0));
    let r = recv(&mut rx, 10);
    assert_eq!(r.outcome, TaskOutcome::Cancelled, "{r:?}");
    assert_eq!(r.signal, Some(libc::SIGTERM), "{r:?}");
    assert!(!h().exec.kill(key, 0), "finished task is unknown");
    assert!(!h().exec.running().iter().any(|t| t.0 == key));
    assert_eq!(wait_session_empty(pid), Vec::<u32>::new());
    assert_eq!(lasting_zombies(), Vec::<u32>::new());
    // Exactly one report.
    let extra = h()
        .rt
        .block_on(async { tokio::time::timeout(Duration::from_millis(300), rx.recv()).await });
    assert!(extra.is_err(), "{extra:?}");
}

#[test]
fn leftover_background_children_are_killed_on_exit() {
    let (job, mut rx) = new_job();
    // The leader exits at once, leaving a background sleep in its process group.
    let pid = h()
        .exec
        .launch(spec(job, 0, &["sh", "-c", "sleep 1000 & exit 0"]))
        .expect("spawned");
    let r = recv(&mut rx, 10);
    assert_eq!((r.outcome, r.exit_code), (TaskOutcome::Exited, Some(0)), "{r:?}");
    assert_eq!(wait_session_empty(pid), Vec::<u32>::new());
}

#[test]
fn memory_limit_enforced() {
    let mode = h().exec.mem_enforcement();
    println!("memory enforcement: {mode}");
    let dir = tempfile::tempdir().expect("tempdir");
    let err = dir.path().join("e");
    let (job, mut rx) = new_job();
    let pid = h().exec.launch(ExecSpec {
        mem_bytes: 50 << 20,
        stderr: StderrTarget::File(err.clone()),
        ..spec(
            job,
            0,
            &[
                "python3",
                "-c",
                "b=bytearray(300*1024*1024); import time; time.sleep(1)",
            ],
        )
    });
    assert!(pid.is_some());
    let r = recv(&mut rx, 60);
    println!("memory report: {r:?}");
    assert!(
        r.outcome == TaskOutcome::OutOfMemory || (r.outcome == TaskOutcome::Exited && r.exit_code != Some(0)),
        "{r:?}"
    );
    if mode.starts_with("cgroup") {
        assert_eq!(r.outcome, TaskOutcome::OutOfMemory, "{r:?}");
        assert!(r.message.contains("out of memory (limit 50M)"), "{r:?}");
    } else {
        assert!(r.message.contains("RLIMIT_AS"), "{r:?}");
    }
    // A task within its limit runs normally.
    let ok = run_with(
        &mut rx,
        ExecSpec {
            mem_bytes: 200 << 20,
            ..spec(job, 1, &["python3", "-c", "b=bytearray(20*1024*1024)"])
        },
    );
    assert_eq!((ok.outcome, ok.exit_code), (TaskOutcome::Exited, Some(0)), "{ok:?}");
    if let MemMode::V1 { root } | MemMode::V2 { root } = &h().exec.inner.mem {
        let dir0 = root.join(format!("{job}_0_0"));
        let dir1 = root.join(format!("{job}_1_0"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while dir0.exists() || dir1.exists() {
            assert!(Instant::now() < deadline, "task cgroups not removed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn orphans_reaped_only_when_start_time_matches() {
    let (job, mut rx) = new_job();
    let key = TaskKey { job, index: 0 };
    let pid = h()
        .exec
        .launch(spec(job, 0, &["sh", "-c", "sleep 1000 & sleep 1000 & wait"]))
        .expect("spawned");
    wait_session_size(pid, 3);
    let start_time = proc_start_time(pid).expect("start time");
    // A reused pid (other start time) is not touched.
    let wrong = Orphan {
        key,
        attempt: 0,
        pid,
        start_time: start_time + 1,
    };
    let reps = reap_orphans(&[wrong], "test-agent");
    assert_eq!(reps.len(), 1);
    assert_eq!(reps[0].outcome, TaskOutcome::Lost);
    assert!(reps[0].message.contains("restarted"), "{:?}", reps[0]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(in_session(pid).len(), 3, "mismatched orphan must not be killed");
    // The real one: its whole group is killed.
    let right = Orphan {
        key,
        attempt: 0,
        pid,
        start_time,
    };
    let reps = reap_orphans(&[right], "test-agent");
    assert_eq!(reps.len(), 1);
    assert_eq!((reps[0].key, reps[0].outcome), (key, TaskOutcome::Lost));
    let r = recv(&mut rx, 10);
    assert_eq!(r.signal, Some(libc::SIGKILL), "{r:?}");
    assert_eq!(wait_session_empty(pid), Vec::<u32>::new());
}

/// An agent killed between journaling its intent and the pid left a task with no pid on
/// record: the next agent process finds it by its marker and kills its whole group.
#[test]
fn orphan_with_only_an_intent_is_found_by_its_marker() {
    let (job, mut rx) = new_job();
    let key = TaskKey { job, index: 3 };
    // The executor marks the task (owner "" in these tests).
    let mut s = spec(job, 3, &["sh", "-c", "sleep 1000 & sleep 1000 & wait"]);
    s.attempt = 2;
    let pid = h().exec.launch(s).expect("spawned");
    wait_session_size(pid, 3);
    let intent = |attempt| Orphan {
        key,
        attempt,
        pid: 0,
        start_time: 0,
    };
    // Another attempt's marker matches nothing: reported lost, nothing killed.
    let reps = reap_orphans(&[intent(1)], "");
    assert_eq!((reps[0].outcome, reps[0].signal), (TaskOutcome::Lost, None), "{reps:?}");
    assert!(reps[0].message.contains("may have started"), "{reps:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(in_session(pid).len(), 3, "another attempt's task must not be killed");
    let reps = reap_orphans(&[intent(2)], "");
    assert_eq!(
        (reps[0].key, reps[0].attempt, reps[0].outcome, reps[0].signal),
        (key, 2, TaskOutcome::Lost, Some(libc::SIGKILL)),
        "{reps:?}"
    );
    let r = recv(&mut rx, 10);
    assert_eq!(r.signal, Some(libc::SIGKILL), "{r:?}");
    assert_eq!(wait_session_empty(pid), Vec::<u32>::new());
}

/// Not a timed assertion: prints the rate (`--nocapture`).
#[test]
fn perf_2000_true_two_in_flight() {
    const N: u32 = 2000;
    let (job, mut rx) = new_job();
    let usage = || {
        // SAFETY: plain data filled by the kernel.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(ru.ru_utime) + t(ru.ru_stime)
    };
    let cpu0 = usage();
    let t0 = Instant::now();
    let exec = h().exec.clone();
    let codes_ok = h().rt.block_on(async move {
        let mut launched = 0;
        let mut ok = 0;
        while launched < 2 {
            exec.launch(spec(job, launched, &["/bin/true"]));
            launched += 1;
        }
        for _ in 0..N {
            let r = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("report in time")
                .expect("channel");
            if r.outcome == TaskOutcome::Exited && r.exit_code == Some(0) {
                ok += 1;
            }
            if launched < N {
                exec.launch(spec(job, launched, &["/bin/true"]));
                launched += 1;
            }
        }
        ok
    });
    let wall = t0.elapsed().as_secs_f64();
    let cpu = usage() - cpu0;
    println!(
        "perf: {N} x /bin/true, 2 in flight: {:.0} tasks/s, {:.3} ms process CPU per task \
         (includes concurrently running tests)",
        N as f64 / wall,
        cpu * 1000.0 / N as f64
    );
    assert_eq!(codes_ok, N);
}

/// Runs `shutdown_in_child` in a fresh process (its own executor), started through the
/// shared executor so that the shared reaper owns it.
#[test]
fn shutdown_kills_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("child.out");
    let exe = std::env::current_exe().expect("current exe");
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.push(("RUDEL_EXEC_SHUTDOWN_CHILD".into(), "1".into()));
    let r = run(|job| ExecSpec {
        env,
        stdout: Some(out.clone()),
        ..spec(
            job,
            0,
            &[
                exe.to_str().expect("utf8"),
                "--exact",
                "exec::tests::shutdown_in_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ],
        )
    });
    let text = read(&out);
    assert_eq!(r.exit_code, Some(0), "{r:?}\n{text}");
    assert!(text.contains("shutdown child ok"), "{text}");
}

#[test]
#[ignore = "run by shutdown_kills_everything in a child process"]
fn shutdown_in_child() {
    if std::env::var_os("RUDEL_EXEC_SHUTDOWN_CHILD").is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (exec, mut rx) = Executor::start(ExecConfig {
            kill_grace: Duration::from_secs(10),
            cgroup_name: format!("rudel-test-child-{}", std::process::id()),
            ..ExecConfig::default()
        })
        .expect("start");
        assert!(matches!(
            Executor::start(ExecConfig::default()),
            Err(ExecError::AlreadyStarted)
        ));
        let mut pids = Vec::new();
        let tree = ["sh", "-c", "sleep 1000 & sleep 1000 & wait"];
        pids.push(exec.launch(spec(1, 0, &tree)).expect("spawn"));
        pids.push(
            exec.launch(spec(1, 1, &["sh", "-c", "trap '' TERM; sleep 1000 & wait"]))
                .expect("spawn"),
        );
        pids.push(
            exec.launch(ExecSpec {
                mem_bytes: 100 << 20,
                ..spec(1, 2, &tree)
            })
            .expect("spawn"),
        );
        for &p in &pids {
            let n = if p == pids[1] { 2 } else { 3 };
            let deadline = Instant::now() + Duration::from_secs(5);
            while in_session(p).len() < n {
                assert!(Instant::now() < deadline, "tree of {p} not started");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let t0 = Instant::now();
        exec.shutdown().await;
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
        let mut outcomes = Vec::new();
        while let Ok(r) = rx.try_recv() {
            outcomes.push((r.key.index, r.outcome));
        }
        outcomes.sort_by_key(|o| o.0);
        assert_eq!(
            outcomes,
            vec![
                (0, TaskOutcome::Cancelled),
                (1, TaskOutcome::Cancelled),
                (2, TaskOutcome::Cancelled)
            ]
        );
        for &p in &pids {
            assert_eq!(wait_session_empty(p), Vec::<u32>::new());
        }
        assert!(exec.running().is_empty());
        assert_eq!(exec.launch(spec(2, 0, &["true"])), None);
        let r = rx.recv().await.expect("report after shutdown");
        assert_eq!(r.outcome, TaskOutcome::SpawnFailed);
        if let MemMode::V1 { root } | MemMode::V2 { root } = &exec.inner.mem {
            assert!(!root.exists(), "parent cgroup left: {}", root.display());
        }
        if let Some(root) = exec.inner.contain.root() {
            assert!(!root.exists(), "parent pids cgroup left: {}", root.display());
        }
        println!("shutdown child ok in {took:?}");
    });
}

// ---------------------------------------------------------------------------------------
// Containment: processes that leave the task's process group, process limit.

/// Waits (bounded) until `pid` no longer exists (the reaper reaps killed orphans).
fn wait_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The pid a task wrote to `file` (waits for it, bounded).
fn pid_from(file: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(p) = std::fs::read_to_string(file).ok().and_then(|s| s.trim().parse().ok()) {
            return p;
        }
        assert!(Instant::now() < deadline, "{} never written", file.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Live (not zombie) processes whose environment carries `RUDEL_TASK=<marker>`.
fn with_marker(marker: &str) -> Vec<u32> {
    let want = format!("{}={marker}", contain::TASK_MARKER);
    all_procs()
        .into_iter()
        .filter(|p| p.1 != 'Z')
        .filter(|p| {
            std::fs::read(format!("/proc/{}/environ", p.0))
                .map(|e| e.split(|&b| b == 0).any(|v| v == want.as_bytes()))
                .unwrap_or(false)
        })
        .map(|p| p.0)
        .collect()
}

/// True where this test runs as root with a v1 pids or v2 hierarchy (as in CI): there
/// the shared executor must use cgroups, so the tests below do not pass in the fallback
/// by accident.
fn cgroups_expected() -> bool {
    // SAFETY: plain syscall.
    let root = unsafe { libc::geteuid() } == 0;
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    root && mounts.lines().any(|l| {
        l.contains(" cgroup ")
            && l.split_whitespace()
                .nth(3)
                .is_some_and(|o| o.split(',').any(|x| x == "pids"))
    })
}

/// `setsid cmd &` leaves the process group; it must still die with the task.
fn escapee_dies_at_end(
    rt: &tokio::runtime::Runtime,
    exec: &Executor,
    rx: &mut UnboundedReceiver<TaskReport>,
    job: u64,
    dir: &Path,
    nested: bool,
) {
    let f = dir.join(format!("pid-end-{nested}"));
    let script = if nested {
        // The escapee's parent is a group member that dies with the leader: it is
        // re-parented to the agent only after that.
        format!(
            "sh -c 'setsid sleep 1000 & echo $! > {}; sleep 1000' & sleep 0.3",
            f.display()
        )
    } else {
        format!("setsid sleep 1000 & echo $! > {}; sleep 0.2", f.display())
    };
    exec.launch(spec(job, nested as u32, &["sh", "-c", &script]));
    let pid = pid_from(&f);
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "escapee {pid} not running");
    let r = recv_on(rt, rx, 30);
    assert_eq!((r.outcome, r.exit_code), (TaskOutcome::Exited, Some(0)), "{r:?}");
    assert!(
        wait_gone(pid),
        "escaped process {pid} outlived its task ({})",
        exec.containment()
    );
}

/// Same with cancel: TERM reaches the escapee too.
fn escapee_dies_at_cancel(
    rt: &tokio::runtime::Runtime,
    exec: &Executor,
    rx: &mut UnboundedReceiver<TaskReport>,
    job: u64,
    dir: &Path,
) {
    let f = dir.join("pid-cancel");
    let script = format!("setsid sleep 1000 & echo $! > {}; sleep 1000", f.display());
    exec.launch(spec(job, 5, &["sh", "-c", &script]));
    let pid = pid_from(&f);
    assert!(exec.kill(TaskKey { job, index: 5 }, 0));
    let r = recv_on(rt, rx, 30);
    assert_eq!(r.outcome, TaskOutcome::Cancelled, "{r:?}");
    assert!(
        wait_gone(pid),
        "escaped process {pid} outlived the cancel ({})",
        exec.containment()
    );
}

/// `recv` on any runtime (the fallback child has its own).
fn recv_on(rt: &tokio::runtime::Runtime, rx: &mut UnboundedReceiver<TaskReport>, secs: u64) -> TaskReport {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(secs), rx.recv())
            .await
            .expect("report in time")
            .expect("report channel open")
    })
}

#[test]
fn escaped_processes_die_with_the_task() {
    println!("containment: {}", h().exec.containment());
    if cgroups_expected() {
        assert!(
            h().exec.containment().starts_with("cgroup"),
            "{}",
            h().exec.containment()
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (job, mut rx) = new_job();
    escapee_dies_at_end(&h().rt, &h().exec, &mut rx, job, dir.path(), false);
    escapee_dies_at_end(&h().rt, &h().exec, &mut rx, job, dir.path(), true);
    escapee_dies_at_cancel(&h().rt, &h().exec, &mut rx, job, dir.path());
}

#[test]
fn fork_bomb_is_contained_and_killed() {
    if !h().exec.containment().starts_with("cgroup") {
        println!(
            "no cgroup here ({}): nothing limits a root agent's tasks",
            h().exec.containment()
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("bomb.out");
    let (job, mut rx) = new_job();
    // 3000 forks of `sleep 30`; the leader counts failures, then stays a moment so the
    // test can count the task's processes.
    let bomb = "import os, time, errno\n\
                ok = fail = other = 0\n\
                for i in range(3000):\n\
                \x20   try:\n\
                \x20       pid = os.fork()\n\
                \x20   except OSError as e:\n\
                \x20       if e.errno == errno.EAGAIN: fail += 1\n\
                \x20       else: other += 1\n\
                \x20       continue\n\
                \x20   if pid == 0:\n\
                \x20       try: os.execv('/bin/sleep', ['sleep', '30'])\n\
                \x20       finally: os._exit(127)\n\
                \x20   ok += 1\n\
                print(ok, fail, other, flush=True)\n\
                time.sleep(2)\n";
    let t0 = Instant::now();
    h().exec.launch(ExecSpec {
        stdout: Some(out.clone()),
        ..spec(job, 0, &["python3", "-c", bomb])
    });
    let marker = contain::task_marker("", TaskKey { job, index: 0 }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while read(&out).is_empty() {
        assert!(Instant::now() < deadline, "fork loop did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let members = with_marker(&marker).len();
    let text = read(&out);
    let counts: Vec<u64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    println!("fork bomb: forked, EAGAIN, other errors = {counts:?}; {members} live processes; limit {PIDS_MAX}");
    assert_eq!(counts.len(), 3, "{text}");
    assert!(counts[1] > 2000, "forks must fail with EAGAIN beyond the limit: {text}");
    assert!(counts[0] < PIDS_MAX, "{text}");
    assert!(members as u64 <= PIDS_MAX, "{members} processes > limit {PIDS_MAX}");
    let r = recv(&mut rx, 30);
    assert_eq!((r.outcome, r.exit_code), (TaskOutcome::Exited, Some(0)), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(25), "the sleeps held the task");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = with_marker(&marker);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{} processes of the bomb left", left.len());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `fallback_in_child` in a fresh process whose executor uses no cgroups.
#[test]
fn fallback_tracks_by_process_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("child.out");
    let exe = std::env::current_exe().expect("current exe");
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.push(("RUDEL_EXEC_FALLBACK_CHILD".into(), dir.path().display().to_string()));
    let r = run(|job| ExecSpec {
        env,
        stdout: Some(out.clone()),
        ..spec(
            job,
            0,
            &[
                exe.to_str().expect("utf8"),
                "--exact",
                "exec::tests::fallback_in_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ],
        )
    });
    let text = read(&out);
    assert_eq!(r.exit_code, Some(0), "{r:?}\n{text}");
    assert!(text.contains("fallback child ok"), "{text}");
}

#[test]
#[ignore = "run by fallback_tracks_by_process_tree in a child process"]
fn fallback_in_child() {
    let Some(dir) = std::env::var_os("RUDEL_EXEC_FALLBACK_CHILD") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (exec, mut rx) = {
        let _g = rt.enter();
        Executor::start(ExecConfig {
            kill_grace: GRACE,
            cgroup_name: format!("rudel-test-fb-{}", std::process::id()),
            pids_max: PIDS_MAX,
            cgroups: false,
            marker_owner: String::new(),
            private_tmp: None,
        })
        .expect("start")
    };
    println!("containment: {}", exec.containment());
    assert!(exec.containment().starts_with("process-tree"), "{}", exec.containment());
    escapee_dies_at_end(&rt, &exec, &mut rx, 1, &dir, false);
    escapee_dies_at_end(&rt, &exec, &mut rx, 1, &dir, true);
    escapee_dies_at_cancel(&rt, &exec, &mut rx, 1, &dir);
    // Timing without cgroups (compare with perf_2000_true_two_in_flight).
    let per_s = true_rate(&rt, &exec, &mut rx, 2);
    println!("perf (process-tree): 2000 x /bin/true, 2 in flight: {per_s:.0} tasks/s");
    rt.block_on(exec.shutdown());
    println!("fallback child ok");
}

/// Runs 2000 `/bin/true` as job `job`, two in flight; returns tasks per second.
fn true_rate(rt: &tokio::runtime::Runtime, exec: &Executor, rx: &mut UnboundedReceiver<TaskReport>, job: u64) -> f64 {
    const N: u32 = 2000;
    let t0 = Instant::now();
    let mut launched = 0;
    while launched < 2 {
        exec.launch(spec(job, launched, &["/bin/true"]));
        launched += 1;
    }
    for _ in 0..N {
        let r = recv_on(rt, rx, 30);
        assert_eq!((r.outcome, r.exit_code), (TaskOutcome::Exited, Some(0)), "{r:?}");
        if launched < N {
            exec.launch(spec(job, launched, &["/bin/true"]));
            launched += 1;
        }
    }
    N as f64 / t0.elapsed().as_secs_f64()
}

#[test]
fn cgroups_of_a_dead_agent_are_cleaned_up() {
    let Contain::V1 { root, .. } = &h().exec.inner.contain else {
        println!("no v1 pids cgroup here ({})", h().exec.containment());
        return;
    };
    let home = root.parent().expect("parent of the cgroup root");
    // A pid above pid_max never runs: the agent that made this directory is dead.
    let pid_max: u64 = read(Path::new("/proc/sys/kernel/pid_max"))
        .trim()
        .parse()
        .expect("pid_max");
    let stale = home.join(format!("rudel-{}", pid_max + 1));
    let task_cg = stale.join("7_0_0");
    std::fs::create_dir_all(&task_cg).expect("mkdir stale cgroup");
    // A process of the dead agent's task (started here; moved into its cgroup).
    let (job, mut rx) = new_job();
    let pid = h().exec.launch(spec(job, 0, &["sleep", "1000"])).expect("spawn");
    std::fs::write(task_cg.join("cgroup.procs"), pid.to_string()).expect("move into stale cgroup");
    contain::clean_stale(home, "rudel-not-this-one", false);
    assert!(!stale.exists(), "stale cgroup {} left", stale.display());
    let r = recv(&mut rx, 10);
    assert_eq!(r.signal, Some(libc::SIGKILL), "{r:?}");
    // A directory of a live agent (this process) is left alone.
    let live = home.join(format!("rudel-{}", std::process::id()));
    std::fs::create_dir_all(&live).expect("mkdir live");
    contain::clean_stale(home, "rudel-not-this-one", false);
    assert!(live.exists());
    std::fs::remove_dir(&live).expect("rmdir live");
}

/// vspawn: the child writes its own pid into `SLURM_TASK_PID`/`RUDEL_TASK_PID` (replacing
/// a value the job brought along), and starts with an empty signal mask and no ignored
/// signals (the test process ignores SIGPIPE), on the plain and the memory-limited path.
#[test]
fn task_pid_set_and_signals_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    for mem_bytes in [0, 200 << 20] {
        let out = dir.path().join(format!("o{mem_bytes}"));
        let (job, mut rx) = new_job();
        let mut env = base_env();
        env.push(("SLURM_TASK_PID".into(), "4242".into()));
        let s = ExecSpec {
            stdout: Some(out.clone()),
            env,
            mem_bytes,
            ..spec(
                job,
                0,
                &[
                    "sh",
                    "-c",
                    "echo \"$SLURM_TASK_PID $RUDEL_TASK_PID $$\"; exec grep -E '^Sig(Blk|Ign)' /proc/self/status",
                ],
            )
        };
        let pid = h().exec.launch(s).expect("spawned");
        let r = recv(&mut rx, 60);
        assert_eq!(r.exit_code, Some(0), "{r:?}");
        assert_eq!(
            read(&out),
            format!("{pid} {pid} {pid}\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"),
            "mem_bytes {mem_bytes}"
        );
    }
}
