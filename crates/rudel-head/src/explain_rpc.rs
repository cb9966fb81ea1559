//! The Explain call: rudel-core's node-by-node explanation of a waiting job, as the API
//! shape `rudel explain` and scripts read.
use rudel_core::explain::Explanation;
use rudel_core::state::State;
use rudel_proto::v1 as pb;
use tonic::Status;

use crate::auth::Caller;

/// Explains job (or array task) `id` for `caller`, who must own it or be an admin: the
/// explanation shows what the job asks for, which is part of its details.
pub fn explain(state: &State, caller: &Caller, id: u64) -> Result<pb::ExplainResponse, Status> {
    let (job, _) = state.job_of(id).ok_or_else(|| {
        Status::not_found(format!(
            "no job {id} in the queue (finished jobs are in `rudel history`; nothing waits there)"
        ))
    })?;
    crate::authz::check_owner(caller, id, &job.spec.user, "explain")?;
    let e = rudel_core::explain::explain(state, job.id).ok_or_else(|| Status::not_found(format!("no job {id}")))?;
    Ok(to_pb(e, job.state().as_str()))
}

fn to_pb(e: Explanation, state: &str) -> pb::ExplainResponse {
    pb::ExplainResponse {
        job_id: e.job,
        state: state.into(),
        reason: e.reason,
        needs: e.needs,
        queue_position: e.queue_position.map_or(0, |p| p as u64),
        reserved_for: e.reserved_for.unwrap_or(0),
        nodes: e
            .nodes
            .into_iter()
            .map(|v| pb::NodeVerdict {
                node: v.node,
                verdict: v.verdict.as_str().into(),
                detail: v.detail,
            })
            .collect(),
        priority: e.priority,
        reserved_start_ms: e.reserved_start_ms.unwrap_or(0),
        backfill: e.backfill,
    }
}
