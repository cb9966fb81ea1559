//! The expected-start estimate and what may backfill, on small hand-built clusters.
use crate::command::{Command, NodeRegistration, Response};
use crate::ids::JobId;
use crate::job::JobSpec;
use crate::state::State;

const MIN: u64 = 60_000;

fn cluster(nodes: u32, cpus: u32, backfill: &str) -> State {
    let mut s = State::new();
    for i in 0..nodes {
        let reg = NodeRegistration {
            name: format!("n{i}"),
            uid: format!("u{i}"),
            cpus,
            mem_bytes: 1 << 30,
            ..NodeRegistration::default()
        };
        s.apply(Command::RegisterNode { reg, now_ms: 1 });
    }
    let settings = vec![
        ("version".to_string(), "5".to_string()),
        ("order".to_string(), "fifo".to_string()),
        ("backfill".to_string(), backfill.to_string()),
    ];
    let r = s.apply(Command::Configure { settings, now_ms: 1 });
    assert!(matches!(r, Response::Configured { .. }), "{r:?}");
    s
}

fn submit(s: &mut State, cpus: u32, limit_ms: u64, now_ms: u64) -> JobId {
    let spec = JobSpec {
        argv: vec!["true".into()],
        cpus,
        chdir: "/".into(),
        time_limit_ms: limit_ms,
        ..JobSpec::default()
    };
    match s.apply(Command::Submit {
        request_id: String::new(),
        spec,
        now_ms,
    }) {
        Response::Submitted { job, .. } => job,
        other => panic!("{other:?}"),
    }
}

fn running(s: &State, job: JobId) -> bool {
    !s.jobs[&job].running.is_empty()
}

#[test]
fn the_expected_start_is_when_enough_tasks_end_at_their_limits() {
    let mut s = cluster(1, 4, "easy");
    let a = submit(&mut s, 2, 10 * MIN, 1_000);
    let b = submit(&mut s, 1, 30 * MIN, 1_000);
    assert!(running(&s, a) && running(&s, b));
    // 3 cpus: 1 free now, 2 more when `a` ends at 1_000 + 10 min.
    let big = submit(&mut s, 3, 5 * MIN, 2_000);
    let r = s.reservation.clone().expect("a reservation");
    assert_eq!((r.job, r.start_ms, r.nodes), (big, Some(1_000 + 10 * MIN), vec![0]));
    // 4 cpus need `b` too.
    let mut s2 = cluster(1, 4, "easy");
    submit(&mut s2, 2, 10 * MIN, 1_000);
    submit(&mut s2, 1, 30 * MIN, 1_000);
    submit(&mut s2, 4, 5 * MIN, 2_000);
    assert_eq!(s2.reservation.and_then(|r| r.start_ms), Some(1_000 + 30 * MIN));
}

#[test]
fn a_task_without_a_limit_makes_the_start_unknown_and_reserves_the_node() {
    let mut s = cluster(1, 2, "easy");
    submit(&mut s, 1, 0, 1_000);
    let big = submit(&mut s, 2, MIN, 1_000);
    let r = s.reservation.clone().expect("a reservation");
    assert_eq!((r.job, r.start_ms), (big, None));
    // Nothing may backfill: the node is kept whole, as with backfill=off.
    let short = submit(&mut s, 1, MIN, 1_000);
    assert!(!running(&s, short));
}

#[test]
fn a_short_job_backfills_a_long_one_and_one_without_limit_wait() {
    let mut s = cluster(1, 2, "easy");
    let holder = submit(&mut s, 1, 10 * MIN, 1_000);
    let big = submit(&mut s, 2, MIN, 1_000);
    let long = submit(&mut s, 1, 20 * MIN, 1_000);
    let unlimited = submit(&mut s, 1, 0, 1_000);
    let short = submit(&mut s, 1, 5 * MIN, 1_000);
    assert!(running(&s, holder) && !running(&s, big));
    assert!(!running(&s, long), "its limit ends after the reserved start");
    assert!(!running(&s, unlimited), "no limit: never on reserved capacity");
    assert!(running(&s, short), "ends before the reserved start");
    assert_eq!(s.reservation.as_ref().and_then(|r| r.start_ms), Some(1_000 + 10 * MIN));
}

