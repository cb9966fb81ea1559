//! The `scale` mode: issue 9's scheduler targets on a mixed workload.
//!
//! For each cluster size: register the nodes, configure partitions, fair-share,
//! `multifactor` and EASY backfill, queue the workload (`--submit-batch` submits per log
//! entry), then play the agents in rounds of `--round-ms` of log time. Each round is
//! - one `Reports` entry of a single node, timed alone (an ordinary entry),
//! - the reports of every other node whose tasks ended, as one batched entry,
//! - while work is queued, one `Submit` of a single job, timed alone,
//!
//! and a `Tick` every `--tick-s` of log time. Only `State::apply_output` is timed. The
//! largest size gives the throughput and latency targets; the memory targets are
//! measured on states of their own (`memory.rs`).
use std::time::{Duration, Instant};

use rudel_core::{Command, JobSpec, State};

use crate::agents::{count_reports, Agents};
use crate::memory;
use crate::scale_args::{self, ScaleArgs};
use crate::stats::{mib, verdict, Samples};
use crate::workload::{self, Amount};

/// Everything measured at one cluster size.
#[derive(Default)]
struct SizeRun {
    nodes: u32,
    tasks: u64,
    /// Entries that queued the workload.
    fill: Samples,
    /// Batched report entries.
    batched: Samples,
    ticks: Samples,
    one_submit: Samples,
    one_report: Samples,
    placed_fill: u64,
    placed_churn: u64,
    churn_time: Duration,
    reports: u64,
    log_s: u64,
    /// Heap bytes of the state once the workload was queued.
    state_bytes: usize,
    /// Why the run stopped.
    end: &'static str,
}

impl SizeRun {
    fn apply_time(&self) -> Duration {
        self.fill.total()
            + self.batched.total()
            + self.ticks.total()
            + self.one_submit.total()
            + self.one_report.total()
    }

    fn placed(&self) -> u64 {
        self.placed_fill + self.placed_churn
    }

    /// Head CPU per placed task, everything applied included.
    fn us_per_task(&self) -> f64 {
        self.apply_time().as_secs_f64() * 1e6 / self.placed().max(1) as f64
    }

    fn placements_per_s(&self) -> f64 {
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
}

impl Sim {
    fn new(nodes: u32, users: u32, settings: &[(String, String)]) -> Sim {
        let mut s = State::new();
        memory::warn_rejected(&s.apply(workload::configure(users, settings, 1)));
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
            run: SizeRun {
                nodes,
                ..SizeRun::default()
            },
        }
    }

    /// Applies one entry; returns its apply time and the placements it made.
    fn entry(&mut self, cmd: Command) -> (Duration, u64) {
        let t = Instant::now();
        let out = self.s.apply_output(cmd);
        let spent = t.elapsed();
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
        (spent, seen.placed)
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
            self.run.fill.push(d);
            self.run.placed_fill += placed;
        }
        self.run.state_bytes = crate::alloc_count::live();
    }

    /// Plays rounds until nothing runs or the apply budget is spent.
    fn churn(&mut self, a: &ScaleArgs) {
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
                self.account(d, p);
            }
            self.round();
            if let Some(spec) = self.held_back.pop() {
                let (d, p) = self.entry(workload::submit(spec, self.now));
                self.run.one_submit.push(d);
                self.account(d, p);
            }
        }
        self.run.log_s = (self.now - start) / 1_000;
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
        self.account(d, p);
        if !reports.is_empty() {
            let (d, p) = self.entry(Command::Batch(reports));
            self.run.batched.push(d);
            self.account(d, p);
        }
    }

    fn account(&mut self, d: Duration, placed: u64) {
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
    let mut sim = Sim::new(nodes, amount.users, &a.settings);
    sim.fill(amount, a.submit_batch);
    sim.churn(a);
    sim.run.tasks = amount.jobs + amount.array_tasks;
    sim.run
}

