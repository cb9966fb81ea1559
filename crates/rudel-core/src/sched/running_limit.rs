//! Running limits per user in the planner (`limits.max_running_tasks_per_user`,
//! `limits.max_running_cpus_per_user`, per-user overrides). A job whose user is at a limit
//! waits with its own reason and reserves no nodes: the jobs of other users behind it
//! still start (a capped user never blocks the queue's head for everyone).
use std::collections::HashMap;

use crate::job::Job;
use crate::state::running::Running;
use crate::state::State;

use super::plan::Wait;

/// What this pass has given each user so far, on top of what runs.
#[derive(Default)]
pub struct UserTaken {
    /// False when no running limit is configured: nothing is checked or counted.
    active: bool,
    taken: HashMap<String, Running>,
}

/// Cpus one more task of `job` takes: its cpus, times its tasks for a multi-node job
/// (at least its minimum node count when it asked for nodes only).
pub fn next_cpus(job: &Job) -> u64 {
    let per_task = u64::from(job.spec.cpus.max(1));
    match job.spec.alloc.as_deref() {
        Some(a) => {
            let tasks = a
                .ntasks
                .unwrap_or_else(|| a.nodes_min.max(1) * a.ntasks_per_node.unwrap_or(1).max(1));
            per_task * u64::from(tasks.max(1))
        }
        None => per_task,
    }
}

impl UserTaken {
    pub fn new(state: &State) -> UserTaken {
        UserTaken {
            active: state.sched.limits.limits_running(),
            taken: HashMap::new(),
        }
    }

    /// Why one more task of `job` may not start now, if its user is at a running limit.
    pub fn blocks(&self, state: &State, job: &Job) -> Option<Wait> {
        if !self.active {
            return None;
        }
        let user = &job.spec.user;
        let limits = state.sched.limits.for_user(user);
        let now = state.running_usage.of(user);
        let here = self.taken.get(user).copied().unwrap_or_default();
        if limits
            .max_running_tasks
            .is_some_and(|max| now.tasks + here.tasks >= max)
        {
            return Some(Wait::UserRunningTasks);
        }
        let cpus = now.cpus + here.cpus + next_cpus(job);
        limits
            .max_running_cpus
            .filter(|max| cpus > *max)
            .map(|_| Wait::UserRunningCpus)
    }

    /// One more task of `job` was placed in this pass.
    pub fn took(&mut self, job: &Job) {
        if self.active {
            let r = self.taken.entry(job.spec.user.clone()).or_default();
            r.tasks += 1;
            r.cpus += next_cpus(job);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{Command, Response};
    use crate::invariants::check_all;
    use crate::job::JobSpec;
    use crate::state::State;
    use crate::testkit::{one_node, spec, submit};

    fn configure(s: &mut State, settings: &[(&str, &str)]) -> Response {
        s.apply(Command::Configure {
            settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            now_ms: s.now_ms,
        })
    }

    fn of(user: &str, cpus: u32) -> JobSpec {
        JobSpec {
            user: user.into(),
            cpus,
            requeue: false,
            ..spec()
        }
    }

    fn running(s: &State, job: u64) -> bool {
        !s.jobs[&job].running.is_empty()
    }

    #[test]
    fn a_user_at_the_running_task_limit_waits_and_others_go_ahead() {
        let mut s = one_node(4);
        let r = configure(&mut s, &[("version", "2"), ("limits.max_running_tasks_per_user", "2")]);
        assert!(!matches!(r, Response::Rejected { .. }), "{r:?}");
        let a: Vec<u64> = (0..3).map(|_| submit(&mut s, of("alice", 1))).collect();
        let b = submit(&mut s, of("bob", 1));
        assert!(running(&s, a[0]) && running(&s, a[1]));
        assert!(!running(&s, a[2]), "alice is at her limit");
        assert!(running(&s, b), "bob's job behind alice's starts");
        assert_eq!(
            crate::query::pending_reason(&s, &s.jobs[&a[2]]),
            "QOSMaxJobsPerUserLimit: alice runs 2 tasks (limit 2)"
        );
        assert_eq!(check_all(&s), Ok(()));
        // An override for alice lifts her limit.
        configure(&mut s, &[("limits.user.alice.max_running_tasks", "3")]);
        s.apply(Command::Tick { now_ms: s.now_ms + 1 });
        assert!(running(&s, a[2]));
    }

    #[test]
    fn the_running_cpu_limit_counts_cpus() {
        let mut s = one_node(4);
        configure(&mut s, &[("version", "2"), ("limits.max_running_cpus_per_user", "3")]);
        let first = submit(&mut s, of("alice", 2));
        let second = submit(&mut s, of("alice", 2));
        assert!(running(&s, first) && !running(&s, second));
        assert!(crate::query::pending_reason(&s, &s.jobs[&second])
            .starts_with("QOSMaxCpuPerUserLimit: alice's running tasks hold 2 cpus (limit 3)"));
        assert_eq!(s.running_usage.of("alice").cpus, 2);
    }

    #[test]
    fn running_limits_need_version_2() {
        let mut s = one_node(1);
        let r = configure(&mut s, &[("limits.max_running_tasks_per_user", "1")]);
        assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
    }
}
