//! Proposing commands to the replicated log, with a timeout and clear errors.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use rudel_core::{Command, Response};
use tonic::Status;

use crate::raft::Raft;

/// Why a command was not committed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("this head is not the leader{}", .leader.as_ref().map(|l| format!("; the leader is {l}")).unwrap_or_else(|| "; no leader is known (no quorum?)".into()))]
    NotLeader { leader: Option<String> },
    #[error("the replicated log did not commit within {0:?} (no quorum: are most heads down or cut off?)")]
    Timeout(Duration),
    #[error("replicated log failure: {0}")]
    Fatal(String),
}

impl From<ProposeError> for Status {
    fn from(e: ProposeError) -> Status {
        match &e {
            ProposeError::NotLeader { leader } => {
                let mut s = Status::unavailable(e.to_string());
                if let Some(l) = leader.as_ref().and_then(|l| l.parse().ok()) {
                    s.metadata_mut().insert("rudel-leader", l);
                }
                s
            }
            ProposeError::Timeout(_) => Status::deadline_exceeded(e.to_string()),
            ProposeError::Fatal(_) => Status::internal(e.to_string()),
        }
    }
}

/// Current wall-clock time in ms since the epoch (the leader's clock stamps commands).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Submits commands to Raft.
#[derive(Clone)]
pub struct Proposer {
    raft: Raft,
    timeout: Duration,
}

impl Proposer {
    /// A proposer with a per-command commit timeout.
    pub fn new(raft: Raft, timeout: Duration) -> Proposer {
        Proposer { raft, timeout }
    }

    /// Appends `cmd`, waits until it is committed (fsynced) and applied, and returns what
    /// applying it produced.
    pub async fn propose(&self, cmd: Command) -> Result<Response, ProposeError> {
        match tokio::time::timeout(self.timeout, self.raft.client_write(cmd)).await {
            Err(_) => Err(ProposeError::Timeout(self.timeout)),
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => Err(ProposeError::NotLeader {
                leader: f.leader_node.map(|n| n.addr),
            }),
            Ok(Err(e)) => Err(ProposeError::Fatal(e.to_string())),
        }
    }
}
