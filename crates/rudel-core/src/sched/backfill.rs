//! Time-based backfill (EASY): the first job in the queue order that cannot start gets a
//! *reservation* at its expected start, the earliest log time at which its whole request
//! fits if every running task ends exactly at its time limit. A job further down may then
//! start out of order on a node the reservation needs only if its own limit ends by that
//! time, or if it fits in what the node will have left over at that time after the
//! reserved job's share. Jobs without a time limit never take reserved capacity.
//!
//! Why this cannot delay the reserved job: everything the pass lets start on its nodes is
//! gone by the expected start, or fits beside it; tasks only ever end earlier than their
//! limits, so the next pass's estimate is no later (`tests/backfill_props.rs` checks it).
//! When the estimate is unknown (a task on a node the job needs has no limit), the job
//! reserves every node it could ever use, as with `backfill=off`.
//!
//! Only the log's time (`State::now_ms`, the entry's timestamp) is used, never a
//! replica's clock, so every head decides alike. Cost per pass: one estimate (a sort of
//! the running tasks' ends on the nodes the job could use), then at most
//! `backfill.max_jobs` further jobs, each a cheap fit check.
use rustc_hash::FxHashMap as HashMap;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde::{Deserialize, Serialize};

use super::backfill_counted::Ready;
use super::{Planner, Shape};
use crate::alloc::{distribute, AllocSpec};
use crate::ids::{JobId, NodeId, TaskKey};
use crate::job::Job;
use crate::node::Node;

/// The first scheduling version that knows `backfill=easy`.
pub const BACKFILL_VERSION: u32 = 5;

/// The first version whose estimates count generic resources (GPUs) and licenses, and
/// that knows `backfill=conservative` (see `backfill_profile.rs`, `backfill_counted.rs`).
pub const RESERVATIONS_VERSION: u32 = 6;

/// `backfill.reservations` default: how many blocked jobs get a reservation per pass
/// under `backfill=conservative` (each costs one estimate over the nodes it could use).
pub const DEFAULT_RESERVATIONS: u32 = 50;

/// Slurm's `bf_max_job_test` default.
pub const DEFAULT_MAX_JOBS: u32 = 500;

/// Slurm's `bf_interval` default (seconds).
pub const DEFAULT_INTERVAL_S: u64 = 30;

/// Most `distribute` calls one estimate of a multi-node job makes before it gives up
/// (the job then reserves all its nodes, as without backfill): a bound on the pass.
const MAX_GANG_TRIES: u32 = 256;

/// How jobs may start out of order.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillMode {
    /// The first blocked job reserves every node it could ever use, whatever the time
    /// limits (the behaviour before version 5).
    #[default]
    Off,
    /// EASY: the first blocked job reserves capacity at its expected start; others may
    /// start before it if they do not delay that start.
    Easy,
    /// Conservative: every blocked job considered (up to `backfill.reservations`) gets a
    /// reservation, each made around those before it; a job may start out of order only
    /// if it delays none of them.
    Conservative,
}

impl BackfillMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BackfillMode::Off => "off",
            BackfillMode::Easy => "easy",
            BackfillMode::Conservative => "conservative",
        }
    }
}

/// `backfill` and `backfill.max_jobs` of [`super::SchedConfig`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackfillConfig {
    pub mode: BackfillMode,
    /// Most jobs one pass considers after the reservation is made.
    pub max_jobs: u32,
    /// Log seconds a reservation's expected start is reused before it is computed again
    /// (Slurm's `bf_interval`); a reservation that no longer fits is recomputed at once.
    pub interval_s: u64,
    /// Most reservations one pass makes under `backfill=conservative`.
    pub reservations: u32,
}

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig {
            mode: BackfillMode::Off,
            max_jobs: DEFAULT_MAX_JOBS,
            interval_s: DEFAULT_INTERVAL_S,
            reservations: DEFAULT_RESERVATIONS,
        }
    }
}

