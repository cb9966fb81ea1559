//! An interactive allocation held from this machine, for `salloc` and for an `srun`
//! outside a job: a job whose only task holds the nodes (`sleep infinity` on its first
//! node, output discarded) while the work runs from here: salloc's command, srun's step
//! through the head. While it is held, a task of ours keeps a `HoldAllocation` stream open
//! to the leader (reopened after a failover); if this process dies without handing the
//! allocation back, the leader cancels the job once the stream has been gone for its
//! lease (`rudel head --allocation-lease`). Handed back with the exit code of what ran,
//! the job ends `completed` or `failed` with that code, as Slurm's do.
use std::time::Duration;

use clap::Parser;
use rudel_proto::v1 as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::srun::Step;
use super::SlurmError;

/// `rudel submit`'s options, parsed from the holder job's words.
#[derive(Parser, Debug)]
struct SubmitLine {
    #[command(flatten)]
    a: crate::opts::SubmitArgs,
}

/// The allocation's shape, as Slurm sizes srun's and salloc's allocations from their
/// options: `rudel submit` words.
pub(super) fn alloc_words(step: &Step, name: &str) -> Vec<String> {
    let mut w = vec!["submit".to_string()];
    let mut opt = |k: &str, v: String| {
        w.push(k.to_string());
        w.push(v);
    };
    if step.nodes > 0 {
        opt("--nodes", step.nodes.to_string());
    }
    if step.ntasks > 0 {
        opt("--ntasks", step.ntasks.to_string());
    }
    if step.ntasks_per_node > 0 {
        opt("--ntasks-per-node", step.ntasks_per_node.to_string());
    }
    if let Some(c) = step.cpus_per_task {
        opt("--cpus", c.to_string());
    }
    for n in &step.nodelist {
        opt("--nodelist", n.clone());
    }
    opt("--name", name.to_string());
    for (k, v) in &step.alloc_opts {
        w.push(format!("--{k}"));
        if !v.is_empty() {
            w.push(v.clone());
        }
    }
    // Not requeued when a node is lost: the work runs from here, so an allocation that
    // moved elsewhere would hold nodes nobody uses while the client's work has lost its
    // own. It ends `node_fail` instead, and the client hears that it was revoked.
    w.extend(["--no-requeue", "--output", "/dev/null", "--", "sleep", "infinity"].map(String::from));
    w
}

/// Where the job stands, as the head last said.
type Update = Option<Result<pb::AllocationUpdate, String>>;

/// A held allocation; hand it back with [`Allocation::complete`] or [`Allocation::cancel`].
pub(super) struct Allocation {
    pub id: u64,
    /// `salloc` or `srun`: prefixes its messages.
    who: &'static str,
    head: String,
    updates: watch::Receiver<Update>,
    holder: JoinHandle<()>,
}

impl Drop for Allocation {
    fn drop(&mut self) {
        // Dropped without a hand-back (an error path): the lease then ends the job.
        self.holder.abort();
    }
}

impl Allocation {
    /// Submits the holder job and starts holding it.
    pub async fn request(step: &Step, name: &str, head: &str, who: &'static str) -> Result<Allocation, SlurmError> {
        let line = SubmitLine::try_parse_from(alloc_words(step, name)).map_err(|e| SlurmError::msg(format!("{e}")))?;
        let (mut spec, a) = crate::opts::build_spec(line.a, false)?;
        spec.interactive = true;
        let request_id = a.request_id.clone().unwrap_or_else(crate::opts::new_request_id);
        let id = crate::opts::submit_spec(head, spec, request_id).await?.job_id;
        let (tx, updates) = watch::channel(None);
        let holder = tokio::spawn(hold(head.to_string(), id, tx));
        Ok(Allocation {
            id,
            who,
            head: head.to_string(),
            updates,
            holder,
        })
    }

