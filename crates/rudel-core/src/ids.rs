//! Identifiers shared by every part of rudel.
use serde::{Deserialize, Serialize};

/// A job id: assigned by the state machine, monotonic, never reused.
pub type JobId = u64;

/// Index of a node in the state's node table (stable for the life of the cluster).
pub type NodeId = u32;

/// One task: a job and its array index (0 for a job that is not an array).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskKey {
    pub job: JobId,
    pub index: u32,
}

impl std::fmt::Display for TaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.job, self.index)
    }
}
