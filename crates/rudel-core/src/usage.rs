//! What a task used, as its agent measured it (accounting: `sacct` MaxRSS, TotalCPU).
//!
//! Carried in the task report (a log entry) and copied, unchanged, into the
//! `Event::TaskEnded` the apply emits; the replicated state keeps none of it (it would
//! grow with every task), the accounting store does.
use serde::{Deserialize, Serialize};

/// Resource use of one task attempt; zero when unknown (older agents, lost tasks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUsage {
    /// Peak resident set size in KiB (`ru_maxrss`: the largest single process among the
    /// leader and its waited-for descendants, not their sum).
    #[serde(default)]
    pub max_rss_kb: u64,
    /// User CPU time in microseconds.
    #[serde(default)]
    pub user_cpu_us: u64,
    /// System CPU time in microseconds.
    #[serde(default)]
    pub sys_cpu_us: u64,
}

impl TaskUsage {
    /// User plus system CPU time in microseconds.
    pub fn total_cpu_us(&self) -> u64 {
        self.user_cpu_us.saturating_add(self.sys_cpu_us)
    }
}

/// How one task attempt ended, as its report said (or as the head made up for a lost
/// node): what the accounting store records per task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEnd {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub usage: TaskUsage,
}
