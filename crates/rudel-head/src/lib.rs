//! rudel-head: the controller. Raft glue and storage, the gRPC services for clients,
//! agents and peer heads, and the dispatch of committed assignments to agents.
pub mod agent_service;
pub mod allocation_leases;
pub mod allocation_rpc;
pub mod auth;
pub mod authz;
pub mod cancel;
pub mod client_service;
mod client_steps;
pub mod convert;
pub mod credentials;
pub mod enroll_service;
pub mod exec;
mod explain_rpc;
pub mod group_join;
pub mod heads;
pub mod history;
mod history_index;
mod history_service;
pub mod history_step;
mod history_sync;
pub mod history_task;
pub mod identity;
pub mod kv;
mod limits_rpc;
pub mod local_socket;
pub mod lock;
pub mod orphan_nodes;
pub mod output_relay;
pub mod proposer;
pub mod raft;
pub mod reports;
mod requeue_rpc;
pub mod sched_config;
mod share_rpc;
pub mod socket_forward;
mod step_acct;
mod step_fanout;
mod step_records;
mod step_relay;
mod step_stdin;
pub mod step_tree;
pub mod steps;
pub mod submit_batch;
mod submit_rate;
pub mod timers;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rudel_core::security::Role;
use rudel_proto::v1::agent_link_server::AgentLinkServer;
use rudel_proto::v1::enroll_server::EnrollServer;
use rudel_proto::v1::raft_peer_server::RaftPeerServer;
use rudel_proto::v1::rudel_server::RudelServer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use raft::{Raft, RaftTiming, SharedState};

/// Largest gRPC message a head accepts (a submit with a big script or environment).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// How a head is started.
#[derive(Clone, Debug)]
pub struct HeadConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Address other heads and agents use to reach this one (defaults to `listen`).
    pub advertise: Option<String>,
    pub head_id: u64,
    pub timing: RaftTiming,
    /// Heartbeat interval asked of agents.
    pub agent_heartbeat_ms: u64,
    /// Commit timeout for one proposal.
    pub propose_timeout: Duration,
    /// An agent silent or disconnected this long is declared lost.
    pub node_timeout: Duration,
    /// Join an existing group on first start: (address of any head, head token).
    pub join: Option<(String, String)>,
    /// How long the initial join token (printed at first start) can be used; None: until
    /// revoked. Anyone who saw it could join a machine, so it expires by default.
    pub join_token_ttl: Option<Duration>,
    /// How long finished jobs stay in the accounting store (`history.redb`).
    pub history_retention: Duration,
    /// When and how job steps are launched through a tree of agents (`step_tree.rs`).
    pub step_tree: step_tree::TreeConfig,
    /// How long an interactive allocation (salloc, srun outside a job) outlives its
    /// client's last `HoldAllocation` stream before the leader cancels it.
    pub allocation_lease: Duration,
}

/// Default lifetime of the initial join token.
pub const DEFAULT_JOIN_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

impl HeadConfig {
    /// Defaults for a one-head cluster in `data_dir` on `listen`.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> HeadConfig {
        HeadConfig {
            data_dir,
            listen,
            advertise: None,
            head_id: 1,
            timing: RaftTiming::default(),
            agent_heartbeat_ms: 1_000,
            propose_timeout: Duration::from_secs(10),
            node_timeout: Duration::from_secs(10),
            join: None,
            join_token_ttl: Some(DEFAULT_JOIN_TOKEN_TTL),
            history_retention: history::DEFAULT_RETENTION,
            step_tree: step_tree::TreeConfig::default(),
            allocation_lease: allocation_leases::DEFAULT_LEASE,
        }
    }
}

/// Why a head could not start.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    #[error("cannot create data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error("cannot open the store {path}: {source}")]
    Store { path: String, source: Box<redb::Error> },
    #[error("raft: {0}")]
    Raft(String),
    #[error(transparent)]
    History(#[from] history::HistoryError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Propose(#[from] proposer::ProposeError),
    /// The replicated state refused a command (or answered something else).
    #[error("{what}: {reason}")]
    Rejected { what: String, reason: String },
}

impl From<rudel_tls::TlsError> for HeadError {
    fn from(e: rudel_tls::TlsError) -> HeadError {
        HeadError::Tls(e.to_string())
    }
}

