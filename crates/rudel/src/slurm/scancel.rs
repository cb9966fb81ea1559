//! `scancel`: cancel jobs by id or by filter (`-u`, `-t`, `-n`, `-p`), as Slurm's: ids of
//! jobs that are unknown or already finished are no error (exit 0), as in Slurm 22.05.
use clap::Parser;
use rudel_proto::v1 as pb;

use super::{format, SlurmError, SlurmResult};
use crate::client;

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
    /// Job ids: ID, ID_INDEX, ID_[1-3].
    ids: Vec<String>,
}

/// One id as given: a whole job, or some of an array's tasks.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Job(u64),
    Tasks(u64, String),
}

fn parse_target(s: &str) -> Result<Target, SlurmError> {
    let bad = || SlurmError::msg(format!("Invalid job id {s}"));
    match s.split_once('_') {
        None => s.parse().map(Target::Job).map_err(|_| bad()),
        Some((id, tasks)) if !tasks.is_empty() => Ok(Target::Tasks(id.parse().map_err(|_| bad())?, tasks.into())),
        Some(_) => Err(bad()),
    }
}

/// `scancel`.
pub async fn scancel(args: Vec<String>, head: &str) -> SlurmResult {
    let a: Args = super::parse("scancel", args)?;
    let mut ids = Vec::new();
    for s in a.ids.iter().flat_map(|s| s.split(',')).filter(|s| !s.is_empty()) {
        match parse_target(s)? {
            Target::Job(id) => ids.push(id),
            Target::Tasks(id, tasks) => {
                return Err(SlurmError::msg(format!(
                    "cancelling some tasks of an array ({id}_{tasks}) is not supported yet; `scancel {id}` \
                     cancels the whole array (nothing was cancelled)"
                )))
            }
        }
    }
    let filtered = a.user.is_some() || a.state.is_some() || a.name.is_some() || a.partition.is_some() || a.me;
    if ids.is_empty() && !filtered {
        return Err(SlurmError::msg("No job identification provided"));
    }
    if filtered {
        ids = select(&a, &ids, head).await?;
    }
    if ids.is_empty() {
        return Ok(0);
    }
    let r = client::on_leader(head, |mut c| {
        let ids = ids.clone();
        async move { c.cancel(pb::CancelRequest { job_ids: ids }).await }
    })
    .await;
    match r {
        Ok(r) => {
            let r = r.into_inner();
            if a.verbose {
                for id in &r.cancelled {
                    eprintln!("scancel: Terminating job {id}");
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
        Err(_) if ids.len() > 1 => one_by_one(&ids, a.quiet, head).await,
        Err(f) => report(ids[0], f, a.quiet).map(|()| 0),
    }
}

async fn one_by_one(ids: &[u64], quiet: bool, head: &str) -> SlurmResult {
    let mut code = 0;
    for &id in ids {
        let r = client::on_leader(head, |mut c| async move {
            c.cancel(pb::CancelRequest { job_ids: vec![id] }).await
        })
        .await;
        if let Err(f) = r {
            if let Err(e) = report(id, f, quiet) {
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
fn report(id: u64, f: crate::Failure, quiet: bool) -> Result<(), SlurmError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_as_slurm_writes_them() {
        assert_eq!(parse_target("41").unwrap(), Target::Job(41));
        assert_eq!(parse_target("41_3").unwrap(), Target::Tasks(41, "3".into()));
        assert_eq!(parse_target("41_[1-3]").unwrap(), Target::Tasks(41, "[1-3]".into()));
        assert_eq!(parse_target("abc").unwrap_err().lines, ["Invalid job id abc"]);
    }
}
