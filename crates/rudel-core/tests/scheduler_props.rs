//! Property tests of the scheduler and state machine: random clusters, random jobs and
//! random events (results, cancels, lost nodes), with the invariants checked after every
//! applied command.
use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rudel_core::array::{ArraySpec, IndexRange};
use rudel_core::deps::DepKind;
use rudel_core::job::{DepStatus, TaskState};
use rudel_core::state::MAX_QUEUED_PER_SLOT;
use rudel_core::{Command, JobSpec, NodeRegistration, Response, State, TaskKey, TaskOutcome, TaskReport};

#[derive(Clone, Debug)]
struct JobReq {
    cpus: u32,
    mem: u64,
    priority: i32,
    tasks: u32,
    limit: Option<u32>,
    requeue: bool,
    /// 0: none, 1: "gpu", 2: "!gpu".
    constraint: u8,
    /// Time limit in minutes (0: none).
    minutes: u64,
    /// GPUs per task (`gpu` pool).
    gpus: u32,
    /// Units of the cluster license `lic` per task.
    lic: u32,
    /// A dependency: (kind 0..4 = afterok, afterany, afternotok, after, singleton; which
    /// earlier job).
    dep: Option<(u8, usize)>,
    /// Submitted held.
    hold: bool,
}

#[derive(Clone, Debug)]
enum Event {
    Submit(JobReq),
    /// Finish the n-th running task (holders only) with this outcome.
    Finish(usize, u8),
    Cancel(usize),
    /// Node n comes back as a different machine: its tasks are lost.
    Replace(usize),
    /// An admin forgets node n (its tasks are lost) and a new machine registers under its name.
    Forget(usize),
    /// Drain (true) or resume (false) node n.
    Drain(usize, bool),
    /// An admin switches to queue order n and sets the successor queue depth.
    Configure(usize, u32),
    /// An admin points partition `batch` at node set n (0: all, 1: gpu, 2: !gpu), up or down.
    Partition(usize, bool),
    /// Hold (true) or release (false) the n-th submitted job.
    Hold(usize, bool),
    /// Cancel one task (by position) of the n-th submitted job.
    CancelTask(usize, u64),
    /// Requeue the n-th submitted job (whole, or its task at position m), held or not.
    Requeue(usize, Option<usize>, bool),
    /// A step of the n-th submitted job (or of a job id that never existed) ended.
    StepEnded(usize, u32, bool),
}

fn job_req() -> impl Strategy<Value = JobReq> {
    (
        1u32..=4,
        0u64..=3,
        -2i32..=2,
        1u32..=12,
        prop::option::of(1u32..=3),
        any::<bool>(),
        0u8..3,
        0u64..=3,
        prop_oneof![3 => Just(0u32), 1 => 1u32..=2],
        prop_oneof![3 => Just(0u32), 1 => 1u32..=2],
        prop_oneof![2 => Just(None), 1 => (0u8..6, any::<usize>()).prop_map(Some)],
        prop_oneof![5 => Just(false), 1 => Just(true)],
    )
        .prop_map(
            |(cpus, mem, priority, tasks, limit, requeue, constraint, minutes, gpus, lic, dep, hold)| JobReq {
                cpus,
                mem: mem * 1024,
                priority,
                tasks,
                limit,
                requeue,
                constraint,
                minutes,
                gpus,
                lic,
                dep,
                hold,
            },
        )
}

/// The `--dependency` text of a request, naming one of the jobs submitted before it.
fn dep_text(r: &JobReq, earlier: &[u64]) -> Option<String> {
    let (kind, pick) = r.dep?;
    if kind == 4 {
        return Some("singleton".into());
    }
    let target = earlier.get(pick % earlier.len().max(1))?;
    let name = ["afterok", "afterany", "afternotok", "after", "", "aftercorr"][kind as usize];
    Some(format!("{name}:{target}"))
}

