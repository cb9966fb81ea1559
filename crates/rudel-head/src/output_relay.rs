//! Task output over the network (issue 10 §6): a client's `ReadOutput` is answered by the
//! agent of the task's node, over that agent's session stream. Generic by task key + stream
//! so `srun` stdio can reuse it.
//!
//! Only the leader holds agent sessions, so only the leader answers; another head refuses
//! with the leader's address (`rudel-leader` metadata), which the client follows.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rudel_core::job::Job;
use rudel_proto::v1 as pb;
use tokio::sync::oneshot;
use tonic::Status;

use crate::agent_service::SessionTable;
use crate::proposer::ProposeError;
use crate::raft::{Raft, SharedState};

/// How long the head waits for an agent's chunk: a node that is up answers in milliseconds
/// (one file read); beyond this it is treated as unreachable instead of hanging the client.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One read for one agent session.
pub struct OutputCall {
    pub req: pb::ReadOutput,
    pub reply: oneshot::Sender<pb::OutputChunk>,
}

/// Reads sent to an agent, awaiting their chunk (by correlation id).
#[derive(Default)]
pub struct Pending(HashMap<u64, oneshot::Sender<pb::OutputChunk>>);

impl Pending {
    /// Records the call and returns the request to send, stamped with its id.
    pub fn add(&mut self, call: OutputCall) -> pb::ReadOutput {
        // Callers that timed out dropped their receiver: forget them, so an agent that never
        // answers cannot grow this map.
        self.0.retain(|_, tx| !tx.is_closed());
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.0.insert(id, call.reply);
        pb::ReadOutput { id, ..call.req }
    }

    pub fn answer(&mut self, c: pb::OutputChunk) {
        if let Some(tx) = self.0.remove(&c.id) {
            let _ = tx.send(c);
        }
    }
}

/// Where a task's output is, as the replicated state says.
#[derive(Debug, PartialEq, Eq)]
enum Where {
    /// Not started: no output yet.
    Pending,
    /// Cancelled before it ever ran: there is no output and never will be.
    NeverRan,
    Running(String),
    /// Ended; the node is known for tasks that did not complete (and single-task jobs),
    /// else one of the job's nodes ran it.
    Ended(Vec<String>),
}

fn locate(state: &rudel_core::State, job: &Job, index: u32) -> Where {
    let name = |id: u32| state.nodes.get(id as usize).map(|n| n.name.clone());
    if let Some(rt) = job.running.get(&index) {
        return name(rt.node).map_or(Where::Pending, Where::Running);
    }
    if let Some(t) = job.ended.get(&index) {
        if rudel_core::query::never_started(t) {
            return Where::NeverRan;
        }
        return Where::Ended(t.node.and_then(name).into_iter().collect());
    }
    let position = job.spec.array.as_ref().map_or(Some(0), |a| a.position_of(index));
    match position {
        Some(p) if p < job.next_position && !job.requeued.contains_key(&index) => Where::Ended(job.nodes.clone()),
        _ => Where::Pending,
    }
}

/// The leader's address when this head does not lead (the client retries there).
pub(crate) fn not_leader(raft: &Raft, head_id: u64) -> Option<Status> {
    let m = raft.metrics().borrow().clone();
    if m.current_leader == Some(head_id) {
        return None;
    }
    let leader = m
        .current_leader
        .and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.addr.clone()));
    Some(ProposeError::NotLeader { leader }.into())
}

