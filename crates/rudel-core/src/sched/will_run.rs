//! `sbatch --test-only`: when and where a job would start if submitted now, without
//! submitting it. As Slurm's, the estimate counts the work that runs (each task ending at
//! its time limit) and not the jobs that wait: it is the earliest start the job could get,
//! the one backfill would reserve for it at the head of the queue.
//!
//! Worked out on a copy of the state (the submit's checks, partition and account
//! resolution and the placement rules all apply unchanged), with the queue emptied and
//! time-based backfill on, so that the job is the first one the pass looks at. The copy
//! costs time and memory in the size of the state; the command is a rare, manual one.
use super::backfill::{BackfillMode, BACKFILL_VERSION};
use crate::command::{Command, Response};
use crate::job::JobSpec;
use crate::state::State;

/// The estimate for one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WillRun {
    /// Log time (ms) it would start by; `None`: unknown (it waits for a task without a
    /// time limit, or for something other than resources: `reason` says what).
    pub start_ms: Option<u64>,
    /// The nodes it would start on (with `start_ms`).
    pub nodes: Vec<String>,
    /// Cpus it would hold (all its tasks' or slices').
    pub cpus: u32,
    /// The partition it would run in.
    pub partition: String,
    /// Why it would wait, when it would not start at once.
    pub reason: String,
}

/// The estimate, or why such a job would be refused, worked out on `s`, a copy of the
/// state (taken by the caller, so that it holds the state's lock only for the copy).
pub fn will_run(mut s: State, spec: JobSpec) -> Result<WillRun, String> {
    s.queue.clear();
    s.blocked_job = None;
    s.reservation = None;
    s.later_reservations.clear();
    s.sched.version = s.sched.version.max(BACKFILL_VERSION);
    s.sched.backfill.mode = BackfillMode::Easy;
    s.sched.backfill.interval_s = 0;
    let now_ms = s.now_ms;
    let id = match s.apply(Command::Submit {
        request_id: String::new(),
        spec,
        now_ms,
    }) {
        Response::Submitted { job, .. } => job,
        Response::Rejected { reason } => return Err(reason),
        other => return Err(format!("unexpected answer to the submit: {other:?}")),
    };
    if s.sched.version >= super::PASSES_VERSION && s.jobs.get(&id).is_some_and(|j| j.running.is_empty()) {
        // The submit ran an ordinary pass, which estimates nothing: the full one does.
        s.apply(Command::Tick { now_ms });
    }
    let job = s.jobs.get(&id).ok_or("the job vanished from the copy")?;
    let partition = job.spec.partition.clone();
    if !job.running.is_empty() {
        let cpus: u64 = job
            .running
            .values()
            .map(|rt| crate::state::running::task_cpus(rt, job.spec.cpus))
            .sum();
        let cpus = u32::try_from(cpus).unwrap_or(u32::MAX);
        return Ok(WillRun {
            start_ms: Some(now_ms),
            nodes: crate::query::job_nodes(job),
            cpus,
            partition,
            reason: String::new(),
        });
    }
    let per_task = job.spec.cpus.max(1);
    let cpus = match job.spec.alloc.as_deref() {
        Some(a) => per_task.saturating_mul(a.ntasks.unwrap_or(a.nodes_min.max(1))),
        None => per_task,
    };
    let reason = crate::explain::explain(&s, id).map(|e| e.reason).unwrap_or_default();
    match s.reservation.as_ref().filter(|r| r.job == id) {
        Some(r) => Ok(WillRun {
            start_ms: r.start_ms,
            nodes: r
                .start_ms
                .map(|_| {
                    r.nodes
                        .iter()
                        .filter_map(|n| s.nodes.get(*n as usize).map(|n| n.name.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            cpus,
            partition,
            reason,
        }),
        None => Ok(WillRun {
            start_ms: None,
            nodes: Vec::new(),
            cpus,
            partition,
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{one_node, spec, submit};

    fn asking(cpus: u32) -> JobSpec {
        JobSpec { cpus, ..spec() }
    }

    #[test]
    fn an_idle_node_starts_it_now_and_nothing_is_submitted() {
        let s = one_node(2);
        let w = will_run(s.clone(), asking(2)).unwrap();
        assert_eq!(w.start_ms, Some(s.now_ms));
        assert_eq!(w.nodes, ["n1"]);
        assert_eq!(w.cpus, 2);
        assert!(s.jobs.is_empty(), "the state itself is untouched");
    }

    #[test]
    fn a_busy_node_frees_at_the_running_tasks_limit_whatever_waits() {
        let mut s = one_node(2);
        let limited = JobSpec {
            time_limit_ms: 60_000,
            ..asking(2)
        };
        submit(&mut s, limited);
        // A job already waiting does not push the estimate back (Slurm's rule too).
        submit(&mut s, asking(2));
        let w = will_run(s.clone(), asking(1)).unwrap();
        assert_eq!(w.start_ms, Some(1_000 + 60_000));
        assert_eq!(w.nodes, ["n1"]);
        assert_eq!(s.jobs.len(), 2);
    }

    #[test]
    fn behind_a_task_without_a_limit_the_start_is_unknown() {
        let mut s = one_node(1);
        submit(&mut s, asking(1));
        let w = will_run(s.clone(), asking(1)).unwrap();
        assert_eq!(w.start_ms, None);
        assert!(w.nodes.is_empty());
    }

    #[test]
    fn a_job_no_node_can_run_is_refused_with_the_submits_reason() {
        let s = one_node(2);
        let e = will_run(s.clone(), asking(64)).unwrap_err();
        assert!(e.contains("no node can ever run this job"), "{e}");
    }
}
