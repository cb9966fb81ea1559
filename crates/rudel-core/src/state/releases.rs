//! When each node's allocations come back if every task ends at its time limit: what the
//! backfill planner's reservation estimate (`sched/backfill.rs`, `expected_start`) reads
//! for every node the blocked job could use.
//!
//! It read them from the running tasks each time: two map lookups per task and a walk of
//! each chain of successors, 21% of the head's CPU at 10,000 nodes and most of the
//! 100–200 ms entries that computed a reservation (`bench/sched-sim scale`). The holders'
//! are now kept per node, like the tail and free-node indexes: derived data, never
//! serialized, built on first use, and kept up per task, not per node (recomputing every
//! node a report touched cost more than the reads saved). Every task
//! [`State::touch_tail`] is told about is refiled: a holder with its chain's limits, a
//! task queued behind one by refiling that holder, one that ended by dropping it. What
//! depends on the time is applied when read ([`Hold::at`]). The slices of multi-node
//! tasks are few and read from the state each time. The invariant
//! `release_index_is_exact` compares the kept-up holds with fresh ones.
use rustc_hash::FxHashMap as HashMap;

use crate::ids::{NodeId, TaskKey};
use crate::job::{Job, RunningTask};
use crate::state::State;

/// What a task (with the successors queued behind it) holds on a node, and until when by
/// the time limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    /// The task's start plus its limit.
    pub end: u64,
    /// The limits of the successors queued behind it, in all.
    pub then: u64,
    pub cpus: u32,
    pub mem: u64,
}

impl Hold {
    /// When it comes back, seen at `now`: a task past its limit ends now at the earliest.
    pub fn at(&self, now: u64) -> u64 {
        self.end.max(now).saturating_add(self.then).max(now)
    }
}

/// The holders' holds of every node (by node id, in task order) and where each is filed.
#[derive(Clone, Default)]
pub struct ReleaseIndex {
    by_node: Vec<Vec<(TaskKey, Hold)>>,
    filed: HashMap<TaskKey, NodeId>,
}

impl ReleaseIndex {
    fn unfile(&mut self, key: TaskKey) {
        let Some(node) = self.filed.remove(&key) else { return };
        if let Some(list) = self.by_node.get_mut(node as usize) {
            if let Ok(i) = list.binary_search_by_key(&key, |e| e.0) {
                list.remove(i);
            }
        }
    }

    fn file(&mut self, node: NodeId, key: TaskKey, hold: Hold) {
        // An entry on the same node is replaced in place below; one on another node (a
        // task ended and placed again within one entry) must go first.
        if self.filed.get(&key).is_some_and(|n| *n != node) {
            self.unfile(key);
        }
        let i = node as usize;
        if self.by_node.len() <= i {
            self.by_node.resize(i + 1, Vec::new());
        }
        let list = &mut self.by_node[i];
        match list.binary_search_by_key(&key, |e| e.0) {
            Ok(j) => list[j].1 = hold,
            Err(j) => list.insert(j, (key, hold)),
        }
        self.filed.insert(key, node);
    }
}

/// The index and the tasks changed since it was last settled.
pub type ReleaseCache = super::derived::Derived<ReleaseIndex, TaskKey>;

impl State {
    /// Notes that `key` changed in a way that may change when its chain ends (see
    /// [`State::touch_tail`], which calls this).
    pub(crate) fn touch_release(&mut self, key: TaskKey) {
        self.releases.touch(key);
    }

    /// Brings the holds up to date (builds them on first use).
    pub(crate) fn settle_releases(&mut self) {
        let Some((mut index, mut dirty)) = self.releases.take() else {
            self.releases.index = Some(self.fresh_releases());
            return;
        };
        dirty.sort_unstable();
        dirty.dedup();
        for key in dirty {
            self.refile_release(&mut index, key);
        }
        if index.by_node.len() < self.nodes.len() {
            index.by_node.resize(self.nodes.len(), Vec::new());
        }
        self.releases.index = Some(index);
    }

    /// Files `key` again: a holder with its chain's limits, a task queued behind one by
    /// refiling that holder.
    fn refile_release(&self, index: &mut ReleaseIndex, key: TaskKey) {
        let Some(rt) = self.running_task(key) else {
            index.unfile(key);
            return;
        };
        if rt.after.is_some() {
            index.unfile(key);
            let holder = self.chain_holder(key);
            if holder != key && self.running_task(holder).is_some_and(|h| h.after.is_none()) {
                self.refile_release(index, holder);
            }
            return;
        }
        match self.jobs.get(&key.job).and_then(|j| self.holder_hold(j, rt)) {
            Some(hold) => index.file(rt.node, key, hold),
            None => index.unfile(key),
        }
    }

