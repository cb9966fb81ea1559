//! The scheduler: priority, then FIFO, resource-aware, never over-committing a node.
//!
//! Jobs are considered by (priority desc, id asc). A job with a task that fits nowhere
//! right now *reserves* every node it could ever use (big enough, matching its
//! constraint) for the rest of the pass: no job behind it may start there, so nothing of
//! lower priority overtakes it on its nodes (no starvation of big jobs), while nodes it can
//! never use (say, without the GPU it asks for) stay open to the jobs behind it. Without
//! constraints and with equal nodes that is plain strict order. A job held back only by
//! its array limit (`%N`) reserves nothing.
use std::ops::Bound::{Excluded, Unbounded};

use crate::constraint::Constraint;
use crate::ids::{JobId, NodeId, TaskKey};
use crate::state::State;

/// Places as many pending tasks as fit; returns how many were placed.
pub fn schedule(state: &mut State) -> usize {
    state.blocked_job = None;
    if state.queue.is_empty() {
        return 0;
    }
    let mut placed = 0;
    let mut reserved = vec![false; state.nodes.len()];
    // Walk the queue by key rather than collecting it: a pass usually stops early, and the
    // queue may hold 100k jobs.
    let mut cursor: Option<(i64, u64)> = None;
    loop {
        let next = match cursor {
            None => state.queue.iter().next(),
            Some(c) => state.queue.range((Excluded(c), Unbounded)).next(),
        };
        let Some(&entry) = next else { break };
        cursor = Some(entry);
        let job_id = entry.1;
        let Some(job) = state.jobs.get(&job_id) else { continue };
        let (cpus, mem, requeue) = (job.spec.cpus, job.spec.mem_bytes, job.spec.requeue);
        let constraint = job.spec.constraint.clone();
        let limit = job
            .spec
            .array
            .as_ref()
            .and_then(|a| a.limit)
            .map_or(u64::MAX, u64::from);
        while let Some(job) = state.jobs.get(&job_id) {
            if !job.has_pending() || job.running.len() as u64 >= limit {
                break;
            }
            let ok = match pick_node(state, cpus, mem, constraint.as_ref(), &reserved) {
                Some(node) => state.place(job_id, node),
                // Only --requeue tasks are queued on agents: if a node is lost, a queued task
                // may or may not have started, and a --no-requeue task must then end node_fail
                // although it perhaps never ran.
                None if !requeue => false,
                None => match pick_predecessor(state, job_id, cpus, mem, constraint.as_ref(), &reserved) {
                    Some(pred) => state.place_after(job_id, pred),
                    None => false,
                },
            };
            if !ok {
                state.blocked_job.get_or_insert(job_id);
                for (i, n) in state.nodes.iter().enumerate() {
                    if n.could_ever_fit(cpus, mem) && n.matches(constraint.as_ref()) {
                        reserved[i] = true;
                    }
                }
                if reserved.iter().all(|r| *r) {
                    return placed;
                }
                break;
            }
            placed += 1;
        }
    }
    placed
}

/// A running task of the given shape on an up node that has no successor yet and is not
/// queued too deep for a task of `job_id` to wait behind it: the one with the shortest
/// chain, so queued work spreads over the slots. Taking the first tail found instead
/// chained two requeued tasks (low indices sort first) behind one running task while
/// the other core ran out of work and idled.
fn pick_predecessor(
    state: &State,
    job_id: JobId,
    cpus: u32,
    mem: u64,
    c: Option<&Constraint>,
    reserved: &[bool],
) -> Option<TaskKey> {
    let mut best: Option<(u32, TaskKey)> = None;
    for (_, n) in state
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| !reserved[*i] && n.takes_work() && n.matches(c))
    {
        for key in n.running.keys() {
            let Some(rt) = state.running_task(*key) else { continue };
            if rt.successor.is_some() || rt.kill_requested || rt.cores.len() != cpus as usize || rt.mem_bytes != mem {
                continue;
            }
            let depth = state.chain_depth(*key);
            if depth >= state.queue_limit(job_id, *key) || best.is_some_and(|(d, _)| d <= depth) {
                continue;
            }
            if depth == 0 {
                // A holder with nothing queued behind it: no chain can be shorter.
                return Some(*key);
            }
            best = Some((depth, *key));
        }
    }
    best.map(|(_, key)| key)
}

/// The node with the most free cpus that fits the task now (ties: lowest id), spreading
/// work over the cluster.
fn pick_node(state: &State, cpus: u32, mem: u64, c: Option<&Constraint>, reserved: &[bool]) -> Option<NodeId> {
    let mut best: Option<(u32, NodeId)> = None;
    for (i, n) in state.nodes.iter().enumerate() {
        if !reserved[i] && n.fits_now(cpus, mem) && n.matches(c) {
            let free = n.cpus_free();
            if best.is_none_or(|(b, _)| free > b) {
                best = Some((free, i as NodeId));
            }
        }
    }
    best.map(|(_, id)| id)
}
