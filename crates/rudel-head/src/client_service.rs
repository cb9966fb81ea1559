//! The client API (`rudel.v1.Rudel`): submit, query, cancel, watch.
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use rudel_core::security::Role;
use rudel_core::{Command, Response};
use rudel_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use crate::convert::{job_info, node_info, spec_from_pb};
use crate::proposer::{now_ms, Proposer};
use crate::raft::{Raft, SharedState};

/// Most jobs one cancel or watch may name.
const MAX_IDS: usize = 100_000;
/// Minimum time between two watch updates for the same client.
const WATCH_MIN_INTERVAL: Duration = Duration::from_millis(20);

/// Handlers for the client API.
#[derive(Clone)]
pub struct ClientService {
    pub proposer: Proposer,
    pub shared: Arc<SharedState>,
    pub raft: Raft,
    pub head_id: u64,
    pub shutdown: watch::Receiver<bool>,
    /// Live agent sessions, for `rudel exec`.
    pub sessions: crate::agent_service::SessionTable,
    /// Serializes head-group membership changes made through this head.
    pub membership_changes: Arc<crate::heads::Changes>,
    /// Per-user submit rate buckets (admission control, see `submit_rate.rs`).
    pub submit_rate: Arc<crate::submit_rate::SubmitRate>,
    /// Where submits are proposed: concurrent ones share a log entry (`submit_batch.rs`).
    pub submits: crate::submit_batch::SubmitBatcher,
    /// The agents' side, for job steps started by clients (`client_steps.rs`).
    pub agents: crate::agent_service::AgentService,
    /// This head's advertised address (its IP is where local-socket clients are).
    pub advertise: String,
    /// Interactive allocations held by clients (`allocation_leases.rs`).
    pub leases: Arc<crate::allocation_leases::Leases>,
}

/// How long a leader waits for a quorum to confirm it before telling a client that asks
/// who leads that it cannot say (about the election timeout: by then a partitioned
/// majority has a leader of its own).
const LEADERSHIP_CONFIRM: Duration = Duration::from_millis(1000);

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchUpdate, Status>> + Send>>;
type StepStream = Pin<Box<dyn Stream<Item = Result<pb::HeadMessage, Status>> + Send>>;

impl ClientService {
    /// Proposes a hold, release or update and turns its result into the reply; unknown ids
    /// are an error naming them (the other jobs named were changed).
    async fn change_jobs(&self, cmd: Command) -> Result<tonic::Response<pb::ChangeResponse>, Status> {
        match self.proposer.propose(cmd).await? {
            Response::JobsChanged {
                changed,
                skipped,
                unknown,
            } => {
                if !unknown.is_empty() {
                    let list: Vec<String> = unknown.iter().map(u64::to_string).collect();
                    return Err(Status::not_found(format!(
                        "no such job: {} (jobs changed: {changed:?})",
                        list.join(", ")
                    )));
                }
                let skipped = skipped
                    .into_iter()
                    .map(|(id, why)| pb::SkippedJob { id, why })
                    .collect();
                Ok(tonic::Response::new(pb::ChangeResponse { changed, skipped }))
            }
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    /// An array task's own job id must not act on its whole array, nor be "unknown".
    fn refuse_array_tasks(&self, ids: &[u64], verb: &str, done: &str) -> Result<(), Status> {
        for &id in ids {
            if let Some((j, Some(index))) = self.shared.read().state.job_of(id) {
                return Err(Status::invalid_argument(format!(
                    "job {id} is task {}_{index} of array job {}: to {verb} one array task is not \
                     supported yet; `rudel {verb} {}` acts on the whole array (nothing was {done})",
                    j.id, j.id, j.id
                )));
            }
        }
        Ok(())
    }

    /// Linearizable reads go through the leader (it confirms leadership with a quorum
    /// before answering); `stale` reads answer from local state at once.
    ///
    /// Besides openraft's barrier (leadership confirmed, state applied up to the commit
    /// index it knows), the read waits until the state includes every entry this leader
    /// had in its log when the read arrived. openraft's barrier alone is not enough for a
    /// leader restarted before anyone else was elected: it resumes leading in its old term
    /// with a commit index it may have lost in the crash (that hint is not fsynced), and
    /// would answer from a state missing acknowledged writes (the HA suite's
    /// linearizability check caught this). Entries committed before the read are in the
    /// leader's log, so waiting for them closes the gap, at the cost of waiting for the
    /// writes in flight at that moment (about one commit).
    async fn read_barrier(&self, stale: bool) -> Result<(), Status> {
        if stale {
            return Ok(());
        }
        let in_log = self.raft.metrics().borrow().last_log_index;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        match tokio::time::timeout_at(deadline, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(Status::unavailable(format!(
                    "cannot serve a consistent read: {e}; retry, or pass --stale to read this head's possibly outdated state"
                )))
            }
            Err(_) => {
                return Err(Status::unavailable(
                    "no quorum to confirm leadership within 5 s; use --stale for possibly outdated state",
                ))
            }
        }
        let Some(index) = in_log else { return Ok(()) };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "read barrier")
            .await
            .map(|_| ())
            .map_err(|e| {
                Status::unavailable(format!(
                    "the log did not commit up to the read point in time ({e}): no quorum? Use --stale for possibly outdated state"
                ))
            })
    }
}

