//! Running limits per user and per account in the planner
//! (`limits.max_running_tasks_per_user`, `limits.max_running_cpus_per_user`, per-user
//! overrides, `limits.account.NAME.max_running_*`). A job whose user or account is at a
//! limit waits with its own reason and reserves no nodes: the jobs of others behind it
//! still start (a capped user never blocks the queue's head for everyone).
use rustc_hash::FxHashMap as HashMap;

use crate::job::Job;
use crate::state::running::Running;
use crate::state::State;

use super::plan::Wait;

/// What this pass has given each user and account so far, on top of what runs.
#[derive(Default)]
pub struct UserTaken {
    /// False when no running limit is configured: nothing is checked or counted.
    active: bool,
    taken: HashMap<String, Running>,
    taken_by_account: HashMap<String, Running>,
}

/// Which running limit a job is at, if any, for usage `now` (running plus taken in this
/// pass) and one more task of `job`.
fn at_limit(limits: &super::quota::UserLimits, now: Running, job: &Job) -> Option<Dimension> {
    if limits.max_running_tasks.is_some_and(|max| now.tasks >= max) {
        return Some(Dimension::Tasks);
    }
    if limits
        .max_running_cpus
        .is_some_and(|max| now.cpus + next_cpus(job) > max)
    {
        return Some(Dimension::Cpus);
    }
    let wants = next_gpus(job);
    limits
        .max_running_gpus
        .filter(|max| wants > 0 && now.gpus + wants > *max)
        .map(|_| Dimension::Gpus)
}

#[derive(Copy, Clone)]
enum Dimension {
    Tasks,
    Cpus,
    Gpus,
}

fn plus(a: Running, b: Running) -> Running {
    Running {
        tasks: a.tasks + b.tasks,
        cpus: a.cpus + b.cpus,
        gpus: a.gpus + b.gpus,
    }
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
            taken: HashMap::default(),
            taken_by_account: HashMap::default(),
        }
    }

    /// Why one more task of `job` may not start now, if its user or account is at a
    /// running limit.
    pub fn blocks(&self, state: &State, job: &Job) -> Option<Wait> {
        if !self.active {
            return None;
        }
        let user = &job.spec.user;
        let here = self.taken.get(user).copied().unwrap_or_default();
        let now = plus(state.running_usage.of(user), here);
        if let Some(d) = at_limit(&state.sched.limits.for_user(user), now, job) {
            return Some(match d {
                Dimension::Tasks => Wait::UserRunningTasks,
                Dimension::Cpus => Wait::UserRunningCpus,
                Dimension::Gpus => Wait::UserRunningGpus,
            });
        }
        let account = &job.spec.account;
        if account.is_empty() {
            return None;
        }
        let here = self.taken_by_account.get(account).copied().unwrap_or_default();
        let now = plus(state.running_usage.of_account(account), here);
        at_limit(&state.sched.limits.for_account(account), now, job).map(|d| match d {
            Dimension::Tasks => Wait::AccountRunningTasks,
            Dimension::Cpus => Wait::AccountRunningCpus,
            Dimension::Gpus => Wait::AccountRunningGpus,
        })
    }

    /// One more task of `job` was placed in this pass.
    pub fn took(&mut self, job: &Job) {
        if !self.active {
            return;
        }
        let one = Running {
            tasks: 1,
            cpus: next_cpus(job),
            gpus: next_gpus(job),
        };
        let r = self.taken.entry(job.spec.user.clone()).or_default();
        *r = plus(*r, one);
        if !job.spec.account.is_empty() {
            let r = self.taken_by_account.entry(job.spec.account.clone()).or_default();
            *r = plus(*r, one);
        }
    }
}

