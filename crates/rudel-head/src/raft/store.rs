//! The embedded transactional store (redb) in the head's data directory: one file holding
//! the Raft log, the vote, and the latest snapshot.
#![allow(clippy::result_large_err)] // openraft's/redb's error types are imposed; see mod.rs
use std::path::Path;
use std::sync::Arc;

use redb::{Database, TableDefinition};

/// Raft log entries by index (JSON-encoded openraft entries).
pub const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Small Raft metadata: vote, committed, last purged.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// The latest snapshot: "meta" and "data".
pub const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

/// Page cache of the store. redb's default (1 GiB) would let a long log sit in memory;
/// reads of old entries are rare (only followers catching up), so keep it modest.
const CACHE_BYTES: usize = 64 << 20;

/// Opens (creating if needed) the store and its tables.
pub fn open(path: &Path) -> Result<Arc<Database>, redb::Error> {
    let db = redb::Builder::new().set_cache_size(CACHE_BYTES).create(path)?;
    let tx = db.begin_write()?;
    {
        tx.open_table(LOG)?;
        tx.open_table(META)?;
        tx.open_table(SNAPSHOT)?;
    }
    tx.commit()?;
    Ok(Arc::new(db))
}
