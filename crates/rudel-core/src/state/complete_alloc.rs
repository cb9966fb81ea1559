//! Applying `Command::CompleteAllocation`: the client that holds an interactive allocation
//! (`salloc`, `srun` outside a job) is done with it and hands in the exit code of what it
//! ran, as Slurm's `REQUEST_COMPLETE_JOB_ALLOCATION` does. The allocation's holder task is
//! killed and then ends as that code says (`completed` for 0, `failed` otherwise), not
//! `cancelled`: `sacct` shows `srun -N2 false` as failed with exit 1, as Slurm's does.
use super::State;
use crate::command::Response;
use crate::ids::JobId;
use crate::job::TaskState;

impl State {
    pub(crate) fn complete_allocation(&mut self, id: JobId, exit_code: i32) -> Response {
        let Some(job) = self.jobs.get_mut(&id) else {
            return self.cancel(&[id]);
        };
        // Nothing granted yet (or part of it pending again after a node loss): there is
        // no run to take the code of, and the request is a plain cancel.
        if job.is_finished() || job.count(TaskState::Pending) > 0 || job.running.is_empty() {
            return self.cancel(&[id]);
        }
        for rt in job.running.values_mut() {
            if rt.lost_node.is_none() {
                rt.released_with = Some(exit_code);
            }
        }
        let out = self.cancel(&[id]);
        // Not a cancel from the user's view (history and requeue read this flag).
        if let Some(job) = self.jobs.get_mut(&id) {
            job.cancelled = false;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{Command, Response, TaskOutcome};
    use crate::ids::TaskKey;
    use crate::invariants::check_all;
    use crate::job::TaskState;
    use crate::testkit::{one_node, report, spec, submit};

    fn run_one(code: i32) -> (crate::state::State, u64) {
        let mut s = one_node(2);
        let job = submit(&mut s, spec());
        assert_eq!(s.jobs[&job].state(), TaskState::Running);
        let r = s.apply(Command::CompleteAllocation {
            job,
            exit_code: code,
            now_ms: 2_000,
        });
        assert!(
            matches!(r, Response::Cancelled { ref cancelled, .. } if cancelled == &[job]),
            "{r:?}"
        );
        // The agent kills the holder and reports it as killed.
        let key = TaskKey { job, index: 0 };
        s.apply(Command::Reports {
            node: "n1".into(),
            reports: vec![report(key, 1, TaskOutcome::Cancelled, -1, 1_000, 2_100)],
            now_ms: 2_100,
        });
        check_all(&s).unwrap();
        (s, job)
    }

    #[test]
    fn a_released_allocation_ends_as_its_clients_exit_code() {
        let (s, job) = run_one(0);
        assert_eq!(s.jobs[&job].state(), TaskState::Completed);
        let (s, job) = run_one(3);
        let j = &s.jobs[&job];
        assert_eq!(j.state(), TaskState::Failed);
        assert_eq!(j.ended[&0].exit_code, Some(3));
        assert!(!j.cancelled);
    }

    #[test]
    fn a_pending_allocation_released_is_cancelled() {
        let mut s = one_node(1);
        let _busy = submit(&mut s, spec());
        let job = submit(&mut s, spec());
        assert_eq!(s.jobs[&job].state(), TaskState::Pending);
        s.apply(Command::CompleteAllocation {
            job,
            exit_code: 0,
            now_ms: 2_000,
        });
        assert_eq!(s.jobs[&job].state(), TaskState::Cancelled);
        check_all(&s).unwrap();
    }

    #[test]
    fn releasing_an_unknown_or_ended_job_says_so() {
        let (mut s, job) = run_one(0);
        let r = s.apply(Command::CompleteAllocation {
            job,
            exit_code: 0,
            now_ms: 3_000,
        });
        assert!(matches!(r, Response::Cancelled { ref already_finished, .. } if already_finished == &[job]));
        let r = s.apply(Command::CompleteAllocation {
            job: 99,
            exit_code: 0,
            now_ms: 3_000,
        });
        assert!(matches!(r, Response::Cancelled { ref unknown, .. } if unknown == &[99]));
    }
}
