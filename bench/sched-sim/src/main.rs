//! Scheduler/state-machine simulation: no processes, no network, only `rudel-core`.
//!
//! Two modes:
//!
//! - default (`classic.rs`): single-cpu nodes, one array, every running task finishing each
//!   round; prints the head's CPU per finished task by cluster size.
//!
//!   ```sh
//!   cargo run --release -p rudel-sched-sim -- --nodes 10,100,1000,10000 --tasks-per-node 5
//!   ```
//!
//! - `scale` (`scale.rs`): the targets of issue 9 — a mixed workload (arrays and separate
//!   jobs, cpus 1..32, memory, time limits, three partitions, fair-share across users,
//!   `order=multifactor`, `backfill=easy`) on nodes of 16–64 cpus; prints placements/s,
//!   CPU per task by size, Tick and single-entry latencies, and the state's memory, each
//!   with PASS/MISS.
//!
//!   ```sh
//!   cargo run --release -p rudel-sched-sim -- scale            # full size, ~5 minutes
//!   cargo run --release -p rudel-sched-sim -- scale --quick    # a tenth, ~1 minute
//!   cargo run --release -p rudel-sched-sim -- scale --help
//!   ```
mod agents;
mod alloc_count;
mod classic;
mod cpu_clock;
mod memory;
mod report;
mod rng;
mod scale;
mod scale_args;
mod stats;
mod workload;

/// Counts heap bytes so that `scale` can tell what a state holds (see `memory.rs`).
#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

fn main() {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    let result = if argv.first().map(String::as_str) == Some("scale") {
        argv.remove(0);
        scale::run(argv)
    } else {
        classic::run(argv)
    };
    if let Err(e) = result {
        eprintln!("rudel-sched-sim: {e}");
        std::process::exit(2);
    }
}
