//! Accounting: one record per finished job, in `history.redb` next to the head's store.
//!
//! The replicated state keeps finished jobs only for a while (`MAX_FINISHED_JOBS`); this
//! store keeps them for the retention period and answers `rudel history` / `sacct`
//! without touching the state lock. Every head builds its own from the entries it
//! applies (the `JobEnded` events), so a failover loses nothing.
//!
//! Writes are off the apply path: `apply` hands records to a writer thread, which commits
//! whatever has queued up in one transaction (one fsync per group, not per entry: an fsync
//! per job end cost more than the apply itself). Records are keyed by job id, so writing
//! one twice (a log replayed after a restart, a snapshot installed) overwrites it:
//! idempotent. The "applied up to" marker is committed in the same transaction as the
//! records; a head restarting from a snapshot newer than the marker re-records the
//! finished jobs the snapshot still holds (see [`History::backfill_needed`]).
//!
//! Arrays: one record per job with the task counts and the tasks that did not complete
//! (at most [`MAX_TASK_RECORDS`]); completed tasks of an array have no record of their
//! own, so a 1,000,000-task array that succeeds is one small record, not a million.
use std::ops::Bound;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use rudel_core::{Job, State, TaskState};
use rudel_proto::v1 as pb;
use tokio::sync::watch;

use crate::history_index;
use crate::history_step::{self, StepRow};
use crate::history_task::{self, TaskRecord};

/// job id -> `pb::HistoryJob` (protobuf bytes).
pub(crate) const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("history_jobs");
/// (end ms, job id): the time index for windows and retention.
const BY_END: TableDefinition<(u64, u64), ()> = TableDefinition::new("history_by_end");
/// "applied" -> the log index up to which records are committed.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("history_meta");

/// Non-completed task records kept per job (the rest are counted only).
pub const MAX_TASK_RECORDS: usize = 1_000;
/// Jobs returned by a query when it names no limit.
pub const DEFAULT_LIMIT: usize = 10_000;
/// Default retention (90 days).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Records deleted per retention transaction: pruning never holds the writer for long.
const PRUNE_BATCH: usize = 10_000;
/// How often the writer prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history store {path}: {source}")]
    Open { path: String, source: Box<redb::Error> },
    #[error("history store: {0}")]
    Store(#[from] Box<redb::Error>),
    #[error("history record of job {job} is corrupt: {source}")]
    Decode { job: u64, source: prost::DecodeError },
    #[error("history writer stopped")]
    WriterGone,
}

pub(crate) fn store_err(e: impl Into<redb::Error>) -> HistoryError {
    HistoryError::Store(Box::new(e.into()))
}

enum Msg {
    /// Records from applied entries up to log index `applied`.
    Batch {
        applied: u64,
        tasks: Vec<TaskRecord>,
        steps: Vec<StepRow>,
        jobs: Vec<pb::HistoryJob>,
    },
}

/// A query (see `pb::HistoryRequest`).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub user: String,
    pub states: Vec<String>,
    pub since_ms: u64,
    pub until_ms: u64,
    /// Any of these names (empty: any name).
    pub names: Vec<String>,
    pub job_ids: Vec<u64>,
    pub limit: usize,
}

impl Filter {
    /// The filter a History request asks for (no limit given: [`DEFAULT_LIMIT`]).
    pub fn from_pb(r: &pb::HistoryRequest) -> Filter {
        Filter {
            user: r.user.clone(),
            states: r.states.clone(),
            since_ms: r.since_ms,
            until_ms: r.until_ms,
            names: r
                .names
                .iter()
                .chain(Some(&r.name).filter(|n| !n.is_empty()))
                .cloned()
                .collect(),
            job_ids: r.job_ids.clone(),
            limit: if r.limit == 0 { DEFAULT_LIMIT } else { r.limit as usize },
        }
    }

    /// True when `j` passes every filter except the id list and the end bound.
    pub fn matches(&self, j: &pb::HistoryJob) -> bool {
        (self.user.is_empty() || j.user == self.user)
            && (self.names.is_empty() || self.names.contains(&j.name))
            && (self.states.is_empty() || self.states.iter().any(|s| s.eq_ignore_ascii_case(&j.state)))
            && (self.until_ms == 0 || !self.job_ids.is_empty() || j.submit_ms <= self.until_ms)
    }
}

