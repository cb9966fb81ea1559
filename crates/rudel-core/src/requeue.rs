//! `rudel requeue` / `scontrol requeue[hold]` (Slurm 22.05): a running, completed,
//! failed, cancelled, timed-out or node-failed job (or one array task) goes back to
//! pending under its own job id and runs again as a higher attempt
//! (`SLURM_RESTART_COUNT` = attempt - 1). A running task is killed first: it keeps its
//! cores until the agent reports it ended (a node is never over-committed), then goes
//! back to pending instead of ending `cancelled`.
//!
//! Attempts are numbered per job: a requeued task runs as one more than the highest
//! attempt any task of the job was placed with ([`Job::max_attempt`]), which is above
//! every earlier attempt of that very task, so a late report of an earlier attempt is
//! fenced off. (A completed array task keeps no record of its attempt; the job-wide
//! maximum is what makes that safe.)
//!
//! Dependencies: a dependant whose condition on the requeued job already held keeps it
//! (Slurm clears a dependency once it is satisfied; a job that started because of it is
//! not stopped either). Conditions not yet decided follow the job's new run: the job is
//! linked into the dependency index again, so its next end re-evaluates them.
use serde::{Deserialize, Serialize};

use crate::deps::{self, DepKind, Verdict};
use crate::events::Event;
use crate::gates::GateChange;
use crate::ids::{JobId, TaskKey};
use crate::job::{Job, TaskState};
use crate::state::State;

/// A job (`41`, or an array task's own job id) or one array task (`41_3`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub job: JobId,
    #[serde(default)]
    pub index: Option<u32>,
}

/// From this scheduling version a requeue that changes nothing is refused before it
/// touches the job. Before, the job was taken out of the queue and put back first: under
/// `multifactor` or `round_robin` its queue key was computed again (its age, its turn),
/// so a refused requeue could move it ahead and start it (`scheduler_props` found it).
/// Versioned, since heads of the older behaviour decide otherwise for the same log.
const CLEAN_REFUSAL_VERSION: u32 = 7;

/// Why a requeue of one reference was not done; the text goes to the user as is.
enum Refusal {
    Unknown(JobId),
    Skipped(JobId, String),
}

impl State {
    /// Requeues each job or task named; `hold` holds the jobs as well (`requeuehold`).
    pub(crate) fn requeue(&mut self, refs: &[JobRef], hold: bool) -> GateChange {
        let mut out = GateChange::default();
        for r in refs {
            match self.requeue_one(*r, hold) {
                Ok(id) => out.changed.push(id),
                Err(Refusal::Unknown(id)) => out.unknown.push(id),
                Err(Refusal::Skipped(id, why)) => out.skipped.push((id, why)),
            }
        }
        out
    }

    /// The job a reference names and the one task it names (None: the whole job).
    fn resolve_ref(&self, r: JobRef) -> Result<(JobId, Option<u32>), Refusal> {
        let gone = |id: JobId| {
            if id < self.next_job_id {
                // Ids are only taken by accepted submits: this one ended long ago and was
                // pruned from the queue (the accounting history still has it).
                Refusal::Skipped(id, format!("job {id} is no longer in the queue; resubmit it"))
            } else {
                Refusal::Unknown(id)
            }
        };
        match r.index {
            None => {
                let (job, index) = self.job_of(r.job).ok_or_else(|| gone(r.job))?;
                Ok((job.id, index))
            }
            Some(i) => {
                let Some(job) = self.jobs.get(&r.job) else {
                    return Err(gone(r.job));
                };
                let in_array = job.spec.array.as_ref().and_then(|a| a.position_of(i)).is_some();
                if !in_array {
                    return Err(Refusal::Skipped(r.job, format!("job {} has no array task {i}", r.job)));
                }
                Ok((job.id, Some(i)))
            }
        }
    }

