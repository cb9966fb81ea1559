//! `scancel`: cancel jobs by id or by filter (`-u`, `-t`, `-n`, `-p`), as Slurm's: ids of
//! jobs that are unknown or already finished are no error (exit 0), as in Slurm 22.05.
use clap::Parser;
use rudel_proto::v1 as pb;

use super::{format, SlurmError, SlurmResult};
use crate::client;
use crate::job_refs::{self, JobRef};

#[derive(Parser, Debug)]
#[command(name = "scancel", version)]
struct Args {
    /// Only jobs of this user.
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Only jobs in this state (PENDING, RUNNING; names or codes).
    #[arg(short = 't', long = "state")]
    state: Option<String>,
    /// Only jobs with this name.
    #[arg(short = 'n', long = "name", alias = "jobname")]
    name: Option<String>,
    /// Only jobs in this partition.
    #[arg(short = 'p', long = "partition")]
    partition: Option<String>,
    /// No messages about jobs that could not be cancelled.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Say what is done.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Only my jobs.
    #[arg(long)]
    me: bool,
    /// Job ids: ID, ID_INDEX, ID_[1-3] (an array task's own id cancels that task).
    ids: Vec<String>,
}

/// `scancel`.
pub async fn scancel(args: Vec<String>, head: &str) -> SlurmResult {
    let a: Args = super::parse("scancel", args)?;
    let mut refs = a
        .ids
        .iter()
        .flat_map(|s| job_refs::split_list(s))
        .map(|s| job_refs::parse(s).map_err(|_| SlurmError::msg(format!("Invalid job id {s}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let filtered = a.user.is_some() || a.state.is_some() || a.name.is_some() || a.partition.is_some() || a.me;
    if refs.is_empty() && !filtered {
        return Err(SlurmError::msg("No job identification provided"));
    }
    if filtered {
        let named: Vec<u64> = refs.iter().map(JobRef::job).collect();
        let selected = select(&a, &named, head).await?;
        if refs.is_empty() {
            refs = selected.iter().map(|&id| JobRef::Job(id)).collect();
        } else {
            refs.retain(|r| selected.contains(&r.job()));
        }
    }
    if refs.is_empty() {
        return Ok(0);
    }
    let req = job_refs::cancel_request(&refs);
    let r = client::on_leader(head, |mut c| {
        let req = req.clone();
        async move { c.cancel(req).await }
    })
    .await;
    match r {
        Ok(r) => {
            let r = r.into_inner();
            if a.verbose {
                for id in &r.cancelled {
                    eprintln!("scancel: Terminating job {id}");
                }
                for t in &r.cancelled_tasks {
                    eprintln!("scancel: Terminating job {}_{}", t.job_id, t.index);
                }
            }
            if !a.quiet && a.verbose {
                for id in &r.already_finished {
                    eprintln!(
                        "scancel: error: Kill job error on job id {id}: Job/step already completing or completed"
                    );
                }
            }
            Ok(0)
        }
        // One unknown id fails the whole call: cancel the others one by one, so that each
        // unknown one is named and the rest still go.
        Err(_) if refs.len() > 1 => one_by_one(&refs, a.quiet, head).await,
        Err(f) => report(&refs[0], f, a.quiet).map(|()| 0),
    }
}

async fn one_by_one(refs: &[JobRef], quiet: bool, head: &str) -> SlurmResult {
    let mut code = 0;
    for one in refs {
        let req = job_refs::cancel_request(std::slice::from_ref(one));
        let r = client::on_leader(head, |mut c| {
            let req = req.clone();
            async move { c.cancel(req).await }
        })
        .await;
        if let Err(f) = r {
            if let Err(e) = report(one, f, quiet) {
                for l in e.lines {
                    eprintln!("scancel: error: {l}");
                }
                code = 1;
            }
        }
    }
    Ok(code)
}

/// Slurm 22.05 exits 0 for an id it does not know; the message still says so (unless
/// -q). Any other refusal (one array task by its own id) is an error.
fn report(one: &JobRef, f: crate::Failure, quiet: bool) -> Result<(), SlurmError> {
    let id = match one {
        JobRef::Job(id) => id.to_string(),
        JobRef::Tasks(id, indices) if indices.len() == 1 => format!("{id}_{}", indices[0]),
        JobRef::Tasks(id, _) => format!("{id}_*"),
    };
    let text = format!("{:#}", f.error);
    if !text.starts_with("no such job") {
        return Err(SlurmError::msg(format!("Kill job error on job id {id}: {text}")));
    }
    if !quiet {
        eprintln!("scancel: error: Kill job error on job id {id}: Invalid job id specified");
    }
    Ok(())
}

/// The unfinished jobs the filters select (among `ids` if any were given).
async fn select(a: &Args, ids: &[u64], head: &str) -> Result<Vec<u64>, SlurmError> {
    let states = match &a.state {
        Some(s) => format::parse_states(s).map_err(SlurmError::msg)?,
        None => None,
    };
    let me = a.me.then(crate::opts::user_name);
    let mut c = client::connect(head).await?;
    let jobs = c
        .list_jobs(pb::ListJobsRequest {
            all: false,
            stale: false,
        })
        .await
        .map_err(client::failure)?
        .into_inner()
        .jobs;
    Ok(jobs
        .iter()
        .filter(|j| {
            let spec = j.spec.clone().unwrap_or_default();
            let st = format::job_state(&j.state, &j.reason);
            (ids.is_empty() || ids.contains(&j.id))
                && a.user.as_ref().is_none_or(|u| *u == spec.user)
                && me.as_ref().is_none_or(|u| *u == spec.user)
                && a.name.as_ref().is_none_or(|n| *n == j.name)
                && a.partition
                    .as_ref()
                    .is_none_or(|p| spec.partition.split(',').any(|x| x == p))
                && states.as_ref().is_none_or(|s| s.contains(&st))
        })
        .map(|j| j.id)
        .collect())
}
