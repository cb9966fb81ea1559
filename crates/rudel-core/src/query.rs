//! Read-only views of the state for `show`, `jobs` and `wait`.
use crate::ids::TaskKey;
use crate::job::{EndedTask, Job, TaskState};
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
    let held = job.corr.as_deref().is_some_and(|g| g.held() > 0);
    if !job.has_pending() && !held {
        return String::new();
    }
    if let Some(gate) = state.gate(job) {
        return gate_reason(state, job, gate);
    }
    if !state.nodes.iter().any(|n| n.takes_work()) {
        return "NoNodes: no compute node is up and accepting work (drained or down)".into();
    }
    if let Some(limit) = job.spec.array.as_ref().and_then(|a| a.limit) {
        if job.running.len() as u64 >= u64::from(limit) {
            return format!("ArrayLimit: {limit} tasks of this array run at once");
        }
    }
    if state.waiting.get(&job.id) == Some(&crate::sched::plan::Wait::PartitionDown) {
        return format!("PartitionDown: partition {} is down", job.spec.partition);
    }
    if state.waiting.get(&job.id) == Some(&crate::sched::plan::Wait::Licenses) {
        let want: Vec<String> = job.spec.licenses.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        return format!(
            "Licenses: waiting for licenses {} held by running tasks",
            want.join(",")
        );
    }
    if let Some(why) = state
        .waiting
        .get(&job.id)
        .and_then(|w| crate::sched::running_limit::reason(state, job, *w))
    {
        return why;
    }
    if crate::sched::preempt::victims_ending(state, job.id) {
        let n = state.preempting.get(&job.id).map_or(0, |p| p.victims.len());
        return format!("Preempting: waiting for {n} preempted task(s) of lower-tier partitions to end");
    }
    if state.blocked_job == Some(job.id) {
        return "Resources: waiting for free cpus/memory".into();
    }
    if let Some(due) = state.full_pass_due_ms {
        // Scheduling version 10: entries since the last full pass stopped before this job
        // (`sched/passes.rs`); the full one may backfill it.
        let when = match due.saturating_sub(state.now_ms) {
            0 => "now".to_string(),
            ms if ms < 1_000 => "within a second".to_string(),
            ms => format!("in {}", crate::parse::format_duration(ms)),
        };
        return format!(
            "Priority: waiting behind jobs of higher priority or earlier submission; the next \
             full scheduling pass, which may backfill it, is due {when}"
        );
    }
    "Priority: waiting behind jobs of higher priority or earlier submission".into()
}