    fn requeue_one(&mut self, r: JobRef, hold: bool) -> Result<JobId, Refusal> {
        let (id, index) = self.resolve_ref(r)?;
        let job = self.jobs.get(&id).ok_or(Refusal::Unknown(id))?;
        let shown = index.map_or(id, |i| job.task_job_id(i));
        if let Some(why) = refusal(job, index) {
            return Err(Refusal::Skipped(shown, why));
        }
        let indices = match index {
            Some(i) => vec![i],
            None => requeueable(job),
        };
        if indices.is_empty() {
            return Err(Refusal::Skipped(
                shown,
                "Job is pending execution (nothing to requeue)".into(),
            ));
        }
        if self.sched.version >= CLEAN_REFUSAL_VERSION && !indices.iter().any(|i| would_requeue(job, *i)) {
            return Err(Refusal::Skipped(
                shown,
                "Job is pending execution (nothing to requeue)".into(),
            ));
        }
        let was_finished = job.end_ms.is_some();
        let attempt = next_attempt(job);
        self.pin_dependants(id);
        self.dequeue(id);
        let mut kills = Vec::new();
        let mut changed = false;
        if let Some(job) = self.jobs.get_mut(&id) {
            for i in indices {
                changed |= requeue_task(job, i, attempt, &mut kills);
            }
            if index.is_none() {
                // Every task is pending or running now; the per-state split of a cancelled
                // array's unrecorded tasks was unknown, so the counts are set, not moved.
                job.ended.clear();
                // Tasks cancelled alone before their dispatch run again too.
                job.skipped.clear();
                job.counts = [0; 7];
                job.counts[TaskState::Pending as usize] = job.total - job.running.len() as u64;
                job.counts[TaskState::Running as usize] = job.running.len() as u64;
            }
            if hold {
                job.held = true;
            }
            if was_finished {
                job.end_ms = None;
                job.cancelled = false;
                job.start_ms = None;
            }
        }
        if was_finished {
            self.finished.retain(|&f| f != id);
        }
        self.touch_killed(&kills);
        self.changes.extend(kills);
        self.emit_requeued(id);
        self.open_if_eligible(id);
        self.relink_dependants(id);
        self.regate_singletons(id);
        if !changed {
            return Err(Refusal::Skipped(
                shown,
                "Job is pending execution (nothing to requeue)".into(),
            ));
        }
        Ok(shown)
    }

    fn emit_requeued(&mut self, job: JobId) {
        self.changes.push(Event::JobRequeued { job });
    }

    /// Dependants whose condition on `target` already holds keep it: those targets are
    /// taken out of their (resolved) specs before the target changes state.
    fn pin_dependants(&mut self, target: JobId) {
        let now = self.now_ms;
        for w in self.deps.waiting_on(target) {
            let Some(spec) = self.deps.spec(w).cloned() else {
                continue;
            };
            let mut pinned = spec.clone();
            for c in &mut pinned.clauses {
                if c.kind == DepKind::Singleton || c.kind == DepKind::AfterCorr {
                    continue;
                }
                c.targets.retain(|t| {
                    t.job != target || deps::check(c.kind, self.target_state(*t), now) != Verdict::Satisfied
                });
            }
            if pinned != spec {
                self.deps.replace(w, pinned);
            }
        }
    }

    /// Links the jobs still waiting on `target` to it again (the index forgot them when it
    /// ended) and re-evaluates them against its new state.
    fn relink_dependants(&mut self, target: JobId) {
        for w in self.deps.waiting_on(target) {
            self.deps.link(w, target);
            self.reevaluate(w);
        }
    }
}

impl State {
    /// A requeued job is unfinished again: later `singleton` jobs of its name and user
    /// that have not started wait for it once more (they took it for ended). A scan of
    /// the jobs, once per requeue (not per entry).
    fn regate_singletons(&mut self, x: JobId) {
        let Some(job) = self.jobs.get(&x) else { return };
        let (name, user) = (job.spec.name.clone(), job.spec.user.clone());
        let later: Vec<JobId> = self
            .jobs
            .range(x + 1..)
            .map(|(_, j)| j)
            .filter(|j| j.spec.name == name && j.spec.user == user && is_singleton(j))
            .filter(|j| j.start_ms.is_none() && j.running.is_empty() && !j.is_finished())
            .map(|j| j.id)
            .collect();
        for w in later {
            let target = crate::deps::DepTarget { job: x, index: None };
            let mut spec = self.deps.spec(w).cloned().unwrap_or(crate::deps::DepSpec {
                clauses: Vec::new(),
                any: false,
            });
            match spec.clauses.iter_mut().find(|c| c.kind == DepKind::Singleton) {
                Some(c) if c.targets.contains(&target) => continue,
                Some(c) => c.targets.push(target),
                None => spec.clauses.push(crate::deps::DepClause {
                    kind: DepKind::Singleton,
                    targets: vec![target],
                }),
            }
            self.dequeue(w);
            self.deps.resolve(w);
            self.deps.add(w, spec);
            if let Some(j) = self.jobs.get_mut(&w) {
                j.dep = crate::job::DepStatus::Waiting;
            }
            self.reevaluate(w);
        }
    }
}

