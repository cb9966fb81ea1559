//! Gang placement: all or nothing, reservation against a stream of small jobs, release,
//! node loss, and the dining-philosophers case as a property test.
use proptest::prelude::*;

use crate::alloc::AllocSpec;
use crate::command::{Command, NodeRegistration, TaskOutcome};
use crate::ids::{JobId, TaskKey};
use crate::invariants::{check_all, Violation};
use crate::job::{JobSpec, TaskState};
use crate::sched::plan::{GangSlice, Placement, Plan};
use crate::state::State;
use crate::testkit::{report, spec, submit};

fn cluster(nodes: u32, cpus: u32) -> State {
    let mut s = State::new();
    for i in 1..=nodes {
        s.apply(Command::RegisterNode {
            reg: NodeRegistration {
                name: format!("n{i}"),
                uid: format!("u{i}"),
                cpus,
                mem_bytes: 1 << 30,
                ..NodeRegistration::default()
            },
            now_ms: 1_000,
        });
    }
    s
}

fn gang(text: &str, requeue: bool) -> JobSpec {
    JobSpec {
        alloc: AllocSpec::parse_text(text).unwrap().map(Box::new),
        requeue,
        ..spec()
    }
}

/// Ends the running task of `job` (exit 0 unless `outcome` says otherwise).
fn finish(s: &mut State, job: JobId, outcome: TaskOutcome) {
    let (index, rt) = s.jobs[&job]
        .running
        .iter()
        .next()
        .map(|(i, rt)| (*i, rt.clone()))
        .unwrap();
    let node = s.nodes[rt.node as usize].name.clone();
    let now = s.now_ms + 10;
    s.apply(Command::Reports {
        node,
        reports: vec![report(TaskKey { job, index }, rt.attempt, outcome, 0, rt.start_ms, now)],
        now_ms: now,
    });
}

fn all_free(s: &State) -> bool {
    s.nodes
        .iter()
        .all(|n| n.cpus_used == 0 && n.mem_used == 0 && n.slices.is_empty() && n.running.is_empty())
}

#[test]
fn a_gang_takes_every_slice_at_once_and_frees_them_all() {
    let mut s = cluster(3, 2);
    let job = submit(&mut s, gang("nodes=3;nodes-given;ntasks=6", false));
    let rt = &s.jobs[&job].running[&0];
    let a = rt.alloc.as_ref().unwrap();
    assert_eq!(a.nodelist(), "n[1-3]");
    assert_eq!(a.tasks_per_node(), "2(x3)");
    assert!(s.nodes.iter().all(|n| n.cpus_used == 2), "{:?}", s.nodes);
    assert_eq!(s.nodes[1].slices.len(), 1);
    assert_eq!(s.jobs[&job].nodes, ["n1", "n2", "n3"]);
    assert_eq!(check_all(&s), Ok(()));
    finish(&mut s, job, TaskOutcome::Exited);
    assert_eq!(s.jobs[&job].state(), TaskState::Completed);
    assert!(all_free(&s));
    assert_eq!(check_all(&s), Ok(()));
}

#[test]
fn a_gang_that_does_not_fit_holds_nothing_and_a_stream_of_small_jobs_cannot_starve_it() {
    let mut s = cluster(2, 2);
    let small = submit(&mut s, spec());
    let big = submit(&mut s, gang("nodes=2;nodes-given;ntasks-per-node=2", false));
    assert!(s.jobs[&big].running.is_empty());
    assert!(s.nodes.iter().all(|n| n.slices.is_empty()), "no partial hold");
    // Three free cpus, but the big job reserves both nodes: the stream waits behind it.
    let stream: Vec<JobId> = (0..4).map(|_| submit(&mut s, spec())).collect();
    assert!(stream.iter().all(|j| s.jobs[j].running.is_empty()));
    assert_eq!(check_all(&s), Ok(()));
    finish(&mut s, small, TaskOutcome::Exited);
    assert_eq!(s.jobs[&big].running.len(), 1, "the nodes drained: the gang starts");
    assert!(s.nodes.iter().all(|n| n.cpus_used == 2));
    finish(&mut s, big, TaskOutcome::Exited);
    assert!(
        stream.iter().all(|j| s.jobs[j].running.len() == 1),
        "then the stream runs"
    );
    assert_eq!(check_all(&s), Ok(()));
}

#[test]
fn nodes_range_takes_what_is_free_and_exclusive_takes_whole_idle_nodes() {
    let mut s = cluster(3, 4);
    let small = submit(&mut s, spec());
    let ranged = submit(&mut s, gang("nodes=1-3;nodes-given", false));
    let a = s.jobs[&ranged].running[&0].alloc.clone().unwrap();
    assert_eq!(a.slices.len(), 3, "-N 1-3 with room on all three takes three");
    finish(&mut s, ranged, TaskOutcome::Exited);
    let excl = submit(&mut s, gang("nodes=2;nodes-given;exclusive", false));
    let a = s.jobs[&excl].running[&0].alloc.clone().unwrap();
    assert_eq!(a.names(), ["n2", "n3"], "n1 runs another job");
    assert_eq!(a.cpus_per_node(), "4(x2)");
    assert_eq!(check_all(&s), Ok(()));
    finish(&mut s, small, TaskOutcome::Exited);
    finish(&mut s, excl, TaskOutcome::Exited);
    assert!(all_free(&s));
}

