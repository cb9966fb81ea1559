//! The state machine's invariants, one function each, and the typed violation they
//! report. The scheduler's commit re-checks capacity with the same types; the property
//! tests call [`check_all`] after every applied command.
use std::collections::BTreeSet;

use crate::ids::{JobId, NodeId, TaskKey};
use crate::job::TaskState;
use crate::state::State;

/// A broken invariant: a bug, never an expected outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("node {node} would run {cpus} cpus of {capacity} or hold {mem} bytes of {mem_capacity} (task {key})")]
    OverCommit {
        node: NodeId,
        key: TaskKey,
        cpus: u32,
        capacity: u32,
        mem: u64,
        mem_capacity: u64,
    },
    #[error("core {core} of node {node} is given to two tasks")]
    CoreTwice { node: NodeId, core: u32 },
    #[error("task {key} was planned but is not the job's next pending task")]
    NotPending { key: TaskKey },
    #[error("task {key} cannot queue behind {pred}: {why}")]
    BadSuccessor {
        key: TaskKey,
        pred: TaskKey,
        why: &'static str,
    },
    #[error("node {node} lists task {key}, which the job does not hold there")]
    NodeTaskMismatch { node: NodeId, key: TaskKey },
    #[error("job {job}: task counts {counts:?} do not add up to {total} or disagree with its running tasks")]
    Counts { job: JobId, counts: [u64; 7], total: u64 },
    #[error("job {job} runs {running} tasks, above its array limit {limit}")]
    ArrayLimit { job: JobId, running: u64, limit: u32 },
}

/// Every invariant, in a fixed order; the first violation found.
pub fn check_all(s: &State) -> Result<(), Violation> {
    no_overcommit(s)?;
    nodes_and_jobs_agree(s)?;
    counts_add_up(s)?;
    array_limits_hold(s)
}

/// No node runs more cpus or memory than it has, and no core is given twice. Successors
/// share their predecessor's cores and are not counted.
pub fn no_overcommit(s: &State) -> Result<(), Violation> {
    for (id, n) in s.nodes.iter().enumerate() {
        let node = id as NodeId;
        let (mut cpus, mut mem, mut cores) = (0u32, 0u64, BTreeSet::new());
        for key in n.running.keys() {
            let Some(rt) = s.running_task(*key).filter(|rt| rt.after.is_none()) else {
                continue;
            };
            for &core in &rt.cores {
                if !cores.insert(core) {
                    return Err(Violation::CoreTwice { node, core });
                }
            }
            cpus += rt.cores.len() as u32;
            mem += rt.mem_bytes;
            if cpus > n.cpus || mem > n.mem_bytes {
                return Err(Violation::OverCommit {
                    node,
                    key: *key,
                    cpus,
                    capacity: n.cpus,
                    mem,
                    mem_capacity: n.mem_bytes,
                });
            }
        }
    }
    Ok(())
}

/// Every task a node lists is held by its job on that node with the same attempt.
pub fn nodes_and_jobs_agree(s: &State) -> Result<(), Violation> {
    for (id, n) in s.nodes.iter().enumerate() {
        for (key, attempt) in &n.running {
            let ok = s
                .running_task(*key)
                .is_some_and(|rt| rt.node as usize == id && rt.attempt == *attempt);
            if !ok {
                return Err(Violation::NodeTaskMismatch {
                    node: id as NodeId,
                    key: *key,
                });
            }
        }
    }
    Ok(())
}

/// A job's task counts add up to its size, and its running count is its running records.
pub fn counts_add_up(s: &State) -> Result<(), Violation> {
    for j in s.jobs.values() {
        let sum: u64 = TaskState::ALL.iter().map(|st| j.count(*st)).sum();
        if sum != j.total || j.count(TaskState::Running) != j.running.len() as u64 {
            return Err(Violation::Counts {
                job: j.id,
                counts: j.counts,
                total: j.total,
            });
        }
    }
    Ok(())
}

/// No array runs more tasks at once than its `%N` limit.
pub fn array_limits_hold(s: &State) -> Result<(), Violation> {
    for j in s.jobs.values() {
        if let Some(limit) = j.spec.array.as_ref().and_then(|a| a.limit) {
            if j.running.len() as u64 > u64::from(limit) {
                return Err(Violation::ArrayLimit {
                    job: j.id,
                    running: j.running.len() as u64,
                    limit,
                });
            }
        }
    }
    Ok(())
}
