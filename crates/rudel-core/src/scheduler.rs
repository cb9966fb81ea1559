//! The scheduler: priority, then FIFO, resource-aware, never over-committing a node.
//!
//! Strict order: jobs are considered by (priority desc, id asc); the first job that has a
//! task that fits nowhere right now stops the pass, so nothing of lower priority overtakes
//! it (no starvation of big jobs). A job held back only by its array limit (`%N`) does not
//! block the jobs behind it.
use std::ops::Bound::{Excluded, Unbounded};

use crate::ids::NodeId;
use crate::node::Liveness;
use crate::state::State;

/// Places as many pending tasks as fit; returns how many were placed.
pub fn schedule(state: &mut State) -> usize {
    state.blocked_job = None;
    if state.queue.is_empty() {
        return 0;
    }
    let mut free_cpus: u64 = state
        .nodes
        .iter()
        .filter(|n| n.liveness == Liveness::Up)
        .map(|n| u64::from(n.cpus_free()))
        .sum();
    if free_cpus == 0 {
        state.blocked_job = state.queue.iter().next().map(|(_, id)| *id);
        return 0;
    }
    let mut placed = 0;
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
        let (cpus, mem) = (job.spec.cpus, job.spec.mem_bytes);
        let limit = job.spec.array.as_ref().and_then(|a| a.limit).map_or(u64::MAX, u64::from);
        while let Some(job) = state.jobs.get(&job_id) {
            if !job.has_pending() || job.running.len() as u64 >= limit {
                break;
            }
            let Some(node) = pick_node(state, cpus, mem) else {
                state.blocked_job = Some(job_id);
                return placed;
            };
            if !state.place(job_id, node) {
                state.blocked_job = Some(job_id);
                return placed;
            }
            placed += 1;
            free_cpus = free_cpus.saturating_sub(u64::from(cpus));
            if free_cpus == 0 {
                if state.jobs.get(&job_id).is_some_and(|j| j.has_pending()) {
                    state.blocked_job = Some(job_id);
                } else {
                    state.blocked_job = state.queue.iter().next().map(|(_, id)| *id);
                }
                return placed;
            }
        }
    }
    placed
}

/// The node with the most free cpus that fits the task now (ties: lowest id), spreading
/// work over the cluster.
fn pick_node(state: &State, cpus: u32, mem: u64) -> Option<NodeId> {
    let mut best: Option<(u32, NodeId)> = None;
    for (i, n) in state.nodes.iter().enumerate() {
        if n.fits_now(cpus, mem) {
            let free = n.cpus_free();
            if best.is_none_or(|(b, _)| free > b) {
                best = Some((free, i as NodeId));
            }
        }
    }
    best.map(|(_, id)| id)
}
