//! Nodes with free cpus in one pass, most free first (ties: lowest id), as a whole and
//! per group of nodes in the same partitions (bits as in `state/tails.rs`). A job looks
//! only at the groups of its own partitions: walking every node with enough free cpus and
//! skipping those outside its partitions made each placement cost O(nodes) when a
//! partition was full and the others were not (`bench/sched-sim scale`, 10,000 nodes).
//!
//! The nodes as the state holds them come from its kept-up index
//! (`state/free_index.rs`); what this pass placed is an overlay on it: the nodes it
//! changed (`moved`, skipped in the index) filed again in sets of their own, and every
//! walk merges the two. A pass costs what it places, not the size of the cluster.
use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::iter::Peekable;

use rustc_hash::FxHashMap as HashMap;

use crate::ids::NodeId;
use crate::state::free_index::{FreeEntry, FreeIndex};

pub(super) struct FreeNodes<'a> {
    base: Cow<'a, FreeIndex>,
    /// Free cpus now of the nodes this pass changed.
    moved: HashMap<NodeId, u32>,
    all: BTreeSet<FreeEntry>,
    by_bits: BTreeMap<u64, BTreeSet<FreeEntry>>,
    /// Per group of the index (`None`: all of it), where its first node not moved is:
    /// a pass takes the roomiest nodes first, so the moved ones gather at the front, and
    /// skipping them again on every pick made a pass of 1,000 placements cost O(n²).
    /// Moved nodes never return to the index's side, so the cursor only advances.
    cursors: RefCell<HashMap<Option<u64>, FreeEntry>>,
}

impl<'a> FreeNodes<'a> {
    /// Over the state's nodes as `base` files them.
    pub(super) fn new(base: Cow<'a, FreeIndex>) -> FreeNodes<'a> {
        FreeNodes {
            base,
            moved: HashMap::default(),
            all: BTreeSet::new(),
            by_bits: BTreeMap::new(),
            cursors: RefCell::new(HashMap::default()),
        }
    }

    /// Node `id` went from `before` free cpus to `now`.
    pub(super) fn update(&mut self, id: NodeId, before: u32, now: u32) {
        let bits = self.base.bits_of(id);
        if self.moved.insert(id, now).is_some() {
            let old = (Reverse(before), id);
            self.all.remove(&old);
            if let Some(set) = self.by_bits.get_mut(&bits) {
                set.remove(&old);
            }
        }
        if now > 0 {
            let e = (Reverse(now), id);
            self.all.insert(e);
            self.by_bits.entry(bits).or_default().insert(e);
        }
    }

    /// The index's entries of `group` (less the moved nodes) and this pass's, in order.
    fn merged<'s>(
        &'s self,
        group: Option<u64>,
        base: &'s BTreeSet<FreeEntry>,
        mine: Option<&'s BTreeSet<FreeEntry>>,
    ) -> impl Iterator<Item = FreeEntry> + 's {
        let from = self.cursors.borrow().get(&group).copied();
        let mut rest = match from {
            Some(e) => base.range(e..),
            None => base.range(..),
        };
        let first = rest.find(|e| !self.moved.contains_key(&e.1)).copied();
        // All moved: past the last entry (no node is filed with 0 free cpus).
        let e = first.unwrap_or((Reverse(0), NodeId::MAX));
        self.cursors.borrow_mut().insert(group, e);
        let base = base.range(e..);
        let base = base.filter(|e| !self.moved.contains_key(&e.1)).copied();
        let mine = mine.into_iter().flatten().copied();
        Merge {
            a: base.peekable(),
            b: mine.peekable(),
        }
    }

    /// Every node with free cpus, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = FreeEntry> + '_ {
        self.merged(None, self.base.all(), Some(&self.all))
    }

    /// The first node in order with at least `cpus` free, in the partitions `parts`
    /// (bits; `None`: anywhere), for which `fits` holds.
    pub(super) fn first_fit(&self, cpus: u32, parts: Option<u64>, fits: impl Fn(NodeId) -> bool) -> Option<NodeId> {
        let Some(parts) = parts else {
            return first_in(self.iter(), cpus, &fits).map(|(_, id)| id);
        };
        // A moved node keeps its bits, but its group may be missing from the index (it
        // had no free cpu there): both sides' groups.
        let mut groups: Vec<u64> = (self.base.groups().map(|(bits, _)| bits))
            .chain(self.by_bits.keys().copied())
            .filter(|bits| bits & parts != 0)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        let empty = BTreeSet::new();
        (groups.into_iter())
            .filter_map(|bits| {
                let base = self.base.group(bits).unwrap_or(&empty);
                first_in(self.merged(Some(bits), base, self.by_bits.get(&bits)), cpus, &fits)
            })
            .min()
            .map(|(_, id)| id)
    }
}

