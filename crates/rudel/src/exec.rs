//! `rudel exec`: run a command on many nodes at once through their agents and print the
//! outputs grouped by identical result, like a parallel shell (C3, pdsh, clush).
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use rudel_proto::v1 as pb;

use crate::{client, CmdResult, Failure};

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Every node that is up.
    #[arg(long, conflicts_with = "nodes")]
    pub all: bool,
    /// Node names: `n1,n2`, ranges `node[1-3,7]`.
    #[arg(short = 'w', long, value_name = "LIST")]
    pub nodes: Option<String>,
    /// Only nodes matching this expression (labels, `cpus`, `mem`, ...).
    #[arg(short = 'C', long, value_name = "EXPR")]
    pub constraint: Option<String>,
    /// Per-node time limit.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub timeout: String,
    /// Print one JSON object per node.
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments (after `--`).
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn status(r: &pb::ExecNodeResult) -> String {
    if !r.error.is_empty() && r.exit_code.is_none() && r.signal.is_none() {
        return if r.timed_out {
            format!("timed out: {}", r.error)
        } else {
            format!("error: {}", r.error)
        };
    }
    match (r.timed_out, r.exit_code, r.signal) {
        (true, _, _) => "timed out".into(),
        (_, _, Some(s)) => format!("killed by signal {s}"),
        (_, Some(c), None) => format!("exit {c}"),
        _ => "no status".into(),
    }
}

fn ok(r: &pb::ExecNodeResult) -> bool {
    !r.timed_out && r.error.is_empty() && r.exit_code == Some(0)
}

/// `rudel exec`.
pub async fn exec(a: ExecArgs, head: &str) -> CmdResult {
    let nodes = match &a.nodes {
        Some(list) => rudel_core::hostlist::expand(list).map_err(|e| Failure::usage(anyhow!("--nodes: {e}")))?,
        None => Vec::new(),
    };
    if !a.all && nodes.is_empty() && a.constraint.is_none() {
        return Err(Failure::usage(anyhow!(
            "choose nodes: --all, --nodes LIST or --constraint EXPR"
        )));
    }
    let ms = rudel_core::parse::parse_duration(&a.timeout).map_err(|e| Failure::usage(anyhow!("--timeout: {e}")))?;
    if ms == 0 {
        return Err(Failure::usage(anyhow!("--timeout must be more than 0")));
    }
    let limit = Duration::from_millis(ms);
    let mut c = client::connect_with_timeout(head, limit + Duration::from_secs(15)).await?;
    let req = pb::ExecRequest {
        argv: a.command.clone(),
        nodes,
        constraint: a.constraint.clone().unwrap_or_default(),
        timeout_ms: ms,
    };
    let resp = c.exec(req).await.map_err(client::failure)?.into_inner();
    if a.json {
        for r in &resp.results {
            let v = serde_json::json!({
                "node": r.node, "exit_code": r.exit_code, "signal": r.signal, "timed_out": r.timed_out,
                "error": r.error, "output": String::from_utf8_lossy(&r.output), "truncated": r.truncated,
            });
            println!("{v}");
        }
    } else {
        // Group nodes whose status and output are identical.
        let mut groups: BTreeMap<(String, Vec<u8>), Vec<String>> = BTreeMap::new();
        for r in &resp.results {
            groups
                .entry((status(r), r.output.clone()))
                .or_default()
                .push(r.node.clone());
        }
        for ((st, out), names) in &groups {
            println!("{} ({}): {st}", rudel_core::hostlist::compress(names), names.len());
            let text = String::from_utf8_lossy(out);
            for line in text.lines() {
                println!("    {line}");
            }
        }
    }
    let bad: Vec<String> = resp
        .results
        .iter()
        .filter(|r| !ok(r))
        .map(|r| format!("{} ({})", r.node, status(r)))
        .collect();
    if bad.is_empty() {
        Ok(0)
    } else {
        eprintln!(
            "rudel: failed on {} of {} nodes: {}",
            bad.len(),
            resp.results.len(),
            bad.join(", ")
        );
        Ok(1)
    }
}
