//! The scheduling pass run after every applied entry: plan ([`crate::sched::plan`]), then
//! commit ([`crate::State::commit`]).
use crate::invariants::Violation;
use crate::state::State;

/// Places as many pending tasks as fit; returns how many were placed and any placement
/// the commit refused (a planner bug: reported, never applied).
pub fn schedule(state: &mut State) -> (usize, Vec<Violation>) {
    state.settle_tails();
    if state.queue.is_empty() {
        state.blocked_job = None;
        state.reservation = None;
        state.later_reservations.clear();
        return (0, Vec::new());
    }
    let plan = crate::sched::plan::plan(state);
    let violations = state.commit(&plan);
    (plan.start.len() - violations.len(), violations)
}
