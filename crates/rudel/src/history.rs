//! `rudel history`: finished jobs from the heads' accounting store.
use clap::Args;
use rudel_proto::v1 as pb;
use serde_json::{json, Value};

use crate::{client, CmdResult, Failure};

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Only jobs of this user.
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: Option<String>,
    /// Only jobs that ended in this state (completed, failed, out_of_memory, cancelled, timeout,
    /// node_fail); repeatable. A memory kill is recorded as out_of_memory, not failed.
    #[arg(long, short = 's', value_name = "STATE")]
    pub state: Vec<String>,
    /// Only jobs that ended at or after this time (see `sacct -S` for the formats; e.g. 2026-11-28, now-1hour).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only jobs submitted at or before this time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only jobs with this name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Only these jobs (comma-separated ids); time bounds are ignored.
    #[arg(long, short = 'j', value_name = "IDS", value_delimiter = ',')]
    pub jobs: Vec<u64>,
    /// At most this many jobs.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub limit: u32,
    /// Print JSON (one array of job records).
    #[arg(long)]
    pub json: bool,
}

/// Known state names (`rudel history --state`).
const STATES: [&str; 8] = [
    "pending",
    "running",
    "completed",
    "failed",
    "out_of_memory",
    "cancelled",
    "timeout",
    "node_fail",
];

/// `rudel history`.
pub async fn history(a: HistoryArgs, head: &str) -> CmdResult {
    for s in &a.state {
        if !STATES.contains(&s.to_ascii_lowercase().as_str()) {
            return Err(Failure::usage(anyhow::anyhow!(
                "--state {s}: unknown state (one of {})",
                STATES.join(", ")
            )));
        }
    }
    let time = |flag: &str, v: &Option<String>| -> Result<u64, Failure> {
        match v {
            None => Ok(0),
            Some(t) => crate::slurm::sacct::parse_time(t, crate::slurm::sacct::now_ms())
                .map_err(|e| Failure::usage(anyhow::anyhow!("{flag} {t}: {e}"))),
        }
    };
    let req = pb::HistoryRequest {
        user: a.user.clone().unwrap_or_default(),
        states: a.state.iter().map(|s| s.to_ascii_lowercase()).collect(),
        since_ms: time("--since", &a.since)?,
        until_ms: time("--until", &a.until)?,
        name: a.name.clone().unwrap_or_default(),
        job_ids: a.jobs.clone(),
        limit: a.limit,
        include_active: false,
        names: Vec::new(),
    };
    let jobs = query(head, req).await?;
    if a.json {
        println!("{}", Value::Array(jobs.iter().map(record_json).collect()));
        return Ok(0);
    }
    println!(
        "{:>8}  {:<16} {:<10} {:<10} {:>7} {:>6}  {:<19} {:>11}  NODES",
        "JOBID", "NAME", "USER", "STATE", "TASKS", "EXIT", "END", "ELAPSED"
    );
    for j in &jobs {
        println!(
            "{:>8}  {:<16} {:<10} {:<10} {:>7} {:>6}  {:<19} {:>11}  {}",
            j.job_id,
            j.name,
            j.user,
            j.state,
            j.tasks,
            crate::slurm::sacct::exit_code(j),
            crate::slurm::sacct::local_time(j.end_ms),
            crate::slurm::sacct::duration(j.end_ms.saturating_sub(j.start_ms) / 1000 * u64::from(j.start_ms > 0)),
            j.nodes.join(",")
        );
    }
    Ok(0)
}

/// Asks any head for history records (each answers from its own store).
pub async fn query(head: &str, req: pb::HistoryRequest) -> Result<Vec<pb::HistoryJob>, Failure> {
    let mut c = client::connect_any(head).await?;
    Ok(c.history(req).await.map_err(client::failure)?.into_inner().jobs)
}

/// A record as `--json` prints it.
pub fn record_json(j: &pb::HistoryJob) -> Value {
    json!({
        "id": j.job_id, "name": j.name, "user": j.user, "state": j.state,
        "exit_code": j.exit_code, "signal": j.signal,
        "submit_ms": j.submit_ms, "start_ms": j.start_ms, "end_ms": j.end_ms,
        "nodes": j.nodes, "cpus": j.cpus, "mem_bytes": j.mem_bytes,
        "time_limit_ms": j.time_limit_ms, "array": j.array, "work_dir": j.work_dir,
        "tasks": j.tasks, "cancelled": j.cancelled,
        "max_rss_kb": j.max_rss_kb, "user_cpu_us": j.user_cpu_us, "sys_cpu_us": j.sys_cpu_us,
        "counts": j.counts.iter().map(|c| (c.state.clone(), json!(c.count))).collect::<serde_json::Map<_, _>>(),
        "task_records": j.task_records.iter().map(|t| json!({
            "index": t.index, "state": t.state, "exit_code": t.exit_code, "signal": t.signal,
            "start_ms": t.start_ms, "end_ms": t.end_ms, "node": t.node, "job_id": t.job_id,
            "max_rss_kb": t.max_rss_kb, "user_cpu_us": t.user_cpu_us, "sys_cpu_us": t.sys_cpu_us,
        })).collect::<Vec<_>>(),
    })
}
