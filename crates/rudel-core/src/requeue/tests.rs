use super::*;
use crate::command::{Command, Response, TaskOutcome, TaskReport};
use crate::job::JobSpec;

fn cluster(cpus: u32) -> State {
    crate::testkit::one_node(cpus)
}

fn spec(requeue: bool) -> JobSpec {
    JobSpec {
        requeue,
        ..crate::testkit::spec()
    }
}

fn submit(s: &mut State, spec: JobSpec) -> JobId {
    crate::testkit::submit(s, spec)
}

/// Reports every running holder of `job` ended with `code`.
fn end_all(s: &mut State, job: JobId, code: i32) {
    let now = s.now_ms + 10;
    let reports: Vec<TaskReport> = s.jobs[&job]
        .running
        .iter()
        .filter(|(_, rt)| rt.after.is_none() || rt.kill_requested)
        .map(|(&index, rt)| {
            let outcome = if rt.kill_requested {
                TaskOutcome::Cancelled
            } else {
                TaskOutcome::Exited
            };
            crate::testkit::report(TaskKey { job, index }, rt.attempt, outcome, code, now - 5, now)
        })
        .collect();
    s.apply(Command::Reports {
        node: "n1".into(),
        reports,
        now_ms: now,
    });
}

fn requeue(s: &mut State, refs: &[JobRef], hold: bool) -> (Vec<JobId>, Vec<(JobId, String)>, Vec<JobId>) {
    let now = s.now_ms + 1;
    match s.apply(Command::Requeue {
        jobs: refs.to_vec(),
        hold,
        now_ms: now,
    }) {
        Response::JobsChanged {
            changed,
            skipped,
            unknown,
        } => (changed, skipped, unknown),
        other => panic!("{other:?}"),
    }
}

fn whole(job: JobId) -> JobRef {
    JobRef { job, index: None }
}

fn attempt(s: &State, job: JobId, index: u32) -> u32 {
    s.jobs[&job].running[&index].attempt
}

#[test]
fn a_completed_job_runs_again_as_a_higher_attempt() {
    let mut s = cluster(1);
    let a = submit(&mut s, spec(true));
    end_all(&mut s, a, 0);
    assert_eq!(s.jobs[&a].state(), TaskState::Completed);
    assert!(s.finished.contains(&a));
    let (changed, skipped, _) = requeue(&mut s, &[whole(a)], false);
    assert_eq!((changed, skipped), (vec![a], vec![]));
    assert!(!s.finished.contains(&a), "a requeued job is live again");
    assert_eq!(s.jobs[&a].end_ms, None);
    assert_eq!(attempt(&s, a, 0), 2, "placed again in the same entry, restart count 1");
    end_all(&mut s, a, 0);
    let out = s.apply_output(Command::Requeue {
        jobs: vec![whole(a)],
        hold: false,
        now_ms: s.now_ms + 1,
    });
    assert!(out.events.contains(&Event::JobRequeued { job: a }));
    assert_eq!(attempt(&s, a, 0), 3);
    crate::invariants::check_all(&s).unwrap();
}

#[test]
fn a_running_job_is_killed_first_and_never_runs_twice_at_once() {
    let mut s = cluster(1);
    let a = submit(&mut s, spec(true));
    let out = s.apply_output(Command::Requeue {
        jobs: vec![whole(a)],
        hold: false,
        now_ms: s.now_ms + 1,
    });
    assert!(out
        .events
        .iter()
        .any(|e| matches!(e, Event::KillRequested { key, attempt: 1, .. } if key.job == a)));
    let rt = &s.jobs[&a].running[&0];
    assert!(
        rt.requeue && rt.kill_requested && rt.attempt == 1,
        "attempt 1 still holds its core"
    );
    assert_eq!(s.nodes[0].cpus_used, 1);
    end_all(&mut s, a, 137);
    assert_eq!(attempt(&s, a, 0), 2, "back to pending and placed again");
    assert_eq!(s.jobs[&a].count(TaskState::Running), 1);
    assert!(!s.jobs[&a].running[&0].kill_requested);
    end_all(&mut s, a, 0);
    assert_eq!(s.jobs[&a].state(), TaskState::Completed);
    crate::invariants::check_all(&s).unwrap();
}

#[test]
fn no_requeue_jobs_unknown_and_pruned_ids_are_refused() {
    let mut s = cluster(1);
    let a = submit(&mut s, spec(false));
    end_all(&mut s, a, 0);
    let (changed, skipped, unknown) = requeue(&mut s, &[whole(a), whole(999)], false);
    assert!(changed.is_empty());
    assert_eq!(unknown, vec![999]);
    assert!(skipped[0].1.contains("presently disabled") && skipped[0].1.contains("--no-requeue"));
    assert_eq!(s.jobs[&a].state(), TaskState::Completed, "nothing changed");
    // A job the state pruned (finished long ago): refused, not "unknown".
    s.jobs.remove(&a);
    s.finished.retain(|&f| f != a);
    let (_, skipped, unknown) = requeue(&mut s, &[whole(a)], false);
    assert!(unknown.is_empty());
    assert_eq!(
        skipped,
        vec![(a, format!("job {a} is no longer in the queue; resubmit it"))]
    );
}

