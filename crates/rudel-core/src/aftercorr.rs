//! `--dependency=aftercorr:ID`: array task i of the dependant may start once task i of the
//! target array completed successfully (Slurm 22.05). A dependant index without a
//! counterpart in the target (or a target that is no array) waits for the whole target
//! job to complete, as Slurm does.
//!
//! The gate is per task, so it cannot be the job-level [`crate::job::DepStatus`]. At
//! submit every index of the dependant goes into [`CorrGate::waiting`] and the dispatch
//! cursor is put past the end: the planner only ever sees indices released into
//! `Job::requeued` (attempt 1, so no restart is counted). A target task's end releases
//! the one index it names (found through the dependency index), so the cost per
//! finished target task is a lookup, never a scan of the dependant array, and the planner
//! never walks over indices that cannot start yet. An index whose counterpart failed stays
//! pending with reason `DependencyNeverSatisfied` ([`CorrGate::never`]), or is cancelled
//! with `--kill-on-invalid-dep`.
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::deps::{DepKind, DepSpec, DepTarget, TargetState};
use crate::ids::{JobId, TaskKey};
use crate::state::State;

/// The per-task gate of a job with `aftercorr` clauses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrGate {
    /// The arrays whose corresponding tasks must complete.
    pub targets: Vec<JobId>,
    /// Pending indices whose counterparts have not completed yet.
    pub waiting: BTreeSet<u32>,
    /// Pending indices whose counterpart failed: they can never start.
    pub never: BTreeSet<u32>,
}

impl CorrGate {
    /// Pending tasks held by the gate.
    pub fn held(&self) -> u64 {
        (self.waiting.len() + self.never.len()) as u64
    }

    /// Is `index` held back by the gate (pending, not released)?
    pub fn holds(&self, index: u32) -> bool {
        self.waiting.contains(&index) || self.never.contains(&index)
    }
}

/// Where one dependant index stands.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Readiness {
    Ready,
    Waiting,
    Never,
}

/// Splits the `aftercorr` clauses off a resolved dependency: the rest gates the job as a
/// whole, the targets gate task by task. A job that is no array has no task to pair:
/// `aftercorr` is `afterok` on the whole target for it (as Slurm).
pub(crate) fn split(mut spec: DepSpec, is_array: bool) -> (Option<DepSpec>, Vec<JobId>) {
    let mut targets = Vec::new();
    for c in &mut spec.clauses {
        if c.kind != DepKind::AfterCorr {
            continue;
        }
        if is_array {
            targets.extend(c.targets.iter().map(|t| t.job));
        } else {
            c.kind = DepKind::AfterOk;
        }
    }
    spec.clauses.retain(|c| c.kind != DepKind::AfterCorr);
    targets.dedup();
    let rest = (!spec.clauses.is_empty()).then_some(spec);
    (rest, targets)
}

/// Why an `aftercorr` clause cannot be accepted as written.
pub(crate) fn refusal(spec: &DepSpec) -> Option<String> {
    let corr = spec.clauses.iter().filter(|c| c.kind == DepKind::AfterCorr);
    if spec.any && spec.clauses.iter().any(|c| c.kind == DepKind::AfterCorr) {
        return Some("aftercorr cannot be combined with '?' (any of): join clauses with ','".into());
    }
    for c in corr {
        if let Some(t) = c.targets.iter().find(|t| t.index.is_some()) {
            return Some(format!(
                "aftercorr names whole arrays, not one task ({}_{}): use afterok for one task",
                t.job,
                t.index.unwrap_or_default()
            ));
        }
    }
    None
}

impl State {
    /// Puts a newly submitted job's tasks behind its `aftercorr` gate and releases those
    /// whose counterparts completed already.
    pub(crate) fn gate_corr(&mut self, id: JobId, targets: Vec<JobId>) {
        if targets.is_empty() {
            return;
        }
        for &t in &targets {
            self.deps.link(id, t);
        }
        let Some(job) = self.jobs.get_mut(&id) else { return };
        let indices: BTreeSet<u32> = (job.next_position..job.total).map(|p| job.index_at(p)).collect();
        job.next_position = job.total;
        job.corr = Some(Box::new(CorrGate {
            targets,
            waiting: indices,
            never: BTreeSet::new(),
        }));
        self.settle_corr(id, None);
    }

