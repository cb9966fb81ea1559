//! What `rudel explain`, `rudel show` and `squeue --start` say about backfill: the
//! reservation of the last pass (kept in the state) and whether a waiting job may start
//! before the reserved one. Read-only, computed on the head that answers.
use super::backfill::{BackfillMode, Reservation, BACKFILL_VERSION};
use crate::ids::NodeId;
use crate::job::Job;
use crate::parse::format_duration;
use crate::state::State;

/// The reservation in force, when the cluster runs backfill.
pub fn reservation(state: &State) -> Option<&Reservation> {
    let on = state.sched.version >= BACKFILL_VERSION && state.sched.backfill.mode != BackfillMode::Off;
    state.reservation.as_ref().filter(|_| on)
}

/// The reservation `job` holds: the first, or under conservative backfill a later one.
fn held_by<'s>(state: &'s State, job: &Job) -> Option<&'s Reservation> {
    let first = reservation(state)?;
    std::iter::once(first)
        .chain(&state.later_reservations)
        .find(|r| r.job == job.id)
}

/// The expected start (log time) and nodes of `job`, when it holds a reservation.
pub fn expected_start(state: &State, job: &Job) -> Option<(u64, Vec<String>)> {
    let r = held_by(state, job)?;
    let start = r.start_ms?;
    let names = r
        .nodes
        .iter()
        .filter_map(|id| state.nodes.get(*id as usize).map(|n| n.name.clone()))
        .collect();
    Some((start, names))
}

/// Is node `id` kept from `job` by the reservation? `None`: backfill does not decide
/// (off, or no reservation): the caller's rule without time limits holds.
pub fn keeps_node(state: &State, id: NodeId, job: &Job) -> Option<bool> {
    let r = reservation(state)?;
    if r.job == job.id {
        return Some(false);
    }
    if !r.nodes.contains(&id) {
        return Some(false);
    }
    Some(match r.start_ms {
        None => true,
        Some(t) => !ends_by(state, job, t),
    })
}

/// True when a task of `job` started now ends by log time `t` (its limit says so).
fn ends_by(state: &State, job: &Job, t: u64) -> bool {
    let limit = job.spec.time_limit_ms;
    limit > 0 && state.now_ms.saturating_add(limit) <= t
}

/// (expected start of the reserved job, what backfill means for `job`) for `rudel
/// explain`; `(None, "")` when backfill is off or nothing is reserved.
pub fn note(state: &State, job: &Job) -> (Option<u64>, String) {
    let Some(r) = reservation(state) else {
        return (None, String::new());
    };
    let limit = format_duration(job.spec.time_limit_ms);
    if let Some(own) = state.later_reservations.iter().find(|l| l.job == job.id) {
        let text = format!(
            "this job holds a reservation behind job {}'s (conservative backfill): nothing after it in the \
             queue may delay it (expected start: when running tasks end at their time limits)",
            r.job
        );
        return (own.start_ms, text);
    }
    let text = if r.job == job.id {
        match r.start_ms {
            Some(_) => "this job holds the reservation: nothing that starts after it in the queue may delay it \
                        (expected start: when running tasks end at their time limits)"
                .to_string(),
            None => "this job holds the reservation, with no expected start: a task it waits for has no time \
                     limit, so every node it could use is kept for it"
                .to_string(),
        }
    } else if !job.running.is_empty() && job.next_position >= job.total && job.requeued.is_empty() {
        String::new()
    } else {
        match r.start_ms {
            None => format!(
                "job {}'s expected start is unknown (a task it waits for has no time limit): the nodes it \
                 could use are kept for it whole",
                r.job
            ),
            Some(_) if job.spec.time_limit_ms == 0 => format!(
                "it has no time limit, so it cannot backfill: it may start only on nodes job {} does not \
                 need (give it one with -t)",
                r.job
            ),
            Some(t) if !ends_by(state, job, t) => format!(
                "its time limit {limit} ends after job {}'s expected start: it may start only on nodes job {} \
                 does not need, or in what they have spare then",
                r.job, r.job
            ),
            Some(_) => format!(
                "its time limit {limit} ends before job {}'s expected start: it may backfill onto that job's \
                 nodes when they have room",
                r.job
            ),
        }
    };
    (r.start_ms, text)
}
