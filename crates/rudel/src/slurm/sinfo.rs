//! `sinfo`: partitions and nodes in Slurm's formats; nodes grouped by state per
//! partition, node lists compressed (`node[1-3,5]`).
use std::collections::BTreeMap;

use clap::Parser;
use rudel_proto::v1 as pb;
use serde_json::{json, Value};

use super::format::{self, Item};
use super::{SlurmError, SlurmResult};
use crate::client;

#[derive(Parser, Debug)]
#[command(name = "sinfo", disable_help_flag = true, version)]
struct Args {
    #[arg(short = 'h', long = "noheader")]
    noheader: bool,
    #[arg(long)]
    help: bool,
    /// Output format, `%[.][width]X` fields.
    #[arg(short = 'o', long = "format")]
    format: Option<String>,
    /// One line per node.
    #[arg(short = 'N', long = "Node")]
    node: bool,
    /// Only these partitions (comma-separated).
    #[arg(short = 'p', long = "partition")]
    partitions: Option<String>,
    /// Long format.
    #[arg(short = 'l', long)]
    long: bool,
    #[arg(long)]
    json: bool,
}

const DEFAULT_FORMAT: &str = "%9P %.5a %.10l %.6D %.6t %N";
const LONG_FORMAT: &str = "%9P %.5a %.10l %.10s %.4r %.8h %.10g %.6D %.11T %N";
const NODE_FORMAT: &str = "%9N %.6D %.9P %-6t";
const NODE_LONG_FORMAT: &str = "%9N %.6D %.9P %.11T %.4c %.8z %.6m %.8d %.6w %.8f %20E";

/// Slurm's node state, long and compact, from rudel's.
pub fn node_state(s: &str) -> (&'static str, &'static str) {
    match s {
        "idle" => ("idle", "idle"),
        "mixed" => ("mixed", "mix"),
        "allocated" => ("allocated", "alloc"),
        "draining" => ("draining", "drng"),
        "drained" => ("drained", "drain"),
        "down" => ("down", "down"),
        "unreachable" => ("down*", "down*"),
        _ => ("unknown", "unk"),
    }
}

/// A partition's nodes in one state (one line of the default output), or one node (-N).
struct Group<'a> {
    part: &'a pb::PartitionInfo,
    nodes: Vec<&'a pb::NodeInfo>,
}

impl Group<'_> {
    fn field(&self, key: &str) -> Option<String> {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        let state = self.nodes.first().map_or(("n/a", "n/a"), |n| node_state(&n.state));
        let sum = |f: fn(&pb::NodeInfo) -> u64| self.nodes.iter().map(|n| f(n)).sum::<u64>();
        let cpus: Vec<u32> = self.nodes.iter().map(|n| n.cpus).collect();
        Some(match key {
            "P" | "R" => {
                let star = if self.part.is_default && key == "P" { "*" } else { "" };
                format!("{}{star}", self.part.name)
            }
            "a" => self.part.state.clone(),
            "l" => match self.part.max_time_ms {
                0 => "infinite".into(),
                ms => format::elapsed(ms.div_ceil(1000)),
            },
            "L" => match self.part.default_time_ms {
                0 => "n/a".into(),
                ms => format::elapsed(ms.div_ceil(1000)),
            },
            "D" => self.nodes.len().to_string(),
            "t" => state.1.into(),
            "T" => state.0.into(),
            "N" | "n" => rudel_core::hostlist::compress(&names),
            "c" => match (cpus.iter().min(), cpus.iter().max()) {
                (Some(a), Some(b)) if a != b => format!("{a}+"),
                (Some(a), _) => a.to_string(),
                _ => "0".into(),
            },
            "m" => ((sum(|n| n.mem_bytes) / self.nodes.len().max(1) as u64) >> 20).to_string(),
            "e" => (sum(|n| n.mem_bytes.saturating_sub(n.mem_used)) >> 20).to_string(),
            "C" => {
                let total = sum(|n| u64::from(n.cpus));
                let alloc = sum(|n| u64::from(n.cpus_used));
                let other: u64 = self
                    .nodes
                    .iter()
                    .filter(|n| !matches!(n.state.as_str(), "idle" | "mixed" | "allocated"))
                    .map(|n| u64::from(n.cpus - n.cpus_used.min(n.cpus)))
                    .sum();
                format!("{alloc}/{}/{other}/{total}", total - alloc - other)
            }
            "O" => "N/A".into(),
            "G" => {
                let mut g: Vec<String> = self
                    .nodes
                    .iter()
                    .flat_map(|n| {
                        n.gres
                            .iter()
                            .map(|(k, v)| format!("{k}:{}", v.split('/').nth(1).unwrap_or(v)))
                    })
                    .collect();
                g.sort();
                g.dedup();
                if g.is_empty() {
                    "(null)".into()
                } else {
                    g.join(",")
                }
            }
            "E" => self
                .nodes
                .first()
                .map_or("none", |n| if n.reason.is_empty() { "none" } else { &n.reason })
                .into(),
            "s" => "1-infinite".into(),
            "r" => "no".into(),
            "h" => "NO".into(),
            "g" => "all".into(),
            "z" => "1:1:1".into(),
            "d" => "0".into(),
            "w" => "1".into(),
            "f" => "(null)".into(),
            _ => return None,
        })
    }
}

