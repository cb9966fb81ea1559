//! Queue orders: which pending job the scheduler considers first.
use serde::{Deserialize, Serialize};

use crate::ids::JobId;
use crate::job::Job;

/// The order of the pending queue. A closed set chosen in the replicated configuration, so
/// every head orders the queue the same way from the same log index on.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Higher `--priority` first, then submission order (the default).
    #[default]
    Priority,
    /// Submission order only; `--priority` is ignored.
    Fifo,
    /// Shortest time limit first (shortest-job-next by what users declare); jobs without a
    /// time limit last; ties in submission order. Priority is ignored.
    Sjf,
    /// One job per user in turn (the first job of every user, then the second, ...), in
    /// submission order within a turn; see `state/turns.rs`. Needs scheduling version 2.
    RoundRobin,
    /// Slurm's multifactor priority (age, fair-share, job size, partition, own priority),
    /// recomputed at Tick entries; see `sched/multifactor.rs`. Needs scheduling version 4.
    Multifactor,
}

/// Position of a job in the queue: smaller first: (-partition tier, the order's rank, id).
/// Computed from fields that do not change while the job waits (the queue is rebuilt when
/// the configuration changes), so a key stored in the queue stays valid.
pub type QueueKey = (i64, i64, JobId);

impl Order {
    /// Every order, for help texts and errors.
    pub const ALL: [Order; 5] = [
        Order::Priority,
        Order::Fifo,
        Order::Sjf,
        Order::RoundRobin,
        Order::Multifactor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Order::Priority => "priority",
            Order::Fifo => "fifo",
            Order::Sjf => "sjf",
            Order::RoundRobin => "round_robin",
            Order::Multifactor => "multifactor",
        }
    }

    pub fn parse(s: &str) -> Option<Order> {
        Order::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The job's (rank, id) in this order.
    pub fn key(self, job: &Job) -> (i64, JobId) {
        let primary = match self {
            Order::Priority => -i64::from(job.spec.priority),
            Order::Fifo => 0,
            Order::Sjf if job.spec.time_limit_ms == 0 => i64::MAX,
            Order::Sjf => i64::try_from(job.spec.time_limit_ms).unwrap_or(i64::MAX),
            Order::RoundRobin => i64::try_from(job.turn).unwrap_or(i64::MAX),
            // The priority stored when the job entered the queue or was last re-keyed (a
            // key must not change while the queue holds it).
            Order::Multifactor => job.mf_priority.saturating_neg(),
        };
        (primary, job.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobSpec;

    fn job(id: JobId, priority: i32, time_limit_ms: u64) -> Job {
        let spec = JobSpec {
            priority,
            time_limit_ms,
            cpus: 1,
            ..JobSpec::default()
        };
        Job::new(id, spec, 0)
    }

    fn sorted(order: Order, jobs: &[Job]) -> Vec<JobId> {
        let mut keys: Vec<(i64, JobId)> = jobs.iter().map(|j| order.key(j)).collect();
        keys.sort();
        keys.into_iter().map(|(_, id)| id).collect()
    }

    #[test]
    fn each_order_sorts_as_documented() {
        let jobs = [job(1, 0, 0), job(2, 5, 60_000), job(3, 0, 1_000), job(4, 5, 0)];
        assert_eq!(sorted(Order::Priority, &jobs), [2, 4, 1, 3]);
        assert_eq!(sorted(Order::Fifo, &jobs), [1, 2, 3, 4]);
        assert_eq!(sorted(Order::Sjf, &jobs), [3, 2, 1, 4]);
        for o in Order::ALL {
            assert_eq!(Order::parse(o.as_str()), Some(o));
        }
        assert_eq!(Order::parse("fair"), None);
    }
}
