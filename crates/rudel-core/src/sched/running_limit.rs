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

/// GPUs one more task of `job` takes (`--gpus N`, `--gres gpu[:type]:N`).
pub fn next_gpus(job: &Job) -> u64 {
    job.spec
        .gres
        .iter()
        .filter(|(want, _)| *want == "gpu" || want.starts_with("gpu:"))
        .map(|(_, n)| u64::from(*n))
        .sum()
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
        if limits.max_running_cpus.is_some_and(|max| cpus > max) {
            return Some(Wait::UserRunningCpus);
        }
        let wants = next_gpus(job);
        let gpus = now.gpus + here.gpus + wants;
        limits
            .max_running_gpus
            .filter(|max| wants > 0 && gpus > *max)
            .map(|_| Wait::UserRunningGpus)
    }

    /// One more task of `job` was placed in this pass.
    pub fn took(&mut self, job: &Job) {
        if self.active {
            let r = self.taken.entry(job.spec.user.clone()).or_default();
            r.tasks += 1;
            r.cpus += next_cpus(job);
            r.gpus += next_gpus(job);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{Command, Response};
    use crate::invariants::check_all;
    use crate::job::JobSpec;
    use crate::state::State;
    use crate::testkit::{configure, one_node, spec, submit};

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
    fn the_running_gpu_limit_counts_gpus_only_for_jobs_asking_for_some() {
        let mut s = State::new();
        s.apply(Command::RegisterNode {
            reg: crate::command::NodeRegistration {
                name: "g1".into(),
                uid: "ug1".into(),
                cpus: 4,
                mem_bytes: 1 << 30,
                gres: [("gpu".to_string(), 4)].into(),
                ..Default::default()
            },
            now_ms: 1_000,
        });
        configure(&mut s, &[("version", "2"), ("limits.max_running_gpus_per_user", "2")]);
        let gpu = || JobSpec {
            gres: [("gpu".to_string(), 1)].into(),
            ..of("alice", 1)
        };
        let jobs: Vec<u64> = (0..3).map(|_| submit(&mut s, gpu())).collect();
        let cpu_only = submit(&mut s, of("alice", 1));
        let states: Vec<(bool, String)> = jobs
            .iter()
            .map(|j| (running(&s, *j), crate::query::pending_reason(&s, &s.jobs[j])))
            .collect();
        assert!(
            running(&s, jobs[0]) && running(&s, jobs[1]) && !running(&s, jobs[2]),
            "{states:?}"
        );
        assert!(
            running(&s, cpu_only),
            "a job without GPUs is not held back by the GPU limit"
        );
        assert_eq!(
            crate::query::pending_reason(&s, &s.jobs[&jobs[2]]),
            "QOSMaxGRESPerUser: alice's running tasks hold 2 GPUs (limit 2)"
        );
        assert_eq!(check_all(&s), Ok(()));
    }

    #[test]
    fn running_limits_need_version_2() {
        let mut s = one_node(1);
        let r = configure(&mut s, &[("limits.max_running_tasks_per_user", "1")]);
        assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
    }
}
