//! The head's side of agent sessions: registration, dispatch of launches and kills
//! derived from the applied state, and acknowledgement of results.
//!
//! Dispatch is state-driven: after every applied change each session compares the tasks
//! the state places on its node with what it already sent. So a task is launched only
//! after its assignment is committed, and a new leader (or a reconnecting agent) simply
//! re-derives what to send; agents ignore launches of (task, attempt) they already run.
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use rudel_core::{Command, NodeRegistration, Response, TaskKey};
use rudel_proto::convert::{report_from_pb, task_ref, to_task_ref};
use rudel_proto::v1 as pb;
use rudel_proto::v1::agent_message::Msg as AgentMsg;
use rudel_proto::v1::head_message::Msg as HeadMsg;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Status, Streaming};

use crate::convert::output_paths;
use crate::proposer::{now_ms, Proposer};
use crate::raft::SharedState;
use crate::reports::ReportBatch;

/// How long an agent has to send its Register message.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared pieces every session needs.
#[derive(Clone)]
pub struct AgentService {
    pub proposer: Proposer,
    /// For the current Raft term, stamped on every dispatch so agents can refuse commands
    /// from a deposed leader.
    pub raft: crate::raft::Raft,
    pub shared: Arc<SharedState>,
    pub reports: mpsc::UnboundedSender<ReportBatch>,
    pub heartbeat_ms: u64,
    /// A node silent (or disconnected) this long is declared lost.
    pub node_timeout: Duration,
    /// Current session per node name: a newer session stops the older one.
    pub sessions: SessionTable,
    pub next_session: Arc<std::sync::atomic::AtomicU64>,
    /// Stops every session when the head shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Job steps being relayed (see `steps.rs`).
    pub steps: Arc<crate::steps::Steps>,
    /// The job-scoped key-value stores (`rudel kv`, see `kv.rs`).
    pub kv: Arc<crate::kv::Kv>,
    /// Ended steps on their way into the log (see `step_records.rs`).
    pub step_records: crate::step_records::Sender,
    /// How step launches go out: directly or through a tree of agents (`step_fanout.rs`).
    pub fanout: Arc<crate::step_fanout::Fanout>,
    /// Client streams of steps started from outside a task (see `client_steps.rs`).
    pub clients: Arc<crate::client_steps::Clients>,
}

/// The live session of one node: its id, the sender that stops it, and where to hand it
/// `rudel exec` calls.
pub struct SessionHandle {
    pub id: u64,
    stop: oneshot::Sender<()>,
    pub exec: mpsc::UnboundedSender<crate::exec::ExecCall>,
    /// Output reads (`rudel logs`, `rudel run`) forwarded to the agent.
    pub output: mpsc::UnboundedSender<crate::output_relay::OutputCall>,
    /// Messages for this agent from outside its session (job steps of other nodes).
    pub to_agent: mpsc::UnboundedSender<Result<pb::HeadMessage, Status>>,
    /// This session's key for step launches sent through other agents (given in Welcome).
    pub launch_key: rudel_tls::launch_mac::LaunchKey,
    /// Where other agents pass this node its launches (None: an agent without a listener).
    pub tree: Option<crate::step_fanout::TreePeer>,
}

/// Current session per node name.
pub type SessionTable = Arc<Mutex<HashMap<String, SessionHandle>>>;

type HeadStream = Pin<Box<dyn Stream<Item = Result<pb::HeadMessage, Status>> + Send>>;

impl AgentService {
    /// The Raft term this head currently knows.
    pub(crate) fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }
}

#[tonic::async_trait]
impl pb::agent_link_server::AgentLink for AgentService {
    type SessionStream = HeadStream;

