//! The tasks a successor may queue behind, as one pass sees them: the state's index
//! (`state/tails.rs`) with this pass's changes over it, so a pass neither copies nor
//! rebuilds an index of every running task.
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashSet as HashSet;

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
}

impl<'a> PassTails<'a> {
    pub(super) fn new(base: Cow<'a, TailIndex>) -> PassTails<'a> {
        PassTails {
            base,
            gone: HashSet::default(),
            added: BTreeMap::new(),
            log: Vec::new(),
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
        ok: impl Fn(&Tail) -> bool,
    ) -> (Option<Tail>, usize) {
        let fresh = (self.log.get(since..).into_iter().flatten())
            .filter(|((s, bits), t)| *s == shape && parts.is_none_or(|p| p & bits != 0) && t.0 < depth_cap)
            .filter(|(group, t)| self.added.get(group).is_some_and(|set| set.contains(t)))
            .map(|(_, t)| *t)
            .filter(|t| ok(t));
        fresh.fold((None, 0), |(best, n), t| {
            (Some(best.map_or(t, |b: Tail| b.min(t))), n + 1)
        })
    }

    /// The first tail of `shape` in pick order, on a node of the partitions `parts`
    /// (bits; `None`: any), shallower than `depth_cap`, for which `ok` holds.
    pub(super) fn first(
        &self,
        shape: TailShape,
        parts: Option<u64>,
        depth_cap: u32,
        ok: impl Fn(&Tail) -> bool,
    ) -> Option<Tail> {
        let below = |t: &&Tail| t.0 < depth_cap;
        let old = self.base.of(shape, parts).filter_map(|set| {
            set.iter()
                .take_while(below)
                .filter(|t| !self.gone.contains(&t.2))
                .find(|t| ok(t))
        });
        let new = (self.added.range((shape, 0)..=(shape, u64::MAX)))
            .filter(|((_, bits), _)| parts.is_none_or(|p| p & bits != 0))
            .filter_map(|(_, set)| set.iter().take_while(below).find(|t| ok(t)));
        old.chain(new).min().copied()
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
