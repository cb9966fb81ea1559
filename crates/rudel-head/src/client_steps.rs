//! Job steps started from outside the job's tasks (the `Step` RPC): `srun` in a `salloc`
//! shell, or an `srun` outside any allocation once it has allocated one. The client's
//! stream stands where an agent's session stands for a step asked through a job socket
//! (`step_relay.rs`): it is the step's origin, named [`PREFIX`]`N`, and gets the reply,
//! output, task ends and stdin acknowledgements; closing it kills the step.
//!
//! Authority: the caller must own the job (or be an admin), as for cancelling it; the
//! step runs inside the job's running allocation, as the job's user, like any step.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rudel_core::State;
use rudel_proto::v1 as pb;
use rudel_proto::v1::head_message::Msg as HeadMsg;
use tokio::sync::mpsc;
use tonic::Status;

use crate::agent_service::AgentService;
use crate::auth::Caller;

/// Origin names of client streams. A node name never starts with a control character
/// (agents are named by their hostnames), so the two cannot be taken for each other.
pub const PREFIX: &str = "\u{1}client/";

/// How long the first message (the request) may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The client streams of live steps, by origin name.
#[derive(Default)]
pub struct Clients {
    streams: Mutex<HashMap<String, mpsc::UnboundedSender<Result<pb::HeadMessage, Status>>>>,
    next: AtomicU64,
}

impl Clients {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Result<pb::HeadMessage, Status>>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `msg` to client origin `name`; false if it is gone.
    pub fn send(&self, name: &str, msg: HeadMsg) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|tx| tx.send(Ok(pb::HeadMessage { msg: Some(msg) })).is_ok())
    }

    /// Ends client origin `name`'s stream with `why` (its step is gone).
    pub fn end(&self, name: &str, why: Status) {
        if let Some(tx) = self.lock().remove(name) {
            let _ = tx.send(Err(why));
        }
    }
}

/// The running task that holds job `job`'s allocation (its lowest running index), its
/// node's name, after checking `caller` may start steps in it.
fn holder(state: &State, caller: &Caller, job: u64) -> Result<(pb::TaskRef, String), Status> {
    let j = state
        .jobs
        .get(&job)
        .ok_or_else(|| Status::not_found(format!("no job {job}")))?;
    crate::authz::check_owner(caller, job, &j.spec.user, "start a step in")?;
    let (&index, rt) = j.running.iter().min_by_key(|(i, _)| **i).ok_or_else(|| {
        Status::failed_precondition(format!(
            "job {job} is not running: it has no allocation to start a step in"
        ))
    })?;
    let node = state
        .nodes
        .get(rt.node as usize)
        .map(|n| n.name.clone())
        .ok_or_else(|| Status::internal(format!("job {job} runs on an unknown node")))?;
    Ok((
        pb::TaskRef {
            job_id: job,
            index,
            attempt: rt.attempt,
        },
        node,
    ))
}

/// Starts the step the client's first message asks for and relays its stream: returns
/// what the client receives. `peer` is the client's address as this head sees it (where
/// the step's tasks reach srun's PMI server); `None` for a local-socket client, which
/// runs on this head's machine (`here`).
pub async fn serve(
    svc: AgentService,
    caller: Caller,
    peer: Option<IpAddr>,
    here: Option<IpAddr>,
    mut inbound: tonic::Streaming<pb::StepClientMessage>,
) -> Result<mpsc::UnboundedReceiver<Result<pb::HeadMessage, Status>>, Status> {
    let first = tokio::time::timeout(REQUEST_TIMEOUT, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no step request within 10 s"))??;
    let Some(pb::StepClientMessage {
        msg: Some(pb::step_client_message::Msg::Request(mut r)),
    }) = first
    else {
        return Err(Status::invalid_argument(
            "the first message of a step stream must be its request",
        ));
    };
    let job = r.task.as_ref().map_or(0, |t| t.job_id);
    let (task, node) = holder(&svc.shared.read().state, &caller, job)?;
    r.task = Some(task);
    let name = format!("{PREFIX}{}", svc.clients.next.fetch_add(1, Ordering::Relaxed));
    let (tx, rx) = mpsc::unbounded_channel();
    svc.clients.lock().insert(name.clone(), tx);
    let planned = crate::steps::plan(&svc.shared.read().state, &node, &r).and_then(|mut p| {
        if r.pmi_port != 0 {
            let ip = peer.or(here).ok_or("the head does not know the client's address for the step's PMI server; run srun --mpi=none for programs that do not use MPI")?;
            p.pmi = Some(std::net::SocketAddr::new(ip, r.pmi_port as u16).to_string());
        }
        Ok(p)
    });
    let started = crate::step_relay::start(&svc, &name, svc.term(), &r, planned);
    tracing::info!(caller = %caller.name, user = %caller.user, job, "step from a client");
    tokio::spawn(follow(svc, name, started, inbound));
    Ok(rx)
}

/// Relays the client's stdin and kills until it hangs up; then kills the step if it
/// still runs, and forgets the client. Ends with the stream (the client's or the
/// head's shutdown, which closes every stream).
async fn follow(
    svc: AgentService,
    name: String,
    step: Option<(u64, u32)>,
    mut inbound: tonic::Streaming<pb::StepClientMessage>,
) {
    use pb::step_client_message::Msg;
    while let Ok(Some(m)) = inbound.message().await {
        let Some((job, id)) = step else { continue };
        match m.msg {
            Some(Msg::Stdin(s)) if (s.job, s.step) == (job, id) => crate::step_stdin::on_stdin(&svc, &name, s),
            Some(Msg::Signal(_)) => crate::step_relay::on_signal(
                &svc,
                pb::StepSignal {
                    job,
                    step: id,
                    signal: libc::SIGKILL,
                },
            ),
            _ => {}
        }
    }
    svc.clients.lock().remove(&name);
    if let Some((job, id)) = step {
        if svc.steps.origin(job, id).is_some() {
            tracing::info!(job, step = id, "the client of the step is gone; killing the step");
            crate::step_relay::on_signal(
                &svc,
                pb::StepSignal {
                    job,
                    step: id,
                    signal: libc::SIGKILL,
                },
            );
        }
    }
}
