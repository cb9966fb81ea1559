//! Per-task accounting: one row per ended task (its own job id, node, times, exit status,
//! peak RSS and CPU time from the agent) and a per-job usage total, beside the job records
//! of [`crate::history`].
//!
//! The rows come from `Event::TaskEnded`, not from the replicated state, which keeps no
//! record of a completed array task (it would grow with every task). Rows are kept for
//! the first [`MAX_TASK_ROWS`] positions of a job: a 1,000,000-task array does not cost
//! a million rows; its later tasks still count in the job's usage total, and those that
//! did not complete keep the job record's own (capped) task list.
use prost::Message;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use rudel_core::{Event, State, TaskState};
use rudel_proto::v1 as pb;

use crate::history::{store_err, HistoryError};

/// (job id, task index) -> `pb::HistoryTask` (protobuf bytes).
pub(crate) const TASKS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("history_tasks");
/// job id -> (largest peak RSS KiB, user CPU µs, system CPU µs) over its ended tasks.
pub(crate) const USAGE: TableDefinition<u64, (u64, u64, u64)> = TableDefinition::new("history_usage");

/// Task rows kept per job (by position in the array).
pub const MAX_TASK_ROWS: u64 = 10_000;

/// One ended task, as queued for the writer.
#[derive(Clone, Debug)]
pub struct TaskRecord {
    /// The job (the array's id for an array task).
    pub job: u64,
    pub task: pb::HistoryTask,
    /// False past [`MAX_TASK_ROWS`]: counted in the job's usage only.
    pub row: bool,
}

/// The record of a `TaskEnded` event (None for other events and for an attempt that
/// went back to the queue: its task has not ended).
pub fn from_event(state: &State, ev: &Event) -> Option<TaskRecord> {
    let Event::TaskEnded {
        key,
        attempt,
        node,
        state: ts,
        end,
    } = ev
    else {
        return None;
    };
    if *ts == TaskState::Pending {
        return None;
    }
    let job = state.jobs.get(&key.job)?;
    let own_id = job.task_job_id(key.index);
    let recorded = job
        .ended
        .get(&key.index)
        .filter(|t| t.attempt == *attempt)
        .map_or(ts.as_str(), |t| t.recorded_state());
    Some(TaskRecord {
        job: job.id,
        row: own_id - job.id < MAX_TASK_ROWS,
        task: pb::HistoryTask {
            index: key.index,
            state: recorded.into(),
            exit_code: end.exit_code,
            signal: end.signal,
            start_ms: end.start_ms,
            end_ms: end.end_ms,
            node: state
                .nodes
                .get(*node as usize)
                .map(|n| n.name.clone())
                .unwrap_or_default(),
            job_id: own_id,
            max_rss_kb: end.usage.max_rss_kb,
            user_cpu_us: end.usage.user_cpu_us,
            sys_cpu_us: end.usage.sys_cpu_us,
        },
    })
}

/// Writes task rows and adds their usage to their jobs' totals (inside the writer's
/// transaction). A task whose row exists already (its entry replayed after a head
/// restart) is not added again; a task past the row cap has no row to tell, so a replay
/// can count its CPU time twice in the job's total.
pub(crate) fn write(w: &WriteTransaction, tasks: &[TaskRecord]) -> Result<(), HistoryError> {
    if tasks.is_empty() {
        return Ok(());
    }
    let mut rows = w.open_table(TASKS).map_err(store_err)?;
    let mut usage = w.open_table(USAGE).map_err(store_err)?;
    for t in tasks {
        let key = (t.job, t.task.index);
        let replayed = t.row && rows.get(key).map_err(store_err)?.is_some();
        if t.row {
            rows.insert(key, t.task.encode_to_vec().as_slice()).map_err(store_err)?;
        }
        if replayed {
            continue;
        }
        let (rss, user, sys) = usage.get(t.job).map_err(store_err)?.map_or((0, 0, 0), |v| v.value());
        let total = (
            rss.max(t.task.max_rss_kb),
            user.saturating_add(t.task.user_cpu_us),
            sys.saturating_add(t.task.sys_cpu_us),
        );
        usage.insert(t.job, total).map_err(store_err)?;
    }
    Ok(())
}

/// Deletes a pruned job's rows and total.
pub(crate) fn remove(w: &WriteTransaction, job: u64) -> Result<(), HistoryError> {
    let mut rows = w.open_table(TASKS).map_err(store_err)?;
    rows.retain_in((job, 0)..=(job, u32::MAX), |_, _| false)
        .map_err(store_err)?;
    w.open_table(USAGE).map_err(store_err)?.remove(job).map_err(store_err)?;
    Ok(())
}

