//! Preemption by partition priority tier (Slurm's `PreemptType=preempt/partition_prio`),
//! off by default (`preempt=off|requeue|cancel`, `preempt.grace_s`).
//!
//! The first job in the queue order that cannot place a task (the blocked job) may stop
//! running tasks of jobs whose partition has a *lower* tier than its own, on a node of
//! its partitions, when their release makes its next task fit there. The planner only
//! chooses the victims (this module is pure, like the rest of the pass); committing the
//! plan marks them (`RunningTask::preempted_by`) and asks their agents to kill them with
//! SIGTERM, then SIGKILL after `preempt.grace_s` (`state/preempt.rs`). The preempting job
//! keeps its reservation and starts in a later pass, when the victims' ends are reported:
//! it never runs beside them, so a node is never over-committed.
//!
//! Which victims: on each node the job could use, running tasks of a lower tier are taken
//! lowest tier first, then youngest first (Slurm preempts the most recently started),
//! until the task fits in what is free plus what they and the tasks already being killed
//! there hold; the node needing the fewest victims wins (ties: the lowest highest victim
//! tier, then the youngest victims, then the lowest node id). Nothing else is preempted
//! for the same job while one of its victims is still ending, so a slow kill does not
//! cascade into a kill per pass.
//!
//! A task queued behind a victim on its agent (successor queueing) would take over the
//! victim's cores when it ends, so it is stopped with it: it has not started, and goes
//! back to pending whatever the mode (only `--requeue` tasks are ever queued so). The
//! count of victims that decides between nodes counts started tasks only.
//!
//! Not preempted: tasks of an equal or higher tier (nor a chain holding one), tasks
//! already being killed, tasks holding generic resources, and multi-node allocations.
//! Jobs asking for generic resources or several nodes do not preempt.
use std::cmp::Reverse;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Planner, Shape};
use crate::ids::{JobId, NodeId, TaskKey};
use crate::job::Job;
use crate::state::State;

/// The first scheduling version that knows `preempt`.
pub const PREEMPT_VERSION: u32 = 7;

/// Slurm's `GraceTime` is per partition and 0 by default; a default that lets a job trap
/// SIGTERM and checkpoint is more useful here.
pub const DEFAULT_GRACE_S: u64 = 30;

/// What happens to a preempted task.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreemptMode {
    /// Nothing is preempted.
    #[default]
    Off,
    /// A `--requeue` task goes back to pending (a requeue: a higher attempt, the job's
    /// priority and age kept); any other task is cancelled.
    Requeue,
    /// The task is cancelled, its reason "preempted by job N".
    Cancel,
}

impl PreemptMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PreemptMode::Off => "off",
            PreemptMode::Requeue => "requeue",
            PreemptMode::Cancel => "cancel",
        }
    }
}

/// `preempt` and `preempt.grace_s` of [`super::super::SchedConfig`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PreemptConfig {
    pub mode: PreemptMode,
    /// Seconds between the SIGTERM and the SIGKILL of a preempted task.
    pub grace_s: u64,
}

impl Default for PreemptConfig {
    fn default() -> Self {
        PreemptConfig {
            mode: PreemptMode::Off,
            grace_s: DEFAULT_GRACE_S,
        }
    }
}

impl PreemptConfig {
    /// Sets `preempt` or `preempt.grace_s`; `Err` is the expected form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "preempt" => {
                self.mode = match value.trim() {
                    "off" => PreemptMode::Off,
                    "requeue" => PreemptMode::Requeue,
                    "cancel" => PreemptMode::Cancel,
                    _ => return Err("off, requeue or cancel".into()),
                }
            }
            "preempt.grace_s" => {
                self.grace_s = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|v| *v <= 86_400)
                    .ok_or("seconds from 0 (SIGKILL at once) to 86400")?;
            }
            _ => return Err("preempt or preempt.grace_s".into()),
        }
        Ok(())
    }

    pub fn settings(&self) -> Vec<(String, String)> {
        vec![
            ("preempt".into(), self.mode.as_str().into()),
            ("preempt.grace_s".into(), self.grace_s.to_string()),
        ]
    }

    pub fn is_default(&self) -> bool {
        *self == PreemptConfig::default()
    }
}

