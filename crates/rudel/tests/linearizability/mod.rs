//! A Wing–Gong–Lowe linearizability checker for the history of one job.
//!
//! The fault-injection test records what its clients did to each job (submit, cancel, read)
//! and when; this module decides whether some total order of those operations that respects
//! real time is explained by the job's state machine, where the system itself may also move
//! the job between client operations. Pure: no I/O, no clock.

use std::collections::HashSet;
use std::fmt::Write as _;

/// What a read saw for the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Obs {
    /// The job did not exist (yet).
    Absent,
    /// The state name users see: `pending`, `running`, `completed`, `failed`, `cancelled`,
    /// `timeout` or `node_fail`.
    State(String),
}

/// What a cancel reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelResult {
    /// The job was live and this cancel ended it.
    Cancelled,
    /// The job had already ended; nothing changed.
    AlreadyFinished,
    /// No answer (timeout, lost connection): it may or may not have taken effect.
    Unknown,
}

/// What a client did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Created the job.
    Submit,
    /// Asked to cancel the job, with the answer it got.
    Cancel(CancelResult),
    /// Looked at the job's state.
    Read(Obs),
}

/// One client operation, with its real-time interval in ms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// When the client sent it.
    pub start: u64,
    /// When the client got the answer; `None` when it never did, so the op may or may not
    /// have taken effect, at any time after `start`.
    pub end: Option<u64>,
    /// What it was and what it answered.
    pub kind: OpKind,
}

/// Checks that the operations on one job are linearizable: some order of them, with every op
/// placed between its start and end (ops without an end may also be left out), is a valid
/// run of the job's state machine, given that the system may move the job (pending ->
/// running, running -> pending when `requeue`, live -> any terminal state but `cancelled`)
/// at any time.
///
/// Returns `Err` with a readable explanation when no such order exists: the deepest point
/// the search reached, the job's possible states there and the ops that could not come next.
pub fn check_job(ops: &[Op], requeue: bool) -> Result<(), String> {
    check_job_within(ops, requeue, Budget::DEFAULT)
}

/// How much searching to do before giving up, so that a pathological history makes the test
/// fail instead of hang: WGL is exponential in the number of mutually concurrent ops.
#[derive(Clone, Copy, Debug)]
struct Budget {
    /// Distinct (placed ops, states) pairs visited.
    states: usize,
    /// Attempts to place an op (bounds the time spent on pairs already visited, too).
    steps: u64,
}

impl Budget {
    /// Far above what per-job histories of a few hundred mostly sequential ops need (a few
    /// thousand of each), and a couple of seconds at most.
    const DEFAULT: Budget = Budget {
        states: 2_000_000,
        steps: 20_000_000,
    };
}

/// [`check_job`] with an explicit search budget.
fn check_job_within(ops: &[Op], requeue: bool, budget: Budget) -> Result<(), String> {
    let entries = parse(ops)?;
    let model = Model::new(requeue);
    match search(&entries, &model, budget) {
        Outcome::Linearizable => Ok(()),
        Outcome::Stuck(deepest) => Err(explain(
            "job history is not linearizable",
            &entries,
            &model,
            &deepest,
            requeue,
        )),
        Outcome::TooLarge(deepest) => Err(explain(
            &format!(
                "linearizability search gave up after {} states or {} steps (too many concurrent ops to decide)",
                budget.states, budget.steps
            ),
            &entries,
            &model,
            &deepest,
            requeue,
        )),
    }
}

// The job's concrete states, one bit each, so that a set of possible states is a `u16`. A set
// is needed because some answers do not pin the state down: "already finished" seen while the
// job was running means one of several terminal states, and only a later read says which.
const ABSENT: u16 = 1;
const PENDING: u16 = 1 << 1;
const RUNNING: u16 = 1 << 2;
/// Terminal states; `TERMINAL_NAMES[i]` is bit `3 + i`.
const TERMINAL_NAMES: [&str; 5] = ["completed", "failed", "cancelled", "timeout", "node_fail"];
const CANCELLED: u16 = 1 << 5;
const TERMINAL: u16 = 0b1111_1000;
/// Running, with a kill requested: a cancel of a placed job is acknowledged at once, the
/// job still reads "running" until its agent has killed the task, then it is cancelled
/// whatever the task's own end, even on a lost node.
const KILLING: u16 = 1 << 8;
/// Queued on its node behind another task (which reads "pending"), with a kill requested:
/// reads "pending" until it ends cancelled, unless it starts meanwhile (then it is running).
const KILLING_QUEUED: u16 = 1 << 9;
const STATES: usize = 10;

