//! What keeps a job with pending tasks out of the queue apart from resources: a user hold
//! (`--hold`, `rudel hold`), a dependency (`--dependency`), a begin time (`--begin`).
//!
//! A gated job is simply not in `State::queue`, so the scheduler never looks at it: a DAG
//! of 10,000 waiting jobs costs a pass nothing. Gates open from the entry's own events
//! (a target started or ended: only its dependants are re-evaluated, found through
//! `State::deps`) and from timers (a begin time or an `after:ID+min` delay reached, applied
//! by the leader's `Tick` entries), so every replica opens the same gates at the same entry.
use crate::deps::{self, DepKind, DepSpec, DepTarget, TargetState, Verdict};
use crate::events::Event;
use crate::ids::JobId;
use crate::job::{DepStatus, Job, JobSpec, TaskState};
use crate::state::State;

/// Why a gated job waits (Slurm's reason names).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    JobHeldUser,
    Dependency,
    DependencyNeverSatisfied,
    BeginTime,
}

/// What `hold`/`release` did with each job asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateChange {
    pub changed: Vec<JobId>,
    /// Jobs left as they were, with why.
    pub skipped: Vec<(JobId, String)>,
    pub unknown: Vec<JobId>,
}

impl From<GateChange> for crate::command::Response {
    fn from(c: GateChange) -> Self {
        crate::command::Response::JobsChanged {
            changed: c.changed,
            skipped: c.skipped,
            unknown: c.unknown,
        }
    }
}

impl State {
    /// May the job's pending tasks be placed now?
    pub fn eligible(&self, job: &Job) -> bool {
        self.gate(job).is_none()
    }

    /// The first thing that keeps the job out of the queue, in Slurm's order of report.
    pub fn gate(&self, job: &Job) -> Option<Gate> {
        if job.held {
            Some(Gate::JobHeldUser)
        } else if job.dep == DepStatus::Never {
            Some(Gate::DependencyNeverSatisfied)
        } else if job.dep == DepStatus::Waiting {
            Some(Gate::Dependency)
        } else if job.spec.begin_ms > self.now_ms {
            Some(Gate::BeginTime)
        } else {
            // Only tasks behind an `aftercorr` gate are left: the job waits on them.
            let corr = job.corr.as_deref().filter(|g| g.held() > 0 && !job.has_pending())?;
            Some(if corr.waiting.is_empty() {
                Gate::DependencyNeverSatisfied
            } else {
                Gate::Dependency
            })
        }
    }

    /// The earliest log time at which a timer opens a gate, fair-share is recomputed or a
    /// full scheduling pass is due: the leader proposes a `Tick` then (nothing else would
    /// apply an entry when the cluster is idle).
    pub fn next_wake_ms(&self) -> Option<u64> {
        if self.more_to_place {
            // A pass stopped at `max_starts`: go on now.
            return Some(self.now_ms);
        }
        let timer = self.timers.iter().next().map(|&(t, _)| t);
        [timer, self.fair_wake_ms(), self.full_pass_due_ms]
            .into_iter()
            .flatten()
            .min()
    }

    /// Checks a submitted dependency against the state and resolves it for evaluation:
    /// ids become (job, array index) targets, `singleton` becomes the earlier unfinished
    /// jobs of the same name and user. Unknown ids are refused, as Slurm does ("Job
    /// dependency problem"), which also means no cycle can ever form.
    pub(crate) fn resolve_dependency(&self, spec: &JobSpec) -> Result<Option<DepSpec>, String> {
        let Some(dep) = &spec.dependency else { return Ok(None) };
        let mut resolved = dep.clone();
        for clause in &mut resolved.clauses {
            if clause.kind == DepKind::Singleton {
                clause.targets = self.singleton_targets(&spec.name, &spec.user);
                continue;
            }
            for t in &mut clause.targets {
                *t = self.dep_target(*t)?;
            }
        }
        if let Some(why) = crate::aftercorr::refusal(&resolved) {
            return Err(why);
        }
        Ok(Some(resolved))
    }