    /// Re-evaluates a dependant's held indices after a target changed: only `index`
    /// when one target task ended, every held one when a target ended as a whole.
    pub(crate) fn settle_corr(&mut self, id: JobId, index: Option<u32>) {
        let Some(gate) = self.jobs.get(&id).and_then(|j| j.corr.as_deref()) else {
            return;
        };
        let candidates: Vec<u32> = match index {
            Some(i) if gate.waiting.contains(&i) => vec![i],
            Some(_) => return,
            None => gate.waiting.iter().copied().collect(),
        };
        let verdicts: Vec<(u32, Readiness)> = candidates
            .into_iter()
            .map(|i| (i, self.corr_readiness(&gate.targets, i)))
            .filter(|(_, r)| *r != Readiness::Waiting)
            .collect();
        if verdicts.is_empty() {
            return;
        }
        let kill = self.jobs.get(&id).is_some_and(|j| j.spec.kill_on_invalid_dep);
        let mut kills = Vec::new();
        if let Some(gate) = self.jobs.get_mut(&id).and_then(|j| j.corr.as_deref_mut()) {
            for &(i, r) in &verdicts {
                gate.waiting.remove(&i);
                if r == Readiness::Never {
                    gate.never.insert(i);
                    if kill {
                        kills.push(TaskKey { job: id, index: i });
                    }
                }
            }
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            for &(i, r) in &verdicts {
                if r == Readiness::Ready {
                    job.requeued.insert(i, 1);
                }
            }
        }
        if !kills.is_empty() {
            self.cancel_tasks(&kills);
        }
        self.open_if_eligible(id);
    }