fn print_size(r: &SizeRun) {
    println!(
        "{:>6} nodes: {} tasks queued; placed {} ({} while queueing), {} reports over {} s of log time; stopped: {}",
        r.nodes,
        r.tasks,
        r.placed(),
        r.placed_fill,
        r.reports,
        r.log_s,
        r.end
    );
    println!(
        "        apply {:.3} s in all, {:.2} µs/task; churn: {:.0} placements/s; state after queueing {:.1} MiB",
        r.apply_time().as_secs_f64(),
        r.us_per_task(),
        r.placements_per_s(),
        mib(r.state_bytes)
    );
    println!("        queueing entries   {}", r.fill.summary());
    println!("        batched reports    {}", r.batched.summary());
    println!("        one node's reports {}", r.one_report.summary());
    println!("        one-job submit     {}", r.one_submit.summary());
    println!("        tick               {}", r.ticks.summary());
}

fn ms(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

fn print_targets(big: &SizeRun, per_task: &[(u32, f64)]) {
    println!("\ntargets (throughput and latency at {} nodes):", big.nodes);
    verdict("placements/s sustained", big.placements_per_s(), "/s", 100_000.0, true);
    let (lo, hi) = per_task
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), (_, us)| (lo.min(*us), hi.max(*us)));
    let list: Vec<String> = per_task.iter().map(|(n, us)| format!("{n}: {us:.2} µs")).collect();
    println!("per-task head CPU by size: {}", list.join(", "));
    verdict(
        "per-task CPU flat (largest/smallest µs per task)",
        hi / lo,
        "x",
        2.0,
        false,
    );
    verdict("tick p99", ms(big.ticks.pct(99.0)), "ms", 50.0, false);
    verdict(
        "one-job submit entry p99",
        ms(big.one_submit.pct(99.0)),
        "ms",
        1.0,
        false,
    );
    verdict(
        "one node's reports entry p99",
        ms(big.one_report.pct(99.0)),
        "ms",
        1.0,
        false,
    );
}

fn memory_targets(a: &ScaleArgs) {
    println!("\nmemory (heap the state holds, counting allocator; RSS change beside it):");
    let jobs = memory::separate_jobs(a.mem_jobs, a.amount.users, a.submit_batch);
    println!(
        "  {} separate pending jobs: {:.1} MiB held, {:.1} MiB peak while submitting, RSS +{:.1} MiB",
        a.mem_jobs,
        mib(jobs.held),
        mib(jobs.peak),
        jobs.rss_delta as f64 / (1 << 20) as f64
    );
    let array = memory::one_array(a.mem_array, a.amount.users);
    println!(
        "  one array of {} pending tasks: {:.1} MiB held, {:.1} MiB peak, RSS +{:.1} MiB",
        a.mem_array,
        mib(array.held),
        mib(array.peak),
        array.rss_delta as f64 / (1 << 20) as f64
    );
    verdict(
        &format!("memory, {} separate pending jobs", a.mem_jobs),
        mib(jobs.held),
        "MiB",
        300.0,
        false,
    );
    verdict(
        &format!("memory, one {}-task array", a.mem_array),
        mib(array.held),
        "MiB",
        100.0,
        false,
    );
}

/// Runs the `scale` mode with its arguments (after `scale`).
pub fn run(argv: Vec<String>) -> Result<(), String> {
    let a = scale_args::parse(argv)?;
    let max = a.nodes.iter().copied().max().unwrap_or(1);
    println!(
        "scale: {} separate jobs + {} array tasks (arrays of {}) at {max} nodes, {} users, multifactor + fair-share, backfill=easy, 3 partitions",
        a.amount.jobs, a.amount.array_tasks, a.amount.array_size, a.amount.users
    );
    if !a.settings.is_empty() {
        let set: Vec<String> = a.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("extra settings: {}", set.join(" "));
    }
    let mut per_task = Vec::new();
    let mut biggest = None;
    for &n in &a.nodes {
        let r = run_size(n, scaled(a.amount, n, max), &a);
        print_size(&r);
        per_task.push((n, r.us_per_task()));
        if n == max {
            biggest = Some(r);
        }
    }
    if let Some(big) = biggest {
        print_targets(&big, &per_task);
    }
    memory_targets(&a);
    Ok(())
}
