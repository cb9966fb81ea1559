//! Cancelling single array tasks (`scancel 41_3`, `rudel cancel 41_[1-5]`): a running task
//! is killed and ends `cancelled`; a pending one ends `cancelled` at once and is never
//! dispatched. The rest of the array runs on.
//!
//! A task not yet dispatched has no record of its own (the job's dispatch cursor
//! `next_position` stands for every later task), so it goes into `Job::skipped` and the
//! cursor steps over it: the planner and `commit` then never see it. Without that, a
//! cancelled index would still be handed out by position and run.
use super::State;
use crate::command::Response;
use crate::events::Event;
use crate::ids::TaskKey;
use crate::job::{EndedTask, TaskState};

/// What cancelling one task did.
enum Outcome {
    Cancelled,
    AlreadyFinished,
    Unknown,
}

impl State {
    pub(crate) fn cancel_tasks(&mut self, keys: &[TaskKey]) -> Response {
        let (mut cancelled, mut already_finished, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
        for &key in keys {
            match self.cancel_task(key) {
                Outcome::Cancelled => cancelled.push(key),
                Outcome::AlreadyFinished => already_finished.push(key),
                Outcome::Unknown => unknown.push(key),
            }
        }
        Response::TasksCancelled {
            cancelled,
            already_finished,
            unknown,
        }
    }

    fn cancel_task(&mut self, key: TaskKey) -> Outcome {
        let now = self.now_ms;
        let Some(job) = self.jobs.get_mut(&key.job) else {
            return Outcome::Unknown;
        };
        let Some(position) = job.position_of(key.index) else {
            return Outcome::Unknown;
        };
        if let Some(rt) = job.running.get_mut(&key.index) {
            if rt.kill_requested {
                return Outcome::Cancelled;
            }
            rt.kill_requested = true;
            let (attempt, node) = (rt.attempt, rt.node);
            self.emit(Event::KillRequested { key, attempt, node });
            self.touch_tail(key);
            return Outcome::Cancelled;
        }
        let held = job
            .corr
            .as_deref_mut()
            .is_some_and(|g| g.waiting.remove(&key.index) | g.never.remove(&key.index));
        let requeued = job.requeued.remove(&key.index).is_some() || held;
        let fresh = !requeued && position >= job.next_position && !job.skipped.contains(&key.index) && !job.cancelled;
        if !requeued && !fresh {
            return Outcome::AlreadyFinished;
        }
        if fresh {
            job.skipped.insert(key.index);
            job.skip_cancelled();
        }
        job.move_count(TaskState::Pending, TaskState::Cancelled);
        job.ended.insert(
            key.index,
            EndedTask {
                state: TaskState::Cancelled,
                exit_code: None,
                signal: None,
                node: None,
                attempt: 0,
                start_ms: now,
                end_ms: now,
                reason: "cancelled before it started".into(),
                oom: false,
            },
        );
        let pending_left = job.has_pending();
        self.emit(Event::PendingCancelled { job: key.job, tasks: 1 });
        if !pending_left {
            self.dequeue(key.job);
        }
        self.maybe_finished(key.job);
        Outcome::Cancelled
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{Command, Response, TaskOutcome};
    use crate::events::Event;
    use crate::ids::TaskKey;
    use crate::invariants::check_all;
    use crate::job::{JobSpec, TaskState};
    use crate::state::State;

    fn array(s: &mut State, spec: &str) -> u64 {
        let spec = JobSpec {
            array: Some(crate::parse::parse_array(spec).unwrap()),
            ..crate::testkit::spec()
        };
        crate::testkit::submit(s, spec)
    }

    fn cancel(s: &mut State, job: u64, indices: &[u32]) -> Response {
        let tasks = indices.iter().map(|&index| TaskKey { job, index }).collect();
        let r = s.apply(Command::CancelTasks { tasks, now_ms: 3 });
        check_all(s).unwrap();
        r
    }

    fn finish(s: &mut State, key: TaskKey) {
        let attempt = s.running_task(key).expect("running").attempt;
        s.apply(Command::Reports {
            node: "n1".into(),
            reports: vec![crate::testkit::report(key, attempt, TaskOutcome::Exited, 0, 3, 4)],
            now_ms: 4,
        });
        check_all(s).unwrap();
    }

    #[test]
    fn a_pending_task_is_never_dispatched_and_the_rest_run() {
        let mut s = crate::testkit::one_node(1);
        let id = array(&mut s, "1-5");
        assert!(s.jobs[&id].running.contains_key(&1));
        let r = cancel(&mut s, id, &[3, 5]);
        assert!(
            matches!(r, Response::TasksCancelled { ref cancelled, .. } if cancelled.len() == 2),
            "{r:?}"
        );
        assert_eq!(crate::pending::pending_indices(&s.jobs[&id]), "2,4");
        let mut ran = Vec::new();
        while let Some(&next) = s.jobs[&id].running.keys().next() {
            ran.push(next);
            finish(&mut s, TaskKey { job: id, index: next });
        }
        assert_eq!(ran, vec![1, 2, 4], "3 and 5 never ran");
        let j = &s.jobs[&id];
        assert!(j.is_finished());
        assert_eq!((j.count(TaskState::Completed), j.count(TaskState::Cancelled)), (3, 2));
        assert_eq!(j.ended[&3].state, TaskState::Cancelled);
        assert_eq!(j.state(), TaskState::Cancelled);
    }

    #[test]
    fn cancelling_the_next_and_the_last_tasks_moves_the_cursor() {
        let mut s = crate::testkit::one_node(1);
        let id = array(&mut s, "1-3");
        cancel(&mut s, id, &[2, 3]);
        let j = &s.jobs[&id];
        assert_eq!(j.next_position, 3, "the cursor passed both cancelled tasks");
        assert!(j.skipped.is_empty());
        assert!(!j.has_pending());
        assert!(s.queue.is_empty());
    }

    #[test]
    fn running_unknown_and_finished_tasks() {
        let mut s = crate::testkit::one_node(1);
        let id = array(&mut s, "1-2");
        let out = s.apply_output(Command::CancelTasks {
            tasks: vec![TaskKey { job: id, index: 1 }],
            now_ms: 3,
        });
        assert!(out.events.iter().any(|e| matches!(e, Event::KillRequested { .. })));
        assert!(s.jobs[&id].running[&1].kill_requested);
        let again = cancel(&mut s, id, &[1]);
        assert!(matches!(again, Response::TasksCancelled { ref cancelled, .. } if cancelled.len() == 1));
        let r = cancel(&mut s, id, &[9]);
        assert!(
            matches!(r, Response::TasksCancelled { ref unknown, .. } if unknown.len() == 1),
            "{r:?}"
        );
        cancel(&mut s, id, &[2]);
        let r = cancel(&mut s, id, &[2]);
        assert!(
            matches!(r, Response::TasksCancelled { ref already_finished, .. } if already_finished.len() == 1),
            "{r:?}"
        );
    }
}
