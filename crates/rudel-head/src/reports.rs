//! Task results from all agents, committed in batches: many reports (from many nodes) go
//! into one log entry, so a busy cluster pays one fsync per batch, not per task.
use std::time::Duration;

use rudel_core::{Command, TaskKey, TaskReport};
use tokio::sync::mpsc;

use crate::proposer::{now_ms, ProposeError, Proposer};

/// Reports from one agent session, and where to send the acknowledgement once committed.
pub struct ReportBatch {
    pub node: String,
    pub reports: Vec<TaskReport>,
    pub ack: mpsc::UnboundedSender<Vec<(TaskKey, u32)>>,
}

/// Most reports committed in one log entry.
const MAX_BATCH: usize = 20_000;

/// Proposals in flight at once: a report that arrives while one batch is being committed
/// does not wait for that commit (openraft appends concurrent proposals together).
const MAX_IN_FLIGHT: usize = 4;

/// Runs until every sender is dropped: receives batches, commits them, acknowledges them.
pub async fn run(proposer: Proposer, mut rx: mpsc::UnboundedReceiver<ReportBatch>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut in_flight = tokio::task::JoinSet::new();
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut batches = vec![first];
        let mut n = batches[0].reports.len();
        while n < MAX_BATCH {
            match rx.try_recv() {
                Ok(b) => {
                    n += b.reports.len();
                    batches.push(b);
                }
                Err(_) => break,
            }
        }
        let proposer = proposer.clone();
        in_flight.spawn(async move {
            commit(&proposer, batches, n).await;
            drop(permit);
        });
        // Reap finished proposals so the set does not grow.
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

async fn commit(proposer: &Proposer, batches: Vec<ReportBatch>, n: usize) {
    let now = now_ms();
    let cmd = Command::Batch(
        batches
            .iter()
            .map(|b| Command::Reports {
                node: b.node.clone(),
                reports: b.reports.clone(),
                now_ms: now,
            })
            .collect(),
    );
    let mut delay = Duration::from_millis(50);
    loop {
        let t0 = std::time::Instant::now();
        let res = proposer.propose(cmd.clone()).await;
        tracing::trace!(target: "latency", us = t0.elapsed().as_micros() as u64, n, "commit");
        match res {
            Ok(_) => {
                for b in &batches {
                    let keys = b.reports.iter().map(|r| (r.key, r.attempt)).collect();
                    // A closed session just means the agent will resend on reconnect.
                    let _ = b.ack.send(keys);
                }
                return;
            }
            Err(e @ ProposeError::NotLeader { .. }) => {
                // Unacknowledged: the agents keep these in their journals and resend
                // them to the new leader.
                tracing::warn!(error = %e, reports = n, "dropping report batch; agents will resend");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, reports = n, retry_in = ?delay, "committing reports failed");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}
