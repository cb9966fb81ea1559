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

/// Expands `a,b[1-3,7],c` into names.
pub fn expand_hostlist(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, ch) in s.char_indices() {
        match ch {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1).ok_or_else(|| format!("unbalanced ']' in {s:?}"))?,
            ',' if depth == 0 => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '[' in {s:?}"));
    }
    items.push(&s[start..]);
    for item in items.into_iter().map(str::trim).filter(|i| !i.is_empty()) {
        match (item.find('['), item.ends_with(']')) {
            (Some(open), true) => {
                let prefix = &item[..open];
                for part in item[open + 1..item.len() - 1].split(',') {
                    let (a, b) = part.split_once('-').unwrap_or((part, part));
                    let width = a.len();
                    let (x, y): (u64, u64) = match (a.parse(), b.parse()) {
                        (Ok(x), Ok(y)) if x <= y && y - x < 100_000 => (x, y),
                        _ => return Err(format!("bad range {part:?} in {item:?}")),
                    };
                    out.extend((x..=y).map(|n| format!("{prefix}{n:0width$}")));
                }
            }
            (None, _) => out.push(item.to_string()),
            _ => return Err(format!("bad node list item {item:?}")),
        }
    }
    Ok(out)
}

/// Compresses names into `prefix[1-3,5]` groups (the inverse of `expand_hostlist`).
pub fn compress_hostlist(names: &[String]) -> String {
    let mut groups: BTreeMap<(String, usize), Vec<u64>> = BTreeMap::new();
    let mut plain = Vec::new();
    for n in names {
        let digits = n.chars().rev().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits == n.len() {
            plain.push(n.clone());
            continue;
        }
        let (prefix, num) = n.split_at(n.len() - digits);
        let width = if num.starts_with('0') && num.len() > 1 {
            num.len()
        } else {
            0
        };
        match num.parse::<u64>() {
            Ok(v) => groups.entry((prefix.to_string(), width)).or_default().push(v),
            Err(_) => plain.push(n.clone()),
        }
    }
    let mut parts = plain;
    for ((prefix, width), mut nums) in groups {
        nums.sort_unstable();
        nums.dedup();
        if nums.len() == 1 {
            parts.push(format!("{prefix}{:0width$}", nums[0]));
            continue;
        }
        let mut ranges = Vec::new();
        let mut i = 0;
        while i < nums.len() {
            let mut j = i;
            while j + 1 < nums.len() && nums[j + 1] == nums[j] + 1 {
                j += 1;
            }
            ranges.push(if i == j {
                format!("{:0width$}", nums[i])
            } else {
                format!("{:0width$}-{:0width$}", nums[i], nums[j])
            });
            i = j + 1;
        }
        parts.push(format!("{prefix}[{}]", ranges.join(",")));
    }
    parts.join(",")
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
        Some(list) => expand_hostlist(list).map_err(|e| Failure::usage(anyhow!("--nodes: {e}")))?,
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
            println!("{} ({}): {st}", compress_hostlist(names), names.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostlists_expand_and_compress() {
        let names = expand_hostlist("n[1-3,7],login,gpu[01-02]").unwrap();
        assert_eq!(names, ["n1", "n2", "n3", "n7", "login", "gpu01", "gpu02"]);
        assert_eq!(compress_hostlist(&names), "login,gpu[01-02],n[1-3,7]");
        assert_eq!(compress_hostlist(&["a".to_string()]), "a");
        for bad in ["n[1-", "n]", "n[3-1]", "n[x]"] {
            assert!(expand_hostlist(bad).is_err(), "{bad}");
        }
    }
}
