//! The scheduler: priority, then FIFO, resource-aware, never over-committing a node.
//!
//! Jobs are considered by (priority desc, id asc). A job with a task that fits nowhere
//! right now *reserves* every node it could ever use (big enough, matching its
//! constraint) for the rest of the pass: no job behind it may start there, so nothing of
//! lower priority overtakes it on its nodes (no starvation of big jobs), while nodes it can
//! never use (say, without the GPU it asks for) stay open to the jobs behind it. Without
//! constraints and with equal nodes that is plain strict order. A job held back only by
//! its array limit (`%N`) reserves nothing.
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
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
    let mut pass = Pass::new(state.nodes.len());
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
            let ok = match pass.pick_node(state, cpus, mem, constraint.as_ref()) {
                Some(node) => pass.place(state, job_id, node, cpus, mem),
                // Only --requeue tasks are queued on agents: if a node is lost, a queued task
                // may or may not have started, and a --no-requeue task must then end node_fail
                // although it perhaps never ran.
                None if !requeue => false,
                None => match pass.pick_predecessor(state, job_id, cpus, mem, constraint.as_ref()) {
                    Some(pred) => pass.place_after(state, job_id, pred, cpus, mem),
                    None => false,
                },
            };
            if !ok {
                state.blocked_job.get_or_insert(job_id);
                for (i, n) in state.nodes.iter().enumerate() {
                    if n.could_ever_fit(cpus, mem) && n.matches(constraint.as_ref()) {
                        pass.reserved[i] = true;
                    }
                }
                if pass.reserved.iter().all(|r| *r) {
                    return placed;
                }
                break;
            }
            placed += 1;
        }
    }
    placed
}

/// What one scheduling pass learns as it goes, so that each placement does not scan the
/// whole cluster again (a scan per placement made the head's cost per task grow with the
/// number of nodes: 350 µs per task at 1,000 nodes, `bench/sched-sim`). A pass only ever
/// takes resources, never frees them, which is what makes these caches valid within it.
struct Pass {
    /// Nodes kept for a job that could not be placed (see the module docs).
    reserved: Vec<bool>,
    /// (cpus, mem) of unconstrained requests that fit on no node in this pass: a request
    /// at least as large cannot fit either, until the next pass.
    no_fit: Vec<(u32, u64)>,
    /// Tasks a successor could queue behind, by shape; built on first use.
    tails: Option<BTreeMap<(u32, u64), BTreeSet<Tail>>>,
    /// Nodes with free cpus, most free first (ties: lowest id); built on the second
    /// placement of a pass (one placement is cheaper with a plain scan).
    free: Option<BTreeSet<(Reverse<u32>, NodeId)>>,
    node_picks: u32,
}

/// A running task with no successor: (chain depth, node, key), in the order predecessors
/// are chosen (shortest chain first, then node and task order).
type Tail = (u32, NodeId, TaskKey);

impl Pass {
    fn new(nodes: usize) -> Pass {
        Pass {
            reserved: vec![false; nodes],
            no_fit: Vec::new(),
            tails: None,
            free: None,
            node_picks: 0,
        }
    }

    fn pick_node(&mut self, state: &State, cpus: u32, mem: u64, c: Option<&Constraint>) -> Option<NodeId> {
        if c.is_none() && self.no_fit.iter().any(|&(nc, nm)| cpus >= nc && mem >= nm) {
            return None;
        }
        self.node_picks += 1;
        if self.free.is_none() && self.node_picks > 1 {
            self.free = Some(free_nodes(state));
        }
        let found = match &self.free {
            // Same choice as `pick_node`: the first node in (most free, lowest id) order that
            // fits; none further down has enough cpus once one has too few.
            Some(free) => free
                .iter()
                .take_while(|(Reverse(f), _)| *f >= cpus)
                .find(|&&(_, id)| {
                    let i = id as usize;
                    !self.reserved[i] && state.nodes[i].fits_now(cpus, mem) && state.nodes[i].matches(c)
                })
                .map(|&(_, id)| id),
            None => pick_node(state, cpus, mem, c, &self.reserved),
        };
        if found.is_none() && c.is_none() {
            self.no_fit.push((cpus, mem));
        }
        found
    }

    /// Places a task on free resources of `node`; the new holder is a tail of depth 0.
    fn place(&mut self, state: &mut State, job_id: JobId, node: NodeId, cpus: u32, mem: u64) -> bool {
        let free_before = state.nodes.get(node as usize).map_or(0, |n| n.cpus_free());
        let Some(key) = state.place(job_id, node) else {
            return false;
        };
        if let Some(free) = self.free.as_mut() {
            free.remove(&(Reverse(free_before), node));
            let now = state.nodes.get(node as usize).map_or(0, |n| n.cpus_free());
            if now > 0 {
                free.insert((Reverse(now), node));
            }
        }
        if let Some(tails) = self.tails.as_mut() {
            tails.entry((cpus, mem)).or_default().insert((0, node, key));
        }
        true
    }

    /// Queues a task behind `pred`, which stops being a tail; the new task is one, a step
    /// deeper.
    fn place_after(&mut self, state: &mut State, job_id: JobId, pred: TaskKey, cpus: u32, mem: u64) -> bool {
        let depth = state.chain_depth(pred);
        let Some(node) = state.running_task(pred).map(|r| r.node) else {
            return false;
        };
        let Some(key) = state.place_after(job_id, pred) else {
            return false;
        };
        if let Some(set) = self.tails.as_mut().and_then(|t| t.get_mut(&(cpus, mem))) {
            set.remove(&(depth, node, pred));
            set.insert((depth + 1, node, key));
        }
        true
    }

    /// A running task of the given shape on an up node that has no successor yet and is not
    /// queued too deep for a task of `job_id` to wait behind it: the one with the shortest
    /// chain, so queued work spreads over the slots. Taking the first tail found instead
    /// chained two requeued tasks (low indices sort first) behind one running task while
    /// the other core ran out of work and idled.
    fn pick_predecessor(
        &mut self,
        state: &State,
        job_id: JobId,
        cpus: u32,
        mem: u64,
        c: Option<&Constraint>,
    ) -> Option<TaskKey> {
        let tails = self.tails.get_or_insert_with(|| all_tails(state));
        let set = tails.get(&(cpus, mem))?;
        set.iter()
            .find(|&&(depth, node, key)| {
                !self.reserved[node as usize]
                    && state
                        .nodes
                        .get(node as usize)
                        .is_some_and(|n| n.takes_work() && n.matches(c))
                    && depth < state.queue_limit(job_id, key)
            })
            .map(|&(_, _, key)| key)
    }
}

/// Nodes with a free cpu, in `pick_node`'s order of preference.
fn free_nodes(state: &State) -> BTreeSet<(Reverse<u32>, NodeId)> {
    state
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.cpus_free() > 0)
        .map(|(i, n)| (Reverse(n.cpus_free()), i as NodeId))
        .collect()
}

/// Every running task without a successor that is not being killed, by shape.
fn all_tails(state: &State) -> BTreeMap<(u32, u64), BTreeSet<Tail>> {
    let mut tails: BTreeMap<(u32, u64), BTreeSet<Tail>> = BTreeMap::new();
    for (id, n) in state.nodes.iter().enumerate() {
        for key in n.running.keys() {
            let Some(rt) = state.running_task(*key) else { continue };
            if rt.successor.is_some() || rt.kill_requested {
                continue;
            }
            tails.entry((rt.cores.len() as u32, rt.mem_bytes)).or_default().insert((
                state.chain_depth(*key),
                id as NodeId,
                *key,
            ));
        }
    }
    tails
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
