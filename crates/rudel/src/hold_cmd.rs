//! `rudel hold` and `rudel release`: keep pending jobs from starting, and let them go.
use anyhow::anyhow;
use clap::Args;
use rudel_proto::v1 as pb;
use serde_json::json;

use crate::show::parse_job_ref;
use crate::{client, CmdResult, Failure};

#[derive(Args, Debug)]
pub struct HoldArgs {
    /// Job ids (whole jobs and arrays).
    #[arg(required = true)]
    pub ids: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

/// `rudel hold` (`release` false) or `rudel release` (true). Exit 0 when every job named
/// changed or already was as asked; 1 when some could not be (nothing pending); 2 for a
/// bad id.
pub async fn hold(a: HoldArgs, head: &str, release: bool) -> CmdResult {
    let verb = if release { "release" } else { "hold" };
    let mut job_ids = Vec::with_capacity(a.ids.len());
    for s in &a.ids {
        match parse_job_ref(s)? {
            (id, None) => job_ids.push(id),
            (id, Some(index)) => {
                return Err(Failure::usage(anyhow!(
                    "to {verb} one array task ({id}_{index}) is not supported yet; `rudel {verb} {id}` acts on \
                     the whole array (nothing was changed)"
                )))
            }
        }
    }
    // Holding or releasing twice changes nothing, so the call may be repeated if
    // leadership moved.
    let r = client::on_leader(head, |mut c| {
        let ids = job_ids.clone();
        async move { c.hold(pb::HoldRequest { job_ids: ids, release }).await }
    })
    .await?
    .into_inner();
    let done = if release { "Released" } else { "Held" };
    if a.json {
        let skipped: Vec<_> = r.skipped.iter().map(|s| json!({"id": s.id, "why": s.why})).collect();
        println!("{}", json!({"changed": r.changed, "skipped": skipped}));
    } else {
        for id in &r.changed {
            println!("{done} job {id}");
        }
        for s in &r.skipped {
            eprintln!("rudel: job {} not {}: {}", s.id, done.to_lowercase(), s.why);
        }
    }
    // Already in the asked state is not a failure (as `scontrol hold` twice).
    let failed = r
        .skipped
        .iter()
        .any(|s| !s.why.starts_with("already held") && !s.why.starts_with("not held"));
    Ok(if failed { 1 } else { 0 })
}