/// The bits of a state name, `None` for a name the job never has.
fn bit_of(name: &str) -> Option<u16> {
    match name {
        "pending" => Some(PENDING | KILLING_QUEUED),
        "running" => Some(RUNNING | KILLING),
        _ => TERMINAL_NAMES.iter().position(|t| *t == name).map(|i| 1 << (3 + i)),
    }
}

/// The names of the states in `set`.
fn state_names(set: u16) -> Vec<&'static str> {
    let all = ["absent", "pending", "running"]
        .into_iter()
        .chain(TERMINAL_NAMES)
        .chain(["running (kill requested)", "queued (kill requested)"]);
    all.enumerate()
        .filter(|(i, _)| set & (1 << i) != 0)
        .map(|(_, n)| n)
        .collect()
}

/// A set of states for messages, e.g. `{pending, running}`.
fn names(set: u16) -> String {
    format!("{{{}}}", state_names(set).join(", "))
}

/// What an op does to the model, with read states already turned into bits.
#[derive(Clone, Debug)]
enum Effect {
    Submit,
    Cancel(CancelResult),
    Read(u16),
}

/// An op as the search sees it; `index` is its position in the caller's slice (for messages).
#[derive(Clone, Debug)]
struct Entry {
    index: usize,
    start: u64,
    end: Option<u64>,
    effect: Effect,
}

impl Entry {
    /// E.g. `#3 read "running" [120, 135]`; an unknown end is shown as `?`.
    fn describe(&self) -> String {
        let what = match &self.effect {
            Effect::Submit => "submit".to_string(),
            Effect::Cancel(CancelResult::Cancelled) => "cancel -> cancelled".to_string(),
            Effect::Cancel(CancelResult::AlreadyFinished) => "cancel -> already finished".to_string(),
            Effect::Cancel(CancelResult::Unknown) => "cancel -> unknown".to_string(),
            // "running" stands for both running states (the reader cannot tell them apart).
            Effect::Read(bit) if bit & RUNNING != 0 => "read running".to_string(),
            Effect::Read(bit) if bit & PENDING != 0 => "read pending".to_string(),
            Effect::Read(bit) => format!("read {}", state_names(*bit).join("|")),
        };
        let end = self.end.map_or_else(|| "?".to_string(), |e| e.to_string());
        format!("#{} {what} [{}, {end}]", self.index, self.start)
    }
}

/// Validates the ops and sorts them by start, so that the ops that may come next are always a
/// prefix of the ones not yet placed.
fn parse(ops: &[Op]) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let effect = match &op.kind {
            OpKind::Submit => Effect::Submit,
            OpKind::Cancel(r) => Effect::Cancel(r.clone()),
            OpKind::Read(Obs::Absent) => Effect::Read(ABSENT),
            OpKind::Read(Obs::State(s)) => match bit_of(s) {
                Some(bit) => Effect::Read(bit),
                None => return Err(format!("op #{index} ({op:?}) reads unknown job state {s:?}")),
            },
        };
        if op.end.is_some_and(|e| e < op.start) {
            return Err(format!("op #{index} ({op:?}) ends before it starts"));
        }
        entries.push(Entry {
            index,
            start: op.start,
            end: op.end,
            effect,
        });
    }
    entries.sort_by_key(|e| (e.start, e.index));
    Ok(entries)
}

/// The job's state machine over sets of states.
struct Model {
    /// `reach[i]`: the states the system can move state bit `i` to by itself (itself included).
    reach: [u16; STATES],
}

impl Model {
    fn new(requeue: bool) -> Model {
        // Only a cancel op cancels; the system ends a live job any other way.
        let system_ends = TERMINAL & !CANCELLED;
        let from_pending = PENDING | RUNNING | system_ends;
        // A lost node puts a --requeue job back to pending, from where it can do it all again.
        let from_running = if requeue { from_pending } else { RUNNING | system_ends };
        let mut reach = [0; STATES];
        for (i, r) in reach.iter_mut().enumerate() {
            *r = 1 << i;
        }
        reach[1] = from_pending;
        reach[2] = from_running;
        reach[8] = KILLING | CANCELLED;
        reach[9] = KILLING_QUEUED | KILLING | CANCELLED;
        Model { reach }
    }

    /// Every state the system can move some state of `set` to.
    fn close(&self, set: u16) -> u16 {
        (0..STATES)
            .filter(|i| set & (1 << i) != 0)
            .fold(0, |acc, i| acc | self.reach[i])
    }

