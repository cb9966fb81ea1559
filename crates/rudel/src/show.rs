//! `rudel jobs`, `show`, `cancel`, `nodes`: queries, as tables or JSON.
use clap::Args;
use rudel_core::parse::{format_duration, format_size};
use rudel_proto::v1 as pb;
use serde_json::{json, Value};

use crate::{client, CmdResult, Failure};
use anyhow::anyhow;

#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Include finished jobs.
    #[arg(long)]
    pub all: bool,
    /// Print JSON (one array of job objects).
    #[arg(long)]
    pub json: bool,
    /// Read this head's state without confirming it is current (works without quorum).
    #[arg(long)]
    pub stale: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Job id; an array task by its own job id (`SLURM_JOB_ID`) or as ARRAY_INDEX (`41_3`).
    pub id: String,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub stale: bool,
}

#[derive(Args, Debug)]
pub struct CancelArgs {
    /// Job ids: a whole job or array (41), one array task (41_3, or the task's own job
    /// id), some array tasks (41_[1-5,9]).
    #[arg(required = true)]
    pub ids: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
    /// Also print a hash of this head's applied state (equal on all heads at the same index).
    #[arg(long)]
    pub hash: bool,
}

#[derive(Args, Debug)]
pub struct DrainArgs {
    /// Node names.
    #[arg(required = true)]
    pub nodes: Vec<String>,
    /// Why (shown by `rudel nodes`).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    /// Node names.
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NodesArgs {
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub stale: bool,
}

/// Local time of an epoch-ms timestamp, `YYYY-MM-DDTHH:MM:SS` (UTC offset applied by libc).
pub fn timestamp(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = (ms / 1000) as libc::time_t;
    // SAFETY: localtime_r writes into `tm`, which we own; `secs` is a valid time_t.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return ms.to_string();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

fn elapsed(j: &pb::JobInfo) -> String {
    if j.start_ms == 0 {
        return "-".into();
    }
    let end = if j.end_ms > 0 { j.end_ms } else { rudel_tls::now_ms() };
    match end.saturating_sub(j.start_ms) {
        // A job that ended within the millisecond it started (or, stamped by a clock behind
        // the log's, "before" it) ran no time; `format_duration` spells 0 "unlimited", as
        // a time limit.
        0 => "00:00".into(),
        ms => format_duration(ms),
    }
}

fn count(j: &pb::JobInfo, state: &str) -> u64 {
    j.counts.iter().find(|c| c.state == state).map_or(0, |c| c.count)
}

/// A job as JSON (stable field names for scripts).
pub fn job_json(j: &pb::JobInfo) -> Value {
    let spec = j.spec.clone().unwrap_or_default();
    let mut v = json!({
        "id": j.id,
        "name": j.name,
        "state": j.state,
        "tasks": j.tasks,
        "counts": j.counts.iter().map(|c| (c.state.clone(), json!(c.count))).collect::<serde_json::Map<_, _>>(),
        "exit_code": j.exit_code,
        "signal": j.signal,
        "nodes": j.nodes,
        "submit_ms": j.submit_ms,
        "start_ms": if j.start_ms > 0 { json!(j.start_ms) } else { Value::Null },
        "end_ms": if j.end_ms > 0 { json!(j.end_ms) } else { Value::Null },
        "reason": j.reason,
        "command": spec.argv,
        "cpus": spec.cpus,
        "mem_bytes": spec.mem_bytes,
        "time_limit_ms": spec.time_limit_ms,
        "priority": spec.priority,
        "array": spec.array,
        "requeue": spec.requeue,
        "constraint": spec.constraint,
        "partition": spec.partition,
        "gres": spec.gres,
        "licenses": spec.licenses,
        "dependency": spec.dependency,
        "held": j.held,
        "begin_ms": if spec.begin_ms > 0 { json!(spec.begin_ms) } else { Value::Null },
        "chdir": spec.chdir,
        "user": spec.user,
        "output": j.output_path,
        "error": j.error_path,
        "task_details": j.task_details.iter().map(|t| json!({
            "index": t.index, "state": t.state, "node": t.node, "attempt": t.attempt,
            "exit_code": t.exit_code, "signal": t.signal, "start_ms": t.start_ms,
            "end_ms": t.end_ms, "reason": t.reason,
        })).collect::<Vec<_>>(),
    });
    // Outside the macro: one more field takes json! past its recursion limit.
    v["account"] = json!(spec.account);
    // Under backfill=easy, for the reserved job: the log time it is expected to start by.
    v["expected_start_ms"] = if j.expected_start_ms > 0 {
        json!(j.expected_start_ms)
    } else {
        Value::Null
    };
    v["sched_nodes"] = json!(j.sched_nodes);
    // Ended job steps (srun), as the accounting store holds them.
    v["steps"] = j
        .steps
        .iter()
        .map(|s| {
            json!({
                "step": s.step, "name": s.name, "state": s.state, "exit_code": s.exit_code,
                "signal": s.signal, "start_ms": s.start_ms, "end_ms": s.end_ms,
                "nodelist": s.nodelist, "ntasks": s.ntasks, "cpus": s.cpus,
            })
        })
        .collect();
    v["steps_dropped"] = json!(j.steps_dropped);
    v
}

/// `rudel jobs`.
pub async fn jobs(a: JobsArgs, head: &str) -> CmdResult {
    let mut c = client::connect_for(head, a.stale).await?;
    let r = c
        .list_jobs(pb::ListJobsRequest {
            all: a.all,
            stale: a.stale,
        })
        .await
        .map_err(client::failure)?
        .into_inner();
    if a.json {
        println!("{}", Value::Array(r.jobs.iter().map(job_json).collect()));
        return Ok(0);
    }
    println!(
        "{:>8}  {:<16} {:<10} {:>7} {:>7} {:>7} {:>7}  {:<10} {:>11}  REASON/NODES",
        "JOBID", "NAME", "STATE", "TASKS", "PEND", "RUN", "DONE", "USER", "TIME"
    );
    for j in &r.jobs {
        let done = j.tasks - count(j, "pending") - count(j, "running");
        let spec = j.spec.clone().unwrap_or_default();
        let tail = if j.state == "pending" {
            j.reason.clone()
        } else {
            j.nodes.join(",")
        };
        println!(
            "{:>8}  {:<16} {:<10} {:>7} {:>7} {:>7} {:>7}  {:<10} {:>11}  {}",
            j.id,
            truncate(&j.name, 16),
            j.state,
            j.tasks,
            count(j, "pending"),
            count(j, "running"),
            done,
            truncate(&spec.user, 10),
            elapsed(j),
            tail
        );
    }
    Ok(0)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// `rudel show`.
pub async fn show(a: ShowArgs, head: &str) -> CmdResult {
    let (id, asked_index) = parse_job_ref(&a.id)?;
    let mut c = client::connect_for(head, a.stale).await?;
    let j = c
        .show_job(pb::ShowJobRequest {
            job_id: id,
            stale: a.stale,
        })
        .await
        .map_err(client::failure)?
        .into_inner();
    let spec = j.spec.clone().unwrap_or_default();
    let task = asked_index.or(j.task_index);
    let task_job = match task {
        Some(index) => {
            let position = rudel_core::parse::parse_array(&spec.array)
                .ok()
                .and_then(|arr| arr.position_of(index))
                .ok_or_else(|| Failure::usage(anyhow!("job {} has no array task {index}", j.id)))?;
            Some((index, j.id + position))
        }
        None => None,
    };
    if a.json {
        let mut v = job_json(&j);
        if let Some((index, job_id)) = task_job {
            v["task"] = json!({"index": index, "job_id": job_id});
        }
        println!("{v}");
        return Ok(0);
    }
    if let Some((index, job_id)) = task_job {
        println!("Task {}_{index} (job id {job_id}) of array job {}:", j.id, j.id);
    }
    println!("JobId={} Name={}", j.id, j.name);
    println!(
        "  State={}{}",
        j.state,
        if j.reason.is_empty() {
            String::new()
        } else {
            format!(" Reason={}", j.reason)
        }
    );
    match (j.exit_code, j.signal) {
        (_, Some(sig)) => println!("  ExitCode=- Signal={sig}"),
        (Some(code), None) => println!("  ExitCode={code}"),
        (None, None) => {}
    }
    let command = if spec.argv.is_empty() {
        "(batch script)".to_string()
    } else {
        spec.argv.join(" ")
    };
    println!("  Command={command}");
    println!(
        "  Cpus={} Mem={} TimeLimit={} Priority={} Requeue={}",
        spec.cpus,
        if spec.mem_bytes == 0 {
            "-".into()
        } else {
            format_size(spec.mem_bytes)
        },
        format_duration(spec.time_limit_ms),
        spec.priority,
        spec.requeue
    );
    if !spec.array.is_empty() {
        println!("  Array={} Tasks={}", spec.array, j.tasks);
    }
    if !spec.constraint.is_empty() {
        println!("  Constraint={}", spec.constraint);
    }
    if !spec.allocation.is_empty() {
        // What it asked for; Nodes= below lists every node granted, the script's first.
        println!("  Allocation={}", spec.allocation);
    }
    println!("  Partition={}", spec.partition);
    if !spec.account.is_empty() {
        println!("  Account={}", spec.account);
    }
    if !spec.dependency.is_empty() || j.held || spec.begin_ms > 0 {
        println!(
            "  Dependency={} Held={} Begin={}",
            if spec.dependency.is_empty() {
                "(null)"
            } else {
                &spec.dependency
            },
            j.held,
            timestamp(spec.begin_ms)
        );
    }
    if !spec.gres.is_empty() || !spec.licenses.is_empty() {
        let mut g: Vec<String> = spec.gres.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        g.sort();
        let mut l: Vec<String> = spec.licenses.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        l.sort();
        println!("  Gres={} Licenses={}", g.join(","), l.join(","));
    }
    let counts: Vec<String> = j.counts.iter().map(|c| format!("{}={}", c.state, c.count)).collect();
    println!("  Tasks: {}", counts.join(" "));
    println!(
        "  Nodes={}",
        if j.nodes.is_empty() {
            "-".into()
        } else {
            j.nodes.join(",")
        }
    );
    println!(
        "  Submit={} Start={} End={} Elapsed={}",
        timestamp(j.submit_ms),
        timestamp(j.start_ms),
        timestamp(j.end_ms),
        elapsed(&j)
    );
    if j.expected_start_ms > 0 {
        // The backfill reservation: by then if running tasks end at their time limits.
        println!(
            "  ExpectedStart={} SchedNodes={}",
            timestamp(j.expected_start_ms),
            j.sched_nodes.join(",")
        );
    }
    println!("  WorkDir={}", spec.chdir);
    println!(
        "  StdOut={}",
        if j.output_path.is_empty() {
            "none".into()
        } else {
            j.output_path.clone()
        }
    );
    println!(
        "  StdErr={}",
        if j.error_path.is_empty() {
            "none".into()
        } else {
            j.error_path.clone()
        }
    );
    let interesting: Vec<&pb::TaskInfo> = j
        .task_details
        .iter()
        .filter(|t| !spec.array.is_empty() || t.state != "completed")
        .collect();
    if !interesting.is_empty() {
        println!(
            "  {:>8} {:<10} {:<12} {:>7} {:>6}  REASON",
            "INDEX", "STATE", "NODE", "ATTEMPT", "EXIT"
        );
        for t in interesting.iter().take(50) {
            let exit = match (t.exit_code, t.signal) {
                (_, Some(s)) => format!("sig{s}"),
                (Some(c), None) => c.to_string(),
                _ => "-".into(),
            };
            println!(
                "  {:>8} {:<10} {:<12} {:>7} {:>6}  {}",
                t.index,
                t.state,
                if t.node.is_empty() { "-" } else { &t.node },
                t.attempt,
                exit,
                t.reason
            );
        }
        if interesting.len() > 50 {
            println!("  ... {} more (see --json)", interesting.len() - 50);
        }
    }
    print_steps(&j);
    Ok(0)
}

/// The job's ended steps (`srun`), first 50, as `sacct` names them (`ID.N`).
fn print_steps(j: &pb::JobInfo) {
    if j.steps.is_empty() {
        return;
    }
    println!(
        "  {:<12} {:<16} {:<10} {:>6} {:>6}  NODES",
        "STEP", "NAME", "STATE", "TASKS", "EXIT"
    );
    for s in j.steps.iter().take(50) {
        println!(
            "  {:<12} {:<16} {:<10} {:>6} {:>6}  {}",
            format!("{}.{}", j.id, s.step),
            truncate(&s.name, 16),
            s.state,
            s.ntasks,
            format!("{}:{}", s.exit_code, s.signal),
            s.nodelist
        );
    }
    if j.steps.len() > 50 {
        println!("  ... {} more steps (sacct -j {} shows them)", j.steps.len() - 50, j.id);
    }
    if j.steps_dropped > 0 {
        println!(
            "  {} more steps ended past the per-job record cap (counted, not recorded)",
            j.steps_dropped
        );
    }
}

/// `rudel cancel`.
pub async fn cancel(a: CancelArgs, head: &str) -> CmdResult {
    let refs = a
        .ids
        .iter()
        .flat_map(|s| crate::job_refs::split_list(s))
        .map(crate::job_refs::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::usage(anyhow!(e)))?;
    let req = crate::job_refs::cancel_request(&refs);
    // Cancelling twice is harmless, so the call may be repeated if leadership moved.
    let r = client::on_leader(head, |mut c| {
        let req = req.clone();
        async move { c.cancel(req).await }
    })
    .await?
    .into_inner();
    let task = |t: &pb::ArrayTask| format!("{}_{}", t.job_id, t.index);
    if a.json {
        println!(
            "{}",
            json!({"cancelled": r.cancelled, "already_finished": r.already_finished,
                   "cancelled_tasks": r.cancelled_tasks.iter().map(task).collect::<Vec<_>>(),
                   "finished_tasks": r.finished_tasks.iter().map(task).collect::<Vec<_>>()})
        );
    } else {
        for id in &r.cancelled {
            println!("Cancelled job {id}");
        }
        for t in &r.cancelled_tasks {
            println!("Cancelled task {}", task(t));
        }
        for id in &r.already_finished {
            println!("Job {id} had already finished");
        }
        for t in &r.finished_tasks {
            println!("Task {} had already finished", task(t));
        }
    }
    Ok(0)
}

/// `rudel status`.
pub async fn status(a: StatusArgs, head: &str) -> CmdResult {
    let mut c = client::connect_any(head).await?;
    let r = c
        .cluster_info(pb::ClusterInfoRequest { with_hash: a.hash })
        .await
        .map_err(client::failure)?
        .into_inner();
    if a.json {
        println!(
            "{}",
            json!({"head_id": r.node_id, "leader": r.leader_addr, "is_leader": r.is_leader,
                   "term": r.term, "last_applied": r.last_applied, "version": r.version,
                   "state_hash": r.state_hash})
        );
    } else {
        println!("head {} at {head} (version {})", r.node_id, r.version);
        println!(
            "  role={} leader={} term={} last_applied={}",
            if r.is_leader { "leader" } else { "follower" },
            if r.leader_addr.is_empty() {
                "unknown"
            } else {
                &r.leader_addr
            },
            r.term,
            r.last_applied
        );
        if a.hash {
            println!("  state_hash={} (at index {})", r.state_hash, r.last_applied);
        }
    }
    Ok(0)
}

/// One line per named node; `unchanged` is appended for nodes already in that state.
fn print_changed(nodes: &[String], changed: &[String], what: &str, unchanged: &str) {
    for n in nodes {
        println!("{what} {n}{}", if changed.contains(n) { "" } else { unchanged });
    }
}

/// `rudel drain`.
pub async fn drain(a: DrainArgs, head: &str) -> CmdResult {
    let mut c = client::connect(head).await?;
    let req = pb::DrainRequest {
        nodes: a.nodes.clone(),
        reason: a.reason.unwrap_or_default(),
    };
    let r = c.drain(req).await.map_err(client::failure)?.into_inner();
    print_changed(&a.nodes, &r.changed, "Draining node", " (already drained)");
    Ok(0)
}

/// `rudel resume`.
pub async fn resume(a: ResumeArgs, head: &str) -> CmdResult {
    let mut c = client::connect(head).await?;
    let r = c
        .resume(pb::ResumeRequest { nodes: a.nodes.clone() })
        .await
        .map_err(client::failure)?
        .into_inner();
    print_changed(&a.nodes, &r.changed, "Resumed node", " (was not drained)");
    Ok(0)
}

/// `rudel nodes`.
pub async fn nodes(a: NodesArgs, head: &str) -> CmdResult {
    let mut c = client::connect_for(head, a.stale).await?;
    let r = c
        .list_nodes(pb::ListNodesRequest { stale: a.stale })
        .await
        .map_err(client::failure)?
        .into_inner();
    if a.json {
        let v: Vec<Value> = r
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "name": n.name, "state": n.state, "cpus": n.cpus, "cpus_used": n.cpus_used,
                    "mem_bytes": n.mem_bytes, "mem_used": n.mem_used, "mem_enforcement": n.mem_enforcement,
                    "containment": n.containment, "run_as": n.run_as,
                    "running_tasks": n.running_tasks, "version": n.version, "arch": n.arch, "os": n.os,
                    "last_seen_ms": n.last_seen_ms, "address": n.address, "reason": n.reason,
                    "labels": n.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                    "gres": gres_json(n),
                })
            })
            .collect();
        println!("{}", Value::Array(v));
        return Ok(0);
    }
    // Containment texts differ much in length (`cgroup-v1 (pids.max 1024, memory)`,
    // `process-tree (no process limit, memory via RLIMIT_AS)`): size the column to them.
    let contain = |n: &pb::NodeInfo| {
        if n.containment.is_empty() {
            "-".to_string()
        } else {
            n.containment.clone()
        }
    };
    let cw = r.nodes.iter().map(|n| contain(n).len()).max().unwrap_or(0).max(11);
    let gw = r.nodes.iter().map(|n| gres_text(n).len()).max().unwrap_or(0).max(4);
    let run_as = |n: &pb::NodeInfo| {
        if n.run_as.is_empty() {
            "-".to_string()
        } else {
            n.run_as.clone()
        }
    };
    let rw = r.nodes.iter().map(|n| run_as(n).len()).max().unwrap_or(0).max(6);
    println!(
        "{:<20} {:<11} {:>9} {:>15} {:<gw$} {:<10} {:>6} {:<8} {:<8} {:<19}  {:<16} {:<cw$} {:<rw$} REASON",
        "NODE",
        "STATE",
        "CPUS",
        "MEM",
        "GRES",
        "MEMLIMIT",
        "TASKS",
        "VERSION",
        "ARCH",
        "LAST_SEEN",
        "LABELS",
        "CONTAINMENT",
        "RUN_AS"
    );
    for n in &r.nodes {
        println!(
            "{:<20} {:<11} {:>9} {:>15} {:<gw$} {:<10} {:>6} {:<8} {:<8} {:<19}  {:<16} {:<cw$} {:<rw$} {}",
            truncate(&n.name, 20),
            n.state,
            format!("{}/{}", n.cpus_used, n.cpus),
            format!("{}/{}", format_size(n.mem_used), format_size(n.mem_bytes)),
            gres_text(n),
            n.mem_enforcement,
            n.running_tasks,
            n.version,
            n.arch,
            timestamp(n.last_seen_ms),
            {
                let mut l: Vec<String> = n
                    .labels
                    .iter()
                    .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") })
                    .collect();
                l.sort();
                if l.is_empty() {
                    "-".to_string()
                } else {
                    l.join(",")
                }
            },
            contain(n),
            run_as(n),
            n.reason
        );
    }
    Ok(0)
}

