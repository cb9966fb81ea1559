//! The Raft log and vote in redb. `append` commits (fsync) before reporting the entries
//! flushed, so an acknowledged command survives a crash.
#![allow(clippy::result_large_err)] // openraft's/redb's error types are imposed; see mod.rs
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableTable};

use super::store::{LOG, META};
use super::{HeadId, LogId, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;
type SResult<T> = Result<T, StorageError<HeadId>>;

/// Log storage handle; cheap to clone (readers share the database).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<HeadId> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<HeadId> {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    /// Log store over an opened database.
    pub fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> SResult<Option<T>> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = tx.open_table(META).map_err(read_err)?;
        match t.get(key).map_err(read_err)? {
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> SResult<()> {
        self.put_meta_with(key, value, redb::Durability::Immediate)
    }

    fn put_meta_with<T: serde::Serialize>(&self, key: &str, value: &T, durability: redb::Durability) -> SResult<()> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        let mut tx = self.db.begin_write().map_err(write_err)?;
        tx.set_durability(durability);
        {
            let mut t = tx.open_table(META).map_err(write_err)?;
            t.insert(key, bytes.as_slice()).map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<Entry>> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = tx.open_table(LOG).map_err(read_err)?;
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for item in t.range(start..).map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            if !range.contains(&k.value()) {
                break;
            }
            out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> SResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.get_meta("last_purged")?;
        let tx = self.db.begin_read().map_err(read_err)?;
        let t = tx.open_table(LOG).map_err(read_err)?;
        let last = match t.last().map_err(read_err)? {
            Some((_, v)) => Some(serde_json::from_slice::<Entry>(v.value()).map_err(read_err)?.log_id),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<HeadId>) -> SResult<()> {
        self.put_meta("vote", vote)
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<HeadId>>> {
        self.get_meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> SResult<()> {
        // Only a hint for how far to re-apply at startup: losing it is safe (Raft learns the
        // commit index again), so it is not worth an fsync on every commit.
        let t0 = std::time::Instant::now();
        let r = self.put_meta_with("committed", &committed, redb::Durability::None);
        tracing::trace!(target: "latency", us = t0.elapsed().as_micros() as u64, "save committed");
        r
    }

    async fn read_committed(&mut self) -> SResult<Option<LogId>> {
        Ok(self.get_meta::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> SResult<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let t0 = std::time::Instant::now();
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut t = tx.open_table(LOG).map_err(write_err)?;
            for e in entries {
                let bytes = serde_json::to_vec(&e).map_err(write_err)?;
                t.insert(e.log_id.index, bytes.as_slice()).map_err(write_err)?;
            }
        }
        let res = tx.commit().map_err(|e| std::io::Error::other(e.to_string()));
        tracing::trace!(target: "latency", us = t0.elapsed().as_micros() as u64, "append");
        let failed = res.as_ref().err().map(|e| e.to_string());
        callback.log_io_completed(res);
        match failed {
            Some(msg) => Err(StorageIOError::write_logs(&std::io::Error::other(msg)).into()),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> SResult<()> {
        self.remove_range(log_id.index.., None)
    }

    async fn purge(&mut self, log_id: LogId) -> SResult<()> {
        self.remove_range(..=log_id.index, Some(log_id))
    }
}

impl LogStore {
    /// Deletes a range of entries (and records the purge point) in one transaction.
    fn remove_range(&self, range: impl RangeBounds<u64>, purged: Option<LogId>) -> SResult<()> {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut t = tx.open_table(LOG).map_err(write_err)?;
            let keys: Vec<u64> = t
                .range(range)
                .map_err(write_err)?
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()
                .map_err(write_err)?;
            for k in keys {
                t.remove(k).map_err(write_err)?;
            }
            if let Some(p) = purged {
                let bytes = serde_json::to_vec(&p).map_err(write_err)?;
                let mut m = tx.open_table(META).map_err(write_err)?;
                m.insert("last_purged", bytes.as_slice()).map_err(write_err)?;
            }
        }
        tx.commit().map_err(write_err)
    }
}
