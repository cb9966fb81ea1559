//! What the `scale` mode prints: per size, the targets with PASS/MISS, and memory.
use std::time::Duration;

use crate::memory;
use crate::scale::SizeRun;
use crate::scale_args::ScaleArgs;
use crate::stats::{mib, verdict};

pub fn print_size(r: &SizeRun) {
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
        "        apply {:.3} s in all, {:.2} µs/task; heap after queueing {:.1} MiB",
        r.apply_time().as_secs_f64(),
        r.us_per_task(),
        mib(r.state_bytes)
    );
    println!(
        "        churn: {} placed in {:.3} s of apply: {:.2} µs/task, {:.0} placements/s",
        r.placed_churn,
        r.churn_time.as_secs_f64(),
        r.churn_us_per_task(),
        r.placements_per_s()
    );
    let (kind, d, placed, queued) = r.slowest_churn;
    println!(
        "          slowest entry: {kind}, {:.3} s, {placed} placed, {queued} jobs queued after it",
        d.as_secs_f64()
    );
    println!("        queueing entries   {}", r.fill.summary());
    let (i, d, placed, queued) = r.slowest_fill;
    println!(
        "          slowest: #{i} of {}, {:.3} s, {placed} placed, {queued} jobs queued after it",
        r.fill.len(),
        d.as_secs_f64()
    );
    println!("        batched reports    {}", r.batched.summary());
    println!("        one node's reports {}", r.one_report.summary());
    println!("        one-job submit     {}", r.one_submit.summary());
    println!("        tick               {}", r.ticks.summary());
    if r.more.len() > 0 {
        println!("        tick after a cap   {}", r.more.summary());
    }
}

fn ms(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// The throughput and latency targets, from the largest size; flatness from all sizes'
/// steady-state CPU per task.
pub fn print_targets(big: &SizeRun, per_task: &[(u32, f64)]) {
    println!("\ntargets (throughput and latency at {} nodes):", big.nodes);
    verdict("placements/s sustained", big.placements_per_s(), "/s", 100_000.0, true);
    let (lo, hi) = per_task
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), (_, us)| (lo.min(*us), hi.max(*us)));
    let list: Vec<String> = per_task.iter().map(|(n, us)| format!("{n}: {us:.2} µs")).collect();
    println!("per-task head CPU while churning, by size: {}", list.join(", "));
    verdict(
        "per-task CPU flat (highest/lowest churn µs per task)",
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

fn rss_mib(delta: isize) -> f64 {
    delta as f64 / (1 << 20) as f64
}

/// The memory targets, each on a state of its own.
pub fn memory_targets(a: &ScaleArgs) {
    println!("memory (heap the state holds, counting allocator; RSS change beside it):");
    let jobs = memory::separate_jobs(a.mem_jobs, a.amount.users, a.submit_batch);
    println!(
        "  {} separate pending jobs: {:.1} MiB held, {:.1} MiB peak while submitting, RSS {:+.1} MiB",
        a.mem_jobs,
        mib(jobs.held),
        mib(jobs.peak),
        rss_mib(jobs.rss_delta)
    );
    println!(
        "    {:.0} bytes per job (a Job record alone is {} bytes, its JobSpec {})",
        jobs.held as f64 / a.mem_jobs.max(1) as f64,
        std::mem::size_of::<rudel_core::Job>(),
        std::mem::size_of::<rudel_core::JobSpec>()
    );
    let array = memory::one_array(a.mem_array, a.amount.users);
    println!(
        "  one array of {} pending tasks: {:.1} MiB held, {:.1} MiB peak, RSS {:+.1} MiB",
        a.mem_array,
        mib(array.held),
        mib(array.peak),
        rss_mib(array.rss_delta)
    );
    let jobs_name = format!("memory, {} separate pending jobs", a.mem_jobs);
    verdict(&jobs_name, mib(jobs.held), "MiB", 300.0, false);
    verdict(
        &format!("memory, one {}-task array", a.mem_array),
        mib(array.held),
        "MiB",
        100.0,
        false,
    );
    println!();
}