    /// A written target (`41`, `41_3`, or a per-task job id of an array) as (job, index).
    fn dep_target(&self, t: DepTarget) -> Result<DepTarget, String> {
        let unknown = || {
            format!(
                "dependency on unknown job {}: no such job (Job dependency problem)",
                t.job
            )
        };
        let (job, index) = self.job_of(t.job).ok_or_else(unknown)?;
        let index = match (index, t.index) {
            (Some(_), Some(_)) => return Err(unknown()),
            (Some(i), None) | (None, Some(i)) => Some(i),
            (None, None) => None,
        };
        if let Some(i) = index {
            let in_array = job.spec.array.as_ref().and_then(|a| a.position_of(i)).is_some();
            if !in_array {
                return Err(format!(
                    "dependency on {}_{i}: job {} has no array task {i}",
                    job.id, job.id
                ));
            }
        }
        Ok(DepTarget { job: job.id, index })
    }

    fn singleton_targets(&self, name: &str, user: &str) -> Vec<DepTarget> {
        // A scan of the jobs, once per singleton submit (not per entry): acceptable next
        // to the submit's own cost; an index by (user, name) would pay on every submit.
        self.jobs
            .values()
            .filter(|j| j.end_ms.is_none() && j.spec.name == name && j.spec.user == user)
            .map(|j| DepTarget { job: j.id, index: None })
            .collect()
    }

    /// Gates a job just submitted (before it may enter the queue).
    pub(crate) fn gate_new(&mut self, id: JobId, dep: Option<DepSpec>) {
        let now = self.now_ms;
        let Some(job) = self.jobs.get_mut(&id) else { return };
        job.held = job.spec.hold;
        if job.spec.begin_ms > now {
            self.timers.insert((job.spec.begin_ms, id));
        }
        let Some(dep) = dep else { return };
        let (whole, corr) = crate::aftercorr::split(dep, job.is_array());
        if let Some(whole) = whole {
            job.dep = DepStatus::Waiting;
            self.deps.add(id, whole);
            self.reevaluate(id);
        }
        self.gate_corr(id, corr);
    }

    /// Re-evaluates a waiting job's dependency; opens its gate when it holds, cancels it
    /// when it never can and it asked for that.
    pub(crate) fn reevaluate(&mut self, id: JobId) {
        let Some(spec) = self.deps.spec(id).cloned() else {
            return;
        };
        let now = self.now_ms;
        let verdict = deps::evaluate(&spec, now, |t| self.target_state(t));
        if let Some(wake) = self.after_delay_wake(&spec) {
            self.timers.insert((wake, id));
        }
        let Some(job) = self.jobs.get_mut(&id) else { return };
        job.dep = match verdict {
            Verdict::Waiting => DepStatus::Waiting,
            Verdict::Satisfied => DepStatus::Satisfied,
            Verdict::Never => DepStatus::Never,
        };
        let kill = verdict == Verdict::Never && job.spec.kill_on_invalid_dep;
        match verdict {
            Verdict::Satisfied => {
                self.deps.resolve(id);
                self.open_if_eligible(id);
            }
            Verdict::Never if kill => {
                self.deps.resolve(id);
                self.cancel(&[id]);
            }
            _ => {}
        }
    }

    /// When an `after:ID+min` clause whose target has started will hold (a timer).
    fn after_delay_wake(&self, spec: &DepSpec) -> Option<u64> {
        let now = self.now_ms;
        spec.clauses
            .iter()
            .filter_map(|c| match c.kind {
                DepKind::After { delay_min } if delay_min > 0 => Some((c, delay_min)),
                _ => None,
            })
            .flat_map(|(c, delay)| {
                c.targets.iter().filter_map(move |t| {
                    let started = match self.target_state(*t) {
                        TargetState::Running { started_ms } => Some(started_ms),
                        TargetState::Ended { started_ms, .. } => started_ms,
                        TargetState::NotStarted => None,
                    }?;
                    Some(started.saturating_add(u64::from(delay) * 60_000))
                })
            })
            .filter(|&t| t > now)
            .min()
    }

    /// What a dependency sees of one target.
    pub(crate) fn target_state(&self, t: DepTarget) -> TargetState {
        // A target pruned from the state ended long ago; its dependants were evaluated
        // when it ended, so only an `after` delay can still ask.
        let Some(job) = self.jobs.get(&t.job) else {
            return TargetState::Ended {
                ok: false,
                started_ms: None,
            };
        };
        match t.index {
            None => whole_job_state(job),
            Some(i) => task_state(job, i),
        }
    }

    /// Puts a job whose gates are all open into the queue.
    pub(crate) fn open_if_eligible(&mut self, id: JobId) {
        let open = self.jobs.get(&id).is_some_and(|j| j.has_pending() && self.eligible(j));
        if open {
            self.enqueue(id);
        }
    }

