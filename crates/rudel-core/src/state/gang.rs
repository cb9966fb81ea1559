//! Committing and releasing multi-node allocations (see `alloc.rs`, `sched/gang.rs`).
//! Commit checks every slice before taking any, so a refused gang leaves nothing held;
//! release frees every slice; a lost node of an allocation ends the whole job.
use std::collections::BTreeSet;

use super::State;
use crate::alloc::AllocSpec;
use crate::alloc::{Allocation, Slice};
use crate::ids::{NodeId, TaskKey};
use crate::invariants::Violation;
use crate::job::{JobSpec, RunningTask};
use crate::sched::plan::{GangSlice, Placement};

impl State {
    /// Takes every slice of a planned allocation, or none: returns the task's record
    /// (holding the first slice) or the first violation found.
    pub(super) fn hold_gang(&mut self, p: &Placement, slices: &[GangSlice]) -> Result<RunningTask, Violation> {
        let key = p.key;
        let partial = |why| Violation::PartialAllocation { key, why };
        let job = self.jobs.get(&key.job).ok_or(partial("no such job"))?;
        let a = job
            .spec
            .alloc
            .as_ref()
            .ok_or(partial("the job asks for no allocation"))?;
        if slices.first().map(|s| s.node) != Some(p.node) {
            return Err(partial("the first slice is not on the task's node"));
        }
        let k = slices.len() as u32;
        if k < a.nodes_min || k > a.nodes_max {
            return Err(partial("the node count is outside the job's --nodes"));
        }
        let distinct: BTreeSet<NodeId> = slices.iter().map(|s| s.node).collect();
        if distinct.len() != slices.len() {
            return Err(partial("a node appears twice"));
        }
        for s in slices {
            let n = self.nodes.get(s.node as usize).ok_or(partial("no such node"))?;
            if !n.fits_now(s.cpus, s.mem) {
                return Err(Violation::OverCommit {
                    node: s.node,
                    key,
                    cpus: n.cpus_used + s.cpus,
                    capacity: n.cpus,
                    mem: n.mem_used + s.mem,
                    mem_capacity: n.mem_bytes,
                });
            }
        }
        self.check_licenses(key, &job.spec.licenses.clone())?;
        let mut held = Vec::with_capacity(slices.len());
        for (i, s) in slices.iter().enumerate() {
            let Some(n) = self.nodes.get_mut(s.node as usize) else {
                continue;
            };
            // Checked above on distinct nodes, so every allocation succeeds.
            let cores = if i == 0 {
                n.allocate(key, p.attempt, s.cpus, s.mem)
            } else {
                n.allocate_slice(key, p.attempt, s.cpus, s.mem)
            }
            .unwrap_or_default();
            held.push(Slice {
                node: s.node,
                name: n.name.clone(),
                tasks: s.tasks,
                cores,
                mem_bytes: s.mem,
            });
            if i > 0 {
                self.node_changed(s.node);
            } else {
                self.touch_free(s.node);
            }
        }
        let licenses = self
            .jobs
            .get(&key.job)
            .map(|j| j.spec.licenses.clone())
            .unwrap_or_default();
        for (name, n) in &licenses {
            *self.licenses_used.entry(name.clone()).or_default() += u64::from(*n);
        }
        let first = held.first().cloned().ok_or(partial("no slices"))?;
        let mut rt = RunningTask::new(p.node, p.attempt, first.cores, first.mem_bytes, self.now_ms, None);
        rt.alloc = Some(Allocation { slices: held });
        Ok(rt)
    }

    /// Frees the slices of an allocation on other nodes than the task's own.
    pub(super) fn release_slices(&mut self, key: TaskKey, rt: &RunningTask) {
        let Some(a) = &rt.alloc else { return };
        for s in a.slices.iter().skip(1) {
            if let Some(n) = self.nodes.get_mut(s.node as usize) {
                n.release_slice(key, &s.cores, s.mem_bytes);
            }
            self.node_changed(s.node);
        }
    }

