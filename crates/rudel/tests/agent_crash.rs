//! An agent killed with SIGKILL at random moments while a large array of tiny tasks runs,
//! and restarted each time (rudel issue 8): `--no-requeue` tasks must start at most once,
//! `--requeue` tasks at least once, and no (task, attempt) may ever start twice.
//!
//! The tasks record ground truth themselves: each appends
//! `"$RUDEL_JOB_ID $RUDEL_ARRAY_INDEX $RUDEL_ATTEMPT $$"` to a truth file. Many short tasks
//! keep the agent spawning almost all the time, so kills at random moments land between a
//! spawn and the journal record of that launch. Each property is one named check; a run
//! reports every violation found, with the offending tasks.
//!
//! `RUDEL_CRASH_SEED=N` replays the same kill delays (the moments the kills land still vary).
mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Cluster, Opts};

/// The tests here time their kills against a busy agent; running them side by side on a
/// small machine would only stretch each one.
static SERIAL: Mutex<()> = Mutex::new(());

/// The task: one line of ground truth.
const TASK: &str = r#"echo "$RUDEL_JOB_ID $RUDEL_ARRAY_INDEX $RUDEL_ATTEMPT $$" >> "$RDL_TRUTH""#;

/// Bound on how long the array may take to finish after the last restart.
const FINISH_TIMEOUT: Duration = Duration::from_secs(150);

/// A small deterministic generator (xorshift64*), so a seed replays the same delays.
struct Rng(u64);

impl Rng {
    fn from_env() -> Rng {
        let seed = std::env::var("RUDEL_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| epoch_ms() | 1);
        eprintln!("RUDEL_CRASH_SEED={seed}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `lo..hi` (ms).
    fn delay(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One line of the truth file: a task process that started.
#[derive(Clone, Debug)]
struct Start {
    job: u64,
    index: u32,
    attempt: u32,
    pid: i32,
}

fn read_truth(path: &Path) -> Vec<Start> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let parsed = (f.len() == 4)
                .then(|| {
                    Some(Start {
                        job: f[0].parse().ok()?,
                        index: f[1].parse().ok()?,
                        attempt: f[2].parse().ok()?,
                        pid: f[3].parse().ok()?,
                    })
                })
                .flatten();
            parsed.unwrap_or_else(|| panic!("malformed truth line {l:?} in {}", path.display()))
        })
        .collect()
}

/// A task as `show --json` reports it. The head keeps details of running and of
/// unsuccessful tasks only (completed array tasks are counted, not listed), so a task
/// that is not listed is completed.
#[derive(Clone, Debug)]
struct TaskView {
    job: u64,
    index: u32,
    state: String,
}

/// Every task of array job `job` (indices 1..=n) as `show --json` reports it.
fn task_views(c: &Cluster, job: u64, n: u32) -> Vec<TaskView> {
    let v = c.show_json(job);
    let listed: BTreeMap<u32, String> = v["task_details"]
        .as_array()
        .unwrap_or_else(|| panic!("no task_details in show --json of job {job}: {v}"))
        .iter()
        .map(|t| {
            let index = t["index"].as_u64().unwrap_or(0) as u32;
            (index, t["state"].as_str().unwrap_or("").to_string())
        })
        .collect();
    // The inference below holds only while the details are not truncated (1,000 at most).
    assert!(
        listed.len() < 1000,
        "show --json lists {} tasks: too many to infer the rest",
        listed.len()
    );
    let views: Vec<TaskView> = (1..=n)
        .map(|index| TaskView {
            job,
            index,
            state: listed.get(&index).cloned().unwrap_or_else(|| "completed".into()),
        })
        .collect();
    let completed = views.iter().filter(|t| t.state == "completed").count() as u64;
    assert_eq!(
        common::count(&v, "completed"),
        completed,
        "job {job}: the completed count disagrees with the tasks not listed: {v}"
    );
    views
}

/// One broken property, with the evidence.
#[derive(Debug)]
enum Violation {
    /// A `--no-requeue` task started more than once: (attempt, pid) of every start.
    StartedTwice {
        job: u64,
        index: u32,
        starts: Vec<(u32, i32)>,
    },
    /// One attempt of a task started more than once.
    DuplicateAttempt {
        job: u64,
        index: u32,
        attempt: u32,
        pids: Vec<i32>,
    },
    /// A task reported `completed` that did not start exactly once (`--no-requeue`), or
    /// never started (`--requeue`).
    CompletedNotStartedOnce { job: u64, index: u32, starts: usize },
    /// A `--requeue` task that never completed.
    NeverCompleted { job: u64, index: u32, state: String },
    /// A task not in a final state after the job was waited for.
    NotTerminal { job: u64, index: u32, state: String },
    /// A task process still alive after its job ended.
    LeftRunning { pid: i32, cmdline: String },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::StartedTwice { job, index, starts } => write!(
                f,
                "--no-requeue task {job}_{index} started {} times, (attempt, pid): {starts:?}",
                starts.len()
            ),
            Violation::DuplicateAttempt {
                job,
                index,
                attempt,
                pids,
            } => write!(
                f,
                "task {job}_{index} attempt {attempt} started {} times, pids {pids:?}",
                pids.len()
            ),
            Violation::CompletedNotStartedOnce { job, index, starts } => {
                write!(f, "task {job}_{index} is completed but started {starts} times")
            }
            Violation::NeverCompleted { job, index, state } => {
                write!(f, "--requeue task {job}_{index} ended {state}, never completed")
            }
            Violation::NotTerminal { job, index, state } => write!(f, "task {job}_{index} is still {state}"),
            Violation::LeftRunning { pid, cmdline } => write!(f, "task process {pid} still running: {cmdline}"),
        }
    }
}

