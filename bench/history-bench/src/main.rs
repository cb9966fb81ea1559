//! Accounting-store benchmark: no cluster, only rudel-head's `History` (history.redb).
//!
//! Fills a fresh store with `--jobs` finished-job records (one task row and usage total
//! each, as a head records a plain job; `--users` users, ends spread evenly over the last
//! `--days` days, runs of 1 s to 2 h), written through the store's API in batches of
//! 10,000, then times the queries `sacct` makes, each `--runs` times: one user over one
//! day (`sacct -u U -S D -E D+1`), every user over the last hour, and `-j` of one id.
//! Times `History::query_filter` (what the head's History RPC runs), not the RPC or the
//! CLI. Prints every run and the median per query; the last line is the slowest median
//! against the 50 ms target.
//!
//! ```sh
//! cargo run --release -p rudel-history-bench -- --jobs 1000000 --runs 7 [--dir DIR]
//! ```
//! With `--dir`, the store is left in `DIR/history.redb`: `rudel head --data DIR` then
//! serves it, for timing `rudel sacct` end to end.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rudel_head::history::{Filter, History, DEFAULT_RETENTION};
use rudel_head::history_task::TaskRecord;
use rudel_proto::v1 as pb;

const DAY_MS: u64 = 86_400_000;
const BATCH: u64 = 10_000;

struct Args {
    jobs: u64,
    users: u64,
    days: u64,
    runs: usize,
    /// Keep the store here (`DIR/history.redb`, for a head to serve) instead of a
    /// temporary directory.
    dir: Option<std::path::PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        jobs: 1_000_000,
        users: 100,
        days: 30,
        runs: 7,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().ok_or(format!("{flag} needs a value"))?;
        if flag == "--dir" {
            a.dir = Some(val.into());
            continue;
        }
        let n: u64 = val.parse().map_err(|e| format!("{flag} {val}: {e}"))?;
        match flag.as_str() {
            "--jobs" => a.jobs = n,
            "--users" => a.users = n,
            "--days" => a.days = n,
            "--runs" => a.runs = n as usize,
            _ => {
                return Err(format!(
                    "unknown option {flag} (use --jobs N --users N --days N --runs N --dir DIR)"
                ))
            }
        }
    }
    if a.jobs == 0 || a.users == 0 || a.days == 0 || a.runs == 0 {
        return Err("every value must be > 0".into());
    }
    Ok(a)
}

/// Job `i` of `n`: deterministic user, times, state and usage.
fn job(i: u64, a: &Args, now: u64) -> (TaskRecord, pb::HistoryJob) {
    let span = a.days * DAY_MS;
    let end = now - span + i * span / a.jobs;
    let run = 1_000 + (i * 7_919) % 7_200_000;
    let start = end - run;
    let failed = i.is_multiple_of(20);
    let state = if failed { "failed" } else { "completed" };
    let node = format!("n{}", i % 64);
    let task = pb::HistoryTask {
        index: 0,
        state: state.into(),
        exit_code: Some(i32::from(failed)),
        start_ms: start,
        end_ms: end,
        node: node.clone(),
        job_id: i,
        max_rss_kb: 1_000 + i % 100_000,
        user_cpu_us: run * 900,
        sys_cpu_us: run * 50,
        ..Default::default()
    };
    let rec = pb::HistoryJob {
        job_id: i,
        name: format!("sweep-{}", i % 1_000),
        user: format!("user{}", i % a.users),
        state: state.into(),
        exit_code: task.exit_code,
        submit_ms: start - 5_000,
        start_ms: start,
        end_ms: end,
        nodes: vec![node],
        cpus: 1,
        mem_bytes: 1 << 30,
        time_limit_ms: 4 * 3_600_000,
        work_dir: "/home/user/project".into(),
        tasks: 1,
        counts: vec![pb::StateCount {
            state: state.into(),
            count: 1,
        }],
        ..Default::default()
    };
    let t = TaskRecord {
        job: i,
        task,
        row: true,
    };
    (t, rec)
}

