//! Queue limits checked at the apply of a submit (limits in `sched::quota`).
//!
//! The usage index holds each user's unfinished jobs and an upper bound on their pending
//! tasks (every task of an unfinished job), kept up at submit and at job end. A submit
//! costs O(1) while the bound stays under the limit; only near a limit are the user's (or
//! the queue's) actual pending tasks counted. Without the index every submit would scan
//! every job, and the submit path would slow down as the queue grows.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::State;
use crate::ids::JobId;
use crate::job::{JobSpec, TaskState};

/// Unfinished jobs by user, and their task counts (an upper bound on pending tasks).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub jobs_by_user: BTreeMap<String, BTreeSet<JobId>>,
    pub tasks_by_user: BTreeMap<String, u64>,
    pub open_tasks: u64,
    /// The same by account (jobs charged to none are not here).
    pub jobs_by_account: BTreeMap<String, BTreeSet<JobId>>,
    pub tasks_by_account: BTreeMap<String, u64>,
}

impl Usage {
    pub(crate) fn add(&mut self, user: &str, account: &str, job: JobId, tasks: u64) {
        add_to(&mut self.jobs_by_user, &mut self.tasks_by_user, user, job, tasks);
        if !account.is_empty() {
            add_to(
                &mut self.jobs_by_account,
                &mut self.tasks_by_account,
                account,
                job,
                tasks,
            );
        }
        self.open_tasks = self.open_tasks.saturating_add(tasks);
    }

    pub(crate) fn remove(&mut self, user: &str, account: &str, job: JobId, tasks: u64) {
        // A job submitted before the index existed was never counted.
        if remove_from(&mut self.jobs_by_user, &mut self.tasks_by_user, user, job, tasks) {
            self.open_tasks = self.open_tasks.saturating_sub(tasks);
        }
        if !account.is_empty() {
            remove_from(
                &mut self.jobs_by_account,
                &mut self.tasks_by_account,
                account,
                job,
                tasks,
            );
        }
    }
}

fn add_to(
    jobs: &mut BTreeMap<String, BTreeSet<JobId>>,
    counts: &mut BTreeMap<String, u64>,
    who: &str,
    job: JobId,
    tasks: u64,
) {
    jobs.entry(who.to_string()).or_default().insert(job);
    *counts.entry(who.to_string()).or_default() += tasks;
}

/// False when `job` was not counted for `who`.
fn remove_from(
    jobs: &mut BTreeMap<String, BTreeSet<JobId>>,
    counts: &mut BTreeMap<String, u64>,
    who: &str,
    job: JobId,
    tasks: u64,
) -> bool {
    let Some(set) = jobs.get_mut(who) else {
        return false;
    };
    if !set.remove(&job) {
        return false;
    }
    if set.is_empty() {
        jobs.remove(who);
        counts.remove(who);
    } else if let Some(t) = counts.get_mut(who) {
        *t = t.saturating_sub(tasks);
    }
    true
}

/// A user's pending work right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub jobs: u64,
    pub tasks: u64,
}

impl State {
    /// The pending jobs and tasks of `user` (O(the user's unfinished jobs)).
    pub fn pending_of(&self, user: &str) -> Pending {
        self.pending_in(self.usage.jobs_by_user.get(user))
    }

    /// The pending jobs and tasks charged to `account`.
    pub fn pending_of_account(&self, account: &str) -> Pending {
        self.pending_in(self.usage.jobs_by_account.get(account))
    }

    fn pending_in(&self, jobs: Option<&BTreeSet<JobId>>) -> Pending {
        let mut p = Pending::default();
        for id in jobs.into_iter().flatten() {
            let n = self.jobs.get(id).map_or(0, |j| j.count(TaskState::Pending));
            if n > 0 {
                p.jobs += 1;
                p.tasks += n;
            }
        }
        p
    }

    /// Pending tasks in the whole queue (O(unfinished jobs): only near the bound).
    pub fn pending_total(&self) -> u64 {
        self.usage
            .jobs_by_user
            .values()
            .flatten()
            .filter_map(|id| self.jobs.get(id))
            .map(|j| j.count(TaskState::Pending))
            .sum()
    }

    /// Refuses a submit of `tasks` tasks that would take its user or the queue over a
    /// limit, with the exact count and limit.
    pub(crate) fn check_queue_limits(&self, spec: &JobSpec, tasks: u64) -> Result<(), String> {
        let l = &self.sched.limits;
        if self.usage.open_tasks.saturating_add(tasks) > l.max_pending_tasks {
            let held = self.pending_total();
            if held.saturating_add(tasks) > l.max_pending_tasks {
                return Err(format!(
                    "the queue holds {held} pending tasks (limit {}){}",
                    l.max_pending_tasks,
                    adds(tasks)
                ));
            }
        }
        let user = spec.user.as_str();
        let by_user = (&self.usage.jobs_by_user, &self.usage.tasks_by_user);
        self.check_pending(user, user, &l.for_user(user), by_user, tasks)?;
        if !spec.account.is_empty() {
            let a = spec.account.as_str();
            let by_account = (&self.usage.jobs_by_account, &self.usage.tasks_by_account);
            self.check_pending(a, &format!("account {a}"), &l.for_account(a), by_account, tasks)?;
        }
        Ok(())
    }