impl ClientService {
    /// The last applied index and the SHA-256 (first 16 hex digits) of the state's
    /// serialization at that index, read under one lock.
    fn state_hash(&self) -> (u64, String) {
        let a = self.shared.read();
        let idx = a.last_applied.map_or(0, |l| l.index);
        match serde_json::to_vec(&a.state) {
            Ok(bytes) => (idx, rudel_tls::hex(&rudel_tls::fingerprint(&bytes)[..8])),
            Err(e) => (idx, format!("error: {e}")),
        }
    }

    async fn change_nodes(&self, cmd: Command) -> Result<tonic::Response<pb::DrainResponse>, Status> {
        let names = match &cmd {
            Command::Drain { nodes, .. } | Command::Resume { nodes, .. } => nodes,
            _ => return Err(Status::internal("not a node command")),
        };
        if names.is_empty() || names.len() > MAX_IDS {
            return Err(Status::invalid_argument(format!("name between 1 and {MAX_IDS} nodes")));
        }
        match self.proposer.propose(cmd).await? {
            Response::NodesChanged { unknown, .. } if !unknown.is_empty() => Err(Status::not_found(format!(
                "no such node: {} (nothing was changed; see `rudel nodes`)",
                unknown.join(", ")
            ))),
            Response::NodesChanged { changed, .. } => Ok(tonic::Response::new(pb::DrainResponse { changed })),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }
}

fn check_id_count(ids: &[u64]) -> Result<(), Status> {
    if ids.is_empty() || ids.len() > MAX_IDS {
        return Err(Status::invalid_argument(format!(
            "name between 1 and {MAX_IDS} job ids"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::rudel_server::Rudel for ClientService {
    async fn submit(&self, req: Request<pb::SubmitRequest>) -> Result<tonic::Response<pb::SubmitResponse>, Status> {
        let t0 = std::time::Instant::now();
        let caller = crate::auth::caller(&req)?.clone();
        let bytes = prost::Message::encoded_len(req.get_ref());
        let req = req.into_inner();
        let mut spec = spec_from_pb(req.spec.ok_or_else(|| Status::invalid_argument("missing job spec"))?)?;
        // The head decides whose job this is; the user the client put in the spec is ignored.
        spec.user = crate::authz::submit_user(&caller, &req.as_user)?;
        let (rate, burst) = {
            let limits = &self.shared.read().state.sched.limits;
            (limits.submit_rate_per_user, limits.submit_burst_per_user)
        };
        self.submit_rate.check(&spec.user, rate, burst)?;
        if !req.request_id.is_empty() {
            rudel_core::limits::check_request_id(&req.request_id)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let interactive = spec.interactive;
        let cmd = Command::Submit {
            request_id: req.request_id,
            spec,
            now_ms: now_ms(),
        };
        let t1 = std::time::Instant::now();
        let committed = self.submits.propose(cmd, bytes).await;
        tracing::trace!(
            target: "latency",
            checks_us = (t1 - t0).as_micros() as u64,
            commit_us = t1.elapsed().as_micros() as u64,
            "submit"
        );
        match committed? {
            Response::Submitted { job, tasks, duplicate } => {
                if interactive {
                    // Watched from now: a client that dies before it holds the allocation
                    // must not leave it behind.
                    self.leases.watch(job, std::time::Instant::now());
                }
                if !duplicate {
                    tracing::debug!(job, tasks, "job submitted");
                }
                Ok(tonic::Response::new(pb::SubmitResponse {
                    job_id: job,
                    duplicate,
                    tasks: tasks as u32,
                }))
            }
            Response::Rejected { reason } => Err(Status::invalid_argument(reason)),
            other => Err(Status::internal(format!("unexpected submit result {other:?}"))),
        }
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<tonic::Response<pb::ListJobsResponse>, Status> {
        let req = req.into_inner();
        self.read_barrier(req.stale).await?;
        let a = self.shared.read();
        let jobs = a
            .state
            .jobs
            .values()
            .filter(|j| req.all || !j.is_finished())
            .map(|j| job_info(&a.state, j, false))
            .collect();
        Ok(tonic::Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn show_job(&self, req: Request<pb::ShowJobRequest>) -> Result<tonic::Response<pb::JobInfo>, Status> {
        let caller = crate::auth::caller(&req)?.clone();
        let req = req.into_inner();
        self.read_barrier(req.stale).await?;
        let live = {
            let a = self.shared.read();
            a.state.job_of(req.job_id).map(|(j, task)| {
                let mut info = job_info(&a.state, j, true);
                info.task_index = task;
                info.steps_dropped = j.steps_dropped;
                info
            })
        };
        let owner = |info: &pb::JobInfo| info.spec.as_ref().map(|s| s.user.clone()).unwrap_or_default();
        if let Some(mut info) = live {
            crate::authz::check_owner(&caller, req.job_id, &owner(&info), "show the details of")?;
            info.steps = crate::history_service::steps_of(&self.shared, info.id).await?;
            return Ok(tonic::Response::new(info));
        }
        // Pruned from the replicated state: the accounting store still knows it.
        match crate::history_service::show_from_history(&self.shared.history, req.job_id).await? {
            Some(info) => {
                crate::authz::check_owner(&caller, req.job_id, &owner(&info), "show the details of")?;
                Ok(tonic::Response::new(info))
            }
            None => Err(Status::not_found(format!(
                "no job {} (never submitted, or finished before the history retention)",
                req.job_id
            ))),
        }
    }

    async fn explain(&self, req: Request<pb::ExplainRequest>) -> Result<tonic::Response<pb::ExplainResponse>, Status> {
        let caller = crate::auth::caller(&req)?.clone();
        let req = req.into_inner();
        self.read_barrier(req.stale).await?;
        let a = self.shared.read();
        crate::explain_rpc::explain(&a.state, &caller, req.job_id).map(tonic::Response::new)
    }

    async fn limits(&self, req: Request<pb::LimitsRequest>) -> Result<tonic::Response<pb::LimitsResponse>, Status> {
        let caller = crate::auth::caller(&req)?.clone();
        let req = req.into_inner();
        self.read_barrier(req.stale).await?;
        let a = self.shared.read();
        crate::limits_rpc::limits(&a.state, &caller, &req.user).map(tonic::Response::new)
    }

    async fn share(&self, req: Request<pb::ShareRequest>) -> Result<tonic::Response<pb::ShareResponse>, Status> {
        crate::auth::caller(&req)?;
        let req = req.into_inner();
        self.read_barrier(req.stale).await?;
        let a = self.shared.read();
        Ok(tonic::Response::new(crate::share_rpc::share(&a.state, &req.users)))
    }

    async fn hold(&self, req: Request<pb::HoldRequest>) -> Result<tonic::Response<pb::ChangeResponse>, Status> {
        let caller = crate::auth::caller(&req)?.clone();
        let req = req.into_inner();
        let ids = req.job_ids;
        check_id_count(&ids)?;
        let (verb, done) = if req.release {
            ("release", "released")
        } else {
            ("hold", "held")
        };
        self.refuse_array_tasks(&ids, verb, done)?;
        crate::authz::check_jobs(&self.shared.read().state, &caller, ids.iter().copied(), verb)?;
        let now_ms = now_ms();
        let cmd = if req.release {
            Command::Release { jobs: ids, now_ms }
        } else {
            Command::Hold { jobs: ids, now_ms }
        };
        self.change_jobs(cmd).await
    }

    async fn requeue(&self, req: Request<pb::RequeueRequest>) -> Result<tonic::Response<pb::ChangeResponse>, Status> {
        let caller = crate::auth::caller(&req)?.clone();
        let req = req.into_inner();
        let jobs = crate::requeue_rpc::refs(&req.jobs)?;
        crate::authz::check_jobs(
            &self.shared.read().state,
            &caller,
            jobs.iter().map(|r| r.job),
            "requeue",
        )?;
        self.change_jobs(Command::Requeue {
            jobs,
            hold: req.hold,
            now_ms: now_ms(),
        })
        .await
    }

    async fn update(&self, req: Request<pb::UpdateRequest>) -> Result<tonic::Response<pb::ChangeResponse>, Status> {
        let caller = crate::auth::caller(&req)?.clone();
        let req = req.into_inner();
        check_id_count(&req.job_ids)?;
        self.refuse_array_tasks(&req.job_ids, "update", "updated")?;
        crate::authz::check_jobs(
            &self.shared.read().state,
            &caller,
            req.job_ids.iter().copied(),
            "update",
        )?;
        if let Some(n) = &req.name {
            rudel_core::limits::check_name(n).map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let update = rudel_core::command::JobUpdate {
            priority: req.priority,
            time_limit_ms: req.time_limit_ms,
            name: req.name,
        };
        if update == rudel_core::command::JobUpdate::default() {
            return Err(Status::invalid_argument(
                "nothing to change: give --priority, --time or --name",
            ));
        }
        self.change_jobs(Command::Update {
            jobs: req.job_ids,
            update,
            now_ms: now_ms(),
        })
        .await
    }

    async fn cancel(&self, req: Request<pb::CancelRequest>) -> Result<tonic::Response<pb::CancelResponse>, Status> {
        let caller = crate::auth::caller(&req)?.clone();
        let req = req.into_inner();
        let named = req.job_ids.len() + req.tasks.len();
        if named == 0 || named > MAX_IDS {
            return Err(Status::invalid_argument(format!(
                "name between 1 and {MAX_IDS} jobs or array tasks"
            )));
        }
        let ids = req.job_ids.iter().copied().chain(req.tasks.iter().map(|t| t.job_id));
        crate::authz::check_jobs(&self.shared.read().state, &caller, ids, "cancel")?;
        let targets = crate::cancel::targets(&self.shared.read().state, &req);
        let r = self
            .proposer
            .propose(crate::cancel::command(&targets, now_ms()))
            .await?;
        crate::cancel::reply(r).map(tonic::Response::new)
    }

    type WatchStream = WatchStream;
    type StepStream = StepStream;
    type HoldAllocationStream = crate::allocation_rpc::HoldStream;

    async fn hold_allocation(
        &self,
        req: Request<pb::HoldAllocationRequest>,
    ) -> Result<tonic::Response<Self::HoldAllocationStream>, Status> {
        let caller = crate::auth::caller(&req)?.clone();
        let holder = crate::allocation_rpc::Holder {
            raft: self.raft.clone(),
            head_id: self.head_id,
            shared: self.shared.clone(),
            leases: self.leases.clone(),
            shutdown: self.shutdown.clone(),
        };
        crate::allocation_rpc::hold(holder, &caller, req.into_inner().job_id).map(tonic::Response::new)
    }

    async fn will_run(&self, req: Request<pb::SubmitRequest>) -> Result<tonic::Response<pb::WillRunResponse>, Status> {
        let caller = crate::auth::caller(&req)?.clone();
        let req = req.into_inner();
        let mut spec = spec_from_pb(req.spec.ok_or_else(|| Status::invalid_argument("missing job spec"))?)?;
        spec.user = crate::authz::submit_user(&caller, &req.as_user)?;
        // Copied under the lock, worked out off the runtime: a large state takes a while.
        let state = self.shared.read().state.clone();
        let job_id = state.next_job_id;
        let w = tokio::task::spawn_blocking(move || rudel_core::sched::will_run::will_run(state, spec))
            .await
            .map_err(|e| Status::internal(format!("estimate failed: {e}")))?
            .map_err(Status::invalid_argument)?;
        Ok(tonic::Response::new(pb::WillRunResponse {
            job_id,
            start_ms: w.start_ms.unwrap_or(0),
            nodes: w.nodes,
            cpus: w.cpus,
            partition: w.partition,
            reason: w.reason,
        }))
    }

    async fn complete_allocation(
        &self,
        req: Request<pb::CompleteAllocationRequest>,
    ) -> Result<tonic::Response<pb::CancelResponse>, Status> {
        let caller = crate::auth::caller(&req)?.clone();
        let cmd = crate::allocation_rpc::complete(&self.shared.read().state, &caller, req.get_ref())?;
        let r = self.proposer.propose(cmd).await?;
        crate::cancel::reply(r).map(tonic::Response::new)
    }

    async fn step(
        &self,
        req: Request<tonic::Streaming<pb::StepClientMessage>>,
    ) -> Result<tonic::Response<StepStream>, Status> {
        // Steps live in the leader, whose sessions reach the agents.
        if let Some(s) = crate::output_relay::not_leader(&self.raft, self.head_id) {
            return Err(s);
        }
        let caller = crate::auth::caller(&req)?.clone();
        let peer = req.remote_addr().map(|a| a.ip());
        let here = self.advertise.parse::<std::net::SocketAddr>().map(|a| a.ip()).ok();
        let rx = crate::client_steps::serve(self.agents.clone(), caller, peer, here, req.into_inner()).await?;
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        )))
    }

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<tonic::Response<WatchStream>, Status> {
        let ids = req.into_inner().job_ids;
        if ids.is_empty() || ids.len() > MAX_IDS {
            return Err(Status::invalid_argument(format!(
                "name between 1 and {MAX_IDS} job ids"
            )));
        }
        {
            let a = self.shared.read();
            if let Some(missing) = ids.iter().find(|id| !a.state.jobs.contains_key(id)) {
                return Err(Status::not_found(format!("no job {missing}")));
            }
        }
        let (tx, rx) = mpsc::channel(4);
        let shared = self.shared.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut changed = shared.subscribe();
            let mut last_sent = None;
            loop {
                let update = {
                    let a = shared.read();
                    let jobs: Vec<pb::JobInfo> = ids
                        .iter()
                        .filter_map(|id| a.state.jobs.get(id))
                        .map(|j| job_info(&a.state, j, false))
                        .collect();
                    // A job pruned from memory has long finished.
                    let done = ids
                        .iter()
                        .all(|id| a.state.jobs.get(id).is_none_or(|j| j.is_finished()));
                    pb::WatchUpdate { jobs, done }
                };
                let done = update.done;
                // Progress is rate-limited; the final update goes out at once (it ends
                // `rudel run` and `rudel wait`, whose latency users feel).
                let due = last_sent.is_none_or(|t: tokio::time::Instant| t.elapsed() >= WATCH_MIN_INTERVAL);
                if !done && !due {
                    if let Some(t) = last_sent {
                        tokio::time::sleep_until(t + WATCH_MIN_INTERVAL).await;
                    }
                    continue;
                }
                if tx.send(Ok(update)).await.is_err() || done {
                    return;
                }
                last_sent = Some(tokio::time::Instant::now());
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => {
                        let _ = tx.send(Err(Status::unavailable("head shutting down"))).await;
                        return;
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<tonic::Response<pb::ListNodesResponse>, Status> {
        self.read_barrier(req.into_inner().stale).await?;
        let a = self.shared.read();
        Ok(tonic::Response::new(pb::ListNodesResponse {
            nodes: a.state.nodes.iter().map(node_info).collect(),
        }))
    }

    async fn drain(&self, req: Request<pb::DrainRequest>) -> Result<tonic::Response<pb::DrainResponse>, Status> {
        crate::auth::require_operator(&req, "drain")?;
        let req = req.into_inner();
        let reason = if req.reason.is_empty() {
            "drained by an operator".to_string()
        } else {
            req.reason
        };
        self.change_nodes(Command::Drain {
            nodes: req.nodes,
            reason,
            now_ms: now_ms(),
        })
        .await
    }

    async fn resume(&self, req: Request<pb::ResumeRequest>) -> Result<tonic::Response<pb::DrainResponse>, Status> {
        crate::auth::require_operator(&req, "resume")?;
        self.change_nodes(Command::Resume {
            nodes: req.into_inner().nodes,
            now_ms: now_ms(),
        })
        .await
    }

    async fn forget_node(
        &self,
        req: Request<pb::ForgetNodeRequest>,
    ) -> Result<tonic::Response<pb::ForgetNodeResponse>, Status> {
        crate::auth::require_admin(&req, "node forget")?;
        let who = crate::auth::caller(&req).map(|c| c.name.clone()).unwrap_or_default();
        let name = req.into_inner().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("name the node to forget"));
        }
        let cmd = Command::ForgetNode {
            name: name.clone(),
            now_ms: now_ms(),
        };
        match self.proposer.propose(cmd).await? {
            Response::NodeForgotten { tasks, revoked_certs } => {
                tracing::warn!(node = %name, by = %who, tasks, revoked_certs, "node forgotten: its name may be taken by another machine");
                Ok(tonic::Response::new(pb::ForgetNodeResponse { tasks, revoked_certs }))
            }
            Response::Rejected { reason } => Err(Status::not_found(reason)),
            other => Err(Status::internal(format!("unexpected forget result {other:?}"))),
        }
    }

    async fn exec(&self, req: Request<pb::ExecRequest>) -> Result<tonic::Response<pb::ExecResponse>, Status> {
        crate::auth::require_admin(&req, "exec")?;
        crate::exec::run(&self.shared, &self.sessions, req.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<tonic::Response<pb::CreateTokenResponse>, Status> {
        crate::auth::require_admin(&req, "token create")?;
        let r = req.into_inner();
        let role: Role = if r.role.is_empty() {
            Role::Agent
        } else {
            r.role.parse().map_err(Status::invalid_argument)?
        };
        let ca = crate::credentials::cluster_ca(&self.shared).map_err(Status::unavailable)?;
        let ttl = (r.ttl_ms > 0).then(|| Duration::from_millis(r.ttl_ms));
        crate::identity::check_token_user(role, &r.user)?;
        let cert_ttl = if r.cert_ttl_ms > 0 {
            r.cert_ttl_ms
        } else {
            crate::credentials::DEFAULT_CERT_TTL_MS
        };
        match crate::credentials::create_token(&self.proposer, &ca, role, r.description, ttl, cert_ttl, r.user).await {
            Ok((token, expires)) => {
                tracing::info!(token = token.id, role = %role, "join token created");
                Ok(tonic::Response::new(pb::CreateTokenResponse {
                    id: token.id,
                    token: token.to_string(),
                    role: role.to_string(),
                    expires_unix_ms: expires.unwrap_or(0),
                }))
            }
            Err(Response::Rejected { reason }) => Err(Status::unavailable(reason)),
            Err(other) => Err(Status::internal(format!("unexpected token result {other:?}"))),
        }
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<tonic::Response<pb::ListTokensResponse>, Status> {
        crate::auth::require_admin(&req, "token list")?;
        self.read_barrier(false).await?;
        let a = self.shared.read();
        let sec = &a.state.security;
        let now = now_ms();
        let tokens = sec
            .tokens
            .values()
            .map(|t| pb::TokenInfo {
                id: t.id,
                role: t.role.to_string(),
                description: t.description.clone(),
                created_unix_ms: t.created_ms,
                expires_unix_ms: t.expires_ms.unwrap_or(0),
                revoked_unix_ms: t.revoked_ms.unwrap_or(0),
                uses: t.uses,
                cert_ttl_ms: t.cert_ttl_ms,
                holders: sec
                    .certs
                    .values()
                    .filter(|c| c.token == Some(t.id) && c.revoked_ms.is_none() && c.expires_ms > now)
                    .map(|c| c.name.clone())
                    .collect(),
            })
            .collect();
        Ok(tonic::Response::new(pb::ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<tonic::Response<pb::RevokeTokenResponse>, Status> {
        crate::auth::require_admin(&req, "token revoke")?;
        let id = req.into_inner().id;
        match self
            .proposer
            .propose(Command::RevokeToken { id, now_ms: now_ms() })
            .await?
        {
            Response::TokenRevoked { certs } => {
                tracing::warn!(token = id, revoked = ?certs, "join token revoked");
                Ok(tonic::Response::new(pb::RevokeTokenResponse { revoked: certs }))
            }
            Response::Rejected { reason } => Err(Status::not_found(reason)),
            other => Err(Status::internal(format!("unexpected revoke result {other:?}"))),
        }
    }

    async fn list_heads(
        &self,
        _req: Request<pb::ListHeadsRequest>,
    ) -> Result<tonic::Response<pb::ListHeadsResponse>, Status> {
        Ok(tonic::Response::new(crate::heads::list(&self.raft, self.head_id)))
    }

    async fn add_head(&self, req: Request<pb::AddHeadRequest>) -> Result<tonic::Response<pb::AddHeadResponse>, Status> {
        crate::auth::require_admin(&req, "adding a head")?;
        let addr = req.into_inner().addr;
        if addr.is_empty() || addr.parse::<std::net::SocketAddr>().is_err() && !addr.contains(':') {
            return Err(Status::invalid_argument(format!(
                "head address {addr:?}: expected HOST:PORT"
            )));
        }
        let id = crate::heads::add(&self.raft, &self.membership_changes, self.head_id, &addr).await?;
        Ok(tonic::Response::new(pb::AddHeadResponse { id }))
    }

    async fn promote_head(
        &self,
        req: Request<pb::PromoteHeadRequest>,
    ) -> Result<tonic::Response<pb::PromoteHeadResponse>, Status> {
        crate::auth::require_admin(&req, "promoting a head")?;
        crate::heads::promote(&self.raft, &self.membership_changes, self.head_id, req.into_inner().id).await?;
        Ok(tonic::Response::new(pb::PromoteHeadResponse {}))
    }

    async fn remove_head(
        &self,
        req: Request<pb::RemoveHeadRequest>,
    ) -> Result<tonic::Response<pb::RemoveHeadResponse>, Status> {
        crate::auth::require_admin(&req, "removing a head")?;
        crate::heads::remove(&self.raft, &self.membership_changes, self.head_id, req.into_inner().id).await?;
        Ok(tonic::Response::new(pb::RemoveHeadResponse {}))
    }

    async fn history(&self, req: Request<pb::HistoryRequest>) -> Result<tonic::Response<pb::HistoryResponse>, Status> {
        let jobs = crate::history_service::history(&self.shared, req.into_inner()).await?;
        Ok(tonic::Response::new(pb::HistoryResponse { jobs }))
    }

    async fn get_sched_config(
        &self,
        _req: Request<pb::GetSchedConfigRequest>,
    ) -> Result<tonic::Response<pb::SchedConfig>, Status> {
        let c = self.shared.read().state.sched.clone();
        Ok(tonic::Response::new(crate::sched_config::to_pb(&c)))
    }

    async fn set_sched_config(
        &self,
        req: Request<pb::SetSchedConfigRequest>,
    ) -> Result<tonic::Response<pb::SchedConfig>, Status> {
        crate::auth::require_admin(&req, "config set")?;
        let current = self.shared.read().state.sched.clone();
        crate::sched_config::set(&self.proposer, &current, req.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn read_output(
        &self,
        req: Request<pb::ReadOutputRequest>,
    ) -> Result<tonic::Response<pb::ReadOutputResponse>, Status> {
        let caller = crate::auth::caller(&req)?.clone();
        let job = req.get_ref().job_id;
        crate::authz::check_jobs(&self.shared.read().state, &caller, [job], "read the output of")?;
        crate::output_relay::read(&self.raft, self.head_id, &self.shared, &self.sessions, req.into_inner())
            .await
            .map(tonic::Response::new)
    }

    async fn list_partitions(
        &self,
        _req: Request<pb::ListPartitionsRequest>,
    ) -> Result<tonic::Response<pb::ListPartitionsResponse>, Status> {
        let r = crate::sched_config::partitions(&self.shared.read().state);
        Ok(tonic::Response::new(r))
    }

    async fn campaign(
        &self,
        req: Request<pb::CampaignRequest>,
    ) -> Result<tonic::Response<pb::CampaignResponse>, Status> {
        crate::auth::require_admin(&req, "campaign")?;
        tracing::warn!(head = self.head_id, "starting an election on request (step-down drill)");
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Status::internal(format!("cannot start an election: {e}")))?;
        Ok(tonic::Response::new(pb::CampaignResponse {}))
    }

    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Result<tonic::Response<pb::WhoAmIResponse>, Status> {
        let c = crate::auth::caller(&req)?;
        Ok(tonic::Response::new(pb::WhoAmIResponse {
            user: c.user.clone(),
            uid: c.uid,
            role: c.role.to_string(),
            transport: c.transport.as_str().to_string(),
            fingerprint: c.fingerprint.clone(),
        }))
    }

    async fn cluster_info(
        &self,
        req: Request<pb::ClusterInfoRequest>,
    ) -> Result<tonic::Response<pb::ClusterInfoResponse>, Status> {
        let with_hash = req.into_inner().with_hash;
        let hashed = with_hash.then(|| self.state_hash());
        let m = self.raft.metrics().borrow().clone();
        let mut leader_addr = m
            .current_leader
            .and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.addr.clone()))
            .unwrap_or_default();
        let mut is_leader = m.current_leader == Some(self.head_id);
        // A leader cut off from the majority still believes it leads (until it hears of a
        // newer term); clients asking "who leads" must not be sent to it while a real
        // leader serves on the other side. So a leader answers yes only once a quorum has
        // just confirmed it (one heartbeat round, well under a millisecond on a LAN).
        if is_leader && m.membership_config.membership().voter_ids().count() > 1 {
            let confirmed = tokio::time::timeout(LEADERSHIP_CONFIRM, self.raft.ensure_linearizable()).await;
            if !matches!(confirmed, Ok(Ok(_))) {
                is_leader = false;
                leader_addr.clear();
            }
        }
        Ok(tonic::Response::new(pb::ClusterInfoResponse {
            node_id: self.head_id,
            leader_addr,
            is_leader,
            term: m.current_term,
            last_applied: match &hashed {
                Some((idx, _)) => *idx,
                None => m.last_applied.map_or(0, |l| l.index),
            },
            version: env!("CARGO_PKG_VERSION").into(),
            state_hash: hashed.map(|(_, h)| h).unwrap_or_default(),
        }))
    }
}
