//! The running tasks a successor may queue behind ("tails": no successor yet, not being
//! killed, holding nothing a successor could not take over), by shape and then in the
//! order the planner picks predecessors: shortest chain first, then node and task.
//!
//! The planner used to rebuild this from every running task on every pass that queued a
//! task: 59–86% of the head's CPU once a 10,000-node cluster was full
//! (`bench/sched-sim scale`). It is now kept up as tasks change. It is derived data, not
//! replicated: never serialized, equal on every replica by construction, built once on
//! first use (so after a restart from a snapshot too). Every change to a running task's
//! set membership, `after`, `successor` or `kill_requested` calls [`State::touch_tail`]
//! with the task and its old neighbours; [`State::settle_tails`] then recomputes those
//! tasks and the ends of their chains (a chain's depth changes when a task before it
//! ends). Until settled the index is not read: [`State::tail_index`] says so and the
//! planner builds a fresh one, so a missed settle costs time, never a wrong placement.
//! The invariant `tail_index_is_exact` compares it with a fresh build.
//!
//! Tails are filed by shape and by the partitions their node is in (a bit per partition,
//! in the configuration's order): a job scans only tails in its own partitions. Scanning
//! every tail of a shape and skipping those outside the job's partitions was 20% of the
//! CPU at 1,000 nodes with three partitions. The partition bits of each node are part of
//! the index: a `Configure` rebuilds it, a node's registration refiles that node's tasks.
use rustc_hash::FxHashMap as HashMap;
use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{NodeId, TaskKey};
use crate::state::State;

/// (chain depth, node, task): the order predecessors are chosen in.
pub type Tail = (u32, NodeId, TaskKey);
/// (cpus, memory) a successor must ask for to take over a tail's resources.
pub type TailShape = (u32, u64);
/// A shape and the partition bits of the nodes (see [`partition_bits`]).
pub type TailGroup = (TailShape, u64);

/// Tails by shape and partitions, with where each one is filed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TailIndex {
    by_group: BTreeMap<TailGroup, BTreeSet<Tail>>,
    filed: HashMap<TaskKey, (TailGroup, Tail)>,
    /// Each node's partition bits, by node id.
    bits: Vec<u64>,
}

/// Bit `i` for the `i`-th partition (in the configuration's order) that holds `n`; only
/// the first 64 partitions have a bit (jobs of others scan every group).
pub fn partition_bits(s: &State, n: &crate::node::Node) -> u64 {
    (s.sched.partitions.values().enumerate().take(64))
        .filter(|(_, p)| p.contains(n))
        .fold(0, |bits, (i, _)| bits | (1 << i))
}

impl TailIndex {
    /// The groups of tails a task of `shape` could queue behind, each in pick order:
    /// those whose nodes share a partition with `parts` (every group when `None`).
    pub fn of(&self, shape: TailShape, parts: Option<u64>) -> impl Iterator<Item = (&TailGroup, &BTreeSet<Tail>)> {
        (self.by_group.range((shape, 0)..=(shape, u64::MAX)))
            .filter(move |((_, bits), _)| parts.is_none_or(|p| p & bits != 0))
    }

    /// Every node's partition bits, by node id.
    pub fn bits(&self) -> &[u64] {
        &self.bits
    }

    /// The partition bits of node `id`.
    pub fn bits_of(&self, id: NodeId) -> u64 {
        self.bits.get(id as usize).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.filed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filed.is_empty()
    }

    fn file(&mut self, shape: TailShape, tail: Tail) {
        let group = (shape, self.bits_of(tail.1));
        self.by_group.entry(group).or_default().insert(tail);
        self.filed.insert(tail.2, (group, tail));
    }

    fn unfile(&mut self, key: TaskKey) {
        let Some((group, tail)) = self.filed.remove(&key) else {
            return;
        };
        if let Some(set) = self.by_group.get_mut(&group) {
            set.remove(&tail);
            if set.is_empty() {
                self.by_group.remove(&group);
            }
        }
    }
}

/// The index and the tasks changed since it was last settled.
pub type Tails = super::derived::Derived<TailIndex, TaskKey>;

