//! Generic resources (GPUs) and licenses in backfill estimates (scheduling version 6 on).
//!
//! Before, a job asking for GPUs reserved every node it could use whatever the limits
//! said, and a job waiting for licenses reserved nothing, so a stream of small license
//! users could hold a big one back forever. Now both get an expected start: the earliest
//! log time at which, with running tasks ending at their limits, the licenses are back
//! (`not_before`) and, per node, enough GPU units are free (`gres_nodes`). Cpus and memory
//! only ever grow before the first reservation's start, so that start is the first time
//! at or after both at which the request fits. Its window then also keeps the licenses
//! and (whole) GPU nodes it counts on from tasks that would run past it.
use rustc_hash::FxHashMap as HashMap;
use std::collections::{BTreeMap, BTreeSet};

use super::Planner;
use crate::ids::{NodeId, TaskKey};
use crate::job::Job;
use crate::resources::{serves, GresPool, GresRequest};

/// When a job's counted resources are back, if running tasks end at their limits.
#[derive(Default)]
pub(super) struct Ready {
    /// Licenses: not before this log time.
    pub not_before: u64,
    /// Generic resources: the log time each node that could serve them has enough free
    /// (`None`: the job asks for none). A node missing never has them, as far as the
    /// limits tell.
    pub gres_nodes: Option<HashMap<NodeId, u64>>,
}

/// A release of `units` of a pool on a node at a log time (`None`: never).
pub(super) type GresRelease = (Option<u64>, String, u32);