fn is_singleton(job: &Job) -> bool {
    job.spec
        .dependency
        .as_ref()
        .is_some_and(|d| d.clauses.iter().any(|c| c.kind == DepKind::Singleton))
}

/// Why a job (or its task `index`) cannot be requeued at all.
fn refusal(job: &Job, index: Option<u32>) -> Option<String> {
    if !job.spec.requeue {
        return Some(format!(
            "Requested operation is presently disabled (job {} was submitted with --no-requeue)",
            job.id
        ));
    }
    if job.dep != crate::job::DepStatus::Satisfied {
        // It ended (cancelled) while it waited: its dependency is no longer tracked.
        return Some(format!(
            "job {} never ran: it ended while waiting on its dependency; resubmit it",
            job.id
        ));
    }
    if job.cancelled && !job.is_finished() {
        return Some("the job is being cancelled; requeue it once it ended".into());
    }
    if job.corr.is_some() {
        // Its held tasks have no dispatch record and its released ones depend on tasks of
        // another array: a rerun could not honour the pairing, so none is offered.
        return Some(format!(
            "job {} has an aftercorr dependency: requeue is not supported for it; resubmit it",
            job.id
        ));
    }
    if job.cancelled && job.is_array() && index.is_some() {
        // Its tasks cancelled before they ran and those that completed keep no record:
        // they cannot be told apart one by one, only requeued all together.
        return Some(format!(
            "array job {} was cancelled: requeue the whole array (`rudel requeue {}`)",
            job.id, job.id
        ));
    }
    None
}

/// Indices of a job's tasks that are not pending: running, ended with a record, or
/// dispatched and completed (no record). One pass over the dispatched positions: a
/// requeue of a whole array costs its size once.
fn requeueable(job: &Job) -> Vec<u32> {
    (0..job.next_position)
        .map(|p| job.index_at(p))
        .filter(|i| !job.requeued.contains_key(i))
        .collect()
}

/// One more than the highest attempt any task of the job had.
fn next_attempt(job: &Job) -> u32 {
    let running = job.running.values().map(|r| r.attempt);
    let ended = job.ended.values().map(|t| t.attempt);
    let queued = job.requeued.values().copied();
    running
        .chain(ended)
        .chain(queued)
        .fold(job.max_attempt.max(1), u32::max)
        .saturating_add(1)
}

/// Puts one task back to pending as `attempt`; a running one is killed first (it goes
/// back when its end is reported). False when it was pending already.
/// Whether [`requeue_task`] would change task `index` (the same conditions, read-only).
fn would_requeue(job: &Job, index: u32) -> bool {
    if job.running.contains_key(&index) || job.skipped.contains(&index) {
        return true;
    }
    if job.requeued.contains_key(&index) {
        return false;
    }
    match &job.spec.array {
        Some(a) => a.position_of(index).is_some_and(|p| p < job.next_position),
        None => job.next_position > 0,
    }
}

fn requeue_task(job: &mut Job, index: u32, attempt: u32, kills: &mut Vec<Event>) -> bool {
    if let Some(rt) = job.running.get_mut(&index) {
        if !rt.requeue {
            rt.requeue = true;
            if !rt.kill_requested {
                rt.kill_requested = true;
                kills.push(Event::KillRequested {
                    key: TaskKey { job: job.id, index },
                    attempt: rt.attempt,
                    node: rt.node,
                });
            }
        }
        return true;
    }
    if job.requeued.contains_key(&index) {
        return false;
    }
    if job.skipped.remove(&index) {
        // Cancelled alone before its dispatch: pending again at its own position.
        job.ended.remove(&index);
        job.move_count(TaskState::Cancelled, TaskState::Pending);
        return true;
    }
    let dispatched = match &job.spec.array {
        Some(a) => a.position_of(index).is_some_and(|p| p < job.next_position),
        None => job.next_position > 0,
    };
    if !dispatched {
        return false;
    }
    let from = match job.ended.remove(&index) {
        Some(t) => t.state,
        // No record: a completed array task, or (cancelled job) one cancelled before it ran.
        None if job.cancelled => TaskState::Cancelled,
        None => TaskState::Completed,
    };
    job.move_count(from, TaskState::Pending);
    job.requeued.insert(index, attempt);
    true
}

#[cfg(test)]
mod tests;