    /// Requests the allocation and waits until it is granted (its nodes); gives it up if
    /// that fails (interrupted, the job ended first).
    pub async fn obtain(
        step: &Step,
        name: &str,
        head: &str,
        who: &'static str,
        pending_line: bool,
    ) -> Result<(Allocation, Vec<String>), SlurmError> {
        let mut alloc = Allocation::request(step, name, head, who).await?;
        match alloc.granted(pending_line).await {
            Ok(nodes) => Ok((alloc, nodes)),
            Err(e) => {
                alloc.cancel().await;
                Err(e)
            }
        }
    }

    /// Waits until the job runs and returns its nodes; says that it waits, as Slurm's
    /// salloc and srun do. Ctrl-C meanwhile is an error (the caller cancels).
    pub async fn granted(&mut self, pending_line: bool) -> Result<Vec<String>, SlurmError> {
        let (who, id) = (self.who, self.id);
        if pending_line {
            eprintln!("{who}: Pending job allocation {id}");
        }
        let mut said = false;
        loop {
            let now = self.updates.borrow_and_update().clone();
            match now {
                Some(Err(e)) => return Err(SlurmError::msg(format!("job {id}: {e}"))),
                Some(Ok(u)) if u.state == "running" && !u.nodes.is_empty() => {
                    if said {
                        eprintln!("{who}: job {id} has been allocated resources");
                    }
                    return Ok(u.nodes);
                }
                Some(Ok(u)) if !matches!(u.state.as_str(), "pending" | "held" | "running") => {
                    return Err(SlurmError::msg(format!(
                        "job {id} ended ({}) before it was granted{}",
                        u.state,
                        if u.reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", u.reason)
                        }
                    )))
                }
                Some(Ok(_)) if !said => {
                    eprintln!("{who}: job {id} queued and waiting for resources");
                    said = true;
                }
                _ => {}
            }
            tokio::select! {
                r = self.updates.changed() => if r.is_err() {
                    return Err(SlurmError::msg("lost the allocation's updates"));
                },
                // SlurmError's lines are printed as `salloc: error: ...`.
                _ = tokio::signal::ctrl_c() => return Err(SlurmError::msg(format!(
                    "interrupted while waiting; job allocation {id} is cancelled"
                ))),
            }
        }
    }

    /// Resolves once the job has ended (revoked: cancelled, time limit) while held.
    pub async fn revoked(&mut self) {
        loop {
            if let Some(Ok(u)) = &*self.updates.borrow_and_update() {
                if !matches!(u.state.as_str(), "pending" | "held" | "running") {
                    return;
                }
            }
            if self.updates.changed().await.is_err() {
                // The holder ended (job gone from memory): ended too.
                return;
            }
        }
    }

    /// Hands the allocation back: the job ends as `code` says.
    pub async fn complete(self, code: i32) {
        let (id, head, who) = (self.id, self.head.clone(), self.who);
        let r = async {
            let mut c = crate::client::connect(&head).await?;
            c.complete_allocation(pb::CompleteAllocationRequest {
                job_id: id,
                exit_code: code,
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))
        }
        .await;
        self.stop().await;
        if let Err(e) = r {
            // The lease ends the job anyway; the user should know it may linger that long.
            eprintln!(
                "{who}: error: could not hand job allocation {id} back ({e:#}); the head ends it once its lease runs out"
            );
        }
    }

    /// Gives the allocation up before it ran anything (interrupted, refused).
    pub async fn cancel(self) {
        let (id, head) = (self.id, self.head.clone());
        self.stop().await;
        if let Ok(mut c) = crate::client::connect(&head).await {
            let _ = c
                .cancel(pb::CancelRequest {
                    job_ids: vec![id],
                    ..Default::default()
                })
                .await;
        }
    }

    async fn stop(mut self) {
        self.holder.abort();
        let _ = (&mut self.holder).await;
    }
}

