//! `rudel hold`, `rudel release` and `rudel update`: keep pending jobs from starting, let
//! them go, change them before they start.
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

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Job ids (whole jobs and arrays) that have not started.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// New priority (higher runs first; re-sorts the queue).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub priority: Option<i32>,
    /// New time limit per task: 90s, 10m, 2h, 1-00:00:00, 30 (minutes); 0 = unlimited.
    #[arg(short = 't', long, value_name = "DURATION")]
    pub time: Option<String>,
    /// New job name.
    #[arg(short = 'J', long, value_name = "NAME")]
    pub name: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// Whole-job ids from `ID` arguments; `ID_INDEX` is refused (one array task cannot be
/// changed apart from its array yet).
fn whole_jobs(ids: &[String], verb: &str) -> Result<Vec<u64>, Failure> {
    let mut job_ids = Vec::with_capacity(ids.len());
    for s in ids {
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
    Ok(job_ids)
}

/// Prints what changed and what did not; exit 1 when some job could not be changed
/// (`ok_why`: reasons that are not failures, e.g. already held).
pub(crate) fn report(r: &pb::ChangeResponse, done: &str, json: bool, ok_why: &[&str]) -> u8 {
    if json {
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
    let failed = r.skipped.iter().any(|s| !ok_why.iter().any(|w| s.why.starts_with(w)));
    u8::from(failed)
}

/// `rudel update`.
pub async fn update(a: UpdateArgs, head: &str) -> CmdResult {
    let job_ids = whole_jobs(&a.ids, "update")?;
    let time_limit_ms = match &a.time {
        Some(t) => Some(rudel_core::parse::parse_duration(t).map_err(|e| Failure::usage(anyhow!("--time: {e}")))?),
        None => None,
    };
    if a.priority.is_none() && time_limit_ms.is_none() && a.name.is_none() {
        return Err(Failure::usage(anyhow!(
            "nothing to change: give --priority, --time or --name"
        )));
    }
    // Setting the same values twice changes nothing, so the call may be repeated.
    let r = client::on_leader(head, |mut c| {
        let req = pb::UpdateRequest {
            job_ids: job_ids.clone(),
            priority: a.priority,
            time_limit_ms,
            name: a.name.clone(),
        };
        async move { c.update(req).await }
    })
    .await?
    .into_inner();
    Ok(report(&r, "Updated", a.json, &[]))
}

/// `rudel hold` (`release` false) or `rudel release` (true). Exit 0 when every job named
/// changed or already was as asked; 1 when some could not be (nothing pending); 2 for a
/// bad id.
pub async fn hold(a: HoldArgs, head: &str, release: bool) -> CmdResult {
    let verb = if release { "release" } else { "hold" };
    let job_ids = whole_jobs(&a.ids, verb)?;
    // Holding or releasing twice changes nothing, so the call may be repeated if
    // leadership moved.
    let r = client::on_leader(head, |mut c| {
        let ids = job_ids.clone();
        async move { c.hold(pb::HoldRequest { job_ids: ids, release }).await }
    })
    .await?
    .into_inner();
    let done = if release { "Released" } else { "Held" };
    // Already in the asked state is not a failure (as `scontrol hold` twice).
    Ok(report(&r, done, a.json, &["already held", "not held"]))
}