/// Starts grouped by (job, index), in truth-file order.
fn by_task(starts: &[Start]) -> BTreeMap<(u64, u32), Vec<&Start>> {
    let mut m: BTreeMap<(u64, u32), Vec<&Start>> = BTreeMap::new();
    for s in starts {
        m.entry((s.job, s.index)).or_default().push(s);
    }
    m
}

/// (a) At most once: no `--no-requeue` (job, index) started twice, whatever the attempt.
fn check_at_most_once(starts: &[Start]) -> Vec<Violation> {
    by_task(starts)
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|((job, index), v)| Violation::StartedTwice {
            job,
            index,
            starts: v.iter().map(|s| (s.attempt, s.pid)).collect(),
        })
        .collect()
}

/// (b) No (job, index, attempt) started twice: attempt numbers fence stale reports, so
/// two runs under one number cannot be told apart.
fn check_no_duplicate_attempt(starts: &[Start]) -> Vec<Violation> {
    let mut m: BTreeMap<(u64, u32, u32), Vec<i32>> = BTreeMap::new();
    for s in starts {
        m.entry((s.job, s.index, s.attempt)).or_default().push(s.pid);
    }
    m.into_iter()
        .filter(|(_, pids)| pids.len() > 1)
        .map(|((job, index, attempt), pids)| Violation::DuplicateAttempt {
            job,
            index,
            attempt,
            pids,
        })
        .collect()
}

/// (c) Every `--no-requeue` task `show --json` reports `completed` started exactly once.
fn check_completed_started_once(tasks: &[TaskView], starts: &[Start]) -> Vec<Violation> {
    let grouped = by_task(starts);
    tasks
        .iter()
        .filter(|t| t.state == "completed")
        .filter_map(|t| {
            let runs = grouped.get(&(t.job, t.index)).map_or(0, Vec::len);
            (runs != 1).then_some(Violation::CompletedNotStartedOnce {
                job: t.job,
                index: t.index,
                starts: runs,
            })
        })
        .collect()
}

/// A `--requeue` task `show --json` reports `completed` did start (in some attempt).
fn check_completed_started(tasks: &[TaskView], starts: &[Start]) -> Vec<Violation> {
    let grouped = by_task(starts);
    tasks
        .iter()
        .filter(|t| t.state == "completed" && !grouped.contains_key(&(t.job, t.index)))
        .map(|t| Violation::CompletedNotStartedOnce {
            job: t.job,
            index: t.index,
            starts: 0,
        })
        .collect()
}

/// At least once (`--requeue`): every task ends `completed`.
fn check_all_completed(tasks: &[TaskView]) -> Vec<Violation> {
    tasks
        .iter()
        .filter(|t| t.state != "completed")
        .map(|t| Violation::NeverCompleted {
            job: t.job,
            index: t.index,
            state: t.state.clone(),
        })
        .collect()
}

/// (d) Every task is in a final state.
fn check_all_terminal(tasks: &[TaskView]) -> Vec<Violation> {
    tasks
        .iter()
        .filter(|t| !common::is_final(&t.state))
        .map(|t| Violation::NotTerminal {
            job: t.job,
            index: t.index,
            state: t.state.clone(),
        })
        .collect()
}

