//! Per-step accounting: one row per ended job step (`sacct`'s `ID.0`, `ID.1`, ...) beside
//! the job records of [`crate::history`], keyed by (job id, step id).
//!
//! Rows come from `Event::StepEnded`, applied from the log on every head, so a failover or
//! a restart keeps them. The replicated state caps them per job (`MAX_STEPS_PER_JOB`), so
//! a job cannot fill the store with steps. Writing a row twice (log replayed after a
//! restart) overwrites it: idempotent. Rows go with their job at retention.
use prost::Message;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use rudel_core::Event;
use rudel_proto::v1 as pb;

use crate::history::{store_err, HistoryError};

/// (job id, step id) -> `pb::HistoryStep` (protobuf bytes).
pub(crate) const STEPS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("history_steps");

/// One ended step as queued for the writer: (job id, row).
pub type StepRow = (u64, pb::HistoryStep);

/// The row of a `StepEnded` event (None for other events).
pub fn from_event(ev: &Event) -> Option<StepRow> {
    let Event::StepEnded { record: r } = ev else {
        return None;
    };
    Some((
        r.job,
        pb::HistoryStep {
            step: r.step,
            name: r.name.clone(),
            state: r.state.as_str().into(),
            exit_code: r.exit_code,
            signal: r.signal,
            start_ms: r.start_ms,
            end_ms: r.end_ms,
            nodelist: r.nodelist.clone(),
            ntasks: r.ntasks,
            cpus: r.cpus,
        },
    ))
}

/// Writes step rows in the writer's transaction.
pub(crate) fn write(w: &WriteTransaction, rows: &[StepRow]) -> Result<(), HistoryError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut t = w.open_table(STEPS).map_err(store_err)?;
    for (job, s) in rows {
        t.insert((*job, s.step), s.encode_to_vec().as_slice())
            .map_err(store_err)?;
    }
    Ok(())
}

/// The step rows of `job`, by step id.
pub(crate) fn of(r: &ReadTransaction, job: u64) -> Result<Vec<pb::HistoryStep>, HistoryError> {
    let t = r.open_table(STEPS).map_err(store_err)?;
    let mut out = Vec::new();
    for row in t.range((job, 0)..=(job, u32::MAX)).map_err(store_err)? {
        let (_, v) = row.map_err(store_err)?;
        let s = pb::HistoryStep::decode(v.value()).map_err(|source| HistoryError::Decode { job, source })?;
        out.push(s);
    }
    Ok(out)
}

/// Adds `j`'s step rows to its record.
pub(crate) fn attach(r: &ReadTransaction, j: &mut pb::HistoryJob) -> Result<(), HistoryError> {
    j.steps = of(r, j.job_id)?;
    Ok(())
}

/// Deletes `job`'s step rows (retention).
pub(crate) fn remove(w: &WriteTransaction, job: u64) -> Result<(), HistoryError> {
    let mut t = w.open_table(STEPS).map_err(store_err)?;
    let keys: Vec<(u64, u32)> = t
        .range((job, 0)..=(job, u32::MAX))
        .map_err(store_err)?
        .map(|r| r.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()
        .map_err(store_err)?;
    for k in keys {
        t.remove(k).map_err(store_err)?;
    }
    Ok(())
}
