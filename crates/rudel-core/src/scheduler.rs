//! The scheduling pass run after every applied entry: plan ([`crate::sched::plan`]), then
//! commit ([`crate::State::commit`]).
use crate::invariants::Violation;
use crate::sched::PassKind;
use crate::state::State;

/// Places as many pending tasks as fit (an ordinary pass: until the first job that cannot
/// start); returns how many were placed and any placement the commit refused (a planner
/// bug: reported, never applied).
pub fn schedule(state: &mut State, kind: PassKind) -> (usize, Vec<Violation>) {
    state.settle_tails();
    state.settle_free();
    state.settle_releases();
    if kind == PassKind::Full {
        // Always None before version 10 (and cleared by the first full pass after an
        // admin went back to an older version, or the leader would Tick forever).
        state.full_pass_due_ms = None;
        // Only from version 10 on: two builds running an older version must reach the
        // same state, and an older build has no such field.
        if state.sched.version >= crate::sched::PASSES_VERSION {
            state.last_full_pass_ms = state.now_ms;
        }
    }
    if state.queue.is_empty() {
        state.more_to_place = false;
        state.blocked_job = None;
        state.reservation = None;
        state.later_reservations.clear();
        return (0, Vec::new());
    }
    let plan = crate::sched::plan::plan_pass(state, kind);
    let violations = state.commit(&plan);
    (plan.start.len() - violations.len(), violations)
}

#[cfg(test)]
mod cap_tests {
    use crate::command::{Command, Response};
    use crate::testkit::{configure, one_node, spec, submit};

    fn running(s: &crate::State) -> usize {
        s.jobs.values().map(|j| j.running.len()).sum()
    }

    /// `max_starts` stops a pass at the cap and says so; each Tick places up to the cap
    /// more, until a pass places everything it can.
    #[test]
    fn a_pass_stops_at_max_starts_and_ticks_go_on() {
        let mut s = one_node(8);
        let r = configure(&mut s, &[("max_starts", "2")]);
        assert!(
            matches!(r, Response::Rejected { ref reason } if reason.contains("version 8")),
            "{r:?}"
        );
        configure(&mut s, &[("version", "8"), ("max_starts", "2"), ("queue_depth", "0")]);
        let job = submit(
            &mut s,
            crate::job::JobSpec {
                array: Some(crate::parse::parse_array("0-4").unwrap()),
                ..spec()
            },
        );
        assert_eq!(running(&s), 2);
        assert!(s.more_to_place);
        assert_eq!(s.next_wake_ms(), Some(s.now_ms), "due at once");
        let now = s.now_ms;
        s.apply(Command::Tick { now_ms: now });
        assert_eq!(running(&s), 4);
        s.apply(Command::Tick { now_ms: now });
        assert_eq!(running(&s), 5);
        assert!(s.jobs[&job].running.len() == 5);
        s.apply(Command::Tick { now_ms: now });
        assert!(!s.more_to_place, "nothing left: no more Ticks");
        assert_eq!(crate::invariants::check_all(&s), Ok(()));
    }

    /// Without a cap (the default) one pass places everything that fits.
    #[test]
    fn without_a_cap_one_pass_places_everything() {
        let mut s = one_node(8);
        submit(
            &mut s,
            crate::job::JobSpec {
                array: Some(crate::parse::parse_array("0-4").unwrap()),
                ..spec()
            },
        );
        assert_eq!(running(&s), 5);
        assert!(!s.more_to_place);
    }
}
