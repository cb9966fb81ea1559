//! Conservative backfill (`backfill=conservative`, scheduling version 6): after the first
//! blocked job's reservation (`backfill.rs`), every further blocked job the pass looks at
//! (up to `backfill.reservations`) gets one too, made around those before it. A job may
//! then start out of order only if it fits in what every reservation it would run past
//! leaves spare, so it delays none of them, not just the first (EASY's guarantee).
//!
//! A later reservation cannot use the first one's shortcut (free capacity only grows until
//! the expected start): a reservation made before takes capacity at its start and gives
//! it back at its end. So each node's free cpus and memory are a [`Profile`] over log
//! time, and the job's start is the first time its request fits for its whole time limit.
//! Licenses are profiles too (`backfill_counted.rs`). Cost: one profile per node the job
//! could use (its running tasks and the reservations on it), then a walk over the
//! profiles' steps; a multi-node job tries at most `MAX_GANG_TRIES` start times. A job
//! without a time limit, or whose start cannot be known, gets no later reservation (it
//! waits in order; only the first reservation keeps nodes whole for an unknown start).
use rustc_hash::FxHashMap as HashMap;
use std::collections::{BTreeMap, BTreeSet};

use super::backfill::{Reservation, Window};
use super::{Planner, Shape};
use crate::alloc::AllocSpec;
use crate::ids::NodeId;
use crate::job::Job;

/// An expected start: log time, and what the job needs of each node then.
type Start = (u64, HashMap<NodeId, (u32, u64)>);

/// Most start times one later reservation of a multi-node job tries.
const MAX_GANG_TRIES: usize = 256;

/// Rounds of moving the start to when both the nodes and the licenses fit.
const MAX_JOINT_ROUNDS: usize = 16;

/// A node's free cpus and memory in this pass and when its tasks release theirs.
pub(super) struct NodeBase {
    free: [i128; 2],
    steps: Vec<(u64, [i128; 2])>,
    /// Something is queued behind a task there: it is taken as never freeing.
    never: bool,
}

/// A resource's free amount over log time: `base` now, changed by `steps` (log time,
/// change), two dimensions (cpus and memory, or a license count and 0).
pub(super) struct Profile {
    base: [i128; 2],
    steps: Vec<(u64, [i128; 2])>,
}

impl Profile {
    pub fn new(base: [i128; 2], mut steps: Vec<(u64, [i128; 2])>) -> Profile {
        steps.sort_unstable();
        Profile { base, steps }
    }

    /// Free at log time `t` (steps at `t` included).
    pub fn level_at(&self, t: u64) -> [i128; 2] {
        let mut level = self.base;
        for (_, d) in self.steps.iter().take_while(|(at, _)| *at <= t) {
            level = add(level, *d);
        }
        level
    }

    /// The least free over `[from, to)` (`to` `None`: for ever), per dimension.
    pub fn min_over(&self, from: u64, to: Option<u64>) -> [i128; 2] {
        let mut level = self.level_at(from);
        let mut min = level;
        for (at, d) in &self.steps {
            if *at <= from {
                continue;
            }
            if to.is_some_and(|e| *at >= e) {
                break;
            }
            level = add(level, *d);
            min = [min[0].min(level[0]), min[1].min(level[1])];
        }
        min
    }

    /// The earliest log time from `from` at which `need` is free for `dur` (`None`: for
    /// ever); `None` when never.
    pub fn earliest(&self, need: [i128; 2], from: u64, dur: Option<u64>) -> Option<u64> {
        let later = self.steps.iter().map(|(at, _)| *at).filter(|at| *at > from);
        let mut last = None;
        for t in std::iter::once(from).chain(later) {
            if last == Some(t) {
                continue;
            }
            last = Some(t);
            if covers(self.min_over(t, dur.map(|d| t.saturating_add(d))), need) {
                return Some(t);
            }
        }
        None
    }
}

fn add(a: [i128; 2], b: [i128; 2]) -> [i128; 2] {
    [a[0] + b[0], a[1] + b[1]]
}

