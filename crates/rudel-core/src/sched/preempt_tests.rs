//! Preemption on small hand-built clusters: who is chosen, what happens to them, and
//! what is never done.
use crate::command::{Command, NodeRegistration, Response, TaskOutcome};
use crate::events::Event;
use crate::ids::{JobId, TaskKey};
use crate::invariants::check_all;
use crate::job::{JobSpec, TaskState};
use crate::state::State;

/// One node `n0` of `cpus` cpus; partitions `low` (tier 0, default), `mid` (tier 1) and
/// `high` (tier 2) over it; `preempt=mode` unless `None`.
fn cluster(cpus: u32, mode: Option<&str>) -> State {
    let mut s = State::new();
    let reg = NodeRegistration {
        name: "n0".into(),
        uid: "u0".into(),
        cpus,
        mem_bytes: 1 << 30,
        ..NodeRegistration::default()
    };
    s.apply(Command::RegisterNode { reg, now_ms: 1 });
    let mut settings = vec![
        ("version", "7"),
        ("partition.low", "default=yes"),
        ("partition.mid", "tier=1"),
        ("partition.high", "tier=2"),
        ("preempt.grace_s", "5"),
    ];
    if let Some(m) = mode {
        settings.push(("preempt", m));
    }
    let settings = settings
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let r = s.apply(Command::Configure { settings, now_ms: 1 });
    assert!(matches!(r, Response::Configured { .. }), "{r:?}");
    s
}

fn submit(s: &mut State, partition: &str, cpus: u32, requeue: bool, now_ms: u64) -> JobId {
    let spec = JobSpec {
        argv: vec!["sleep".into(), "100".into()],
        cpus,
        chdir: "/".into(),
        partition: partition.into(),
        requeue,
        ..JobSpec::default()
    };
    let out = s.apply_output(Command::Submit {
        request_id: String::new(),
        spec,
        now_ms,
    });
    assert!(out.violations.is_empty(), "{:?}", out.violations);
    check_all(s).unwrap();
    match out.response {
        Response::Submitted { job, .. } => job,
        other => panic!("{other:?}"),
    }
}

fn key(job: JobId) -> TaskKey {
    TaskKey { job, index: 0 }
}

fn preempted(s: &State, job: JobId) -> Option<JobId> {
    s.running_task(key(job)).and_then(|rt| rt.preempted_by)
}

fn running(s: &State, job: JobId) -> bool {
    s.running_task(key(job)).is_some_and(|rt| rt.after.is_none())
}

/// The agent reports that the killed task ended.
fn killed(s: &mut State, job: JobId, now_ms: u64) {
    let attempt = s.running_task(key(job)).expect("running").attempt;
    let out = s.apply_output(Command::Reports {
        node: "n0".into(),
        reports: vec![crate::testkit::report(
            key(job),
            attempt,
            TaskOutcome::Cancelled,
            143,
            1,
            now_ms,
        )],
        now_ms,
    });
    assert!(out.violations.is_empty(), "{:?}", out.violations);
    check_all(s).unwrap();
}

#[test]
fn the_lowest_tier_goes_first_then_the_youngest() {
    let mut s = cluster(4, Some("requeue"));
    let old_low = submit(&mut s, "low", 1, true, 1_000);
    let young_low = submit(&mut s, "low", 1, true, 2_000);
    let mid_a = submit(&mut s, "mid", 1, true, 3_000);
    let mid_b = submit(&mut s, "mid", 1, true, 4_000);
    assert!([old_low, young_low, mid_a, mid_b].iter().all(|j| running(&s, *j)));
    let high = submit(&mut s, "high", 1, false, 5_000);
    assert_eq!(preempted(&s, young_low), Some(high));
    for j in [old_low, mid_a, mid_b] {
        assert_eq!(preempted(&s, j), None, "only one victim is needed");
    }
    assert!(!running(&s, high), "it waits for the victim to end");
    // Three cpus more: both low tasks, then the younger mid one.
    let mut s = cluster(4, Some("requeue"));
    let jobs: Vec<JobId> = [("low", 1_000), ("low", 2_000), ("mid", 3_000), ("mid", 4_000)]
        .iter()
        .map(|(p, t)| submit(&mut s, p, 1, true, *t))
        .collect();
    let high = submit(&mut s, "high", 3, false, 5_000);
    let victims: Vec<bool> = jobs.iter().map(|j| preempted(&s, *j) == Some(high)).collect();
    assert_eq!(victims, vec![true, true, false, true]);
}

