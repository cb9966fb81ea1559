//! `rudel limits [--user U] [--json]`: the limits in force for a user (yours by default;
//! admins may name anyone) next to what that user uses now.
use clap::Args;
use rudel_proto::v1 as pb;
use serde_json::json;

use crate::{client, CmdResult};

#[derive(Args, Debug)]
pub struct LimitsArgs {
    /// Whose limits (admins only for another user; default: you).
    #[arg(long)]
    pub user: Option<String>,
    /// Print JSON (the API's field names; a limit that is absent is unlimited).
    #[arg(long)]
    pub json: bool,
    /// Answer from this head's copy without checking it is current.
    #[arg(long)]
    pub stale: bool,
}

pub async fn limits(a: LimitsArgs, head: &str) -> CmdResult {
    let mut c = client::connect_for(head, a.stale).await?;
    let r = c
        .limits(pb::LimitsRequest {
            user: a.user.unwrap_or_default(),
            stale: a.stale,
        })
        .await
        .map_err(client::failure)?
        .into_inner();
    if a.json {
        println!("{}", to_json(&r));
    } else {
        print!("{}", text(&r));
    }
    Ok(0)
}

fn to_json(r: &pb::LimitsResponse) -> serde_json::Value {
    json!({
        "user": r.user,
        "max_pending_tasks": r.max_pending_tasks,
        "max_pending_jobs": r.max_pending_jobs,
        "max_running_tasks": r.max_running_tasks,
        "max_running_cpus": r.max_running_cpus,
        "submit_rate": r.submit_rate,
        "submit_burst": r.submit_burst,
        "pending_tasks": r.pending_tasks,
        "pending_jobs": r.pending_jobs,
        "running_tasks": r.running_tasks,
        "running_cpus": r.running_cpus,
        "max_running_gpus": r.max_running_gpus,
        "running_gpus": r.running_gpus,
        "queue_max_pending_tasks": r.queue_max_pending_tasks,
        "queue_pending_tasks": r.queue_pending_tasks,
        "accounts": r.accounts.iter().map(|a| json!({
            "name": a.name,
            "max_pending_tasks": a.max_pending_tasks,
            "max_pending_jobs": a.max_pending_jobs,
            "max_running_tasks": a.max_running_tasks,
            "max_running_cpus": a.max_running_cpus,
            "max_running_gpus": a.max_running_gpus,
            "pending_tasks": a.pending_tasks,
            "pending_jobs": a.pending_jobs,
            "running_tasks": a.running_tasks,
            "running_cpus": a.running_cpus,
            "running_gpus": a.running_gpus,
        })).collect::<Vec<_>>(),
    })
}

fn limit(l: Option<u64>) -> String {
    l.map_or_else(|| "unlimited".into(), |n| n.to_string())
}

fn text(r: &pb::LimitsResponse) -> String {
    let rows = [
        ("pending tasks", r.max_pending_tasks, r.pending_tasks),
        ("pending jobs", r.max_pending_jobs, r.pending_jobs),
        ("running tasks", r.max_running_tasks, r.running_tasks),
        ("running cpus", r.max_running_cpus, r.running_cpus),
        ("running gpus", r.max_running_gpus, r.running_gpus),
    ];
    let mut out = format!("user {}\n{:<16}{:>12}{:>12}\n", r.user, "", "limit", "in use");
    out.push_str(&rows_text(&rows));
    let rate = match r.submit_rate {
        Some(rate) => format!("{rate} jobs/s (burst {})", r.submit_burst.unwrap_or(rate)),
        None => "unlimited".into(),
    };
    out.push_str(&format!("{:<16}{rate}\n", "submit rate"));
    out.push_str(&format!(
        "{:<16}{} pending tasks of at most {}\n",
        "whole queue", r.queue_pending_tasks, r.queue_max_pending_tasks
    ));
    for a in &r.accounts {
        out.push_str(&account_text(a));
    }
    out
}

/// One account's limits (for all its users together) and usage.
fn account_text(a: &pb::AccountLimits) -> String {
    let rows = [
        ("pending tasks", a.max_pending_tasks, a.pending_tasks),
        ("pending jobs", a.max_pending_jobs, a.pending_jobs),
        ("running tasks", a.max_running_tasks, a.running_tasks),
        ("running cpus", a.max_running_cpus, a.running_cpus),
        ("running gpus", a.max_running_gpus, a.running_gpus),
    ];
    format!("\naccount {} (all its users)\n{}", a.name, rows_text(&rows))
}

/// One line per (what, limit, in use).
fn rows_text(rows: &[(&str, Option<u64>, u64)]) -> String {
    rows.iter()
        .map(|(what, max, used)| format!("{what:<16}{:>12}{used:>12}\n", limit(*max)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_usage_side_by_side() {
        let r = pb::LimitsResponse {
            user: "alice".into(),
            max_running_tasks: Some(4),
            running_tasks: 3,
            submit_rate: Some(50),
            queue_max_pending_tasks: 10_000_000,
            queue_pending_tasks: 12,
            ..Default::default()
        };
        let t = text(&r);
        assert!(t.contains("running tasks              4           3"), "{t}");
        assert!(t.contains("pending tasks      unlimited           0"), "{t}");
        assert!(t.contains("submit rate     50 jobs/s (burst 50)"), "{t}");
    }
}