/// (e) No task process left running: neither a pid the truth file names nor any other
/// process carrying this test's truth path in its environment (children, or a run that
/// had not written its line yet).
fn check_nothing_left_running(truth: &Path, starts: &[Start]) -> Vec<Violation> {
    let want = format!("RDL_TRUTH={}", truth.display());
    let mut pids: Vec<i32> = starts.iter().map(|s| s.pid).collect();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        pids.extend(rd.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()));
    }
    pids.sort_unstable();
    pids.dedup();
    pids.into_iter()
        .filter(|pid| {
            // The environment tells a task of this test apart from a reused pid.
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
        })
        .map(|pid| Violation::LeftRunning {
            pid,
            cmdline: std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default(),
        })
        .collect()
}

/// What gets killed: a standalone agent (the head stays up), or `rudel up` (head and local
/// agent in one process).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Victim {
    Agent,
    Up,
}

/// A cluster whose node `n1` has 2 cpus, and the truth file its tasks write to.
struct Setup {
    c: Cluster,
    victim: Victim,
    truth: PathBuf,
}

impl Setup {
    fn new(victim: Victim) -> Setup {
        let mut c = match victim {
            Victim::Agent => Cluster::head_only(Opts::default().cpus(2)),
            Victim::Up => Cluster::up(Opts::default().cpus(2)),
        };
        if victim == Victim::Agent {
            c.start_agent();
        }
        let truth = c.tmp.path().join("truth.txt");
        std::fs::write(&truth, "").expect("truth file");
        Setup { c, victim, truth }
    }

    /// Submits an array of `n` tiny tasks; `--requeue` or `--no-requeue`.
    fn submit_array(&self, n: u32, requeue: bool) -> u64 {
        let env = format!("RDL_TRUTH={}", self.truth.display());
        let array = format!("1-{n}");
        let policy = if requeue { "--requeue" } else { "--no-requeue" };
        self.c.submit(&[
            "--array", &array, "--output", "none", "--env", &env, policy, "--", "bash", "-c", TASK,
        ])
    }

    fn victim_index(&self) -> usize {
        let role = match self.victim {
            Victim::Agent => "agent",
            Victim::Up => "up",
        };
        self.c
            .daemons
            .iter()
            .rposition(|d| d.role == role)
            .expect("the victim was started")
    }