    /// The pending limits of one user or account (`who`, named `label` in the refusal),
    /// from the index's bounds first and an exact count only near a limit.
    fn check_pending(
        &self,
        who: &str,
        label: &str,
        limits: &crate::sched::quota::UserLimits,
        (jobs, counts): (&BTreeMap<String, BTreeSet<JobId>>, &BTreeMap<String, u64>),
        tasks: u64,
    ) -> Result<(), String> {
        let set = jobs.get(who);
        let bound_tasks = counts.get(who).copied().unwrap_or(0);
        let bound_jobs = set.map_or(0, |s| s.len() as u64);
        let over_tasks = limits
            .max_pending_tasks
            .filter(|m| bound_tasks.saturating_add(tasks) > *m);
        let over_jobs = limits.max_pending_jobs.filter(|m| bound_jobs + 1 > *m);
        if over_tasks.is_none() && over_jobs.is_none() {
            return Ok(());
        }
        let p = self.pending_in(set);
        if let Some(m) = over_tasks.filter(|m| p.tasks.saturating_add(tasks) > *m) {
            return Err(format!(
                "{label} has {} pending tasks (limit {m}){}",
                p.tasks,
                adds(tasks)
            ));
        }
        if let Some(m) = over_jobs.filter(|m| p.jobs + 1 > *m) {
            return Err(format!("{label} has {} pending jobs (limit {m})", p.jobs));
        }
        Ok(())
    }
}

/// The tail of a refusal when the job itself is what crosses the limit.
fn adds(tasks: u64) -> String {
    if tasks > 1 {
        format!("; this job adds {tasks}")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{Command, Response};
    use crate::job::JobSpec;
    use crate::state::State;
    use crate::testkit::{one_node, spec, submit};

    fn configure(s: &mut State, k: &str, v: &str) {
        let r = s.apply(Command::Configure {
            settings: vec![(k.into(), v.into())],
            now_ms: s.now_ms,
        });
        assert!(!matches!(r, Response::Rejected { .. }), "{r:?}");
    }

    fn refused(s: &mut State, spec: JobSpec) -> String {
        let jobs = s.jobs.len();
        let r = s.apply(Command::Submit {
            request_id: String::new(),
            spec,
            now_ms: s.now_ms,
        });
        assert_eq!(s.jobs.len(), jobs, "a refused submit changes nothing");
        match r {
            Response::Rejected { reason } => reason,
            other => panic!("accepted: {other:?}"),
        }
    }

    fn user(name: &str) -> JobSpec {
        JobSpec {
            user: name.into(),
            // Held: stays pending whatever the node does.
            hold: true,
            ..spec()
        }
    }

    #[test]
    fn a_user_at_the_pending_task_limit_is_refused_with_the_counts_and_others_are_not() {
        let mut s = one_node(1);
        configure(&mut s, "limits.max_pending_tasks_per_user", "2");
        submit(&mut s, user("alice"));
        submit(&mut s, user("alice"));
        assert_eq!(refused(&mut s, user("alice")), "alice has 2 pending tasks (limit 2)");
        submit(&mut s, user("bob"));
        configure(&mut s, "limits.user.alice.max_pending_tasks", "3");
        submit(&mut s, user("alice"));
        assert_eq!(s.pending_of("alice").tasks, 3);
    }

    #[test]
    fn an_account_pending_limit_counts_its_members_together_and_asks_membership() {
        let mut s = one_node(1);
        configure(&mut s, "version", "3");
        configure(&mut s, "account.physics", "users=alice,bob");
        configure(&mut s, "limits.account.physics.max_pending_jobs", "2");
        submit(&mut s, user("alice"));
        let b = submit(&mut s, user("bob"));
        assert_eq!(
            refused(&mut s, user("alice")),
            "account physics has 2 pending jobs (limit 2)"
        );
        submit(&mut s, user("carol"));
        let elsewhere = JobSpec {
            account: "physics".into(),
            ..user("carol")
        };
        assert_eq!(
            refused(&mut s, elsewhere),
            "carol may not charge account physics (not one of its users); carol's accounts: none"
        );
        s.apply(Command::Cancel {
            jobs: vec![b],
            now_ms: s.now_ms,
        });
        submit(&mut s, user("alice"));
        assert_eq!(s.pending_of_account("physics").jobs, 2);
    }

    #[test]
    fn cancelled_jobs_free_the_quota() {
        let mut s = one_node(1);
        configure(&mut s, "limits.max_pending_jobs_per_user", "1");
        let a = submit(&mut s, user("alice"));
        assert_eq!(refused(&mut s, user("alice")), "alice has 1 pending jobs (limit 1)");
        s.apply(Command::Cancel {
            jobs: vec![a],
            now_ms: s.now_ms,
        });
        submit(&mut s, user("alice"));
        assert_eq!(s.usage.jobs_by_user["alice"].len(), 1, "the ended job left the index");
    }

    #[test]
    fn the_queue_bound_counts_every_user_and_an_array_counts_its_tasks() {
        let mut s = one_node(1);
        configure(&mut s, "limits.max_pending_tasks", "3");
        submit(&mut s, user("a"));
        submit(&mut s, user("b"));
        let big = JobSpec {
            array: Some(crate::parse::parse_array("1-2").unwrap()),
            ..user("c")
        };
        assert_eq!(
            refused(&mut s, big),
            "the queue holds 2 pending tasks (limit 3); this job adds 2"
        );
        submit(&mut s, user("c"));
    }

    #[test]
    fn a_million_task_array_submits_under_the_default_bound() {
        let mut s = one_node(1);
        let big = JobSpec {
            array: Some(crate::parse::parse_array("0-999999").unwrap()),
            ..user("a")
        };
        let t = std::time::Instant::now();
        submit(&mut s, big);
        assert!(t.elapsed().as_secs() < 5);
        assert_eq!(s.pending_total(), 1_000_000);
    }
}