fn header(key: &str) -> Option<String> {
    Some(
        match key {
            "P" | "R" => "PARTITION",
            "a" => "AVAIL",
            "l" => "TIMELIMIT",
            "L" => "DEFAULTTIME",
            "D" => "NODES",
            "t" | "T" => "STATE",
            "N" => "NODELIST",
            "n" => "HOSTNAMES",
            "c" => "CPUS",
            "m" => "MEMORY",
            "e" => "FREE_MEM",
            "C" => "CPUS(A/I/O/T)",
            "O" => "CPU_LOAD",
            "G" => "GRES",
            "E" => "REASON",
            "s" => "JOB_SIZE",
            "r" => "ROOT",
            "h" => "OVERSUBS",
            "g" => "GROUPS",
            "z" => "S:C:T",
            "d" => "TMP_DISK",
            "w" => "WEIGHT",
            "f" => "AVAIL_FEATURES",
            _ => return None,
        }
        .to_string(),
    )
}

/// The lines: per partition, its nodes grouped by state (one node per line with -N).
fn groups<'a>(parts: &'a [pb::PartitionInfo], nodes: &'a [pb::NodeInfo], per_node: bool) -> Vec<Group<'a>> {
    let by_name: BTreeMap<&str, &pb::NodeInfo> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut out = Vec::new();
    for p in parts {
        let members: Vec<&pb::NodeInfo> = p
            .nodes
            .iter()
            .filter_map(|n| by_name.get(n.as_str()).copied())
            .collect();
        if per_node {
            out.extend(members.into_iter().map(|n| Group {
                part: p,
                nodes: vec![n],
            }));
            continue;
        }
        let mut by_state: BTreeMap<&str, Vec<&pb::NodeInfo>> = BTreeMap::new();
        for n in members {
            by_state.entry(node_state(&n.state).1).or_default().push(n);
        }
        if by_state.is_empty() {
            out.push(Group {
                part: p,
                nodes: Vec::new(),
            });
        }
        out.extend(by_state.into_values().map(|nodes| Group { part: p, nodes }));
    }
    out
}

