//! Turns for the `round_robin` order: one job per user in turn. Each job gets a turn
//! number at submit: its user's next turn, but never behind the round the scheduler has
//! reached (the turn of the latest job started). Ordering the queue by (turn, id) then
//! starts the first job of every user, then the second of every user, and so on; a user
//! who comes back after a pause joins the current round instead of jumping ahead of
//! everyone with an old, low number, or trailing behind a backlog of hundreds of rounds.
//!
//! Turns are fixed at submit, so a queue key never changes while its job waits (the queue
//! is a sorted set kept up by hand, see `State::enqueue`). Numbers are given only from
//! scheduling version 2 on: a version-1 head does not know them, and replicas must agree.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turns {
    /// Each user's next turn.
    next: BTreeMap<String, u64>,
    /// The highest turn of a job that started: the round the queue has reached.
    round: u64,
}

impl Turns {
    /// The turn of a new job of `user`.
    pub fn assign(&mut self, user: &str) -> u64 {
        let turn = self.next.get(user).copied().unwrap_or(0).max(self.round);
        self.next.insert(user.to_string(), turn.saturating_add(1));
        turn
    }

    /// A job of this turn started.
    pub fn started(&mut self, turn: u64) {
        self.round = self.round.max(turn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Response, TaskOutcome};
    use crate::ids::{JobId, TaskKey};
    use crate::job::JobSpec;
    use crate::state::State;
    use crate::testkit::{configure, one_node, spec, submit};

    /// The one running job of a one-cpu node ends; returns it.
    fn end_running(s: &mut State) -> JobId {
        let (key, attempt) = s
            .jobs
            .values()
            .find_map(|j| {
                j.running
                    .iter()
                    .next()
                    .map(|(i, rt)| (TaskKey { job: j.id, index: *i }, rt.attempt))
            })
            .expect("a running task");
        let now = s.now_ms + 10;
        s.apply(Command::Reports {
            node: "n1".into(),
            reports: vec![crate::testkit::report(
                key,
                attempt,
                TaskOutcome::Exited,
                0,
                now - 5,
                now,
            )],
            now_ms: now,
        });
        key.job
    }

    fn of(user: &str) -> JobSpec {
        // --no-requeue: never queued on the node behind the running task, so each start
        // is the planner's choice at the moment the node frees.
        JobSpec {
            user: user.into(),
            requeue: false,
            ..spec()
        }
    }

    #[test]
    fn round_robin_starts_one_job_per_user_in_turn() {
        let mut s = one_node(1);
        let r = configure(&mut s, &[("version", "2"), ("order", "round_robin")]);
        assert!(!matches!(r, Response::Rejected { .. }), "{r:?}");
        let mut owner = std::collections::BTreeMap::new();
        for u in ["a", "a", "a", "a", "b", "b", "c"] {
            owner.insert(submit(&mut s, of(u)), u);
        }
        let started: Vec<&str> = (0..7).map(|_| owner[&end_running(&mut s)]).collect();
        // a1 runs at once (turn 0); then the other turn-0 jobs, then turn 1 of a and b, then
        // what only a still has.
        assert_eq!(started, ["a", "b", "c", "a", "b", "a", "a"]);
    }

    #[test]
    fn round_robin_is_refused_before_version_2() {
        let mut s = one_node(1);
        let r = configure(&mut s, &[("order", "round_robin")]);
        let Response::Rejected { reason } = r else {
            panic!("accepted: {r:?}")
        };
        assert!(reason.contains("version=2"), "{reason}");
    }

    #[test]
    fn users_take_turns_and_a_returning_user_joins_the_current_round() {
        let mut t = Turns::default();
        let a: Vec<u64> = (0..4).map(|_| t.assign("a")).collect();
        assert_eq!(a, [0, 1, 2, 3]);
        assert_eq!(t.assign("b"), 0, "b's first job goes with a's first");
        t.started(2);
        assert_eq!(t.assign("c"), 2, "a newcomer joins the round reached, not round 0");
        assert_eq!(t.assign("b"), 2);
        assert_eq!(t.assign("a"), 4, "a's backlog keeps its own turns");
    }
}
