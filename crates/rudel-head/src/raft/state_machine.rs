//! The state machine openraft drives: rudel-core's [`State`] behind a lock, plus the
//! latest snapshot (kept in redb, so a restart starts from it and replays only the tail).
#![allow(clippy::result_large_err)] // openraft's/redb's error types are imposed; see mod.rs
use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageError, StorageIOError, StoredMembership};
use redb::Database;
use rudel_core::{Response, State};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::store::SNAPSHOT;
use super::{HeadId, LogId, TypeConfig};

type SResult<T> = Result<T, StorageError<HeadId>>;
type Membership = StoredMembership<HeadId, openraft::BasicNode>;

/// What has been applied: the cluster state and the Raft bookkeeping that goes with it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: Membership,
    pub state: State,
    /// Which nodes the applied entries touched (not replicated: rebuilt from events).
    #[serde(skip)]
    pub node_changes: NodeChanges,
}

/// The log index of the last applied entry that changed something a node's agent must
/// hear about, per node. A session dispatches only when its node changed since it last
/// looked: scanning every node's tasks after every entry made the head's cost per task
/// grow with the number of nodes.
#[derive(Clone, Debug, Default)]
pub struct NodeChanges {
    /// Changes before this index are unknown (state loaded from a snapshot): every node
    /// counts as changed at it.
    floor: u64,
    last: Vec<u64>,
}

impl NodeChanges {
    /// Every node counts as changed at `index` (a new state was loaded).
    fn reset(&mut self, index: u64) {
        self.floor = index;
        self.last.clear();
    }

    fn record(&mut self, events: &[rudel_core::Event], index: u64) {
        for node in events.iter().filter_map(rudel_core::Event::node) {
            let i = node as usize;
            if self.last.len() <= i {
                self.last.resize(i + 1, 0);
            }
            self.last[i] = index;
        }
    }

    /// The index of the last entry that changed `node`.
    pub fn changed_at(&self, node: rudel_core::NodeId) -> u64 {
        self.last.get(node as usize).copied().unwrap_or(0).max(self.floor)
    }
}

/// The applied state shared with the gRPC services and the dispatcher. Readers take the
/// lock briefly; `changed` fires after every applied batch.
pub struct SharedState {
    inner: RwLock<Applied>,
    changed: watch::Sender<u64>,
    /// This head's accounting store, fed from the applied entries.
    pub history: Arc<crate::history::History>,
}

impl SharedState {
    fn new(applied: Applied, history: Arc<crate::history::History>) -> Arc<SharedState> {
        let (changed, _) = watch::channel(0);
        Arc::new(SharedState {
            inner: RwLock::new(applied),
            changed,
            history,
        })
    }

    /// Read access to the applied state.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // A poisoned lock means a panic while applying; the data is still the last
        // consistent state we have, so keep serving it.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to "something was applied" (the value is the last applied index).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// openraft's state machine for rudel.
pub struct StateMachineStore {
    shared: Arc<SharedState>,
    db: Arc<Database>,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError<HeadId> {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError<HeadId> {
    StorageIOError::write_snapshot(None, &e).into()
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<HeadId, openraft::BasicNode>,
    data: Vec<u8>,
}

impl StateMachineStore {
    /// Loads the latest snapshot (if any) as the starting state.
    pub fn open(
        db: Arc<Database>,
        history: Arc<crate::history::History>,
    ) -> SResult<(StateMachineStore, Arc<SharedState>)> {
        let applied = match load_snapshot(&db)? {
            Some(s) => {
                let mut a = serde_json::from_slice::<Applied>(&s.data).map_err(sm_err)?;
                a.state.sched.check_supported().map_err(sm_err)?;
                a.state.reintern();
                a
            }
            None => Applied {
                state: State::new(),
                ..Applied::default()
            },
        };
        let idx = applied.last_applied.map_or(0, |l| l.index);
        if history.backfill_needed(idx) {
            history.backfill(&applied.state, idx);
        }
        let shared = SharedState::new(applied, history);
        Ok((
            StateMachineStore {
                shared: shared.clone(),
                db,
            },
            shared,
        ))
    }
}

fn load_snapshot(db: &Database) -> SResult<Option<StoredSnapshot>> {
    let tx = db.begin_read().map_err(snap_err)?;
    let t = tx.open_table(SNAPSHOT).map_err(snap_err)?;
    match t.get("current").map_err(snap_err)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(snap_err)?)),
        None => Ok(None),
    }
}

fn save_snapshot(db: &Database, s: &StoredSnapshot) -> SResult<()> {
    let bytes = serde_json::to_vec(s).map_err(snap_err)?;
    let tx = db.begin_write().map_err(snap_err)?;
    {
        let mut t = tx.open_table(SNAPSHOT).map_err(snap_err)?;
        t.insert("current", bytes.as_slice()).map_err(snap_err)?;
    }
    tx.commit().map_err(snap_err)
}