/// Keeps a `HoldAllocation` stream open, reopening it (at the new leader after a
/// failover) with a backoff, and passes the job's updates on; returns once the job ended
/// or the head refused for good.
async fn hold(head: String, id: u64, tx: watch::Sender<Update>) {
    let mut backoff = crate::client::Backoff::default();
    loop {
        match hold_once(&head, id, &tx, &mut backoff).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::NotFound | tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
                ) =>
            {
                let _ = tx.send(Some(Err(s.message().to_string())));
                return;
            }
            Err(s) => tracing::debug!(job = id, error = %s.message(), "allocation stream lost; reopening"),
        }
        backoff
            .pause(tokio::time::Instant::now() + Duration::from_secs(1))
            .await;
    }
}

/// One stream, to its end: true once the job ended.
async fn hold_once(
    head: &str,
    id: u64,
    tx: &watch::Sender<Update>,
    backoff: &mut crate::client::Backoff,
) -> Result<bool, tonic::Status> {
    let mut c = crate::client::connect(head)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
    let mut stream = c
        .hold_allocation(pb::HoldAllocationRequest { job_id: id })
        .await?
        .into_inner();
    *backoff = crate::client::Backoff::default();
    while let Some(u) = stream.message().await? {
        let ended = !matches!(u.state.as_str(), "pending" | "held" | "running");
        let _ = tx.send(Some(Ok(u)));
        if ended {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The allocation's variables for what runs in it.
pub(super) fn env(id: u64, name: &str, nodes: &[String], step: &Step) -> Vec<(String, String)> {
    let id = id.to_string();
    let list = rudel_core::hostlist::compress(nodes);
    let mut v = vec![
        ("SLURM_JOB_ID", id.clone()),
        ("SLURM_JOBID", id),
        ("SLURM_JOB_NAME", name.to_string()),
        ("SLURM_JOB_NODELIST", list.clone()),
        ("SLURM_NODELIST", list),
        ("SLURM_NNODES", nodes.len().to_string()),
        ("SLURM_JOB_NUM_NODES", nodes.len().to_string()),
    ];
    if step.ntasks > 0 {
        v.push(("SLURM_NTASKS", step.ntasks.to_string()));
        v.push(("SLURM_NPROCS", step.ntasks.to_string()));
    }
    v.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_sized_like_the_request_and_holds_with_sleep() {
        let s = super::super::srun::parse(&["-N".into(), "2".into(), "-n4".into(), "-l".into(), "hostname".into()])
            .unwrap();
        let w = alloc_words(&s, "hostname");
        assert_eq!(
            w[..7],
            ["submit", "--nodes", "2", "--ntasks", "4", "--name", "hostname"]
        );
        assert_eq!(w[w.len() - 2..], ["sleep", "infinity"]);
        let line = SubmitLine::try_parse_from(&w).unwrap();
        assert_eq!(line.a.alloc.nodes.as_deref(), Some("2"));
        assert!(line.a.no_requeue, "a lost node ends the allocation");
    }

    #[test]
    fn allocation_only_options_reach_the_holder_job() {
        let s = super::super::srun::parse(
            &[
                "-t",
                "10",
                "-p",
                "debug",
                "--mem=2G",
                "--exclusive",
                "-x",
                "n3",
                "-A",
                "phys",
                "-C",
                "ssd",
                "-L",
                "m:1",
                "true",
            ]
            .map(String::from),
        )
        .unwrap();
        let line = SubmitLine::try_parse_from(alloc_words(&s, "true")).unwrap();
        assert_eq!(line.a.time.as_deref(), Some("10"));
        assert_eq!(line.a.partition.as_deref(), Some("debug"));
        assert_eq!(line.a.mem.as_deref(), Some("2G"));
        assert_eq!(line.a.account.as_deref(), Some("phys"));
        assert_eq!(line.a.constraint.as_deref(), Some("ssd"));
        assert_eq!(line.a.licenses.as_deref(), Some("m:1"));
        assert!(line.a.alloc.exclusive);
        assert_eq!(line.a.alloc.exclude.as_deref(), Some("n3"));
    }
}