    /// A node holding a slice of `key`'s allocation (not its own node) was lost: every
    /// other slice is freed at once, and the task is killed on its node; its report then
    /// ends it `node_fail` (or requeues it), as Slurm ends a job that loses a node.
    pub(super) fn slice_lost(&mut self, key: TaskKey, attempt: u32, why: String) {
        let Some(rt) = self.running_task(key).filter(|rt| rt.attempt == attempt).cloned() else {
            return;
        };
        self.release_slices(key, &rt);
        let node = rt.node;
        // The freed slices no longer count against the user's running cpus.
        let freed: u64 = rt
            .alloc
            .iter()
            .flat_map(|a| a.slices.iter().skip(1))
            .map(|s| s.cores.len() as u64)
            .sum();
        if let Some((user, account)) = self
            .jobs
            .get(&key.job)
            .map(|j| (j.spec.user.clone(), j.spec.account.clone()))
        {
            self.running_usage.shrink(&user, &account, freed);
            self.fair_shrink(&user, freed);
        }
        if let Some(r) = self.running_mut(key) {
            if let Some(a) = r.alloc.as_mut() {
                a.slices.truncate(1);
            }
            r.kill_requested = true;
            r.lost_node.get_or_insert(why);
            self.touch_tail(key);
        }
        self.node_changed(node);
    }
}

/// What a multi-node request may not be combined with (yet), refused at submit rather
/// than run differently than asked.
pub(super) fn validate_alloc(spec: &JobSpec) -> Result<(), String> {
    let Some(a) = &spec.alloc else { return Ok(()) };
    a.validate().map_err(|e| e.to_string())?;
    if spec.array.is_some() {
        return Err("--array with --nodes/--ntasks/--exclusive is not supported yet (issue 11)".into());
    }
    if !spec.gres.is_empty() {
        return Err("--gres/--gpus with --nodes/--ntasks/--exclusive is not supported yet (issue 11)".into());
    }
    Ok(())
}

impl State {
    /// With nodes known, a multi-node request the cluster could never grant is refused at
    /// submit (instead of waiting forever and reserving nodes meanwhile).
    pub(super) fn check_gang_fits(&self, spec: &JobSpec, a: &AllocSpec) -> Result<(), String> {
        for name in &a.nodelist {
            if !self.node_by_name.contains_key(name) {
                return Err(format!("--nodelist: no node {name} in this cluster"));
            }
        }
        let per_task_mem = if a.mem_per_cpu > 0 {
            a.mem_per_cpu.saturating_mul(u64::from(spec.cpus))
        } else {
            0
        };
        let fits = |n: &crate::node::Node| {
            let tasks = n.cpus / spec.cpus.max(1);
            let by_mem = if let Some(t) = n.mem_bytes.checked_div(per_task_mem) {
                u32::try_from(t).unwrap_or(u32::MAX)
            } else if spec.mem_bytes > n.mem_bytes {
                0
            } else {
                u32::MAX
            };
            let tasks = tasks.min(by_mem);
            let tasks = match a.ntasks_per_node {
                Some(t) if tasks < t => 0,
                Some(t) => t,
                None => tasks,
            };
            (tasks > 0
                && n.matches(spec.constraint.as_ref())
                && self.in_partitions(spec, n)
                && !a.exclude.contains(&n.name))
            .then_some(tasks)
        };
        let caps: Vec<u32> = self.nodes.iter().filter_map(fits).collect();
        let usable = caps.len() as u32;
        if usable < a.nodes_min {
            return Err(format!(
                "the job asks for {} nodes; this cluster has {usable} that could ever run its tasks \
                 ({} cpus each{})",
                a.nodes_min,
                spec.cpus,
                a.ntasks_per_node.map(|t| format!(", {t} per node")).unwrap_or_default()
            ));
        }
        if let Some(n) = a.ntasks {
            let mut best: Vec<u32> = caps;
            best.sort_unstable_by(|x, y| y.cmp(x));
            let room: u64 = best.iter().take(a.nodes_max as usize).map(|c| u64::from(*c)).sum();
            if room < u64::from(n) {
                return Err(format!(
                    "the job asks for {n} tasks of {} cpus on at most {} nodes; the cluster could \
                     ever hold {room}",
                    spec.cpus, a.nodes_max
                ));
            }
        }
        Ok(())
    }
}
