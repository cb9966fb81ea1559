//! `rudel explain ID`: why a job waits, node by node (which nodes could run it and what
//! each lacks now, which job the free nodes are kept for, the job's place in the queue).
use std::collections::BTreeMap;

use clap::Args;
use rudel_proto::v1 as pb;
use serde_json::json;

use crate::{client, CmdResult};

/// Nodes listed per verdict before the rest are counted: a 10,000-node cluster must not
/// print 10,000 lines to say "busy".
const SHOWN_PER_VERDICT: usize = 8;

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// Job id; an array task by its own job id or as ARRAY_INDEX (`41_3`: the array is explained).
    pub id: String,
    /// Print every node, and JSON (the API's field names).
    #[arg(long)]
    pub json: bool,
    /// Answer from this head's copy without checking it is current.
    #[arg(long)]
    pub stale: bool,
}

pub async fn explain(a: ExplainArgs, head: &str) -> CmdResult {
    let (id, _) = crate::show::parse_job_ref(&a.id)?;
    let mut c = client::connect_for(head, a.stale).await?;
    let r = c
        .explain(pb::ExplainRequest {
            job_id: id,
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

fn to_json(r: &pb::ExplainResponse) -> serde_json::Value {
    let nodes: Vec<_> = r
        .nodes
        .iter()
        .map(|n| json!({"node": n.node, "verdict": n.verdict, "detail": n.detail}))
        .collect();
    json!({
        "job_id": r.job_id,
        "state": r.state,
        "reason": r.reason,
        "needs": r.needs,
        "queue_position": r.queue_position,
        "reserved_for": r.reserved_for,
        "nodes": nodes,
        "priority": r.priority,
        "reserved_start_ms": if r.reserved_start_ms > 0 { json!(r.reserved_start_ms) } else { serde_json::Value::Null },
        "backfill": r.backfill,
    })
}

/// What each verdict means, in the words the text output uses.
fn verdict_title(v: &str) -> &str {
    match v {
        "fits_now" => "would fit now",
        "busy" => "could run it, resources in use now",
        "reserved" => "free, but kept for the job ahead",
        "not_accepting" => "down or drained",
        "other_partition" => "not in its partitions",
        "constraint" => "do not match its constraint",
        "excluded" => "excluded by the job",
        "too_small" => "too small for one task, ever",
        other => other,
    }
}

fn text(r: &pb::ExplainResponse) -> String {
    let mut out = format!("job {}: {}\n", r.job_id, r.state);
    if r.reason.is_empty() {
        out.push_str("nothing of it waits\n");
        return out;
    }
    out.push_str(&format!("reason:   {}\n", r.reason));
    out.push_str(&format!("needs:    {}\n", r.needs));
    if r.queue_position > 0 {
        out.push_str(&format!("queue:    {} in the queue order\n", ordinal(r.queue_position)));
    }
    if !r.priority.is_empty() {
        out.push_str(&format!("priority: {}\n", r.priority));
    }
    out.push_str(&reservation_text(r));
    let mut groups: BTreeMap<usize, (&str, Vec<&pb::NodeVerdict>)> = BTreeMap::new();
    for n in &r.nodes {
        // The head sends nodes best verdict first: keep that order for the groups.
        let next = groups.len();
        let slot = groups
            .iter()
            .find(|(_, (v, _))| *v == n.verdict)
            .map(|(k, _)| *k)
            .unwrap_or(next);
        groups.entry(slot).or_insert((n.verdict.as_str(), Vec::new())).1.push(n);
    }
    if groups.is_empty() {
        out.push_str("nodes:    none registered\n");
    }
    for (verdict, nodes) in groups.values() {
        out.push_str(&format!("{} node(s) {}:\n", nodes.len(), verdict_title(verdict)));
        for n in nodes.iter().take(SHOWN_PER_VERDICT) {
            out.push_str(&format!("  {:<16} {}\n", n.node, n.detail));
        }
        if nodes.len() > SHOWN_PER_VERDICT {
            out.push_str(&format!(
                "  ... and {} more (--json lists all)\n",
                nodes.len() - SHOWN_PER_VERDICT
            ));
        }
    }
    out
}

/// The reservation this job waits behind (or holds), and under backfill whether it may
/// start before it.
fn reservation_text(r: &pb::ExplainResponse) -> String {
    let mut out = String::new();
    let start = if r.reserved_start_ms > 0 {
        format!(", expected start {}", crate::show::timestamp(r.reserved_start_ms))
    } else {
        String::new()
    };
    if r.reserved_for > 0 && r.backfill.is_empty() {
        out.push_str(&format!(
            "reserved: nodes it could use are kept for job {} (first in the queue that fits nowhere)\n",
            r.reserved_for
        ));
    } else if r.reserved_for > 0 {
        out.push_str(&format!("reserved: for job {}{start}\n", r.reserved_for));
    } else if !r.backfill.is_empty() && !start.is_empty() {
        out.push_str(&format!("reserved: for this job{start}\n"));
    }
    if !r.backfill.is_empty() {
        out.push_str(&format!("backfill: {}\n", r.backfill));
    }
    out
}

fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(node: &str, verdict: &str, detail: &str) -> pb::NodeVerdict {
        pb::NodeVerdict {
            node: node.into(),
            verdict: verdict.into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn nodes_are_grouped_by_verdict_in_the_heads_order() {
        let r = pb::ExplainResponse {
            job_id: 7,
            state: "pending".into(),
            reason: "Resources: waiting for free cpus/memory".into(),
            needs: "4 cpus per task".into(),
            queue_position: 2,
            reserved_for: 0,
            nodes: vec![
                verdict("a", "busy", "0 of 4 cpus"),
                verdict("b", "busy", "1 of 4 cpus"),
                verdict("c", "too_small", "has 2 cpus"),
            ],
            priority: "10500 (queued at 10500)".into(),
            reserved_start_ms: 0,
            backfill: String::new(),
        };
        let t = text(&r);
        assert!(t.contains("queue:    2nd in the queue order"), "{t}");
        assert!(t.contains("priority: 10500 (queued at 10500)"), "{t}");
        let busy = t.find("2 node(s) could run it").unwrap();
        let small = t.find("1 node(s) too small").unwrap();
        assert!(busy < small, "{t}");
    }

    #[test]
    fn ordinals() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 102].into_iter().map(ordinal).collect();
        assert_eq!(
            got,
            ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "102nd"]
        );
    }
}
