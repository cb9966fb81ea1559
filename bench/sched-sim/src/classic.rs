//! The default mode: head CPU per finished task by cluster size, on the simplest workload.
//!
//! For each cluster size: register N single-cpu nodes, submit one array of
//! `tasks-per-node × N` one-second tasks, then play the agents: every round, every task
//! holding a core finishes and all their reports are applied as one log entry (a batch of
//! per-node `Reports`, as the head commits them). Only `State::apply` is timed (thread CPU
//! time). Prints the head's state-machine CPU per finished task for each size, and as the
//! last line the ratio of the largest size's cost to the smallest's (flat = 1.0).
//!
//! ```sh
//! cargo run --release -p rudel-sched-sim -- --nodes 10,100,1000 --tasks-per-node 5
//! ```
//!
//! `--gang K` submits multi-node jobs instead (issue 11): `tasks-per-node × N / K` jobs of
//! `-N K` (one cpu per node), all submitted in one log entry; each round every running
//! job ends. The cost is then per job (each holding K nodes).
use std::collections::BTreeMap;
use std::time::Duration;

use crate::cpu_clock::thread_cpu;

use rudel_core::array::{ArraySpec, IndexRange};
use rudel_core::{Command, JobSpec, NodeRegistration, State, TaskKey, TaskOutcome, TaskReport};

struct Args {
    nodes: Vec<u32>,
    tasks_per_node: u32,
    gang: u32,
}

fn parse_args(argv: Vec<String>) -> Result<Args, String> {
    let mut a = Args {
        nodes: vec![10, 100, 1000],
        tasks_per_node: 5,
        gang: 0,
    };
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        let val = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--nodes" => {
                a.nodes = val
                    .split(',')
                    .map(|v| v.parse().map_err(|e| format!("--nodes {v}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--tasks-per-node" => a.tasks_per_node = val.parse().map_err(|e| format!("--tasks-per-node: {e}"))?,
            "--gang" => a.gang = val.parse().map_err(|e| format!("--gang: {e}"))?,
            _ => {
                return Err(format!(
                    "unknown option {flag} (use --nodes A,B,C --tasks-per-node N [--gang K], or `scale --help`)"
                ))
            }
        }
    }
    if a.nodes.is_empty() || a.nodes.contains(&0) || a.tasks_per_node == 0 {
        return Err("sizes must be > 0".into());
    }
    Ok(a)
}

fn register(i: u32) -> Command {
    Command::RegisterNode {
        reg: NodeRegistration {
            name: format!("n{i}"),
            uid: format!("u{i}"),
            boot_id: "b".into(),
            cpus: 1,
            mem_bytes: 1 << 30,
            mem_enforcement: "rlimit".into(),
            version: "sim".into(),
            arch: "x86_64".into(),
            os: "linux".into(),
            ..NodeRegistration::default()
        },
        now_ms: 1,
    }
}

/// Reports for every task holding a core, grouped by node as agents send them.
fn finished_round(s: &State, now: u64) -> (Vec<Command>, usize) {
    let mut by_node: BTreeMap<u32, Vec<TaskReport>> = BTreeMap::new();
    for job in s.jobs.values() {
        for (index, rt) in job.running.iter().filter(|(_, rt)| rt.after.is_none()) {
            by_node.entry(rt.node).or_default().push(TaskReport {
                key: TaskKey {
                    job: job.id,
                    index: *index,
                },
                attempt: rt.attempt,
                outcome: TaskOutcome::Exited,
                exit_code: Some(0),
                signal: None,
                start_ms: now - 1000,
                end_ms: now,
                message: String::new(),
                usage: Default::default(),
            });
        }
    }
    let n = by_node.values().map(Vec::len).sum();
    let cmds = by_node
        .into_iter()
        .map(|(node, reports)| Command::Reports {
            node: s.nodes[node as usize].name.clone(),
            reports,
            now_ms: now,
        })
        .collect();
    (cmds, n)
}

/// The submits of one cluster size: one array of `tasks` tasks, or (`gang` > 0)
/// `tasks / gang` jobs of `gang` nodes each.
fn submits(tasks: u32, gang: u32) -> Vec<Command> {
    if gang > 0 {
        let spec = JobSpec {
            argv: vec!["/bin/true".into()],
            cpus: 1,
            chdir: "/".into(),
            requeue: true,
            alloc: rudel_core::alloc::AllocSpec::parse_text(&format!("nodes={gang};nodes-given"))
                .unwrap_or_default()
                .map(Box::new),
            ..JobSpec::default()
        };
        return (0..tasks / gang)
            .map(|_| Command::Submit {
                request_id: String::new(),
                spec: spec.clone(),
                now_ms: 2,
            })
            .collect();
    }
    let spec = JobSpec {
        argv: vec!["/bin/true".into()],
        cpus: 1,
        chdir: "/".into(),
        requeue: true,
        array: Some(ArraySpec {
            ranges: vec![IndexRange {
                start: 1,
                end: tasks,
                step: 1,
            }],
            limit: None,
        }),
        ..JobSpec::default()
    };
    vec![Command::Submit {
        request_id: String::new(),
        spec,
        now_ms: 2,
    }]
}

/// Runs one cluster size; returns (apply time, tasks or gang jobs finished, rounds).
fn simulate(nodes: u32, tasks: u32, gang: u32) -> (Duration, u64, u32) {
    let mut s = State::new();
    for i in 0..nodes {
        s.apply(register(i));
    }
    let t = thread_cpu();
    s.apply(Command::Batch(submits(tasks, gang)));
    let mut spent = thread_cpu().saturating_sub(t);
    let (mut done, mut rounds, mut now) = (0u64, 0u32, 1_000u64);
    loop {
        now += 1_000;
        let (cmds, n) = finished_round(&s, now);
        if n == 0 {
            break;
        }
        let t = thread_cpu();
        s.apply(Command::Batch(cmds));
        spent += thread_cpu().saturating_sub(t);
        done += n as u64;
        rounds += 1;
    }
    (spent, done, rounds)
}

/// Runs the default mode with its command-line arguments (program name excluded).
pub fn run(argv: Vec<String>) -> Result<(), String> {
    let args = parse_args(argv)?;
    let mut per_task = Vec::new();
    for &n in &args.nodes {
        let (spent, done, rounds) = simulate(n, n * args.tasks_per_node, args.gang);
        let us = spent.as_secs_f64() * 1e6 / done.max(1) as f64;
        println!(
            "{n:>6} nodes: {done:>8} tasks in {rounds:>4} rounds, apply {:>9.3} s, {us:>9.2} µs/{}",
            spent.as_secs_f64(),
            if args.gang > 0 { "job" } else { "task" }
        );
        per_task.push(us);
    }
    if let (Some(first), Some(last)) = (per_task.first(), per_task.last()) {
        println!(
            "ratio µs/task at {} nodes / at {} nodes: {:.2}",
            args.nodes[args.nodes.len() - 1],
            args.nodes[0],
            last / first
        );
    }
    Ok(())
}
