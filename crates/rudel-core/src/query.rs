//! Read-only views of the state for `show`, `jobs` and `wait`.
use crate::ids::TaskKey;
use crate::job::{Job, TaskState};
use crate::state::State;

/// One task as users see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView {
    pub index: u32,
    pub state: TaskState,
    pub node: String,
    pub attempt: u32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub reason: String,
}

/// Why a job is still pending, Slurm-style (`Resources`, `Priority`, ...); empty otherwise.
pub fn pending_reason(state: &State, job: &Job) -> String {
    if !job.has_pending() {
        return String::new();
    }
    if !state.nodes.iter().any(|n| n.takes_work()) {
        return "NoNodes: no compute node is up and accepting work (drained or down)".into();
    }
    if let Some(limit) = job.spec.array.as_ref().and_then(|a| a.limit) {
        if job.running.len() as u64 >= u64::from(limit) {
            return format!("ArrayLimit: {limit} tasks of this array run at once");
        }
    }
    if state.blocked_job == Some(job.id) {
        return "Resources: waiting for free cpus/memory".into();
    }
    "Priority: waiting behind jobs of higher priority or earlier submission".into()
}

/// The job's exit status once finished: the first failing task's code/signal, else 0.
pub fn exit_status(job: &Job) -> Option<(Option<i32>, Option<i32>)> {
    if !job.is_finished() {
        return None;
    }
    let failing = job.ended.values().find(|t| t.state != TaskState::Completed);
    match failing {
        Some(t) => Some((
            t.exit_code.or(if t.signal.is_some() { None } else { Some(1) }),
            t.signal,
        )),
        None => Some((Some(0), None)),
    }
}

/// Why the job failed (first failing task's reason), if it did.
pub fn failure_reason(job: &Job) -> String {
    job.ended
        .values()
        .find(|t| t.state != TaskState::Completed)
        .map(|t| t.reason.clone())
        .unwrap_or_default()
}

/// Running tasks and tasks that ended other than `completed` (plus the single task of a
/// one-task job), at most `limit` of them, lowest index first.
pub fn task_views(state: &State, job: &Job, limit: usize) -> Vec<TaskView> {
    let node_name = |id: Option<u32>| {
        id.and_then(|i| state.nodes.get(i as usize))
            .map(|n| n.name.clone())
            .unwrap_or_default()
    };
    let mut out: Vec<TaskView> = job
        .running
        .iter()
        .map(|(&index, rt)| TaskView {
            index,
            state: if rt.after.is_some() {
                TaskState::Pending
            } else {
                TaskState::Running
            },
            node: node_name(Some(rt.node)),
            attempt: rt.attempt,
            exit_code: None,
            signal: None,
            start_ms: rt.start_ms,
            end_ms: 0,
            reason: if rt.kill_requested {
                "cancelling".into()
            } else if let Some(p) = rt.after {
                format!("queued on the node behind task {p}")
            } else {
                String::new()
            },
        })
        .chain(job.ended.iter().map(|(&index, t)| TaskView {
            index,
            state: t.state,
            node: node_name(t.node),
            attempt: t.attempt,
            exit_code: t.exit_code,
            signal: t.signal,
            start_ms: t.start_ms,
            end_ms: t.end_ms,
            reason: t.reason.clone(),
        }))
        .collect();
    out.sort_by_key(|t| t.index);
    out.truncate(limit);
    out
}

/// Task keys of running tasks on a node, with attempt.
pub fn running_on(state: &State, node: &str) -> Vec<(TaskKey, u32)> {
    state
        .node(node)
        .map(|n| n.running.iter().map(|(k, a)| (*k, *a)).collect())
        .unwrap_or_default()
}
