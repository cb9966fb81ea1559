//! What the leader remembers of a live step for accounting, and the record it makes of it
//! when the step ends (all its tasks ended, or it was killed with its allocation). The
//! record goes to the log through `step_records.rs`.
use rudel_core::job::TaskState;
use rudel_core::steps::{outcome, StepRecord, StepState};
use rudel_proto::v1 as pb;

/// A live step's accounting: fixed at start, plus each task's end as it comes.
#[derive(Debug, Clone, Default)]
pub struct StepAcct {
    pub name: String,
    pub nodelist: String,
    pub ntasks: u32,
    pub cpus: u32,
    pub start_ms: u64,
    /// (exit code, signal) of each ended task (see `steps::outcome`).
    ends: Vec<(Option<i32>, i32)>,
    /// Killed on request (srun's Ctrl-C, srun gone) before any task failed.
    killed: bool,
}

/// The step's name for accounting: srun's `-J`, else the command's basename (Slurm's).
pub fn step_name(r: &pb::StepRequest) -> String {
    if !r.name.is_empty() {
        return r.name.clone();
    }
    let cmd = r.argv.first().map(String::as_str).unwrap_or_default();
    cmd.rsplit('/').next().unwrap_or(cmd).to_string()
}

impl StepAcct {
    /// A step starting now (`start_ms`) with `ntasks` tasks of `cpus_per_task` each.
    pub fn new(name: String, nodelist: String, ntasks: u32, cpus_per_task: u32, start_ms: u64) -> StepAcct {
        StepAcct {
            name,
            nodelist,
            ntasks,
            cpus: ntasks.saturating_mul(cpus_per_task.max(1)),
            start_ms,
            ..Default::default()
        }
    }

    /// One task ended. A task that could not start counts as exit code 2 (what srun
    /// exits with for it).
    pub fn task_ended(&mut self, e: &pb::StepTaskEnd) {
        let end = if !e.error.is_empty() {
            (Some(2), 0)
        } else {
            (e.exit_code, e.signal.unwrap_or(0))
        };
        self.ends.push(end);
    }

    /// The step is being killed on request. After a task already failed (`srun -K`) the
    /// step stays FAILED with that task's code, as Slurm reports it.
    pub fn kill_requested(&mut self) {
        let failed = self
            .ends
            .iter()
            .any(|&(c, s)| c.is_some_and(|c| c != 0) || s != 0 || c.is_none());
        if !failed {
            self.killed = true;
        }
    }

    /// The record of the step, ended at `end_ms`. `allocation_end`: the step was cut
    /// short because its allocation ended (with the state its task ended in, if it did).
    pub fn record(&self, job: u64, step: u32, end_ms: u64, allocation_end: Option<Option<TaskState>>) -> StepRecord {
        let (mut state, exit_code, signal) = outcome(&self.ends, self.killed || allocation_end.is_some());
        if let Some(Some(TaskState::NodeFail)) = allocation_end {
            state = StepState::NodeFail;
        }
        StepRecord {
            job,
            step,
            name: self.name.clone(),
            nodelist: self.nodelist.clone(),
            ntasks: self.ntasks,
            cpus: self.cpus,
            start_ms: self.start_ms,
            end_ms: end_ms.max(self.start_ms),
            state,
            exit_code,
            signal,
        }
        .bounded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(code: Option<i32>, signal: Option<i32>, error: &str) -> pb::StepTaskEnd {
        pb::StepTaskEnd {
            exit_code: code,
            signal,
            error: error.into(),
            ..Default::default()
        }
    }

    #[test]
    fn names_are_srun_j_or_the_basename() {
        let mut r = pb::StepRequest {
            argv: vec!["/usr/bin/hostname".into()],
            ..Default::default()
        };
        assert_eq!(step_name(&r), "hostname");
        r.name = "mine".into();
        assert_eq!(step_name(&r), "mine");
    }

    #[test]
    fn records_follow_slurm() {
        let mut a = StepAcct::new("sh".into(), "n[1-2]".into(), 3, 0, 100);
        for _ in 0..3 {
            a.task_ended(&end(Some(3), None, ""));
        }
        let r = a.record(7, 1, 200, None);
        assert_eq!((r.state, r.exit_code, r.signal, r.cpus), (StepState::Failed, 3, 0, 3));

        let mut k = StepAcct::new("sleep".into(), "n1".into(), 1, 2, 100);
        k.kill_requested();
        k.task_ended(&end(None, Some(9), ""));
        let r = k.record(7, 2, 150, None);
        assert_eq!(
            (r.state, r.exit_code, r.signal, r.cpus),
            (StepState::Cancelled, 0, 9, 2)
        );

        let mut bad = StepAcct::new("x".into(), "n1".into(), 2, 1, 100);
        bad.task_ended(&end(Some(1), None, ""));
        bad.kill_requested();
        bad.task_ended(&end(None, Some(9), ""));
        assert_eq!(
            bad.record(7, 3, 150, None).state,
            StepState::Failed,
            "srun -K after a failure"
        );

        let mut spawn = StepAcct::new("nope".into(), "n1".into(), 1, 1, 100);
        spawn.task_ended(&end(None, None, "no such file"));
        assert_eq!(spawn.record(7, 4, 150, None).exit_code, 2);

        let lost = StepAcct::new("x".into(), "n1".into(), 1, 1, 100);
        assert_eq!(
            lost.record(7, 5, 50, Some(Some(TaskState::NodeFail))).state,
            StepState::NodeFail
        );
        assert_eq!(lost.record(7, 5, 50, Some(None)).state, StepState::Cancelled);
        assert_eq!(lost.record(7, 5, 50, None).end_ms, 100, "never ends before it started");
    }
}
