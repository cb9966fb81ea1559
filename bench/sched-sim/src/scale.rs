//! The `scale` mode: issue 9's scheduler targets on a mixed workload.
//!
//! For each cluster size: register the nodes, configure partitions, fair-share,
//! `multifactor` and EASY backfill, queue the workload (`--submit-batch` submits per log
//! entry), then play the agents in rounds of `--round-ms` of log time. Each round is
//! - one `Reports` entry of a single node, timed alone (an ordinary entry),
//! - the reports of every other node whose tasks ended, as one batched entry,
//! - while work is queued, one `Submit` of a single job, timed alone,
//!
//! and a `Tick` every `--tick-s` of log time (and, from scheduling version 10, when a
//! full pass is due), until nothing runs or `--budget-s` of apply
//! CPU is spent; then `--ticks` more Ticks. Only `State::apply_output` is timed, in the
//! thread's CPU time (the machine may be shared). A placement is a task given to a node,
//! holding resources there or queued on its agent behind a running task. The largest
//! size gives the throughput and latency targets; the memory targets are measured on
//! states of their own (`memory.rs`).
use std::time::{Duration, Instant};

use rudel_core::{Command, JobSpec, State};

use crate::agents::{count_reports, Agents};
use crate::memory;
use crate::report;
use crate::scale_args::{self, ScaleArgs};
use crate::stats::Samples;
use crate::workload::{self, Amount};

/// Everything measured at one cluster size.
#[derive(Default)]
pub struct SizeRun {
    pub nodes: u32,
    pub tasks: u64,
    /// Entries that queued the workload.
    pub fill: Samples,
    /// Batched report entries.
    pub batched: Samples,
    pub ticks: Samples,
    pub one_submit: Samples,
    pub one_report: Samples,
    /// Ticks the leader proposes after a pass stopped at `max_starts` (see
    /// `State::more_to_place`).
    pub more: Samples,
    pub placed_fill: u64,
    pub placed_churn: u64,
    pub churn_time: Duration,
    pub reports: u64,
    pub log_s: u64,
    /// The slowest queueing entry: (its number, apply time, placements, jobs queued after).
    pub slowest_fill: (usize, Duration, u64, usize),
    /// The slowest entry while churning: (its kind, apply time, placements, jobs queued
    /// after).
    pub slowest_churn: (&'static str, Duration, u64, usize),
    /// Heap bytes live in the process once the workload was queued: the state, plus the
    /// simulator's own (agents' task list, held-back submits), a few percent.
    pub state_bytes: usize,
    /// Why the run stopped.
    pub end: &'static str,
}

impl SizeRun {
    pub fn apply_time(&self) -> Duration {
        self.fill.total()
            + self.batched.total()
            + self.ticks.total()
            + self.one_submit.total()
            + self.one_report.total()
            + self.more.total()
    }

    pub fn placed(&self) -> u64 {
        self.placed_fill + self.placed_churn
    }

    /// Head CPU per placed task, everything applied included.
    pub fn us_per_task(&self) -> f64 {
        self.apply_time().as_secs_f64() * 1e6 / self.placed().max(1) as f64
    }

    /// Head CPU per task placed while the cluster churns (reports, single submits,
    /// Ticks): the steady state, without the bulk placements of the queueing entries.
    pub fn churn_us_per_task(&self) -> f64 {
        self.churn_time.as_secs_f64() * 1e6 / self.placed_churn.max(1) as f64
    }

    pub fn placements_per_s(&self) -> f64 {
        self.placed_churn as f64 / self.churn_time.as_secs_f64().max(1e-9)
    }
}

/// One cluster being simulated.
struct Sim {
    s: State,
    agents: Agents,
    now: u64,
    /// Separate jobs of the workload kept out of the queueing entries, to be submitted one
    /// per round (timed as single-job entries).
    held_back: Vec<JobSpec>,
    run: SizeRun,
    /// When progress was last shown (large sizes take minutes).
    shown: Instant,
    /// The workload is queued: entries now count as churn.
    churning: bool,
}

impl Sim {
    fn new(nodes: u32, amount: &Amount, settings: &[(String, String)]) -> Sim {
        let mut s = State::new();
        memory::warn_rejected(&s.apply(workload::configure(amount, settings, 1)));
        for i in 0..nodes {
            s.apply(workload::register(i, 2));
        }
        let agents = Agents::new(&s);
        Sim {
            s,
            agents,
            now: 1_000,
            held_back: Vec::new(),
            shown: Instant::now(),
            churning: false,
            run: SizeRun {
                nodes,
                ..SizeRun::default()
            },
        }
    }

