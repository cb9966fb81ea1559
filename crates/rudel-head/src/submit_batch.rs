//! Submits committed together: the submits that arrive while one commit is under way go
//! into the next log entry as one `Command::Batch`, so concurrent clients share an fsync
//! and a scheduling pass instead of queueing for one each.
//!
//! Measured before (issue 12, 2-core VM with other builds running): 20 local clients got
//! 123-138 submits/s while the head used 12% of one core. Each submit was its own log
//! entry, and openraft appends one entry per proposal, each a redb commit with its fsync
//! (3-7 ms on that loaded disk), in turn. A submit alone is proposed at once, as a plain
//! `Command::Submit` (the log is what it was): batching adds no wait to it.
//!
//! Durability is unchanged: a caller hears of its job only after the entry holding it is
//! committed (fsynced on a quorum) and applied, as before.
use rudel_core::{Command, Response};
use tokio::sync::{mpsc, oneshot};

use crate::proposer::{ProposeError, Proposer};

/// How large one batch may grow.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Most commands in one log entry.
    pub max_commands: usize,
    /// Most request bytes (protobuf size, a stand-in for the entry's size) in one entry,
    /// so a burst of large scripts does not make one huge entry for the followers; a
    /// single larger submit still goes alone.
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_commands: 256,
            max_bytes: 4 << 20,
        }
    }
}

/// A command waiting for its batch, and where its result goes.
struct Pending {
    cmd: Command,
    bytes: usize,
    reply: oneshot::Sender<Result<Response, ProposeError>>,
}

/// The handle handlers propose through (cheap to clone).
#[derive(Clone)]
pub struct SubmitBatcher {
    tx: mpsc::UnboundedSender<Pending>,
}

impl SubmitBatcher {
    /// Starts the batching task; it ends when every handle is dropped.
    pub fn start(proposer: Proposer, limits: BatchLimits) -> (SubmitBatcher, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (SubmitBatcher { tx }, tokio::spawn(run(proposer, rx, limits)))
    }

    /// Proposes `cmd` (of about `bytes` request bytes) in the next batch and returns what
    /// applying it produced. Waits at most for the commit under way and its own (each
    /// bounded by the proposer's timeout).
    pub async fn propose(&self, cmd: Command, bytes: usize) -> Result<Response, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Pending { cmd, bytes, reply }).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> ProposeError {
    ProposeError::Fatal("the head is shutting down (its submit queue stopped)".into())
}

/// Takes what is queued, commits it, repeats: one batch in flight, so the next one
/// gathers while this one commits.
async fn run(proposer: Proposer, mut rx: mpsc::UnboundedReceiver<Pending>, limits: BatchLimits) {
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let (batch, next) = take_batch(first, &mut rx, limits);
        carry = next;
        commit(&proposer, batch).await;
    }
}

/// `first` and what is queued behind it, within `limits`; the command that would have
/// crossed the byte limit is returned apart, to start the next batch.
fn take_batch(
    first: Pending,
    rx: &mut mpsc::UnboundedReceiver<Pending>,
    limits: BatchLimits,
) -> (Vec<Pending>, Option<Pending>) {
    let mut bytes = first.bytes;
    let mut batch = vec![first];
    while batch.len() < limits.max_commands {
        match rx.try_recv() {
            Ok(p) if bytes.saturating_add(p.bytes) > limits.max_bytes => return (batch, Some(p)),
            Ok(p) => {
                bytes += p.bytes;
                batch.push(p);
            }
            Err(_) => break,
        }
    }
    (batch, None)
}

/// Proposes `batch` as one entry and hands each caller its own result.
async fn commit(proposer: &Proposer, batch: Vec<Pending>) {
    if batch.len() == 1 {
        for p in batch {
            let _ = p.reply.send(proposer.propose(p.cmd).await);
        }
        return;
    }
    let n = batch.len();
    let (cmds, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    tracing::trace!(target: "latency", n, "submit batch");
    match proposer.propose(Command::Batch(cmds)).await {
        Ok(Response::Batch(rs)) if rs.len() == n => {
            for (reply, r) in replies.into_iter().zip(rs) {
                // A caller that went away (client disconnected) does not need its answer.
                let _ = reply.send(Ok(r));
            }
        }
        Ok(other) => {
            tracing::error!(
                ?other,
                n,
                "a submit batch was answered with something else than one result each"
            );
            for reply in replies {
                let _ = reply.send(Err(ProposeError::Fatal(
                    "the head could not match its answer to this submit".into(),
                )));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(now_ms: u64, bytes: usize) -> Pending {
        Pending {
            cmd: Command::Tick { now_ms },
            bytes,
            reply: oneshot::channel().0,
        }
    }

    fn stamps(batch: &[Pending]) -> Vec<u64> {
        batch
            .iter()
            .map(|p| match p.cmd {
                Command::Tick { now_ms } => now_ms,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn a_batch_takes_what_is_queued_in_order_up_to_the_count() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for i in 2..=5 {
            tx.send(pending(i, 10)).unwrap();
        }
        let limits = BatchLimits {
            max_commands: 3,
            max_bytes: 1000,
        };
        let (batch, carry) = take_batch(pending(1, 10), &mut rx, limits);
        assert_eq!(stamps(&batch), [1, 2, 3]);
        assert!(carry.is_none());
        let (batch, _) = take_batch(rx.try_recv().unwrap(), &mut rx, limits);
        assert_eq!(stamps(&batch), [4, 5]);
    }

    #[test]
    fn the_command_that_would_cross_the_byte_limit_starts_the_next_batch() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tx.send(pending(2, 50)).unwrap();
        tx.send(pending(3, 60)).unwrap();
        tx.send(pending(4, 1)).unwrap();
        let limits = BatchLimits {
            max_commands: 100,
            max_bytes: 100,
        };
        let (batch, carry) = take_batch(pending(1, 40), &mut rx, limits);
        assert_eq!(stamps(&batch), [1, 2]);
        let carry = carry.expect("the third command waits");
        let (batch, carry) = take_batch(carry, &mut rx, limits);
        assert_eq!(stamps(&batch), [3, 4]);
        assert!(carry.is_none());
        // A single command over the limit still goes, alone.
        let (batch, _) = take_batch(pending(5, 500), &mut rx, limits);
        assert_eq!(stamps(&batch), [5]);
    }

    #[test]
    fn the_default_limits_keep_an_entry_below_a_message() {
        let l = BatchLimits::default();
        assert!(l.max_commands >= 2);
        assert!(l.max_bytes < crate::MAX_MESSAGE_BYTES);
    }

    #[tokio::test]
    async fn a_stopped_queue_answers_with_an_error_rather_than_hanging() {
        let (tx, rx) = mpsc::unbounded_channel();
        drop(rx);
        let b = SubmitBatcher { tx };
        let e = b.propose(Command::Tick { now_ms: 0 }, 1).await.unwrap_err();
        assert!(e.to_string().contains("shutting down"), "{e}");
    }
}