impl State {
    /// Notes that `key` (a running task, or one that just stopped running) changed in a
    /// way that may make it, or the end of its chain, a tail or not one.
    pub(crate) fn touch_tail(&mut self, key: TaskKey) {
        self.tails.touch(key);
        // The same changes move when its chain ends (`state/releases.rs`).
        self.touch_release(key);
    }

    /// `touch_tail` for every task in these `KillRequested` events.
    pub(crate) fn touch_killed(&mut self, kills: &[crate::events::Event]) {
        for e in kills {
            if let crate::events::Event::KillRequested { key, .. } = e {
                self.touch_tail(*key);
            }
        }
    }

    /// A node registered (new, or with new labels): its partition bits are computed
    /// again and its tasks refiled.
    pub(crate) fn tails_node_changed(&mut self, id: NodeId) {
        // Not built yet (a cluster starting up): the build computes every node's bits.
        if self.tails.index.is_none() {
            return;
        }
        let Some(n) = self.nodes.get(id as usize) else { return };
        let bits = partition_bits(self, n);
        let keys: Vec<TaskKey> = n.running.keys().copied().collect();
        let Some(index) = self.tails.index.as_mut() else { return };
        if index.bits.len() <= id as usize {
            index.bits.resize(id as usize + 1, 0);
        }
        index.bits[id as usize] = bits;
        for key in keys {
            self.touch_tail(key);
        }
    }

    /// The partitions changed: the index is built again on next use.
    pub(crate) fn tails_reset(&mut self) {
        self.tails = Tails::default();
    }

    /// Brings the index up to date (builds it on first use).
    pub(crate) fn settle_tails(&mut self) {
        let Some((mut index, dirty)) = self.tails.take() else {
            self.tails.index = Some(self.fresh_tails());
            return;
        };
        for key in dirty {
            self.refile(&mut index, key);
            let end = self.chain_end(key);
            if end != key {
                self.refile(&mut index, end);
            }
        }
        self.tails.index = Some(index);
    }

    /// The index, if it is up to date; `None` tells the caller to build one
    /// ([`State::fresh_tails`]).
    pub fn tail_index(&self) -> Option<&TailIndex> {
        self.tails.settled()
    }

    /// The index built from every running task.
    pub fn fresh_tails(&self) -> TailIndex {
        let mut index = TailIndex {
            bits: self.nodes.iter().map(|n| partition_bits(self, n)).collect(),
            ..TailIndex::default()
        };
        for n in &self.nodes {
            for key in n.running.keys() {
                if let Some((shape, tail)) = self.as_tail(*key) {
                    index.file(shape, tail);
                }
            }
        }
        index
    }

    fn refile(&self, index: &mut TailIndex, key: TaskKey) {
        let now = self.as_tail(key);
        // Most touched tasks are filed where they already are (a report that only moves
        // a chain's end touches every task of it): leave those alone. Taking each out of
        // its set and putting it back was half of the upkeep's CPU at 10,000 nodes.
        if let (Some((shape, tail)), Some(filed)) = (now, index.filed.get(&key)) {
            if *filed == ((shape, index.bits_of(tail.1)), tail) {
                return;
            }
        }
        index.unfile(key);
        if let Some((shape, tail)) = now {
            index.file(shape, tail);
        }
    }

    /// Where `key` belongs in the index, if it is a tail.
    fn as_tail(&self, key: TaskKey) -> Option<(TailShape, Tail)> {
        // One lookup in the (large) job map serves the task, its job's counted resources
        // and the start of the depth walk: this runs for every task touched by an entry,
        // and its lookups were a quarter of the tail upkeep's CPU at 10,000 nodes.
        let job = self.jobs.get(&key.job)?;
        let rt = job.running.get(&key.index)?;
        if rt.successor.is_some() || rt.kill_requested || job.holds_counted_resources() {
            return None;
        }
        let shape = (rt.cores.len() as u32, rt.mem_bytes);
        Some((shape, (self.depth_behind(rt.after), rt.node, key)))
    }

    /// The last task of the chain `key` is in (itself when it has no successor).
    fn chain_end(&self, key: TaskKey) -> TaskKey {
        self.chain_walk(key, |r| r.successor)
    }

