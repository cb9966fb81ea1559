//! Gang placement of multi-node jobs: every slice of an allocation in one placement, or
//! nothing. A job that cannot get all of its nodes now takes none and *reserves* every
//! node it could ever use, like a single task that fits nowhere (see `plan.rs`): small
//! jobs behind it cannot keep those nodes busy forever, and no job ever holds part of an
//! allocation while waiting for the rest, which is what lets two big jobs deadlock.
use std::cmp::Reverse;

use super::{next_pending, Placement, Planner, Shape};
use crate::alloc::{distribute, AllocSpec};
use crate::ids::{NodeId, TaskKey};
use crate::job::Job;
use crate::node::Node;

/// One node's share of a planned allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GangSlice {
    pub node: NodeId,
    pub tasks: u32,
    pub cpus: u32,
    pub mem: u64,
}

impl Planner<'_> {
    /// Places a multi-node job's one task with all of its slices, or reserves its nodes.
    /// False when every node is reserved (the pass ends).
    pub(super) fn plan_gang(&mut self, job: &Job, a: &AllocSpec, shape: &Shape) -> bool {
        let taken = self.taken.get(&job.id).copied().unwrap_or_default();
        if !job.running.is_empty() || taken.placed > 0 {
            return true;
        }
        let Some((index, attempt, from_requeue, skips)) = next_pending(job, &taken) else {
            return true;
        };
        if !self.licenses_free(job) || !self.window_licenses_allow(job, shape.end) {
            self.plan.waiting.insert(job.id, super::Wait::Licenses);
            return self.licenses_block(job, shape, Some(a));
        }
        let (required, caps) = self.gang_candidates(job, a, shape);
        let Some(shares) = distribute(a, required, &caps) else {
            if self.ordinary {
                return self.stop_at(job.id);
            }
            self.plan.blocked.get_or_insert(job.id);
            if self.backfill_on() {
                let could_use: Vec<bool> = (self.state.nodes.iter().enumerate())
                    .map(|(i, n)| self.could_ever_serve(n, job, a, shape) && self.open_to(i as NodeId, n, shape))
                    .collect();
                return self.backfill_block(job, shape, Some(a), &could_use);
            }
            for (i, n) in self.state.nodes.iter().enumerate() {
                if self.could_ever_serve(n, job, a, shape) && self.open_to(i as NodeId, n, shape) {
                    self.reserved[i] = true;
                }
            }
            return !self.reserved.iter().all(|r| *r);
        };
        let slices: Vec<GangSlice> = shares
            .into_iter()
            .filter_map(|(node, tasks)| {
                let n = self.state.nodes.get(node as usize)?;
                let cpus = if a.exclusive { n.cpus } else { tasks * shape.cpus };
                let mem = slice_mem(job, a, cpus);
                Some(GangSlice { node, tasks, cpus, mem })
            })
            .collect();
        let Some(first) = slices.first().map(|s| s.node) else {
            return true;
        };
        let end = self.end_of(job);
        for s in &slices {
            self.take(s.node, s.cpus, s.mem);
            self.window_took(s.node, s.cpus, s.mem, end);
        }
        for (name, n) in &job.spec.licenses {
            *self.licenses_used.entry(name.clone()).or_default() += u64::from(*n);
        }
        self.window_took_licenses(job, end);
        let key = TaskKey { job: job.id, index };
        self.plan.start.push(Placement {
            key,
            attempt,
            node: first,
            behind: None,
            from_requeue,
        });
        self.plan.gangs.insert(key, slices);
        let t = self.taken.entry(job.id).or_default();
        t.placed += 1;
        if from_requeue {
            t.last_requeued = Some(index);
        } else {
            t.positions += 1 + skips;
        }
        true
    }

    /// Nodes the job may use now with how many tasks each could take: its required nodes
    /// first (their count is returned), then the others by id.
    fn gang_candidates(&mut self, job: &Job, a: &AllocSpec, shape: &Shape) -> (usize, Vec<(NodeId, u32)>) {
        let mut caps = Vec::new();
        for name in &a.nodelist {
            let Some(&id) = self.state.node_by_name.get(name) else {
                // An unknown required node: nothing fits until it registers.
                return (a.nodelist.len(), Vec::new());
            };
            caps.push((id, self.tasks_fitting(id, job, a, shape)));
        }
        let required = caps.len();
        // Walk the nodes with free cpus, roomiest first, and stop once enough are found:
        // scanning every node per gang made the cost per job grow with the cluster
        // (108 µs per 4-node job at 1,000 nodes, `bench/sched-sim --gang 4`).
        if self.free.is_none() {
            self.free = Some(self.free_nodes());
        }
        let want_nodes = a.nodes_max.min(a.ntasks.unwrap_or(u32::MAX)) as usize;
        let want_tasks = u64::from(a.ntasks.unwrap_or(0));
        let mut tasks = 0u64;
        let Some(free) = self.free.as_ref() else {
            return (required, caps);
        };
        for id in free
            .iter()
            .take_while(|(Reverse(c), _)| *c >= shape.cpus)
            .map(|(_, id)| id)
        {
            if caps.len() >= want_nodes + required && tasks >= want_tasks {
                break;
            }
            let Some(n) = self.state.nodes.get(id as usize) else {
                continue;
            };
            if a.nodelist.contains(&n.name) {
                continue;
            }
            let cap = self.tasks_fitting(id, job, a, shape);
            if cap > 0 {
                caps.push((id, cap));
                tasks += u64::from(a.ntasks_per_node.map_or(cap, |t| cap.min(t)));
            }
        }
        (required, caps)
    }

    /// How many of the job's tasks fit on a node now (0: none, or the node is reserved,
    /// excluded, out of its partitions or not matching its constraint).
    fn tasks_fitting(&self, id: NodeId, job: &Job, a: &AllocSpec, shape: &Shape) -> u32 {
        let Some(n) = self.state.nodes.get(id as usize) else {
            return 0;
        };
        if self.reserved[id as usize]
            || !self.open_to(id, n, shape)
            || !n.takes_work()
            || !n.matches(shape.constraint)
            || !self.in_parts(shape, id, n)
            || a.exclude.contains(&n.name)
        {
            return 0;
        }
        let (fc, fm) = self.free_on(id, n);
        // Under backfill, a node kept for the reserved job gives a job that ends after its
        // expected start only what will be spare then.
        let (fc, fm) = match self.window_cap(id, shape.end) {
            Some((c, m)) => (fc.min(c), fm.min(m)),
            None => (fc, fm),
        };
        let c = shape.cpus.max(1);
        if a.exclusive {
            let idle = fc == n.cpus && n.running.is_empty() && n.slices.is_empty();
            return if idle && fm >= slice_mem(job, a, n.cpus) {
                n.cpus / c
            } else {
                0
            };
        }
        let by_cpus = fc / c;
        if a.mem_per_cpu > 0 {
            let per_task = a.mem_per_cpu.saturating_mul(u64::from(c));
            return by_cpus.min(u32::try_from(fm / per_task).unwrap_or(u32::MAX));
        }
        if job.spec.mem_bytes > fm {
            return 0;
        }
        by_cpus
    }

    /// Could the node ever hold a task of the job (it is then reserved while the job waits)?
    pub(super) fn could_ever_serve(&self, n: &Node, job: &Job, a: &AllocSpec, shape: &Shape) -> bool {
        n.could_ever_fit(shape.cpus, slice_mem(job, a, shape.cpus))
            && n.matches(shape.constraint)
            && shape.in_partitions(n)
            && !a.exclude.contains(&n.name)
    }

    /// Takes cpus and memory of a node for the rest of the pass.
    fn take(&mut self, node: NodeId, cpus: u32, mem: u64) {
        let before = self
            .state
            .nodes
            .get(node as usize)
            .map_or(0, |n| self.free_on(node, n).0);
        let u = self.used.entry(node).or_default();
        u.0 += cpus;
        u.1 += mem;
        if let Some(free) = self.free.as_mut() {
            free.update(node, before, before.saturating_sub(cpus));
        }
    }
}

/// Memory of a slice of `cpus` cpus: per cpu, or the job's per-node amount.
pub fn slice_mem(job: &Job, a: &AllocSpec, cpus: u32) -> u64 {
    if a.mem_per_cpu > 0 {
        a.mem_per_cpu.saturating_mul(u64::from(cpus))
    } else {
        job.spec.mem_bytes
    }
}

#[cfg(test)]
#[path = "gang_tests.rs"]
mod tests;