impl Planner<'_> {
    /// True when the cluster's estimates count generic resources and licenses.
    pub(super) fn counts_reserved(&self) -> bool {
        self.state.sched.version >= super::backfill::RESERVATIONS_VERSION
    }

    /// When `job`'s licenses and GPUs are back; `None` when its licenses never are (a
    /// holder has no time limit): it then reserves nothing, as it did before version 6.
    pub(super) fn readiness(&self, job: &Job, could_use: &[bool]) -> Option<Ready> {
        let limit = job.spec.time_limit_ms;
        let not_before = self.license_ready(job, self.state.now_ms, (limit > 0).then_some(limit))?;
        let gres_nodes = (!job.spec.gres.is_empty()).then(|| {
            (self.state.nodes.iter().enumerate())
                .filter(|(i, n)| could_use.get(*i).copied().unwrap_or(false) && n.takes_work())
                .filter_map(|(i, _)| Some((i as NodeId, self.gres_ready(i as NodeId, &job.spec.gres)?)))
                .collect()
        });
        Some(Ready { not_before, gres_nodes })
    }

    /// Records what a task placed by this pass holds of node `id`'s pools, until `end`.
    pub(super) fn gres_took(&mut self, id: NodeId, chosen: &[(String, u32)], end: Option<u64>) {
        for (pool, units) in chosen {
            self.gres_ends.push((id, (end, pool.clone(), *units)));
        }
    }

    /// The earliest log time at which node `id` can serve `req`, if tasks holding its
    /// pools end at their limits.
    fn gres_ready(&self, id: NodeId, req: &GresRequest) -> Option<u64> {
        let n = self.state.nodes.get(id as usize)?;
        let mut avail: BTreeMap<&str, i64> = (n.gres.iter())
            .map(|(pool, p)| {
                let used = self.gres_used.get(&(id, pool.clone())).copied().unwrap_or(0);
                (pool.as_str(), i64::from(p.available()) - i64::from(used))
            })
            .collect();
        let mut releases: Vec<GresRelease> = Vec::new();
        for key in n.running.keys() {
            let Some(rt) = self.state.running_task(*key) else {
                continue;
            };
            for (pool, units) in &rt.gres {
                releases.push((self.task_end(*key), pool.clone(), units.len() as u32));
            }
        }
        releases.extend(self.gres_ends.iter().filter(|(n, _)| *n == id).map(|(_, r)| r.clone()));
        let mut timed: Vec<(u64, String, u32)> = releases
            .into_iter()
            .filter_map(|(t, pool, u)| Some((t?.max(self.state.now_ms), pool, u)))
            .collect();
        timed.sort_unstable();
        let mut t = self.state.now_ms;
        let mut i = 0;
        loop {
            while let Some((_, pool, units)) = timed.get(i).filter(|r| r.0 <= t) {
                if let Some(a) = avail.get_mut(pool.as_str()) {
                    *a += i64::from(*units);
                }
                i += 1;
            }
            if serves_counts(&n.gres, req, &avail) {
                return Some(t);
            }
            t = timed.get(i)?.0;
        }
    }

    /// The earliest log time from `from` at which `job`'s licenses are free for its whole
    /// run (`dur`, `None`: no limit), with holders ending at their limits and the
    /// reservations made so far holding theirs; `None`: never.
    pub(super) fn license_ready(&self, job: &Job, from: u64, dur: Option<u64>) -> Option<u64> {
        let mut ready = from;
        for (name, n) in &job.spec.licenses {
            let p = self.license_profile(name);
            ready = ready.max(p.earliest([i128::from(*n), 0], from, dur)?);
        }
        Some(ready)
    }

    /// Licenses left at `start` once `job` has its own, for a window; `None` when it would
    /// not have them.
    pub(super) fn license_spare_at(&self, job: &Job, start: u64) -> Option<BTreeMap<String, u64>> {
        job.spec
            .licenses
            .iter()
            .map(|(name, n)| {
                let left = self.license_profile(name).level_at(start)[0] - i128::from(*n);
                Some((name.clone(), u64::try_from(left).ok()?))
            })
            .collect()
    }

    /// Free licenses `name` over time: what is free now, back as holders end by their
    /// limits, taken and given back by the reservations made so far.
    fn license_profile(&self, name: &str) -> super::backfill_profile::Profile {
        let total = self.state.sched.licenses.get(name).copied().unwrap_or(0);
        let used = self.state.licenses_used.get(name).copied().unwrap_or(0)
            + self.licenses_used.get(name).copied().unwrap_or(0);
        let mut steps: Vec<(u64, [i128; 2])> = Vec::new();
        let now = self.state.now_ms;
        for (end, n) in self.license_holders(name) {
            if let Some(e) = end {
                steps.push((e.max(now), [i128::from(n), 0]));
            }
        }
        for w in &self.windows {
            if let Some(&n) = w.licenses_need.get(name) {
                steps.push((w.start, [-i128::from(n), 0]));
                if let Some(e) = w.end {
                    steps.push((e, [i128::from(n), 0]));
                }
            }
        }
        super::backfill_profile::Profile::new([i128::from(total) - i128::from(used), 0], steps)
    }

    /// (end by its limit, count) of every running task and task this pass placed that
    /// holds license `name`.
    fn license_holders(&self, name: &str) -> Vec<(Option<u64>, u64)> {
        let mut seen: BTreeSet<TaskKey> = BTreeSet::new();
        let mut out = Vec::new();
        for n in &self.state.nodes {
            for key in n.running.keys().chain(n.slices.keys()) {
                let Some(job) = self.state.jobs.get(&key.job) else {
                    continue;
                };
                let Some(&count) = job.spec.licenses.get(name) else {
                    continue;
                };
                if seen.insert(*key) {
                    out.push((self.task_end(*key), u64::from(count)));
                }
            }
        }
        for p in &self.plan.start {
            let Some(job) = self.state.jobs.get(&p.key.job) else {
                continue;
            };
            if let Some(&count) = job.spec.licenses.get(name) {
                out.push((self.end_of(job), u64::from(count)));
            }
        }
        out
    }
}

/// True when `pools` serve every request of `req` with `avail` units free per pool
/// (the first pool in name order that has enough, as `choose_pools` picks).
fn serves_counts(pools: &BTreeMap<String, GresPool>, req: &GresRequest, avail: &BTreeMap<&str, i64>) -> bool {
    let mut promised: BTreeMap<&str, i64> = BTreeMap::new();
    req.iter().all(|(want, units)| {
        let found = pools.keys().find(|name| {
            let left =
                avail.get(name.as_str()).copied().unwrap_or(0) - promised.get(name.as_str()).copied().unwrap_or(0);
            serves(name, want) && left >= i64::from(*units)
        });
        match found {
            Some(name) => {
                *promised.entry(name.as_str()).or_default() += i64::from(*units);
                true
            }
            None => false,
        }
    })
}
