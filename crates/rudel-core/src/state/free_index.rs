//! Nodes with free cpus, most free first (ties: lowest id), as a whole and per group of
//! nodes in the same partitions (bits as in `state/tails.rs`): where the planner looks
//! for a node.
//!
//! The planner used to build this from every node at the start of each pass that placed
//! more than one task, and to scan every node for the first: at 10,000 nodes 20% of the
//! head's CPU, and the 3–4 ms floor under every entry that ran a pass
//! (`bench/sched-sim scale`). It is now kept up as nodes change, like the tail index:
//! derived data, never serialized, equal on every replica by construction, built on first
//! use. Every change to a node's allocation or registration calls [`State::touch_free`];
//! [`State::settle_free`] refiles those nodes. Until settled the index is not read
//! ([`State::free_index`] says so and the planner builds a fresh one), so a missed touch
//! costs time, never a wrong placement; the invariant `free_index_is_exact` compares it
//! with a fresh build.
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::ids::NodeId;
use crate::state::tails::partition_bits;
use crate::state::State;

/// (free cpus, highest first; node id).
pub type FreeEntry = (Reverse<u32>, NodeId);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FreeIndex {
    all: BTreeSet<FreeEntry>,
    by_bits: BTreeMap<u64, BTreeSet<FreeEntry>>,
    /// What each node is filed under: (free cpus, partition bits), by node id.
    filed: Vec<(u32, u64)>,
}

impl FreeIndex {
    /// Every node with free cpus, in order.
    pub fn all(&self) -> &BTreeSet<FreeEntry> {
        &self.all
    }

    /// The groups of nodes sharing partition bits, each in order.
    pub fn groups(&self) -> impl Iterator<Item = (u64, &BTreeSet<FreeEntry>)> {
        self.by_bits.iter().map(|(b, set)| (*b, set))
    }

    /// The nodes in partitions `bits`, in order.
    pub fn group(&self, bits: u64) -> Option<&BTreeSet<FreeEntry>> {
        self.by_bits.get(&bits)
    }

    /// The free cpus node `id` is filed under.
    pub fn free_of(&self, id: NodeId) -> u32 {
        self.filed.get(id as usize).map_or(0, |f| f.0)
    }

    /// The partition bits of node `id`.
    pub fn bits_of(&self, id: NodeId) -> u64 {
        self.filed.get(id as usize).map_or(0, |f| f.1)
    }

    /// Node `id` now has `cpus` free and is in the partitions `bits`.
    pub(crate) fn refile(&mut self, id: NodeId, cpus: u32, bits: u64) {
        let i = id as usize;
        if self.filed.len() <= i {
            self.filed.resize(i + 1, (0, 0));
        }
        let (old_cpus, old_bits) = self.filed[i];
        if old_cpus > 0 {
            let old = (Reverse(old_cpus), id);
            self.all.remove(&old);
            if let Some(set) = self.by_bits.get_mut(&old_bits) {
                set.remove(&old);
                if set.is_empty() {
                    self.by_bits.remove(&old_bits);
                }
            }
        }
        self.filed[i] = (cpus, bits);
        if cpus > 0 {
            let e = (Reverse(cpus), id);
            self.all.insert(e);
            self.by_bits.entry(bits).or_default().insert(e);
        }
    }
}

/// The index and the nodes changed since it was last settled.
pub type FreeCache = super::derived::Derived<FreeIndex, NodeId>;

impl State {
    /// Notes that node `id`'s allocation, size or labels changed.
    pub(crate) fn touch_free(&mut self, id: NodeId) {
        self.free_nodes.touch(id);
    }

    /// The partitions changed: the index is built again on next use.
    pub(crate) fn free_reset(&mut self) {
        self.free_nodes = FreeCache::default();
    }

    /// Brings the index up to date (builds it on first use).
    pub(crate) fn settle_free(&mut self) {
        let Some((mut index, dirty)) = self.free_nodes.take() else {
            self.free_nodes.index = Some(self.fresh_free());
            return;
        };
        for id in dirty {
            if let Some(n) = self.nodes.get(id as usize) {
                index.refile(id, n.cpus_free(), partition_bits(self, n));
            }
        }
        self.free_nodes.index = Some(index);
    }

    /// The index, if it is up to date; `None` tells the caller to build one
    /// ([`State::fresh_free`]).
    pub fn free_index(&self) -> Option<&FreeIndex> {
        self.free_nodes
            .index
            .as_ref()
            .filter(|_| self.free_nodes.dirty.is_empty())
    }

    /// The index built from every node.
    pub fn fresh_free(&self) -> FreeIndex {
        let mut index = FreeIndex::default();
        for (i, n) in self.nodes.iter().enumerate() {
            index.refile(i as NodeId, n.cpus_free(), partition_bits(self, n));
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refiling_moves_a_node_between_places_and_groups() {
        let mut f = FreeIndex::default();
        f.refile(0, 4, 1);
        f.refile(1, 8, 2);
        f.refile(2, 4, 1);
        let order: Vec<NodeId> = f.all().iter().map(|e| e.1).collect();
        assert_eq!(order, vec![1, 0, 2], "most free first, then lowest id");
        f.refile(1, 0, 2);
        assert_eq!(f.groups().count(), 1, "an emptied group goes");
        f.refile(0, 2, 2);
        let groups: Vec<(u64, Vec<NodeId>)> = f.groups().map(|(b, s)| (b, s.iter().map(|e| e.1).collect())).collect();
        assert_eq!(groups, vec![(1, vec![2]), (2, vec![0])]);
        assert_eq!(f.bits_of(0), 2);
        let mut fresh = FreeIndex::default();
        fresh.refile(0, 2, 2);
        fresh.refile(1, 0, 2);
        fresh.refile(2, 4, 1);
        assert_eq!(f, fresh, "the same nodes filed the same way, whatever the history");
    }
}