/// Running tasks a pass decided to stop so that `job` can start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preemption {
    pub job: JobId,
    /// The node the job is expected to start on once they ended.
    pub node: NodeId,
    /// (task, attempt) of each victim, in the order they were chosen.
    pub victims: Vec<(TaskKey, u32)>,
}

/// The highest tier among the partitions of `job` (a comma list) that contain node `n`;
/// with none containing it (the configuration changed under a running task), the highest
/// of all its partitions, so a task is never taken for lower than it may be.
pub(crate) fn tier_on(state: &State, job: &Job, n: &crate::node::Node) -> i32 {
    let parts = || {
        job.spec
            .partition
            .split(',')
            .filter_map(|p| state.sched.partitions.get(p.trim()))
    };
    parts()
        .filter(|p| p.contains(n))
        .map(|p| p.tier)
        .max()
        .or_else(|| parts().map(|p| p.tier).max())
        .unwrap_or(0)
}

/// The tasks preempted for one pending job, kept in the replicated state while one of
/// them still runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preempting {
    /// The node they run on, kept for the job until they all ended: without that, a job
    /// ahead of it in the queue order (a higher tier elsewhere, say) could take what they
    /// freed, and the next pass would preempt again, and again.
    pub node: NodeId,
    /// (task, attempt) of each victim.
    pub victims: Vec<(TaskKey, u32)>,
}

/// True while a task preempted for `job` has not ended yet.
pub fn victims_ending(state: &State, job: JobId) -> bool {
    state.preempting.get(&job).is_some_and(|p| {
        p.victims
            .iter()
            .any(|(key, attempt)| state.running_task(*key).is_some_and(|rt| rt.attempt == *attempt))
    })
}

/// Nodes kept for a pending job whose victims run there, or ended in the entry being
/// applied (the record goes at the end of the pass that follows, which gives the job its
/// turn), with the job's tier there: only a job of a higher tier on the node may take it
/// meanwhile (it could have preempted the job's victims itself). Only with partitions
/// configured: the planner's cache of plain requests that fit nowhere assumes no node is
/// closed to some jobs only.
pub(super) fn kept_nodes(state: &State) -> BTreeMap<NodeId, (JobId, i32)> {
    if state.sched.partitions.is_empty() {
        return BTreeMap::new();
    }
    (state.preempting.iter())
        .filter_map(|(id, p)| {
            let job = state.jobs.get(id).filter(|j| j.has_pending())?;
            let node = state.nodes.get(p.node as usize)?;
            Some((p.node, (*id, tier_on(state, job, node))))
        })
        .collect()
}

impl Shape<'_> {
    /// The highest tier of the shape's partitions that hold `n` (0 without partitions).
    fn tier_on(&self, n: &crate::node::Node) -> i32 {
        (self.parts.iter().flatten())
            .filter(|p| p.contains(n))
            .map(|p| p.tier)
            .max()
            .unwrap_or(0)
    }
}

impl Planner<'_> {
    /// False when node `id` is kept for another job's preemption and a task of `t` may not
    /// take it (see [`kept_nodes`]).
    pub(super) fn open_to(&self, id: NodeId, n: &crate::node::Node, t: &Shape) -> bool {
        self.kept
            .get(&id)
            .is_none_or(|&(job, tier)| job == t.job || t.tier_on(n) > tier)
    }
}

/// One node's candidate: (victims, highest victim tier, youngest first start times
/// reversed, node) compares as the module docs order them.
type Score = (usize, i32, Vec<Reverse<u64>>, NodeId);