/// Fills a job record read from the store with its task rows and usage total. Rows
/// replace the record's own task list where both name a task; the record's list keeps
/// the failed tasks past the row cap.
pub(crate) fn attach(r: &ReadTransaction, j: &mut pb::HistoryJob) -> Result<(), HistoryError> {
    let usage = r.open_table(USAGE).map_err(store_err)?;
    if let Some(v) = usage.get(j.job_id).map_err(store_err)? {
        (j.max_rss_kb, j.user_cpu_us, j.sys_cpu_us) = v.value();
    }
    let rows = r.open_table(TASKS).map_err(store_err)?;
    let mut tasks = Vec::new();
    for item in rows.range((j.job_id, 0)..=(j.job_id, u32::MAX)).map_err(store_err)? {
        let (_, v) = item.map_err(store_err)?;
        let t = pb::HistoryTask::decode(v.value()).map_err(|source| HistoryError::Decode { job: j.job_id, source })?;
        tasks.push(t);
    }
    if tasks.is_empty() {
        return Ok(());
    }
    let have: std::collections::HashSet<u32> = tasks.iter().map(|t| t.index).collect();
    tasks.extend(j.task_records.drain(..).filter(|t| !have.contains(&t.index)));
    tasks.sort_by_key(|t| t.index);
    j.task_records = tasks;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::history::{History, DEFAULT_RETENTION};

    fn open() -> (tempfile::TempDir, Arc<History>) {
        let d = tempfile::tempdir().unwrap();
        let h = History::open(&d.path().join("history.redb"), DEFAULT_RETENTION).unwrap();
        (d, h)
    }

    fn task(job: u64, index: u32, state: &str, rss: u64, cpu: u64) -> TaskRecord {
        TaskRecord {
            job,
            row: true,
            task: pb::HistoryTask {
                index,
                state: state.into(),
                job_id: job + u64::from(index),
                max_rss_kb: rss,
                user_cpu_us: cpu,
                sys_cpu_us: 1,
                ..Default::default()
            },
        }
    }

    fn array(id: u64, tasks: u64, end: u64) -> pb::HistoryJob {
        pb::HistoryJob {
            job_id: id,
            user: "u".into(),
            state: "failed".into(),
            array: format!("0-{}", tasks - 1),
            tasks,
            end_ms: end,
            ..Default::default()
        }
    }

    #[test]
    fn rows_and_usage_are_attached_to_the_job() {
        let (_d, h) = open();
        let mut beyond = task(10, 3, "completed", 900, 5);
        beyond.row = false;
        let tasks = [
            task(10, 0, "completed", 100, 10),
            task(10, 1, "failed", 300, 20),
            beyond,
        ];
        h.write_tasks_now(1, &tasks, &[array(10, 4, 50)]).unwrap();
        let j = h.get(10).unwrap().unwrap();
        assert_eq!(j.task_records.iter().map(|t| t.index).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(j.task_records[1].job_id, 11);
        // Past the row cap: no row, but in the totals.
        assert_eq!((j.max_rss_kb, j.user_cpu_us, j.sys_cpu_us), (900, 35, 3));
        // A replayed row does not count twice.
        h.write_tasks_now(2, &tasks[..1], &[]).unwrap();
        assert_eq!(h.get(10).unwrap().unwrap().user_cpu_us, 35);
    }

    #[test]
    fn a_task_job_id_finds_its_array_and_pruning_drops_rows() {
        let (_d, h) = open();
        h.write_tasks_now(1, &[task(10, 2, "completed", 1, 1)], &[array(10, 4, 50)])
            .unwrap();
        h.write_now(1, &[array(20, 1, 60)]).unwrap();
        let q = |ids: Vec<u64>| {
            h.query_filter(&crate::history::Filter {
                job_ids: ids,
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .iter()
            .map(|j| j.job_id)
            .collect::<Vec<_>>()
        };
        assert_eq!(q(vec![12]), vec![10], "task id 12 is task 2 of array 10");
        assert_eq!(q(vec![12, 13, 10]), vec![10], "one record per array");
        assert!(q(vec![14]).is_empty(), "past the array's last task");
        assert_eq!(h.prune(55).unwrap(), 1);
        let r = h.db_for_tests().begin_read().unwrap();
        assert!(r
            .open_table(TASKS)
            .unwrap()
            .range((10, 0)..=(10, u32::MAX))
            .unwrap()
            .next()
            .is_none());
        assert!(r.open_table(USAGE).unwrap().get(10).unwrap().is_none());
    }
}
