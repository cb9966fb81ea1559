//! Nodes with free cpus in one pass, most free first (ties: lowest id), as a whole and
//! per group of nodes in the same partitions (bits as in `state/tails.rs`). A job looks
//! only at the groups of its own partitions: walking every node with enough free cpus and
//! skipping those outside its partitions made each placement cost O(nodes) when a
//! partition was full and the others were not (`bench/sched-sim scale`, 10,000 nodes).
use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use crate::ids::NodeId;

type Entry = (Reverse<u32>, NodeId);

pub(super) struct FreeNodes<'a> {
    all: BTreeSet<Entry>,
    by_bits: BTreeMap<u64, BTreeSet<Entry>>,
    /// Each node's partition bits: the state's tail index's when it is settled.
    bits: Cow<'a, [u64]>,
}

impl<'a> FreeNodes<'a> {
    /// From (node, free cpus) of every node, and each node's partition bits.
    pub(super) fn new(free: impl Iterator<Item = (NodeId, u32)>, bits: Cow<'a, [u64]>) -> FreeNodes<'a> {
        let mut f = FreeNodes {
            all: BTreeSet::new(),
            by_bits: BTreeMap::new(),
            bits,
        };
        for (id, cpus) in free.filter(|(_, c)| *c > 0) {
            f.insert((Reverse(cpus), id));
        }
        f
    }

    fn bits_of(&self, id: NodeId) -> u64 {
        self.bits.get(id as usize).copied().unwrap_or(0)
    }

    fn insert(&mut self, e: Entry) {
        self.all.insert(e);
        self.by_bits.entry(self.bits_of(e.1)).or_default().insert(e);
    }

    /// Node `id` went from `before` free cpus to `now`.
    pub(super) fn update(&mut self, id: NodeId, before: u32, now: u32) {
        let old = (Reverse(before), id);
        self.all.remove(&old);
        let bits = self.bits_of(id);
        if let Some(set) = self.by_bits.get_mut(&bits) {
            set.remove(&old);
        }
        if now > 0 {
            self.insert((Reverse(now), id));
        }
    }

    /// Every node with free cpus, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.all.iter()
    }

    /// The first node in order with at least `cpus` free, in the partitions `parts`
    /// (bits; `None`: anywhere), for which `fits` holds.
    pub(super) fn first_fit(&self, cpus: u32, parts: Option<u64>, fits: impl Fn(NodeId) -> bool) -> Option<NodeId> {
        let first = |set: &BTreeSet<Entry>| {
            set.iter()
                .take_while(|(Reverse(f), _)| *f >= cpus)
                .find(|&&(_, id)| fits(id))
                .copied()
        };
        let Some(parts) = parts else {
            return first(&self.all).map(|(_, id)| id);
        };
        (self.by_bits.iter())
            .filter(|(bits, _)| *bits & parts != 0)
            .filter_map(|(_, set)| first(set))
            .min()
            .map(|(_, id)| id)
    }
}
