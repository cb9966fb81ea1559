//! `rudel requeue [--hold] ID...`: put finished or running jobs (or one array task,
//! `41_3`) back to pending; they run again under their job id as a higher attempt
//! (`SLURM_RESTART_COUNT`). Running ones are killed first.
use clap::Args;
use rudel_proto::v1 as pb;

use crate::show::parse_job_ref;
use crate::{client, CmdResult, Failure};

#[derive(Args, Debug)]
pub struct RequeueArgs {
    /// Jobs (`41`), array tasks (`41_3`, or a task's own job id).
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Hold them as well: they wait for `rudel release` (`scontrol requeuehold`).
    #[arg(long)]
    pub hold: bool,
    #[arg(long)]
    pub json: bool,
}

/// `ID` / `ID_INDEX` arguments as the Requeue call's references.
pub fn refs(ids: &[String]) -> Result<Vec<pb::RequeueRef>, Failure> {
    ids.iter()
        .map(|s| {
            let (job_id, index) = parse_job_ref(s)?;
            Ok(pb::RequeueRef { job_id, index })
        })
        .collect()
}

/// `rudel requeue`. Exit 0 when every job named was requeued; 1 when some could not be
/// (`--no-requeue`, nothing to requeue, no longer in the queue); 2 for a bad id.
pub async fn requeue(a: RequeueArgs, head: &str) -> CmdResult {
    let jobs = refs(&a.ids)?;
    let r = call(head, pb::RequeueRequest { jobs, hold: a.hold })
        .await?
        .into_inner();
    Ok(crate::hold_cmd::report(&r, "Requeued", a.json, &[]))
}

/// One Requeue call on the leader, not repeated: a retry after a requeue that went
/// through (its answer lost) would kill the rerun it started.
pub async fn call(head: &str, req: pb::RequeueRequest) -> Result<tonic::Response<pb::ChangeResponse>, Failure> {
    let mut c = client::connect(head).await?;
    c.requeue(req).await.map_err(client::failure)
}