    /// Opens the gates whose timers are due at the state's time.
    pub(crate) fn wake_due(&mut self) {
        while let Some(&(t, id)) = self.timers.iter().next() {
            if t > self.now_ms {
                break;
            }
            self.timers.remove(&(t, id));
            self.reevaluate(id);
            self.open_if_eligible(id);
        }
    }

    /// Re-evaluates the dependants of every job this entry started or ended, reading the
    /// entry's events from `from` on (including those this settling adds: a job cancelled
    /// for an invalid dependency ends, which may settle its own dependants). Returns where
    /// it stopped reading and whether any dependant was re-evaluated.
    pub(crate) fn settle_gates(&mut self, mut from: usize) -> (usize, bool) {
        let mut touched = false;
        if self.deps.is_empty() {
            return (self.changes.len(), touched);
        }
        while from < self.changes.len() {
            // What `aftercorr` dependants re-check: the one index a task's end names, all
            // held ones when tasks were cancelled before they ran or the target ended.
            let (target, ended, corr) = match self.changes.get(from) {
                Some(Event::TaskPlaced { key, .. }) | Some(Event::TaskTookOver { key, .. }) => {
                    (Some(key.job), false, None)
                }
                Some(Event::TaskEnded { key, .. }) => (Some(key.job), false, Some(Some(key.index))),
                // One array task cancelled before it ran (`afterok:41_3` can never hold).
                Some(Event::PendingCancelled { job, .. }) => (Some(*job), false, Some(None)),
                Some(Event::JobEnded { job, .. }) => (Some(*job), true, Some(None)),
                _ => (None, false, None),
            };
            from += 1;
            let Some(target) = target else { continue };
            for d in self.deps.dependants(target).to_vec() {
                touched = true;
                self.reevaluate(d);
                if let Some(index) = corr {
                    self.settle_corr(d, index);
                }
            }
            if ended {
                // Its state can no longer change: nobody needs to hear of it again.
                self.deps.forget_target(target);
                self.deps.resolve(target);
            }
        }
        (from, touched)
    }

    /// Holds jobs: their pending tasks stay pending until released (running ones go on).
    pub(crate) fn hold(&mut self, ids: &[JobId]) -> GateChange {
        self.change_hold(ids, true)
    }

    /// Releases held jobs.
    pub(crate) fn release(&mut self, ids: &[JobId]) -> GateChange {
        self.change_hold(ids, false)
    }

    /// Changes jobs none of whose tasks started: priority (re-sorts the queue), time limit
    /// (checked against the job's partition maximum), name.
    pub(crate) fn update(&mut self, ids: &[JobId], u: &crate::command::JobUpdate) -> GateChange {
        let mut out = GateChange::default();
        for &id in ids {
            let Some(job) = self.jobs.get(&id) else {
                out.unknown.push(id);
                continue;
            };
            if let Some(why) = self.update_refusal(job, u) {
                out.skipped.push((id, why));
                continue;
            }
            self.dequeue(id);
            if let Some(job) = self.jobs.get_mut(&id) {
                if let Some(p) = u.priority {
                    job.spec.priority = p;
                }
                if let Some(t) = u.time_limit_ms {
                    job.spec.time_limit_ms = t;
                }
                if let Some(n) = &u.name {
                    job.spec.name = n.clone();
                }
            }
            self.open_if_eligible(id);
            out.changed.push(id);
        }
        out
    }

    fn update_refusal(&self, job: &Job, u: &crate::command::JobUpdate) -> Option<String> {
        if job.is_finished() {
            return Some("already finished".into());
        }
        if job.start_ms.is_some() || !job.running.is_empty() {
            return Some(
                "its tasks already started or are queued on a node (only jobs that have not started can be updated)"
                    .into(),
            );
        }
        let t = u.time_limit_ms?;
        let max = job
            .spec
            .partition
            .split(',')
            .filter_map(|p| self.sched.partitions.get(p.trim()))
            .map(|p| p.max_time_ms)
            .filter(|&m| m > 0)
            .max();
        match max {
            Some(m) if t == 0 || t > m => Some(format!(
                "time limit above partition {}'s maximum {}",
                job.spec.partition,
                crate::parse::format_duration(m)
            )),
            _ => None,
        }
    }

