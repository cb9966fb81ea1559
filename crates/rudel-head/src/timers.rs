//! Time-driven gates: a job's `--begin` time or an `after:ID+MIN` delay opens only when an
//! entry applies at or after that time, and an idle cluster applies none. The leader
//! proposes a `Tick` once the state's earliest timer is due (followers never propose; a
//! new leader picks up the same timers from the replicated state).
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
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
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
        if let Err(e) = svc.proposer.propose(Command::Tick { now_ms: now }).await {
            tracing::warn!(error = %e, "could not propose a timer tick");
        }
    }
}