    /// Applies one entry; returns its apply time and the placements it made.
    fn entry(&mut self, cmd: Command) -> (Duration, u64) {
        let (out, spent) = crate::cpu_clock::timed(|| self.s.apply_output(cmd));
        memory::warn_rejected(&out.response);
        if !out.violations.is_empty() {
            eprintln!(
                "rudel-sched-sim: {} planner violations: {:?}",
                out.violations.len(),
                out.violations.first()
            );
        }
        let seen = self.agents.observe(&self.s, &out.events, self.now);
        self.progress();
        self.go_on();
        (spent, seen.placed)
    }

    /// What the leader does after a pass stopped at `max_starts`: a `Tick` at once, each
    /// its own entry, until a pass places all it can.
    fn go_on(&mut self) {
        while self.s.more_to_place {
            let cmd = Command::Tick { now_ms: self.now };
            let (out, spent) = crate::cpu_clock::timed(|| self.s.apply_output(cmd));
            let placed = self.agents.observe(&self.s, &out.events, self.now).placed;
            self.run.more.push(spent);
            if self.churning {
                self.account("tick after a capped pass", spent, placed);
            } else {
                self.run.placed_fill += placed;
            }
        }
    }

    /// A line on stderr every 15 s, so that a slow size shows it is alive.
    fn progress(&mut self) {
        if self.shown.elapsed().as_secs() >= 15 {
            self.shown = Instant::now();
            eprintln!(
                "  ... {} nodes: {} placed, {} jobs queued, {} running, apply {:.1} s so far",
                self.run.nodes,
                self.agents.placed,
                self.s.queue.len(),
                self.agents.busy(),
                self.run.apply_time().as_secs_f64()
            );
        }
    }

    /// Queues the workload, `batch` submits per entry, one millisecond of log time apart.
    fn fill(&mut self, amount: Amount, batch: usize) {
        let mut specs: Vec<JobSpec> = workload::submits(amount, 9).collect();
        self.held_back = held_back(&mut specs);
        let mut it = specs.into_iter().peekable();
        while it.peek().is_some() {
            self.now += 1;
            let now = self.now;
            let cmds = it.by_ref().take(batch).map(|sp| workload::submit(sp, now)).collect();
            let (d, placed) = self.entry(Command::Batch(cmds));
            if d > self.run.slowest_fill.1 {
                self.run.slowest_fill = (self.run.fill.len(), d, placed, self.s.queue.len());
            }
            self.run.fill.push(d);
            self.run.placed_fill += placed;
        }
        self.run.state_bytes = crate::alloc_count::live();
    }

    /// Plays rounds until nothing runs or the apply budget is spent.
    fn churn(&mut self, a: &ScaleArgs) {
        self.churning = true;
        let start = self.now;
        let mut next_tick = self.now + a.tick_s * 1_000;
        self.run.end = "nothing left to run";
        while self.agents.busy() > 0 {
            if self.run.churn_time.as_secs_f64() > a.budget_s {
                self.run.end = "apply budget spent (--budget-s)";
                break;
            }
            self.now += a.round_ms;
            if self.now >= next_tick {
                next_tick += a.tick_s * 1_000;
                let (d, p) = self.entry(Command::Tick { now_ms: self.now });
                self.run.ticks.push(d);
                self.account("tick", d, p);
            }
            self.round();
            // The leader's Tick for a full pass an ordinary entry left due (scheduling
            // version 10; see `rudel_core::sched::passes`). After the round's reports:
            // they stand for tasks that ended over the round, which a Tick due at its end
            // would have seen.
            if self.s.full_pass_due_ms.is_some_and(|t| t <= self.now) {
                let (d, p) = self.entry(Command::Tick { now_ms: self.now });
                self.run.ticks.push(d);
                self.account("full pass due", d, p);
            }
            if let Some(spec) = self.held_back.pop() {
                let (d, p) = self.entry(workload::submit(spec, self.now));
                self.run.one_submit.push(d);
                self.account("one-job submit", d, p);
            }
        }
        self.run.log_s = (self.now - start) / 1_000;
        self.churning = false;
    }