#[test]
fn a_task_of_an_equal_or_higher_tier_is_never_preempted() {
    let mut s = cluster(2, Some("cancel"));
    let high = submit(&mut s, "high", 1, true, 1_000);
    let low = submit(&mut s, "low", 1, true, 2_000);
    // Needs both cpus: the low task alone is not enough, so nothing is stopped.
    let big = submit(&mut s, "high", 2, true, 3_000);
    assert_eq!((preempted(&s, high), preempted(&s, low)), (None, None));
    assert_eq!(s.blocked_job, Some(big));
    // A mid job may stop the low task but not the high one.
    let mut s = cluster(1, Some("cancel"));
    let high = submit(&mut s, "high", 1, true, 1_000);
    submit(&mut s, "mid", 1, true, 2_000);
    submit(&mut s, "high", 1, true, 3_000);
    assert_eq!(preempted(&s, high), None);
    assert!(s.preempting.is_empty());
}

#[test]
fn off_by_default_nothing_is_preempted() {
    let mut s = cluster(1, None);
    assert_eq!(s.sched.preempt.mode, crate::sched::PreemptMode::Off);
    let low = submit(&mut s, "low", 1, true, 1_000);
    let high = submit(&mut s, "high", 1, true, 2_000);
    assert_eq!(preempted(&s, low), None);
    assert_eq!(crate::sched::plan::plan(&s).preempt, None);
    assert!(running(&s, low) && !running(&s, high));
}

#[test]
fn requeue_puts_a_requeueable_victim_back_and_the_preemptor_starts() {
    let mut s = cluster(1, Some("requeue"));
    let low = submit(&mut s, "low", 1, true, 1_000);
    let out = s.apply_output(Command::Submit {
        request_id: String::new(),
        spec: JobSpec {
            argv: vec!["true".into()],
            cpus: 1,
            chdir: "/".into(),
            partition: "high".into(),
            ..JobSpec::default()
        },
        now_ms: 2_000,
    });
    let Response::Submitted { job: high, .. } = out.response else {
        panic!()
    };
    assert!(out.events.iter().any(|e| matches!(e,
        Event::Preempted { key: k, by, requeue: true, .. } if *k == key(low) && *by == high)));
    assert!(out
        .events
        .iter()
        .any(|e| matches!(e, Event::KillRequested { key: k, .. } if *k == key(low))));
    killed(&mut s, low, 3_000);
    assert!(running(&s, high), "the preemptor starts once the victim ended");
    // Pending again as attempt 2 (a requeue); here queued at once on the agent behind
    // the preemptor, whose cpu it takes over when that one ends.
    let j = &s.jobs[&low];
    let again = j.requeued.get(&0).copied().or(j.running.get(&0).map(|rt| rt.attempt));
    assert_eq!(again, Some(2));
    assert!(j.running.get(&0).is_none_or(|rt| rt.after == Some(key(high))));
    assert!(!j.is_finished());
    assert!(s.preempting.is_empty(), "the record goes with the victim");
    // The preemptor ends; the victim runs again.
    let attempt = s.running_task(key(high)).unwrap().attempt;
    s.apply(Command::Reports {
        node: "n0".into(),
        reports: vec![crate::testkit::report(
            key(high),
            attempt,
            TaskOutcome::Exited,
            0,
            3_000,
            4_000,
        )],
        now_ms: 4_000,
    });
    assert_eq!(s.running_task(key(low)).map(|rt| rt.attempt), Some(2));
    check_all(&s).unwrap();
}

#[test]
fn a_victim_without_requeue_or_under_cancel_ends_cancelled_preempted() {
    for (mode, requeue) in [("requeue", false), ("cancel", true)] {
        let mut s = cluster(1, Some(mode));
        let low = submit(&mut s, "low", 1, requeue, 1_000);
        let high = submit(&mut s, "high", 1, false, 2_000);
        assert_eq!(preempted(&s, low), Some(high));
        assert!(!s.running_task(key(low)).unwrap().requeue, "{mode}");
        killed(&mut s, low, 3_000);
        let ended = &s.jobs[&low].ended[&0];
        assert_eq!(ended.state, TaskState::Cancelled, "{mode}");
        assert_eq!(ended.reason, format!("preempted by job {high}"));
        assert!(s.jobs[&low].is_finished());
        assert!(running(&s, high));
    }
}