impl Planner<'_> {
    /// Victims whose release lets one more task of `job` (of `shape`) start, or `None`
    /// (preemption off, nothing to gain, or victims of this job still ending).
    pub(super) fn plan_preemption(&self, job: &Job, shape: &Shape) -> Option<Preemption> {
        let state = self.state;
        let cfg = &state.sched;
        if cfg.preempt.mode == PreemptMode::Off || cfg.version < PREEMPT_VERSION || cfg.partitions.is_empty() {
            return None;
        }
        if job.spec.alloc.is_some() || !shape.gres.is_empty() || victims_ending(state, job.id) {
            return None;
        }
        let parts = shape.parts.as_ref()?;
        // Nothing can be below the job anywhere (one tier for all, say): skip the scan of
        // the running tasks, which would otherwise run on every pass while it waits.
        let lowest = cfg.partitions.values().map(|p| p.tier).min()?;
        if parts.iter().all(|p| p.tier <= lowest) {
            return None;
        }
        // Tasks this pass queued behind running ones: they would take over a victim's
        // cores as its successors in the state would.
        let queued: BTreeMap<TaskKey, (TaskKey, u32)> = (self.plan.start.iter())
            .filter_map(|p| p.behind.map(|pred| (pred, (p.key, p.attempt))))
            .collect();
        let mut best: Option<(Score, Vec<(TaskKey, u32)>)> = None;
        for (i, n) in state.nodes.iter().enumerate() {
            let id = i as NodeId;
            if !(n.takes_work() && n.could_ever_fit(shape.cpus, shape.mem) && n.matches(shape.constraint)) {
                continue;
            }
            let Some(tier) = parts.iter().filter(|p| p.contains(n)).map(|p| p.tier).max() else {
                continue;
            };
            let (mut cpus, mut mem) = self.free_on(id, n);
            // (tier, start, key, chain, cpus, mem) of every task that may be taken here.
            let mut candidates = Vec::new();
            for key in n.running.keys() {
                let Some(rt) = state.running_task(*key).filter(|rt| rt.after.is_none()) else {
                    continue;
                };
                let held = (rt.cores.len() as u32, rt.mem_bytes);
                if rt.kill_requested && rt.successor.is_none() {
                    // Already ending: what it holds comes free without another victim.
                    cpus += held.0;
                    mem += held.1;
                    continue;
                }
                if let Some((vtier, chain)) = self.chain_below((*key, rt.attempt), tier, n, &queued) {
                    candidates.push((vtier, Reverse(rt.start_ms), Reverse(*key), chain, held));
                }
            }
            if cpus >= shape.cpus && mem >= shape.mem {
                // It only waits for tasks already ending (perhaps victims of an earlier
                // preemption whose record is gone): take nothing more.
                return None;
            }
            candidates.sort_unstable();
            let mut chosen = Vec::new();
            let (mut top, mut starts) = (i32::MIN, Vec::new());
            for (vtier, start, _, chain, (c, m)) in candidates {
                if cpus >= shape.cpus && mem >= shape.mem {
                    break;
                }
                cpus += c;
                mem += m;
                top = top.max(vtier);
                starts.push(Reverse(start.0));
                chosen.extend(chain);
            }
            if cpus < shape.cpus || mem < shape.mem {
                continue;
            }
            let score = (starts.len(), top, starts, id);
            if best.as_ref().is_none_or(|(b, _)| score < *b) {
                best = Some((score, chosen));
            }
        }
        best.map(|((_, _, _, node), victims)| Preemption {
            job: job.id,
            node,
            victims,
        })
    }

    /// The running task `key` (holding resources on `n`) with the tasks queued behind it
    /// on its agent, as (task, attempt), and the highest tier among them, when all of them
    /// may be preempted by a job of `tier`: their release is what frees the holder's
    /// cores (killing the holder alone would hand them to its successor).
    fn chain_below(
        &self,
        first: (TaskKey, u32),
        tier: i32,
        n: &crate::node::Node,
        queued: &BTreeMap<TaskKey, (TaskKey, u32)>,
    ) -> Option<(i32, Vec<(TaskKey, u32)>)> {
        let state = self.state;
        let (mut chain, mut top, mut next) = (Vec::new(), i32::MIN, Some(first));
        while let Some((k, attempt)) = next {
            let vjob = state.jobs.get(&k.job)?;
            let vtier = tier_on(state, vjob, n);
            if vtier >= tier {
                return None;
            }
            // A task placed by this pass is not in the state yet (and holds nothing).
            let in_state = state.running_task(k).filter(|rt| rt.attempt == attempt);
            if in_state.is_some_and(|rt| rt.kill_requested || !rt.gres.is_empty() || rt.alloc.is_some()) {
                return None;
            }
            top = top.max(vtier);
            chain.push((k, attempt));
            next = in_state
                .and_then(|rt| rt.successor)
                .and_then(|s| state.running_task(s).map(|rt| (s, rt.attempt)))
                .or_else(|| queued.get(&k).copied());
        }
        Some((top, chain))
    }
}

#[cfg(test)]
#[path = "preempt_tests.rs"]
mod tests;
