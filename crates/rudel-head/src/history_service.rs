//! The `History` RPC and the `show` fallback, answered from this head's accounting store.
use std::sync::Arc;
use std::time::Duration;

use rudel_proto::v1 as pb;
use tonic::Status;

use crate::history::{record, Filter, History};
use crate::raft::SharedState;

/// How long a query waits for the writer to commit what this head has applied: a job
/// that just ended is shown, not missing from both the queue and the history.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("history store: {e}"))
}

/// Finished jobs from the store, then (when asked) the unfinished ones from the state.
pub async fn history(shared: &Arc<SharedState>, req: pb::HistoryRequest) -> Result<Vec<pb::HistoryJob>, Status> {
    let applied = shared.read().last_applied.map_or(0, |l| l.index);
    shared.history.caught_up(applied, CATCH_UP_WAIT).await;
    let h = shared.history.clone();
    let q = req.clone();
    let mut jobs = tokio::task::spawn_blocking(move || h.query(&q))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    if req.include_active {
        let f = Filter {
            limit: usize::MAX,
            ..Filter::from_pb(&req)
        };
        let mut found = {
            let a = shared.read();
            // An array task's own job id names its array (`sacct -j 43` of a running array).
            let active = |id: &u64| a.state.job_of(*id).map(|(j, _)| j).filter(|j| !j.is_finished());
            let found: Vec<_> = if req.job_ids.is_empty() {
                a.state
                    .jobs
                    .values()
                    .filter(|j| !j.is_finished())
                    .map(|j| record(&a.state, j))
                    .filter(|j| f.matches(j))
                    .collect()
            } else {
                let mut ids: Vec<u64> = req.job_ids.iter().filter_map(active).map(|j| j.id).collect();
                ids.sort_unstable();
                ids.dedup();
                ids.iter()
                    .filter_map(|id| a.state.jobs.get(id))
                    .map(|j| record(&a.state, j))
                    .filter(|j| f.matches(j))
                    .collect()
            };
            found
        };
        // Steps of running jobs that already ended are in the store (read without the
        // state lock held).
        let h = shared.history.clone();
        found = tokio::task::spawn_blocking(move || {
            for j in &mut found {
                j.steps = h.steps(j.job_id)?;
            }
            Ok::<_, crate::history::HistoryError>(found)
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        jobs.extend(found);
    }
    jobs.sort_by_key(|j| j.job_id);
    Ok(jobs)
}

/// The ended steps of a job still in the replicated state, once the store has what this
/// head applied (a step that just ended is shown).
pub async fn steps_of(shared: &Arc<SharedState>, job: u64) -> Result<Vec<pb::HistoryStep>, Status> {
    let applied = shared.read().last_applied.map_or(0, |l| l.index);
    shared.history.caught_up(applied, CATCH_UP_WAIT).await;
    let h = shared.history.clone();
    tokio::task::spawn_blocking(move || h.steps(job))
        .await
        .map_err(internal)?
        .map_err(internal)
}

/// `rudel show` of a job no longer in the replicated state.
pub async fn show_from_history(h: &Arc<History>, job: u64) -> Result<Option<pb::JobInfo>, Status> {
    let h = h.clone();
    // By its own id, or, for an array task's own job id, its array's record.
    let filter = Filter {
        job_ids: vec![job],
        limit: 1,
        ..Filter::default()
    };
    let rec = tokio::task::spawn_blocking(move || h.query_filter(&filter))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    Ok(rec.into_iter().next().map(|j| {
        let task = task_named(&j, job);
        let mut info = job_info_of(j);
        info.task_index = task;
        info
    }))
}

/// The array index that job id `id` names in array record `j` (None: the job itself).
fn task_named(j: &pb::HistoryJob, id: u64) -> Option<u32> {
    if id == j.job_id || j.array.is_empty() {
        return None;
    }
    rudel_core::parse::parse_array(&j.array).ok()?.index_at(id - j.job_id)
}

/// A history record in the shape `show` prints.
fn job_info_of(j: pb::HistoryJob) -> pb::JobInfo {
    let reason = j
        .task_records
        .iter()
        .find(|t| t.state != "completed")
        .map(|t| format!("task {} {}", t.index, t.state))
        .unwrap_or_default();
    pb::JobInfo {
        id: j.job_id,
        name: j.name.clone(),
        state: j.state,
        spec: Some(pb::JobSpec {
            name: j.name,
            cpus: j.cpus,
            mem_bytes: j.mem_bytes,
            time_limit_ms: j.time_limit_ms,
            array: j.array,
            chdir: j.work_dir,
            user: j.user,
            ..Default::default()
        }),
        tasks: j.tasks,
        counts: j.counts,
        exit_code: j.exit_code,
        signal: j.signal,
        nodes: j.nodes,
        submit_ms: j.submit_ms,
        start_ms: j.start_ms,
        end_ms: j.end_ms,
        reason,
        steps: j.steps,
        steps_dropped: j.steps_dropped,
        task_details: j
            .task_records
            .into_iter()
            .map(|t| pb::TaskInfo {
                index: t.index,
                state: t.state,
                node: t.node,
                attempt: 0,
                exit_code: t.exit_code,
                signal: t.signal,
                start_ms: t.start_ms,
                end_ms: t.end_ms,
                reason: String::new(),
            })
            .collect(),
        output_path: String::new(),
        error_path: String::new(),
        task_index: None,
        // Queue-only fields (held, pending and running tasks): a finished job has none.
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_job_id_names_its_index() {
        let j = pb::HistoryJob {
            job_id: 40,
            array: "1-9:2".into(),
            tasks: 5,
            ..Default::default()
        };
        assert_eq!(task_named(&j, 40), None, "the array itself");
        assert_eq!(task_named(&j, 42), Some(5), "third task: index 5");
        let plain = pb::HistoryJob {
            job_id: 7,
            ..Default::default()
        };
        assert_eq!(task_named(&plain, 7), None);
    }
}