fn fill(h: &History, a: &Args, now: u64) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut i = 1;
    while i <= a.jobs {
        let last = (i + BATCH - 1).min(a.jobs);
        let (tasks, jobs): (Vec<_>, Vec<_>) = (i..=last).map(|k| job(k, a, now)).unzip();
        h.write_tasks_now(last, &tasks, &jobs).map_err(|e| e.to_string())?;
        i = last + 1;
    }
    Ok(t0.elapsed())
}

/// The writer's cost per ended task: one 10,000-task array's task records written in
/// commits of 50 (what the writer thread groups under load), on top of the filled store.
/// Returns microseconds per task.
fn task_write_cost(h: &History, first_id: u64) -> Result<f64, String> {
    const TASKS: u32 = 10_000;
    const GROUP: u32 = 50;
    let t0 = Instant::now();
    for start in (0..TASKS).step_by(GROUP as usize) {
        let batch: Vec<TaskRecord> = (start..start + GROUP)
            .map(|i| TaskRecord {
                job: first_id,
                row: true,
                task: pb::HistoryTask {
                    index: i,
                    state: "completed".into(),
                    exit_code: Some(0),
                    job_id: first_id + u64::from(i),
                    max_rss_kb: 1_500,
                    user_cpu_us: 700,
                    ..Default::default()
                },
            })
            .collect();
        h.write_tasks_now(first_id, &batch, &[]).map_err(|e| e.to_string())?;
    }
    Ok(t0.elapsed().as_secs_f64() * 1e6 / f64::from(TASKS))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rudel-history-bench: {e}");
            std::process::exit(2);
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("rudel-history-bench: temporary directory: {e}");
            std::process::exit(1);
        }
    };
    let path = a.dir.as_deref().unwrap_or(dir.path()).join("history.redb");
    // Retention longer than the filled span: the writer thread must not prune mid-run.
    let h = match History::open(
        &path,
        DEFAULT_RETENTION.max(Duration::from_millis((a.days + 1) * DAY_MS)),
    ) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("rudel-history-bench: {e}");
            std::process::exit(1);
        }
    };
    let took = match fill(&h, &a, now) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("rudel-history-bench: filling: {e}");
            std::process::exit(1);
        }
    };
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "filled {} jobs ({} users, {} days) in {:.1} s ({:.0} records/s); store {:.0} MB",
        a.jobs,
        a.users,
        a.days,
        took.as_secs_f64(),
        a.jobs as f64 / took.as_secs_f64(),
        size as f64 / 1e6
    );
    // One day in the middle of the span; one hour at its end.
    let day = now - a.days * DAY_MS / 2;
    let queries: Vec<(&str, Filter)> = vec![
        (
            "sacct -u user7 -S day -E day+1 (one user, one day)",
            Filter {
                user: "user7".into(),
                since_ms: day,
                until_ms: day + DAY_MS,
                limit: 10_000,
                ..Default::default()
            },
        ),
        (
            "sacct -a -S now-1hour (every user, last hour)",
            Filter {
                since_ms: now - 3_600_000,
                limit: 10_000,
                ..Default::default()
            },
        ),
        (
            "sacct -j ID (one job)",
            Filter {
                job_ids: vec![a.jobs / 2 + 1],
                limit: 10_000,
                ..Default::default()
            },
        ),
    ];
    let mut worst = 0.0f64;
    for (name, f) in &queries {
        let mut ms = Vec::new();
        let mut found = 0;
        for _ in 0..a.runs {
            let t0 = Instant::now();
            match h.query_filter(f) {
                Ok(r) => found = r.len(),
                Err(e) => {
                    eprintln!("rudel-history-bench: {name}: {e}");
                    std::process::exit(1);
                }
            }
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let runs: Vec<String> = ms.iter().map(|m| format!("{m:.2}")).collect();
        let med = median(&mut ms);
        worst = worst.max(med);
        println!("{name}: {found} jobs; median {med:.2} ms; runs {} ms", runs.join(", "));
    }
    match task_write_cost(&h, a.jobs + 1) {
        Ok(us) => println!("writer: {us:.1} µs per ended task (task row and usage total, commits of 50 tasks)"),
        Err(e) => {
            eprintln!("rudel-history-bench: task rows: {e}");
            std::process::exit(1);
        }
    }
    println!("slowest median {worst:.2} ms (target <= 50 ms)");
}
