//! Cancel: whole jobs and single array tasks in one call. An array task named by its own
//! job id (Slurm gives each array task one) cancels that task only, as `scancel` does;
//! cancelling its whole array by mistake would kill the user's other tasks.
use rudel_core::{Command, JobId, Response, State, TaskKey};
use rudel_proto::v1 as pb;
use tonic::Status;

/// What one cancel call names, resolved against the state.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Targets {
    pub jobs: Vec<JobId>,
    pub tasks: Vec<TaskKey>,
}

/// Splits the ids a client named into whole jobs and array tasks.
pub fn targets(state: &State, req: &pb::CancelRequest) -> Targets {
    let mut t = Targets::default();
    for &id in &req.job_ids {
        match state.job_of(id) {
            Some((j, Some(index))) => t.tasks.push(TaskKey { job: j.id, index }),
            _ => t.jobs.push(id),
        }
    }
    t.tasks.extend(req.tasks.iter().map(|r| TaskKey {
        job: r.job_id,
        index: r.index,
    }));
    t
}

/// The log command for the targets (one entry even when both kinds are named).
pub fn command(t: &Targets, now_ms: u64) -> Command {
    let jobs = Command::Cancel {
        jobs: t.jobs.clone(),
        now_ms,
    };
    let tasks = Command::CancelTasks {
        tasks: t.tasks.clone(),
        now_ms,
    };
    match (t.jobs.is_empty(), t.tasks.is_empty()) {
        (false, true) => jobs,
        (true, false) => tasks,
        _ => Command::Batch(vec![jobs, tasks]),
    }
}

/// The reply, or "no such job" naming every unknown id or task (and what was done anyway).
pub fn reply(r: Response) -> Result<pb::CancelResponse, Status> {
    let mut out = pb::CancelResponse::default();
    let mut unknown: Vec<String> = Vec::new();
    collect(r, &mut out, &mut unknown)?;
    if unknown.is_empty() {
        return Ok(out);
    }
    let done = out.cancelled.len() + out.cancelled_tasks.len();
    Err(Status::not_found(format!(
        "no such job: {} ({})",
        unknown.join(", "),
        if done == 0 {
            "nothing was cancelled".to_string()
        } else {
            format!("the {done} other jobs and tasks named were cancelled")
        }
    )))
}

fn collect(r: Response, out: &mut pb::CancelResponse, unknown: &mut Vec<String>) -> Result<(), Status> {
    let task_ref = |k: TaskKey| pb::ArrayTask {
        job_id: k.job,
        index: k.index,
    };
    match r {
        Response::Batch(rs) => rs.into_iter().try_for_each(|r| collect(r, out, unknown)),
        Response::Cancelled {
            cancelled,
            already_finished,
            unknown: u,
        } => {
            out.cancelled.extend(cancelled);
            out.already_finished.extend(already_finished);
            unknown.extend(u.iter().map(u64::to_string));
            Ok(())
        }
        Response::TasksCancelled {
            cancelled,
            already_finished,
            unknown: u,
        } => {
            out.cancelled_tasks.extend(cancelled.into_iter().map(task_ref));
            out.finished_tasks.extend(already_finished.into_iter().map(task_ref));
            unknown.extend(u.iter().map(|k| format!("{}_{}", k.job, k.index)));
            Ok(())
        }
        other => Err(Status::internal(format!("unexpected cancel result {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_go_in_one_entry_and_unknowns_are_named() {
        let t = Targets {
            jobs: vec![4],
            tasks: vec![TaskKey { job: 1, index: 3 }],
        };
        assert!(matches!(command(&t, 1), Command::Batch(ref c) if c.len() == 2));
        let r = Response::Batch(vec![
            Response::Cancelled {
                cancelled: vec![4],
                already_finished: vec![],
                unknown: vec![],
            },
            Response::TasksCancelled {
                cancelled: vec![],
                already_finished: vec![],
                unknown: vec![TaskKey { job: 1, index: 3 }],
            },
        ]);
        let e = reply(r).unwrap_err();
        assert!(e.message().contains("no such job: 1_3"), "{}", e.message());
        assert!(e.message().contains("1 other"), "{}", e.message());
    }
}
