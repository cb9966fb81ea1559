//! The Limits call (`rudel limits`): the limits in force for one user and that user's
//! usage now, from this head's replicated state.
use rudel_core::state::State;
use rudel_proto::v1 as pb;
use tonic::Status;

use crate::auth::Caller;

/// Limits and usage of `asked` (empty: the caller). Users see their own; admins anyone's.
pub fn limits(state: &State, caller: &Caller, asked: &str) -> Result<pb::LimitsResponse, Status> {
    let user = if asked.is_empty() { caller.user.as_str() } else { asked };
    if user.is_empty() {
        return Err(Status::invalid_argument(
            "this certificate names no user: give --user NAME",
        ));
    }
    if user != caller.user && !caller.is_admin() {
        tracing::warn!(caller = %caller.name, user = %caller.user, asked = user, "refused limits: not the user");
        return Err(Status::permission_denied(format!(
            "cannot show the limits of {user}: you are {}; only admins see other users'",
            caller.user
        )));
    }
    let l = &state.sched.limits;
    let mine = l.for_user(user);
    let pending = state.pending_of(user);
    let running = state.running_usage.of(user);
    Ok(pb::LimitsResponse {
        user: user.to_string(),
        max_pending_tasks: mine.max_pending_tasks,
        max_pending_jobs: mine.max_pending_jobs,
        max_running_tasks: mine.max_running_tasks,
        max_running_cpus: mine.max_running_cpus,
        submit_rate: l.submit_rate_per_user,
        submit_burst: l.submit_burst_per_user.or(l.submit_rate_per_user),
        pending_tasks: pending.tasks,
        pending_jobs: pending.jobs,
        running_tasks: running.tasks,
        running_cpus: running.cpus,
        queue_max_pending_tasks: l.max_pending_tasks,
        queue_pending_tasks: state.pending_total(),
        max_running_gpus: mine.max_running_gpus,
        running_gpus: running.gpus,
        accounts: state
            .sched
            .accounts
            .iter()
            .filter(|(_, a)| a.users.contains(user))
            .map(|(name, _)| account(state, name))
            .collect(),
    })
}

fn account(state: &State, name: &str) -> pb::AccountLimits {
    let l = state.sched.limits.for_account(name);
    let pending = state.pending_of_account(name);
    let running = state.running_usage.of_account(name);
    pb::AccountLimits {
        name: name.to_string(),
        max_pending_tasks: l.max_pending_tasks,
        max_pending_jobs: l.max_pending_jobs,
        max_running_tasks: l.max_running_tasks,
        max_running_cpus: l.max_running_cpus,
        max_running_gpus: l.max_running_gpus,
        pending_tasks: pending.tasks,
        pending_jobs: pending.jobs,
        running_tasks: running.tasks,
        running_cpus: running.cpus,
        running_gpus: running.gpus,
    }
}