impl BackfillConfig {
    /// Sets `backfill` or `backfill.max_jobs`; `Err` is the expected form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "backfill" => {
                self.mode = match value.trim() {
                    "off" => BackfillMode::Off,
                    "easy" => BackfillMode::Easy,
                    "conservative" => BackfillMode::Conservative,
                    _ => return Err("off, easy or conservative".into()),
                }
            }
            "backfill.max_jobs" => {
                self.max_jobs = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|v| (1..=1_000_000).contains(v))
                    .ok_or("a number from 1 to 1000000")?;
            }
            "backfill.interval_s" => {
                self.interval_s = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|v| *v <= 86_400)
                    .ok_or("seconds from 0 (every pass) to 86400")?;
            }
            "backfill.reservations" => {
                self.reservations = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|v| (1..=10_000).contains(v))
                    .ok_or("a number from 1 to 10000")?;
            }
            _ => return Err("backfill, backfill.max_jobs, backfill.interval_s or backfill.reservations".into()),
        }
        Ok(())
    }

    pub fn settings(&self) -> Vec<(String, String)> {
        vec![
            ("backfill".into(), self.mode.as_str().into()),
            ("backfill.max_jobs".into(), self.max_jobs.to_string()),
            ("backfill.interval_s".into(), self.interval_s.to_string()),
            ("backfill.reservations".into(), self.reservations.to_string()),
        ]
    }

    pub fn is_default(&self) -> bool {
        *self == BackfillConfig::default()
    }

    /// The scheduling version these settings need beyond `backfill=easy`'s, if any.
    pub fn needs_reservations_version(&self) -> bool {
        self.mode == BackfillMode::Conservative || self.reservations != DEFAULT_RESERVATIONS
    }
}

/// The reservation of the last pass, kept in the replicated state for `rudel show`,
/// `squeue --start` and `rudel explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub job: JobId,
    /// Log time by which the job is expected to start; `None`: unknown (a task it waits
    /// for has no time limit).
    pub start_ms: Option<u64>,
    /// The nodes it is expected to start on (with `start_ms`), else every node it could use.
    pub nodes: Vec<NodeId>,
    /// (cpus, memory) it needs on each of `nodes` (with `start_ms`).
    #[serde(default)]
    pub need: Vec<(u32, u64)>,
    /// Log time the expected start was computed (it is reused for `backfill.interval_s`).
    #[serde(default)]
    pub computed_ms: u64,
}

/// A reserved job's expected start and, per node it needs, what is left over at that
/// time once its share is taken: a later job whose limit runs past `start` may use only
/// that much there (and takes it from what is left).
pub(super) struct Window {
    pub start: u64,
    /// When the reserved job ends by its limit (`None`: no limit); it holds `need` until
    /// then (later reservations are made around it, `backfill_profile.rs`).
    pub end: Option<u64>,
    pub need: Vec<(NodeId, (u32, u64))>,
    pub spare: HashMap<NodeId, (u32, u64)>,
    /// The reserved job asks for generic resources (GPUs): on its nodes no task holding
    /// any may run past `start` (its units are not split finer than that).
    pub gres: bool,
    /// Licenses the reserved job asks for, and how many are left at `start` once it has
    /// them: a task holding one past `start` takes from that.
    pub licenses: BTreeMap<String, u64>,
    /// The licenses the reserved job takes at `start` (and holds until `end`).
    pub licenses_need: BTreeMap<String, u64>,
}

impl Window {
    /// True when a task started now and ending at `end` still holds what it took at
    /// `start`.
    fn overlaps(&self, end: Option<u64>) -> bool {
        end.is_none_or(|e| e > self.start)
    }
}

/// A release of cpus and memory on a node at a log time.
type Release = (u64, NodeId, u32, u64);

/// (cpus, memory) per node.
type PerNode = HashMap<NodeId, (u32, u64)>;