/// The pending reason of a job held back by a running limit (Slurm's reason names: QOS
/// limits per user, association group limits per account), with usage and limit.
pub fn reason(state: &State, job: &Job, wait: Wait) -> Option<String> {
    let (user, account) = (&job.spec.user, &job.spec.account);
    let ul = state.sched.limits.for_user(user);
    let al = state.sched.limits.for_account(account);
    let u = state.running_usage.of(user);
    let a = state.running_usage.of_account(account);
    let n = |l: Option<u64>| l.unwrap_or(0);
    Some(match wait {
        Wait::UserRunningTasks => format!(
            "QOSMaxJobsPerUserLimit: {user} runs {} tasks (limit {})",
            u.tasks,
            n(ul.max_running_tasks)
        ),
        Wait::UserRunningCpus => format!(
            "QOSMaxCpuPerUserLimit: {user}'s running tasks hold {} cpus (limit {})",
            u.cpus,
            n(ul.max_running_cpus)
        ),
        Wait::UserRunningGpus => format!(
            "QOSMaxGRESPerUser: {user}'s running tasks hold {} GPUs (limit {})",
            u.gpus,
            n(ul.max_running_gpus)
        ),
        Wait::AccountRunningTasks => format!(
            "AssocGrpJobsLimit: account {account} runs {} tasks (limit {})",
            a.tasks,
            n(al.max_running_tasks)
        ),
        Wait::AccountRunningCpus => format!(
            "AssocGrpCpuLimit: account {account}'s running tasks hold {} cpus (limit {})",
            a.cpus,
            n(al.max_running_cpus)
        ),
        Wait::AccountRunningGpus => format!(
            "AssocGrpGRES: account {account}'s running tasks hold {} GPUs (limit {})",
            a.gpus,
            n(al.max_running_gpus)
        ),
        Wait::Licenses | Wait::PartitionDown => return None,
    })
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
    fn an_account_limit_holds_for_all_its_users_together() {
        let mut s = one_node(8);
        let r = configure(
            &mut s,
            &[
                ("version", "3"),
                ("account.physics", "users=alice,bob"),
                ("limits.account.physics.max_running_tasks", "3"),
            ],
        );
        assert!(!matches!(r, Response::Rejected { .. }), "{r:?}");
        let a: Vec<u64> = (0..2).map(|_| submit(&mut s, of("alice", 1))).collect();
        let b: Vec<u64> = (0..2).map(|_| submit(&mut s, of("bob", 1))).collect();
        let carol = submit(&mut s, of("carol", 1));
        assert_eq!(s.jobs[&a[0]].spec.account, "physics", "the default account");
        assert!(running(&s, a[0]) && running(&s, a[1]) && running(&s, b[0]));
        assert!(!running(&s, b[1]), "physics is at its limit");
        assert!(running(&s, carol), "carol is in no account");
        assert_eq!(
            crate::query::pending_reason(&s, &s.jobs[&b[1]]),
            "AssocGrpJobsLimit: account physics runs 3 tasks (limit 3)"
        );
        assert_eq!(s.running_usage.of_account("physics").tasks, 3);
        assert_eq!(check_all(&s), Ok(()));
        // One of physics' tasks ends: bob's waiting job takes its place.
        let rt = s.jobs[&a[0]].running[&0].clone();
        let key = crate::ids::TaskKey { job: a[0], index: 0 };
        let now = s.now_ms + 10;
        s.apply(Command::Reports {
            node: s.nodes[rt.node as usize].name.clone(),
            reports: vec![crate::testkit::report(
                key,
                rt.attempt,
                crate::command::TaskOutcome::Exited,
                0,
                rt.start_ms,
                now,
            )],
            now_ms: now,
        });
        assert!(running(&s, b[1]));
        assert_eq!(check_all(&s), Ok(()));
    }

    #[test]
    fn the_account_cpu_limit_counts_cpus() {
        let mut s = one_node(8);
        configure(
            &mut s,
            &[
                ("version", "3"),
                ("account.chem", "users=alice"),
                ("limits.account.chem.max_running_cpus", "3"),
            ],
        );
        let first = submit(&mut s, of("alice", 2));
        let second = submit(&mut s, of("alice", 2));
        assert!(running(&s, first) && !running(&s, second));
        assert_eq!(
            crate::query::pending_reason(&s, &s.jobs[&second]),
            "AssocGrpCpuLimit: account chem's running tasks hold 2 cpus (limit 3)"
        );
    }

    #[test]
    fn running_limits_need_version_2() {
        let mut s = one_node(1);
        let r = configure(&mut s, &[("limits.max_running_tasks_per_user", "1")]);
        assert!(matches!(r, Response::Rejected { .. }), "{r:?}");
    }
}
