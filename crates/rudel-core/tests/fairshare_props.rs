//! Property tests of fair-share accounting and the `multifactor` order, one named check
//! per invariant: the charge rates equal what running tasks hold, the multifactor order is
//! respected, replicas applying the same log reach the same usage and priorities, and
//! fair-share delivers each user its share on a long random workload.
mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use rudel_core::{Command, JobId, JobSpec, NodeRegistration, Response, State, TaskKey};

const USERS: [&str; 3] = ["a", "b", "c"];

fn register(name: &str, cpus: u32, now: u64) -> Command {
    Command::RegisterNode {
        reg: NodeRegistration {
            name: name.into(),
            uid: name.into(),
            cpus,
            mem_bytes: 1 << 30,
            // Every node a GPU, so GPU-seconds are charged too.
            gres: BTreeMap::from([("gpu".to_string(), 1)]),
            ..NodeRegistration::default()
        },
        now_ms: now,
    }
}

fn spec(user: &str, cpus: u32, gpus: u32, priority: i32) -> JobSpec {
    JobSpec {
        argv: vec!["true".into()],
        cpus,
        chdir: "/".into(),
        user: user.into(),
        priority,
        gres: if gpus > 0 {
            BTreeMap::from([("gpu".to_string(), gpus)])
        } else {
            BTreeMap::new()
        },
        ..JobSpec::default()
    }
}

fn configure(s: &mut State, settings: &[(&str, &str)], now: u64) {
    let r = s.apply(Command::Configure {
        settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        now_ms: now,
    });
    assert!(matches!(r, Response::Configured { .. }), "{r:?}");
}

/// Running tasks that hold their node (not queued behind another), oldest key first.
fn running(s: &State) -> Vec<(TaskKey, u32, String)> {
    let mut v = Vec::new();
    for j in s.jobs.values() {
        for (i, rt) in &j.running {
            if rt.after.is_none() {
                let node = s.nodes[rt.node as usize].name.clone();
                v.push((TaskKey { job: j.id, index: *i }, rt.attempt, node));
            }
        }
    }
    v
}

/// Named check: the table charges each user for exactly the cpus and GPUs its started
/// tasks hold.
fn check_rates_match_running(s: &State) -> Result<(), TestCaseError> {
    let table: BTreeMap<String, (u64, u64)> = s
        .fairshare
        .users
        .iter()
        .filter(|(_, u)| u.cpus > 0 || u.gpus > 0)
        .map(|(n, u)| (n.clone(), (u.cpus, u.gpus)))
        .collect();
    prop_assert_eq!(table, s.fair_recount(), "charge rates vs running tasks");
    Ok(())
}