    /// The states possible right after applying `effect` when the job is in one of `set`
    /// (closed under system moves) just before; 0 if the op cannot happen there. The result is
    /// closed again, so equal situations compare equal in the memo.
    fn apply(&self, set: u16, effect: &Effect) -> u16 {
        let after = match effect {
            Effect::Submit if set & ABSENT != 0 => PENDING,
            Effect::Submit => 0,
            Effect::Cancel(CancelResult::Cancelled) => cancel_live(set),
            // The system may have ended it just before; which way is for later reads to say.
            Effect::Cancel(CancelResult::AlreadyFinished) => set & TERMINAL,
            Effect::Cancel(CancelResult::Unknown) => cancel_live(set) | (set & TERMINAL),
            Effect::Read(bit) => set & bit,
        };
        self.close(after)
    }
}

/// A cancel that found the job live: a job waiting in the queue ends cancelled at once, a
/// placed one waits for the kill ("pending" is also what a task queued on its node reads, so
/// a pending job may be either).
fn cancel_live(set: u16) -> u16 {
    let mut after = 0;
    if set & PENDING != 0 {
        after |= CANCELLED | KILLING_QUEUED;
    }
    if set & (RUNNING | KILLING) != 0 {
        after |= KILLING;
    }
    after | (set & KILLING_QUEUED)
}

/// How a search ended.
enum Outcome {
    Linearizable,
    Stuck(Deepest),
    TooLarge(Deepest),
}

/// The longest partial linearization seen, for the error message.
struct Deepest {
    /// Entry indices in linearization order.
    path: Vec<usize>,
    /// The possible states after them.
    state: u16,
}

/// One op placed on the current partial linearization, with what to restore on backtracking.
struct Frame {
    op: usize,
    prev_state: u16,
    prev_limit: u64,
}

/// The smallest known end among the ops not yet placed (`u64::MAX` if none): an op may come
/// next iff it starts no later than that, since otherwise some unplaced op ended before it
/// started and so must precede it. Ops with an unknown end precede nothing.
fn min_open_end(entries: &[Entry], done: &[u64]) -> u64 {
    entries
        .iter()
        .enumerate()
        .filter(|(j, _)| !is_set(done, *j))
        .filter_map(|(_, e)| e.end)
        .min()
        .unwrap_or(u64::MAX)
}

