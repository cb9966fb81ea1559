//! What applying a log entry changed, as typed events.
//!
//! Consumers (agent dispatch, `watch`, the event stream, accounting) act on these instead
//! of re-scanning the whole state after every entry: a scan per entry per node session made
//! the head's cost per task grow with the size of the cluster.
use serde::{Deserialize, Serialize};

use crate::command::Response;
use crate::ids::{JobId, NodeId, TaskKey};
use crate::job::TaskState;

/// One change made by applying an entry, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A job was accepted.
    JobSubmitted { job: JobId },
    /// A task was placed on a node: holding resources there, or queued behind another task
    /// on the node's agent.
    TaskPlaced { key: TaskKey, attempt: u32, node: NodeId },
    /// A queued task took over its predecessor's resources (the agent starts it by itself).
    TaskTookOver { key: TaskKey, attempt: u32, node: NodeId },
    /// The head asked the node to kill a task (cancel).
    KillRequested { key: TaskKey, attempt: u32, node: NodeId },
    /// A running task is stopped for the pending job `by` (`preempt`); a `KillRequested`
    /// follows. `requeue`: it goes back to pending when it ended, else it is cancelled.
    Preempted {
        key: TaskKey,
        attempt: u32,
        node: NodeId,
        by: JobId,
        requeue: bool,
    },
    /// An attempt ended. `state` is the task's new state: terminal, or `Pending` for a
    /// task lost with its node that runs again.
    TaskEnded {
        key: TaskKey,
        attempt: u32,
        node: NodeId,
        state: TaskState,
        /// Times, exit status and usage from the report, for the accounting store.
        #[serde(default)]
        end: crate::TaskEnd,
    },
    /// Pending tasks of a job ended without running (cancel).
    PendingCancelled { job: JobId, tasks: u64 },
    /// Every task of the job is terminal.
    JobEnded { job: JobId, state: TaskState },
    /// A node's record changed: registered, disconnected, lost, drained, resumed, forgotten.
    NodeChanged { node: NodeId },
    /// Tasks of the job went back to pending (`rudel requeue`); a finished job is live again.
    JobRequeued { job: JobId },
    /// A step of the job ended and is recorded (accounting only).
    StepEnded { record: Box<crate::steps::StepRecord> },
}

impl Event {
    /// The node whose agent must hear about this change, if any.
    pub fn node(&self) -> Option<NodeId> {
        match *self {
            Event::TaskPlaced { node, .. }
            | Event::TaskTookOver { node, .. }
            | Event::KillRequested { node, .. }
            | Event::Preempted { node, .. }
            | Event::TaskEnded { node, .. }
            | Event::NodeChanged { node } => Some(node),
            Event::JobSubmitted { .. }
            | Event::PendingCancelled { .. }
            | Event::JobEnded { .. }
            | Event::JobRequeued { .. }
            | Event::StepEnded { .. } => None,
        }
    }

    /// The job this change belongs to, if any.
    pub fn job(&self) -> Option<JobId> {
        match *self {
            Event::JobSubmitted { job }
            | Event::PendingCancelled { job, .. }
            | Event::JobEnded { job, .. }
            | Event::JobRequeued { job } => Some(job),
            Event::TaskPlaced { key, .. }
            | Event::TaskTookOver { key, .. }
            | Event::KillRequested { key, .. }
            | Event::Preempted { key, .. }
            | Event::TaskEnded { key, .. } => Some(key.job),
            Event::StepEnded { ref record } => Some(record.job),
            Event::NodeChanged { .. } => None,
        }
    }
}

/// The result of applying one log entry: the answer for whoever proposed it, and what
/// changed (including the scheduling pass that follows every entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOutput {
    pub response: Response,
    pub events: Vec<Event>,
    /// Placements the scheduling pass planned but the commit refused: a scheduler bug,
    /// for the head to log loudly. Nothing of them was applied.
    pub violations: Vec<crate::invariants::Violation>,
}
