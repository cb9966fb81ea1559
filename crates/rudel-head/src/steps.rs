//! Step requests from job processes, relayed by their agent (docs/parallel-jobs.md).
//!
//! The agent has already identified the caller (a live task of its own, the task's uid);
//! the head checks against the replicated state that this attempt of the task is running
//! on that very node, so an agent cannot ask for steps of a job it does not run. Steps
//! themselves are not built yet: an accepted request is still refused, loudly.
use rudel_core::State;
use rudel_proto::v1 as pb;

/// Why the request is refused (never empty today: steps are not supported yet).
pub fn check(state: &State, node: &str, r: &pb::StepRequest) -> String {
    let Some(t) = &r.task else {
        return "step request without a task".into();
    };
    let key = rudel_core::ids::TaskKey {
        job: t.job_id,
        index: t.index,
    };
    let running_here = state
        .node_by_name
        .get(node)
        .and_then(|&id| state.nodes.get(id as usize))
        .is_some_and(|n| n.running.get(&key) == Some(&t.attempt));
    if !running_here {
        return format!(
            "job {} task {} (attempt {}) is not running on node {node}",
            t.job_id, t.index, t.attempt
        );
    }
    format!(
        "job {} is running on node {node}, but job steps through the agent are not supported yet (issue 11)",
        t.job_id
    )
}
