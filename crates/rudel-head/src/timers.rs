//! Time-driven gates: a job's `--begin` time or an `after:ID+MIN` delay opens only when an
//! entry applies at or after that time, and an idle cluster applies none. The leader
//! proposes a `Tick` once the state's earliest timer is due (followers never propose; a
//! new leader picks up the same timers from the replicated state). A scheduling pass that
//! stopped at `max_starts` makes the state due at once: the leader then proposes the next
//! `Tick` as soon as the last one applied, not at the next check. From scheduling version
//! 10 an entry whose short pass stopped at a job it could not start makes a full pass due
//! (`pass.full_interval_ms` after the last one): the Tick proposed then runs it.
use std::time::Duration;

use rudel_core::Command;

use crate::agent_service::AgentService;
use crate::proposer::now_ms;

/// How often the leader looks at the earliest timer: the most a begin time is late by.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Runs until `svc.shutdown` fires.
pub async fn run(svc: AgentService) {
    let mut shutdown = svc.shutdown.clone();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut go_on = false;
    loop {
        if go_on {
            if shutdown.has_changed().unwrap_or(true) {
                return;
            }
        } else {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
        }
        go_on = false;
        let m = svc.raft.metrics().borrow().clone();
        if m.current_leader != Some(m.id) {
            continue;
        }
        let now = now_ms();
        let due = svc.shared.read().state.next_wake_ms().is_some_and(|t| t <= now);
        if !due {
            continue;
        }
        // A failed proposal is retried at the next check: the timer stays in the state
        // until a Tick at or after its time applies.
        match svc.proposer.propose(Command::Tick { now_ms: now }).await {
            Ok(_) => go_on = svc.shared.read().state.more_to_place,
            Err(e) => tracing::warn!(error = %e, "could not propose a timer tick"),
        }
    }
}