/// The accounting store of one head.
pub struct History {
    db: Arc<Database>,
    tx: std::sync::Mutex<mpsc::Sender<Msg>>,
    written: watch::Receiver<u64>,
}

impl History {
    /// Opens (or creates) `path` and starts its writer thread.
    pub fn open(path: &Path, retention: Duration) -> Result<Arc<History>, HistoryError> {
        let open_err = |e: redb::Error| HistoryError::Open {
            path: path.display().to_string(),
            source: Box::new(e),
        };
        let db = Database::create(path).map_err(|e| open_err(e.into()))?;
        let w = db.begin_write().map_err(|e| open_err(e.into()))?;
        {
            w.open_table(JOBS).map_err(|e| open_err(e.into()))?;
            w.open_table(BY_END).map_err(|e| open_err(e.into()))?;
            w.open_table(META).map_err(|e| open_err(e.into()))?;
            w.open_table(history_task::TASKS).map_err(|e| open_err(e.into()))?;
            w.open_table(history_task::USAGE).map_err(|e| open_err(e.into()))?;
            w.open_table(history_step::STEPS).map_err(|e| open_err(e.into()))?;
            w.open_table(history_index::BY_USER).map_err(|e| open_err(e.into()))?;
            w.open_table(history_index::BY_NAME).map_err(|e| open_err(e.into()))?;
        }
        w.commit().map_err(|e| open_err(e.into()))?;
        history_index::upgrade(&db)?;
        let db = Arc::new(db);
        let applied = read_applied(&db)?;
        let (written_tx, written) = watch::channel(applied);
        let (tx, rx) = mpsc::channel();
        let wdb = db.clone();
        std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || writer(wdb, rx, written_tx, retention))
            .map_err(|e| open_err(redb::Error::Io(e)))?;
        Ok(Arc::new(History {
            db,
            tx: std::sync::Mutex::new(tx),
            written,
        }))
    }

    /// The log index up to which records are committed.
    pub fn applied(&self) -> u64 {
        *self.written.borrow()
    }

    /// True when a state applied up to `index` (loaded from a snapshot) may hold finished
    /// jobs this store never recorded (the head stopped before the writer committed them).
    pub fn backfill_needed(&self, index: u64) -> bool {
        self.applied() < index
    }

    /// Queues records from entries applied up to `applied` (never blocks on disk).
    pub fn record(&self, applied: u64, tasks: Vec<TaskRecord>, jobs: Vec<pb::HistoryJob>) {
        self.record_all(applied, tasks, Vec::new(), jobs)
    }

    /// [`History::record`] with ended job steps.
    pub fn record_all(&self, applied: u64, tasks: Vec<TaskRecord>, steps: Vec<StepRow>, jobs: Vec<pb::HistoryJob>) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx
            .send(Msg::Batch {
                applied,
                tasks,
                steps,
                jobs,
            })
            .is_err()
        {
            tracing::error!("history writer stopped; finished jobs are not recorded");
        }
    }

    /// Records every finished job `state` still holds (after loading a snapshot).
    pub fn backfill(&self, state: &State, applied: u64) {
        let jobs: Vec<_> = state
            .jobs
            .values()
            .filter(|j| j.is_finished())
            .map(|j| record(state, j))
            .collect();
        tracing::info!(
            jobs = jobs.len(),
            applied,
            "history: recording finished jobs of a loaded snapshot"
        );
        self.record(applied, Vec::new(), jobs);
    }

    /// Waits (at most `wait`) until records up to `index` are committed, so that a query
    /// right after a job ended sees it.
    pub async fn caught_up(&self, index: u64, wait: Duration) {
        let mut rx = self.written.clone();
        let _ = tokio::time::timeout(wait, rx.wait_for(|w| *w >= index)).await;
    }

    /// One job's record.
    pub fn get(&self, job: u64) -> Result<Option<pb::HistoryJob>, HistoryError> {
        let r = self.db.begin_read().map_err(store_err)?;
        let t = r.open_table(JOBS).map_err(store_err)?;
        let Some(v) = t.get(job).map_err(store_err)? else {
            return Ok(None);
        };
        let mut j = decode(job, v.value())?;
        attach(&r, &mut j)?;
        Ok(Some(j))
    }

    /// Records matching `req`, oldest end first (by job id when ids are given).
    pub fn query(&self, req: &pb::HistoryRequest) -> Result<Vec<pb::HistoryJob>, HistoryError> {
        self.query_filter(&Filter::from_pb(req))
    }

    /// Records matching `f`.
    pub fn query_filter(&self, f: &Filter) -> Result<Vec<pb::HistoryJob>, HistoryError> {
        let r = self.db.begin_read().map_err(store_err)?;
        let jobs = r.open_table(JOBS).map_err(store_err)?;
        let mut out = Vec::new();
        if !f.job_ids.is_empty() {
            for &id in &f.job_ids {
                let Some(mut j) = job_named(&jobs, id)? else {
                    continue;
                };
                if f.matches(&j) && out.len() < f.limit && !out.iter().any(|o: &pb::HistoryJob| o.job_id == j.job_id) {
                    attach(&r, &mut j)?;
                    out.push(j);
                }
            }
            return Ok(out);
        }
        // Only the records that ended inside the window are read, through the names' or
        // the user's index when names or one user are asked for (history_index.rs):
        // workflow tools poll by name many times a second.
        let upper = history_index::end_upper(&r, f)?;
        if !f.names.is_empty() {
            let by_name = r.open_table(history_index::BY_NAME).map_err(store_err)?;
            for name in &f.names {
                let name = name.as_str();
                let range = by_name
                    .range((name, f.since_ms, 0)..=(name, upper, u64::MAX))
                    .map_err(store_err)?;
                collect(&r, &jobs, f, range.map(|i| i.map(|(k, _)| k.value().2)), &mut out)?;
            }
        } else if !f.user.is_empty() {
            let by_user = r.open_table(history_index::BY_USER).map_err(store_err)?;
            let user = f.user.as_str();
            let range = by_user
                .range((user, f.since_ms, 0)..=(user, upper, u64::MAX))
                .map_err(store_err)?;
            collect(&r, &jobs, f, range.map(|i| i.map(|(k, _)| k.value().2)), &mut out)?;
        } else {
            let by_end = r.open_table(BY_END).map_err(store_err)?;
            let range = by_end.range((f.since_ms, 0)..=(upper, u64::MAX)).map_err(store_err)?;
            collect(&r, &jobs, f, range.map(|i| i.map(|(k, _)| k.value().1)), &mut out)?;
        }
        Ok(out)
    }

    /// Number of records (for tests and the benchmark).
    pub fn len(&self) -> Result<u64, HistoryError> {
        let r = self.db.begin_read().map_err(store_err)?;
        let t = r.open_table(JOBS).map_err(store_err)?;
        t.len().map_err(store_err)
    }

    /// True when the store holds no record.
    pub fn is_empty(&self) -> Result<bool, HistoryError> {
        Ok(self.len()? == 0)
    }

    /// Deletes records that ended before `cutoff_ms`, in batches; returns how many.
    pub fn prune(&self, cutoff_ms: u64) -> Result<u64, HistoryError> {
        prune(&self.db, cutoff_ms)
    }

    /// Writes records synchronously (tests and the benchmark fill the store with this).
    pub fn write_now(&self, applied: u64, jobs: &[pb::HistoryJob]) -> Result<(), HistoryError> {
        self.write_tasks_now(applied, &[], jobs)
    }

    #[cfg(test)]
    pub(crate) fn db_for_tests(&self) -> &Database {
        &self.db
    }

    /// Writes task and job records synchronously (tests and the benchmark).
    pub fn write_tasks_now(
        &self,
        applied: u64,
        tasks: &[TaskRecord],
        jobs: &[pb::HistoryJob],
    ) -> Result<(), HistoryError> {
        write_batch(&self.db, applied, tasks, &[], jobs, redb::Durability::Immediate)
    }

    /// The ended steps of `job` (also of a job still running), by step id.
    pub fn steps(&self, job: u64) -> Result<Vec<pb::HistoryStep>, HistoryError> {
        let r = self.db.begin_read().map_err(store_err)?;
        history_step::of(&r, job)
    }

    /// Writes step rows synchronously (tests).
    pub fn write_steps_now(&self, applied: u64, steps: &[StepRow]) -> Result<(), HistoryError> {
        write_batch(&self.db, applied, &[], steps, &[], redb::Durability::Immediate)
    }
}

