//! `HoldAllocation` and `CompleteAllocation`: how `salloc` and an `srun` outside a job hold
//! their interactive allocation and hand it back (see `allocation_leases.rs`).
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use rudel_core::{Command, State};
use rudel_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::allocation_leases::Leases;
use crate::auth::Caller;
use crate::raft::{Raft, SharedState};

pub type HoldStream = Pin<Box<dyn Stream<Item = Result<pb::AllocationUpdate, Status>> + Send>>;

/// How often an open stream checks that this head still leads (a stream to a deposed
/// leader must end, so that its client holds the lease at the new one).
const LEADER_CHECK: Duration = Duration::from_secs(1);

/// What the stream needs.
pub struct Holder {
    pub raft: Raft,
    pub head_id: u64,
    pub shared: Arc<SharedState>,
    pub leases: Arc<Leases>,
    pub shutdown: watch::Receiver<bool>,
}

/// The job's update as the client sees it; None once it is gone from memory (ended).
fn update(state: &State, job: u64) -> Option<(pb::AllocationUpdate, bool)> {
    let j = state.jobs.get(&job)?;
    let info = crate::convert::job_info(state, j, false);
    let done = j.is_finished();
    Some((
        pb::AllocationUpdate {
            state: info.state,
            nodes: if done { Vec::new() } else { info.nodes },
            reason: info.reason,
        },
        done,
    ))
}

/// Checks that `caller` may hold `job` and that it is an interactive allocation.
fn check(state: &State, caller: &Caller, job: u64) -> Result<(), Status> {
    crate::authz::check_jobs(state, caller, [job], "hold the allocation of")?;
    match state.jobs.get(&job) {
        None => Err(Status::not_found(format!("no job {job}"))),
        Some(j) if !j.spec.interactive => Err(Status::invalid_argument(format!(
            "job {job} is not an interactive allocation (salloc, srun outside a job)"
        ))),
        Some(_) => Ok(()),
    }
}

/// Opens the stream: it holds the lease until the client goes or the job ends.
pub fn hold(h: Holder, caller: &Caller, job: u64) -> Result<HoldStream, Status> {
    if let Some(s) = crate::output_relay::not_leader(&h.raft, h.head_id) {
        return Err(s);
    }
    check(&h.shared.read().state, caller, job)?;
    let guard = h.leases.attach(job, Instant::now());
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        // Held by this task: the lease starts when the task ends (client gone, job ended).
        let _guard = guard;
        let mut changed = h.shared.subscribe();
        let mut shutdown = h.shutdown.clone();
        let mut tick = tokio::time::interval(LEADER_CHECK);
        let mut last: Option<pb::AllocationUpdate> = None;
        loop {
            let now = update(&h.shared.read().state, job);
            let Some((u, done)) = now else {
                return;
            };
            if last.as_ref() != Some(&u) {
                last = Some(u.clone());
                if tx.send(Ok(u)).await.is_err() {
                    return;
                }
            }
            if done {
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = tick.tick() => {
                    if let Some(s) = crate::output_relay::not_leader(&h.raft, h.head_id) {
                        let _ = tx.send(Err(s)).await;
                        return;
                    }
                }
                _ = shutdown.changed() => {
                    let _ = tx.send(Err(Status::unavailable("head shutting down"))).await;
                    return;
                }
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// The command that hands the allocation back, once the caller may.
pub fn complete(state: &State, caller: &Caller, req: &pb::CompleteAllocationRequest) -> Result<Command, Status> {
    check(state, caller, req.job_id)?;
    Ok(Command::CompleteAllocation {
        job: req.job_id,
        exit_code: req.exit_code,
        now_ms: crate::proposer::now_ms(),
    })
}
