//! Time-driven gates: a job's `--begin` time or an `after:ID+MIN` delay opens only when an
//! entry applies at or after that time, and an idle cluster applies none. The leader
//! proposes a `Tick` once the state's earliest timer is due (followers never propose; a
//! new leader picks up the same timers from the replicated state). A scheduling pass that
//! stopped at `max_starts` makes the state due at once: the leader then proposes the next
//! `Tick` as soon as the last one applied, not at the next check. From scheduling version
//! 10 an entry whose short pass stopped at a job it could not start makes a full pass due
//! (`pass.full_interval_ms` after the last one): the Tick proposed then runs it. Those two
//! are measured in log time, which may be ahead of this head's clock (`wake_due`).
use std::time::{Duration, Instant};

use rudel_core::{Command, State};

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
    let mut clock = LogClock::default();
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
        let due = wake_due(&svc.shared.read().state, now, &mut clock, Instant::now());
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

/// Whether the leader proposes a `Tick` now (wall clock `wall`, ms since the epoch).
///
/// Log time never goes back (each entry carries its proposer's clock, and the state keeps
/// the latest), so after a leader whose clock ran ahead the log is ahead of this head's
/// clock, by as much as that clock was off. A time in the log is then reached by this
/// clock only that much later. For a `--begin` time or a fair-share recompute that is
/// what the log says. But a capped pass is due at once, and a full pass
/// `pass.full_interval_ms` of log time after the last one: waiting for the wall clock
/// there held every start for minutes (the HA suite's randomized faults, a head restarted
/// with its clock 168 s ahead; every start behind a blocked job waits for a full pass).
fn wake_due(s: &State, wall: u64, clock: &mut LogClock, at: Instant) -> bool {
    if s.more_to_place {
        return true;
    }
    if s.next_wake_ms().is_some_and(|t| t <= wall) {
        return true;
    }
    s.full_pass_due_ms.is_some_and(|t| t <= clock.now(s.now_ms, at))
}

/// Log time as this head sees it pass: the latest entry's time, advanced by how long ago
/// (by this head's monotonic clock) the log reached it.
#[derive(Debug, Default)]
struct LogClock {
    /// The log time last seen, and when it was first seen.
    seen: Option<(u64, Instant)>,
}

impl LogClock {
    fn now(&mut self, log_now: u64, at: Instant) -> u64 {
        let since = match self.seen {
            Some((t, since)) if t == log_now => since,
            _ => {
                self.seen = Some((log_now, at));
                at
            }
        };
        log_now.saturating_add(at.saturating_duration_since(since).as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rudel_core::command::NodeRegistration;

    const DAY: u64 = 86_400_000;

    /// A state whose log time is `log_now`, with a full pass due `due_in` ms after it.
    fn state(log_now: u64, due_in: u64) -> State {
        let mut s = State::new();
        let reg = NodeRegistration {
            name: "n0".into(),
            uid: "u0".into(),
            cpus: 1,
            mem_bytes: 1 << 30,
            ..NodeRegistration::default()
        };
        s.apply(Command::RegisterNode { reg, now_ms: log_now });
        s.full_pass_due_ms = Some(log_now + due_in);
        s
    }

    #[test]
    fn a_full_pass_falls_due_by_log_time_even_with_the_log_ahead_of_the_clock() {
        let (log_now, wall) = (DAY + 168_000, DAY);
        let s = state(log_now, 300);
        let mut clock = LogClock::default();
        let t0 = Instant::now();
        assert!(!wake_due(&s, wall, &mut clock, t0), "not yet: 300 ms of log time to go");
        let later = t0 + Duration::from_millis(299);
        assert!(!wake_due(&s, wall + 299, &mut clock, later));
        let later = t0 + Duration::from_millis(300);
        assert!(
            wake_due(&s, wall + 300, &mut clock, later),
            "due 300 ms after the log reached its time, though the clock is 168 s behind it"
        );
    }

    #[test]
    fn the_log_clock_restarts_when_the_log_moves() {
        let mut clock = LogClock::default();
        let t0 = Instant::now();
        assert_eq!(clock.now(1_000, t0), 1_000);
        assert_eq!(clock.now(1_000, t0 + Duration::from_millis(40)), 1_040);
        assert_eq!(clock.now(5_000, t0 + Duration::from_millis(50)), 5_000);
        assert_eq!(clock.now(5_000, t0 + Duration::from_millis(60)), 5_010);
    }

    #[test]
    fn a_capped_pass_is_due_at_once_whatever_the_clocks_say() {
        let mut s = state(DAY + 90_000, 10_000);
        let mut clock = LogClock::default();
        let t0 = Instant::now();
        s.more_to_place = true;
        assert!(wake_due(&s, DAY, &mut clock, t0), "a capped pass goes on at once");
        s.more_to_place = false;
        s.full_pass_due_ms = None;
        assert!(
            !wake_due(&s, DAY, &mut clock, t0 + Duration::from_secs(60)),
            "nothing due: no Tick"
        );
    }
}
