//! Running tasks and cpus per user, for the running limits (`limits.max_running_*`):
//! kept up where a task is placed (`mark_placed`) and where it stops holding its node
//! (`task_ended`), the only two places a job's running set changes, so the planner reads a
//! user's usage in O(log users) instead of scanning every running task on every pass.
//! Tasks queued on a node behind another count from their placement: they are dispatched
//! and start by themselves.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::job::RunningTask;

/// What one user runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub tasks: u64,
    pub cpus: u64,
    /// GPUs held (units of pools serving `gpu`).
    #[serde(default)]
    pub gpus: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunningUsage {
    by_user: BTreeMap<String, Running>,
    /// The same by account (tasks of jobs charged to none are not here).
    #[serde(default)]
    by_account: BTreeMap<String, Running>,
}

/// GPUs a running task holds.
pub fn task_gpus(rt: &RunningTask) -> u64 {
    rt.gres
        .iter()
        .filter(|(pool, _)| crate::resources::serves(pool, "gpu"))
        .map(|(_, units)| units.len() as u64)
        .sum()
}

/// Cpus a running task holds: all its slices for a multi-node job.
pub fn task_cpus(rt: &RunningTask, spec_cpus: u32) -> u64 {
    match &rt.alloc {
        Some(a) => a.slices.iter().map(|s| s.cores.len() as u64).sum(),
        None => u64::from(spec_cpus),
    }
}

impl RunningUsage {
    pub fn of(&self, user: &str) -> Running {
        self.by_user.get(user).copied().unwrap_or_default()
    }

    pub fn of_account(&self, account: &str) -> Running {
        self.by_account.get(account).copied().unwrap_or_default()
    }

    pub(crate) fn add(&mut self, user: &str, account: &str, cpus: u64, gpus: u64) {
        for (map, who) in self.maps(user, account) {
            let r = map.entry(who.to_string()).or_default();
            r.tasks += 1;
            r.cpus += cpus;
            r.gpus += gpus;
        }
    }

    pub(crate) fn remove(&mut self, user: &str, account: &str, cpus: u64, gpus: u64) {
        for (map, who) in self.maps(user, account) {
            if let Some(r) = map.get_mut(who) {
                r.tasks = r.tasks.saturating_sub(1);
                r.cpus = r.cpus.saturating_sub(cpus);
                r.gpus = r.gpus.saturating_sub(gpus);
                if r.tasks == 0 {
                    map.remove(who);
                }
            }
        }
    }

    /// A running task of `user` gave back `cpus` and goes on (a multi-node job whose other
    /// nodes were freed while its script is killed).
    pub(crate) fn shrink(&mut self, user: &str, account: &str, cpus: u64) {
        for (map, who) in self.maps(user, account) {
            if let Some(r) = map.get_mut(who) {
                r.cpus = r.cpus.saturating_sub(cpus);
            }
        }
    }

    /// The maps a task of `user` charged to `account` counts in.
    fn maps<'a>(&'a mut self, user: &'a str, account: &'a str) -> Vec<(&'a mut BTreeMap<String, Running>, &'a str)> {
        let mut v = vec![(&mut self.by_user, user)];
        if !account.is_empty() {
            v.push((&mut self.by_account, account));
        }
        v
    }

    /// Every user's usage (for the invariant check and `rudel limits`).
    pub fn all(&self) -> &BTreeMap<String, Running> {
        &self.by_user
    }

    /// Every account's usage.
    pub fn all_accounts(&self) -> &BTreeMap<String, Running> {
        &self.by_account
    }
}

impl super::State {
    /// The usage counted from the jobs' running tasks (what the index must equal).
    pub fn running_recount(&self) -> RunningUsage {
        let mut u = RunningUsage::default();
        for j in self.jobs.values() {
            for rt in j.running.values() {
                u.add(&j.spec.user, &j.spec.account, task_cpus(rt, j.spec.cpus), task_gpus(rt));
            }
        }
        u
    }
}
