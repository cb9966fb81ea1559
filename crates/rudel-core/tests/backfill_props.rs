//! Property test of backfill, one named check per invariant: backfill never delays the
//! top job's reserved start — under EASY at versions 5 and 6, and under conservative
//! backfill; from version 6 jobs also ask for GPUs and licenses, which the estimates count. Random clusters and workloads with time limits are driven
//! through the pure state machine in log time: jobs arrive over time (in `fifo` order, so
//! a later job is never ahead of an earlier one), tasks end exactly at their limits (the
//! worst case a reservation must survive) or earlier, unlimited tasks end whenever, and
//! the leader's Tick entries come between.
mod common;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rudel_core::alloc::AllocSpec;
use rudel_core::{Command, JobId, JobSpec, NodeRegistration, Response, State, TaskKey};

const MIN: u64 = 60_000;

#[derive(Clone, Debug)]
struct JobPlan {
    /// Arrives this long after the previous job.
    gap_ms: u64,
    cpus: u32,
    /// Minutes; 0: no limit.
    limit_min: u64,
    /// How much of its limit a task runs, in percent (100: to the limit). For a job
    /// without a limit: minutes it runs.
    runs: u64,
    /// Multi-node: -N 2 with one task per node.
    gang: bool,
    requeue: bool,
    /// GPUs per task (version 6 runs only; never with `gang`).
    gpus: u32,
    /// `lic` licenses per task (version 6 runs only).
    licenses: u32,
}

/// The scheduling settings a run uses.
#[derive(Clone, Copy, Debug)]
struct Mode {
    version: &'static str,
    backfill: &'static str,
    /// From version 10: `pass.full_interval_ms` (ordinary entries run short passes; the
    /// leader's Ticks run the full ones, backfill included).
    full_interval_ms: Option<u64>,
}

const EASY_V5: Mode = Mode {
    version: "5",
    backfill: "easy",
    full_interval_ms: None,
};

/// `version` and `backfill` with the default full-pass interval.
const fn mode(version: &'static str, backfill: &'static str) -> Mode {
    Mode {
        version,
        backfill,
        full_interval_ms: None,
    }
}

fn job_plan() -> impl Strategy<Value = JobPlan> {
    (
        0..5 * MIN,
        1..=4u32,
        prop_oneof![1 => Just(0u64), 8 => 1..=30u64],
        prop_oneof![3 => Just(100u64), 1 => 1..=100u64],
        prop_oneof![6 => Just(false), 1 => Just(true)],
        any::<bool>(),
        prop_oneof![3 => Just(0u32), 1 => 1..=2u32],
        prop_oneof![3 => Just(0u32), 1 => 1..=3u32],
    )
        .prop_map(
            |(gap_ms, cpus, limit_min, runs, gang, requeue, gpus, licenses)| JobPlan {
                gap_ms,
                cpus,
                limit_min,
                runs,
                gang,
                requeue,
                gpus: if gang { 0 } else { gpus },
                licenses,
            },
        )
}

fn spec(j: &JobPlan, mode: Mode) -> JobSpec {
    let counted = mode.version != "5";
    JobSpec {
        gres: if counted && j.gpus > 0 {
            [("gpu".to_string(), j.gpus)].into_iter().collect()
        } else {
            Default::default()
        },
        licenses: if counted && j.licenses > 0 {
            [("lic".to_string(), j.licenses)].into_iter().collect()
        } else {
            Default::default()
        },
        argv: vec!["true".into()],
        cpus: j.cpus,
        chdir: "/".into(),
        user: "u".into(),
        time_limit_ms: j.limit_min * MIN,
        requeue: j.requeue,
        alloc: j.gang.then(|| {
            Box::new(AllocSpec {
                nodes_min: 2,
                nodes_max: 2,
                nodes_given: true,
                ntasks: Some(2),
                ntasks_per_node: Some(1),
                ..AllocSpec::default()
            })
        }),
        ..JobSpec::default()
    }
}

/// How long a task of `j` runs once it holds its node.
fn run_ms(j: &JobPlan) -> u64 {
    if j.limit_min == 0 {
        j.runs.min(30) * MIN
    } else {
        (j.limit_min * MIN * j.runs / 100).max(1)
    }
}