    /// Waits until the victim's latest process has a session with the head (its agent
    /// logs "connected to head"), so that a kill lands on an agent that is launching.
    ///
    /// A restart right after a kill can find the data directory still locked for a moment
    /// (a child of the killed agent still holding the lock until its exec closes it); an
    /// agent that exits saying so is started again, as a supervisor would, and counted.
    fn wait_connected(&mut self) {
        let deadline = Instant::now() + common::STARTUP_TIMEOUT;
        loop {
            let i = self.victim_index();
            let log = self.c.daemons[i].log_text();
            if log.contains("connected to head") {
                return;
            }
            if let Some(code) = self.c.daemons[i].exited() {
                let log = self.c.daemons[i].log_text();
                if common::data_dir_locked(&log) && Instant::now() < deadline {
                    self.c.locked_restarts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                    self.restart();
                    continue;
                }
                panic!(
                    "restarted {:?} exited with {code}:\n{}",
                    self.victim,
                    common::tail(&log, 40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "restarted {:?} not connected within {:?}:\n{}",
                self.victim,
                common::STARTUP_TIMEOUT,
                self.c.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn kill9(&mut self) {
        let i = self.victim_index();
        self.c.daemons[i].kill9();
    }

    fn restart(&mut self) {
        match self.victim {
            Victim::Agent => {
                self.c.spawn_own_agent();
            }
            Victim::Up => {
                let port = self.c.port();
                self.c.start_up(Some(port));
            }
        }
    }

    /// `kills` times: once the victim is connected, waits 50–800 ms, kills it with SIGKILL
    /// and restarts it. Returns the wall-clock moments (ms since the epoch) of the kills.
    fn kill_repeatedly(&mut self, rng: &mut Rng, kills: usize) -> Vec<u64> {
        let mut at = Vec::with_capacity(kills);
        for _ in 0..kills {
            self.wait_connected();
            std::thread::sleep(rng.delay(50, 800));
            at.push(epoch_ms());
            self.kill9();
            self.restart();
        }
        self.wait_connected();
        at
    }

    /// Waits (bounded) until the job is final; returns its tasks.
    fn wait_done(&self, job: u64, n: u32) -> Vec<TaskView> {
        let o = self.c.rudel_in_bounded(
            &self.c.work,
            &["wait", &job.to_string(), "--timeout", "140s"],
            FINISH_TIMEOUT,
        );
        assert!(!o.timed_out, "`rudel wait {job}` hung: {o}\n{}", self.c.logs_tail());
        task_views(&self.c, job, n)
    }

    /// How many of the kills landed while the job still ran (before its end).
    fn kills_while_running(&self, job: u64, kills: &[u64]) -> usize {
        let end = self.c.show_json(job)["end_ms"].as_u64().unwrap_or(u64::MAX);
        kills.iter().filter(|&&k| k < end).count()
    }
}

/// Panics with every violation (first 40 of each kind) if there is any.
fn report(what: &str, violations: Vec<Violation>, c: &Cluster) {
    if violations.is_empty() {
        return;
    }
    let mut kinds: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for v in &violations {
        let kind = match v {
            Violation::StartedTwice { .. } => "(a) started twice",
            Violation::DuplicateAttempt { .. } => "(b) duplicate attempt",
            Violation::CompletedNotStartedOnce { .. } => "(c) completed but not started once",
            Violation::NeverCompleted { .. } => "never completed",
            Violation::NotTerminal { .. } => "(d) not terminal",
            Violation::LeftRunning { .. } => "(e) left running",
        };
        kinds.entry(kind).or_default().push(v.to_string());
    }
    let mut msg = format!("{what}: {} violations\n", violations.len());
    for (kind, list) in kinds {
        msg.push_str(&format!("--- {kind}: {}\n", list.len()));
        for l in list.iter().take(40) {
            msg.push_str(&format!("  {l}\n"));
        }
    }
    panic!("{msg}{}", c.logs_tail());
}

fn state_counts(tasks: &[TaskView]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for t in tasks {
        *m.entry(t.state.as_str()).or_default() += 1;
    }
    m
}

/// Runs one array under repeated kills of `victim`; returns the setup, job, tasks and starts.
fn crash_run(victim: Victim, n: u32, kills: usize, requeue: bool) -> (Setup, u64, Vec<TaskView>, Vec<Start>) {
    let mut rng = Rng::from_env();
    let mut s = Setup::new(victim);
    let t0 = Instant::now();
    let job = s.submit_array(n, requeue);
    let at = s.kill_repeatedly(&mut rng, kills);
    let tasks = s.wait_done(job, n);
    let starts = read_truth(&s.truth);
    let landed = s.kills_while_running(job, &at);
    eprintln!(
        "{victim:?}, {n} tasks ({}): {} kills, {landed} while the array ran, {} restarts found the data directory locked; {} starts; states {:?}; {:?}",
        if requeue { "--requeue" } else { "--no-requeue" },
        at.len(),
        s.c.locked_restarts,
        starts.len(),
        state_counts(&tasks),
        t0.elapsed()
    );
    // Without kills in the middle of the run this test proves nothing.
    assert!(
        landed >= kills * 2 / 3,
        "only {landed} of {kills} kills landed while the array ran: make the array longer"
    );
    (s, job, tasks, starts)
}

fn no_requeue_under_kills(victim: Victim, n: u32, kills: usize) {
    let (s, _job, tasks, starts) = crash_run(victim, n, kills, false);
    let mut v = check_at_most_once(&starts);
    v.extend(check_no_duplicate_attempt(&starts));
    v.extend(check_completed_started_once(&tasks, &starts));
    v.extend(check_all_terminal(&tasks));
    v.extend(check_nothing_left_running(&s.truth, &starts));
    report(&format!("--no-requeue array, {victim:?} killed {kills} times"), v, &s.c);
}

fn requeue_under_kills(victim: Victim, n: u32, kills: usize) {
    let (s, _job, tasks, starts) = crash_run(victim, n, kills, true);
    let mut v = check_all_completed(&tasks);
    v.extend(check_no_duplicate_attempt(&starts));
    v.extend(check_completed_started(&tasks, &starts));
    v.extend(check_all_terminal(&tasks));
    v.extend(check_nothing_left_running(&s.truth, &starts));
    report(&format!("--requeue array, {victim:?} killed {kills} times"), v, &s.c);
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The head stays up; its one agent is killed and restarted over and over.
#[test]
fn no_requeue_tasks_start_at_most_once_when_the_agent_is_killed() {
    let _g = serial();
    no_requeue_under_kills(Victim::Agent, 6000, 30);
}

#[test]
fn requeue_tasks_complete_once_per_attempt_when_the_agent_is_killed() {
    let _g = serial();
    requeue_under_kills(Victim::Agent, 6000, 30);
}

/// `rudel up`: head and agent die together and come back from their data directory.
#[test]
fn no_requeue_tasks_start_at_most_once_when_rudel_up_is_killed() {
    let _g = serial();
    no_requeue_under_kills(Victim::Up, 6000, 25);
}