/// A running head; dropping it without `shutdown` leaves tasks running until the runtime ends.
pub struct Head {
    pub raft: Raft,
    pub shared: Arc<SharedState>,
    pub local_addr: SocketAddr,
    /// This head's id in the group.
    pub head_id: u64,
    /// The initial join token (None once revoked or expired).
    pub join_token: Option<String>,
    /// When it expires (ms since the epoch; None: never).
    pub join_token_expires_ms: Option<u64>,
    /// Admin credentials for the CLI on this machine.
    pub admin_dir: PathBuf,
    shutdown_tx: watch::Sender<bool>,
    server: JoinHandle<()>,
    /// The local socket servers and their paths (removed at shutdown).
    socket_servers: Vec<JoinHandle<()>>,
    pub socket_paths: Vec<PathBuf>,
    reports: JoinHandle<()>,
    /// Commits ended job steps to the log (see `step_records`).
    step_records: JoinHandle<()>,
    /// Commits concurrent submits together (see `submit_batch`).
    submit_batcher: JoinHandle<()>,
    /// Asking the leader to make this (joining) head a voter.
    promote: Option<JoinHandle<()>>,
    /// Declares nodes without a session lost (see `orphan_nodes`).
    sweeper: JoinHandle<()>,
    /// Proposes `Tick` when a begin time or dependency delay is due (leader only).
    timers: JoinHandle<()>,
    lease_sweep: JoinHandle<()>,
    _lock: lock::DirLock,
}