/// Named check: no job started in an entry while a job queued ahead of it (a higher
/// multifactor priority) still waits. Every job here is one task of one cpu on equal
/// nodes, so a job ahead always fits where a later one did.
fn check_order_respected(before: &State, after: &State) -> Result<(), TestCaseError> {
    let started: Vec<&rudel_core::Job> = after
        .jobs
        .values()
        .filter(|j| !j.running.is_empty() && before.jobs.get(&j.id).is_none_or(|b| b.running.is_empty()))
        .filter(|j| j.running.values().all(|rt| rt.after.is_none()))
        .collect();
    let Some(first_waiting) = after.queue.iter().next() else {
        return Ok(());
    };
    for j in started {
        let k = after.sched.queue_key(j);
        prop_assert!(
            k < *first_waiting,
            "job {} started with key {:?} while job {} waits ahead with {:?}",
            j.id,
            k,
            first_waiting.2,
            first_waiting
        );
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Step {
    /// user, cpus (1..=2), gpus (0..=1), own priority
    Submit(usize, u32, u32, i32),
    /// End the n-th running task after dt ms.
    End(usize, u64),
    /// Cancel the n-th submitted job.
    Cancel(usize),
    /// A Tick dt ms later.
    Tick(u64),
    /// Node n is lost (its tasks with it) and registers again.
    Lose(usize),
    /// New shares for user b and a GPU weight.
    Shares(u64, u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 1..=2u32, 0..=1u32, -3..=3i32).prop_map(|(u, c, g, p)| Step::Submit(u, c, g, p)),
        4 => (0..8usize, 1..120_000u64).prop_map(|(i, dt)| Step::End(i, dt)),
        1 => (0..40usize).prop_map(Step::Cancel),
        3 => (1..600_000u64).prop_map(Step::Tick),
        1 => (0..2usize).prop_map(Step::Lose),
        1 => (1..5u64, 0..3000u64).prop_map(|(s, g)| Step::Shares(s, g)),
    ]
}

/// The entry a step becomes at the state's time (None: nothing to do).
fn command(s: &State, st: &Step, submitted: &[JobId]) -> Option<Command> {
    let now = s.now_ms;
    Some(match st {
        Step::Submit(u, c, g, p) => Command::Submit {
            request_id: String::new(),
            spec: spec(USERS[*u], *c, *g, *p),
            now_ms: now + 1,
        },
        Step::End(i, dt) => {
            let r = running(s);
            let (key, attempt, node) = r.get(i % r.len().max(1))?.clone();
            Command::Reports {
                node,
                reports: vec![common::exited(key, attempt, now + dt)],
                now_ms: now + dt,
            }
        }
        Step::Cancel(i) => Command::Cancel {
            jobs: vec![*submitted.get(i % submitted.len().max(1))?],
            now_ms: now + 1,
        },
        Step::Tick(dt) => Command::Tick { now_ms: now + dt },
        Step::Lose(n) => {
            let name = ["n0", "n1"][*n];
            let epoch = s.node(name)?.epoch;
            Command::Batch(vec![
                Command::NodeLost {
                    name: name.into(),
                    epoch,
                    reason: "test".into(),
                    now_ms: now + 1,
                },
                register(name, 2, now + 1),
            ])
        }
        Step::Shares(b, g) => Command::Configure {
            settings: vec![
                ("fairshare.user.b".into(), b.to_string()),
                ("fairshare.gpu_weight".into(), format!("{}.{:03}", g / 1000, g % 1000)),
            ],
            now_ms: now + 1,
        },
    })
}

fn cluster() -> State {
    let mut s = State::new();
    s.apply(register("n0", 2, 1_000));
    s.apply(register("n1", 2, 1_000));
    configure(
        &mut s,
        &[
            ("version", "4"),
            ("order", "multifactor"),
            ("fairshare.half_life_s", "3600"),
            ("multifactor.weight_jobsize", "500"),
            // Small enough that a long queue is re-keyed over several Ticks.
            ("multifactor.rekey_per_tick", "3"),
        ],
        1_000,
    );
    s
}

/// A replica that restored from a snapshot of the other (JSON, as heads store them).
fn restored(s: &State) -> State {
    let mut r: State = serde_json::from_str(&serde_json::to_string(s).unwrap()).unwrap();
    r.reintern();
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Two replicas apply the same log (one restarting from a snapshot half way); after
    /// every entry they hold the same usage, factors and queue (with its priorities), the
    /// charge rates match the running tasks, and the multifactor order is respected.
    #[test]
    fn replicas_agree_and_the_order_is_respected(steps in prop::collection::vec(step(), 1..120)) {
        let mut a = cluster();
        let mut b = cluster();
        let mut submitted = Vec::new();
        for (n, st) in steps.iter().enumerate() {
            if n == steps.len() / 2 {
                b = restored(&b);
            }
            let Some(cmd) = command(&a, st, &submitted) else { continue };
            let before = a.clone();
            let r = a.apply(cmd.clone());
            b.apply(cmd);
            if let Response::Submitted { job, .. } = r {
                submitted.push(job);
            }
            prop_assert_eq!(&a.fairshare, &b.fairshare, "usage after step {} ({:?})", n, st);
            prop_assert_eq!(&a.queue, &b.queue, "queue after step {}", n);
            check_rates_match_running(&a)?;
            check_order_respected(&before, &a)?;
        }
        prop_assert_eq!(serde_json::to_value(&a).unwrap(), serde_json::to_value(&b).unwrap());
    }
}

/// A simulated cluster of 8 cpus where three users with shares 1:2:1 always have work
/// queued; returns each user's delivered cpu-seconds over the second half of `hours`.
fn simulate(seed: u64, hours: u64) -> [f64; 3] {
    let mut rng = seed | 1;
    let mut next = move |n: u64| {
        // xorshift64: deterministic per seed, no dependency.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut s = State::new();
    s.apply(register("n0", 4, 0));
    s.apply(register("n1", 4, 0));
    configure(
        &mut s,
        &[
            ("version", "4"),
            ("order", "multifactor"),
            ("fairshare.half_life_s", "3600"),
            ("fairshare.calc_period_s", "60"),
            ("fairshare.user.b", "2"),
        ],
        0,
    );
    let end_at = hours * 3_600_000;
    let measure_from = end_at / 2;
    // (end time, key) of every started task, and its planned length by job.
    let mut ends: BTreeMap<(u64, TaskKey), (u32, String)> = BTreeMap::new();
    let mut length: BTreeMap<JobId, u64> = BTreeMap::new();
    let mut owner: BTreeMap<JobId, usize> = BTreeMap::new();
    let mut delivered = [0u64; 3];
    let mut next_tick = 60_000;
    let mut now = 0;
    while now < end_at {
        // Keep every user's queue topped up.
        for (u, name) in USERS.iter().enumerate() {
            let waiting = s
                .jobs
                .values()
                .filter(|j| j.spec.user == *name && j.has_pending())
                .count();
            for _ in waiting..4 {
                let r = s.apply(Command::Submit {
                    request_id: String::new(),
                    spec: spec(name, 1 + next(2) as u32, 0, 0),
                    now_ms: now,
                });
                if let Response::Submitted { job, .. } = r {
                    length.insert(job, 30_000 + next(270_000));
                    owner.insert(job, u);
                }
            }
        }
        for (key, attempt, node) in running(&s) {
            if !ends.keys().any(|(_, k)| *k == key) {
                let start = s.jobs[&key.job].running[&key.index].start_ms;
                ends.insert((start + length[&key.job], key), (attempt, node));
            }
        }
        let next_end = ends.keys().next().map_or(u64::MAX, |(t, _)| *t);
        if next_tick <= next_end {
            now = next_tick;
            s.apply(Command::Tick { now_ms: now });
            next_tick += 60_000;
            continue;
        }
        let ((t, key), (attempt, node)) = ends.pop_first().unwrap();
        now = t;
        let j = &s.jobs[&key.job];
        let (cpus, start) = (u64::from(j.spec.cpus), j.running[&key.index].start_ms);
        if t >= measure_from {
            delivered[owner[&key.job]] += cpus * (t - start.max(measure_from));
        }
        s.apply(Command::Reports {
            node,
            reports: vec![common::exited(key, attempt, t)],
            now_ms: t,
        });
    }
    delivered.map(|d| d as f64 / 1000.0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// Named check: fair-share converges. Over 24 simulated hours (24 half-lives) the
    /// second 12 hours deliver each user its share of the cpu-seconds (1:2:1, i.e. 25%,
    /// 50%, 25%) within 2 percentage points.
    #[test]
    fn fair_share_converges_to_the_configured_shares(seed in any::<u64>()) {
        let d = simulate(seed, 24);
        eprintln!("delivered cpu-seconds a/b/c: {d:?}");
        let total: f64 = d.iter().sum();
        let want = [0.25, 0.5, 0.25];
        for (u, got) in d.iter().enumerate() {
            let frac = got / total;
            prop_assert!((frac - want[u]).abs() < 0.02, "user {}: {:.3} of the cpu-seconds, want {} ({:?})", USERS[u], frac, want[u], d);
        }
    }
}

/// The cost of one Tick that re-prioritises 100,000 pending jobs (three users, usage on
/// record), printed; run with `--ignored --nocapture` in release mode.
#[test]
#[ignore]
fn rekey_cost_of_100k_pending_jobs() {
    let mut s = State::new();
    s.apply(register("n0", 1, 0));
    configure(&mut s, &[("version", "4"), ("order", "multifactor")], 0);
    for i in 0..100_000u64 {
        s.apply(Command::Submit {
            request_id: String::new(),
            spec: spec(USERS[(i % 3) as usize], 1, 0, 0),
            now_ms: 1 + i / 100,
        });
    }
    // The first job runs; ending it puts usage on its user's record.
    let (key, attempt, node) = running(&s)[0].clone();
    let t = s.now_ms + 60_000;
    s.apply(Command::Reports {
        node,
        reports: vec![common::exited(key, attempt, t)],
        now_ms: t,
    });
    let queued = s.queue.len();
    if let Ok(cap) = std::env::var("REKEY_CAP") {
        configure(&mut s, &[("multifactor.rekey_per_tick", &cap)], t);
    }
    let mut times = Vec::new();
    for k in 1..=5u64 {
        let start = std::time::Instant::now();
        s.apply(Command::Tick {
            now_ms: t + k * 300_000,
        });
        times.push(start.elapsed());
    }
    eprintln!("re-keying Tick over {queued} queued jobs: {times:?}");
    assert_eq!(s.queue.len(), queued);
}