struct Sim {
    s: State,
    plans: Vec<JobPlan>,
    ids: BTreeMap<JobId, usize>,
    /// (end time, task, attempt) of every task holding its node.
    ends: BTreeSet<(u64, TaskKey, u32)>,
    seen: BTreeSet<(TaskKey, u32)>,
    /// The expected start recorded when each job was first reserved with a known time.
    promised: BTreeMap<JobId, u64>,
}

impl Sim {
    fn apply(&mut self, cmd: Command) -> Result<Response, TestCaseError> {
        let r = self.s.apply(cmd);
        self.track_starts();
        check_reserved_start_kept(self)?;
        Ok(r)
    }

    /// Tasks that came to hold their node in this entry end `run_ms` later.
    fn track_starts(&mut self) {
        for j in self.s.jobs.values() {
            for (i, rt) in &j.running {
                let key = TaskKey { job: j.id, index: *i };
                if rt.after.is_none() && self.seen.insert((key, rt.attempt)) {
                    let plan = &self.plans[self.ids[&j.id]];
                    self.ends.insert((rt.start_ms + run_ms(plan), key, rt.attempt));
                }
            }
        }
    }
}

/// Named check: backfill never delays the top job's reserved start. The first known
/// expected start of a reserved job is a promise: later estimates are never later, and
/// the job has started by then (no entry at a later log time finds it still waiting).
fn check_reserved_start_kept(sim: &mut Sim) -> Result<(), TestCaseError> {
    let s = &sim.s;
    if let Some(r) = &s.reservation {
        if let Some(t) = r.start_ms {
            let first = *sim.promised.entry(r.job).or_insert(t);
            prop_assert!(
                t <= first,
                "job {}'s expected start moved from {} to {}",
                r.job,
                first,
                t
            );
        }
    }
    for (&job, &t) in &sim.promised {
        let Some(j) = s.jobs.get(&job) else { continue };
        match j.start_ms {
            Some(started) => prop_assert!(started <= t, "job {job} started at {started}, promised {t}"),
            None => prop_assert!(
                s.now_ms <= t,
                "job {job} still waits at {} though it was expected to start by {t}",
                s.now_ms
            ),
        }
    }
    Ok(())
}

