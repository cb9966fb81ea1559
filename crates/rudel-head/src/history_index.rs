//! Secondary indexes of the accounting store, so an `sacct` query reads only the records
//! it returns (the benchmark's one-user, one-day query over 1,000,000 records took 840 ms
//! scanning the end-time index from the window's start to now; bench/history-bench).
//!
//! - by user: `(user, end ms, job id)`, for `-u USER` windows;
//! - by name: `(job name, end ms, job id)`, for `--name` (a workflow polling its own jobs
//!   read every record of the window before: 11 ms of head CPU per poll after 15,000
//!   tasks, bench/pollers.py);
//! - the longest submit-to-end span ever recorded (in the meta table): a job submitted
//!   before a window's end ended at most that long after it, which bounds the end-time
//!   scan of a window with an end (`-E`) instead of scanning up to now.
use prost::Message;
use redb::{Database, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use rudel_proto::v1 as pb;

use crate::history::{store_err, Filter, HistoryError, JOBS, META};

/// (user, end ms, job id): the per-user time index.
pub(crate) const BY_USER: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("history_by_user");
/// (job name, end ms, job id): the per-name time index.
pub(crate) const BY_NAME: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("history_by_name");
/// Meta key: the longest `end_ms - submit_ms` recorded.
const MAX_SPAN: &str = "max_span_ms";
/// Meta key: the index layout a store was built with; stores from before the indexes
/// (version 0) are indexed once when opened.
const SCHEMA: &str = "schema";
const SCHEMA_VERSION: u64 = 3;

/// Adds a record's index keys (inside the writer's transaction).
pub(crate) fn insert(w: &WriteTransaction, j: &pb::HistoryJob) -> Result<(), HistoryError> {
    w.open_table(BY_USER)
        .map_err(store_err)?
        .insert((j.user.as_str(), j.end_ms, j.job_id), ())
        .map_err(store_err)?;
    w.open_table(BY_NAME)
        .map_err(store_err)?
        .insert((j.name.as_str(), j.end_ms, j.job_id), ())
        .map_err(store_err)?;
    let span = j.end_ms.saturating_sub(j.submit_ms);
    let mut m = w.open_table(META).map_err(store_err)?;
    let prev = m.get(MAX_SPAN).map_err(store_err)?.map_or(0, |v| v.value());
    if span > prev {
        m.insert(MAX_SPAN, span).map_err(store_err)?;
    }
    Ok(())
}

/// Removes a record's index keys (replaced or pruned record). The longest span stays:
/// it only has to be an upper bound.
pub(crate) fn remove(w: &WriteTransaction, j: &pb::HistoryJob) -> Result<(), HistoryError> {
    w.open_table(BY_USER)
        .map_err(store_err)?
        .remove((j.user.as_str(), j.end_ms, j.job_id))
        .map_err(store_err)?;
    w.open_table(BY_NAME)
        .map_err(store_err)?
        .remove((j.name.as_str(), j.end_ms, j.job_id))
        .map_err(store_err)?;
    Ok(())
}

/// The latest end time a record matching `f` can have.
pub(crate) fn end_upper(r: &ReadTransaction, f: &Filter) -> Result<u64, HistoryError> {
    if f.until_ms == 0 {
        return Ok(u64::MAX);
    }
    let m = r.open_table(META).map_err(store_err)?;
    let span = m.get(MAX_SPAN).map_err(store_err)?.map_or(0, |v| v.value());
    Ok(f.until_ms.saturating_add(span))
}

/// Builds the indexes of a store written before they existed (once, at open).
pub(crate) fn upgrade(db: &Database) -> Result<(), HistoryError> {
    let w = db.begin_write().map_err(store_err)?;
    let version = w
        .open_table(META)
        .map_err(store_err)?
        .get(SCHEMA)
        .map_err(store_err)?
        .map_or(0, |v| v.value());
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let mut n = 0u64;
    {
        let jobs = w.open_table(JOBS).map_err(store_err)?;
        for item in jobs.iter().map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            let j =
                pb::HistoryJob::decode(v.value()).map_err(|source| HistoryError::Decode { job: k.value(), source })?;
            insert(&w, &j)?;
            n += 1;
        }
    }
    w.open_table(META)
        .map_err(store_err)?
        .insert(SCHEMA, SCHEMA_VERSION)
        .map_err(store_err)?;
    w.commit().map_err(store_err)?;
    if n > 0 {
        tracing::info!(records = n, "history: indexed the records of an older store");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::history::{Filter, History, DEFAULT_RETENTION};
    use rudel_proto::v1 as pb;

    fn job(id: u64, user: &str, submit: u64, end: u64) -> pb::HistoryJob {
        pb::HistoryJob {
            job_id: id,
            user: user.into(),
            state: "completed".into(),
            submit_ms: submit,
            end_ms: end,
            ..Default::default()
        }
    }

    /// The indexed query returns what a scan of every record with `Filter::matches` and
    /// the end bound would.
    #[test]
    fn indexed_windows_match_a_full_scan() {
        let d = tempfile::tempdir().unwrap();
        let h = History::open(&d.path().join("history.redb"), DEFAULT_RETENTION).unwrap();
        // Varied spans, one very long: it must still be found in a window it started in.
        let mut jobs: Vec<_> = (1..=300u64)
            .map(|i| job(i, ["a", "b", "c"][(i % 3) as usize], i * 10, i * 10 + (i * 37) % 200))
            .collect();
        for j in &mut jobs {
            j.name = ["x", "y"][(j.job_id % 2) as usize].into();
        }
        jobs.push(job(301, "a", 5, 100_000));
        h.write_now(1, &jobs).unwrap();
        // Re-recorded with another end and user: the old index keys must be gone.
        let moved = pb::HistoryJob {
            name: "z".into(),
            ..job(7, "c", 70, 5_000)
        };
        h.write_now(2, std::slice::from_ref(&moved)).unwrap();
        jobs[6] = moved;
        let names: [&[&str]; 4] = [&[], &["x"], &["z", "y"], &["nope"]];
        for (user, names) in ["", "a", "c"].into_iter().flat_map(|u| names.map(|n| (u, n))) {
            for (since, until) in [(0, 0), (500, 0), (500, 900), (0, 50), (2_000, 2_100)] {
                let f = Filter {
                    user: user.into(),
                    names: names.iter().map(|n| n.to_string()).collect(),
                    since_ms: since,
                    until_ms: until,
                    limit: 10_000,
                    ..Default::default()
                };
                let mut got: Vec<u64> = h.query_filter(&f).unwrap().iter().map(|j| j.job_id).collect();
                got.sort();
                let want: Vec<u64> = jobs
                    .iter()
                    .filter(|j| f.matches(j) && j.end_ms >= since)
                    .map(|j| j.job_id)
                    .collect();
                assert_eq!(got, want, "user {user:?} names {names:?} since {since} until {until}");
            }
        }
        assert!(h.prune(1_000).unwrap() > 0);
        let r = h.db_for_tests().begin_read().unwrap();
        let t = r.open_table(super::BY_USER).unwrap();
        assert!(t.range(("a", 0, 0)..=("a", 999, u64::MAX)).unwrap().next().is_none());
        let t = r.open_table(super::BY_NAME).unwrap();
        assert!(t.range(("x", 0, 0)..=("x", 999, u64::MAX)).unwrap().next().is_none());
        let old_name = ("y", 7 * 10 + (7 * 37) % 200, 7);
        assert!(
            t.get(old_name).unwrap().is_none(),
            "the re-recorded job's old name key is gone"
        );
    }
}