/// Adds what is stored beside a job record: its task rows and usage, its steps.
fn attach(r: &redb::ReadTransaction, j: &mut pb::HistoryJob) -> Result<(), HistoryError> {
    history_task::attach(r, j)?;
    history_step::attach(r, j)
}

/// Appends the records of `ids` (in index order) that match `f`, up to its limit.
fn collect(
    r: &redb::ReadTransaction,
    jobs: &impl ReadableTable<u64, &'static [u8]>,
    f: &Filter,
    ids: impl Iterator<Item = Result<u64, redb::StorageError>>,
    out: &mut Vec<pb::HistoryJob>,
) -> Result<(), HistoryError> {
    for id in ids {
        let id = id.map_err(store_err)?;
        let Some(v) = jobs.get(id).map_err(store_err)? else {
            continue;
        };
        let mut j = decode(id, v.value())?;
        if f.matches(&j) {
            attach(r, &mut j)?;
            out.push(j);
            if out.len() >= f.limit {
                break;
            }
        }
    }
    Ok(())
}

/// The record of job `id`, or of the array that task job id `id` belongs to (array tasks
/// have job ids of their own: the array's id plus their position).
fn job_named(jobs: &impl ReadableTable<u64, &'static [u8]>, id: u64) -> Result<Option<pb::HistoryJob>, HistoryError> {
    if let Some(v) = jobs.get(id).map_err(store_err)? {
        return Ok(Some(decode(id, v.value())?));
    }
    let Some(prev) = jobs.range(..id).map_err(store_err)?.next_back() else {
        return Ok(None);
    };
    let (k, v) = prev.map_err(store_err)?;
    let j = decode(k.value(), v.value())?;
    Ok((!j.array.is_empty() && id - j.job_id < j.tasks).then_some(j))
}