    fn change_hold(&mut self, ids: &[JobId], hold: bool) -> GateChange {
        let mut out = GateChange::default();
        for &id in ids {
            let Some(job) = self.jobs.get(&id) else {
                out.unknown.push(id);
                continue;
            };
            if let Some(why) = hold_refusal(job, hold) {
                out.skipped.push((id, why));
                continue;
            }
            self.dequeue(id);
            if let Some(job) = self.jobs.get_mut(&id) {
                job.held = hold;
            }
            self.open_if_eligible(id);
            out.changed.push(id);
        }
        out
    }
}

/// Why hold/release leaves a job as it is.
fn hold_refusal(job: &Job, hold: bool) -> Option<String> {
    if job.is_finished() {
        return Some("already finished".into());
    }
    if job.count(TaskState::Pending) == 0 {
        return Some("no pending task (its tasks already run)".into());
    }
    match (hold, job.held) {
        (true, true) => Some("already held".into()),
        (false, false) => Some("not held".into()),
        _ => None,
    }
}

fn whole_job_state(job: &Job) -> TargetState {
    if job.end_ms.is_some() {
        return TargetState::Ended {
            ok: job.state() == TaskState::Completed,
            started_ms: job.start_ms,
        };
    }
    match job.start_ms {
        Some(started_ms) => TargetState::Running { started_ms },
        None => TargetState::NotStarted,
    }
}

