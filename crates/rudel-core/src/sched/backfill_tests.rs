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