    /// The first task of the chain `key` is in (itself when nothing is ahead of it).
    pub(crate) fn chain_holder(&self, key: TaskKey) -> TaskKey {
        self.chain_walk(key, |r| r.after)
    }

    /// Follows `step` from `key` along its chain to the last task it reaches.
    fn chain_walk(&self, key: TaskKey, step: impl Fn(&crate::job::RunningTask) -> Option<TaskKey>) -> TaskKey {
        let mut cur = key;
        // Chains are at most MAX_QUEUED_PER_SLOT deep; the bound guards a corrupt cycle.
        for _ in 0..=crate::state::MAX_QUEUED_PER_SLOT + 1 {
            match self.running_task(cur).and_then(&step) {
                Some(next) => cur = next,
                None => break,
            }
        }
        cur
    }
}

#[cfg(test)]
mod tests {
    use crate::command::{Command, NodeRegistration, TaskOutcome};
    use crate::ids::TaskKey;
    use crate::invariants::tail_index_is_exact;
    use crate::state::State;
    use crate::testkit::{configure, one_node, report, spec, submit};

    /// The index is settled after every entry (so the check below is not vacuous) and
    /// equals a fresh build.
    fn exact(s: &State) -> usize {
        let index = s.tail_index().expect("settled after apply");
        assert_eq!(tail_index_is_exact(s), Ok(()));
        index.len()
    }

    fn array(tasks: u32) -> crate::job::JobSpec {
        crate::job::JobSpec {
            requeue: true,
            array: Some(crate::parse::parse_array(&format!("0-{}", tasks - 1)).unwrap()),
            ..spec()
        }
    }

    #[test]
    fn the_index_follows_placements_kills_and_ends() {
        let mut s = one_node(2);
        let job = submit(&mut s, array(8));
        let running = s.jobs[&job].running.len();
        assert!(running > 2, "tasks are queued behind the two holders: {running}");
        assert_eq!(exact(&s), 2, "one tail per slot: the end of each chain");
        // Cancel a queued task in the middle of a chain: the chain closes up.
        let queued = *s.jobs[&job].running.iter().find(|(_, r)| r.after.is_some()).unwrap().0;
        let key = TaskKey { job, index: queued };
        s.apply(Command::CancelTasks {
            tasks: vec![key],
            now_ms: 2_000,
        });
        exact(&s);
        // End each holder in turn: successors take over, chains get shorter.
        for _ in 0..6 {
            let Some((&index, rt)) = s.jobs[&job].running.iter().find(|(_, r)| r.after.is_none()) else {
                break;
            };
            let r = report(TaskKey { job, index }, rt.attempt, TaskOutcome::Exited, 0, 1_000, 3_000);
            s.apply(Command::Reports {
                node: "n1".into(),
                reports: vec![r],
                now_ms: 3_000,
            });
            exact(&s);
        }
        s.apply(Command::Cancel {
            jobs: vec![job],
            now_ms: 4_000,
        });
        assert_eq!(exact(&s), 0, "tasks being killed take no successor");
    }

    #[test]
    fn a_node_registering_with_new_labels_is_filed_again() {
        let reg = |labels: &[(&str, &str)]| Command::RegisterNode {
            reg: NodeRegistration {
                name: "n1".into(),
                uid: "u1".into(),
                cpus: 2,
                mem_bytes: 1 << 30,
                labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..NodeRegistration::default()
            },
            now_ms: 1_000,
        };
        let mut s = State::new();
        s.apply(reg(&[("gpu", "yes")]));
        configure(
            &mut s,
            &[("partition.g", "nodes=gpu;default=yes"), ("partition.c", "nodes=!gpu")],
        );
        let job = submit(&mut s, array(4));
        assert_eq!(exact(&s), 2);
        let filed = |s: &State| s.tail_index().unwrap().bits_of(0);
        let before = filed(&s);
        // The same machine comes back without the label: its tasks keep running, now in
        // the other partition.
        s.apply(reg(&[]));
        assert!(!s.jobs[&job].running.is_empty());
        assert_ne!(filed(&s), before);
        assert_eq!(exact(&s), 2);
        configure(&mut s, &[("partition.c", "")]);
        exact(&s);
    }
}
