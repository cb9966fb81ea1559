//! The simulated agents: which tasks run where and when each ends, learned from the events
//! of applied entries (a placement starts at once unless queued behind another task; a
//! queued one starts when it takes over), and the reports agents send when tasks end.
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rudel_core::{Command, Event, NodeId, State, TaskKey, TaskOutcome, TaskReport};

use crate::workload::runtime_ms;

/// A limit for tasks whose job has none (none of the workload's: partitions give one).
const FALLBACK_LIMIT_MS: u64 = 10 * 60_000;

/// A task running on an agent: ends at `end` (the heap's order), started at `start`.
type Running = Reverse<(u64, NodeId, TaskKey, u32, u64)>;

#[derive(Default)]
pub struct Agents {
    running: BinaryHeap<Running>,
    /// Node names by id (reports name their node).
    names: Vec<String>,
    /// Placements seen (tasks given to a node: holding resources or queued there).
    pub placed: u64,
    pub ended: u64,
}

/// Counts of one entry's events.
#[derive(Default, Clone, Copy)]
pub struct Seen {
    pub placed: u64,
}

impl Agents {
    pub fn new(s: &State) -> Agents {
        Agents {
            names: s.nodes.iter().map(|n| n.name.clone()).collect(),
            ..Agents::default()
        }
    }

    /// Learns what an applied entry changed: starts placed and taken-over tasks.
    pub fn observe(&mut self, s: &State, events: &[Event], now: u64) -> Seen {
        let mut seen = Seen::default();
        for e in events {
            match *e {
                Event::TaskPlaced { key, attempt, node } => {
                    seen.placed += 1;
                    if !queued(s, key) {
                        self.start(s, key, attempt, node, now);
                    }
                }
                Event::TaskTookOver { key, attempt, node } => self.start(s, key, attempt, node, now),
                _ => {}
            }
        }
        self.placed += seen.placed;
        seen
    }

    fn start(&mut self, s: &State, key: TaskKey, attempt: u32, node: NodeId, now: u64) {
        let limit = s
            .jobs
            .get(&key.job)
            .map(|j| j.spec.time_limit_ms)
            .filter(|l| *l > 0)
            .unwrap_or(FALLBACK_LIMIT_MS);
        let end = now + runtime_ms(key, limit);
        self.running.push(Reverse((end, node, key, attempt, now)));
    }

    /// Tasks running on agents now.
    pub fn busy(&self) -> usize {
        self.running.len()
    }

    /// The reports of every task ending by `now`, one `Reports` per node, as agents send
    /// them.
    pub fn reports_until(&mut self, now: u64) -> Vec<Command> {
        let mut by_node: BTreeMap<NodeId, Vec<TaskReport>> = BTreeMap::new();
        while let Some(Reverse((end, node, key, attempt, start))) = self.running.peek().copied() {
            if end > now {
                break;
            }
            self.running.pop();
            self.ended += 1;
            by_node.entry(node).or_default().push(report(key, attempt, start, end));
        }
        by_node
            .into_iter()
            .map(|(node, reports)| Command::Reports {
                node: self.names.get(node as usize).cloned().unwrap_or_default(),
                reports,
                now_ms: now,
            })
            .collect()
    }
}

/// True when the task waits on its agent behind another one (it starts on takeover).
fn queued(s: &State, key: TaskKey) -> bool {
    s.jobs
        .get(&key.job)
        .and_then(|j| j.running.get(&key.index))
        .is_some_and(|rt| rt.after.is_some())
}

fn report(key: TaskKey, attempt: u32, start_ms: u64, end_ms: u64) -> TaskReport {
    TaskReport {
        key,
        attempt,
        outcome: TaskOutcome::Exited,
        exit_code: Some(0),
        signal: None,
        start_ms,
        end_ms,
        message: String::new(),
        usage: Default::default(),
    }
}

/// The number of reports in a list of `Reports` commands.
pub fn count_reports(cmds: &[Command]) -> usize {
    cmds.iter()
        .map(|c| match c {
            Command::Reports { reports, .. } => reports.len(),
            _ => 0,
        })
        .sum()
}
