//! `rudel partitions`: the partitions (queues), their nodes, limits and load.
use clap::Args;
use rudel_core::parse::{format_duration, format_size};
use rudel_proto::v1 as pb;
use serde_json::json;

use crate::{client, CmdResult};

#[derive(Args, Debug)]
pub struct PartitionsArgs {
    /// Print JSON (one object per partition).
    #[arg(long)]
    pub json: bool,
}

pub async fn partitions(a: PartitionsArgs, head: &str) -> CmdResult {
    let mut c = client::connect(head).await?;
    let r = c
        .list_partitions(pb::ListPartitionsRequest {})
        .await
        .map_err(client::failure)?
        .into_inner();
    if a.json {
        let v: Vec<serde_json::Value> = r.partitions.iter().map(to_json).collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(0);
    }
    println!(
        "{:<16} {:<6} {:>4} {:>9} {:>6} {:>7} {:>11} {:>11} {:>10}  NODES",
        "PARTITION", "STATE", "TIER", "CPUS", "JOBS", "PENDING", "DEFAULTTIME", "MAXTIME", "MEM/CPU"
    );
    for p in &r.partitions {
        let time = |ms: u64| if ms == 0 { "-".to_string() } else { format_duration(ms) };
        println!(
            "{:<16} {:<6} {:>4} {:>9} {:>6} {:>7} {:>11} {:>11} {:>10}  {}",
            format!("{}{}", p.name, if p.is_default { "*" } else { "" }),
            p.state,
            p.tier,
            format!("{}/{}", p.cpus_used, p.cpus),
            p.running_jobs,
            p.pending_jobs,
            time(p.default_time_ms),
            time(p.max_time_ms),
            if p.default_mem_per_cpu == 0 {
                "-".to_string()
            } else {
                format_size(p.default_mem_per_cpu)
            },
            if p.nodes.is_empty() {
                format!("(none; nodes={})", p.node_expr)
            } else {
                p.nodes.join(",")
            }
        );
    }
    Ok(0)
}

fn to_json(p: &pb::PartitionInfo) -> serde_json::Value {
    json!({
        "name": p.name, "state": p.state, "default": p.is_default, "tier": p.tier,
        "node_expr": p.node_expr, "nodes": p.nodes, "cpus": p.cpus, "cpus_used": p.cpus_used,
        "default_time_ms": p.default_time_ms, "max_time_ms": p.max_time_ms,
        "default_mem_per_cpu": p.default_mem_per_cpu,
        "running_jobs": p.running_jobs, "pending_jobs": p.pending_jobs,
    })
}