#[test]
fn requeuehold_holds_and_a_pending_job_is_left_alone() {
    let mut s = cluster(1);
    let a = submit(&mut s, spec(true));
    let b = submit(
        &mut s,
        JobSpec {
            hold: true,
            ..spec(true)
        },
    );
    let (_, skipped, _) = requeue(&mut s, &[whole(b)], false);
    assert!(skipped[0].1.contains("pending"), "{skipped:?}");
    end_all(&mut s, a, 0);
    requeue(&mut s, &[whole(a)], true);
    assert!(s.jobs[&a].held);
    assert_eq!(s.jobs[&a].count(TaskState::Pending), 1);
    assert!(!s.queue.iter().any(|k| k.2 == a));
    s.apply(Command::Release {
        jobs: vec![a],
        now_ms: s.now_ms + 1,
    });
    assert_eq!(attempt(&s, a, 0), 2);
}

#[test]
fn one_array_task_or_the_whole_array() {
    let mut s = cluster(8);
    let arr = JobSpec {
        array: Some(crate::parse::parse_array("1-4").unwrap()),
        ..spec(true)
    };
    let a = submit(&mut s, arr);
    end_all(&mut s, a, 0);
    assert_eq!(s.jobs[&a].state(), TaskState::Completed);
    // `A_3`, and the task with index 2 by its own job id (position 1).
    let (changed, _, _) = requeue(&mut s, &[JobRef { job: a, index: Some(3) }, whole(a + 1)], false);
    assert_eq!(changed, vec![a + 2, a + 1]);
    let running: Vec<u32> = s.jobs[&a].running.keys().copied().collect();
    assert_eq!(running, vec![2, 3]);
    assert_eq!(s.jobs[&a].count(TaskState::Completed), 2);
    let (_, skipped, _) = requeue(&mut s, &[JobRef { job: a, index: Some(9) }], false);
    assert!(skipped[0].1.contains("no array task 9"));
    end_all(&mut s, a, 0);
    requeue(&mut s, &[whole(a)], false);
    assert_eq!(s.jobs[&a].count(TaskState::Running), 4, "every task runs again");
    let attempts: Vec<u32> = s.jobs[&a].running.values().map(|r| r.attempt).collect();
    // One attempt number per requeue, above every earlier one (tasks ran as 1, 2 and 3).
    assert_eq!(attempts, vec![4; 4]);
    crate::invariants::check_all(&s).unwrap();
}

#[test]
fn a_cancelled_array_is_requeued_whole() {
    let mut s = cluster(1);
    let arr = JobSpec {
        array: Some(crate::parse::parse_array("0-7").unwrap()),
        ..spec(true)
    };
    let a = submit(&mut s, arr);
    end_all(&mut s, a, 0);
    s.apply(Command::Cancel {
        jobs: vec![a],
        now_ms: s.now_ms + 1,
    });
    end_all(&mut s, a, 0);
    assert!(s.jobs[&a].is_finished());
    let (_, skipped, _) = requeue(&mut s, &[JobRef { job: a, index: Some(6) }], false);
    assert!(skipped[0].1.contains("whole array"), "{skipped:?}");
    requeue(&mut s, &[whole(a)], false);
    assert!(!s.jobs[&a].cancelled);
    assert_eq!(s.jobs[&a].display_counts()[TaskState::Pending as usize], 7);
    crate::invariants::check_all(&s).unwrap();
}

#[test]
fn a_satisfied_dependency_stays_satisfied_an_undecided_one_follows_the_rerun() {
    let mut s = cluster(1);
    let a = submit(&mut s, spec(true));
    let b = submit(&mut s, spec(true));
    let both = JobSpec {
        dependency: Some(crate::deps::parse(&format!("afterok:{a},afterok:{b}")).unwrap()),
        ..spec(true)
    };
    let w = submit(&mut s, both);
    let after_b = JobSpec {
        dependency: Some(crate::deps::parse(&format!("afterany:{b}")).unwrap()),
        ..spec(true)
    };
    let v = submit(&mut s, after_b);
    end_all(&mut s, a, 0);
    // a completed: w's condition on a holds. Requeue a: w keeps it.
    requeue(&mut s, &[whole(a)], false);
    end_all(&mut s, b, 0);
    assert!(s.jobs[&b].is_finished());
    // Requeue b while v and w wait behind the single core: both already hold on b.
    assert_eq!(
        s.jobs[&w].dep,
        crate::job::DepStatus::Satisfied,
        "a's rerun does not block w"
    );
    assert_eq!(s.jobs[&v].dep, crate::job::DepStatus::Satisfied);
    crate::invariants::check_all(&s).unwrap();
}

#[test]
fn a_never_satisfied_dependant_follows_the_rerun() {
    let mut s = cluster(1);
    let a = submit(&mut s, spec(true));
    let w = submit(
        &mut s,
        JobSpec {
            dependency: Some(crate::deps::parse(&format!("afterok:{a}")).unwrap()),
            ..spec(true)
        },
    );
    end_all(&mut s, a, 1);
    assert_eq!(s.jobs[&w].dep, crate::job::DepStatus::Never);
    requeue(&mut s, &[whole(a)], false);
    assert_eq!(s.jobs[&w].dep, crate::job::DepStatus::Waiting);
    end_all(&mut s, a, 0);
    assert_eq!(
        s.jobs[&w].count(TaskState::Running),
        1,
        "w starts once the rerun succeeded"
    );
}