impl Head {
    /// Opens the data directory (locked), recovers state from the store, starts Raft and
    /// serves the gRPC services on `cfg.listen`.
    pub async fn start(cfg: HeadConfig) -> Result<Head, HeadError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| HeadError::DataDir {
            dir: cfg.data_dir.display().to_string(),
            source,
        })?;
        let lock = lock::lock_dir(&cfg.data_dir)?;
        let db_path = cfg.data_dir.join("head.redb");
        let db = raft::store::open(&db_path).map_err(|source| HeadError::Store {
            path: db_path.display().to_string(),
            source: Box::new(source),
        })?;
        let log_store = raft::log_store::LogStore::new(db.clone());
        let history_path = cfg.data_dir.join("history.redb");
        let history = history::History::open(&history_path, cfg.history_retention)?;
        let (sm, shared) =
            raft::state_machine::StateMachineStore::open(db, history).map_err(|e| HeadError::Raft(e.to_string()))?;
        let config = raft::raft_config(&cfg.timing).map_err(HeadError::Raft)?;

        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| HeadError::Listen {
                addr: cfg.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| HeadError::Listen {
            addr: cfg.listen,
            source,
        })?;
        let advertise = cfg.advertise.clone().unwrap_or_else(|| local_addr.to_string());
        let tls_dir = credentials::head_tls_dir(&cfg.data_dir);
        // Which head this is: recorded on first start; a joining head gets its id (and its
        // certificate) from the group.
        let mut joined = false;
        let head_id = match heads::load_id(&cfg.data_dir) {
            Some(id) => id,
            None => {
                let id = match &cfg.join {
                    Some((addr, token)) if !rudel_tls::Credentials::exist(&tls_dir) => {
                        let (creds, id) = group_join::join(addr, token, &advertise).await?;
                        creds.save(&tls_dir)?;
                        joined = true;
                        id
                    }
                    Some(_) => {
                        // Credentials but no id: a join that stopped half-way.
                        return Err(HeadError::Raft(format!(
                            "{} holds a head certificate but no head id (an interrupted --join); \
                             remove {} to join again",
                            cfg.data_dir.display(),
                            tls_dir.display()
                        )));
                    }
                    None => cfg.head_id,
                };
                heads::save_id(&cfg.data_dir, id).map_err(|source| HeadError::DataDir {
                    dir: cfg.data_dir.display().to_string(),
                    source,
                })?;
                id
            }
        };
        // A head that joined (or is joining) a group never initializes a cluster of its own.
        let member_of_group = joined || cfg.join.is_some();

        let network = raft::network::Network::default();
        let peer_tls = network.tls.clone();
        let raft = Raft::new(head_id, config, network, log_store, sm)
            .await
            .map_err(|e| HeadError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| HeadError::Raft(e.to_string()))?;
        if !initialized && !member_of_group {
            let members = BTreeMap::from([(
                head_id,
                openraft::BasicNode {
                    addr: advertise.clone(),
                },
            )]);
            raft.initialize(members)
                .await
                .map_err(|e| HeadError::Raft(e.to_string()))?;
            tracing::info!(head = head_id, addr = %advertise, "initialized a new cluster");
        }

        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let proposer = proposer::Proposer::new(raft.clone(), cfg.propose_timeout);
        let creds =
            credentials::bootstrap(&raft, &proposer, &shared, &cfg.data_dir, head_id, cfg.join_token_ttl).await?;
        let server_tls = rudel_tls::server::server_config(&creds.creds)?;
        let _ = peer_tls.set(rudel_tls::client::client_config(&creds.creds)?);
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let reports = tokio::spawn(reports::run(proposer.clone(), reports_rx));
        let (step_records_tx, step_records_rx) = mpsc::channel(step_records::QUEUE);
        let step_records = tokio::spawn(step_records::run(proposer.clone(), step_records_rx));

        let (submits, submit_batcher) =
            submit_batch::SubmitBatcher::start(proposer.clone(), submit_batch::BatchLimits::default());

        let sessions: agent_service::SessionTable = Arc::new(Mutex::new(HashMap::new()));
        let agents = agent_service::AgentService {
            proposer: proposer.clone(),
            raft: raft.clone(),
            shared: shared.clone(),
            reports: reports_tx,
            heartbeat_ms: cfg.agent_heartbeat_ms,
            node_timeout: cfg.node_timeout,
            sessions: sessions.clone(),
            next_session: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            shutdown: shutdown_rx.clone(),
            steps: Default::default(),
            kv: Default::default(),
            step_records: step_records_tx,
            fanout: Arc::new(step_fanout::Fanout::new(cfg.step_tree)),
            clients: Default::default(),
        };
        let leases = Arc::new(allocation_leases::Leases::default());
        let client = client_service::ClientService {
            submits,
            sessions: sessions.clone(),
            proposer: proposer.clone(),
            shared: shared.clone(),
            raft: raft.clone(),
            head_id,
            shutdown: shutdown_rx.clone(),
            membership_changes: Arc::new(heads::Changes::default()),
            submit_rate: Arc::new(submit_rate::SubmitRate::default()),
            agents: agents.clone(),
            advertise: advertise.clone(),
            leases: leases.clone(),
        };
        let lease_sweep = tokio::spawn(allocation_leases::sweep(allocation_leases::Sweep {
            leases,
            lease: cfg.allocation_lease,
            raft: raft.clone(),
            head_id,
            shared: shared.clone(),
            proposer: proposer.clone(),
            shutdown: shutdown_rx.clone(),
        }));
        let sweeper = tokio::spawn(orphan_nodes::sweep(agents.clone()));
        let timers = tokio::spawn(timers::run(agents.clone()));
        let peer = raft::network::PeerService { raft: raft.clone() };
        let enroll = enroll_service::EnrollService {
            proposer: proposer.clone(),
            shared: shared.clone(),
        };

        let socket_listeners =
            local_socket::bind(&cfg.data_dir, local_addr.port()).map_err(|source| HeadError::DataDir {
                dir: local_socket::data_dir_socket(&cfg.data_dir).display().to_string(),
                source,
            })?;
        let socket_paths: Vec<PathBuf> = socket_listeners.iter().map(|(p, _)| p.clone()).collect();
        let socket_client = client.clone();
        let incoming = rudel_tls::server::incoming(listener, server_tls, shutdown_rx.clone());
        let mut stop = shutdown_rx.clone();
        let users = auth::require(
            shared.clone(),
            "client",
            &[Role::Client, Role::Operator, Role::Admin, Role::Head],
        );
        let nodes = auth::require(shared.clone(), "agent", &[Role::Agent]);
        let head_check = Arc::new(rudel_tls::server::HeadCertCheck::new(&creds.creds.ca_pem)?);
        let heads = auth::require_head(shared.clone(), head_check);
        let leader_link = Arc::new(socket_forward::LeaderLink::new(raft.clone(), head_id, peer_tls.clone()));
        let socket_servers = local_socket::serve(
            socket_listeners,
            socket_client,
            users.clone(),
            leader_link,
            shutdown_rx.clone(),
        );
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                RudelServer::new(client)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(256 << 20),
                users,
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                AgentLinkServer::new(agents)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(256 << 20),
                nodes,
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                RaftPeerServer::new(peer)
                    .max_decoding_message_size(256 << 20)
                    .max_encoding_message_size(256 << 20),
                heads,
            ))
            .add_service(EnrollServer::new(enroll));
        let server = tokio::spawn(async move {
            let res = router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
        tracing::info!(addr = %local_addr, head = head_id, data = %cfg.data_dir.display(), "head listening");
        let is_voter = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == head_id);
        let promote = match &cfg.join {
            Some((addr, _)) if !is_voter => {
                let tls = rudel_tls::client::client_config(&creds.creds)?;
                Some(tokio::spawn(group_join::promote(vec![addr.clone()], tls, head_id)))
            }
            _ => None,
        };
        Ok(Head {
            raft,
            shared,
            local_addr,
            head_id,
            join_token: creds.join_token,
            join_token_expires_ms: creds.join_token_expires_ms,
            admin_dir: creds.admin_dir,
            shutdown_tx,
            server,
            socket_servers,
            socket_paths,
            reports,
            step_records,
            submit_batcher,
            promote,
            sweeper,
            timers,
            lease_sweep,
            _lock: lock,
        })
    }

    /// Resolves, with the reason, if this head's Raft core stops by itself: a failed
    /// write to its log or state (disk full, I/O error) is fatal to openraft, and a head
    /// that can no longer take part in the group should exit so that it is noticed and
    /// restarted once the disk is fixed, rather than linger refusing every request.
    pub async fn failure(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return match &metrics.borrow().running_state {
                    Err(fatal) => fatal.to_string(),
                    Ok(()) => "the Raft core stopped".to_string(),
                };
            }
        }
    }

    /// Creates a join token for `role` valid for `ttl` (e.g. for `rudel up`'s own agent when
    /// the initial token has expired); returns it.
    pub async fn create_token(&self, role: Role, description: &str, ttl: Duration) -> Result<String, HeadError> {
        let proposer = proposer::Proposer::new(self.raft.clone(), Duration::from_secs(10));
        let ca = credentials::cluster_ca(&self.shared).map_err(HeadError::Tls)?;
        credentials::create_token(
            &proposer,
            &ca,
            role,
            description.to_string(),
            Some(ttl),
            credentials::DEFAULT_CERT_TTL_MS,
            String::new(),
        )
        .await
        .map(|(t, _)| t.to_string())
        .map_err(|r| HeadError::Rejected {
            what: "cannot create a join token".into(),
            reason: match r {
                rudel_core::Response::Rejected { reason } => reason,
                other => format!("unexpected result {other:?}"),
            },
        })
    }

    /// The node id (uid) node `name` is bound to, if it is registered and bound.
    pub fn node_uid(&self, name: &str) -> Option<String> {
        let a = self.shared.read();
        a.state.node(name).map(|n| n.uid.clone()).filter(|u| !u.is_empty())
    }

    /// Forgets node `name` as `rudel node forget` does; returns the tasks given up.
    pub async fn forget_node(&self, name: &str) -> Result<u64, HeadError> {
        let proposer = proposer::Proposer::new(self.raft.clone(), Duration::from_secs(10));
        let cmd = rudel_core::Command::ForgetNode {
            name: name.to_string(),
            now_ms: proposer::now_ms(),
        };
        let rejected = |reason| HeadError::Rejected {
            what: format!("cannot forget node {name}"),
            reason,
        };
        match proposer.propose(cmd).await? {
            rudel_core::Response::NodeForgotten { tasks, .. } => Ok(tasks),
            rudel_core::Response::Rejected { reason } => Err(rejected(reason)),
            other => Err(rejected(format!("unexpected result {other:?}"))),
        }
    }

    /// True if this head's group has other voting heads (a head that stopped can then
    /// catch up from them).
    pub fn has_peers(&self) -> bool {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v != self.head_id)
    }

    /// Stops serving, ends agent sessions and shuts Raft down.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
        local_socket::remove(&self.socket_paths);
        for s in self.socket_servers {
            let _ = tokio::time::timeout(Duration::from_secs(1), s).await;
        }
        // Stops at the shutdown signal sent above; waited for so no cancel is proposed
        // into a Raft that is gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.lease_sweep).await;
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        self.reports.abort();
        self.step_records.abort();
        self.submit_batcher.abort();
        self.sweeper.abort();
        self.timers.abort();
        if let Some(p) = self.promote {
            p.abort();
        }
    }
}