/// Builds snapshots from the shared state.
pub struct SnapshotBuilder {
    shared: Arc<SharedState>,
    db: Arc<Database>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> SResult<Snapshot<TypeConfig>> {
        let (data, last_applied, membership) = {
            let a = self.shared.read();
            (
                serde_json::to_vec(&*a).map_err(snap_err)?,
                a.last_applied,
                a.membership.clone(),
            )
        };
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, data.len()),
            None => format!("0-0-{}", data.len()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        save_snapshot(&self.db, &stored)?;
        tracing::info!(bytes = stored.data.len(), last_applied = ?last_applied, "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> SResult<(Option<LogId>, Membership)> {
        let a = self.shared.read();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> SResult<Vec<Response>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let t0 = std::time::Instant::now();
        let mut out = Vec::new();
        let last_index;
        let mut ended = Vec::new();
        let mut ended_tasks = Vec::new();
        let mut ended_steps = Vec::new();
        {
            let mut a = self.shared.write();
            for e in entries {
                if let EntryPayload::Normal(cmd) = &e.payload {
                    if let Err(refused) = a.state.precheck(cmd) {
                        tracing::error!(index = e.log_id.index, error = %refused, "cannot apply the log");
                        return Err(sm_err(refused));
                    }
                }
                a.last_applied = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => out.push(Response::Ok),
                    EntryPayload::Normal(cmd) => {
                        let applied = a.state.apply_output(cmd);
                        for v in &applied.violations {
                            tracing::error!(index = e.log_id.index, violation = %v, "scheduler bug: placement refused by the commit check");
                        }
                        if checking_invariants() {
                            if let Err(v) = rudel_core::invariants::check_all(&a.state) {
                                tracing::error!(index = e.log_id.index, violation = %v, "invariant violated");
                            }
                        }
                        a.node_changes.record(&applied.events, e.log_id.index);
                        for ev in &applied.events {
                            if let rudel_core::Event::JobEnded { job, .. } = ev {
                                if let Some(j) = a.state.jobs.get(job) {
                                    ended.push(crate::history::record(&a.state, j));
                                }
                            }
                            ended_tasks.extend(crate::history_task::from_event(&a.state, ev));
                            ended_steps.extend(crate::history_step::from_event(ev));
                        }
                        out.push(applied.response);
                    }
                    EntryPayload::Membership(m) => {
                        a.membership = StoredMembership::new(Some(e.log_id), m);
                        out.push(Response::Ok);
                    }
                }
            }
            last_index = a.last_applied.map_or(0, |l| l.index);
        }
        // Always sent (even empty): it moves the store's "applied up to" marker.
        self.shared
            .history
            .record_all(last_index, ended_tasks, ended_steps, ended);
        self.shared.changed.send_replace(last_index);
        tracing::trace!(target: "latency", us = t0.elapsed().as_micros() as u64, "apply");
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            db: self.db.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<HeadId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> SResult<()> {
        let data = snapshot.into_inner();
        let data_len = data.len();
        let mut applied: Applied = serde_json::from_slice(&data).map_err(sm_err)?;
        if let Err(refused) = applied.state.sched.check_supported() {
            tracing::error!(error = %refused, "cannot install the leader's snapshot");
            return Err(sm_err(refused));
        }
        applied.state.reintern();
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        save_snapshot(
            &self.db,
            &StoredSnapshot {
                meta: meta.clone(),
                data,
            },
        )?;
        let idx = applied.last_applied.map_or(0, |l| l.index);
        applied.node_changes.reset(idx);
        // Jobs that ended in entries this head never applied (it was behind).
        self.shared.history.backfill(&applied.state, idx);
        *self.shared.write() = applied;
        self.shared.changed.send_replace(idx);
        tracing::info!(
            bytes = data_len,
            last_applied = idx,
            "snapshot installed from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<TypeConfig>>> {
        Ok(load_snapshot(&self.db)?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

/// `RUDEL_CHECK_INVARIANTS=1`: after every applied entry, check every invariant of
/// rudel-core's state (`invariants::check_all`) and log a violation as an error with the
/// entry's index. It costs a pass over the whole state per entry, so only the HA and fault
/// suites turn it on: there the invariants (no over-commit, licenses, whole allocations,
/// counts) are checked on every head under crashes, splits and failovers, not only in the
/// property tests of the pure core.
fn checking_invariants() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("RUDEL_CHECK_INVARIANTS").is_ok_and(|v| v == "1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, Entry};
    use rudel_core::Command;

    fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    fn configure(name: &str, value: &str) -> Command {
        Command::Configure {
            settings: vec![(name.into(), value.into())],
            now_ms: 5,
        }
    }

    /// A head must stop, not apply, an entry that asks for a scheduling behaviour newer
    /// than its build implements: applying it with older code would silently give another
    /// state than its peers'.
    #[tokio::test]
    async fn an_entry_from_a_newer_scheduling_version_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::store::open(&dir.path().join("raft.redb")).unwrap();
        let history =
            crate::history::History::open(&dir.path().join("history.redb"), crate::history::DEFAULT_RETENTION).unwrap();
        let (mut sm, shared) = StateMachineStore::open(db, history).unwrap();
        let ok = sm.apply([entry(1, configure("order", "fifo"))]).await.unwrap();
        assert!(matches!(ok[0], Response::Configured { .. }), "{ok:?}");
        let newer = (rudel_core::sched::SCHED_VERSION + 1).to_string();
        let err = sm.apply([entry(2, configure("version", &newer))]).await.unwrap_err();
        assert!(err.to_string().contains("upgrade this head"), "{err}");
        let a = shared.read();
        assert_eq!(
            a.last_applied.map(|l| l.index),
            Some(1),
            "the refused entry is not applied"
        );
        assert_eq!(a.state.sched.order, rudel_core::sched::Order::Fifo);
        assert_eq!(a.state.sched.version, 1);
    }
}