    async fn session(&self, req: Request<Streaming<pb::AgentMessage>>) -> Result<tonic::Response<HeadStream>, Status> {
        let peer = req
            .extensions()
            .get::<rudel_tls::server::PeerInfo>()
            .map(|p| p.remote.to_string())
            .unwrap_or_default();
        let caller = crate::auth::caller(&req)?.clone();
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Register message within 10 s"))??;
        let reg = match first.and_then(|m| m.msg) {
            Some(AgentMsg::Register(r)) => r,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a session must be Register",
                ))
            }
        };
        if reg.name.is_empty() || reg.name.len() > 255 || reg.cpus == 0 {
            return Err(Status::invalid_argument(
                "Register needs a node name (1-255 bytes) and at least 1 cpu",
            ));
        }
        if reg.name != caller.name || reg.uid != caller.node_uid {
            let why = format!(
                "this agent's certificate was issued to node {} (id {}), not {} (id {}): \
                 a node keeps its name and data directory; to change them, join again with a token",
                caller.name, caller.node_uid, reg.name, reg.uid
            );
            tracing::warn!(peer = %peer, "refused agent session: {why}");
            return Err(Status::permission_denied(why));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let session = Session::start(self.clone(), reg, peer, caller.fingerprint, tx).await?;
        tokio::spawn(session.run(inbound));
        Ok(tonic::Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}

/// The agent's launch-tree listener: the address it connected from (which other nodes
/// reach, as for PMI) with the port it advertised, and its certificate.
fn tree_peer(peer: &str, port: u32, fingerprint: &str) -> Option<crate::step_fanout::TreePeer> {
    let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
    let ip = peer.parse::<std::net::SocketAddr>().ok()?.ip();
    Some(crate::step_fanout::TreePeer {
        addr: std::net::SocketAddr::new(ip, port).to_string(),
        cert_sha256: fingerprint.to_string(),
    })
}

/// Why a session ended.
enum SessionEnd {
    AgentLeft,
    Silent,
    Replaced,
    HeadStopping,
    /// Its certificate was revoked (or expired).
    Revoked(String),
    /// This head no longer leads: the agent must go to the new leader.
    NotLeader,
}

struct Session {
    svc: AgentService,
    node: String,
    id: u64,
    /// Hex SHA-256 of the agent's certificate (checked again whenever the state changes).
    fingerprint: String,
    /// The node's registration epoch in the state (fences a late "node lost").
    epoch: u64,
    last_heard: tokio::time::Instant,
    out: mpsc::UnboundedSender<Result<pb::HeadMessage, Status>>,
    sent: HashSet<(TaskKey, u32)>,
    kill_sent: HashSet<(TaskKey, u32)>,
    /// The log index up to which this node's changes were dispatched (None: never).
    dispatched_at: Option<u64>,
    superseded: oneshot::Receiver<()>,
    acks_tx: mpsc::UnboundedSender<Vec<(TaskKey, u32)>>,
    acks_rx: mpsc::UnboundedReceiver<Vec<(TaskKey, u32)>>,
    exec_rx: mpsc::UnboundedReceiver<crate::exec::ExecCall>,
    /// `rudel exec` calls sent to the agent, by id, awaiting their result.
    pending_exec: HashMap<u64, oneshot::Sender<pb::ExecResult>>,
    output_rx: mpsc::UnboundedReceiver<crate::output_relay::OutputCall>,
    /// Output reads sent to the agent, by id, awaiting their chunk.
    pending_output: crate::output_relay::Pending,
}

impl Session {
    async fn start(
        svc: AgentService,
        reg: pb::Register,
        peer: String,
        fingerprint: String,
        out: mpsc::UnboundedSender<Result<pb::HeadMessage, Status>>,
    ) -> Result<Session, Status> {
        let running: Vec<(TaskKey, u32)> = reg.running.iter().map(task_ref).collect();
        let node = reg.name.clone();
        let cmd = Command::RegisterNode {
            reg: NodeRegistration {
                name: reg.name.clone(),
                uid: reg.uid.clone(),
                boot_id: reg.boot_id.clone(),
                cpus: reg.cpus,
                mem_bytes: reg.mem_bytes,
                mem_enforcement: reg.mem_enforcement.clone(),
                containment: reg.containment.clone(),
                run_as: reg.run_as.clone(),
                version: reg.version.clone(),
                arch: reg.arch.clone(),
                os: reg.os.clone(),
                address: peer.clone(),
                labels: reg.labels.clone().into_iter().collect(),
                gres: reg
                    .gres
                    .iter()
                    .filter(|(k, _)| rudel_core::resources::parse_inventory(&format!("{k}=0")).is_ok())
                    .map(|(k, v)| (k.clone(), (*v).min(rudel_core::resources::MAX_GRES_UNITS)))
                    .collect(),
                running: running.clone(),
                exclusive: true,
            },
            now_ms: now_ms(),
        };
        let epoch = match svc.proposer.propose(cmd).await? {
            Response::Registered { epoch, .. } => epoch,
            Response::Rejected { reason } => {
                // Another machine holds the name (its certificate predates the binding
                // check at join, or raced it): refused for good, so the agent exits
                // instead of taking the name back and forth with the holder.
                tracing::warn!(peer = %peer, node = %reg.name, node_uid = %reg.uid, "refused agent session: {reason}");
                return Err(crate::auth::name_held(Status::permission_denied(reason)));
            }
            other => return Err(Status::internal(format!("unexpected register result {other:?}"))),
        };
        let id = svc.next_session.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (stop_tx, superseded) = oneshot::channel();
        let (exec_tx, exec_rx) = mpsc::unbounded_channel();
        let (output_tx, output_rx) = mpsc::unbounded_channel();
        let launch_key = rudel_tls::launch_mac::LaunchKey::random();
        let tree = tree_peer(&peer, reg.tree_port, &fingerprint);
        if let Ok(mut s) = svc.sessions.lock() {
            let handle = SessionHandle {
                id,
                stop: stop_tx,
                exec: exec_tx,
                output: output_tx,
                to_agent: out.clone(),
                launch_key: launch_key.clone(),
                tree,
            };
            if let Some(old) = s.insert(node.clone(), handle) {
                let _ = old.stop.send(());
            }
        }
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let mut s = Session {
            svc,
            node,
            id,
            fingerprint,
            epoch,
            last_heard: tokio::time::Instant::now(),
            out,
            sent: HashSet::new(),
            kill_sent: HashSet::new(),
            dispatched_at: None,
            superseded,
            acks_tx,
            acks_rx,
            exec_rx,
            pending_exec: HashMap::new(),
            output_rx,
            pending_output: Default::default(),
        };
        let term = s.svc.term();
        s.send(HeadMsg::Welcome(pb::Welcome {
            node_name: s.node.clone(),
            term,
            heartbeat_ms: s.svc.heartbeat_ms,
            launch_key: launch_key.bytes().to_vec(),
        }));
        // What the agent runs and the state agrees on is already sent; what it runs that
        // the state does not place there (cancelled, given up, stale attempt) is killed.
        let placed: HashSet<(TaskKey, u32)> = rudel_core::query::running_on(&s.svc.shared.read().state, &s.node)
            .into_iter()
            .collect();
        let mut kills = Vec::new();
        for r in running {
            if placed.contains(&r) {
                s.sent.insert(r);
            } else {
                kills.push(to_task_ref(r.0, r.1));
            }
        }
        if !kills.is_empty() {
            tracing::info!(node = %s.node, tasks = kills.len(), "killing tasks the cluster no longer places on this node");
            s.send(HeadMsg::Kill(pb::Kill {
                tasks: kills,
                term,
                grace_ms: None,
            }));
        }
        // Step tasks of steps this leader does not relay to this node: their allocation
        // ended (or a leader change lost the relay) while the node was out of reach, and
        // the kill sent then had no session to go to. Without this they ran on forever.
        for st in &reg.steps {
            if !s.svc.steps.nodes(st.job, st.step).contains(&s.node) {
                tracing::info!(node = %s.node, job = st.job, step = st.step, "killing a step the head no longer relays");
                s.send(HeadMsg::StepSignal(pb::StepSignal {
                    job: st.job,
                    step: st.step,
                    signal: libc::SIGKILL,
                }));
            }
        }
        let unacked: Vec<_> = reg.unacked.into_iter().filter_map(report_from_pb).collect();
        // Tasks that ended while we were apart are not launched again: their results are
        // on the way to the log.
        for r in &unacked {
            if placed.contains(&(r.key, r.attempt)) {
                s.sent.insert((r.key, r.attempt));
            }
        }
        if !unacked.is_empty() {
            s.forward_reports(unacked);
        }
        tracing::info!(node = %s.node, session = s.id, "agent registered");
        Ok(s)
    }

    fn send(&self, msg: HeadMsg) {
        let _ = self.out.send(Ok(pb::HeadMessage { msg: Some(msg) }));
    }

    fn forward_reports(&self, reports: Vec<rudel_core::TaskReport>) {
        let _ = self.svc.reports.send(ReportBatch {
            node: self.node.clone(),
            reports,
            ack: self.acks_tx.clone(),
        });
    }

    async fn run(mut self, mut inbound: Streaming<pb::AgentMessage>) {
        let mut changed = self.svc.shared.subscribe();
        let mut shutdown = self.svc.shutdown.clone();
        self.dispatch();
        let mut check = tokio::time::interval(Duration::from_millis(500).min(self.svc.node_timeout));
        let end = loop {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => {
                        self.last_heard = tokio::time::Instant::now();
                        self.on_agent_message(m);
                    }
                    Ok(None) => break SessionEnd::AgentLeft,
                    Err(e) => {
                        tracing::info!(node = %self.node, error = %e, "agent stream failed");
                        break SessionEnd::AgentLeft;
                    }
                },
                res = changed.changed() => {
                    if res.is_err() { break SessionEnd::HeadStopping; }
                    if let Err(denied) = self.svc.shared.read().state.security.authorize(&self.fingerprint, now_ms()) {
                        break SessionEnd::Revoked(denied.to_string());
                    }
                    self.dispatch();
                    crate::step_relay::reap(&self.svc);
                }
                Some(keys) = self.acks_rx.recv() => {
                    self.send(HeadMsg::Ack(pb::Ack { tasks: keys.into_iter().map(|(k, a)| to_task_ref(k, a)).collect() }));
                }
                _ = check.tick() => {
                    if self.last_heard.elapsed() > self.svc.node_timeout {
                        break SessionEnd::Silent;
                    }
                    if let Err(denied) = self.svc.shared.read().state.security.authorize(&self.fingerprint, now_ms()) {
                        break SessionEnd::Revoked(denied.to_string());
                    }
                    let m = self.svc.raft.metrics().borrow().clone();
                    if m.current_leader != Some(m.id) {
                        break SessionEnd::NotLeader;
                    }
                }
                Some(call) = self.exec_rx.recv() => {
                    self.pending_exec.insert(call.id, call.reply);
                    self.send(HeadMsg::Exec(pb::ExecCommand { id: call.id, argv: call.argv, timeout_ms: call.timeout_ms }));
                }
                Some(call) = self.output_rx.recv() => {
                    let req = self.pending_output.add(call);
                    self.send(HeadMsg::ReadOutput(req));
                }
                _ = &mut self.superseded => {
                    tracing::info!(node = %self.node, session = self.id, "session replaced by a newer one");
                    break SessionEnd::Replaced;
                }
                _ = shutdown.changed() => break SessionEnd::HeadStopping,
            }
        };
        let current = self.svc.sessions.lock().map(|mut s| {
            let mine = s.get(&self.node).is_some_and(|h| h.id == self.id);
            if mine {
                s.remove(&self.node);
            }
            mine
        });
        if !current.unwrap_or(false) {
            return;
        }
        match end {
            SessionEnd::Silent => {
                let why = format!("no heartbeat for {:?}", self.svc.node_timeout);
                tracing::warn!(node = %self.node, "{why}; declaring the node lost");
                self.lose_node(why).await;
            }
            SessionEnd::AgentLeft => {
                tracing::info!(node = %self.node, "agent disconnected");
                let cmd = Command::NodeDisconnected {
                    name: self.node.clone(),
                    now_ms: now_ms(),
                };
                if let Err(e) = self.svc.proposer.propose(cmd).await {
                    tracing::warn!(node = %self.node, error = %e, "could not record disconnect");
                }
                // Its tasks may still run (the agent may be restarting): give it the node
                // timeout to come back before they are given up. A new registration bumps
                // the epoch, which turns this into a no-op.
                tokio::time::sleep(self.svc.node_timeout).await;
                let why = format!(
                    "agent disconnected and did not return within {:?}",
                    self.svc.node_timeout
                );
                self.lose_node(why).await;
            }
            SessionEnd::Revoked(why) => {
                tracing::warn!(node = %self.node, "disconnecting the agent: {why}");
                let _ = self
                    .out
                    .send(Err(crate::auth::revoked(Status::permission_denied(format!(
                        "{why}: this node is no longer part of the cluster (join again with a new token)"
                    )))));
                self.lose_node(why).await;
            }
            SessionEnd::NotLeader => {
                tracing::info!(node = %self.node, "no longer the leader; sending the agent to the new one");
                let _ = self.out.send(Err(crate::heads::not_leader(&self.svc.raft)));
            }
            SessionEnd::Replaced | SessionEnd::HeadStopping => {}
        }
    }

    async fn lose_node(&self, reason: String) {
        let cmd = Command::NodeLost {
            name: self.node.clone(),
            epoch: self.epoch,
            reason,
            now_ms: now_ms(),
        };
        if let Err(e) = self.svc.proposer.propose(cmd).await {
            tracing::warn!(node = %self.node, error = %e, "could not declare the node lost");
        }
    }

    fn on_agent_message(&mut self, m: pb::AgentMessage) {
        match m.msg {
            Some(AgentMsg::Reports(r)) => {
                let reports: Vec<_> = r.reports.into_iter().filter_map(report_from_pb).collect();
                if !reports.is_empty() {
                    self.forward_reports(reports);
                }
            }
            Some(AgentMsg::Heartbeat(_)) => {}
            Some(AgentMsg::ExecResult(r)) => {
                if let Some(reply) = self.pending_exec.remove(&r.id) {
                    let _ = reply.send(r);
                }
            }
            Some(AgentMsg::OutputChunk(c)) => self.pending_output.answer(c),
            Some(AgentMsg::StepRequest(r)) => crate::step_relay::on_request(&self.svc, &self.node, self.svc.term(), r),
            Some(AgentMsg::StepOutput(o)) => crate::step_relay::on_output(&self.svc, o),
            Some(AgentMsg::StepTaskEnd(e)) => crate::step_relay::on_task_end(&self.svc, e),
            Some(AgentMsg::StepSignal(s)) => crate::step_relay::on_signal(&self.svc, s),
            Some(AgentMsg::KvRequest(r)) => crate::step_relay::on_kv(&self.svc, &self.node, r),
            Some(AgentMsg::TreeUndelivered(u)) => crate::step_fanout::on_undelivered(&self.svc, &self.node, u),
            Some(AgentMsg::StepStdin(s)) => crate::step_stdin::on_stdin(&self.svc, &self.node, s),
            Some(AgentMsg::StepStdinAck(a)) => crate::step_stdin::on_ack(&self.svc, a),
            Some(AgentMsg::Register(_)) | None => {
                tracing::warn!(node = %self.node, "ignoring unexpected message in an established session");
            }
        }
    }

    /// Sends launches for newly placed tasks and kills for cancelled ones.
    fn dispatch(&mut self) {
        let mut launches = Vec::new();
        let mut kills = Vec::new();
        // Preempted tasks get the configured grace, not the agent's own.
        let mut preempt_kills = Vec::new();
        let preempt_grace_ms;
        {
            let applied = self.svc.shared.read();
            let state = &applied.state;
            let Some(&node_id) = state.node_by_name.get(&self.node) else {
                return;
            };
            let Some(node) = state.nodes.get(node_id as usize) else {
                return;
            };
            let applied_at = applied.last_applied.map_or(0, |l| l.index);
            if self
                .dispatched_at
                .is_some_and(|seen| applied.node_changes.changed_at(node_id) <= seen)
            {
                return;
            }
            self.dispatched_at = Some(applied_at);
            preempt_grace_ms = state.sched.preempt.grace_s.saturating_mul(1_000);
            self.sent.retain(|(k, a)| node.running.get(k) == Some(a));
            self.kill_sent.retain(|(k, a)| node.running.get(k) == Some(a));
            for (&key, &attempt) in &node.running {
                let Some(job) = state.jobs.get(&key.job) else { continue };
                let Some(rt) = job.running.get(&key.index) else {
                    continue;
                };
                if self.sent.insert((key, attempt)) {
                    let (out, err) = output_paths(job, key.index, &self.node);
                    let job_name = crate::convert::job_name(&job.spec);
                    let placement = rudel_core::task_env::Placement {
                        key,
                        attempt,
                        node: &self.node,
                        task: rt,
                        job_name: &job_name,
                    };
                    let env: HashMap<String, String> =
                        rudel_core::task_env::task_env(job, &placement).into_iter().collect();
                    launches.push(pb::LaunchTask {
                        task: Some(to_task_ref(key, attempt)),
                        argv: job.spec.argv.clone(),
                        script: job.spec.script.clone(),
                        chdir: job.spec.chdir.clone(),
                        env,
                        stdout_path: out.unwrap_or_default(),
                        stderr_path: err.clone().unwrap_or_default(),
                        stderr_discard: err.is_none(),
                        cores: rt.cores.clone(),
                        mem_bytes: rt.mem_bytes,
                        time_limit_ms: job.spec.time_limit_ms,
                        job_name: crate::convert::job_name(&job.spec),
                        after: rt.after.and_then(|p| node.running.get(&p).map(|a| to_task_ref(p, *a))),
                        warn_signal: job.spec.signal.map_or(0, |w| w.signal),
                        warn_before_ms: job.spec.signal.map_or(0, |w| u64::from(w.before_s) * 1_000),
                        append_output: job.spec.open_append,
                        user: job.spec.user.clone(),
                    });
                }
                if rt.kill_requested && self.kill_sent.insert((key, attempt)) {
                    if rt.preempted_by.is_some() {
                        preempt_kills.push(to_task_ref(key, attempt));
                    } else {
                        kills.push(to_task_ref(key, attempt));
                    }
                }
            }
        }
        if !launches.is_empty() {
            self.send(HeadMsg::Launch(pb::Launch {
                tasks: launches,
                term: self.svc.term(),
            }));
        }
        if !kills.is_empty() {
            self.send(HeadMsg::Kill(pb::Kill {
                tasks: kills,
                term: self.svc.term(),
                grace_ms: None,
            }));
        }
        if !preempt_kills.is_empty() {
            self.send(HeadMsg::Kill(pb::Kill {
                tasks: preempt_kills,
                term: self.svc.term(),
                grace_ms: Some(preempt_grace_ms),
            }));
        }
    }
}