impl Planner<'_> {
    /// True when the cluster runs time-based backfill.
    pub(super) fn backfill_on(&self) -> bool {
        let s = &self.state.sched;
        s.version >= BACKFILL_VERSION && s.backfill.mode != BackfillMode::Off
    }

    /// True for the job the last pass reserved for, under backfill.
    pub(super) fn holds_reservation(&self, job: JobId) -> bool {
        self.backfill_on() && self.state.reservation.as_ref().is_some_and(|r| r.job == job)
    }

    /// Log time at which a task of `job` started now ends at the latest (`None`: no limit).
    pub(super) fn end_of(&self, job: &Job) -> Option<u64> {
        let limit = job.spec.time_limit_ms;
        (limit > 0).then(|| self.state.now_ms.saturating_add(limit))
    }

    /// What a task ending at `end` may still take of node `id` when the node is kept for
    /// reserved jobs (`None`: no bound beyond the free resources).
    pub(super) fn window_cap(&self, id: NodeId, end: Option<u64>) -> Option<(u32, u64)> {
        self.windows
            .iter()
            .filter(|w| w.overlaps(end))
            .filter_map(|w| w.spare.get(&id).copied())
            .reduce(|a, b| (a.0.min(b.0), a.1.min(b.1)))
    }

    /// Records that a task ending at `end` took `cpus`/`mem` of node `id`.
    pub(super) fn window_took(&mut self, id: NodeId, cpus: u32, mem: u64, end: Option<u64>) {
        self.base_took(id, cpus, mem, end);
        for w in self.windows.iter_mut().filter(|w| w.overlaps(end)) {
            if let Some(s) = w.spare.get_mut(&id) {
                s.0 = s.0.saturating_sub(cpus);
                s.1 = s.1.saturating_sub(mem);
            }
        }
    }

    /// True unless node `id` is kept for a reserved job that needs its generic resources
    /// at a start a task ending at `end` would run past.
    pub(super) fn window_gres_allows(&self, id: NodeId, end: Option<u64>) -> bool {
        !self
            .windows
            .iter()
            .any(|w| w.gres && w.overlaps(end) && w.spare.contains_key(&id))
    }

    /// True when the job's licenses, held until `end`, leave every reserved job the
    /// licenses it counts on at its start.
    pub(super) fn window_licenses_allow(&self, job: &Job, end: Option<u64>) -> bool {
        self.windows.iter().filter(|w| w.overlaps(end)).all(|w| {
            job.spec
                .licenses
                .iter()
                .all(|(name, n)| w.licenses.get(name).is_none_or(|spare| *spare >= u64::from(*n)))
        })
    }

    /// Records that a task of `job` ending at `end` took its licenses.
    pub(super) fn window_took_licenses(&mut self, job: &Job, end: Option<u64>) {
        for w in self.windows.iter_mut().filter(|w| w.overlaps(end)) {
            for (name, n) in &job.spec.licenses {
                if let Some(spare) = w.licenses.get_mut(name) {
                    *spare = spare.saturating_sub(u64::from(*n));
                }
            }
        }
    }

    /// A blocked job under backfill. The first reserves its expected start (or, unknown,
    /// every node it could ever use: `could_use[i]` for node `i`); under EASY later ones
    /// reserve nothing, under conservative they reserve around it
    /// (`backfill_profile.rs`). Returns false when the pass should end.
    pub(super) fn backfill_block(
        &mut self,
        job: &Job,
        shape: &Shape,
        alloc: Option<&AllocSpec>,
        could_use: &[bool],
    ) -> bool {
        if self.plan.reservation.is_some() {
            if self.conservative() {
                self.reserve_later(job, shape, alloc, could_use);
            }
            return true;
        }
        if let Some(done) = self.reuse_reservation(job, shape, Some(could_use)) {
            return done;
        }
        let estimate = if self.counts_reserved() {
            match self.readiness(job, could_use) {
                Some(ready) => self.expected_start(job, shape, alloc, could_use, &ready),
                None => return self.keep_licenses(job),
            }
        } else if shape.gres.is_empty() {
            self.expected_start(job, shape, alloc, could_use, &Ready::default())
        } else {
            // Before version 6 generic resources are not in the estimate: keep every
            // node it could use.
            None
        };
        let now = self.state.now_ms;
        let window = estimate.and_then(|(start, need)| {
            let need: Vec<(NodeId, (u32, u64))> = need.into_iter().collect::<BTreeMap<_, _>>().into_iter().collect();
            self.window_for(job, shape, start, need)
        });
        let reservation = match window {
            Some(w) => {
                let r = Reservation {
                    job: job.id,
                    start_ms: Some(w.start),
                    nodes: w.need.iter().map(|(id, _)| *id).collect(),
                    need: w.need.iter().map(|(_, n)| *n).collect(),
                    computed_ms: now,
                };
                self.windows.push(w);
                r
            }
            None => {
                let mut nodes = Vec::new();
                for i in 0..self.state.nodes.len() {
                    if could_use.get(i).copied().unwrap_or(false) {
                        self.reserved[i] = true;
                        nodes.push(i as NodeId);
                    }
                }
                Reservation {
                    job: job.id,
                    start_ms: None,
                    nodes,
                    need: Vec::new(),
                    computed_ms: now,
                }
            }
        };
        self.plan.reservation = Some(reservation);
        !self.reserved.iter().all(|r| *r)
    }

    /// The first blocked job waits for licenses a task without a time limit holds: its
    /// start is unknown, so (as nodes are kept whole for such a job) every license it
    /// asks for is kept for it: no later job may take one, whatever its limit. Its nodes
    /// stay open: they are not what it waits for.
    fn keep_licenses(&mut self, job: &Job) -> bool {
        let now = self.state.now_ms;
        let kept: BTreeMap<String, u64> = job.spec.licenses.keys().map(|k| (k.clone(), 0)).collect();
        self.windows.push(Window {
            start: now,
            end: None,
            need: Vec::new(),
            spare: HashMap::default(),
            gres: false,
            licenses: kept.clone(),
            licenses_need: kept,
        });
        self.plan.reservation = Some(Reservation {
            job: job.id,
            start_ms: None,
            nodes: Vec::new(),
            need: Vec::new(),
            computed_ms: now,
        });
        true
    }

    /// The first reservation's window: what its nodes (and, from version 6, licenses)
    /// have spare at `start`; `None` when they would not have its share.
    fn window_for(&self, job: &Job, shape: &Shape, start: u64, need: Vec<(NodeId, (u32, u64))>) -> Option<Window> {
        let spare = self.spare_at(start, &need)?;
        let counted = self.counts_reserved();
        let licenses = if counted {
            self.license_spare_at(job, start)?
        } else {
            BTreeMap::new()
        };
        let limit = job.spec.time_limit_ms;
        Some(Window {
            start,
            end: (limit > 0).then(|| start.saturating_add(limit)),
            need,
            spare,
            gres: counted && !shape.gres.is_empty(),
            licenses,
            licenses_need: if counted {
                job.spec
                    .licenses
                    .iter()
                    .map(|(k, v)| (k.clone(), u64::from(*v)))
                    .collect()
            } else {
                BTreeMap::new()
            },
        })
    }

    /// Keeps the last pass's reservation for the same job while it is younger than
    /// `backfill.interval_s` and still fits (its nodes up, what they free by its start
    /// still enough, from version 6 its licenses too): computing the estimate sorts every
    /// running task's end on the nodes the job could use, too much for every log entry.
    /// A kept start is never later than a fresh one would be (tasks only end earlier than
    /// their limits), so keeping it is safe; it is just less eager to backfill until it
    /// is computed again. Returns what `backfill_block` returns, or `None` (having
    /// changed nothing) to compute afresh. `could_use` is the nodes the job could use,
    /// or `None` to check a node only when it is needed ([`Planner::could_use_node`]):
    /// a kept reservation with a start needs only its own nodes, not a mask of all.
    pub(super) fn reuse_reservation(&mut self, job: &Job, shape: &Shape, could_use: Option<&[bool]>) -> Option<bool> {
        let r = self.state.reservation.as_ref().filter(|r| r.job == job.id)?;
        let now = self.state.now_ms;
        let interval = self.state.sched.backfill.interval_s.saturating_mul(1_000);
        if now >= r.computed_ms.saturating_add(interval) {
            return None;
        }
        if r.start_ms.is_none() && !job.spec.licenses.is_empty() && self.counts_reserved() {
            // Kept licenses: cheap to decide again (and they may be back).
            return None;
        }
        let r = r.clone();
        match r.start_ms {
            // Unknown: every node it could use stays reserved, as when it was computed.
            None => {
                for i in 0..self.state.nodes.len() {
                    if self.usable(could_use, i, shape) {
                        self.reserved[i] = true;
                    }
                }
            }
            Some(start) => {
                if start <= now || r.need.len() != r.nodes.len() {
                    return None;
                }
                let need: Vec<(NodeId, (u32, u64))> = r.nodes.iter().copied().zip(r.need.iter().copied()).collect();
                let usable = need.iter().all(|(id, _)| {
                    self.state.nodes.get(*id as usize).is_some_and(|n| n.takes_work())
                        && self.usable(could_use, *id as usize, shape)
                });
                if !usable {
                    return None;
                }
                let w = self.window_for(job, shape, start, need)?;
                self.windows.push(w);
            }
        }
        self.plan.reservation = Some(r);
        Some(!self.reserved.iter().all(|r| *r))
    }

    /// Node `i` is one the job could use: from the mask, or checked now without one.
    fn usable(&self, could_use: Option<&[bool]>, i: usize, shape: &Shape) -> bool {
        match could_use {
            Some(mask) => mask.get(i).copied().unwrap_or(false),
            None => self
                .state
                .nodes
                .get(i)
                .is_some_and(|n| self.could_use_node(i, n, shape)),
        }
    }

    /// What each of the reserved job's nodes has left at `start` once the job's share is
    /// taken, if tasks end at their limits; `None` when a node would not have its share.
    fn spare_at(&self, start: u64, need: &[(NodeId, (u32, u64))]) -> Option<HashMap<NodeId, (u32, u64)>> {
        let mut cap: HashMap<NodeId, (u32, u64)> = HashMap::default();
        let mut releases = Vec::new();
        for (id, _) in need {
            let n = self.state.nodes.get(*id as usize)?;
            cap.insert(*id, self.free_on(*id, n));
            self.releases_on(*id, n, &mut releases);
        }
        self.plan_releases(&cap, &mut releases);
        for (t, id, c, m) in releases {
            if t <= start {
                if let Some(x) = cap.get_mut(&id) {
                    x.0 = x.0.saturating_add(c);
                    x.1 = x.1.saturating_add(m);
                }
            }
        }
        need.iter()
            .map(|(id, (c, m))| {
                let (fc, fm) = cap.get(id).copied().unwrap_or_default();
                (fc >= *c && fm >= *m).then(|| (*id, (fc - c, fm - m)))
            })
            .collect()
    }

    /// Counts one more job considered after the reservation; true once the pass has
    /// looked at `backfill.max_jobs` of them.
    pub(super) fn backfill_exhausted(&mut self) -> bool {
        if self.plan.reservation.is_none() {
            return false;
        }
        self.backfill_seen += 1;
        self.backfill_seen > self.state.sched.backfill.max_jobs
    }

    /// The earliest log time at which the job's request fits if tasks end at their
    /// limits, with what it needs of each node then. `None`: never, as far as the limits
    /// tell.
    fn expected_start(
        &self,
        job: &Job,
        shape: &Shape,
        alloc: Option<&AllocSpec>,
        could_use: &[bool],
        ready: &Ready,
    ) -> Option<(u64, PerNode)> {
        let mut cap: HashMap<NodeId, (u32, u64)> = HashMap::default();
        let mut releases: Vec<Release> = Vec::new();
        for (i, n) in self.state.nodes.iter().enumerate() {
            let id = i as NodeId;
            if n.takes_work() && could_use.get(i).copied().unwrap_or(false) {
                cap.insert(id, self.free_on(id, n));
                self.releases_on(id, n, &mut releases);
            }
        }
        self.plan_releases(&cap, &mut releases);
        if let Some(g) = &ready.gres_nodes {
            hold_until_ready(g, &mut cap, &mut releases, self.state.now_ms);
        }
        // Taken in time order, lazily: most jobs fit after a few releases, and sorting
        // every running task's release (tens of thousands at 10,000 nodes) was two thirds
        // of the estimate's CPU. The heap pops whole tuples in ascending order, exactly
        // the order a sort gave, so the estimate is the same.
        let mut pending: BinaryHeap<Reverse<Release>> = releases.into_iter().map(Reverse).collect();
        let mut released: Vec<Release> = Vec::new();
        let now = self.state.now_ms;
        let mut tries = 0u32;
        let mut t = now.max(ready.not_before);
        let mut first = true;
        // For a multi-node job: tasks that fit per node, and how many nodes and tasks
        // that makes, kept up per release so `distribute` runs only once they could do.
        let mut gang = alloc.map(|a| {
            let per: HashMap<NodeId, u32> = cap
                .iter()
                .map(|(id, c)| (*id, self.tasks_at(job, a, shape, *id, Some(*c))))
                .collect();
            let nodes = per.values().filter(|k| **k >= a.ntasks_per_node.unwrap_or(1)).count();
            let tasks: u64 = per.values().map(|k| u64::from(*k)).sum();
            (a, per, nodes, tasks)
        });
        loop {
            // Everything released by `t` is back; then: does the job fit?
            released.clear();
            while let Some(&Reverse(r)) = pending.peek().filter(|r| r.0 .0 <= t) {
                pending.pop();
                released.push(r);
                let (_, node, c, m) = r;
                if let Some(x) = cap.get_mut(&node) {
                    x.0 = x.0.saturating_add(c);
                    x.1 = x.1.saturating_add(m);
                    if let Some((a, per, nodes, tasks)) = gang.as_mut() {
                        let min = a.ntasks_per_node.unwrap_or(1);
                        let new = self.tasks_at(job, a, shape, node, Some(*x));
                        let old = per.insert(node, new).unwrap_or(0);
                        *tasks = (*tasks + u64::from(new)).saturating_sub(u64::from(old));
                        *nodes = (*nodes + usize::from(new >= min)).saturating_sub(usize::from(old >= min));
                    }
                }
            }
            let next = pending.peek().map(|r| r.0 .0);
            let fit = match &gang {
                None => self.single_fit(shape, &cap, &released, std::mem::take(&mut first)),
                Some((a, _, nodes, tasks)) => {
                    let enough = *nodes >= (a.nodes_min as usize).max(a.nodelist.len()).max(1)
                        && *tasks >= u64::from(a.ntasks.unwrap_or(0));
                    if !enough {
                        t = next?;
                        continue;
                    }
                    tries += 1;
                    if tries > MAX_GANG_TRIES {
                        return None;
                    }
                    self.gang_fit(job, a, shape, &cap)
                }
            };
            if let Some(need) = fit {
                return Some((t, need));
            }
            t = next?;
        }
    }

    /// A node where one task fits with `cap` (only the nodes just released are checked,
    /// except at the first look).
    fn single_fit(
        &self,
        shape: &Shape,
        cap: &HashMap<NodeId, (u32, u64)>,
        released: &[Release],
        first: bool,
    ) -> Option<HashMap<NodeId, (u32, u64)>> {
        let fits = |id: &NodeId| cap.get(id).is_some_and(|&(c, m)| c >= shape.cpus && m >= shape.mem);
        let found = if first {
            let mut ids: Vec<NodeId> = cap.keys().copied().collect();
            ids.sort_unstable();
            ids.into_iter().find(fits)
        } else {
            let mut ids: Vec<NodeId> = released.iter().map(|r| r.1).collect();
            ids.sort_unstable();
            ids.into_iter().find(fits)
        }?;
        Some(HashMap::from_iter([(found, (shape.cpus, shape.mem))]))
    }

    /// How many tasks of a multi-node job fit on node `id` with `cap` free there.
    fn tasks_at(&self, job: &Job, a: &AllocSpec, shape: &Shape, id: NodeId, cap: Option<(u32, u64)>) -> u32 {
        let (Some(n), Some((fc, fm))) = (self.state.nodes.get(id as usize), cap) else {
            return 0;
        };
        let c = shape.cpus.max(1);
        if a.exclusive {
            let idle = fc >= n.cpus && fm >= n.mem_bytes;
            return if idle { n.cpus / c } else { 0 };
        }
        let by_cpus = fc / c;
        if a.mem_per_cpu > 0 {
            let per_task = a.mem_per_cpu.saturating_mul(u64::from(c));
            return by_cpus.min(u32::try_from(fm / per_task.max(1)).unwrap_or(u32::MAX));
        }
        if job.spec.mem_bytes > fm {
            0
        } else {
            by_cpus
        }
    }

    /// The slices a multi-node job would get with `cap` free per node, if it fits.
    pub(super) fn gang_fit(
        &self,
        job: &Job,
        a: &AllocSpec,
        shape: &Shape,
        cap: &HashMap<NodeId, (u32, u64)>,
    ) -> Option<HashMap<NodeId, (u32, u64)>> {
        let tasks_at = |id: NodeId| self.tasks_at(job, a, shape, id, cap.get(&id).copied());
        let mut caps: Vec<(NodeId, u32)> = Vec::new();
        for name in &a.nodelist {
            let id = *self.state.node_by_name.get(name)?;
            caps.push((id, tasks_at(id)));
        }
        let required = caps.len();
        let mut rest: Vec<NodeId> = cap.keys().copied().collect();
        rest.sort_unstable();
        for id in rest {
            let Some(n) = self.state.nodes.get(id as usize) else {
                continue;
            };
            if a.nodelist.contains(&n.name) || a.exclude.contains(&n.name) {
                continue;
            }
            let k = tasks_at(id);
            if k > 0 {
                caps.push((id, k));
            }
        }
        let shares = distribute(a, required, &caps)?;
        Some(
            shares
                .into_iter()
                .filter_map(|(id, tasks)| {
                    let n = self.state.nodes.get(id as usize)?;
                    let cpus = if a.exclusive { n.cpus } else { tasks * shape.cpus };
                    Some((id, (cpus, super::gang::slice_mem(job, a, cpus))))
                })
                .collect(),
        )
    }

    /// When the tasks holding resources on node `id` give them back, if every one ends
    /// at its time limit (a chain of successors: when the last of it ends). Tasks
    /// without a limit never do. Read from the state's kept-up lists
    /// (`state/releases.rs`) when they are settled.
    pub(super) fn releases_on(&self, id: NodeId, _n: &Node, out: &mut Vec<Release>) {
        let now = self.state.now_ms;
        let release = |h: &crate::state::releases::Hold| (h.at(now), id, h.cpus, h.mem);
        match self.state.kept_holds(id) {
            Some(holds) => {
                out.extend(holds.map(release));
                out.extend(self.state.slice_holds(id).iter().map(release));
            }
            None => out.extend(self.state.holds_on(id).iter().map(release)),
        }
    }

    /// The latest end of a running task by its limit.
    pub(super) fn task_end(&self, key: TaskKey) -> Option<u64> {
        let rt = self.state.running_task(key)?;
        let limit = self.state.jobs.get(&key.job)?.spec.time_limit_ms;
        (limit > 0).then(|| rt.start_ms.saturating_add(limit))
    }

    /// Releases of what this pass placed before the blocked job. A task queued behind
    /// another lengthens a chain whose end is already counted: its node is then taken as
    /// never freeing (safe: the job then just cannot count on that node this pass).
    pub(super) fn plan_releases(&self, cap: &HashMap<NodeId, (u32, u64)>, out: &mut Vec<Release>) {
        let mut never: Vec<NodeId> = Vec::new();
        for p in &self.plan.start {
            let Some(job) = self.state.jobs.get(&p.key.job) else {
                continue;
            };
            if p.behind.is_some() {
                never.push(p.node);
                continue;
            }
            let Some(end) = self.end_of(job) else { continue };
            match self.plan.gangs.get(&p.key) {
                Some(slices) => out.extend(slices.iter().map(|s| (end, s.node, s.cpus, s.mem))),
                None => out.push((end, p.node, job.spec.cpus, job.spec.mem_bytes)),
            }
        }
        if !never.is_empty() {
            out.retain(|r| !never.contains(&r.1));
        }
        out.retain(|r| cap.contains_key(&r.1));
    }
}

/// Generic resources in the first estimate: a node that cannot serve them before log
/// time `ready[id]` offers nothing until then (what it frees before counts from then on);
/// a node that never can is left out.
fn hold_until_ready(
    ready: &HashMap<NodeId, u64>,
    cap: &mut HashMap<NodeId, (u32, u64)>,
    releases: &mut Vec<Release>,
    now: u64,
) {
    cap.retain(|id, _| ready.contains_key(id));
    releases.retain(|r| ready.contains_key(&r.1));
    for r in releases.iter_mut() {
        r.0 = r.0.max(ready.get(&r.1).copied().unwrap_or(now));
    }
    for (id, c) in cap.iter_mut() {
        let at = ready.get(id).copied().unwrap_or(now);
        if at > now {
            releases.push((at, *id, c.0, c.1));
            *c = (0, 0);
        }
    }
}

#[cfg(test)]
#[path = "backfill_tests.rs"]
mod tests;
