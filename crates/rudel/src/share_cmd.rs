//! `rudel share [--user U]... [--json]` (and Slurm's `sshare`): every user's fair-share
//! standing: shares, normalized shares, decayed usage, effective usage and the fair-share
//! factor the `multifactor` order uses.
use clap::Args;
use rudel_proto::v1 as pb;
use serde_json::json;

use crate::{client, CmdResult};

#[derive(Args, Debug)]
pub struct ShareArgs {
    /// Only these users (repeatable; default: every user with usage or shares).
    #[arg(long)]
    pub user: Vec<String>,
    /// Print JSON (the API's field names).
    #[arg(long)]
    pub json: bool,
    /// Answer from this head's copy without checking it is current.
    #[arg(long)]
    pub stale: bool,
}

/// Asks the head for the rows of `users` (empty: all).
pub async fn fetch(head: &str, users: Vec<String>, stale: bool) -> anyhow::Result<pb::ShareResponse> {
    let mut c = client::connect_for(head, stale).await?;
    let r = c
        .share(pb::ShareRequest { users, stale })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    Ok(r.into_inner())
}

pub async fn share(a: ShareArgs, head: &str) -> CmdResult {
    let mut c = client::connect_for(head, a.stale).await?;
    let r = c
        .share(pb::ShareRequest {
            users: a.user,
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

fn to_json(r: &pb::ShareResponse) -> serde_json::Value {
    let rows: Vec<_> = r
        .rows
        .iter()
        .map(|u| {
            json!({
                "user": u.user,
                "raw_shares": u.raw_shares,
                "norm_shares": u.norm_shares,
                "raw_usage": u.raw_usage,
                "effective_usage": u.effective_usage,
                "fairshare": u.fairshare,
                "running_cpus": u.running_cpus,
            })
        })
        .collect();
    json!({
        "enabled": r.enabled,
        "version": r.version,
        "order": r.order,
        "half_life_s": r.half_life_s,
        "users": rows,
    })
}

/// Why there is nothing to show, when usage is not recorded.
pub fn disabled_note(r: &pb::ShareResponse) -> Option<String> {
    (!r.enabled).then(|| {
        format!(
            "fair-share usage is recorded from scheduling version 4 on; this cluster runs version {} \
             (an admin sets `rudel admin config set version=4` once every head runs a build that has it)",
            r.version
        )
    })
}

fn text(r: &pb::ShareResponse) -> String {
    let mut out = String::new();
    if let Some(n) = disabled_note(r) {
        out.push_str(&n);
        out.push('\n');
        return out;
    }
    out.push_str(&format!(
        "order {}, usage half-life {} s\n{:<16}{:>10}{:>12}{:>16}{:>14}{:>12}{:>10}\n",
        r.order, r.half_life_s, "USER", "SHARES", "NORMSHARES", "USAGE(cpu-s)", "EFFECTVUSAGE", "FAIRSHARE", "RUNNING"
    ));
    for u in &r.rows {
        out.push_str(&format!(
            "{:<16}{:>10}{:>12.6}{:>16.1}{:>14.6}{:>12.6}{:>10}\n",
            u.user, u.raw_shares, u.norm_shares, u.raw_usage, u.effective_usage, u.fairshare, u.running_cpus
        ));
    }
    if r.rows.is_empty() {
        out.push_str("(no usage recorded yet and no shares configured)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_print_under_their_headers_and_a_disabled_cluster_says_why() {
        let mut r = pb::ShareResponse {
            rows: vec![pb::ShareRow {
                user: "alice".into(),
                raw_shares: 2,
                norm_shares: 0.5,
                raw_usage: 1234.5,
                effective_usage: 0.75,
                fairshare: 0.353553,
                running_cpus: 3,
            }],
            enabled: true,
            version: 3,
            order: "multifactor".into(),
            half_life_s: 604_800,
        };
        let t = text(&r);
        assert!(
            t.contains("FAIRSHARE") && t.contains("alice") && t.contains("0.353553"),
            "{t}"
        );
        r.enabled = false;
        r.version = 2;
        assert!(text(&r).contains("version=4"), "{}", text(&r));
    }
}
