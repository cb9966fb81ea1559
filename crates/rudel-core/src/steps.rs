//! Job steps in accounting (`sacct` shows `ID.0`, `ID.1`, ...): the record of one ended
//! step, as the leader appends it to the log (`Command::StepEnded`) and every head applies
//! it into its accounting store (through `Event::StepEnded`).
//!
//! The replicated state keeps only a count per job (`Job::steps_recorded`, bounded by
//! [`MAX_STEPS_PER_JOB`]) and the next free step id (`Job::next_step`), never the records
//! themselves: a job running 1,000,000 one-second steps must not grow the state (and every
//! snapshot) by a million records. Past the cap a step still runs; its end is counted in
//! `Job::steps_dropped` and not recorded (Slurm bounds steps per job too: MaxStepCount).
use serde::{Deserialize, Serialize};

use crate::ids::JobId;

/// Step records accepted per job; later ones are counted, not recorded.
pub const MAX_STEPS_PER_JOB: u32 = 10_000;

/// What a `StepEnded` entry means to apply. A head refuses (stops on) an entry with a
/// higher version than this, as it does for scheduling versions: applying a record whose
/// meaning changed with older code would silently give another state than its peers'.
pub const STEP_RECORD_VERSION: u32 = 1;

/// Longest step name kept (srun -J is user input; longer names are cut at a char boundary).
pub const MAX_STEP_NAME: usize = 256;
/// Longest node list kept (compressed hostlist).
pub const MAX_STEP_NODELIST: usize = 4096;

/// How a step ended, as Slurm names step states.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepState {
    /// Every task exited 0.
    Completed,
    /// A task exited non-zero, was killed by a signal of its own, or could not start.
    Failed,
    /// Killed on request (srun's Ctrl-C, `-K` after a failing task, srun gone) or because
    /// its allocation ended (cancel, time limit).
    Cancelled,
    /// Its allocation was lost with a node.
    NodeFail,
}

impl StepState {
    /// rudel's state name (the job states' spelling: `sacct` maps both the same way).
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Completed => "completed",
            StepState::Failed => "failed",
            StepState::Cancelled => "cancelled",
            StepState::NodeFail => "node_fail",
        }
    }
}

/// One ended step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub job: JobId,
    /// The step id within the job (0, 1, ...).
    pub step: u32,
    /// srun's `-J` or the command's basename.
    pub name: String,
    /// Compressed hostlist of the step's nodes.
    pub nodelist: String,
    pub ntasks: u32,
    /// CPUs the step's tasks hold (tasks × cpus per task).
    pub cpus: u32,
    /// Wall-clock milliseconds since the Unix epoch (the leader's clock).
    pub start_ms: u64,
    pub end_ms: u64,
    pub state: StepState,
    /// The highest task exit code (0 when the worst task was killed by a signal).
    pub exit_code: i32,
    /// The signal that killed a task (0: none).
    pub signal: i32,
}

impl StepRecord {
    /// Cuts user-given text to its bounds, the same on every head.
    pub fn bounded(mut self) -> StepRecord {
        cut(&mut self.name, MAX_STEP_NAME);
        cut(&mut self.nodelist, MAX_STEP_NODELIST);
        self
    }
}

fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

/// A step's state and Slurm exit code from its tasks' ends: `(code, signal)` per task. A
/// task that could not start is `(Some(2), 0)` (what srun exits with for it); one that
/// ended with no status at all is `(None, 0)` and counts as 1, as srun counts it. Slurm
/// reports the highest exit code of the step's tasks; a task killed by a signal shows as
/// `0:SIG` unless another task exited non-zero. `killed`: the step was killed on request
/// or with its allocation.
pub fn outcome(tasks: &[(Option<i32>, i32)], killed: bool) -> (StepState, i32, i32) {
    let code = tasks
        .iter()
        .map(|t| match t {
            (Some(c), _) => *c,
            (None, 0) => 1,
            (None, _) => 0,
        })
        .max()
        .unwrap_or(0);
    let signal = tasks.iter().map(|t| t.1).find(|s| *s != 0).unwrap_or(0);
    let state = if killed {
        StepState::Cancelled
    } else if code != 0 || signal != 0 {
        StepState::Failed
    } else {
        StepState::Completed
    };
    if code != 0 {
        (state, code, 0)
    } else {
        (state, 0, signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_is_slurms() {
        assert_eq!(
            outcome(&[(Some(0), 0), (Some(0), 0)], false),
            (StepState::Completed, 0, 0)
        );
        assert_eq!(
            outcome(&[(Some(0), 0), (Some(3), 0), (Some(1), 0)], false),
            (StepState::Failed, 3, 0)
        );
        assert_eq!(outcome(&[(Some(0), 0), (None, 9)], false), (StepState::Failed, 0, 9));
        assert_eq!(outcome(&[(Some(2), 0), (None, 9)], false), (StepState::Failed, 2, 0));
        assert_eq!(
            outcome(&[(None, 0)], false),
            (StepState::Failed, 1, 0),
            "no exit status"
        );
        assert_eq!(outcome(&[(None, 9)], true), (StepState::Cancelled, 0, 9));
    }

    #[test]
    fn bounded_cuts_at_char_boundaries() {
        let r = StepRecord {
            job: 1,
            step: 0,
            name: "é".repeat(200),
            nodelist: "n1".into(),
            ntasks: 1,
            cpus: 1,
            start_ms: 0,
            end_ms: 0,
            state: StepState::Completed,
            exit_code: 0,
            signal: 0,
        }
        .bounded();
        assert!(r.name.len() <= MAX_STEP_NAME && r.name.chars().all(|c| c == 'é'));
    }
}