#[test]
fn nothing_more_is_preempted_while_the_victims_end() {
    let mut s = cluster(2, Some("cancel"));
    let a = submit(&mut s, "low", 1, true, 1_000);
    let b = submit(&mut s, "low", 1, true, 1_500);
    let high = submit(&mut s, "high", 1, false, 2_000);
    assert_eq!((preempted(&s, a), preempted(&s, b)), (None, Some(high)));
    // More entries while `b` is still being killed: no further victim.
    for t in [3_000, 4_000] {
        let out = s.apply_output(Command::Tick { now_ms: t });
        assert!(
            !out.events.iter().any(|e| matches!(e, Event::Preempted { .. })),
            "{out:?}"
        );
    }
    assert_eq!(preempted(&s, a), None);
    let reason = crate::query::pending_reason(&s, &s.jobs[&high]);
    assert!(reason.starts_with("Preempting:"), "{reason}");
    // A second high job may preempt only once the first one's victims ended and it started.
    let second = submit(&mut s, "high", 1, false, 4_500);
    assert_eq!(preempted(&s, a), None, "the first blocked job's victims still end");
    killed(&mut s, b, 5_000);
    assert!(running(&s, high));
    assert_eq!(preempted(&s, a), Some(second));
}

#[test]
fn preempt_needs_version_7() {
    let c = crate::sched::SchedConfig::default();
    let e = c
        .with_all([("version", "5"), ("preempt", "requeue")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("scheduling version 7 or later first"), "{e}");
    let e = c.with_all([("preempt", "sometimes")]).unwrap_err().to_string();
    assert!(e.contains("off, requeue or cancel"), "{e}");
    let ok = c
        .with_all([("version", "7"), ("preempt", "cancel"), ("preempt.grace_s", "0")])
        .unwrap();
    assert_eq!(
        (ok.preempt.mode, ok.preempt.grace_s),
        (crate::sched::PreemptMode::Cancel, 0)
    );
    let e = ok.with_all([("version", "6")]).unwrap_err().to_string();
    assert!(e.contains("version 7"), "{e}");
    // Round trip through the settings `rudel admin config` shows.
    let again = c
        .with_all(ok.all_settings().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .unwrap();
    assert_eq!(again, ok);
}

#[test]
fn tasks_queued_behind_a_victim_on_its_agent_go_with_it_and_wait_again() {
    let mut s = cluster(1, Some("cancel"));
    let spec = JobSpec {
        argv: vec!["sleep".into(), "100".into()],
        cpus: 1,
        chdir: "/".into(),
        partition: "low".into(),
        requeue: true,
        array: Some(crate::parse::parse_array("1-6").unwrap()),
        ..JobSpec::default()
    };
    let low = crate::testkit::submit(&mut s, spec);
    let placed: Vec<u32> = s.jobs[&low].running.keys().copied().collect();
    assert!(placed.len() > 1, "some tasks wait behind the running one: {placed:?}");
    let high = submit(&mut s, "high", 1, false, 2_000);
    let j = &s.jobs[&low];
    assert!(j
        .running
        .values()
        .all(|rt| rt.preempted_by == Some(high) && rt.kill_requested));
    // The queued ones were never started: they go back to pending even under `cancel`.
    assert!(j.running.values().all(|rt| rt.requeue == rt.after.is_some()));
    check_all(&s).unwrap();
}

#[test]
fn the_freed_node_is_kept_for_the_preemptor_unless_a_higher_tier_comes() {
    let mut s = cluster(1, Some("requeue"));
    let low = submit(&mut s, "low", 1, true, 1_000);
    let mid = submit(&mut s, "mid", 1, false, 2_000);
    assert_eq!(preempted(&s, low), Some(mid));
    assert_eq!(s.preempting[&mid].node, 0);
    // A high job arriving meanwhile may take what the victim frees: it outranks `mid`.
    let high = submit(&mut s, "high", 1, false, 2_500);
    killed(&mut s, low, 3_000);
    assert!(running(&s, high) && !running(&s, mid));
    assert!(s.preempting.is_empty());
    // Without it, the requeued victim never takes the node back from `mid`.
    let mut s = cluster(1, Some("requeue"));
    let low = submit(&mut s, "low", 1, true, 1_000);
    let mid = submit(&mut s, "mid", 1, false, 2_000);
    killed(&mut s, low, 3_000);
    assert!(running(&s, mid));
    check_all(&s).unwrap();
}