    /// Node `id`'s holders' holds (in task order), if they are up to date; `None` tells
    /// the caller to compute them ([`State::holder_holds`]).
    pub fn kept_holds(&self, id: NodeId) -> Option<impl Iterator<Item = &Hold>> {
        let index = self.releases.settled()?;
        let list = index.by_node.get(id as usize)?;
        Some(list.iter().map(|(_, h)| h))
    }

    fn fresh_releases(&self) -> ReleaseIndex {
        let mut index = ReleaseIndex {
            by_node: vec![Vec::new(); self.nodes.len()],
            filed: HashMap::default(),
        };
        for (i, n) in self.nodes.iter().enumerate() {
            for key in n.running.keys() {
                if let Some(rt) = self.running_task(*key).filter(|rt| rt.after.is_none()) {
                    if let Some(hold) = self.jobs.get(&key.job).and_then(|j| self.holder_hold(j, rt)) {
                        index.file(i as NodeId, *key, hold);
                    }
                }
            }
        }
        index
    }

    /// Everything node `id` holds: its holders', then the slices of multi-node tasks.
    pub fn holds_on(&self, id: NodeId) -> Vec<Hold> {
        let mut out = self.holder_holds(id);
        out.extend(self.slice_holds(id));
        out
    }

    /// What node `id`'s tasks hold (a chain of successors: until the last of it ends).
    /// Tasks without a limit never give theirs back and are left out.
    pub fn holder_holds(&self, id: NodeId) -> Vec<Hold> {
        let Some(n) = self.nodes.get(id as usize) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        // A node's tasks are in key order, so neighbours often share a job: one lookup
        // in the (large) job map for them all.
        let mut job: Option<&Job> = None;
        for key in n.running.keys() {
            if job.is_none_or(|j| j.id != key.job) {
                job = self.jobs.get(&key.job);
            }
            let Some(j) = job else { continue };
            let Some(rt) = j.running.get(&key.index) else {
                continue;
            };
            if rt.after.is_some() {
                // Queued behind a holder: its time is in that holder's chain.
                continue;
            }
            out.extend(self.holder_hold(j, rt));
        }
        out
    }

    /// The slices node `id` holds for multi-node tasks running on other nodes.
    pub fn slice_holds(&self, id: NodeId) -> Vec<Hold> {
        let Some(n) = self.nodes.get(id as usize) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for key in n.slices.keys() {
            let Some(rt) = self.running_task(*key) else {
                continue;
            };
            let Some(slice) = rt.alloc.as_ref().and_then(|a| a.slices.iter().find(|s| s.node == id)) else {
                continue;
            };
            let limit = self.jobs.get(&key.job).map_or(0, |j| j.spec.time_limit_ms);
            if limit > 0 {
                out.push(Hold {
                    end: rt.start_ms.saturating_add(limit),
                    then: 0,
                    cpus: slice.cores.len() as u32,
                    mem: slice.mem_bytes,
                });
            }
        }
        out
    }

    /// What a holder holds until its chain ends by the limits.
    fn holder_hold(&self, job: &Job, rt: &RunningTask) -> Option<Hold> {
        let (end, then) = self.chain_limits(job, rt)?;
        Some(Hold {
            end,
            then,
            cpus: rt.cores.len() as u32,
            mem: rt.mem_bytes,
        })
    }

    /// A holder's end by its limit and the limits of the successors queued behind it;
    /// `None` when one of them has no limit (the chain never ends by the limits).
    fn chain_limits(&self, job: &Job, holder: &RunningTask) -> Option<(u64, u64)> {
        let limit = job.spec.time_limit_ms;
        if limit == 0 {
            return None;
        }
        let end = holder.start_ms.saturating_add(limit);
        let mut then = 0u64;
        let mut cur = holder.successor;
        let mut depth = 0;
        while let Some(s) = cur {
            depth += 1;
            if depth > crate::state::MAX_QUEUED_PER_SLOT + 1 {
                return None;
            }
            let next = self.jobs.get(&s.job)?;
            let limit = next.spec.time_limit_ms;
            if limit == 0 {
                return None;
            }
            then = then.saturating_add(limit);
            cur = next.running.get(&s.index)?.successor;
        }
        Some((end, then))
    }
}

#[cfg(test)]
mod tests {
    use super::Hold;

    #[test]
    fn a_hold_past_its_limit_ends_now_at_the_earliest() {
        let h = Hold {
            end: 100,
            then: 50,
            cpus: 1,
            mem: 0,
        };
        assert_eq!(h.at(10), 150, "on time: its end and its successors' limits");
        assert_eq!(h.at(120), 170, "overdue: from now");
        let last = Hold { then: 0, ..h };
        assert_eq!(last.at(120), 120);
        let huge = Hold {
            end: u64::MAX - 1,
            then: 10,
            ..h
        };
        assert_eq!(huge.at(0), u64::MAX, "saturates");
    }
}
