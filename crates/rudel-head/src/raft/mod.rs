//! Everything that touches openraft lives under this module, so an openraft upgrade
//! changes one place: the type config, the redb-backed log store, the state machine
//! wrapper and the gRPC transport between heads.
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod store;

use std::io::Cursor;
use std::sync::Arc;

use rudel_core::{Command, Response};

pub use state_machine::{Applied, SharedState};

/// Identity of a head within the Raft group.
pub type HeadId = u64;

openraft::declare_raft_types!(
    /// Type configuration of rudel's Raft group.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = HeadId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle the rest of the head uses.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id of this group.
pub type LogId = openraft::LogId<HeadId>;
/// Errors of `client_write`.
pub type WriteError =
    openraft::error::RaftError<HeadId, openraft::error::ClientWriteError<HeadId, openraft::BasicNode>>;

/// Timing of the Raft group.
#[derive(Clone, Debug)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Entries between snapshots.
    pub snapshot_every: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 150,
            election_min_ms: 600,
            election_max_ms: 1200,
            snapshot_every: 20_000,
        }
    }
}

/// Builds openraft's config from rudel's timing.
pub fn raft_config(t: &RaftTiming) -> Result<Arc<openraft::Config>, String> {
    let cfg = openraft::Config {
        cluster_name: "rudel".into(),
        heartbeat_interval: t.heartbeat_ms,
        election_timeout_min: t.election_min_ms,
        election_timeout_max: t.election_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(t.snapshot_every),
        // Entries kept behind a snapshot for followers that lag a little; one that lags
        // more gets the snapshot.
        max_in_snapshot_log_to_keep: t.snapshot_every.min(1_000),
        max_payload_entries: 256,
        ..Default::default()
    };
    cfg.validate()
        .map(Arc::new)
        .map_err(|e| format!("invalid raft timing: {e}"))
}