fn is_set(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

fn flip(bits: &mut [u64], i: usize) {
    bits[i / 64] ^= 1 << (i % 64);
}

/// The first op at or after `from` that is not placed yet, skipping placed ops a word at a
/// time (in long histories most of the early ops are placed).
fn next_open(bits: &[u64], from: usize, n: usize) -> Option<usize> {
    let mut w = from / 64;
    let mut free = !*bits.get(w)? & (u64::MAX << (from % 64));
    loop {
        if free != 0 {
            let j = w * 64 + free.trailing_zeros() as usize;
            return (j < n).then_some(j);
        }
        w += 1;
        free = !*bits.get(w)?;
    }
}

/// Depth-first WGL search with Lowe's memo of (placed ops, states) pairs already explored,
/// using an explicit stack so history length never threatens the thread's stack.
fn search(entries: &[Entry], model: &Model, budget: Budget) -> Outcome {
    let n = entries.len();
    let must = entries.iter().filter(|e| e.end.is_some()).count();
    let mut done = vec![0u64; n.div_ceil(64)];
    let mut placed_known = 0;
    let mut state = ABSENT;
    let mut limit = min_open_end(entries, &done);
    // Where the scan for the next op to place resumes at the current depth.
    let mut cursor = 0;
    let mut stack: Vec<Frame> = Vec::new();
    let mut memo: HashSet<(Vec<u64>, u16)> = HashSet::new();
    let mut steps = 0u64;
    let mut deepest = Deepest {
        path: Vec::new(),
        state,
    };
    loop {
        // Ops with an unknown end may stay out: they are the ones that never took effect.
        if placed_known == must {
            return Outcome::Linearizable;
        }
        let mut descended = false;
        while let Some(j) = next_open(&done, cursor, n) {
            let e = &entries[j];
            if e.start > limit {
                break;
            }
            cursor = j + 1;
            steps += 1;
            if steps > budget.steps {
                return Outcome::TooLarge(deepest);
            }
            let next = model.apply(state, &e.effect);
            if next == 0 {
                continue;
            }
            flip(&mut done, j);
            // A pair seen before was fully explored without success (it cannot be on the
            // current path: those have fewer ops placed).
            if !memo.insert((done.clone(), next)) {
                flip(&mut done, j);
                continue;
            }
            if memo.len() > budget.states {
                return Outcome::TooLarge(deepest);
            }
            stack.push(Frame {
                op: j,
                prev_state: state,
                prev_limit: limit,
            });
            state = next;
            if e.end.is_some() {
                placed_known += 1;
                if e.end == Some(limit) {
                    limit = min_open_end(entries, &done);
                }
            }
            cursor = 0;
            if stack.len() > deepest.path.len() {
                deepest = Deepest {
                    path: stack.iter().map(|f| f.op).collect(),
                    state,
                };
            }
            descended = true;
            break;
        }
        if descended {
            continue;
        }
        // Nothing fits here: undo the last placement and try the next op in its place.
        let Some(frame) = stack.pop() else {
            return Outcome::Stuck(deepest);
        };
        flip(&mut done, frame.op);
        if entries[frame.op].end.is_some() {
            placed_known -= 1;
        }
        state = frame.prev_state;
        limit = frame.prev_limit;
        cursor = frame.op + 1;
    }
}

/// How many ops of each kind the error message lists.
const SHOW_PLACED: usize = 5;
const SHOW_REMAINING: usize = 8;

/// The error message: the deepest partial linearization and why each of the earliest
/// remaining ops could not come next.
fn explain(headline: &str, entries: &[Entry], model: &Model, deepest: &Deepest, requeue: bool) -> String {
    let must = entries.iter().filter(|e| e.end.is_some()).count();
    let mut done = vec![0u64; entries.len().div_ceil(64)];
    for &j in &deepest.path {
        flip(&mut done, j);
    }
    let placed_known = deepest.path.iter().filter(|&&j| entries[j].end.is_some()).count();
    let mut s = format!(
        "{headline} (requeue={requeue}, {} ops, {must} with a known outcome).\n\
         Deepest point: {} ops placed ({placed_known} of {must} with a known outcome); possible job states there: {}.\n",
        entries.len(),
        deepest.path.len(),
        names(deepest.state),
    );
    let skip = deepest.path.len().saturating_sub(SHOW_PLACED);
    if !deepest.path.is_empty() {
        let _ = writeln!(s, "Last placed ops, in linearization order:");
        for &j in &deepest.path[skip..] {
            let _ = writeln!(s, "  {}", entries[j].describe());
        }
    }
    let limit = min_open_end(entries, &done);
    let _ = writeln!(s, "Earliest remaining ops, none of which could come next:");
    let remaining = (0..entries.len()).filter(|&j| !is_set(&done, j));
    for j in remaining.take(SHOW_REMAINING) {
        let e = &entries[j];
        let why = if e.start > limit {
            // Name the op that forces the order.
            let blocker = entries
                .iter()
                .enumerate()
                .find(|(k, o)| !is_set(&done, *k) && o.end == Some(limit))
                .map_or_else(String::new, |(_, o)| o.describe());
            format!("must come after {blocker}, which ended before it started")
        } else if model.apply(deepest.state, &e.effect) == 0 {
            format!("impossible when the job is in {}", names(deepest.state))
        } else {
            "possible here, but then the rest could not be placed".to_string()
        };
        let _ = writeln!(s, "  {}: {why}", e.describe());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn submit(start: u64, end: u64) -> Op {
        Op {
            start,
            end: Some(end),
            kind: OpKind::Submit,
        }
    }

    fn submit_unknown(start: u64) -> Op {
        Op {
            start,
            end: None,
            kind: OpKind::Submit,
        }
    }

    fn read(start: u64, end: u64, state: &str) -> Op {
        Op {
            start,
            end: Some(end),
            kind: OpKind::Read(Obs::State(state.to_string())),
        }
    }

    fn read_absent(start: u64, end: u64) -> Op {
        Op {
            start,
            end: Some(end),
            kind: OpKind::Read(Obs::Absent),
        }
    }

    fn cancel(start: u64, end: u64, result: CancelResult) -> Op {
        Op {
            start,
            end: Some(end),
            kind: OpKind::Cancel(result),
        }
    }

    fn cancel_unknown(start: u64) -> Op {
        Op {
            start,
            end: None,
            kind: OpKind::Cancel(CancelResult::Unknown),
        }
    }

    /// Asserts the verdict for both values of `requeue`.
    fn check_both(ops: &[Op], ok: bool) {
        for requeue in [false, true] {
            let r = check_job(ops, requeue);
            assert_eq!(r.is_ok(), ok, "requeue={requeue}: {r:?}");
        }
    }

    #[test]
    fn linearizability_sequential_valid_history() {
        let ops = [
            submit(0, 10),
            read(20, 30, "pending"),
            read(40, 50, "running"),
            read(60, 70, "completed"),
            cancel(80, 90, CancelResult::AlreadyFinished),
            read(100, 110, "completed"),
        ];
        check_both(&ops, true);
    }

    #[test]
    fn linearizability_input_order_does_not_matter() {
        let ops = [
            read(60, 70, "completed"),
            read(20, 30, "pending"),
            submit(0, 10),
            read(40, 50, "running"),
        ];
        check_both(&ops, true);
    }

    #[test]
    fn linearizability_terminal_then_running_is_err() {
        let ops = [submit(0, 10), read(20, 30, "completed"), read(40, 50, "running")];
        check_both(&ops, false);
        let err = check_job(&ops, true).unwrap_err();
        // The message names the op that could not be placed, its times, and the state.
        assert!(err.contains("#2 read running [40, 50]"), "{err}");
        assert!(err.contains("{completed}"), "{err}");
        assert!(err.contains("2 ops placed"), "{err}");
    }

    #[test]
    fn linearizability_running_then_pending_needs_requeue() {
        let ops = [submit(0, 10), read(20, 30, "running"), read(40, 50, "pending")];
        assert!(check_job(&ops, false).is_err());
        assert!(check_job(&ops, true).is_ok());
        // And with requeue the job may run again and end any way but cancelled.
        let more = [ops.as_slice(), &[read(60, 70, "running"), read(80, 90, "node_fail")]].concat();
        assert!(check_job(&more, true).is_ok());
        let cancelled = [ops.as_slice(), &[read(60, 70, "cancelled")]].concat();
        check_both(&cancelled, false);
    }

    #[test]
    fn linearizability_lost_acknowledged_submit_is_err() {
        check_both(&[submit(0, 10), read_absent(20, 30)], false);
        // Nor can it vanish after being seen.
        check_both(&[submit(0, 10), read(20, 30, "running"), read_absent(40, 50)], false);
        // Two acknowledged submits of the same job cannot both have created it.
        check_both(&[submit(0, 10), submit(20, 30)], false);
    }

    #[test]
    fn linearizability_read_overlapping_submit_may_precede_it() {
        check_both(&[submit(0, 100), read_absent(50, 60)], true);
        check_both(&[submit(0, 100), read_absent(50, 60), read(70, 80, "pending")], true);
        // But not after a read that already saw the job.
        check_both(&[submit(0, 100), read(20, 30, "pending"), read_absent(50, 60)], false);
    }

    #[test]
    fn linearizability_unknown_submit_may_or_may_not_happen() {
        check_both(&[submit_unknown(0), read_absent(10, 20), read(30, 40, "pending")], true);
        check_both(&[submit_unknown(0), read_absent(10, 20), read_absent(30, 40)], true);
        // Once seen, it happened.
        check_both(
            &[submit_unknown(0), read(10, 20, "pending"), read_absent(30, 40)],
            false,
        );
        // An unknown submit takes effect after it starts, never before.
        check_both(&[read(0, 5, "pending"), submit_unknown(10)], false);
    }

    #[test]
    fn linearizability_cancelled_then_completed_is_err() {
        let base = [
            submit(0, 10),
            read(20, 30, "running"),
            cancel(100, 110, CancelResult::Cancelled),
        ];
        check_both(&[base.as_slice(), &[read(200, 210, "completed")]].concat(), false);
        check_both(&[base.as_slice(), &[read(200, 210, "cancelled")]].concat(), true);
        // A cancel that reported Cancelled needs a live job.
        check_both(
            &[
                submit(0, 10),
                read(20, 30, "failed"),
                cancel(100, 110, CancelResult::Cancelled),
            ],
            false,
        );
    }

    #[test]
    fn linearizability_cancelled_running_job_reads_running_until_killed() {
        let base = [
            submit(0, 10),
            read(20, 30, "running"),
            cancel(100, 110, CancelResult::Cancelled),
            read(200, 210, "running"),
        ];
        check_both(&[base.as_slice(), &[read(300, 310, "cancelled")]].concat(), true);
        // Once cancelled it never ends any other way, nor goes back to the queue.
        for (state, requeue) in [("completed", false), ("node_fail", false), ("pending", true)] {
            let ops = [base.as_slice(), &[read(300, 310, state)]].concat();
            assert!(check_job(&ops, requeue).is_err(), "{state} after a cancel was accepted");
        }
        // A running job being killed may still read running, never pending again.
        let ops = [
            submit(0, 10),
            read(20, 30, "running"),
            cancel(100, 110, CancelResult::Cancelled),
            read(200, 210, "pending"),
        ];
        assert!(
            check_job(&ops, false).is_err(),
            "a cancelled running job was later read pending"
        );
        // Unless it could have been requeued (a lost node) before the cancel.
        assert!(check_job(&ops, true).is_ok());
    }

    #[test]
    fn linearizability_cancel_overlapping_completed_read_is_err() {
        // Read first: completed, so the cancel cannot report Cancelled. Cancel first:
        // cancelled, so the read cannot see completed.
        let ops = [
            submit(0, 10),
            cancel(100, 110, CancelResult::Cancelled),
            read(105, 120, "completed"),
        ];
        check_both(&ops, false);
        let ops = [
            submit(0, 10),
            read(100, 120, "completed"),
            cancel(105, 110, CancelResult::Cancelled),
        ];
        check_both(&ops, false);
        // While an overlapping read of the live state is fine either way round.
        let ops = [
            submit(0, 10),
            cancel(100, 110, CancelResult::Cancelled),
            read(105, 120, "running"),
        ];
        check_both(&ops, true);
    }

    #[test]
    fn linearizability_already_finished_then_pending_is_err() {
        check_both(
            &[
                submit(0, 10),
                cancel(100, 110, CancelResult::AlreadyFinished),
                read(200, 210, "pending"),
            ],
            false,
        );
        // AlreadyFinished on a job last seen running: the system ended it some way, except
        // cancelled, and a later read says which.
        let base = [
            submit(0, 10),
            read(20, 30, "running"),
            cancel(40, 50, CancelResult::AlreadyFinished),
        ];
        for (state, ok) in [
            ("failed", true),
            ("timeout", true),
            ("cancelled", false),
            ("running", false),
        ] {
            check_both(&[base.as_slice(), &[read(60, 70, state)]].concat(), ok);
        }
        // Once a read fixed the terminal state, it stays that one.
        let fixed = [base.as_slice(), &[read(60, 70, "failed"), read(80, 90, "completed")]].concat();
        check_both(&fixed, false);
        // AlreadyFinished on a job that does not exist yet is never accepted.
        check_both(&[cancel(0, 10, CancelResult::AlreadyFinished)], false);
    }

    #[test]
    fn linearizability_unknown_cancel_may_or_may_not_happen() {
        let base = [submit(0, 10), read(20, 30, "running"), cancel_unknown(40)];
        check_both(&[base.as_slice(), &[read(60, 70, "cancelled")]].concat(), true);
        check_both(&[base.as_slice(), &[read(60, 70, "completed")]].concat(), true);
        check_both(&[base.as_slice(), &[read(60, 70, "running")]].concat(), true);
        let back = [base.as_slice(), &[read(60, 70, "cancelled"), read(80, 90, "running")]].concat();
        check_both(&back, false);
        // On a finished job it changes nothing.
        let done = [
            submit(0, 10),
            read(20, 30, "completed"),
            cancel_unknown(40),
            read(60, 70, "completed"),
        ];
        check_both(&done, true);
        // Only a cancel cancels.
        check_both(&[submit(0, 10), read(20, 30, "cancelled")], false);
    }

    #[test]
    fn linearizability_concurrent_readers() {
        // Reader A's long read of `running` spans reader B's `pending` then `completed`: A
        // linearizes between them.
        let ops = [
            submit(0, 5),
            read(10, 110, "running"),
            read(20, 30, "pending"),
            read(40, 50, "completed"),
        ];
        check_both(&ops, true);
        // B saw the job finish before it saw it pending: no placement of A helps.
        let ops = [
            submit(0, 5),
            read(10, 110, "running"),
            read(20, 30, "completed"),
            read(40, 50, "pending"),
        ];
        check_both(&ops, false);
        // A's `pending` may precede B's `running` as long as A started before B's read ended.
        let ops = [
            submit(0, 5),
            read(10, 110, "pending"),
            read(20, 30, "running"),
            read(40, 50, "completed"),
        ];
        check_both(&ops, true);
        // If A started after B's `running` ended, the job went back to pending: requeue only.
        let ops = [
            submit(0, 5),
            read(35, 110, "pending"),
            read(20, 30, "running"),
            read(40, 50, "completed"),
        ];
        assert!(check_job(&ops, false).is_err());
        assert!(check_job(&ops, true).is_ok());
    }

    #[test]
    fn linearizability_rejects_malformed_input() {
        let backwards = [Op {
            start: 10,
            end: Some(5),
            kind: OpKind::Submit,
        }];
        assert!(check_job(&backwards, false).is_err());
        let err = check_job(&[submit(0, 5), read(10, 20, "Running")], false).unwrap_err();
        assert!(err.contains("unknown job state"), "{err}");
        assert!(check_job(&[], false).is_ok());
    }

    #[test]
    fn linearizability_long_history_is_fast() {
        // 400 sequential polls, a second poller overlapping each pair of them, an unknown
        // duplicate submit and an unknown cancel that never took effect: ~800 ops.
        let mut ops = vec![submit(0, 5), submit_unknown(3), cancel_unknown(1_000)];
        for i in 0..400u64 {
            let s = 10 + 100 * i;
            let state = if i < 10 { "pending" } else { "running" };
            ops.push(read(s, s + 20, state));
            ops.push(read(s + 50, s + 130, state));
        }
        ops.push(read(100_000, 100_010, "completed"));
        let t = Instant::now();
        let r = check_job(&ops, false);
        let took = t.elapsed();
        assert!(r.is_ok(), "{r:?}");
        assert!(took < Duration::from_secs(1), "took {took:?}");
        eprintln!("long history ({} ops) checked in {took:?}", ops.len());
        // The same history with one impossible read at the end fails, just as fast.
        ops.push(read(100_020, 100_030, "pending"));
        let t = Instant::now();
        let r = check_job(&ops, true);
        let took = t.elapsed();
        assert!(r.is_err());
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }

    #[test]
    fn linearizability_gives_up_instead_of_hanging() {
        // 40 mutually concurrent reads of pending and running: without requeue every pending
        // read must come before every running one, and the impossible last read makes the
        // search try every subset of them.
        let mut ops = vec![submit(0, 5)];
        for i in 0..40 {
            ops.push(read(10 + i, 1_000, if i % 2 == 0 { "pending" } else { "running" }));
        }
        ops.push(read_absent(2_000, 2_010));
        let small = Budget {
            states: 10_000,
            steps: u64::MAX,
        };
        let err = check_job_within(&ops, false, small).unwrap_err();
        assert!(err.contains("gave up after 10000 states"), "{err}");
        let short = Budget {
            states: usize::MAX,
            steps: 10_000,
        };
        let err = check_job_within(&ops, false, short).unwrap_err();
        assert!(err.contains("gave up"), "{err}");
        // The default budget also ends it, in bounded time.
        let t = Instant::now();
        let err = check_job(&ops, false).unwrap_err();
        assert!(err.contains("gave up"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(30), "took {:?}", t.elapsed());
    }

    /// A small xorshift64 RNG, so the random tests need no extra crate and are reproducible.
    struct XorShift(u64);

    impl XorShift {
        fn new(seed: u64) -> XorShift {
            // Spread small seeds out; xorshift must never start at 0.
            XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    const CLIENTS: usize = 3;
    /// Ticks (ms) during which clients start ops.
    const HORIZON: u64 = 300;
    /// Longest op, in ticks.
    const MAX_LEN: u64 = 15;
    const SYSTEM_ENDS: [&str; 4] = ["completed", "failed", "timeout", "node_fail"];

    /// One move the system makes by itself, or none.
    fn system_move(state: Option<&'static str>, requeue: bool, rng: &mut XorShift) -> Option<&'static str> {
        let end = SYSTEM_ENDS[rng.below(4) as usize];
        match state {
            Some("pending") if rng.chance(80) => Some("running"),
            Some("pending") => Some(end),
            Some("running") if requeue && rng.chance(40) => Some("pending"),
            Some("running") => Some(end),
            other => other,
        }
    }

    /// A random execution that really happened: a true state timeline with system moves, and
    /// client ops that each take effect at one tick inside their interval (unknown ones at any
    /// tick after their start, or never).
    fn random_history(seed: u64, requeue: bool) -> Vec<Op> {
        let mut rng = XorShift::new(seed);
        let mut state: Option<&'static str> = None;
        let mut ops: Vec<Op> = Vec::new();
        // (tick at which it takes effect, index in `ops`); results are filled in then.
        let mut effects: Vec<(u64, usize)> = Vec::new();
        // Client `c` may start its next op at tick `free_at[c]`; client 0 submits first.
        let mut free_at = [0u64; CLIENTS];
        let submit_at = rng.below(30);
        free_at[0] = u64::MAX;
        // Cancels are only sent for acknowledged jobs, after the acknowledgement.
        let mut cancel_after: Option<u64> = None;
        for t in 0..HORIZON + 4 * MAX_LEN {
            if rng.chance(2) {
                state = system_move(state, requeue, &mut rng);
            }
            if t == submit_at {
                let len = rng.below(MAX_LEN + 1);
                let (end, lp) = if rng.chance(80) {
                    cancel_after = Some(t + len);
                    (Some(t + len), Some(t + rng.below(len + 1)))
                } else {
                    (None, rng.chance(50).then(|| t + rng.below(3 * MAX_LEN)))
                };
                ops.push(Op {
                    start: t,
                    end,
                    kind: OpKind::Submit,
                });
                if let Some(lp) = lp {
                    effects.push((lp, ops.len() - 1));
                }
                free_at[0] = t + len + 1;
            }
            for free in free_at.iter_mut() {
                if t >= HORIZON || t < *free || !rng.chance(25) {
                    continue;
                }
                let len = rng.below(MAX_LEN + 1);
                let may_cancel = cancel_after.is_some_and(|a| t > a);
                let (kind, end, lp) = if may_cancel && rng.chance(8) {
                    if rng.chance(25) {
                        let lp = rng.chance(50).then(|| t + rng.below(3 * MAX_LEN));
                        (OpKind::Cancel(CancelResult::Unknown), None, lp)
                    } else {
                        // Placeholder result, set when it takes effect.
                        let lp = Some(t + rng.below(len + 1));
                        (OpKind::Cancel(CancelResult::Cancelled), Some(t + len), lp)
                    }
                } else {
                    (OpKind::Read(Obs::Absent), Some(t + len), Some(t + rng.below(len + 1)))
                };
                ops.push(Op { start: t, end, kind });
                if let Some(lp) = lp {
                    effects.push((lp, ops.len() - 1));
                }
                *free = t + len + 1;
            }
            for &(_, i) in effects.iter().filter(|(lp, _)| *lp == t) {
                let live = matches!(state, Some("pending" | "running"));
                match &mut ops[i].kind {
                    OpKind::Submit => state = Some("pending"),
                    OpKind::Cancel(result) => {
                        assert!(state.is_some(), "cancel of an absent job");
                        if *result != CancelResult::Unknown {
                            *result = if live {
                                CancelResult::Cancelled
                            } else {
                                CancelResult::AlreadyFinished
                            };
                        }
                        if live {
                            state = Some("cancelled");
                        }
                    }
                    OpKind::Read(obs) => *obs = state.map_or(Obs::Absent, |s| Obs::State(s.to_string())),
                }
            }
            effects.retain(|(lp, _)| *lp != t);
        }
        ops
    }

    fn is_terminal_read(op: &Op) -> bool {
        matches!(&op.kind, OpKind::Read(Obs::State(s)) if bit_of(s).is_some_and(|b| b & TERMINAL != 0))
    }

    /// Turns the first read that started after a terminal read ended into `pending`.
    fn pending_after_terminal(ops: &mut [Op]) -> bool {
        let Some(t) = ops.iter().filter(|o| is_terminal_read(o)).filter_map(|o| o.end).min() else {
            return false;
        };
        let Some(later) = ops
            .iter_mut()
            .find(|o| matches!(o.kind, OpKind::Read(_)) && o.start > t)
        else {
            return false;
        };
        later.kind = OpKind::Read(Obs::State("pending".to_string()));
        true
    }

    /// Turns the first read that started after the acknowledged submit ended into `Absent`.
    fn absent_after_submit(ops: &mut [Op]) -> bool {
        let Some(t) = ops.iter().find(|o| o.kind == OpKind::Submit).and_then(|o| o.end) else {
            return false;
        };
        let Some(later) = ops
            .iter_mut()
            .find(|o| matches!(o.kind, OpKind::Read(_)) && o.start > t)
        else {
            return false;
        };
        later.kind = OpKind::Read(Obs::Absent);
        true
    }

    #[test]
    fn linearizability_random_valid_histories_are_ok() {
        let (mut cancels, mut unknown, mut states) = (0, 0, HashSet::new());
        for seed in 0..300 {
            let requeue = seed % 2 == 0;
            let ops = random_history(seed, requeue);
            if let Err(e) = check_job(&ops, requeue) {
                panic!("seed {seed}: valid history rejected: {e}\n{ops:#?}");
            }
            cancels += ops.iter().filter(|o| matches!(o.kind, OpKind::Cancel(_))).count();
            unknown += ops.iter().filter(|o| o.end.is_none()).count();
            for o in &ops {
                if let OpKind::Read(Obs::State(s)) = &o.kind {
                    states.insert(s.clone());
                }
            }
        }
        // The generator must actually exercise the interesting parts.
        assert!(cancels > 50 && unknown > 50, "cancels={cancels} unknown={unknown}");
        assert_eq!(states.len(), 7, "{states:?}");
    }

    #[test]
    fn linearizability_mutated_histories_are_err() {
        let (mut pending, mut absent) = (0, 0);
        for seed in 0..300 {
            let requeue = seed % 2 == 0;
            let mut ops = random_history(seed, requeue);
            if pending_after_terminal(&mut ops) {
                pending += 1;
                assert!(
                    check_job(&ops, requeue).is_err(),
                    "seed {seed}: pending after terminal accepted"
                );
            }
            let mut ops = random_history(seed, requeue);
            if absent_after_submit(&mut ops) {
                absent += 1;
                assert!(check_job(&ops, requeue).is_err(), "seed {seed}: lost submit accepted");
            }
        }
        assert!(pending > 100 && absent > 100, "pending={pending} absent={absent}");
    }
}