fn run(
    mode: Mode,
    nodes: &[u32],
    plans: Vec<JobPlan>,
    queue_depth: u32,
    tick_ms: u64,
    interval_s: u64,
) -> Result<usize, TestCaseError> {
    let mut sim = Sim {
        s: State::new(),
        plans: plans.clone(),
        ids: BTreeMap::new(),
        ends: BTreeSet::new(),
        seen: BTreeSet::new(),
        promised: BTreeMap::new(),
    };
    for (i, cpus) in nodes.iter().enumerate() {
        let reg = NodeRegistration {
            name: format!("n{i}"),
            uid: format!("n{i}"),
            cpus: *cpus,
            mem_bytes: 1 << 30,
            gres: [("gpu".to_string(), 2)].into_iter().collect(),
            ..NodeRegistration::default()
        };
        sim.apply(Command::RegisterNode { reg, now_ms: 1 })?;
    }
    let qd = queue_depth.to_string();
    let interval = interval_s.to_string();
    let full_interval = mode.full_interval_ms.map(|ms| ms.to_string());
    let mut settings = vec![
        ("version", mode.version),
        ("order", "fifo"),
        ("licenses", "lic:4"),
        ("backfill", mode.backfill),
        ("queue_depth", qd.as_str()),
        ("short_queue_depth", qd.as_str()),
        ("backfill.interval_s", interval.as_str()),
    ];
    if let Some(ms) = &full_interval {
        settings.push(("pass.full_interval_ms", ms.as_str()));
    }
    let r = sim.apply(Command::Configure {
        settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        now_ms: 1,
    })?;
    prop_assert!(matches!(r, Response::Configured { .. }), "{:?}", r);
    let mut arrivals = Vec::new();
    let mut t = 1_000;
    for p in &plans {
        t += p.gap_ms;
        arrivals.push(t);
    }
    let mut next_job = 0;
    let mut next_tick = tick_ms;
    for _ in 0..10_000 {
        let arrival = arrivals.get(next_job).copied();
        let end = sim.ends.first().map(|e| e.0);
        let Some(now) = [arrival, end].into_iter().flatten().min() else {
            break;
        };
        if next_tick < now {
            sim.apply(Command::Tick { now_ms: next_tick })?;
            next_tick += tick_ms;
            continue;
        }
        // The leader's Tick for a full pass an ordinary entry left due (version 10), or
        // after a capped pass.
        if let Some(due) = sim.s.next_wake_ms().filter(|t| *t < now) {
            sim.apply(Command::Tick {
                now_ms: due.max(sim.s.now_ms),
            })?;
            continue;
        }
        if arrival == Some(now) {
            // The submit's own pass may start it: its plan must be known first.
            let id = sim.s.next_job_id;
            sim.ids.insert(id, next_job);
            let r = sim.apply(Command::Submit {
                request_id: String::new(),
                spec: spec(&plans[next_job], mode),
                now_ms: now,
            })?;
            match r {
                Response::Submitted { job, .. } => prop_assert_eq!(job, id),
                // Larger than any node, or a gang on one node: refused, nothing queued.
                _ => {
                    sim.ids.remove(&id);
                }
            }
            next_job += 1;
            continue;
        }
        let Some((at, key, attempt)) = sim.ends.pop_first() else {
            break;
        };
        let node = sim
            .s
            .running_task(key)
            .map(|rt| sim.s.nodes[rt.node as usize].name.clone());
        let Some(node) = node else { continue };
        sim.apply(Command::Reports {
            node,
            reports: vec![common::exited(key, attempt, at)],
            now_ms: at,
        })?;
    }
    prop_assert_eq!(rudel_core::invariants::check_all(&sim.s), Ok(()));
    Ok(sim.promised.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn backfill_never_delays_the_top_jobs_reserved_start(
        nodes in prop::collection::vec(1..=6u32, 1..=4),
        plans in prop::collection::vec(job_plan(), 1..40),
        queue_depth in 0..=2u32,
        tick_ms in 10_000..300_000u64,
        interval_s in prop_oneof![Just(0u64), Just(30), Just(600)],
    ) {
        run(EASY_V5, &nodes, plans, queue_depth, tick_ms, interval_s)?;
    }

    #[test]
    fn backfill_counting_gpus_and_licenses_never_delays_the_top_jobs_reserved_start(
        nodes in prop::collection::vec(1..=6u32, 1..=4),
        plans in prop::collection::vec(job_plan(), 1..40),
        queue_depth in 0..=2u32,
        tick_ms in 10_000..300_000u64,
        interval_s in prop_oneof![Just(0u64), Just(30), Just(600)],
    ) {
        run(mode("6", "easy"), &nodes, plans, queue_depth, tick_ms, interval_s)?;
    }

    #[test]
    fn conservative_backfill_never_delays_the_top_jobs_reserved_start(
        nodes in prop::collection::vec(1..=6u32, 1..=4),
        plans in prop::collection::vec(job_plan(), 1..40),
        queue_depth in 0..=2u32,
        tick_ms in 10_000..300_000u64,
        interval_s in prop_oneof![Just(0u64), Just(30), Just(600)],
    ) {
        run(mode("6", "conservative"), &nodes, plans, queue_depth, tick_ms, interval_s)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Version 10: backfill runs on full passes only; the reserved start still holds
    /// whatever the interval between them.
    #[test]
    fn backfill_on_full_passes_never_delays_the_top_jobs_reserved_start(
        nodes in prop::collection::vec(1..=6u32, 1..=4),
        plans in prop::collection::vec(job_plan(), 1..40),
        queue_depth in 0..=2u32,
        tick_ms in 10_000..300_000u64,
        interval_s in prop_oneof![Just(0u64), Just(30), Just(600)],
        conservative in any::<bool>(),
        full_interval_ms in prop_oneof![Just(0u64), Just(1_000), Just(120_000)],
    ) {
        let backfill = if conservative { "conservative" } else { "easy" };
        let m = Mode { version: "10", backfill, full_interval_ms: Some(full_interval_ms) };
        run(m, &nodes, plans, queue_depth, tick_ms, interval_s)?;
    }
}

/// The check can fail: with a reservation made, a job that outlives the expected start
/// is refused, so the simulation's promises are kept and some are made at all.
#[test]
fn a_fixed_workload_makes_and_keeps_promises() {
    let p = |gap_ms, cpus, limit_min| JobPlan {
        gap_ms,
        cpus,
        limit_min,
        runs: 100,
        gang: false,
        requeue: false,
        gpus: 0,
        licenses: 0,
    };
    let plans = vec![p(0, 1, 10), p(0, 2, 5), p(0, 1, 20), p(0, 1, 5), p(MIN, 1, 3)];
    let promised = run(EASY_V5, &[2], plans, 0, 30_000, 0).unwrap();
    assert!(promised >= 1, "no reservation was ever made");
}

/// The cost of one planning pass with backfill on a large queue: 1,000 nodes of 16 cpus,
/// 15,000 running tasks with limits from 10 to 150 minutes, 10,000 pending jobs (the first
/// a whole node, then 1 to 4 cpus with limits up to 5 hours). Prints the pass time with
/// `backfill=easy` and `off`. Run: `cargo test --release -p rudel-core --test
/// backfill_props -- --ignored --nocapture`.
#[test]
#[ignore]
fn pass_cost_with_backfill_on_a_large_queue() {
    use std::time::Instant;
    let mut s = State::new();
    for i in 0..1_000 {
        let reg = NodeRegistration {
            name: format!("n{i}"),
            uid: format!("n{i}"),
            cpus: 16,
            mem_bytes: 64 << 30,
            ..NodeRegistration::default()
        };
        s.apply(Command::RegisterNode { reg, now_ms: 1 });
    }
    let set = |s: &mut State, kv: &[(&str, &str)]| {
        let r = s.apply(Command::Configure {
            settings: kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            now_ms: 1,
        });
        assert!(matches!(r, Response::Configured { .. }), "{r:?}");
    };
    set(
        &mut s,
        &[("version", "6"), ("queue_depth", "0"), ("short_queue_depth", "0")],
    );
    let submit = |s: &mut State, cpus: u32, limit_min: u64, array: Option<&str>| {
        let spec = JobSpec {
            argv: vec!["true".into()],
            cpus,
            chdir: "/".into(),
            user: "u".into(),
            time_limit_ms: limit_min * MIN,
            array: array.map(|a| rudel_core::parse::parse_array(a).unwrap()),
            ..JobSpec::default()
        };
        let now = s.now_ms;
        let r = s.apply(Command::Submit {
            request_id: String::new(),
            spec,
            now_ms: now,
        });
        assert!(matches!(r, Response::Submitted { .. }), "{r:?}");
    };
    for k in 1..=15u64 {
        submit(&mut s, 1, 10 * k, Some("1-1000"));
    }
    let running: usize = s.jobs.values().map(|j| j.running.len()).sum();
    assert_eq!(running, 15_000);
    submit(&mut s, 16, 60, None);
    let mut seed = 7u64;
    let mut rnd = |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _ in 0..9_999 {
        let (cpus, limit) = (1 + rnd(4) as u32, 1 + rnd(300));
        submit(&mut s, cpus, limit, None);
    }
    assert_eq!(s.queue.len(), 10_000, "everything waits behind the whole-node job");
    let runs = [
        ("conservative", "500", "0", "50 reservations computed afresh"),
        ("conservative", "500", "30", "50 reservations reused"),
        ("easy", "500", "0", "estimate computed afresh"),
        ("easy", "500", "30", "estimate reused"),
        ("easy", "1", "0", "estimate only"),
        ("off", "500", "30", "time-less reservation"),
    ];
    for (mode, max_jobs, interval, what) in runs {
        let kv = [
            ("backfill", mode),
            ("backfill.max_jobs", max_jobs),
            ("backfill.interval_s", interval),
        ];
        set(&mut s, &kv);
        let mut times = Vec::new();
        let mut placed = 0;
        for _ in 0..50 {
            let t = Instant::now();
            let p = rudel_core::sched::plan::plan(&s);
            times.push(t.elapsed());
            placed = p.start.len();
        }
        times.sort();
        println!(
            "backfill={mode} ({what}): one pass over {} pending jobs, 1,000 nodes, 15,000 running: p50 {:?}, p99 {:?}, max {:?}; {placed} placed (max_jobs {})",
            s.queue.len(),
            times[times.len() / 2],
            times[times.len() * 99 / 100],
            times[times.len() - 1],
            s.sched.backfill.max_jobs,
        );
    }
}