#[test]
fn backfill_off_keeps_the_node_for_the_blocked_job() {
    let mut s = cluster(1, 2, "off");
    submit(&mut s, 1, 10 * MIN, 1_000);
    submit(&mut s, 2, MIN, 1_000);
    let short = submit(&mut s, 1, MIN, 1_000);
    assert!(!running(&s, short));
    assert_eq!(s.reservation, None);
}

#[test]
fn spare_capacity_at_the_expected_start_takes_a_long_job_once() {
    // 4 cpus; a 2-cpu task runs 10 min; the blocked job needs 3: at its start 1 cpu is
    // spare, so one long 1-cpu job may run past it, but not a second.
    let mut s = cluster(1, 4, "easy");
    submit(&mut s, 2, 10 * MIN, 1_000);
    let big = submit(&mut s, 3, MIN, 1_000);
    let long1 = submit(&mut s, 1, 60 * MIN, 1_000);
    let long2 = submit(&mut s, 1, 60 * MIN, 1_000);
    assert!(!running(&s, big));
    assert!(running(&s, long1), "fits in what the reserved job leaves");
    assert!(!running(&s, long2), "would take the reserved job's cpu");
    // Later passes keep that: the estimate now counts long1 until it ends.
    submit(&mut s, 1, 60 * MIN, 2_000);
    assert!(!running(&s, long2));
}

#[test]
fn a_node_the_reserved_job_does_not_need_takes_anything() {
    let mut s = cluster(2, 2, "easy");
    let a = submit(&mut s, 2, 10 * MIN, 1_000);
    let b = submit(&mut s, 1, 30 * MIN, 1_000);
    assert!(running(&s, a) && running(&s, b));
    let big = submit(&mut s, 2, MIN, 1_000);
    let r = s.reservation.clone().expect("reserved");
    assert_eq!((r.job, r.start_ms, r.nodes.len()), (big, Some(1_000 + 10 * MIN), 1));
    let reserved = r.nodes[0];
    let long = submit(&mut s, 1, 0, 1_000);
    let on = s.jobs[&long].running.values().next().map(|t| t.node);
    assert!(on.is_some() && on != Some(reserved), "{on:?} vs {reserved}");
}

#[test]
fn the_reserved_job_starts_when_the_limit_ends() {
    let mut s = cluster(1, 2, "easy");
    let holder = submit(&mut s, 1, 10 * MIN, 1_000);
    let big = submit(&mut s, 2, MIN, 1_000);
    let short = submit(&mut s, 1, 5 * MIN, 1_000);
    let end = |s: &mut State, job: JobId, now_ms: u64| {
        let attempt = s.jobs[&job].running[&0].attempt;
        let key = crate::ids::TaskKey { job, index: 0 };
        let r = crate::testkit::report(key, attempt, crate::command::TaskOutcome::Exited, 0, 1_000, now_ms);
        let node = s.nodes[s.jobs[&job].running[&0].node as usize].name.clone();
        s.apply(Command::Reports {
            node,
            reports: vec![r],
            now_ms,
        });
    };
    end(&mut s, short, 1_000 + 5 * MIN);
    assert!(!running(&s, big));
    end(&mut s, holder, 1_000 + 10 * MIN);
    assert!(running(&s, big));
    assert_eq!(s.reservation, None);
}

#[test]
fn a_multi_node_job_expects_to_start_when_its_last_node_frees() {
    let mut s = cluster(2, 2, "easy");
    submit(&mut s, 1, 10 * MIN, 1_000);
    submit(&mut s, 1, 30 * MIN, 1_000);
    let spec = JobSpec {
        argv: vec!["true".into()],
        cpus: 1,
        chdir: "/".into(),
        time_limit_ms: MIN,
        alloc: Some(Box::new(crate::alloc::AllocSpec {
            nodes_min: 2,
            nodes_max: 2,
            nodes_given: true,
            ntasks: Some(4),
            ntasks_per_node: Some(2),
            ..crate::alloc::AllocSpec::default()
        })),
        ..JobSpec::default()
    };
    let Response::Submitted { job: gang, .. } = s.apply(Command::Submit {
        request_id: String::new(),
        spec,
        now_ms: 1_000,
    }) else {
        panic!()
    };
    let r = s.reservation.clone().expect("reserved");
    assert_eq!((r.job, r.start_ms, r.nodes), (gang, Some(1_000 + 30 * MIN), vec![0, 1]));
    assert_eq!(r.need, vec![(2, 0), (2, 0)]);
    // A 1-cpu job of 20 minutes ends before: it backfills; one of 40 does not.
    let fits = submit(&mut s, 1, 20 * MIN, 1_000);
    let late = submit(&mut s, 1, 40 * MIN, 1_000);
    assert!(running(&s, fits) && !running(&s, late));
}