/// One array task: running, ended with a record, completed (dispatched, no record, not
/// running), or not started.
fn task_state(job: &Job, index: u32) -> TargetState {
    if let Some(rt) = job.running.get(&index) {
        return match rt.after {
            Some(_) => TargetState::NotStarted,
            None => TargetState::Running {
                started_ms: rt.start_ms,
            },
        };
    }
    if let Some(t) = job.ended.get(&index) {
        let never = crate::query::never_started(t);
        return TargetState::Ended {
            ok: t.state == TaskState::Completed,
            started_ms: (!never).then_some(t.start_ms),
        };
    }
    let dispatched = job
        .spec
        .array
        .as_ref()
        .and_then(|a| a.position_of(index))
        .is_some_and(|p| p < job.next_position && !job.requeued.contains_key(&index))
        && !job.corr.as_deref().is_some_and(|g| g.holds(index));
    if dispatched {
        // Completed tasks of an array keep no record of their own.
        return TargetState::Ended {
            ok: true,
            started_ms: job.start_ms,
        };
    }
    if job.cancelled {
        return TargetState::Ended {
            ok: false,
            started_ms: None,
        };
    }
    TargetState::NotStarted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Response, TaskOutcome};
    use crate::ids::TaskKey;
    use crate::query::pending_reason;

    fn cluster(cpus: u32) -> State {
        crate::testkit::one_node(cpus)
    }

    fn spec(name: &str) -> JobSpec {
        JobSpec {
            argv: vec!["true".into()],
            name: name.into(),
            cpus: 1,
            chdir: "/".into(),
            user: "u".into(),
            ..JobSpec::default()
        }
    }

    fn submit(s: &mut State, spec: JobSpec) -> Result<JobId, String> {
        let now = s.now_ms;
        match s.apply(Command::Submit {
            request_id: String::new(),
            spec,
            now_ms: now,
        }) {
            Response::Submitted { job, .. } => Ok(job),
            Response::Rejected { reason } => Err(reason),
            other => panic!("{other:?}"),
        }
    }

    fn after(dep: &str, name: &str) -> JobSpec {
        JobSpec {
            dependency: Some(deps::parse(dep).unwrap()),
            ..spec(name)
        }
    }

    fn end(s: &mut State, job: JobId, code: i32) {
        let now = s.now_ms + 10;
        let attempt = s.running_task(TaskKey { job, index: 0 }).expect("running").attempt;
        s.apply(Command::Reports {
            node: "n1".into(),
            reports: vec![crate::testkit::report(
                TaskKey { job, index: 0 },
                attempt,
                TaskOutcome::Exited,
                code,
                now - 5,
                now,
            )],
            now_ms: now,
        });
    }

    fn running(s: &State, job: JobId) -> bool {
        s.jobs[&job].count(TaskState::Running) > 0
    }

    #[test]
    fn afterok_waits_for_success_and_starts_in_the_same_entry() {
        let mut s = cluster(4);
        let a = submit(&mut s, spec("a")).unwrap();
        let b = submit(&mut s, after(&format!("afterok:{a}"), "b")).unwrap();
        assert!(running(&s, a) && !running(&s, b));
        assert!(pending_reason(&s, &s.jobs[&b]).starts_with("Dependency"));
        assert!(!s.queue.iter().any(|k| k.2 == b), "a gated job is not in the queue");
        end(&mut s, a, 0);
        assert!(running(&s, b), "b starts in the entry that ended a");
        assert!(s.deps.is_empty(), "nothing left to settle: {:?}", s.deps);
    }

    #[test]
    fn afterok_on_a_failure_never_holds_and_can_cancel() {
        let mut s = cluster(4);
        let a = submit(&mut s, spec("a")).unwrap();
        let b = submit(&mut s, after(&format!("afterok:{a}"), "b")).unwrap();
        let c = submit(
            &mut s,
            JobSpec {
                kill_on_invalid_dep: true,
                ..after(&format!("afterok:{a}"), "c")
            },
        )
        .unwrap();
        let d = submit(&mut s, after(&format!("afternotok:{a}"), "d")).unwrap();
        end(&mut s, a, 3);
        assert_eq!(s.jobs[&b].dep, DepStatus::Never);
        assert!(pending_reason(&s, &s.jobs[&b]).starts_with("DependencyNeverSatisfied"));
        assert_eq!(
            s.jobs[&c].state(),
            TaskState::Cancelled,
            "--kill-on-invalid-dep cancels"
        );
        assert!(running(&s, d), "afternotok holds on a failure");
    }

    #[test]
    fn after_holds_once_the_target_started_and_afterany_once_it_ended() {
        let mut s = cluster(1);
        let blocker = submit(&mut s, spec("x")).unwrap();
        let a = submit(&mut s, spec("a")).unwrap();
        let b = submit(&mut s, after(&format!("after:{a}"), "b")).unwrap();
        let c = submit(&mut s, after(&format!("afterany:{a}"), "c")).unwrap();
        assert_eq!(s.jobs[&b].dep, DepStatus::Waiting, "a has not started");
        end(&mut s, blocker, 0);
        assert!(running(&s, a));
        assert_eq!(s.jobs[&b].dep, DepStatus::Satisfied, "a started");
        assert_eq!(s.jobs[&c].dep, DepStatus::Waiting);
        end(&mut s, a, 1);
        assert_eq!(s.jobs[&c].dep, DepStatus::Satisfied, "afterany holds on a failure too");
    }

    #[test]
    fn after_with_a_delay_opens_on_a_tick() {
        let mut s = cluster(2);
        let a = submit(&mut s, spec("a")).unwrap();
        let b = submit(&mut s, after(&format!("after:{a}+1"), "b")).unwrap();
        let wake = s.next_wake_ms().expect("a timer for the delay");
        assert_eq!(wake, s.jobs[&a].start_ms.unwrap() + 60_000);
        s.apply(Command::Tick { now_ms: wake - 1 });
        assert!(!running(&s, b));
        s.apply(Command::Tick { now_ms: wake });
        assert!(running(&s, b));
    }

    #[test]
    fn singleton_runs_one_job_of_a_name_at_a_time() {
        let mut s = cluster(4);
        let a = submit(&mut s, after("singleton", "step")).unwrap();
        let b = submit(&mut s, after("singleton", "step")).unwrap();
        let other = submit(&mut s, after("singleton", "other")).unwrap();
        let c = submit(&mut s, after("singleton", "step")).unwrap();
        assert!(running(&s, a) && running(&s, other));
        assert!(!running(&s, b) && !running(&s, c));
        end(&mut s, a, 1);
        assert!(running(&s, b) && !running(&s, c), "singleton holds on any end");
        end(&mut s, b, 0);
        assert!(running(&s, c));
        assert_eq!(s.jobs[&c].spec.dependency.as_ref().unwrap().to_string(), "singleton");
    }

    #[test]
    fn unknown_targets_are_refused() {
        let mut s = cluster(4);
        let err = submit(&mut s, after("afterok:99", "b")).unwrap_err();
        assert!(err.contains("unknown job 99"), "{err}");
        let a = submit(&mut s, spec("a")).unwrap();
        let err = submit(&mut s, after(&format!("afterok:{a}_3"), "b")).unwrap_err();
        assert!(err.contains("no array task 3"), "{err}");
        assert_eq!(s.jobs.len(), 1, "nothing was queued");
    }

    #[test]
    fn an_array_task_target_holds_when_that_task_ends() {
        let mut s = cluster(1);
        let arr = submit(
            &mut s,
            JobSpec {
                array: Some(crate::parse::parse_array("1-2").unwrap()),
                ..spec("arr")
            },
        )
        .unwrap();
        // Per-task job id of index 1 is the array's id; `arr_2` names index 2.
        let b = submit(&mut s, after(&format!("afterok:{arr}_1"), "b")).unwrap();
        let c = submit(&mut s, after(&format!("afterok:{arr}_2"), "c")).unwrap();
        let attempt = s.running_task(TaskKey { job: arr, index: 1 }).unwrap().attempt;
        s.apply(Command::Reports {
            node: "n1".into(),
            reports: vec![crate::testkit::report(
                TaskKey { job: arr, index: 1 },
                attempt,
                TaskOutcome::Exited,
                0,
                1,
                2_000,
            )],
            now_ms: 2_000,
        });
        assert_eq!(s.jobs[&b].dep, DepStatus::Satisfied);
        assert_eq!(s.jobs[&c].dep, DepStatus::Waiting, "index 2 only now runs");
    }

    #[test]
    fn hold_and_release_gate_pending_jobs_only() {
        let mut s = cluster(1);
        let a = submit(&mut s, spec("a")).unwrap();
        let b = submit(&mut s, spec("b")).unwrap();
        let held = submit(
            &mut s,
            JobSpec {
                hold: true,
                ..spec("h")
            },
        )
        .unwrap();
        let r = s.apply(Command::Hold {
            jobs: vec![a, b, 99],
            now_ms: 2_000,
        });
        let Response::JobsChanged {
            changed,
            skipped,
            unknown,
        } = r
        else {
            panic!()
        };
        assert_eq!((changed, unknown), (vec![b], vec![99]));
        assert_eq!(skipped[0].0, a, "a runs: nothing to hold");
        assert!(pending_reason(&s, &s.jobs[&held]).starts_with("JobHeldUser"));
        end(&mut s, a, 0);
        assert!(
            !running(&s, b) && !running(&s, held),
            "held jobs do not start on a free node"
        );
        s.apply(Command::Release {
            jobs: vec![held],
            now_ms: 3_000,
        });
        assert!(running(&s, held));
        let r = s.apply(Command::Release {
            jobs: vec![held],
            now_ms: 3_001,
        });
        assert!(
            matches!(r, Response::JobsChanged { ref skipped, .. } if skipped.len() == 1),
            "{r:?}"
        );
    }

    #[test]
    fn begin_time_waits_for_its_tick() {
        let mut s = cluster(1);
        let begin = s.now_ms + 5_000;
        let a = submit(
            &mut s,
            JobSpec {
                begin_ms: begin,
                ..spec("a")
            },
        )
        .unwrap();
        assert!(pending_reason(&s, &s.jobs[&a]).starts_with("BeginTime"));
        assert_eq!(s.next_wake_ms(), Some(begin));
        s.apply(Command::Tick { now_ms: begin });
        assert!(running(&s, a));
        assert_eq!(s.next_wake_ms(), None);
    }

    #[test]
    fn cancelling_a_waiting_job_forgets_its_dependency() {
        let mut s = cluster(1);
        let a = submit(&mut s, spec("a")).unwrap();
        let b = submit(&mut s, after(&format!("afterok:{a}"), "b")).unwrap();
        s.apply(Command::Cancel {
            jobs: vec![b],
            now_ms: 2_000,
        });
        assert_eq!(s.jobs[&b].state(), TaskState::Cancelled);
        end(&mut s, a, 0);
        assert!(s.deps.is_empty(), "{:?}", s.deps);
    }

    #[test]
    fn update_reorders_pending_jobs_and_refuses_started_ones() {
        let mut s = cluster(1);
        let a = submit(&mut s, spec("a")).unwrap();
        let b = submit(&mut s, spec("b")).unwrap();
        let c = submit(&mut s, spec("c")).unwrap();
        let up = crate::command::JobUpdate {
            priority: Some(5),
            time_limit_ms: Some(60_000),
            name: None,
        };
        let r = s.apply(Command::Update {
            jobs: vec![a, c],
            update: up,
            now_ms: 2_000,
        });
        let Response::JobsChanged { changed, skipped, .. } = r else {
            panic!()
        };
        assert_eq!(changed, vec![c]);
        assert!(skipped[0].1.contains("already started"), "{skipped:?}");
        assert_eq!(s.jobs[&c].spec.time_limit_ms, 60_000);
        end(&mut s, a, 0);
        assert!(running(&s, c) && !running(&s, b), "c now goes first");
    }
}