fn decode(job: u64, bytes: &[u8]) -> Result<pb::HistoryJob, HistoryError> {
    pb::HistoryJob::decode(bytes).map_err(|source| HistoryError::Decode { job, source })
}

fn read_applied(db: &Database) -> Result<u64, HistoryError> {
    let r = db.begin_read().map_err(store_err)?;
    let t = r.open_table(META).map_err(store_err)?;
    Ok(t.get("applied").map_err(store_err)?.map_or(0, |v| v.value()))
}

fn write_batch(
    db: &Database,
    applied: u64,
    tasks: &[TaskRecord],
    steps: &[StepRow],
    jobs: &[pb::HistoryJob],
    durability: redb::Durability,
) -> Result<(), HistoryError> {
    let mut w = db.begin_write().map_err(store_err)?;
    w.set_durability(durability);
    history_task::write(&w, tasks)?;
    history_step::write(&w, steps)?;
    {
        let mut t = w.open_table(JOBS).map_err(store_err)?;
        let mut by_end = w.open_table(BY_END).map_err(store_err)?;
        for j in jobs {
            // Re-recording a job (log replay, snapshot backfill) replaces its time-index key.
            if let Some(old) = t.get(j.job_id).map_err(store_err)? {
                let old = decode(j.job_id, old.value())?;
                by_end.remove((old.end_ms, old.job_id)).map_err(store_err)?;
                history_index::remove(&w, &old)?;
            }
            t.insert(j.job_id, j.encode_to_vec().as_slice()).map_err(store_err)?;
            by_end.insert((j.end_ms, j.job_id), ()).map_err(store_err)?;
            history_index::insert(&w, j)?;
        }
        let mut m = w.open_table(META).map_err(store_err)?;
        let prev = m.get("applied").map_err(store_err)?.map_or(0, |v| v.value());
        m.insert("applied", prev.max(applied)).map_err(store_err)?;
    }
    w.commit().map_err(store_err)
}