/// A cluster at scheduling `version`: `nodes` nodes of `cpus` with `gpus` GPUs each,
/// `licenses` declared.
fn cluster_at(version: &str, nodes: u32, cpus: u32, gpus: u32, backfill: &str, licenses: &str) -> State {
    let mut s = State::new();
    for i in 0..nodes {
        let reg = NodeRegistration {
            name: format!("n{i}"),
            uid: format!("u{i}"),
            cpus,
            mem_bytes: 1 << 30,
            gres: if gpus > 0 {
                [("gpu".to_string(), gpus)].into_iter().collect()
            } else {
                Default::default()
            },
            ..NodeRegistration::default()
        };
        s.apply(Command::RegisterNode { reg, now_ms: 1 });
    }
    let mut settings = vec![
        ("version".to_string(), version.to_string()),
        ("order".to_string(), "fifo".to_string()),
        ("backfill".to_string(), backfill.to_string()),
    ];
    if !licenses.is_empty() {
        settings.push(("licenses".to_string(), licenses.to_string()));
    }
    let r = s.apply(Command::Configure { settings, now_ms: 1 });
    assert!(matches!(r, Response::Configured { .. }), "{r:?}");
    s
}

fn submit_with(s: &mut State, cpus: u32, limit_ms: u64, gpus: u32, licenses: &str) -> JobId {
    let spec = JobSpec {
        argv: vec!["true".into()],
        cpus,
        chdir: "/".into(),
        time_limit_ms: limit_ms,
        gres: if gpus > 0 {
            [("gpu".to_string(), gpus)].into_iter().collect()
        } else {
            Default::default()
        },
        licenses: if licenses.is_empty() {
            Default::default()
        } else {
            crate::resources::parse_licenses(licenses).expect("licenses")
        },
        ..JobSpec::default()
    };
    match s.apply(Command::Submit {
        request_id: String::new(),
        spec,
        now_ms: 1_000,
    }) {
        Response::Submitted { job, .. } => job,
        other => panic!("{other:?}"),
    }
}

#[test]
fn conservative_backfill_protects_every_reserved_job_not_just_the_first() {
    // Two 3-cpu nodes: n0 busy with 2 cpus for 10 min, n1 with 2 cpus for 30 min.
    // B (3 cpus, 100 min) is expected on n0 at 10 min; C (3 cpus) on n1 at 30 min.
    // D (1 cpu, 60 min) fits on n1 now: EASY lets it, which would push C to 60 min;
    // conservative keeps n1's spare cpu for C.
    let run = |mode: &str| {
        let mut s = cluster_at("6", 2, 3, 0, mode, "");
        let a0 = submit_with(&mut s, 2, 10 * MIN, 0, "");
        let a1 = submit_with(&mut s, 2, 30 * MIN, 0, "");
        assert_eq!(s.jobs[&a0].running.values().next().map(|r| r.node), Some(0));
        assert_eq!(s.jobs[&a1].running.values().next().map(|r| r.node), Some(1));
        let b = submit_with(&mut s, 3, 100 * MIN, 0, "");
        let c = submit_with(&mut s, 3, 10 * MIN, 0, "");
        let d = submit_with(&mut s, 1, 60 * MIN, 0, "");
        (s, b, c, d)
    };
    let (easy, b, _, d) = run("easy");
    assert_eq!(
        easy.reservation.as_ref().map(|r| (r.job, r.start_ms)),
        Some((b, Some(1_000 + 10 * MIN)))
    );
    assert!(easy.later_reservations.is_empty());
    assert!(running(&easy, d), "EASY protects only the first reserved job");

    let (cons, b, c, d) = run("conservative");
    assert_eq!(
        cons.reservation.as_ref().map(|r| (r.job, r.start_ms)),
        Some((b, Some(1_000 + 10 * MIN)))
    );
    let later: Vec<_> = cons
        .later_reservations
        .iter()
        .map(|r| (r.job, r.start_ms, r.nodes.clone()))
        .collect();
    // D gets one too: on n1 once C is done.
    assert_eq!(
        later,
        vec![
            (c, Some(1_000 + 30 * MIN), vec![1]),
            (d, Some(1_000 + 40 * MIN), vec![1])
        ]
    );
    assert!(!running(&cons, d), "D would delay C's reserved start");
    // A short job that ends before C's start still backfills on n1.
    let mut cons = cons;
    let e = submit_with(&mut cons, 1, 20 * MIN, 0, "");
    assert!(running(&cons, e));
    // squeue --start / show see C's expected start too.
    let (start, nodes) = crate::sched::backfill_explain::expected_start(&cons, &cons.jobs[&c]).expect("C's start");
    assert_eq!((start, nodes), (1_000 + 30 * MIN, vec!["n1".to_string()]));
}