    /// Task `index` of the dependant may start when every target's counterpart (or the
    /// whole target, where it has none) completed.
    fn corr_readiness(&self, targets: &[JobId], index: u32) -> Readiness {
        let mut all_ok = true;
        for &t in targets {
            let paired = self
                .jobs
                .get(&t)
                .and_then(|j| j.spec.array.as_ref())
                .is_some_and(|a| a.position_of(index).is_some());
            let target = DepTarget {
                job: t,
                index: paired.then_some(index),
            };
            match self.target_state(target) {
                TargetState::Ended { ok: false, .. } => return Readiness::Never,
                TargetState::Ended { ok: true, .. } => {}
                _ => all_ok = false,
            }
        }
        if all_ok {
            Readiness::Ready
        } else {
            Readiness::Waiting
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{Command, Response, TaskOutcome};
    use crate::ids::{JobId, TaskKey};
    use crate::invariants::check_all;
    use crate::job::{JobSpec, TaskState};
    use crate::query::pending_reason;
    use crate::state::State;

    fn array(s: &mut State, indices: &str, dep: Option<&str>) -> Result<JobId, String> {
        let spec = JobSpec {
            array: Some(crate::parse::parse_array(indices).unwrap()),
            dependency: dep.map(|d| crate::deps::parse(d).unwrap()),
            ..crate::testkit::spec()
        };
        let now = s.now_ms;
        let r = s.apply(Command::Submit {
            request_id: String::new(),
            spec,
            now_ms: now,
        });
        check_all(s).unwrap();
        match r {
            Response::Submitted { job, .. } => Ok(job),
            Response::Rejected { reason } => Err(reason),
            other => panic!("{other:?}"),
        }
    }

    fn end(s: &mut State, job: JobId, index: u32, code: i32) {
        let key = TaskKey { job, index };
        let attempt = s.running_task(key).expect("running").attempt;
        let now = s.now_ms + 10;
        s.apply(Command::Reports {
            node: "n1".into(),
            reports: vec![crate::testkit::report(
                key,
                attempt,
                TaskOutcome::Exited,
                code,
                now - 5,
                now,
            )],
            now_ms: now,
        });
        check_all(s).unwrap();
    }

    fn running(s: &State, job: JobId) -> Vec<u32> {
        s.jobs[&job].running.keys().copied().collect()
    }

    fn reason(s: &State, job: JobId) -> String {
        pending_reason(s, &s.jobs[&job])
    }

    #[test]
    fn each_task_waits_for_its_counterpart_only() {
        let mut s = crate::testkit::one_node(8);
        let a = array(&mut s, "1-4", None).unwrap();
        let b = array(&mut s, "1-4", Some(&format!("aftercorr:{a}"))).unwrap();
        assert_eq!(running(&s, b), Vec::<u32>::new());
        assert!(reason(&s, b).starts_with("Dependency:"), "{}", reason(&s, b));
        assert_eq!(crate::pending::pending_indices(&s.jobs[&b]), "1-4");
        end(&mut s, a, 3, 0);
        assert_eq!(running(&s, b), vec![3], "only task 3 is released, in the same entry");
        end(&mut s, a, 1, 0);
        assert_eq!(running(&s, b), vec![1, 3]);
        assert_eq!(crate::pending::pending_indices(&s.jobs[&b]), "2,4");
    }

    #[test]
    fn a_failed_counterpart_holds_its_task_forever_or_cancels_it() {
        for kill in [false, true] {
            let mut s = crate::testkit::one_node(8);
            let a = array(&mut s, "1-3", None).unwrap();
            let dep = format!("aftercorr:{a}");
            let mut spec = JobSpec {
                array: Some(crate::parse::parse_array("1-3").unwrap()),
                dependency: Some(crate::deps::parse(&dep).unwrap()),
                kill_on_invalid_dep: kill,
                ..crate::testkit::spec()
            };
            spec.name = "b".into();
            let b = crate::testkit::submit(&mut s, spec);
            end(&mut s, a, 2, 1);
            end(&mut s, a, 1, 0);
            end(&mut s, a, 3, 0);
            assert_eq!(running(&s, b), vec![1, 3]);
            end(&mut s, b, 1, 0);
            end(&mut s, b, 3, 0);
            let job = &s.jobs[&b];
            if kill {
                assert_eq!(job.count(TaskState::Cancelled), 1);
                assert!(job.is_finished(), "the rest ran: the job ends");
            } else {
                assert_eq!(job.count(TaskState::Pending), 1);
                assert!(
                    reason(&s, b).starts_with("DependencyNeverSatisfied"),
                    "{}",
                    reason(&s, b)
                );
                assert!(!job.is_finished());
            }
        }
    }

    #[test]
    fn indices_without_a_counterpart_wait_for_the_whole_target() {
        let mut s = crate::testkit::one_node(8);
        let a = array(&mut s, "1-2", None).unwrap();
        let b = array(&mut s, "1-3", Some(&format!("aftercorr:{a}"))).unwrap();
        end(&mut s, a, 1, 0);
        assert_eq!(running(&s, b), vec![1], "3 has no counterpart: it waits for all of {a}");
        end(&mut s, a, 2, 0);
        assert_eq!(running(&s, b), vec![1, 2, 3]);
    }

    #[test]
    fn a_plain_job_treats_aftercorr_as_afterok() {
        let mut s = crate::testkit::one_node(8);
        let a = array(&mut s, "1-2", None).unwrap();
        let spec = JobSpec {
            dependency: Some(crate::deps::parse(&format!("aftercorr:{a}")).unwrap()),
            ..crate::testkit::spec()
        };
        let b = crate::testkit::submit(&mut s, spec);
        end(&mut s, a, 1, 0);
        assert_eq!(running(&s, b), Vec::<u32>::new());
        end(&mut s, a, 2, 0);
        assert_eq!(running(&s, b), vec![0]);
    }

    #[test]
    fn cancelling_held_tasks_keeps_the_counts() {
        let mut s = crate::testkit::one_node(8);
        let a = array(&mut s, "1-4", None).unwrap();
        let b = array(&mut s, "1-4", Some(&format!("aftercorr:{a}"))).unwrap();
        s.apply(Command::CancelTasks {
            tasks: vec![TaskKey { job: b, index: 2 }],
            now_ms: s.now_ms,
        });
        check_all(&s).unwrap();
        assert_eq!(crate::pending::pending_indices(&s.jobs[&b]), "1,3-4");
        end(&mut s, a, 2, 0);
        assert_eq!(running(&s, b), Vec::<u32>::new(), "a cancelled task never runs");
        s.apply(Command::Cancel {
            jobs: vec![b],
            now_ms: s.now_ms,
        });
        check_all(&s).unwrap();
        assert!(s.jobs[&b].is_finished());
        end(&mut s, a, 1, 0);
        assert_eq!(running(&s, b), Vec::<u32>::new());
    }

    #[test]
    fn refused_forms() {
        let mut s = crate::testkit::one_node(8);
        let a = array(&mut s, "1-4", None).unwrap();
        let err = array(&mut s, "1-4", Some(&format!("aftercorr:{a}?afterok:{a}"))).unwrap_err();
        assert!(err.contains("'?'"), "{err}");
        let err = array(&mut s, "1-4", Some(&format!("aftercorr:{a}_2"))).unwrap_err();
        assert!(err.contains("whole arrays"), "{err}");
        assert_eq!(s.jobs.len(), 1);
    }
}