    /// `n` more Ticks, `tick_s` apart with nothing else between them: a short run sees
    /// too few Ticks for a percentile. They count in the size's apply time, not in churn.
    fn ticks(&mut self, n: u32, tick_s: u64) {
        for _ in 0..n {
            self.now += tick_s * 1_000;
            let (d, p) = self.entry(Command::Tick { now_ms: self.now });
            self.run.ticks.push(d);
            self.run.placed_fill += p;
        }
    }

    /// The reports of one round: one node's alone, the rest batched.
    fn round(&mut self) {
        let mut reports = self.agents.reports_until(self.now);
        if reports.is_empty() {
            return;
        }
        self.run.reports += count_reports(&reports) as u64;
        let first = reports.remove(0);
        let (d, p) = self.entry(first);
        self.run.one_report.push(d);
        self.account("one node's reports", d, p);
        if !reports.is_empty() {
            let (d, p) = self.entry(Command::Batch(reports));
            self.run.batched.push(d);
            self.account("batched reports", d, p);
        }
    }

    fn account(&mut self, kind: &'static str, d: Duration, placed: u64) {
        if d > self.run.slowest_churn.1 {
            self.run.slowest_churn = (kind, d, placed, self.s.queue.len());
        }
        self.run.churn_time += d;
        self.run.placed_churn += placed;
    }
}

/// Takes a tenth of the separate jobs (at most 10,000) out of `specs`, last first.
fn held_back(specs: &mut Vec<JobSpec>) -> Vec<JobSpec> {
    let separate: Vec<usize> = (0..specs.len()).filter(|i| specs[*i].array.is_none()).collect();
    let n = (separate.len() / 10).min(10_000);
    let mut out: Vec<JobSpec> = separate.iter().rev().take(n).map(|&i| specs[i].clone()).collect();
    let keep: std::collections::BTreeSet<usize> = separate.iter().rev().take(n).copied().collect();
    let mut i = 0;
    specs.retain(|_| {
        i += 1;
        !keep.contains(&(i - 1))
    });
    out.reverse();
    out
}

/// The workload at `nodes` when the full amount is for `max` nodes.
fn scaled(a: Amount, nodes: u32, max: u32) -> Amount {
    let f = |x: u64| (x * u64::from(nodes) / u64::from(max.max(1))).max(1);
    Amount {
        jobs: f(a.jobs),
        array_tasks: f(a.array_tasks),
        ..a
    }
}

fn run_size(nodes: u32, amount: Amount, a: &ScaleArgs) -> SizeRun {
    let mut sim = Sim::new(nodes, &amount, &a.settings);
    sim.fill(amount, a.submit_batch);
    sim.churn(a);
    sim.ticks(a.ticks, a.tick_s);
    sim.run.tasks = amount.jobs + amount.array_tasks;
    sim.run
}

/// Runs the `scale` mode with its arguments (after `scale`).
pub fn run(argv: Vec<String>) -> Result<(), String> {
    let Some(a) = scale_args::parse(argv)? else {
        return Ok(());
    };
    let max = a.nodes.iter().copied().max().unwrap_or(1);
    println!(
        "scale: {} separate jobs + {} array tasks (arrays of {}) at {max} nodes, {} users, multifactor + fair-share, backfill=easy, {}",
        a.amount.jobs,
        a.amount.array_tasks,
        a.amount.array_size,
        a.amount.users,
        if a.amount.partitions { "3 partitions" } else { "no partitions" }
    );
    if !a.settings.is_empty() {
        let set: Vec<String> = a.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("extra settings: {}", set.join(" "));
    }
    // Memory first: once a large run has grown the heap, freed pages stay resident and
    // the RSS change of a later state says nothing.
    report::memory_targets(&a);
    let mut per_task = Vec::new();
    let mut biggest = None;
    for &n in &a.nodes {
        let r = run_size(n, scaled(a.amount, n, max), &a);
        report::print_size(&r);
        per_task.push((n, r.churn_us_per_task()));
        if n == max {
            biggest = Some(r);
        }
    }
    if let Some(big) = biggest {
        report::print_targets(&big, &per_task);
    }
    Ok(())
}