/// A job that started only does so once its dependency held: `after*` targets ended as the
/// kind asks (started, for `after`), and no earlier job of a singleton's name was unfinished
/// at its start. Checked once per job, in the step it started: a requeued target may run
/// again later, and a condition that held stays held (as in Slurm).
fn check_dependency_order(s: &State, checked: &mut BTreeSet<u64>, ends: &Ends) -> Result<(), TestCaseError> {
    for j in s.jobs.values() {
        let (Some(dep), Some(start)) = (&j.spec.dependency, j.start_ms) else {
            continue;
        };
        if !checked.insert(j.id) {
            continue;
        }
        for c in &dep.clauses {
            for t in &c.targets {
                let Some(target) = s.jobs.get(&t.job) else { continue };
                // Every end the target had so far (a requeued job ends more than once).
                let ended = ends.get(&t.job).map_or(&[][..], Vec::as_slice);
                let ended_with =
                    |want: Option<bool>| ended.iter().any(|&(e, ok)| e <= start && want.is_none_or(|w| w == ok));
                let ok = match c.kind {
                    DepKind::AfterOk => ended_with(Some(true)),
                    DepKind::AfterNotOk => ended_with(Some(false)),
                    DepKind::AfterAny => ended_with(None),
                    DepKind::After { .. } => target.start_ms.is_some_and(|t| t <= start) || !ended.is_empty(),
                    _ => true,
                };
                prop_assert!(
                    ok,
                    "job {} ({}) started at {} before its target {} allowed it: {:?} {:?}",
                    j.id,
                    dep,
                    start,
                    t.job,
                    target.counts,
                    ended
                );
            }
            if c.kind == DepKind::Singleton {
                for other in s.jobs.range(..j.id).map(|(_, o)| o) {
                    if other.spec.name == j.spec.name && other.spec.user == j.spec.user {
                        prop_assert!(
                            other.end_ms.is_some_and(|e| e <= start),
                            "singleton {} started beside {}",
                            j.id,
                            other.id
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// Array tasks seen completed so far (`aftercorr` needs them one by one: completed array
/// tasks keep no record of their own in the state).
fn record_completed(s: &State, done: &mut BTreeSet<TaskKey>) {
    for j in s.jobs.values() {
        for p in 0..j.next_position.min(j.total) {
            let index = j.index_at(p);
            let held = j.corr.as_deref().is_some_and(|g| g.holds(index));
            let other = j.running.contains_key(&index) || j.requeued.contains_key(&index) || held;
            if !other && j.ended.get(&index).is_none_or(|t| t.state == TaskState::Completed) {
                done.insert(TaskKey { job: j.id, index });
            }
        }
    }
}

/// An `aftercorr` task starts only after its counterpart completed (or, without one, the
/// whole target): checked for every task placed in this step against what completed up to it.
fn check_aftercorr_pairs(
    s: &State,
    before: &BTreeSet<(TaskKey, u32)>,
    done: &BTreeSet<TaskKey>,
    ends: &Ends,
) -> Result<(), TestCaseError> {
    for (key, attempt) in placed_tasks(s).difference(before) {
        let j = &s.jobs[&key.job];
        let Some(dep) = j.spec.dependency.as_ref().filter(|_| j.is_array()) else {
            continue;
        };
        for c in dep.clauses.iter().filter(|c| c.kind == DepKind::AfterCorr) {
            for t in &c.targets {
                let Some(target) = s.jobs.get(&t.job) else { continue };
                let paired = target
                    .spec
                    .array
                    .as_ref()
                    .is_some_and(|a| a.position_of(key.index).is_some());
                let ok = if paired {
                    done.contains(&TaskKey {
                        job: t.job,
                        index: key.index,
                    })
                } else {
                    ends.get(&t.job).is_some_and(|e| e.iter().any(|&(_, ok)| ok))
                };
                prop_assert!(
                    ok,
                    "{key}/{attempt} ({dep}) started before its counterpart in {} completed",
                    t.job
                );
            }
        }
    }
    Ok(())
}

/// Job id -> (end time, all tasks completed) of each time it ended.
type Ends = BTreeMap<u64, Vec<(u64, bool)>>;

/// Records the ends of this step (a job whose end time is new).
fn record_ends(s: &State, ends: &mut Ends) {
    for j in s.jobs.values() {
        if let Some(e) = j.end_ms {
            let list = ends.entry(j.id).or_default();
            if list.last().map(|l| l.0) != Some(e) || list.is_empty() {
                list.push((e, j.state() == TaskState::Completed));
            }
        }
    }
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => job_req().prop_map(Event::Submit),
        8 => (any::<usize>(), 0u8..6).prop_map(|(i, o)| Event::Finish(i, o)),
        1 => any::<usize>().prop_map(Event::Cancel),
        1 => any::<usize>().prop_map(Event::Replace),
        1 => any::<usize>().prop_map(Event::Forget),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(i, d)| Event::Drain(i, d)),
        1 => (0usize..rudel_core::sched::Order::ALL.len(), 0u32..=3).prop_map(|(o, d)| Event::Configure(o, d)),
        1 => (0usize..3, prop_oneof![4 => Just(true), 1 => Just(false)]).prop_map(|(n, up)| Event::Partition(n, up)),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(i, h)| Event::Hold(i, h)),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(i, p)| Event::CancelTask(i, p)),
        2 => (any::<usize>(), prop::option::of(any::<usize>()), prop_oneof![4 => Just(false), 1 => Just(true)])
            .prop_map(|(i, t, h)| Event::Requeue(i, t, h)),
        1 => (any::<usize>(), 0u32..4, prop_oneof![5 => Just(true), 1 => Just(false)])
            .prop_map(|(i, st, known)| Event::StepEnded(i, st, known)),
    ]
}

fn spec(r: &JobReq) -> JobSpec {
    JobSpec {
        argv: vec!["/bin/true".into()],
        cpus: r.cpus,
        mem_bytes: r.mem,
        priority: r.priority,
        time_limit_ms: r.minutes * 60_000,
        gres: if r.gpus > 0 {
            BTreeMap::from([("gpu".to_string(), r.gpus)])
        } else {
            BTreeMap::new()
        },
        licenses: if r.lic > 0 {
            BTreeMap::from([("lic".to_string(), r.lic)])
        } else {
            BTreeMap::new()
        },
        array: (r.tasks > 1 || r.limit.is_some()).then(|| ArraySpec {
            ranges: vec![IndexRange {
                start: 1,
                end: r.tasks,
                step: 1,
            }],
            limit: r.limit,
        }),
        chdir: "/".into(),
        requeue: r.requeue,
        constraint: match r.constraint {
            1 => rudel_core::constraint::Constraint::parse("gpu").ok(),
            2 => rudel_core::constraint::Constraint::parse("!gpu").ok(),
            _ => None,
        },
        // Three users, so the round_robin order has turns to give.
        user: format!("u{}", r.tasks % 3),
        ..JobSpec::default()
    }
}

fn register(name: &str, uid: &str, cpus: u32, mem: u64, now: u64) -> Command {
    // Every other node has a GPU label, so constraints split the cluster.
    let gpu = name.ends_with('1') || name.ends_with('3') || name == "a";
    Command::RegisterNode {
        reg: NodeRegistration {
            name: name.into(),
            uid: uid.into(),
            boot_id: "b".into(),
            cpus,
            mem_bytes: mem,
            mem_enforcement: "rlimit".into(),
            containment: String::new(),
            run_as: String::new(),
            version: "test".into(),
            arch: "x86_64".into(),
            os: "linux".into(),
            address: String::new(),
            labels: if gpu {
                BTreeMap::from([("gpu".to_string(), String::new())])
            } else {
                BTreeMap::new()
            },
            // GPUs by size: 1 cpu -> 1, 2 -> 2, 3 -> none, 4 -> 1.
            gres: match cpus % 3 {
                0 => BTreeMap::new(),
                n => BTreeMap::from([("gpu".to_string(), n)]),
            },
            running: vec![],
            // The Replace event models a machine replaced under its name by entries
            // written before names were bound (the path replay still takes).
            exclusive: false,
        },
        now_ms: now,
    }
}

/// No step takes a user or an account above a running limit: one over it (the limit was
/// lowered while tasks ran) may only go down. Counted from the jobs, not from the index.
fn check_running_limits(s: &State, before: &mut BTreeMap<String, u64>) -> Result<(), TestCaseError> {
    let now = s.running_recount();
    let users = now
        .all()
        .iter()
        .map(|(u, r)| (u.clone(), r.tasks, s.sched.limits.for_user(u)));
    let accounts = now
        .all_accounts()
        .iter()
        .map(|(a, r)| (format!("account {a}"), r.tasks, s.sched.limits.for_account(a)));
    let mut seen = BTreeMap::new();
    for (who, tasks, limits) in users.chain(accounts) {
        if let Some(max) = limits.max_running_tasks {
            let was = before.get(&who).copied().unwrap_or(0);
            prop_assert!(
                tasks <= max || tasks <= was,
                "{} runs {} tasks, limit {}, {} before this step",
                who,
                tasks,
                max,
                was
            );
        }
        seen.insert(who, tasks);
    }
    *before = seen;
    Ok(())
}

/// The jobs' scheduling order: (priority desc, id asc).
/// Job ids in the configured queue order.
fn order(state: &State) -> Vec<u64> {
    let mut ids: Vec<_> = state.jobs.values().map(|j| state.sched.queue_key(j)).collect();
    ids.sort();
    ids.into_iter().map(|(_, _, id)| id).collect()
}

fn placed_tasks(state: &State) -> BTreeSet<(TaskKey, u32)> {
    state
        .jobs
        .values()
        .flat_map(|j| {
            j.running
                .iter()
                .map(move |(i, rt)| (TaskKey { job: j.id, index: *i }, rt.attempt))
        })
        .collect()
}

/// A requeued job runs again with a higher attempt and never two attempts at once: every
/// task put back is pending (with an attempt above all the job ran) or still running its
/// old attempt with a kill asked and the requeue marked (it goes back when it ends); no
/// task has two records.
fn check_requeued_runs_again(
    was: &rudel_core::Job,
    now: &rudel_core::Job,
    index: Option<u32>,
    changed: bool,
) -> Result<(), TestCaseError> {
    if !changed {
        prop_assert_eq!(&was.counts, &now.counts, "a refused requeue changed job {}", was.id);
        return Ok(());
    }
    let old_max = was
        .running
        .values()
        .map(|r| r.attempt)
        .chain(was.ended.values().map(|t| t.attempt))
        .chain(was.requeued.values().copied())
        .chain([was.max_attempt, 1])
        .max()
        .unwrap_or(1);
    let indices: Vec<u32> = match index {
        Some(i) => vec![i],
        None => (0..was.total).map(|p| was.index_at(p)).collect(),
    };
    for i in indices {
        prop_assert!(!now.ended.contains_key(&i), "requeued task {} keeps an end record", i);
        if let Some(rt) = now.running.get(&i) {
            if was.running.get(&i).map(|r| r.attempt) == Some(rt.attempt) {
                prop_assert!(rt.requeue && rt.kill_requested, "task {} runs on, not killed", i);
                continue;
            }
            prop_assert!(
                rt.attempt > old_max,
                "task {} runs again as attempt {} <= {}",
                i,
                rt.attempt,
                old_max
            );
        } else if let Some(&a) = now.requeued.get(&i) {
            let was_pending = was.requeued.get(&i) == Some(&a);
            prop_assert!(
                was_pending || a > old_max,
                "task {} requeued as attempt {} <= {}",
                i,
                a,
                old_max
            );
        }
    }
    prop_assert!(!now.is_finished(), "a requeued job is live");
    Ok(())
}

/// Invariants that must hold after every applied command.
/// Jobs kept out of the queue by a hold, a dependency or a begin time.
fn gated(state: &State) -> BTreeSet<u64> {
    state
        .jobs
        .values()
        .filter(|j| !state.eligible(j))
        .map(|j| j.id)
        .collect()
}

/// `gated_before`: jobs gated before the step; one whose gate opened during it (its `after`
/// target started in this very entry) may have been passed by placements made earlier in
/// the entry, while it still waited.
fn check(state: &State, before: &BTreeSet<(TaskKey, u32)>, gated_before: &BTreeSet<u64>) -> Result<(), TestCaseError> {
    // No node is over-committed; cores of tasks holding resources are disjoint.
    for (id, n) in state.nodes.iter().enumerate() {
        let mut used = BTreeSet::new();
        let (mut cpus, mut mem) = (0u32, 0u64);
        for (key, attempt) in &n.running {
            let rt = state
                .running_task(*key)
                .ok_or_else(|| TestCaseError::fail(format!("node lists unknown task {key}")))?;
            prop_assert_eq!(rt.attempt, *attempt);
            prop_assert_eq!(rt.node as usize, id);
            match rt.after {
                None => {
                    for c in &rt.cores {
                        prop_assert!(
                            *c < n.cpus || (*c as usize) < n.free_cores.len(),
                            "core {} out of range",
                            c
                        );
                        prop_assert!(used.insert(*c), "core {} of node {} given twice", c, n.name);
                    }
                    cpus += rt.cores.len() as u32;
                    mem += rt.mem_bytes;
                }
                Some(p) => {
                    let pr = state
                        .running_task(p)
                        .ok_or_else(|| TestCaseError::fail(format!("{key} queued behind missing {p}")))?;
                    prop_assert_eq!(pr.node, rt.node);
                    prop_assert_eq!(&pr.cores, &rt.cores);
                    prop_assert_eq!(pr.successor, Some(*key));
                    prop_assert!(state.chain_depth(*key) <= MAX_QUEUED_PER_SLOT);
                }
            }
        }
        prop_assert!(cpus <= n.cpus, "node {} runs {} cpus of {}", n.name, cpus, n.cpus);
        prop_assert!(
            mem <= n.mem_bytes,
            "node {} holds {} bytes of {}",
            n.name,
            mem,
            n.mem_bytes
        );
        prop_assert_eq!(cpus, n.cpus_used);
        prop_assert_eq!(mem, n.mem_used);
    }
    // Counts add up, and running counts match the running records.
    for j in state.jobs.values() {
        let sum: u64 = TaskState::ALL.iter().map(|s| j.count(*s)).sum();
        prop_assert_eq!(sum, j.total, "job {} counts {:?}", j.id, j.counts);
        prop_assert_eq!(j.count(TaskState::Running), j.running.len() as u64);
        if let Some(l) = j.spec.array.as_ref().and_then(|a| a.limit) {
            prop_assert!(j.running.len() as u32 <= l, "job {} exceeds its array limit", j.id);
        }
    }
    // Priority then FIFO: a task placed in this step never overtakes, on a node that job
    // could use, an earlier job (in scheduling order) that still waits and is not held back
    // by its own array limit.
    let now = placed_tasks(state);
    // Nothing new is placed on a drained node, outside the job's partitions or in a
    // partition that is down.
    for (key, _) in now.difference(before) {
        if let Some(rt) = state.running_task(*key) {
            let n = &state.nodes[rt.node as usize];
            prop_assert!(n.drain.is_none(), "task {} placed on drained node {}", key, n.name);
            let spec = &state.jobs[&key.job].spec;
            prop_assert!(
                state.in_partitions(spec, n),
                "task {} placed outside its partitions on {}",
                key,
                n.name
            );
            let down = spec
                .partition
                .split(',')
                .filter_map(|p| state.sched.partitions.get(p))
                .all(|p| p.state == rudel_core::sched::PartitionState::Down);
            prop_assert!(
                state.sched.partitions.is_empty() || !down,
                "task {} placed in a down partition",
                key
            );
        }
    }
    // The configured order (priority, FIFO or SJF): a task placed in this step never
    // overtakes, on a node that job could use, an earlier job in that order that still
    // waits and is not held back by its own array limit.
    let ord = order(state);
    for (key, _) in now.difference(before) {
        let Some(rt) = state.running_task(*key) else { continue };
        let node = &state.nodes[rt.node as usize];
        for earlier in ord.iter().take_while(|id| **id != key.job) {
            let e = &state.jobs[earlier];
            let limited = e
                .spec
                .array
                .as_ref()
                .and_then(|a| a.limit)
                .is_some_and(|l| e.running.len() as u32 >= l);
            let could_use = node.could_ever_fit(e.spec.cpus, e.spec.mem_bytes)
                && node.matches(e.spec.constraint.as_ref())
                && node.could_ever_serve(&e.spec.gres);
            // A job waiting for licenses holds back no node: nodes are not what it waits for.
            let for_licenses = state.waiting.contains_key(earlier);
            // Nor does a held job, one waiting on a dependency or its begin time.
            let gated = !state.eligible(e) || gated_before.contains(earlier);
            prop_assert!(
                !e.has_pending() || limited || !could_use || for_licenses || gated,
                "job {} got a task on {} while job {} (earlier in order, could use that node) still waits",
                key.job,
                node.name,
                earlier
            );
        }
    }
    Ok(())
}

/// The agent's view: a finished holder hands its cores to its successor.
fn finish_report(key: TaskKey, attempt: u32, outcome: u8, now: u64) -> TaskReport {
    let (outcome, exit_code) = match outcome {
        0 | 1 => (TaskOutcome::Exited, Some(0)),
        2 => (TaskOutcome::Exited, Some(1)),
        3 => (TaskOutcome::Timeout, None),
        4 => (TaskOutcome::Lost, None),
        _ => (TaskOutcome::SpawnFailed, Some(127)),
    };
    TaskReport {
        key,
        attempt,
        outcome,
        exit_code,
        signal: None,
        start_ms: now,
        end_ms: now,
        message: String::new(),
        usage: Default::default(),
    }
}

fn node_name(state: &State, id: u32) -> String {
    state.nodes[id as usize].name.clone()
}

/// Applies `cmd` and checks that the events it returns describe exactly what changed:
/// every task placed and every attempt ended is announced, kills are announced for the
/// node that holds the task, and every job ends exactly once. Dispatch and accounting
/// rely on this instead of re-scanning the state.
fn apply_ev(s: &mut State, ended: &mut BTreeSet<u64>, cmd: Command) -> Result<Response, TestCaseError> {
    use rudel_core::Event as Ev;
    let before = placed_tasks(s);
    let kills_before: BTreeSet<(TaskKey, u32)> = killing(s);
    let out = s.apply_output(cmd);
    prop_assert!(
        out.violations.is_empty(),
        "the commit refused planned placements: {:?}",
        out.violations
    );
    if let Err(v) = rudel_core::invariants::check_all(s) {
        prop_assert!(false, "invariant broken: {}", v);
    }
    let after = placed_tasks(s);
    let mut placed = BTreeSet::new();
    let mut gone = BTreeSet::new();
    let mut killed = BTreeSet::new();
    for e in &out.events {
        match *e {
            Ev::TaskPlaced { key, attempt, node } => {
                prop_assert!(placed.insert((key, attempt)), "{key} placed twice");
                if let Some(rt) = s.running_task(key).filter(|rt| rt.attempt == attempt) {
                    prop_assert_eq!(rt.node, node, "placement event names another node");
                }
            }
            Ev::TaskEnded { key, attempt, .. } => {
                prop_assert!(gone.insert((key, attempt)), "{key}/{attempt} ended twice");
            }
            Ev::KillRequested { key, attempt, node } => {
                let rt = s.running_task(key);
                prop_assert!(rt.is_none_or(|rt| rt.node == node), "kill event names another node");
                killed.insert((key, attempt));
            }
            Ev::JobEnded { job, .. } => {
                prop_assert!(ended.insert(job), "job {job} ended twice");
                prop_assert!(
                    s.jobs.get(&job).is_none_or(|j| j.is_finished()),
                    "job {job} ended unfinished"
                );
            }
            _ => {}
        }
    }
    let new: BTreeSet<_> = after.difference(&before).copied().collect();
    let new_announced: BTreeSet<_> = placed.difference(&gone).copied().collect();
    prop_assert_eq!(
        new,
        new_announced,
        "placements without events (or events without placements)"
    );
    let left: BTreeSet<_> = before.difference(&after).copied().collect();
    let left_announced: BTreeSet<_> = gone.difference(&placed).copied().collect();
    prop_assert_eq!(left, left_announced, "ended attempts without events");
    let kills_after = killing(s);
    let new_kills: BTreeSet<_> = kills_after.difference(&kills_before).copied().collect();
    prop_assert!(new_kills.is_subset(&killed), "kills without events: {:?}", new_kills);
    for j in s.jobs.values().filter(|j| j.end_ms.is_some()) {
        prop_assert!(ended.contains(&j.id), "job {} finished without a JobEnded event", j.id);
    }
    Ok(out.response)
}

/// Tasks (with attempt) whose kill was requested.
/// No start is left for a pass nobody runs: unless a pass stopped at `max_starts` or an
/// ordinary pass (version 10) left a full pass due, a full pass now would start nothing.
fn check_full_pass_due(s: &State) -> Result<(), TestCaseError> {
    if s.more_to_place || s.full_pass_due_ms.is_some() {
        return Ok(());
    }
    let p = rudel_core::sched::plan::plan(s);
    prop_assert!(
        p.start.is_empty(),
        "a full pass would start {:?} but none is due (version {})",
        p.start.first(),
        s.sched.version
    );
    Ok(())
}

/// True when the leader proposes a `Tick` at `now`: a pass stopped at `max_starts`, or a
/// timer, a fair-share recompute or a full pass is due.
fn leader_ticks_now(s: &State, now: u64) -> bool {
    s.next_wake_ms().is_some_and(|t| t <= now)
}

fn killing(s: &State) -> BTreeSet<(TaskKey, u32)> {
    s.jobs
        .values()
        .flat_map(|j| {
            j.running
                .iter()
                .filter(|(_, rt)| rt.kill_requested)
                .map(move |(i, rt)| (TaskKey { job: j.id, index: *i }, rt.attempt))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_random_events(
        nodes in prop::collection::vec((1u32..=4, 1u64..=4), 1..4),
        events in prop::collection::vec(event(), 1..120),
    ) {
        let mut s = State::new();
        let mut ended = BTreeSet::new();
        let mut now = 1;
        for (i, (cpus, mem)) in nodes.iter().enumerate() {
            apply_ev(&mut s, &mut ended, register(&format!("n{i}"), &format!("u{i}"), *cpus, mem * 1024, now))?;
        }
        let lic = vec![("licenses".to_string(), "lic:3".to_string())];
        apply_ev(&mut s, &mut ended, Command::Configure { settings: lic, now_ms: now })?;
        let mut uid_gen = 100;
        let mut submitted: BTreeMap<u64, JobReq> = BTreeMap::new();
        let mut dep_checked = BTreeSet::new();
        let mut running_before = BTreeMap::new();
        let mut ends = Ends::new();
        let mut corr_done = BTreeSet::new();
        for ev in events {
            now += 1;
            let before = placed_tasks(&s);
            let gated_before = gated(&s);
            match ev {
                Event::Submit(r) => {
                    let c = spec(&r).constraint;
                    let mut sp = spec(&r);
                    sp.partition = "batch".into();
                    let fits = s.nodes.iter().any(|n| n.cpus >= r.cpus && n.mem_bytes >= r.mem && n.matches(c.as_ref()) && n.could_ever_serve(&sp.gres) && s.in_partitions(&sp, n));
                    let earlier: Vec<u64> = submitted.keys().copied().collect();
                    let mut sp2 = spec(&r);
                    sp2.hold = r.hold;
                    sp2.name = format!("j{}", r.cpus % 2);
                    sp2.dependency = dep_text(&r, &earlier).map(|d| rudel_core::deps::parse(&d).unwrap());
                    match apply_ev(&mut s, &mut ended, Command::Submit { request_id: String::new(), spec: sp2, now_ms: now })? {
                        rudel_core::Response::Submitted { job, .. } => {
                            prop_assert!(fits, "accepted a job no node can hold");
                            submitted.insert(job, r);
                        }
                        rudel_core::Response::Rejected { .. } => prop_assert!(!fits, "rejected a job that fits"),
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
                Event::Finish(i, o) => {
                    let holders: Vec<(TaskKey, u32, u32)> = s.jobs.values().flat_map(|j| {
                        j.running.iter().filter(|(_, rt)| rt.after.is_none() || rt.kill_requested)
                            .map(move |(idx, rt)| (TaskKey { job: j.id, index: *idx }, rt.attempt, rt.node))
                    }).collect();
                    if holders.is_empty() { continue; }
                    let (key, attempt, node) = holders[i % holders.len()];
                    let name = node_name(&s, node);
                    apply_ev(&mut s, &mut ended, Command::Reports { node: name, reports: vec![finish_report(key, attempt, o, now)], now_ms: now })?;
                }
                Event::Cancel(i) => {
                    if submitted.is_empty() { continue; }
                    let id = *submitted.keys().nth(i % submitted.len()).unwrap_or(&0);
                    apply_ev(&mut s, &mut ended, Command::Cancel { jobs: vec![id], now_ms: now })?;
                }
                Event::CancelTask(i, p) => {
                    if submitted.is_empty() { continue; }
                    let id = *submitted.keys().nth(i % submitted.len()).unwrap_or(&0);
                    let Some(job) = s.jobs.get(&id) else { continue };
                    let index = job.index_at(p % job.total.max(1));
                    let was_running = job.running.contains_key(&index);
                    let key = TaskKey { job: id, index };
                    let r = apply_ev(&mut s, &mut ended, Command::CancelTasks { tasks: vec![key], now_ms: now })?;
                    prop_assert!(matches!(r, Response::TasksCancelled { .. }), "{:?}", r);
                    if let Some(job) = s.jobs.get(&id) {
                        prop_assert!(!job.has_pending() || !job.skipped.contains(&job.index_at(job.next_position)));
                        if !was_running {
                            prop_assert!(!job.running.contains_key(&index), "task {} started in the entry that cancelled it", key);
                        }
                    }
                }
                Event::Configure(o, depth) => {
                    let o = rudel_core::sched::Order::ALL[o];
                    // The newest version first: round_robin needs 2 (its turns are numbered
                    // from then on), accounts 3, multifactor 4.
                    let account_limit = if depth == 0 { "unlimited".to_string() } else { (depth + 2).to_string() };
                    let settings = vec![
                        ("version".to_string(), rudel_core::sched::SCHED_VERSION.to_string()),
                        // Users u0 and u1 share an account with its own running limit.
                        ("account.grp".to_string(), "users=u0,u1".to_string()),
                        ("limits.account.grp.max_running_tasks".to_string(), account_limit),
                        ("order".to_string(), o.as_str().to_string()),
                        ("queue_depth".to_string(), depth.to_string()),
                        // Passes capped at two placements, or not capped.
                        ("max_starts".to_string(), if depth == 3 { "2" } else { "0" }.to_string()),
                        // Ordinary passes (version 10) that place one task, look at one job,
                        // or neither; full passes due at once, soon or rarely.
                        ("pass.ordinary_starts".to_string(), if depth == 1 { "1" } else { "32" }.to_string()),
                        ("pass.ordinary_jobs".to_string(), if depth == 2 { "1" } else { "100" }.to_string()),
                        ("pass.full_interval_ms".to_string(), ["0", "3", "1000", "2"][depth as usize].to_string()),
                        // A running limit per user, or none (depth 0).
                        (
                            "limits.max_running_tasks_per_user".to_string(),
                            if depth == 0 { "unlimited".to_string() } else { (depth + 1).to_string() },
                        ),
                    ];
                    let r = apply_ev(&mut s, &mut ended, Command::Configure { settings, now_ms: now })?;
                    prop_assert!(matches!(r, Response::Configured { .. }), "{:?}", r);
                    prop_assert_eq!((s.sched.order, s.sched.queue_depth), (o, depth));
                    let mut keys: Vec<_> = s.jobs.values().filter(|j| j.has_pending() && s.eligible(j)).map(|j| s.sched.queue_key(j)).collect();
                    keys.sort();
                    prop_assert_eq!(s.queue.iter().copied().collect::<Vec<_>>(), keys, "the queue is re-sorted");
                }
                Event::Partition(n, up) => {
                    let nodes = ["ALL", "gpu", "!gpu"][n];
                    let state = if up { "up" } else { "down" };
                    let value = format!("nodes={nodes};default=yes;state={state}");
                    let cmd = Command::Configure { settings: vec![("partition.batch".into(), value)], now_ms: now };
                    let r = apply_ev(&mut s, &mut ended, cmd)?;
                    prop_assert!(matches!(r, Response::Configured { .. }), "{:?}", r);
                }
                Event::Hold(i, hold) => {
                    if submitted.is_empty() { continue; }
                    let id = *submitted.keys().nth(i % submitted.len()).unwrap_or(&0);
                    let cmd = if hold { Command::Hold { jobs: vec![id], now_ms: now } } else { Command::Release { jobs: vec![id], now_ms: now } };
                    let r = apply_ev(&mut s, &mut ended, cmd)?;
                    prop_assert!(matches!(r, Response::JobsChanged { .. }), "{:?}", r);
                    if hold && s.jobs[&id].has_pending() && !s.jobs[&id].is_finished() {
                        prop_assert!(s.jobs[&id].held, "a job with pending tasks is held");
                    }
                }
                Event::Requeue(i, task, hold) => {
                    if submitted.is_empty() { continue; }
                    let id = *submitted.keys().nth(i % submitted.len()).unwrap_or(&0);
                    let Some(job) = s.jobs.get(&id) else { continue };
                    let index = task.map(|t| job.index_at(t as u64 % job.total));
                    let was = job.clone();
                    let cmd = Command::Requeue { jobs: vec![rudel_core::requeue::JobRef { job: id, index }], hold, now_ms: now };
                    let r = apply_ev(&mut s, &mut ended, cmd)?;
                    let Response::JobsChanged { changed, .. } = r else {
                        return Err(TestCaseError::fail(format!("unexpected {r:?}")));
                    };
                    if !changed.is_empty() {
                        prop_assert!(was.spec.requeue, "a --no-requeue job was requeued");
                        ended.remove(&id);
                    }
                    check_requeued_runs_again(&was, &s.jobs[&id], index, !changed.is_empty())?;
                }
                Event::StepEnded(i, step, known) => {
                    // A step record belongs to an existing job and changes nothing but
                    // that job's step counts (accounting never moves scheduling).
                    let id = if known && !submitted.is_empty() {
                        *submitted.keys().nth(i % submitted.len()).unwrap_or(&0)
                    } else {
                        u64::MAX - 1
                    };
                    let was = s.jobs.get(&id).cloned();
                    let record = rudel_core::steps::StepRecord {
                        job: id, step, name: "true".into(), nodelist: "n0".into(), ntasks: 1, cpus: 1,
                        start_ms: now, end_ms: now, state: rudel_core::steps::StepState::Completed, exit_code: 0, signal: 0,
                    };
                    let cmd = Command::StepEnded { version: rudel_core::steps::STEP_RECORD_VERSION, record, now_ms: now };
                    let r = apply_ev(&mut s, &mut ended, cmd)?;
                    match (&was, s.jobs.get(&id)) {
                        (None, _) => prop_assert!(matches!(r, Response::Rejected { .. }), "a step of no job: {:?}", r),
                        (Some(w), Some(j)) => {
                            prop_assert_eq!(r, Response::Ok);
                            prop_assert_eq!(j.steps_recorded, w.steps_recorded + 1);
                            prop_assert!(j.next_step > step);
                        }
                        (Some(_), None) => prop_assert!(false, "recording a step removed job {}", id),
                    }
                }
                Event::Drain(i, drain) => {
                    let name = s.nodes[i % s.nodes.len()].name.clone();
                    let cmd = if drain {
                        Command::Drain { nodes: vec![name], reason: "test".into(), now_ms: now }
                    } else {
                        Command::Resume { nodes: vec![name], now_ms: now }
                    };
                    apply_ev(&mut s, &mut ended, cmd)?;
                }
                Event::Replace(i) => {
                    let id = i % s.nodes.len();
                    let (name, cpus, mem) = (s.nodes[id].name.clone(), s.nodes[id].cpus, s.nodes[id].mem_bytes);
                    uid_gen += 1;
                    apply_ev(&mut s, &mut ended, register(&name, &format!("u{uid_gen}"), cpus, mem, now))?;
                }
                Event::Forget(i) => {
                    let id = i % s.nodes.len();
                    let (name, cpus, mem) = (s.nodes[id].name.clone(), s.nodes[id].cpus, s.nodes[id].mem_bytes);
                    apply_ev(&mut s, &mut ended, Command::ForgetNode { name: name.clone(), now_ms: now })?;
                    prop_assert!(s.nodes[id].running.is_empty(), "a forgotten node holds no task");
                    uid_gen += 1;
                    let mut cmd = register(&name, &format!("u{uid_gen}"), cpus, mem, now);
                    if let Command::RegisterNode { reg, .. } = &mut cmd {
                        reg.exclusive = true;
                    }
                    prop_assert!(matches!(apply_ev(&mut s, &mut ended, cmd)?, Response::Registered { .. }), "the forgotten name is free");
                }
            }
            // Checked after the event, then after each Tick the leader proposes at this
            // time: while passes stop at `max_starts` (each an entry of its own), and when
            // a timer or a full pass (version 10) is due.
            let (mut before, mut gated_before) = (before, gated_before);
            for ticks in 0.. {
                // Each Tick places at least one task or settles what was due.
                prop_assert!(ticks < 10_000, "the leader would propose Ticks forever");
                check(&s, &before, &gated_before)?;
                // A counterpart's end releases its task in the same entry: record it first.
                record_ends(&s, &mut ends);
                record_completed(&s, &mut corr_done);
                check_aftercorr_pairs(&s, &before, &corr_done, &ends)?;
                check_dependency_order(&s, &mut dep_checked, &ends)?;
                check_running_limits(&s, &mut running_before)?;
                check_full_pass_due(&s)?;
                if !leader_ticks_now(&s, now) {
                    break;
                }
                (before, gated_before) = (placed_tasks(&s), gated(&s));
                apply_ev(&mut s, &mut ended, Command::Tick { now_ms: now })?;
            }
        }
        // Every node takes work again, so everything can finish.
        let all = vec![("partition.batch".to_string(), "nodes=ALL;default=yes;state=up".to_string())];
        apply_ev(&mut s, &mut ended, Command::Configure { settings: all, now_ms: now })?;
        let names: Vec<String> = s.nodes.iter().map(|n| n.name.clone()).collect();
        apply_ev(&mut s, &mut ended, Command::Resume { nodes: names, now_ms: now })?;
        // Liveness: let every task finish; everything reaches a terminal state.
        for _ in 0..10_000 {
            now += 1;
            while leader_ticks_now(&s, now) {
                let before = placed_tasks(&s);
                let gated_before = gated(&s);
                apply_ev(&mut s, &mut ended, Command::Tick { now_ms: now })?;
                check(&s, &before, &gated_before)?;
            }
            let holders: Vec<(TaskKey, u32, u32)> = s.jobs.values().flat_map(|j| {
                j.running.iter().filter(|(_, rt)| rt.after.is_none() || rt.kill_requested)
                    .map(move |(idx, rt)| (TaskKey { job: j.id, index: *idx }, rt.attempt, rt.node))
            }).collect();
            if holders.is_empty() {
                if let Some(due) = s.full_pass_due_ms {
                    // Nothing runs and nothing will apply an entry: the leader's Tick.
                    now = now.max(due);
                    continue;
                }
            }
            let Some(&(key, attempt, node)) = holders.first() else {
                // Nothing runs: let held jobs go and cancel those whose dependency can
                // never hold (they would wait forever, as in Slurm).
                let held: Vec<u64> = s.jobs.values().filter(|j| j.held && !j.is_finished()).map(|j| j.id).collect();
                let never_corr = |j: &rudel_core::job::Job| j.corr.as_deref().is_some_and(|g| !g.never.is_empty());
                let never: Vec<u64> = s.jobs.values().filter(|j| (j.dep == DepStatus::Never || never_corr(j)) && !j.is_finished()).map(|j| j.id).collect();
                if held.is_empty() && never.is_empty() { break }
                apply_ev(&mut s, &mut ended, Command::Release { jobs: held, now_ms: now })?;
                apply_ev(&mut s, &mut ended, Command::Cancel { jobs: never, now_ms: now })?;
                continue;
            };
            let before = placed_tasks(&s);
            let gated_before = gated(&s);
            let name = node_name(&s, node);
            apply_ev(&mut s, &mut ended, Command::Reports { node: name, reports: vec![finish_report(key, attempt, 0, now)], now_ms: now })?;
            check(&s, &before, &gated_before)?;
        }
        for j in s.jobs.values() {
            prop_assert!(j.is_finished(), "job {} never finished: {:?}", j.id, j.counts);
            prop_assert!(j.end_ms.is_some());
        }
        for n in &s.nodes {
            prop_assert_eq!(n.cpus_used, 0);
            prop_assert!(n.running.is_empty());
        }
    }

    #[test]
    fn replicas_applying_the_same_log_agree(
        reqs in prop::collection::vec(job_req(), 1..20),
        finishes in prop::collection::vec((any::<usize>(), 0u8..6), 0..60),
        passes in any::<bool>(),
    ) {
        let mut log = vec![register("a", "ua", 3, 4096, 1), register("b", "ub", 2, 2048, 1)];
        if passes {
            // Version 10: ordinary entries stop early and leave full passes due.
            let settings = [("version", "10"), ("pass.ordinary_starts", "1"), ("pass.full_interval_ms", "3")];
            let settings = settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            log.push(Command::Configure { settings, now_ms: 1 });
        }
        for (i, r) in reqs.iter().enumerate() {
            log.push(Command::Submit { request_id: format!("r{i}"), spec: spec(r), now_ms: 2 + i as u64 });
        }
        let mut a = State::new();
        for c in &log { a.apply(c.clone()); }
        // Derive finish commands from replica a, then feed both replicas the whole log.
        for (k, (i, o)) in finishes.iter().enumerate() {
            let holders: Vec<(TaskKey, u32, u32)> = a.jobs.values().flat_map(|j| {
                j.running.iter().filter(|(_, rt)| rt.after.is_none())
                    .map(move |(idx, rt)| (TaskKey { job: j.id, index: *idx }, rt.attempt, rt.node))
            }).collect();
            if holders.is_empty() { break; }
            let (key, attempt, node) = holders[i % holders.len()];
            let cmd = Command::Reports { node: node_name(&a, node), reports: vec![finish_report(key, attempt, *o, 100 + k as u64)], now_ms: 100 + k as u64 };
            a.apply(cmd.clone());
            log.push(cmd);
            // The leader's Tick when a capped pass or a full pass left one due.
            if let Some(t) = a.next_wake_ms().filter(|t| *t <= 100 + k as u64) {
                let tick = Command::Tick { now_ms: t.max(a.now_ms) };
                a.apply(tick.clone());
                log.push(tick);
            }
        }
        let mut b = State::new();
        for c in &log { b.apply(c.clone()); }
        prop_assert_eq!(&a, &b);
        // A snapshot round trip gives the same state.
        let json = serde_json::to_string(&a).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let c: State = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&a, &c);
    }
}

#[test]
fn stale_reports_are_ignored() {
    let mut s = State::new();
    s.apply(register("n", "u", 1, 1024, 1));
    s.apply(Command::Submit {
        request_id: String::new(),
        spec: spec(&JobReq {
            cpus: 1,
            mem: 0,
            priority: 0,
            tasks: 1,
            limit: None,
            requeue: true,
            constraint: 0,
            minutes: 0,
            gpus: 0,
            lic: 0,
            dep: None,
            hold: false,
        }),
        now_ms: 2,
    });
    let key = TaskKey { job: 1, index: 0 };
    // A report for attempt 2 while attempt 1 runs changes nothing.
    s.apply(Command::Reports {
        node: "n".into(),
        reports: vec![finish_report(key, 2, 0, 3)],
        now_ms: 3,
    });
    assert_eq!(s.jobs[&1].count(TaskState::Running), 1);
    // Lost with requeue: back to pending, then placed again as attempt 2.
    s.apply(Command::Reports {
        node: "n".into(),
        reports: vec![finish_report(key, 1, 4, 4)],
        now_ms: 4,
    });
    assert_eq!(s.running_task(key).map(|r| r.attempt), Some(2));
    // The late report of attempt 1 is ignored.
    s.apply(Command::Reports {
        node: "n".into(),
        reports: vec![finish_report(key, 1, 0, 5)],
        now_ms: 5,
    });
    assert_eq!(s.running_task(key).map(|r| r.attempt), Some(2));
    s.apply(Command::Reports {
        node: "n".into(),
        reports: vec![finish_report(key, 2, 0, 6)],
        now_ms: 6,
    });
    assert_eq!(s.jobs[&1].state(), TaskState::Completed);
}

#[test]
fn no_requeue_task_lost_ends_node_fail_and_never_reruns() {
    let mut s = State::new();
    s.apply(register("n", "u", 1, 1024, 1));
    s.apply(Command::Submit {
        request_id: String::new(),
        spec: spec(&JobReq {
            cpus: 1,
            mem: 0,
            priority: 0,
            tasks: 1,
            limit: None,
            requeue: false,
            constraint: 0,
            minutes: 0,
            gpus: 0,
            lic: 0,
            dep: None,
            hold: false,
        }),
        now_ms: 2,
    });
    s.apply(register("n", "other-machine", 1, 1024, 3));
    assert_eq!(s.jobs[&1].state(), TaskState::NodeFail);
    assert!(s.jobs[&1].running.is_empty());
}

#[test]
fn a_million_task_array_is_small() {
    let mut s = State::new();
    s.apply(register("n", "u", 2, 1024, 1));
    s.apply(Command::Submit {
        request_id: String::new(),
        spec: spec(&JobReq {
            cpus: 1,
            mem: 0,
            priority: 0,
            tasks: 1_000_000,
            limit: None,
            requeue: true,
            constraint: 0,
            minutes: 0,
            gpus: 0,
            lic: 0,
            dep: None,
            hold: false,
        }),
        now_ms: 2,
    });
    let bytes = serde_json::to_vec(&s).map(|v| v.len()).unwrap_or(usize::MAX);
    assert!(
        bytes < 10_000,
        "state of a pending 1M-task array takes {bytes} bytes serialized"
    );
    assert_eq!(s.jobs[&1].count(TaskState::Pending), 1_000_000 - 6);
}

/// Runs `tasks` tasks of `ms` each on a one-cpu node, finishing the holder each time;
/// returns the most tasks ever queued behind it on the node.
fn deepest_queue(ms: u64) -> usize {
    let mut s = State::new();
    s.apply(register("n", "u", 1, 1024, 1));
    let req = JobReq {
        cpus: 1,
        mem: 0,
        priority: 0,
        tasks: 40,
        limit: None,
        requeue: true,
        constraint: 0,
        minutes: 0,
        gpus: 0,
        lic: 0,
        dep: None,
        hold: false,
    };
    s.apply(Command::Submit {
        request_id: String::new(),
        spec: spec(&req),
        now_ms: 2,
    });
    let mut now = 2;
    let mut deepest = 0;
    for _ in 0..30 {
        let job = &s.jobs[&1];
        deepest = deepest.max(job.running.values().filter(|rt| rt.after.is_some()).count());
        let Some((idx, rt)) = job.running.iter().find(|(_, rt)| rt.after.is_none()) else {
            break;
        };
        let key = TaskKey { job: 1, index: *idx };
        now += ms;
        s.apply(Command::Reports {
            node: "n".into(),
            reports: vec![finish_report(key, rt.attempt, 0, now)],
            now_ms: now,
        });
    }
    deepest
}

#[test]
fn short_tasks_queue_deeper_on_agents_than_long_ones() {
    use rudel_core::state::QUEUED_PER_SLOT;
    assert_eq!(deepest_queue(5), MAX_QUEUED_PER_SLOT as usize, "5 ms tasks");
    assert_eq!(deepest_queue(5_000), QUEUED_PER_SLOT as usize, "5 s tasks");
}

/// Queued work goes behind the shortest chain: a task queued behind a task that itself
/// waits (depth 2) while another slot's task has nothing behind it left that slot idle
/// once its task ended.
#[test]
fn successors_go_behind_the_shortest_chain() {
    let mut s = State::new();
    s.apply(register("n", "u", 2, 1 << 30, 1));
    let one = |requeue| JobReq {
        cpus: 1,
        mem: 0,
        priority: 0,
        tasks: 1,
        limit: None,
        requeue,
        constraint: 0,
        minutes: 0,
        gpus: 0,
        lic: 0,
        dep: None,
        hold: false,
    };
    let submit = |s: &mut State, requeue, now| {
        s.apply(Command::Submit {
            request_id: String::new(),
            spec: spec(&one(requeue)),
            now_ms: now,
        })
    };
    let key = |job| TaskKey { job, index: 0 };
    submit(&mut s, false, 2); // job 1 holds a core
    submit(&mut s, false, 3); // job 2 holds the other
    submit(&mut s, true, 4); // job 3 waits behind job 1 (first in order)
    assert_eq!(s.running_task(key(3)).and_then(|r| r.after), Some(key(1)));
    s.apply(Command::Reports {
        node: "n".into(),
        reports: vec![finish_report(key(2), 1, 0, 5)],
        now_ms: 5,
    });
    submit(&mut s, false, 6); // job 4 takes the freed core
    assert_eq!(s.running_task(key(4)).and_then(|r| r.after), None);
    submit(&mut s, true, 7); // job 5: behind job 4 (nothing queued), not behind job 3
    assert_eq!(s.running_task(key(5)).and_then(|r| r.after), Some(key(4)));
}