fn prune(db: &Database, cutoff_ms: u64) -> Result<u64, HistoryError> {
    let mut total = 0;
    loop {
        let w = db.begin_write().map_err(store_err)?;
        let n;
        {
            let mut by_end = w.open_table(BY_END).map_err(store_err)?;
            let mut t = w.open_table(JOBS).map_err(store_err)?;
            let keys: Vec<(u64, u64)> = by_end
                .range::<(u64, u64)>((Bound::Unbounded, Bound::Excluded((cutoff_ms, 0))))
                .map_err(store_err)?
                .take(PRUNE_BATCH)
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()
                .map_err(store_err)?;
            n = keys.len();
            for k in keys {
                by_end.remove(k).map_err(store_err)?;
                if let Some(old) = t.remove(k.1).map_err(store_err)? {
                    history_index::remove(&w, &decode(k.1, old.value())?)?;
                }
                history_task::remove(&w, k.1)?;
                history_step::remove(&w, k.1)?;
            }
        }
        w.commit().map_err(store_err)?;
        total += n as u64;
        if n < PRUNE_BATCH {
            return Ok(total);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Makes the unsynced marker commits durable (an empty synced commit).
fn sync_marker(db: &Database, sync: &mut crate::history_sync::MarkerSync) {
    match write_batch(db, 0, &[], &[], &[], redb::Durability::Immediate) {
        Ok(()) => sync.committed(redb::Durability::Immediate, std::time::Instant::now()),
        Err(e) => tracing::warn!(error = %e, "history: syncing the applied marker failed"),
    }
}

/// The writer thread: commits queued batches together (synced when they hold records,
/// see `history_sync`); prunes now and then.
fn writer(db: Arc<Database>, rx: mpsc::Receiver<Msg>, written: watch::Sender<u64>, retention: Duration) {
    let mut last_prune: Option<std::time::Instant> = None;
    let mut sync = crate::history_sync::MarkerSync::new(std::time::Instant::now());
    loop {
        let first = match rx.recv_timeout(sync.wait(PRUNE_EVERY, std::time::Instant::now())) {
            Ok(m) => Some(m),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if sync.pending() {
                    sync_marker(&db, &mut sync);
                }
                return;
            }
        };
        let mut applied = 0;
        let mut jobs = Vec::new();
        let mut tasks = Vec::new();
        let mut steps = Vec::new();
        let mut take = |m: Msg| match m {
            Msg::Batch {
                applied: a,
                tasks: mut t,
                steps: mut s,
                jobs: mut j,
            } => {
                applied = applied.max(a);
                tasks.append(&mut t);
                steps.append(&mut s);
                jobs.append(&mut j);
            }
        };
        if let Some(m) = first {
            take(m);
            while let Ok(m) = rx.try_recv() {
                take(m);
            }
            let records = !tasks.is_empty() || !steps.is_empty() || !jobs.is_empty();
            let durability = sync.durability(records, std::time::Instant::now());
            match write_batch(&db, applied, &tasks, &steps, &jobs, durability) {
                Ok(()) => {
                    sync.committed(durability, std::time::Instant::now());
                    written.send_if_modified(|w| {
                        let changed = applied > *w;
                        *w = (*w).max(applied);
                        changed
                    });
                }
                Err(e) => tracing::error!(error = %e, jobs = jobs.len(), "history: recording finished jobs failed"),
            }
        } else if sync.pending() {
            sync_marker(&db, &mut sync);
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(std::time::Instant::now());
            let cutoff = now_ms().saturating_sub(retention.as_millis() as u64);
            match prune(&db, cutoff) {
                Ok(0) => {}
                Ok(n) => tracing::info!(records = n, "history: pruned records past the retention"),
                Err(e) => tracing::warn!(error = %e, "history: pruning failed"),
            }
        }
    }
}

/// The array spec as users write it (`1-100:2,200%5`).
pub fn array_text(a: &rudel_core::ArraySpec) -> String {
    let mut s = a
        .ranges
        .iter()
        .map(|r| match (r.start == r.end, r.step) {
            (true, _) => r.start.to_string(),
            (false, 1) => format!("{}-{}", r.start, r.end),
            (false, st) => format!("{}-{}:{st}", r.start, r.end),
        })
        .collect::<Vec<_>>()
        .join(",");
    if let Some(l) = a.limit {
        s.push_str(&format!("%{l}"));
    }
    s
}

/// The accounting record of a job as it is now (finished or not).
pub fn record(state: &State, job: &Job) -> pb::HistoryJob {
    let status = rudel_core::query::exit_status(job);
    let task_records = job
        .ended
        .iter()
        .filter(|(_, t)| t.state != TaskState::Completed || !job.is_array())
        .take(MAX_TASK_RECORDS)
        .map(|(&index, t)| pb::HistoryTask {
            index,
            state: t.recorded_state().into(),
            exit_code: t.exit_code,
            signal: t.signal,
            start_ms: t.start_ms,
            end_ms: t.end_ms,
            node: t
                .node
                .and_then(|n| state.nodes.get(n as usize))
                .map(|n| n.name.clone())
                .unwrap_or_default(),
            job_id: job.task_job_id(index),
            // Usage is in the task rows (history_task.rs), merged in when read.
            ..Default::default()
        })
        .collect();
    let counts = job.display_counts();
    pb::HistoryJob {
        job_id: job.id,
        name: crate::convert::job_name(&job.spec),
        user: job.spec.user.clone(),
        account: job.spec.account.clone(),
        state: job.recorded_state().into(),
        exit_code: status.and_then(|(c, _)| c),
        signal: status.and_then(|(_, s)| s),
        submit_ms: job.submit_ms,
        start_ms: job.start_ms.unwrap_or(0),
        end_ms: job.end_ms.unwrap_or(0),
        nodes: rudel_core::query::job_nodes(job),
        cpus: job.spec.cpus,
        mem_bytes: job.spec.mem_bytes,
        time_limit_ms: job.spec.time_limit_ms,
        array: job.spec.array.as_ref().map(array_text).unwrap_or_default(),
        work_dir: job.spec.chdir.clone(),
        tasks: job.total,
        task_records,
        cancelled: job.cancelled,
        counts: TaskState::ALL
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| pb::StateCount {
                state: s.as_str().into(),
                count: n,
            })
            .collect(),
        steps_dropped: job.steps_dropped,
        // Totals live in history_task.rs's table, steps in history_step.rs's, merged in
        // when read.
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, user: &str, state: &str, end: u64) -> pb::HistoryJob {
        pb::HistoryJob {
            job_id: id,
            name: format!("j{id}"),
            user: user.into(),
            state: state.into(),
            submit_ms: end.saturating_sub(10),
            end_ms: end,
            ..Default::default()
        }
    }

    fn open() -> (tempfile::TempDir, Arc<History>) {
        let d = tempfile::tempdir().unwrap();
        let h = History::open(&d.path().join("history.redb"), DEFAULT_RETENTION).unwrap();
        (d, h)
    }

    #[test]
    fn insert_and_get() {
        let (_d, h) = open();
        h.write_now(5, &[job(1, "a", "completed", 100)]).unwrap();
        assert_eq!(h.get(1).unwrap().unwrap().name, "j1");
        assert!(h.get(2).unwrap().is_none());
        assert_eq!(h.applied(), 0, "write_now does not move the writer's marker");
        assert_eq!(read_applied(&h.db).unwrap(), 5);
    }

    #[test]
    fn reinsert_is_idempotent_and_moves_the_time_index() {
        let (_d, h) = open();
        h.write_now(1, &[job(1, "a", "completed", 100)]).unwrap();
        h.write_now(2, &[job(1, "a", "failed", 200)]).unwrap();
        assert_eq!(h.len().unwrap(), 1);
        let all = h
            .query_filter(&Filter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].state, "failed");
        let late = h
            .query_filter(&Filter {
                since_ms: 150,
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(late.len(), 1, "the old time key must be gone, the new one present");
        // An older marker never moves the stored marker back.
        h.write_now(1, &[]).unwrap();
        assert_eq!(read_applied(&h.db).unwrap(), 2);
    }

    #[test]
    fn query_filters() {
        let (_d, h) = open();
        let jobs: Vec<_> = (1..=20)
            .map(|i| {
                job(
                    i,
                    if i % 2 == 0 { "even" } else { "odd" },
                    if i % 5 == 0 { "failed" } else { "completed" },
                    i * 100,
                )
            })
            .collect();
        h.write_now(1, &jobs).unwrap();
        let q = |f: Filter| {
            h.query_filter(&Filter {
                limit: if f.limit == 0 { 100 } else { f.limit },
                ..f
            })
            .unwrap()
        };
        assert_eq!(
            q(Filter {
                user: "even".into(),
                ..Default::default()
            })
            .len(),
            10
        );
        let failed = q(Filter {
            states: vec!["FAILED".into()],
            ..Default::default()
        });
        assert_eq!(failed.iter().map(|j| j.job_id).collect::<Vec<_>>(), vec![5, 10, 15, 20]);
        assert_eq!(
            q(Filter {
                since_ms: 1500,
                ..Default::default()
            })
            .len(),
            6
        );
        assert_eq!(
            q(Filter {
                until_ms: 500,
                ..Default::default()
            })
            .len(),
            5
        );
        assert_eq!(
            q(Filter {
                names: vec!["j7".into()],
                ..Default::default()
            })
            .len(),
            1
        );
        assert_eq!(
            q(Filter {
                job_ids: vec![3, 4, 99],
                ..Default::default()
            })
            .len(),
            2
        );
        assert_eq!(
            q(Filter {
                limit: 3,
                ..Default::default()
            })
            .len(),
            3
        );
    }

    #[test]
    fn retention_prunes_in_batches() {
        let (_d, h) = open();
        let jobs: Vec<_> = (1..=25_000).map(|i| job(i, "u", "completed", i)).collect();
        h.write_now(1, &jobs).unwrap();
        assert_eq!(h.prune(20_001).unwrap(), 20_000);
        assert_eq!(h.len().unwrap(), 5_000);
        assert!(h.get(20_000).unwrap().is_none());
        assert!(h.get(20_001).unwrap().is_some());
    }

    #[tokio::test]
    async fn writer_commits_and_reports_progress() {
        let (_d, h) = open();
        // Ended now: the writer's first retention pass (right after its first commit)
        // would delete records ended at 1970 and make this test flaky.
        let now = now_ms();
        h.record(7, Vec::new(), vec![job(1, "a", "completed", now)]);
        h.record(9, Vec::new(), vec![job(2, "a", "completed", now)]);
        h.caught_up(9, Duration::from_secs(5)).await;
        assert_eq!(h.applied(), 9);
        assert_eq!(h.len().unwrap(), 2);
        assert!(!h.backfill_needed(9));
        assert!(h.backfill_needed(10));
    }

    #[test]
    fn steps_are_attached_to_their_job_rewritten_idempotently_and_pruned_with_it() {
        let (_d, h) = open();
        let step = |n: u32, state: &str| pb::HistoryStep {
            step: n,
            state: state.into(),
            ..Default::default()
        };
        h.write_steps_now(
            1,
            &[
                (1, step(1, "failed")),
                (1, step(0, "completed")),
                (2, step(0, "completed")),
            ],
        )
        .unwrap();
        // A replayed entry writes the same row again.
        h.write_steps_now(2, &[(1, step(1, "failed"))]).unwrap();
        h.write_now(3, &[job(1, "a", "completed", 100), job(2, "a", "completed", 300)])
            .unwrap();
        let got = h.get(1).unwrap().unwrap();
        let ids: Vec<(u32, &str)> = got.steps.iter().map(|s| (s.step, s.state.as_str())).collect();
        assert_eq!(ids, [(0, "completed"), (1, "failed")], "by step id, once each");
        assert_eq!(h.steps(2).unwrap().len(), 1);
        assert_eq!(h.prune(200).unwrap(), 1);
        assert!(h.steps(1).unwrap().is_empty(), "steps go with their job");
        assert_eq!(h.steps(2).unwrap().len(), 1);
    }

    #[test]
    fn array_text_round_trips_the_spec() {
        let a = rudel_core::parse::parse_array("1-100:2,200%5").unwrap();
        let again = rudel_core::parse::parse_array(&array_text(&a)).unwrap();
        assert_eq!(again, a, "{}", array_text(&a));
    }
}