/// Generic resources of a node as `gpu:1/4,fpga:0/1` (used/total), `-` for none.
fn gres_text(n: &pb::NodeInfo) -> String {
    let mut g: Vec<String> = n.gres.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    g.sort();
    if g.is_empty() {
        "-".into()
    } else {
        g.join(",")
    }
}

/// Generic resources of a node as JSON: {"gpu": {"used": 1, "total": 4}}.
fn gres_json(n: &pb::NodeInfo) -> Value {
    let m: serde_json::Map<String, Value> = n
        .gres
        .iter()
        .map(|(k, v)| {
            let (used, total) = v.split_once('/').unwrap_or(("0", v));
            let num = |s: &str| s.parse::<u64>().unwrap_or(0);
            (k.clone(), json!({"used": num(used), "total": num(total)}))
        })
        .collect();
    Value::Object(m)
}

/// `41` or `41_3` (an array task by its array's id and index).
pub fn parse_job_ref(s: &str) -> Result<(u64, Option<u32>), Failure> {
    let bad = || Failure::usage(anyhow!("bad job id {s:?}: expected ID or ARRAY_INDEX, e.g. 41 or 41_3"));
    match s.split_once('_') {
        None => s.parse().map(|id| (id, None)).map_err(|_| bad()),
        Some((id, index)) => Ok((id.parse().map_err(|_| bad())?, Some(index.parse().map_err(|_| bad())?))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_that_ran_no_time_shows_zero_not_unlimited() {
        let job = |start_ms, end_ms| pb::JobInfo {
            start_ms,
            end_ms,
            ..Default::default()
        };
        assert_eq!(elapsed(&job(5_000, 5_000)), "00:00");
        assert_eq!(elapsed(&job(5_000, 4_000)), "00:00", "ended 'before' it started");
        assert_eq!(elapsed(&job(5_000, 65_000)), "01:00");
        assert_eq!(elapsed(&job(0, 0)), "-", "never started");
    }
}