#[test]
fn nodelist_and_exclude_are_honoured() {
    let mut s = cluster(3, 2);
    let j = submit(&mut s, gang("nodes=2;nodes-given;nodelist=n3;exclude=n1", false));
    let a = s.jobs[&j].running[&0].alloc.clone().unwrap();
    assert_eq!(a.names(), ["n2", "n3"]);
    let bad = s.apply(Command::Submit {
        request_id: String::new(),
        spec: gang("nodes=4;nodes-given", false),
        now_ms: s.now_ms,
    });
    assert!(format!("{bad:?}").contains("asks for 4 nodes"), "{bad:?}");
}

#[test]
fn losing_a_node_of_the_allocation_frees_every_slice_and_ends_the_job_node_fail() {
    for (lost, requeue) in [("n1", false), ("n2", false), ("n3", true)] {
        let mut s = cluster(3, 2);
        let job = submit(&mut s, gang("nodes=3;nodes-given", requeue));
        let epoch = s.node(lost).unwrap().epoch;
        s.apply(Command::NodeLost {
            name: lost.into(),
            epoch,
            reason: "test".into(),
            now_ms: 5_000,
        });
        assert_eq!(check_all(&s), Ok(()));
        if lost != "n1" {
            // The script still runs on n1: it is killed there, the rest is free already.
            let rt = &s.jobs[&job].running[&0];
            assert!(rt.kill_requested);
            assert_eq!(s.nodes.iter().map(|n| n.cpus_used).sum::<u32>(), 1);
            finish(&mut s, job, TaskOutcome::Cancelled);
        }
        assert!(all_free(&s), "{lost}: {:?}", s.nodes);
        let j = &s.jobs[&job];
        if requeue {
            assert_eq!(j.count(TaskState::Pending), 1, "requeued, waiting for 3 nodes");
        } else {
            assert_eq!(j.state(), TaskState::NodeFail, "{lost}");
            assert!(j.ended[&0].reason.contains(lost), "{:?}", j.ended[&0].reason);
        }
        assert_eq!(check_all(&s), Ok(()));
    }
}

#[test]
fn commit_refuses_a_gang_that_over_commits_any_slice_and_takes_nothing() {
    let mut s = cluster(2, 2);
    let holder = submit(&mut s, spec());
    let _ = holder;
    // Reserve both nodes with a waiting gang, then hand-craft a plan over-committing n1.
    let job = submit(&mut s, gang("nodes=2;nodes-given;ntasks-per-node=2", false));
    let before = s.clone();
    let key = TaskKey { job, index: 0 };
    let plan = Plan {
        start: vec![Placement {
            key,
            attempt: 1,
            node: 1,
            behind: None,
            from_requeue: false,
        }],
        gangs: [(
            key,
            vec![
                GangSlice {
                    node: 1,
                    tasks: 2,
                    cpus: 2,
                    mem: 0,
                },
                GangSlice {
                    node: 0,
                    tasks: 2,
                    cpus: 2,
                    mem: 0,
                },
            ],
        )]
        .into(),
        ..Plan::default()
    };
    let v = s.commit(&plan);
    assert!(matches!(v.as_slice(), [Violation::OverCommit { node: 0, .. }]), "{v:?}");
    assert_eq!(s.nodes, before.nodes, "nothing taken");
    // And a plan placing the job without its slices is refused too.
    let bare = Plan {
        gangs: Default::default(),
        ..plan
    };
    let v = s.commit(&bare);
    assert!(matches!(v.as_slice(), [Violation::PartialAllocation { .. }]), "{v:?}");
    assert_eq!(check_all(&s), Ok(()));
}

/// One step of the dining-philosophers scenario.
#[derive(Clone, Debug)]
enum Op {
    /// Submit a gang needing all of both nodes.
    Big,
    /// Submit a one-cpu job.
    Small,
    /// End the n-th running task (modulo the running count).
    End(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![Just(Op::Big), Just(Op::Small), (0usize..8).prop_map(Op::End)]
}

fn running_jobs(s: &State) -> Vec<JobId> {
    s.jobs
        .values()
        .filter(|j| !j.running.is_empty())
        .map(|j| j.id)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Two (or more) jobs each needing all of two nodes, small jobs and ends in any
    /// order: no node is over-committed, no job ever holds part of its nodes, and once
    /// work stops arriving every job finishes (no deadlock).
    #[test]
    fn competing_gangs_never_hold_part_and_all_finish(ops in proptest::collection::vec(op(), 1..40)) {
        let mut s = cluster(2, 2);
        let mut bigs = vec![
            submit(&mut s, gang("nodes=2;nodes-given;ntasks-per-node=2", true)),
            submit(&mut s, gang("nodes=2;nodes-given;ntasks-per-node=2", true)),
        ];
        for o in ops {
            match o {
                Op::Big => bigs.push(submit(&mut s, gang("nodes=2;nodes-given;ntasks-per-node=2", true))),
                Op::Small => {
                    submit(&mut s, spec());
                }
                Op::End(i) => {
                    let r = running_jobs(&s);
                    if !r.is_empty() {
                        finish(&mut s, r[i % r.len()], TaskOutcome::Exited);
                    }
                }
            }
            prop_assert_eq!(check_all(&s), Ok(()));
        }
        // Drain: end whatever runs until nothing does; every job must be done by then.
        for _ in 0..1_000 {
            let r = running_jobs(&s);
            let Some(&j) = r.first() else { break };
            finish(&mut s, j, TaskOutcome::Exited);
            prop_assert_eq!(check_all(&s), Ok(()));
        }
        for b in &bigs {
            prop_assert_eq!(s.jobs[b].state(), TaskState::Completed);
        }
        prop_assert!(s.jobs.values().all(|j| j.is_finished()));
        prop_assert!(all_free(&s));
    }
}