#[test]
fn a_gpu_job_gets_an_expected_start_from_version_6() {
    // One node, 4 cpus, 2 GPUs; A holds both GPUs for 10 min.
    let run = |version: &str| {
        let mut s = cluster_at(version, 1, 4, 2, "easy", "");
        submit_with(&mut s, 1, 10 * MIN, 2, "");
        let b = submit_with(&mut s, 1, 10 * MIN, 1, "");
        let short = submit_with(&mut s, 1, 5 * MIN, 0, "");
        let long = submit_with(&mut s, 1, 60 * MIN, 0, "");
        (s, b, short, long)
    };
    let (v5, b, short, long) = run("5");
    assert_eq!(v5.reservation.as_ref().map(|r| (r.job, r.start_ms)), Some((b, None)));
    assert!(
        !running(&v5, short) && !running(&v5, long),
        "version 5 keeps the node whole"
    );

    let (v6, b, short, long) = run("6");
    assert_eq!(
        v6.reservation.as_ref().map(|r| (r.job, r.start_ms)),
        Some((b, Some(1_000 + 10 * MIN)))
    );
    assert!(running(&v6, short), "ends before the GPUs are back");
    assert!(running(&v6, long), "needs no GPU and leaves B its cpu at its start");
}

#[test]
fn a_gpu_task_may_not_run_past_a_reserved_gpu_jobs_start_on_its_node() {
    let mut s = cluster_at("6", 1, 4, 2, "easy", "");
    submit_with(&mut s, 1, 10 * MIN, 1, "");
    let b = submit_with(&mut s, 1, 10 * MIN, 2, "");
    let short_gpu = submit_with(&mut s, 1, 5 * MIN, 1, "");
    assert!(!running(&s, b));
    assert!(running(&s, short_gpu), "ends before B's start");
    let mut s = cluster_at("6", 1, 4, 2, "easy", "");
    submit_with(&mut s, 1, 10 * MIN, 1, "");
    submit_with(&mut s, 1, 10 * MIN, 2, "");
    let long_gpu = submit_with(&mut s, 1, 60 * MIN, 1, "");
    assert!(!running(&s, long_gpu), "would hold a GPU B needs at its start");
}

#[test]
fn a_job_waiting_for_licenses_is_reserved_from_version_6() {
    // 4 matlab licenses; A holds 2 for 10 min; B needs 3.
    let run = |version: &str| {
        let mut s = cluster_at(version, 1, 8, 0, "easy", "matlab:4");
        submit_with(&mut s, 1, 10 * MIN, 0, "matlab:2");
        let b = submit_with(&mut s, 1, 10 * MIN, 0, "matlab:3");
        let c = submit_with(&mut s, 1, 60 * MIN, 0, "matlab:1");
        let d = submit_with(&mut s, 1, 60 * MIN, 0, "matlab:1");
        (s, b, c, d)
    };
    let (v5, _, c, d) = run("5");
    assert!(
        running(&v5, c) && running(&v5, d),
        "version 5: later jobs take the licenses B waits for"
    );

    let (mut v6, b, c, d) = run("6");
    assert_eq!(
        v6.reservation.as_ref().map(|r| (r.job, r.start_ms)),
        Some((b, Some(1_000 + 10 * MIN)))
    );
    assert!(running(&v6, c), "the one license B leaves at its start");
    assert!(!running(&v6, d), "would take one B needs at its start");
    let short = submit_with(&mut v6, 1, 5 * MIN, 0, "matlab:1");
    assert!(running(&v6, short), "gives its license back before B's start");
}
