//! Ended job steps go into the replicated log (`Command::StepEnded`), several per entry:
//! they are accounting, so they must outlive the leader that relayed the step (a new
//! leader, and every head's history store, has them from the log).
//!
//! The relay hands records over a bounded channel and never waits: a full channel (the log
//! not committing for a long while) drops the record with a warning rather than holding
//! up the agent sessions that relay step output.
use rudel_core::steps::{StepRecord, STEP_RECORD_VERSION};
use rudel_core::Command;
use tokio::sync::mpsc;

use crate::proposer::{now_ms, Proposer};

/// Records waiting for the log; past this, new ones are dropped (and logged).
pub const QUEUE: usize = 10_000;
/// Most step records in one log entry.
const MAX_BATCH: usize = 1_000;

/// The sending side, held by the agent service.
pub type Sender = mpsc::Sender<StepRecord>;

/// Queues `r` for the log; false (and a warning) if the queue is full or gone.
pub fn send(tx: &Sender, r: StepRecord) -> bool {
    let (job, step) = (r.job, r.step);
    match tx.try_send(r) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(job, step, error = %e, "step record not queued for accounting");
            false
        }
    }
}

/// Runs until every sender is dropped (or the head aborts it at shutdown): commits the
/// queued records in batches. A record the log refuses (its job was already pruned, the
/// job's step cap) or that fails to commit (this head lost leadership) is logged, not
/// retried: the step is over either way.
pub async fn run(proposer: Proposer, mut rx: mpsc::Receiver<StepRecord>) {
    while let Some(first) = rx.recv().await {
        let mut records = vec![first];
        while records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => records.push(r),
                Err(_) => break,
            }
        }
        let n = records.len();
        let now = now_ms();
        let cmd = Command::Batch(
            records
                .into_iter()
                .map(|record| Command::StepEnded {
                    version: STEP_RECORD_VERSION,
                    record,
                    now_ms: now,
                })
                .collect(),
        );
        match proposer.propose(cmd).await {
            Ok(rudel_core::Response::Batch(rs)) => {
                for r in rs {
                    if let rudel_core::Response::Rejected { reason } = r {
                        tracing::info!(reason = %reason, "step record not kept");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(records = n, error = %e, "step records not committed"),
        }
    }
}
