//! Mapping between wire messages shared by head and agent and rudel-core's model.
//! (Hand-written, unlike the generated `v1` module, because both sides need it.)
use rudel_core::{TaskKey, TaskOutcome, TaskReport};

use crate::v1 as pb;

/// Wire task ref to core key + attempt.
pub fn task_ref(r: &pb::TaskRef) -> (TaskKey, u32) {
    (
        TaskKey {
            job: r.job_id,
            index: r.index,
        },
        r.attempt,
    )
}

/// Core key + attempt to wire task ref.
pub fn to_task_ref(key: TaskKey, attempt: u32) -> pb::TaskRef {
    pb::TaskRef {
        job_id: key.job,
        index: key.index,
        attempt,
    }
}

/// Wire report to core report; unknown outcomes are rejected.
pub fn report_from_pb(r: pb::TaskReport) -> Option<TaskReport> {
    let (key, attempt) = task_ref(r.task.as_ref()?);
    Some(TaskReport {
        key,
        attempt,
        outcome: TaskOutcome::parse(&r.outcome)?,
        exit_code: r.exit_code,
        signal: r.signal,
        start_ms: r.start_ms,
        end_ms: r.end_ms,
        message: r.message,
        usage: rudel_core::TaskUsage {
            max_rss_kb: r.max_rss_kb,
            user_cpu_us: r.user_cpu_us,
            sys_cpu_us: r.sys_cpu_us,
        },
    })
}

/// Core report to wire report.
pub fn report_to_pb(r: &TaskReport) -> pb::TaskReport {
    pb::TaskReport {
        task: Some(to_task_ref(r.key, r.attempt)),
        outcome: r.outcome.as_str().into(),
        exit_code: r.exit_code,
        signal: r.signal,
        start_ms: r.start_ms,
        end_ms: r.end_ms,
        message: r.message.clone(),
        max_rss_kb: r.usage.max_rss_kb,
        user_cpu_us: r.usage.user_cpu_us,
        sys_cpu_us: r.usage.sys_cpu_us,
    }
}