/// Answers one `ReadOutput` from the client API.
pub async fn read(
    raft: &Raft,
    head_id: u64,
    shared: &SharedState,
    sessions: &SessionTable,
    r: pb::ReadOutputRequest,
) -> Result<pb::ReadOutputResponse, Status> {
    if let Some(s) = not_leader(raft, head_id) {
        return Err(s);
    }
    let (job_id, index, place) = {
        let a = shared.read();
        let Some((job, task)) = a.state.job_of(r.job_id) else {
            return Err(Status::not_found(format!(
                "no job {} in the live state (never submitted, or finished and pruned: its output, \
                 if kept, is in its output file on the node that ran it)",
                r.job_id
            )));
        };
        // An array task's own id names its index.
        let index = task.unwrap_or(r.index);
        if job.spec.output.trim().eq_ignore_ascii_case("none") {
            return Err(Status::failed_precondition(format!(
                "job {} discards its output (--output none)",
                job.id
            )));
        }
        let valid = job
            .spec
            .array
            .as_ref()
            .map_or(index == 0, |a| a.position_of(index).is_some());
        if !valid {
            return Err(Status::invalid_argument(format!("job {} has no task {index}", job.id)));
        }
        (job.id, index, locate(&a.state, job, index))
    };
    let state = |s: &str| pb::ReadOutputResponse {
        task_state: s.into(),
        ..Default::default()
    };
    let (nodes, task_state) = match place {
        Where::Pending => return Ok(state("pending")),
        Where::NeverRan => return Ok(state("ended")),
        Where::Running(n) => (vec![n], "running"),
        Where::Ended(n) => (n, "ended"),
    };
    let req = pb::ReadOutput {
        id: 0,
        job_id,
        index,
        stream: if r.stderr {
            pb::OutputStream::Stderr as i32
        } else {
            pb::OutputStream::Stdout as i32
        },
        offset: r.offset,
        max_bytes: r.max_bytes.min(1 << 20),
        release: r.release,
    };
    // A completed array task's node is not in the replicated state (kept small on purpose):
    // ask the job's nodes at once (one bounded wait, not one per node); the one that ran it
    // knows the task, the others answer "unknown task".
    let answers = futures::future::join_all(nodes.iter().map(|n| ask(sessions, n, req))).await;
    let mut why = Vec::new();
    let mut unreachable = nodes.is_empty();
    for (node, a) in nodes.iter().zip(answers) {
        match a {
            Ok(c) if c.error.is_empty() => {
                return Ok(pb::ReadOutputResponse {
                    data: c.data,
                    size: c.size,
                    task_state: task_state.into(),
                    node: node.clone(),
                })
            }
            Ok(c) => why.push(format!("node {node}: {}", c.error)),
            Err(e) => {
                unreachable = true;
                why.push(format!("node {node}: {e}"));
            }
        }
    }
    if nodes.is_empty() {
        why.push("the node that ran it is not known any more".into());
    }
    let msg = format!("cannot read the output of task {job_id}_{index}: {}", why.join("; "));
    // Unavailable (the client may retry while following) only when a node could not be asked.
    Err(if unreachable {
        Status::unavailable(msg)
    } else {
        Status::failed_precondition(msg)
    })
}

/// Sends one read to `node`'s agent and waits for its chunk, at most [`READ_TIMEOUT`].
async fn ask(sessions: &SessionTable, node: &str, req: pb::ReadOutput) -> Result<pb::OutputChunk, String> {
    let tx = sessions
        .lock()
        .ok()
        .and_then(|s| s.get(node).map(|h| h.output.clone()))
        .ok_or("the node is not connected (down or unreachable)")?;
    let (reply, rx) = oneshot::channel();
    tx.send(OutputCall { req, reply })
        .map_err(|_| "the node's session just ended")?;
    match tokio::time::timeout(READ_TIMEOUT, rx).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(_)) => Err("the node's session ended before it answered".into()),
        Err(_) => Err(format!("no answer within {READ_TIMEOUT:?} (node unreachable?)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_forgets_abandoned_reads_and_routes_by_id() {
        let mut p = Pending::default();
        let (tx1, rx1) = oneshot::channel();
        let r1 = p.add(OutputCall {
            req: pb::ReadOutput::default(),
            reply: tx1,
        });
        drop(rx1);
        let (tx2, mut rx2) = oneshot::channel();
        let r2 = p.add(OutputCall {
            req: pb::ReadOutput::default(),
            reply: tx2,
        });
        assert_ne!(r1.id, r2.id);
        assert_eq!(p.0.len(), 1, "the dropped caller is forgotten");
        p.answer(pb::OutputChunk {
            id: r2.id,
            size: 5,
            ..Default::default()
        });
        assert_eq!(rx2.try_recv().unwrap().size, 5);
    }
}