/// The first entry with at least `cpus` free for which `fits` holds; none further down
/// has enough cpus once one has too few.
fn first_in(it: impl Iterator<Item = FreeEntry>, cpus: u32, fits: &impl Fn(NodeId) -> bool) -> Option<FreeEntry> {
    it.take_while(|(Reverse(f), _)| *f >= cpus).find(|&(_, id)| fits(id))
}

/// Two ordered iterators as one.
struct Merge<A: Iterator<Item = FreeEntry>, B: Iterator<Item = FreeEntry>> {
    a: Peekable<A>,
    b: Peekable<B>,
}

impl<A: Iterator<Item = FreeEntry>, B: Iterator<Item = FreeEntry>> Iterator for Merge<A, B> {
    type Item = FreeEntry;

    fn next(&mut self) -> Option<FreeEntry> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if y < x => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes 0..=3: 8, 6, 6, 2 free cpus; 0 and 1 in partition bit 1, 2 and 3 in bit 2.
    fn base() -> FreeIndex {
        let mut f = FreeIndex::default();
        for (id, cpus, bits) in [(0, 8, 1), (1, 6, 1), (2, 6, 2), (3, 2, 2)] {
            f.refile(id, cpus, bits);
        }
        f
    }

    fn order(f: &FreeNodes) -> Vec<(u32, NodeId)> {
        f.iter().map(|(Reverse(c), id)| (c, id)).collect()
    }

    #[test]
    fn a_pass_sees_its_own_placements_over_the_index() {
        let base = base();
        let mut f = FreeNodes::new(Cow::Borrowed(&base));
        assert_eq!(order(&f), vec![(8, 0), (6, 1), (6, 2), (2, 3)]);
        f.update(0, 8, 5);
        assert_eq!(
            order(&f),
            vec![(6, 1), (6, 2), (5, 0), (2, 3)],
            "moved, not listed twice"
        );
        f.update(0, 5, 0);
        f.update(1, 6, 1);
        assert_eq!(order(&f), vec![(6, 2), (2, 3), (1, 1)], "a full node leaves the order");
        assert_eq!(base.free_of(0), 8, "the state's index is untouched");
    }

    #[test]
    fn first_fit_takes_the_roomiest_node_of_the_jobs_partitions_that_fits() {
        let base = base();
        let mut f = FreeNodes::new(Cow::Borrowed(&base));
        assert_eq!(f.first_fit(4, None, |_| true), Some(0));
        assert_eq!(f.first_fit(4, Some(2), |_| true), Some(2), "only partition bit 2");
        assert_eq!(f.first_fit(4, Some(1), |id| id != 0), Some(1), "the next that fits");
        assert_eq!(f.first_fit(7, Some(2), |_| true), None, "none has room enough");
        // Placements move nodes; a pass of many keeps finding the next roomiest.
        for _ in 0..2 {
            let id = f.first_fit(1, Some(1 | 2), |_| true).unwrap_or(NodeId::MAX);
            let before = order(&f).iter().find(|e| e.1 == id).map_or(0, |e| e.0);
            f.update(id, before, before - 1);
        }
        assert_eq!(order(&f), vec![(6, 0), (6, 1), (6, 2), (2, 3)], "ties: lowest id");
        assert_eq!(f.first_fit(6, Some(1), |_| true), Some(0));
        assert_eq!(f.first_fit(6, Some(2), |_| true), Some(2));
        // A node emptied and refilled in the pass comes back in its group.
        f.update(3, 2, 0);
        assert_eq!(f.first_fit(2, Some(2), |id| id == 3), None);
        f.update(3, 0, 4);
        assert_eq!(f.first_fit(2, Some(2), |id| id == 3), Some(3));
    }
}