fn covers(level: [i128; 2], need: [i128; 2]) -> bool {
    level[0] >= need[0] && level[1] >= need[1]
}

fn amount((cpus, mem): (u32, u64)) -> [i128; 2] {
    [i128::from(cpus), i128::from(mem)]
}

/// A non-negative level as (cpus, memory).
fn to_cap(level: [i128; 2]) -> (u32, u64) {
    (
        u32::try_from(level[0].max(0)).unwrap_or(u32::MAX),
        u64::try_from(level[1].max(0)).unwrap_or(u64::MAX),
    )
}

impl Planner<'_> {
    pub(super) fn conservative(&self) -> bool {
        self.counts_reserved() && self.state.sched.backfill.mode == super::backfill::BackfillMode::Conservative
    }

    /// A further blocked job under conservative backfill: a reservation around those made
    /// so far, kept from the last pass while it is younger than `backfill.interval_s`
    /// and still fits, else computed afresh.
    pub(super) fn reserve_later(&mut self, job: &Job, shape: &Shape, alloc: Option<&AllocSpec>, could_use: &[bool]) {
        let cfg = &self.state.sched.backfill;
        if self.plan.later.len() >= cfg.reservations as usize || job.spec.time_limit_ms == 0 {
            return;
        }
        let dur = Some(job.spec.time_limit_ms);
        let kept = self.kept_later(job, dur);
        let found = kept.or_else(|| self.later_start(job, shape, alloc, could_use, dur));
        let Some((start, need)) = found else { return };
        let mut need: Vec<(NodeId, (u32, u64))> = need.into_iter().collect();
        need.sort_unstable();
        self.add_later(job, shape, start, dur, need);
    }

    /// The last pass's later reservation of `job`, if young enough and it still fits.
    fn kept_later(&mut self, job: &Job, dur: Option<u64>) -> Option<Start> {
        let r = self.state.later_reservations.iter().find(|r| r.job == job.id)?;
        let now = self.state.now_ms;
        let interval = self.state.sched.backfill.interval_s.saturating_mul(1_000);
        let start = r
            .start_ms
            .filter(|s| *s > now && now < r.computed_ms.saturating_add(interval))?;
        if r.need.len() != r.nodes.len() {
            return None;
        }
        let mut mask = vec![false; self.state.nodes.len()];
        for id in &r.nodes {
            *mask.get_mut(*id as usize)? = true;
        }
        let profiles = self.node_profiles(&mask);
        let end = dur.map(|d| start.saturating_add(d));
        let fits = r.nodes.iter().zip(&r.need).all(|(id, need)| {
            profiles
                .get(id)
                .is_some_and(|p| covers(p.min_over(start, end), amount(*need)))
        });
        let licensed = self.license_ready(job, start, dur) == Some(start);
        (fits && licensed).then(|| (start, r.nodes.iter().copied().zip(r.need.iter().copied()).collect()))
    }

    /// The earliest start at which the job fits on its nodes and has its licenses for its
    /// whole limit, around the reservations made so far.
    fn later_start(
        &mut self,
        job: &Job,
        shape: &Shape,
        alloc: Option<&AllocSpec>,
        could_use: &[bool],
        dur: Option<u64>,
    ) -> Option<Start> {
        // Nodes kept whole for the first reservation (its start unknown) are not offered.
        let usable: Vec<bool> = (could_use.iter().zip(&self.reserved)).map(|(c, r)| *c && !*r).collect();
        let ready = self.readiness(job, &usable)?;
        let profiles = self.node_profiles(&usable);
        let mut from = self.state.now_ms.max(ready.not_before);
        for _ in 0..MAX_JOINT_ROUNDS {
            from = self.license_ready(job, from, dur)?;
            let (start, need) = match alloc {
                None => self.later_single(shape, &profiles, &ready, from, dur)?,
                Some(a) => self.later_gang(job, a, shape, &profiles, from, dur)?,
            };
            if self.license_ready(job, start, dur) == Some(start) {
                return Some((start, need));
            }
            from = start.saturating_add(1);
        }
        None
    }

    /// The node where one task fits earliest (ties: lowest id).
    fn later_single(
        &self,
        shape: &Shape,
        profiles: &BTreeMap<NodeId, Profile>,
        ready: &super::backfill_counted::Ready,
        from: u64,
        dur: Option<u64>,
    ) -> Option<Start> {
        let need = (shape.cpus, shape.mem);
        let mut best: Option<(u64, NodeId)> = None;
        for (id, p) in profiles {
            let gres_from = match &ready.gres_nodes {
                None => from,
                Some(g) => match g.get(id) {
                    Some(t) => from.max(*t),
                    None => continue,
                },
            };
            if let Some(t) = p.earliest(amount(need), gres_from, dur) {
                if best.is_none_or(|(b, _)| t < b) {
                    best = Some((t, *id));
                }
            }
        }
        best.map(|(t, id)| (t, HashMap::from_iter([(id, need)])))
    }

    /// The first start time (of those where a profile changes) at which the job's slices
    /// fit for its whole limit.
    fn later_gang(
        &self,
        job: &Job,
        a: &AllocSpec,
        shape: &Shape,
        profiles: &BTreeMap<NodeId, Profile>,
        from: u64,
        dur: Option<u64>,
    ) -> Option<Start> {
        let mut times: BTreeSet<u64> = BTreeSet::from([from]);
        for p in profiles.values() {
            times.extend(p.steps.iter().map(|(at, _)| *at).filter(|at| *at > from));
        }
        for t in times.into_iter().take(MAX_GANG_TRIES) {
            let end = dur.map(|d| t.saturating_add(d));
            let cap: HashMap<NodeId, (u32, u64)> = profiles
                .iter()
                .map(|(id, p)| (*id, to_cap(p.min_over(t, end))))
                .collect();
            if let Some(need) = self.gang_fit(job, a, shape, &cap) {
                return Some((t, need));
            }
        }
        None
    }

    /// Each usable node's free cpus and memory over time: what is free now, back as
    /// tasks end by their limits, taken and given back by the reservations so far.
    fn node_profiles(&mut self, could_use: &[bool]) -> BTreeMap<NodeId, Profile> {
        if self.bases.is_none() {
            self.bases = Some(self.node_bases());
        }
        let mut steps: HashMap<NodeId, Vec<(u64, [i128; 2])>> = HashMap::default();
        for w in &self.windows {
            for (id, need) in &w.need {
                let s = steps.entry(*id).or_default();
                s.push((w.start, amount(*need).map(|v| -v)));
                if let Some(e) = w.end {
                    s.push((e, amount(*need)));
                }
            }
        }
        let Some(bases) = self.bases.as_ref() else {
            return BTreeMap::new();
        };
        (bases.iter())
            .filter(|(id, _)| could_use.get(**id as usize).copied().unwrap_or(false))
            .map(|(id, b)| {
                let mut s = steps.remove(id).unwrap_or_default();
                if !b.never {
                    s.extend_from_slice(&b.steps);
                }
                (*id, Profile::new(b.free, s))
            })
            .collect()
    }

    /// Every node's free resources and releases, built once a pass (a profile per
    /// reservation from scratch cost 7 ms at 1,000 nodes with 15,000 running tasks) and
    /// kept up as the pass places work ([`Planner::base_took`]).
    fn node_bases(&self) -> HashMap<NodeId, NodeBase> {
        let mut cap: HashMap<NodeId, (u32, u64)> = HashMap::default();
        let mut releases = Vec::new();
        for (i, n) in self.state.nodes.iter().enumerate() {
            let id = i as NodeId;
            if n.takes_work() {
                cap.insert(id, self.free_on(id, n));
                self.releases_on(id, n, &mut releases);
            }
        }
        self.plan_releases(&cap, &mut releases);
        let mut bases: HashMap<NodeId, NodeBase> = (cap.into_iter())
            .map(|(id, free)| {
                let base = NodeBase {
                    free: amount(free),
                    steps: Vec::new(),
                    never: false,
                };
                (id, base)
            })
            .collect();
        for (t, id, c, m) in releases {
            if let Some(b) = bases.get_mut(&id) {
                b.steps.push((t, amount((c, m))));
            }
        }
        bases
    }

    /// Keeps the node bases up when the pass places work on node `id` (ending at `end`).
    pub(super) fn base_took(&mut self, id: NodeId, cpus: u32, mem: u64, end: Option<u64>) {
        if let Some(b) = self.bases.as_mut().and_then(|b| b.get_mut(&id)) {
            b.free = add(b.free, amount((cpus, mem)).map(|v| -v));
            if let Some(e) = end {
                b.steps.push((e, amount((cpus, mem))));
            }
        }
    }

    /// A task was queued behind another on node `id`: its chain's end is no longer
    /// known, so the node is taken as never freeing (as `plan_releases` does).
    pub(super) fn base_never(&mut self, id: NodeId) {
        if let Some(b) = self.bases.as_mut().and_then(|b| b.get_mut(&id)) {
            b.never = true;
        }
    }

    /// Records a later reservation: its window (what its nodes and licenses have spare
    /// at its start, with every reservation so far), and takes its share from the
    /// windows of earlier reservations whose start it runs across.
    fn add_later(&mut self, job: &Job, shape: &Shape, start: u64, dur: Option<u64>, need: Vec<(NodeId, (u32, u64))>) {
        let mut mask = vec![false; self.state.nodes.len()];
        for (id, _) in &need {
            if let Some(m) = mask.get_mut(*id as usize) {
                *m = true;
            }
        }
        let profiles = self.node_profiles(&mask);
        let spare: Option<HashMap<NodeId, (u32, u64)>> = need
            .iter()
            .map(|(id, n)| {
                let level = profiles.get(id)?.level_at(start);
                let left = [level[0] - amount(*n)[0], level[1] - amount(*n)[1]];
                (left[0] >= 0 && left[1] >= 0).then(|| (*id, to_cap(left)))
            })
            .collect();
        let (Some(spare), Some(licenses)) = (spare, self.license_spare_at(job, start)) else {
            return;
        };
        let end = dur.map(|d| start.saturating_add(d));
        let licenses_need: BTreeMap<String, u64> = job
            .spec
            .licenses
            .iter()
            .map(|(k, v)| (k.clone(), u64::from(*v)))
            .collect();
        for w in self.windows.iter_mut() {
            if start <= w.start && end.is_none_or(|e| w.start < e) {
                for (id, (c, m)) in &need {
                    if let Some(s) = w.spare.get_mut(id) {
                        s.0 = s.0.saturating_sub(*c);
                        s.1 = s.1.saturating_sub(*m);
                    }
                }
                for (name, n) in &licenses_need {
                    if let Some(s) = w.licenses.get_mut(name) {
                        *s = s.saturating_sub(*n);
                    }
                }
            }
        }
        self.plan.later.push(Reservation {
            job: job.id,
            start_ms: Some(start),
            nodes: need.iter().map(|(id, _)| *id).collect(),
            need: need.iter().map(|(_, n)| *n).collect(),
            computed_ms: self.state.now_ms,
        });
        self.windows.push(Window {
            start,
            end,
            need,
            spare,
            gres: !shape.gres.is_empty(),
            licenses,
            licenses_need,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Profile;

    #[test]
    fn a_profile_finds_the_first_time_a_need_fits_for_its_whole_duration() {
        // 1 cpu free now, +2 at 10, -3 at 20 (a reservation), +3 at 30.
        let p = Profile::new([1, 0], vec![(20, [-3, 0]), (10, [2, 0]), (30, [3, 0])]);
        assert_eq!(p.level_at(15), [3, 0]);
        assert_eq!(p.min_over(10, Some(25)), [0, 0]);
        assert_eq!(p.earliest([2, 0], 0, Some(5)), Some(10), "fits 10..15 before the dip");
        assert_eq!(p.earliest([2, 0], 0, Some(15)), Some(30), "10..25 would cross the dip");
        assert_eq!(p.earliest([2, 0], 0, None), Some(30));
        assert_eq!(p.earliest([5, 0], 0, None), None, "never 5 free");
    }
}