fn gate_reason(state: &State, job: &Job, gate: crate::gates::Gate) -> String {
    use crate::gates::Gate;
    let dep = || {
        job.spec
            .dependency
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    match gate {
        Gate::JobHeldUser => format!("JobHeldUser: held (`rudel release {}` lets it start)", job.id),
        Gate::Dependency => format!("Dependency: waiting for {}", dep()),
        Gate::DependencyNeverSatisfied => format!(
            "DependencyNeverSatisfied: {} can never hold; cancel the job (or submit with \
             --kill-on-invalid-dep=yes)",
            dep()
        ),
        Gate::BeginTime => format!(
            "BeginTime: starts in {} (--begin)",
            crate::parse::format_duration(job.spec.begin_ms.saturating_sub(state.now_ms))
        ),
    }
}

/// True for a task record of a task that never started: cancelled while it waited (queued
/// on its node behind another task; the agent reports it with no exit code and no
/// signal). Like Slurm for a job cancelled while pending, it has no exit code and no node.
pub fn never_started(t: &EndedTask) -> bool {
    t.state == TaskState::Cancelled && t.exit_code.is_none() && t.signal.is_none()
}

/// The job's exit status once finished: the first failing task's code/signal; 0 when
/// every task completed; none (`Some((None, None))`) when the tasks that did not
/// complete never ran (cancelled while pending).
pub fn exit_status(job: &Job) -> Option<(Option<i32>, Option<i32>)> {
    if !job.is_finished() {
        return None;
    }
    let failing = job
        .ended
        .values()
        .find(|t| t.state != TaskState::Completed && !never_started(t));
    match failing {
        Some(t) => Some((
            t.exit_code.or(if t.signal.is_some() { None } else { Some(1) }),
            t.signal,
        )),
        // Tasks cancelled while pending leave no record: they count, but have no code.
        None if job.count(TaskState::Completed) < job.total => Some((None, None)),
        None => Some((Some(0), None)),
    }
}

/// The nodes the job's tasks ran on: none if no task ever started (tasks only queued on a
/// node before being cancelled did not run there).
pub fn job_nodes(job: &Job) -> Vec<String> {
    if job.start_ms.is_none() {
        return Vec::new();
    }
    job.nodes.clone()
}

/// Why the job failed (first failing task's reason), if it did.
pub fn failure_reason(job: &Job) -> String {
    job.ended
        .values()
        .find(|t| t.state != TaskState::Completed)
        .map(|t| t.reason.clone())
        .unwrap_or_default()
}

/// The tasks of `job` holding resources (running, or queued on their node behind another
/// task: those show as pending), lowest index first.
pub fn running_views(state: &State, job: &Job) -> Vec<TaskView> {
    job.running
        .iter()
        .map(|(&index, rt)| running_view(state, index, rt))
        .collect()
}

fn node_name(state: &State, id: Option<u32>) -> String {
    id.and_then(|i| state.nodes.get(i as usize))
        .map(|n| n.name.clone())
        .unwrap_or_default()
}

fn running_view(state: &State, index: u32, rt: &crate::job::RunningTask) -> TaskView {
    TaskView {
        index,
        state: if rt.after.is_some() {
            TaskState::Pending
        } else {
            TaskState::Running
        },
        node: node_name(state, Some(rt.node)),
        attempt: rt.attempt,
        exit_code: None,
        signal: None,
        start_ms: rt.start_ms,
        end_ms: 0,
        reason: if let Some(by) = rt.preempted_by.filter(|_| rt.kill_requested) {
            format!("preempted by job {by}")
        } else if rt.kill_requested {
            "cancelling".into()
        } else if let Some(p) = rt.after {
            format!("queued on the node behind task {p}")
        } else {
            String::new()
        },
    }
}

/// Running tasks and tasks that ended other than `completed` (plus the single task of a
/// one-task job), at most `limit` of them, lowest index first.
pub fn task_views(state: &State, job: &Job, limit: usize) -> Vec<TaskView> {
    let node_name = |id: Option<u32>| node_name(state, id);
    let mut out: Vec<TaskView> = running_views(state, job)
        .into_iter()
        .chain(job.ended.iter().map(|(&index, t)| TaskView {
            index,
            state: t.state,
            node: if never_started(t) {
                String::new()
            } else {
                node_name(t.node)
            },
            attempt: t.attempt,
            exit_code: t.exit_code,
            signal: t.signal,
            start_ms: if never_started(t) { 0 } else { t.start_ms },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, NodeRegistration, Response, TaskOutcome, TaskReport};
    use crate::job::JobSpec;

    fn one_cpu_node(state: &mut State) {
        state.apply(Command::RegisterNode {
            reg: NodeRegistration {
                name: "n1".into(),
                uid: "u".into(),
                boot_id: "b".into(),
                cpus: 1,
                mem_bytes: 1 << 30,
                mem_enforcement: "rlimit".into(),
                version: "test".into(),
                arch: "x86_64".into(),
                os: "linux".into(),
                address: String::new(),
                labels: Default::default(),
                running: vec![],
                ..NodeRegistration::default()
            },
            now_ms: 1,
        });
    }

    fn submit(state: &mut State, now_ms: u64) -> u64 {
        let spec = JobSpec {
            argv: vec!["sleep".into(), "100".into()],
            cpus: 1,
            chdir: "/".into(),
            // Only --requeue tasks are queued on a node behind another.
            requeue: true,
            ..JobSpec::default()
        };
        match state.apply(Command::Submit {
            request_id: String::new(),
            spec,
            now_ms,
        }) {
            Response::Submitted { job, .. } => job,
            other => panic!("submit: {other:?}"),
        }
    }

    fn cancel(state: &mut State, job: u64, now_ms: u64) {
        state.apply(Command::Cancel {
            jobs: vec![job],
            now_ms,
        });
    }

    fn job(state: &State, id: u64) -> &Job {
        state.jobs.get(&id).expect("job")
    }

    #[test]
    fn a_job_cancelled_while_pending_has_no_exit_code_and_no_node() {
        let mut state = State::new();
        one_cpu_node(&mut state);
        let running = submit(&mut state, 2);
        // Two jobs queued on the node behind the running one, a third waiting in the queue.
        let queued = submit(&mut state, 3);
        let _queued2 = submit(&mut state, 3);
        let pending = submit(&mut state, 4);
        let q = job(&state, queued);
        assert!(
            !q.running.is_empty() && q.running.values().all(|r| r.after.is_some()),
            "{q:?}"
        );
        assert!(job(&state, pending).running.is_empty() && job(&state, pending).has_pending());

        cancel(&mut state, pending, 5);
        let p = job(&state, pending);
        assert_eq!(p.state(), TaskState::Cancelled);
        assert_eq!(exit_status(p), Some((None, None)));
        assert!(job_nodes(p).is_empty());
        assert!(task_views(&state, p, 10).is_empty());

        // Queued on the node: the agent drops it and reports it cancelled, never started.
        cancel(&mut state, queued, 6);
        let attempt = job(&state, queued)
            .running
            .values()
            .next()
            .expect("queued task")
            .attempt;
        state.apply(Command::Reports {
            node: "n1".into(),
            reports: vec![TaskReport {
                key: TaskKey { job: queued, index: 0 },
                attempt,
                outcome: TaskOutcome::Cancelled,
                exit_code: None,
                signal: None,
                start_ms: 6,
                end_ms: 6,
                message: "cancelled before it started".into(),
                usage: Default::default(),
            }],
            now_ms: 6,
        });
        let q = job(&state, queued);
        assert_eq!(q.state(), TaskState::Cancelled);
        assert_eq!(exit_status(q), Some((None, None)));
        assert!(job_nodes(q).is_empty(), "{:?}", q.nodes);
        let views = task_views(&state, q, 10);
        assert_eq!(views.len(), 1);
        assert_eq!(
            (views[0].node.as_str(), views[0].exit_code, views[0].start_ms),
            ("", None, 0)
        );

        // A running task killed by the cancel keeps its node and its signal.
        cancel(&mut state, running, 7);
        state.apply(Command::Reports {
            node: "n1".into(),
            reports: vec![TaskReport {
                key: TaskKey { job: running, index: 0 },
                attempt: 1,
                outcome: TaskOutcome::Cancelled,
                exit_code: None,
                signal: Some(15),
                start_ms: 2,
                end_ms: 7,
                message: String::new(),
                usage: Default::default(),
            }],
            now_ms: 7,
        });
        let r = job(&state, running);
        assert_eq!(exit_status(r), Some((None, Some(15))));
        assert_eq!(job_nodes(r), vec!["n1".to_string()]);
        assert_eq!(task_views(&state, r, 10)[0].node, "n1");
    }
}
