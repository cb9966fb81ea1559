//! The tasks a successor may queue behind, as one pass sees them: the state's index
//! (`state/tails.rs`) with this pass's changes over it, so a pass neither copies nor
//! rebuilds an index of every running task.
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Excluded, Unbounded};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::ids::TaskKey;
use crate::state::tails::{Tail, TailGroup, TailIndex, TailShape};

pub(super) struct PassTails<'a> {
    base: Cow<'a, TailIndex>,
    /// Tails of `base` this pass queued a task behind.
    gone: HashSet<TaskKey>,
    /// Tails this pass made: tasks it placed, and tasks it queued (a step deeper).
    added: BTreeMap<TailGroup, BTreeSet<Tail>>,
    /// The same, in the order they were made (see `first_since`).
    log: Vec<(TailGroup, Tail)>,
    /// Per group of `base`: the last tail of its leading run of tails out of this pass
    /// (taken, or on a node or of a task no request may use any more). Scans start after
    /// it: a request that found its tail behind such a run walked it again every time
    /// (63% of the CPU at 10,000 nodes, `bench/sched-sim scale`).
    skip: RefCell<HashMap<TailGroup, Tail>>,
}

impl<'a> PassTails<'a> {
    pub(super) fn new(base: Cow<'a, TailIndex>) -> PassTails<'a> {
        PassTails {
            base,
            gone: HashSet::default(),
            added: BTreeMap::new(),
            log: Vec::new(),
            skip: RefCell::new(HashMap::default()),
        }
    }

    /// How many tails this pass made so far.
    pub(super) fn made(&self) -> usize {
        self.log.len()
    }

    /// Like `first`, among the tails made since `made()` was `since` and still free;
    /// with how many of them qualify. A request that found no tail before needs to look
    /// only at these: a tail that failed it once fails it for the rest of the pass (a
    /// pass only ever reserves, keeps and takes more).
    pub(super) fn first_since(
        &self,
        since: usize,
        shape: TailShape,
        parts: Option<u64>,
        depth_cap: u32,
        out: impl Fn(&Tail) -> bool,
        ok: impl Fn(&Tail) -> bool,
    ) -> (Option<Tail>, usize) {
        let fresh = (self.log.get(since..).into_iter().flatten())
            .filter(|((s, bits), t)| *s == shape && parts.is_none_or(|p| p & bits != 0) && t.0 < depth_cap)
            .filter(|(group, t)| self.added.get(group).is_some_and(|set| set.contains(t)))
            .map(|(_, t)| *t)
            .filter(|t| !out(t) && ok(t));
        fresh.fold((None, 0), |(best, n), t| {
            (Some(best.map_or(t, |b: Tail| b.min(t))), n + 1)
        })
    }

    /// The first tail of `shape` in pick order, on a node of the partitions `parts`
    /// (bits; `None`: any), shallower than `depth_cap`, that is not `out` (out of this
    /// pass for every request: it stays so) and for which `ok` holds.
    pub(super) fn first(
        &self,
        shape: TailShape,
        parts: Option<u64>,
        depth_cap: u32,
        out: impl Fn(&Tail) -> bool,
        ok: impl Fn(&Tail) -> bool,
    ) -> Option<Tail> {
        let below = |t: &&Tail| t.0 < depth_cap;
        let mut skip = self.skip.borrow_mut();
        let mut old: Option<Tail> = None;
        for (group, set) in self.base.of(shape, parts) {
            let from = match skip.get(group) {
                Some(t) => set.range((Excluded(*t), Unbounded)),
                None => set.range(..),
            };
            let mut leading = true;
            for t in from.take_while(below) {
                if self.gone.contains(&t.2) || out(t) {
                    if leading {
                        skip.insert(*group, *t);
                    }
                    continue;
                }
                leading = false;
                if ok(t) {
                    old = Some(old.map_or(*t, |o| o.min(*t)));
                    break;
                }
            }
        }
        let new = (self.added.range((shape, 0)..=(shape, u64::MAX)))
            .filter(|((_, bits), _)| parts.is_none_or(|p| p & bits != 0))
            .filter_map(|(_, set)| set.iter().take_while(below).find(|t| !out(t) && ok(t)));
        old.into_iter().chain(new.copied()).min()
    }

    /// A new tail of `shape`.
    pub(super) fn add(&mut self, shape: TailShape, tail: Tail) {
        let group = (shape, self.base.bits_of(tail.1));
        self.added.entry(group).or_default().insert(tail);
        self.log.push((group, tail));
    }

    /// `tail` has a successor now.
    pub(super) fn take(&mut self, shape: TailShape, tail: Tail) {
        let group = (shape, self.base.bits_of(tail.1));
        let was_added = self.added.get_mut(&group).is_some_and(|s| s.remove(&tail));
        if !was_added {
            self.gone.insert(tail.2);
        }
    }
}