/// Slurm's `sinfo --json` shape (nodes, with the fields rudel has).
fn json_out(parts: &[pb::PartitionInfo], nodes: &[pb::NodeInfo]) -> Value {
    let v: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let mut gres: Vec<String> = n.gres.iter().map(|(k, v)| format!("{k}:{}", v.split('/').nth(1).unwrap_or(v))).collect();
            gres.sort();
            json!({
                "name": n.name,
                "hostname": n.name,
                "address": n.address,
                "state": node_state(&n.state).0,
                "cpus": n.cpus,
                "alloc_cpus": n.cpus_used,
                "real_memory": n.mem_bytes >> 20,
                "alloc_memory": n.mem_used >> 20,
                "free_memory": n.mem_bytes.saturating_sub(n.mem_used) >> 20,
                "architecture": n.arch,
                "operating_system": n.os,
                "slurmd_version": n.version,
                "gres": gres.join(","),
                "reason": n.reason,
                "partitions": parts.iter().filter(|p| p.nodes.contains(&n.name)).map(|p| p.name.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"meta": {"plugin": {"type": "rudel"}}, "errors": [], "nodes": v})
}

/// Partitions and nodes from the head.
pub async fn load(head: &str) -> Result<(Vec<pb::PartitionInfo>, Vec<pb::NodeInfo>), SlurmError> {
    let mut c = client::connect(head).await?;
    let parts = c
        .list_partitions(pb::ListPartitionsRequest {})
        .await
        .map_err(client::failure)?
        .into_inner()
        .partitions;
    let nodes = c
        .list_nodes(pb::ListNodesRequest { stale: false })
        .await
        .map_err(client::failure)?
        .into_inner()
        .nodes;
    Ok((parts, nodes))
}

/// `sinfo`.
pub async fn sinfo(args: Vec<String>, head: &str) -> SlurmResult {
    let a: Args = super::parse("sinfo", args)?;
    if a.help {
        println!("Usage: sinfo [-h] [-N] [-l] [-o FORMAT] [-p PARTITIONS] [--json]");
        return Ok(0);
    }
    let (mut parts, nodes) = load(head).await?;
    if let Some(want) = &a.partitions {
        let want: Vec<&str> = want.split(',').map(str::trim).collect();
        parts.retain(|p| want.contains(&p.name.as_str()));
    }
    if a.json {
        println!("{}", json_out(&parts, &nodes));
        return Ok(0);
    }
    let fmt = a
        .format
        .clone()
        .or_else(|| std::env::var("SINFO_FORMAT").ok())
        .unwrap_or_else(|| {
            match (a.node, a.long) {
                (false, false) => DEFAULT_FORMAT,
                (false, true) => LONG_FORMAT,
                (true, false) => NODE_FORMAT,
                (true, true) => NODE_LONG_FORMAT,
            }
            .into()
        });
    let items: Vec<Item> = format::parse_percent(&fmt).map_err(SlurmError::msg)?;
    let mut out = String::new();
    if a.long {
        out.push_str(&format!("{}\n", super::squeue::date_line()));
    }
    if !a.noheader {
        out.push_str(&format::render(&items, header).map_err(|e| SlurmError::msg(e.replace("job", "node")))?);
        out.push('\n');
    }
    for g in groups(&parts, &nodes, a.node) {
        out.push_str(&format::render(&items, |k| g.field(k)).map_err(SlurmError::msg)?);
        out.push('\n');
    }
    print!("{out}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, state: &str, used: u32) -> pb::NodeInfo {
        pb::NodeInfo {
            name: name.into(),
            state: state.into(),
            cpus: 2,
            cpus_used: used,
            mem_bytes: 21694 << 20,
            ..Default::default()
        }
    }

    fn part(name: &str, default: bool, nodes: &[&str]) -> pb::PartitionInfo {
        pb::PartitionInfo {
            name: name.into(),
            state: "up".into(),
            is_default: default,
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn lines(parts: &[pb::PartitionInfo], nodes: &[pb::NodeInfo], per_node: bool, fmt: &str) -> Vec<String> {
        let items = format::parse_percent(fmt).unwrap();
        let mut out = vec![format::render(&items, header).unwrap()];
        out.extend(
            groups(parts, nodes, per_node)
                .iter()
                .map(|g| format::render(&items, |k| g.field(k)).unwrap()),
        );
        out
    }

    #[test]
    fn default_output_as_slurms() {
        // Recorded from Slurm 22.05 (one node `vm`, both CPUs allocated).
        let nodes = [node("vm", "allocated", 2)];
        let parts = [part("batch", true, &["vm"]), part("short", false, &["vm"])];
        assert_eq!(
            lines(&parts, &nodes, false, DEFAULT_FORMAT),
            [
                "PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST",
                "batch*       up   infinite      1  alloc vm",
                "short        up   infinite      1  alloc vm",
            ]
        );
        assert_eq!(
            lines(&parts, &nodes, true, NODE_FORMAT),
            [
                "NODELIST   NODES PARTITION STATE ",
                "vm             1    batch* alloc ",
                "vm             1     short alloc "
            ]
        );
    }

    #[test]
    fn nodes_are_grouped_by_state_and_compressed() {
        let nodes = [
            node("n1", "idle", 0),
            node("n2", "idle", 0),
            node("n3", "mixed", 1),
            node("n5", "idle", 0),
        ];
        let parts = [part("batch", true, &["n1", "n2", "n3", "n5"])];
        assert_eq!(
            lines(&parts, &nodes, false, "%P %D %t %N %C"),
            [
                "PARTITION NODES STATE NODELIST CPUS(A/I/O/T)",
                "batch* 3 idle n[1-2,5] 0/6/0/6",
                "batch* 1 mix n3 1/1/0/2"
            ]
        );
    }
}
