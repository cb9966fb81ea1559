//! The agent's life: start the executor and journal, hold a session with the head
//! (reconnecting with backoff when it is lost), run what the head launches, and deliver
//! results until acknowledged. Tasks keep running while the head is away.
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use rudel_core::{TaskKey, TaskOutcome, TaskReport};
use rudel_proto::convert::{report_to_pb, task_ref, to_task_ref};
use rudel_proto::v1 as pb;
use rudel_proto::v1::agent_link_client::AgentLinkClient;
use rudel_proto::v1::agent_message::Msg as AgentMsg;
use rudel_proto::v1::head_message::Msg as HeadMsg;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Streaming;

use crate::exec::{ExecConfig, ExecSpec, Executor};
use crate::identity;
use crate::journal::{self, Journal};
use crate::launch::exec_spec;
use crate::output::OutputFiles;

/// How an agent is run.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Head addresses (`host:port`); tried in turn.
    pub heads: Vec<String>,
    pub name: String,
    pub data_dir: PathBuf,
    pub cpus: u32,
    pub mem_bytes: u64,
    /// SIGTERM → SIGKILL delay on cancel and time limit.
    pub kill_grace: Duration,
    /// Most processes (threads included) one task may have; 0 = no limit.
    pub task_pids_max: u64,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Labels for constraint expressions (`gpu` -> "", `rack=a` -> "a").
    pub labels: std::collections::BTreeMap<String, String>,
    /// Generic resources offered (`gpu` -> 4): detected, or declared by the operator.
    pub gres: std::collections::BTreeMap<String, u32>,
    /// Without a head for this long, the agent kills its tasks (the head has long given them
    /// up by then); `None` keeps them forever.
    pub orphan_timeout: Option<Duration>,
    /// Join token, used when the data directory holds no valid certificate yet.
    pub token: Option<String>,
    /// Run jobs of root (uid 0) when the agent runs as root (`--allow-root-jobs`).
    pub allow_root_jobs: bool,
    /// Give every task a private `/tmp` (`--private-tmp`; needs root).
    pub private_tmp: bool,
    /// Tests only: the launch-tree port told to the head instead of the listener's own.
    pub tree_advertise_port: Option<u16>,
}

impl AgentConfig {
    /// Defaults: this machine's name, cpus and memory.
    pub fn new(heads: Vec<String>, data_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            heads,
            name: identity::hostname(),
            data_dir,
            cpus: identity::available_cpus(),
            mem_bytes: identity::total_memory(),
            kill_grace: Duration::from_secs(10),
            task_pids_max: crate::exec::DEFAULT_TASK_PIDS_MAX,
            max_backoff: Duration::from_secs(5),
            // Detected hardware; `--label` given by the operator overrides these.
            labels: identity::hardware_labels().into_iter().collect(),
            gres: identity::detected_gres().into_iter().collect(),
            orphan_timeout: Some(Duration::from_secs(3600)),
            token: None,
            allow_root_jobs: false,
            private_tmp: false,
            tree_advertise_port: None,
        }
    }
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot use agent data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error(transparent)]
    Exec(#[from] crate::exec::ExecError),
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error("no head address given")]
    NoHead,
    #[error("{0}")]
    PrivateTmp(String),
    #[error("cannot join the cluster: {0}")]
    Enroll(String),
    #[error("{0}")]
    Revoked(String),
    /// Another machine holds this node name; retrying would not change that.
    #[error("{0}")]
    NameHeld(String),
}

struct Conn {
    tx: mpsc::UnboundedSender<pb::AgentMessage>,
    rx: Streaming<pb::HeadMessage>,
    /// Set when the head ended the session because this node's certificate was revoked.
    ended_revoked: Option<String>,
    /// Set when the head ended the session because another head leads now.
    leader: Option<String>,
}

impl Conn {
    fn send(&self, msg: AgentMsg) -> bool {
        self.tx.send(pb::AgentMessage { msg: Some(msg) }).is_ok()
    }
}

struct Agent {
    cfg: AgentConfig,
    /// TLS towards the heads, with this node's certificate.
    tls: Arc<rustls::ClientConfig>,
    /// The next connection goes here (a head named the leader) instead of the next address.
    redirect: Option<String>,
    /// The head the current (or last) connection attempt went to.
    trying: String,
    /// The last head that could not be reached (a hint naming it is not followed).
    unreachable: Option<String>,
    uid: String,
    boot_id: String,
    exec: Executor,
    journal: Journal,
    scripts_dir: PathBuf,
    /// Whom tasks run as (the job's user when the agent is root).
    run_as: crate::users::RunAs,
    /// Highest leader term seen: launches and kills from lower terms are stale.
    term: u64,
    head_index: usize,
    stopping: bool,
    /// Successors queued behind a running task (by predecessor key and attempt).
    waiting: HashMap<(TaskKey, u32), Vec<ExecSpec>>,
    /// `rudel exec` commands running here: task index -> (head's call id, output file).
    exec_calls: HashMap<u32, (u64, PathBuf)>,
    next_exec: u32,
    /// Tasks killed after too long without a head: reported as lost, not cancelled.
    abandoned: std::collections::HashSet<(TaskKey, u32)>,
    /// Output files of tasks launched here, readable by task key for remote followers.
    outputs: Arc<OutputFiles>,
    /// Tasks the job socket answers for, and its path for the tasks' environment.
    live: Arc<crate::job_socket::LiveTasks>,
    job_socket: Option<PathBuf>,
    /// The job socket's server, stopped with the agent.
    job_socket_server: Option<crate::job_socket::JobSocket>,
    /// The srun processes here following their steps.
    origins: crate::steps::Origins,
    /// This node's tasks of job steps.
    step_tasks: crate::steps::StepTasks,
    /// `rudel kv` calls sent to the head, by request id.
    pending_kv: HashMap<u64, tokio::sync::oneshot::Sender<crate::job_socket::Reply>>,
    next_step_request: u64,
    /// The PMI library MPI ranks of steps load (None: steps with PMI are refused here).
    pmi_library: Option<PathBuf>,
    /// Step launches through the tree of agents: key, listener, forwarder (`tree.rs`).
    tree: crate::tree::Tree,
}

/// Job id under which `rudel exec` commands run in the executor (never a real job: real ids
/// are assigned from 1 upwards by the state machine).
const EXEC_JOB: u64 = u64::MAX;
/// Most output of one `rudel exec` command sent back.
const EXEC_OUTPUT_MAX: u64 = 64 * 1024;

/// Where tasks' private `/tmp` directories go (`DATA/job-tmp`), when asked for; refused
/// where it cannot work: only root makes mount namespaces, and a data directory under
/// `/tmp` would hide the job scripts the agent keeps there once `/tmp` is covered.
fn private_tmp_base(cfg: &AgentConfig) -> Result<Option<std::path::PathBuf>, AgentError> {
    if !cfg.private_tmp {
        return Ok(None);
    }
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(AgentError::PrivateTmp(
            "--private-tmp needs an agent running as root (it gives each task its own mount namespace)".into(),
        ));
    }
    let data = std::fs::canonicalize(&cfg.data_dir).unwrap_or_else(|_| cfg.data_dir.clone());
    if data.starts_with("/tmp") {
        return Err(AgentError::PrivateTmp(format!(
            "--private-tmp needs a data directory outside /tmp (tasks would not see the job \
             scripts kept in {}): give --data DIR",
            data.display()
        )));
    }
    Ok(Some(data.join("job-tmp")))
}

/// Runs the agent until `shutdown` becomes true; then kills its tasks, journals their
/// results (reported as lost: the node went away) and returns.
pub async fn run(cfg: AgentConfig, mut shutdown: watch::Receiver<bool>) -> Result<(), AgentError> {
    if cfg.heads.is_empty() {
        return Err(AgentError::NoHead);
    }
    let dir_err = |source| AgentError::DataDir {
        dir: cfg.data_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&cfg.data_dir).map_err(dir_err)?;
    let _lock = identity::lock_data_dir(&cfg.data_dir).map_err(dir_err)?;
    let uid = identity::load_or_create_uid(&cfg.data_dir).map_err(dir_err)?;
    let private_tmp = private_tmp_base(&cfg)?;
    let Some((tls, creds)) = credentials(&cfg, &uid, &mut shutdown).await? else {
        return Ok(());
    };
    let (tree, mut tree_events) = crate::tree::Tree::start(creds, cfg.tree_advertise_port).await;
    let (exec, mut reports) = Executor::start(ExecConfig {
        kill_grace: cfg.kill_grace,
        pids_max: cfg.task_pids_max,
        marker_owner: uid.clone(),
        private_tmp: private_tmp.clone(),
        ..ExecConfig::default()
    })?;
    let (mut journal, recovered) = Journal::open(&cfg.data_dir)?;
    for lost in journal::reap_orphans(&recovered.orphans, &uid) {
        journal.record_end(&lost)?;
    }
    if let Some(base) = &private_tmp {
        crate::exec::private_tmp::clear(base).map_err(dir_err)?;
    }
    tracing::info!(
        name = %cfg.name, cpus = cfg.cpus, mem = cfg.mem_bytes, mem_limits = exec.mem_enforcement(),
        containment = exec.containment(),
        unacked = journal.unacked().len(), "agent starting"
    );
    let outputs = Arc::new(crate::remote_output::open_output_dir(&cfg.data_dir).map_err(dir_err)?);
    let run_as = crate::users::RunAs::detect(cfg.allow_root_jobs);
    if matches!(run_as, crate::users::RunAs::JobUser { .. }) {
        // Job users reach their script copies below it (0711: traverse, not list).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o711)).map_err(dir_err)?;
    }
    tracing::info!(run_as = %run_as.describe(), allow_root_jobs = cfg.allow_root_jobs, "tasks run as");
    // Output files of step tasks of an earlier run of this agent: their steps ended with
    // it (nothing follows them any more), so they would only fill the disk.
    let _ = std::fs::remove_dir_all(cfg.data_dir.join("steps"));
    let live = Arc::new(crate::job_socket::LiveTasks::default());
    let (to_head, mut step_requests) = tokio::sync::mpsc::unbounded_channel();
    let (stdin_acks, mut stdin_acked) = tokio::sync::mpsc::unbounded_channel();
    let job_socket = crate::job_socket::start(&cfg.data_dir, uid.clone(), live.clone(), to_head);
    let mut agent = Agent {
        live,
        job_socket: job_socket.as_ref().map(|j| j.path.clone()),
        job_socket_server: job_socket,
        origins: Default::default(),
        step_tasks: crate::steps::StepTasks::new(cfg.name.clone(), stdin_acks),
        pending_kv: HashMap::new(),
        next_step_request: 0,
        pmi_library: crate::pmi::library(&cfg.data_dir),
        tree,
        outputs,
        scripts_dir: cfg.data_dir.join("scripts"),
        run_as,
        cfg,
        tls,
        redirect: None,
        trying: String::new(),
        unreachable: None,
        uid,
        boot_id: identity::random_id(),
        exec,
        journal,
        term: 0,
        head_index: 0,
        stopping: false,
        waiting: HashMap::new(),
        exec_calls: HashMap::new(),
        next_exec: 0,
        abandoned: Default::default(),
    };
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::from_millis(100);
    let mut next_attempt = Instant::now();
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    // How often step tasks' output is read and sent on: srun shows output this late.
    let mut step_tick = tokio::time::interval(Duration::from_millis(50));
    step_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // When the session with the head was lost (None while connected).
    let mut alone_since: Option<Instant> = None;
    let mut connecting: Option<Connecting> = None;
    let mut revocation: Option<String> = None;
    let mut name_held: Option<String> = None;
    loop {
        if conn.is_none() && connecting.is_none() && Instant::now() >= next_attempt {
            let target = agent
                .redirect
                .take()
                .unwrap_or_else(|| agent.current_head().to_string());
            agent.trying = target.clone();
            connecting = Some(Box::pin(connect(target, agent.tls.clone(), agent.register_message())));
        }
        tokio::select! {
            Some(f) = step_requests.recv() => agent.step_request(f, conn.as_ref()),
            Some(ev) = tree_events.recv() => agent.tree_event(ev, conn.as_ref()),
            Some(a) = stdin_acked.recv() => {
                if let Some(c) = &conn {
                    c.send(AgentMsg::StepStdinAck(a));
                }
            }
            _ = step_tick.tick() => agent.step_tick(conn.as_ref()),
            Some(first) = reports.recv() => {
                let mut batch = vec![first];
                while let Ok(r) = reports.try_recv() {
                    batch.push(r);
                }
                agent.on_results(batch, conn.as_ref())?;
            }
            msg = next_head_message(&mut conn) => match msg {
                Some(m) => agent.on_head_message(m, conn.as_ref())?,
                None if revoked(&conn).is_some() => {
                    revocation = revoked(&conn);
                    break;
                }
                None => {
                    tracing::warn!("session with head lost; tasks keep running, reconnecting");
                    agent.origins.head_lost();
                    agent.tree.session_lost();
                    // Their connections answer that the head was lost.
                    agent.pending_kv.clear();
                    agent.redirect = conn.as_mut().and_then(|c| c.leader.take());
                    conn = None;
                    alone_since.get_or_insert_with(Instant::now);
                    next_attempt = Instant::now() + backoff;
                }
            },
            _ = heartbeat.tick() => {
                if let Some(c) = &conn {
                    c.send(AgentMsg::Heartbeat(pb::Heartbeat { now_ms: now_ms() }));
                }
                if conn.is_none() {
                    let since = *alone_since.get_or_insert_with(Instant::now);
                    if agent.cfg.orphan_timeout.is_some_and(|t| since.elapsed() >= t) {
                        agent.abandon_tasks();
                    }
                }
            }
            res = async {
                match connecting.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            }, if connecting.is_some() => {
                connecting = None;
                match res {
                    Ok(c) => {
                        backoff = Duration::from_millis(100);
                        agent.unreachable = None;
                        agent.on_connected(&c);
                        conn = Some(c);
                        alone_since = None;
                    }
                    Err(e) if e.revoked => {
                        revocation = Some(e.message);
                        break;
                    }
                    Err(e) if e.name_held => {
                        name_held = Some(e.message);
                        break;
                    }
                    Err(e) if e.leader.is_some() => {
                        // A live head answered: an election is over or under way, so retry
                        // soon. Its hint may name the leader that just died (heads learn of
                        // a new leader only when it is elected): then try the next address.
                        let leader = e.leader.unwrap_or_default();
                        tracing::info!(head = %agent.trying, leader = %leader, "not the leader");
                        if agent.unreachable.as_deref() == Some(leader.as_str()) {
                            agent.head_index += 1;
                            next_attempt = Instant::now() + Duration::from_millis(100);
                        } else {
                            agent.redirect = Some(leader);
                            next_attempt = Instant::now();
                        }
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) if e.answered => {
                        // Alive but not serving us now (e.g. no leader yet): next head, soon.
                        tracing::info!(head = %agent.trying, error = %e.message, "head refused the session");
                        agent.head_index += 1;
                        next_attempt = Instant::now() + Duration::from_millis(200);
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        tracing::warn!(head = %agent.trying, error = %e.message, retry_in = ?backoff, "cannot reach head");
                        agent.unreachable = Some(agent.trying.clone());
                        agent.head_index += 1;
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(agent.cfg.max_backoff);
                    }
                }
            }
            _ = tokio::time::sleep_until(next_attempt), if conn.is_none() && connecting.is_none() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    if let Some(why) = revocation {
        // The cluster has given this node's tasks up; a copy left running here would be a
        // second live copy of a requeued task.
        tracing::error!("{why}; killing this node's tasks and leaving the cluster");
        agent.stop(reports, None).await?;
        return Err(AgentError::Revoked(why));
    }
    if let Some(why) = name_held {
        tracing::error!("{why}");
        agent.stop(reports, None).await?;
        return Err(AgentError::NameHeld(why));
    }
    agent.stop(reports, conn).await
}

/// Why a connection attempt failed; `revoked` if the head refused our certificate as revoked.
struct ConnectError {
    message: String,
    revoked: bool,
    /// The head refused because another machine holds this node name.
    name_held: bool,
    /// The head refused because another head leads: its address.
    leader: Option<String>,
    /// A head answered (with a refusal), as opposed to no answer at all.
    answered: bool,
}

impl From<String> for ConnectError {
    fn from(message: String) -> ConnectError {
        ConnectError {
            message,
            revoked: false,
            name_held: false,
            leader: None,
            answered: false,
        }
    }
}

/// The leader's address a "not the leader" refusal names.
fn leader_of(s: &tonic::Status) -> Option<String> {
    s.metadata()
        .get("rudel-leader")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

fn is_revoked(s: &tonic::Status) -> bool {
    s.metadata().get("rudel-revoked").is_some()
}

/// The revocation message if the session ended because this node was revoked.
fn revoked(conn: &Option<Conn>) -> Option<String> {
    conn.as_ref().and_then(|c| c.ended_revoked.clone())
}

/// Opens a session with the head at `addr`, starting with `register`. Runs outside the
/// agent's loop, so tasks keep being started and results journaled while it connects.
async fn connect(addr: String, tls: Arc<rustls::ClientConfig>, register: pb::Register) -> Result<Conn, ConnectError> {
    let ep = rudel_tls::client::endpoint(&addr)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(10));
    let channel = tokio::time::timeout(Duration::from_secs(5), rudel_tls::client::connect(&ep, tls))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| rudel_tls::explain::chain(&e))?;
    let mut client = AgentLinkClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::unbounded_channel();
    let name = register.name.clone();
    let _ = tx.send(pb::AgentMessage {
        msg: Some(AgentMsg::Register(register)),
    });
    let resp = tokio::time::timeout(
        Duration::from_secs(15),
        client.session(UnboundedReceiverStream::new(rx)),
    )
    .await
    .map_err(|_| "session setup timed out".to_string())?
    .map_err(|s| ConnectError {
        message: match rudel_tls::explain::find_tls(&s) {
            Some(tls) => tls,
            None => format!("head refused the session: {}", s.message()),
        },
        revoked: is_revoked(&s),
        name_held: s.metadata().get("rudel-name-held").is_some(),
        leader: leader_of(&s),
        // Statuses made from transport failures carry their cause; a head's answer does not.
        answered: std::error::Error::source(&s).is_none(),
    })?;
    tracing::info!(head = %addr, node = %name, "connected to head");
    Ok(Conn {
        tx,
        rx: resp.into_inner(),
        ended_revoked: None,
        leader: None,
    })
}

/// File next to the certificate with its expiry (ms since the epoch).
const EXPIRES_FILE: &str = "expires";

/// True if the certificate saved in `tls_dir` has expired (by the expiry saved beside it).
fn cert_expired(tls_dir: &std::path::Path) -> bool {
    std::fs::read_to_string(tls_dir.join(EXPIRES_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|e| rudel_tls::now_ms() >= e)
}

/// True if an agent with this data directory has no usable certificate (none yet, or an
/// expired one): it needs a join token to start.
pub fn needs_certificate(data_dir: &std::path::Path) -> bool {
    let dir = rudel_tls::enroll::tls_dir(data_dir);
    !rudel_tls::Credentials::exist(&dir) || cert_expired(&dir)
}

/// The agent's TLS client configuration: from its data directory, or by joining with the
/// token (retrying while no head answers). None if asked to stop meanwhile.
async fn credentials(
    cfg: &AgentConfig,
    uid: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<(Arc<rustls::ClientConfig>, rudel_tls::Credentials)>, AgentError> {
    let dir = rudel_tls::enroll::tls_dir(&cfg.data_dir);
    let expired = cert_expired(&dir);
    let have = rudel_tls::Credentials::exist(&dir);
    let config = |c: rudel_tls::Credentials| {
        rudel_tls::client::client_config(&c)
            .map(|cfg| (cfg, c))
            .map_err(|e| AgentError::Enroll(format!("{}: {e}", dir.display())))
    };
    if have && !(expired && cfg.token.is_some()) {
        let creds = rudel_tls::Credentials::load(&dir).map_err(|e| AgentError::Enroll(e.to_string()))?;
        if expired {
            tracing::error!(dir = %dir.display(), "this node's certificate has expired; restart the agent with --token to join again");
        }
        return config(creds).map(Some);
    }
    let Some(token) = cfg.token.as_deref() else {
        return Err(AgentError::Enroll(format!(
            "no certificate in {} yet: start the agent with --token TOKEN (printed by `rudel up`/`rudel head`, or `rudel token create`)",
            dir.display()
        )));
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        match rudel_tls::enroll::join(&cfg.heads, token, &cfg.name, uid, rudel_tls::enroll::Want::Agent).await {
            Ok(j) => {
                j.creds.save(&dir).map_err(|e| AgentError::Enroll(e.to_string()))?;
                let _ = rudel_tls::creds::write_atomic(&dir.join(EXPIRES_FILE), &j.expires_unix_ms.to_string(), 0o644);
                tracing::info!(node = %cfg.name, role = %j.role, dir = %dir.display(), "joined the cluster; certificate saved");
                return config(j.creds).map(Some);
            }
            Err(rudel_tls::enroll::EnrollError::Unreachable(why)) => {
                tracing::warn!("{why}; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return Ok(None),
                }
                backoff = (backoff * 2).min(cfg.max_backoff);
            }
            Err(e) => return Err(AgentError::Enroll(e.to_string())),
        }
    }
}

type Connecting = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Conn, ConnectError>> + Send>>;

async fn next_head_message(conn: &mut Option<Conn>) -> Option<pb::HeadMessage> {
    match conn {
        Some(c) => match c.rx.message().await {
            Ok(m) => m,
            Err(e) if matches!(e.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) => {
                tracing::error!("the head ended this node's session: {}", e.message());
                if is_revoked(&e) {
                    c.ended_revoked = Some(e.message().to_string());
                }
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "head stream error");
                c.leader = leader_of(&e);
                None
            }
        },
        None => std::future::pending().await,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Agent {
    fn current_head(&self) -> &str {
        &self.cfg.heads[self.head_index % self.cfg.heads.len()]
    }

    /// What the agent tells the head when a session starts: who it is, what it runs, and
    /// the results the head has not acknowledged.
    fn register_message(&self) -> pb::Register {
        pb::Register {
            name: self.cfg.name.clone(),
            uid: self.uid.clone(),
            boot_id: self.boot_id.clone(),
            cpus: self.cfg.cpus,
            mem_bytes: self.cfg.mem_bytes,
            mem_enforcement: self.exec.mem_enforcement().into(),
            containment: self.exec.containment().into(),
            run_as: self.run_as.describe(),
            version: env!("CARGO_PKG_VERSION").into(),
            arch: std::env::consts::ARCH.into(),
            os: std::env::consts::OS.into(),
            running: self
                .exec
                .running()
                .into_iter()
                .map(|(k, a, _)| (k, a))
                .filter(|(k, _)| k.job != EXEC_JOB && k.job != crate::steps::STEP_JOB)
                .chain(self.waiting.values().flatten().map(|s| (s.key, s.attempt)))
                .map(|(k, a)| to_task_ref(k, a))
                .collect(),
            unacked: self.journal.unacked().iter().map(report_to_pb).collect(),
            labels: self.cfg.labels.clone().into_iter().collect(),
            gres: self.cfg.gres.clone().into_iter().collect(),
            steps: self
                .step_tasks
                .running_steps()
                .into_iter()
                .map(|(job, step)| pb::StepRef { job, step })
                .collect(),
            tree_port: u32::from(self.tree.port()),
        }
    }

    /// After a session is up: results that ended while it was being set up were not in
    /// the Register message; resend everything unacknowledged (the head ignores repeats).
    fn on_connected(&mut self, conn: &Conn) {
        let unacked = self.journal.unacked();
        if !unacked.is_empty() {
            conn.send(AgentMsg::Reports(pb::Reports {
                reports: unacked.iter().map(report_to_pb).collect(),
            }));
        }
    }

    fn on_results(&mut self, batch: Vec<TaskReport>, conn: Option<&Conn>) -> Result<(), AgentError> {
        let (execs, batch): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| r.key.job == EXEC_JOB);
        for r in execs {
            self.exec_done(r, conn);
        }
        let (steps, mut batch): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| r.key.job == crate::steps::STEP_JOB);
        for r in steps {
            self.step_task_done(&r, conn);
        }
        if batch.is_empty() {
            return Ok(());
        }
        // Start queued successors before anything else: their cores just became free.
        if !self.stopping && !self.waiting.is_empty() {
            let mut next = Vec::new();
            for r in &batch {
                if let Some(specs) = self.waiting.remove(&(r.key, r.attempt)) {
                    next.extend(specs);
                }
            }
            self.start_all(next)?;
        }
        for r in &batch {
            self.live.remove(r.key, r.attempt);
        }
        for r in &mut batch {
            if self.abandoned.remove(&(r.key, r.attempt)) {
                r.outcome = TaskOutcome::Lost;
                r.message = "killed by its agent after too long without a head (--orphan-timeout)".into();
            }
        }
        if self.stopping {
            // Killed because the agent stops: from the cluster's view the node went away.
            for r in &mut batch {
                r.outcome = TaskOutcome::Lost;
                r.message = "the agent was stopped while the task ran".into();
            }
        }
        for r in &batch {
            self.journal.record_end(r)?;
        }
        if let Some(c) = conn {
            c.send(AgentMsg::Reports(pb::Reports {
                reports: batch.iter().map(report_to_pb).collect(),
            }));
        }
        Ok(())
    }

    fn on_head_message(&mut self, m: pb::HeadMessage, conn: Option<&Conn>) -> Result<(), AgentError> {
        match m.msg {
            Some(HeadMsg::Welcome(w)) => {
                // The head that committed our registration leads now; its term is the bar
                // for this session (a wiped, re-created cluster starts again at term 1).
                self.term = w.term;
                self.tree.set_key(&w.launch_key);
                if w.node_name != self.cfg.name {
                    tracing::warn!(ours = %self.cfg.name, theirs = %w.node_name, "head knows this node under another name");
                }
            }
            Some(HeadMsg::Launch(l)) => {
                if l.term < self.term {
                    tracing::warn!(
                        term = l.term,
                        highest = self.term,
                        "ignoring launch from a stale leader"
                    );
                    return Ok(());
                }
                self.term = l.term;
                // Tasks to run now first, so a successor queued behind a task of the same
                // message finds it running.
                let (now, mut later): (Vec<_>, Vec<_>) = l.tasks.into_iter().partition(|t| t.after.is_none());
                self.launch_all(now, conn)?;
                // Successors in chain order: one whose predecessor is still in the list waits.
                while !later.is_empty() {
                    let keys: Vec<_> = later.iter().filter_map(|t| t.task.as_ref().map(task_ref)).collect();
                    let (ready, rest): (Vec<_>, Vec<_>) = later
                        .into_iter()
                        .partition(|t| t.after.as_ref().is_none_or(|a| !keys.contains(&task_ref(a))));
                    let stuck = ready.is_empty();
                    self.launch_all(ready, conn)?;
                    if stuck {
                        // A cycle cannot come from the head; launch in order rather than drop.
                        self.launch_all(rest, conn)?;
                        break;
                    }
                    later = rest;
                }
            }
            Some(HeadMsg::Kill(k)) => {
                if k.term < self.term {
                    tracing::warn!(term = k.term, highest = self.term, "ignoring kill from a stale leader");
                    return Ok(());
                }
                // Preemption sends its own grace; a cancel uses the agent's.
                let grace = k.grace_ms.map(std::time::Duration::from_millis);
                for r in &k.tasks {
                    let (key, attempt) = task_ref(r);
                    if self.drop_waiting(key, attempt, conn)? {
                        continue;
                    }
                    let killed = match grace {
                        Some(g) => self.exec.preempt(key, attempt, g),
                        None => self.exec.kill(key, attempt),
                    };
                    if !killed {
                        tracing::debug!(task = %key, attempt, "kill for a task not running here");
                    }
                }
            }
            Some(HeadMsg::Exec(e)) => self.exec_start(e, conn),
            Some(HeadMsg::ReadOutput(r)) => {
                if let Some(c) = conn {
                    crate::remote_output::answer(self.outputs.clone(), r, c.tx.clone());
                }
            }
            Some(HeadMsg::StepReply(r)) => self.origins.answered(r),
            Some(HeadMsg::KvReply(r)) => {
                if let Some(tx) = self.pending_kv.remove(&r.id) {
                    let _ = tx.send(crate::job_socket::Reply::kv(r));
                }
            }
            Some(HeadMsg::StepOutput(o)) => self.origins.output(o),
            Some(HeadMsg::StepTaskEnd(e)) => self.origins.ended(e),
            Some(HeadMsg::StepStdin(s)) => {
                if let Some(s) = self.tree.hold_stdin(s) {
                    self.step_tasks.stdin(s);
                }
            }
            Some(HeadMsg::StepStdinAck(a)) => self.origins.stdin_ack(a),
            Some(HeadMsg::StepLaunch(l)) if l.term < self.term => {
                tracing::warn!(
                    term = l.term,
                    highest = self.term,
                    "ignoring a step launch from a stale leader"
                );
            }
            Some(HeadMsg::StepLaunch(l)) => self.step_launch(l, conn),
            Some(HeadMsg::TreeLaunch(t)) => {
                // Refused (a clock far from the head's, a stale term): this node and its
                // subtree would never hear of the step; the head sends them directly.
                let undelivered = crate::tree::undelivered(&t);
                if let Err(error) = self.tree_launch(t, conn, "head") {
                    tracing::warn!(error = %error, "refused a step launch of the tree from the head");
                    if let (Some(c), Some(mut u)) = (conn, undelivered) {
                        u.error = error;
                        c.send(AgentMsg::TreeUndelivered(u));
                    }
                }
            }
            Some(HeadMsg::StepSignal(s)) => {
                let keys = self.step_tasks.keys_of(s.job, Some(s.step));
                if keys.is_empty() {
                    self.tree.kill_without_tasks(s.job, s.step);
                }
                for key in keys {
                    self.exec.kill(key, 1);
                }
            }
            Some(HeadMsg::Ack(a)) => {
                let done: Vec<_> = a.tasks.iter().map(task_ref).collect();
                self.journal.ack(&done)?;
            }
            None => {}
        }
        Ok(())
    }

    /// Kills every task after too long without a head: by now it has declared this node
    /// lost and rerun (or failed) them, so their results would be ignored anyway.
    fn abandon_tasks(&mut self) {
        let running: Vec<(TaskKey, u32)> = self.exec.running().into_iter().map(|(k, a, _)| (k, a)).collect();
        if running.is_empty() && self.waiting.is_empty() {
            return;
        }
        tracing::warn!(
            tasks = running.len(),
            "no head for longer than the orphan timeout; killing tasks"
        );
        self.waiting.clear();
        for (k, a) in running {
            if k.job != EXEC_JOB && k.job != crate::steps::STEP_JOB {
                self.abandoned.insert((k, a));
            }
            self.exec.kill(k, a);
        }
    }

    /// Starts a `rudel exec` command: outside the queue, unpinned, output to a file.
    fn exec_start(&mut self, e: pb::ExecCommand, conn: Option<&Conn>) {
        let reply_err = |msg: String| {
            if let Some(c) = conn {
                c.send(AgentMsg::ExecResult(pb::ExecResult {
                    id: e.id,
                    error: msg,
                    ..Default::default()
                }));
            }
        };
        if e.argv.is_empty() {
            return reply_err("no command".into());
        }
        let dir = self.cfg.data_dir.join("exec");
        if let Err(err) = std::fs::create_dir_all(&dir) {
            return reply_err(format!("cannot create {}: {err}", dir.display()));
        }
        let index = self.next_exec;
        self.next_exec = self.next_exec.wrapping_add(1);
        let out = dir.join(format!("{index}.out"));
        let spec = ExecSpec {
            key: TaskKey { job: EXEC_JOB, index },
            attempt: 1,
            argv: e.argv,
            cwd: std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from),
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .filter(|(k, _)| k != "RUDEL_NODE")
                .chain([("RUDEL_NODE".to_string(), self.cfg.name.clone())])
                .collect(),
            stdout: Some(out.clone()),
            stderr: crate::exec::StderrTarget::SameAsStdout,
            cores: Vec::new(),
            mem_bytes: 0,
            time_limit: Some(Duration::from_millis(e.timeout_ms.max(1))),
            warn: None,
            append_output: false,
            stdin: None,
            run_as: None,
        };
        self.exec_calls.insert(index, (e.id, out));
        // The result (including a failure to start) arrives through the report channel.
        self.exec.launch(spec);
    }

    /// Sends the result of a finished `rudel exec` command.
    fn exec_done(&mut self, r: TaskReport, conn: Option<&Conn>) {
        let Some((id, path)) = self.exec_calls.remove(&r.key.index) else {
            return;
        };
        let mut output = Vec::new();
        let mut truncated = false;
        if let Ok(f) = std::fs::File::open(&path) {
            use std::io::Read;
            let _ = f.take(EXEC_OUTPUT_MAX + 1).read_to_end(&mut output);
            if output.len() as u64 > EXEC_OUTPUT_MAX {
                output.truncate(EXEC_OUTPUT_MAX as usize);
                truncated = true;
            }
        }
        let _ = std::fs::remove_file(&path);
        let result = pb::ExecResult {
            id,
            exit_code: r.exit_code,
            signal: r.signal,
            output,
            truncated,
            timed_out: r.outcome == TaskOutcome::Timeout,
            error: if r.outcome == TaskOutcome::SpawnFailed {
                r.message
            } else {
                String::new()
            },
        };
        if let Some(c) = conn {
            c.send(AgentMsg::ExecResult(result));
        }
    }

    /// Removes a successor that has not started; reports it cancelled. False if unknown.
    fn drop_waiting(&mut self, key: TaskKey, attempt: u32, conn: Option<&Conn>) -> Result<bool, AgentError> {
        let mut pred = None;
        for (p, specs) in self.waiting.iter_mut() {
            if let Some(pos) = specs.iter().position(|s| s.key == key && s.attempt == attempt) {
                specs.remove(pos);
                pred = Some(*p);
            }
        }
        self.waiting.retain(|_, v| !v.is_empty());
        let found = pred.is_some();
        if let Some(p) = pred {
            // Tasks queued behind the dropped one now wait for its predecessor.
            if let Some(next) = self.waiting.remove(&(key, attempt)) {
                if self.is_live(p.0, p.1) {
                    self.waiting.entry(p).or_default().extend(next);
                } else {
                    self.start_all(next)?;
                }
            }
        }
        if found {
            let now = now_ms();
            let report = TaskReport {
                key,
                attempt,
                outcome: TaskOutcome::Cancelled,
                exit_code: None,
                signal: None,
                start_ms: now,
                end_ms: now,
                message: "cancelled before it started".into(),
                usage: Default::default(),
            };
            self.on_results(vec![report], conn)?;
        }
        Ok(found)
    }

    /// Passes a job process's step request (or its kill) to the head; a request is
    /// answered by a StepReply, or refused at once when there is no head to ask.
    fn step_request(&mut self, f: crate::job_socket::Forward, conn: Option<&Conn>) {
        use crate::job_socket::Forward;
        use crate::steps::StepEvent;
        let (caller, step, events) = match f {
            Forward::Run { caller, step, events } => (caller, step, events),
            Forward::Kill { job, step } => {
                if let Some(c) = conn {
                    c.send(AgentMsg::StepSignal(pb::StepSignal {
                        job,
                        step,
                        signal: libc::SIGKILL,
                    }));
                }
                return;
            }
            Forward::Kv { caller, call, reply } => return self.kv_request(caller, call, reply, conn),
            Forward::Stdin {
                job,
                step,
                offset,
                data,
                eof,
            } => {
                if let Some(c) = conn {
                    c.send(AgentMsg::StepStdin(pb::StepStdin {
                        job,
                        step,
                        offset,
                        data,
                        eof,
                    }));
                }
                return;
            }
        };
        let Some(c) = conn else {
            let error = "the agent has no connection to the head right now".into();
            let _ = events.send(StepEvent::Refused { error });
            return;
        };
        self.next_step_request += 1;
        let id = self.next_step_request;
        let req = pb::StepRequest {
            id,
            task: Some(to_task_ref(caller.key, caller.attempt)),
            uid: caller.uid,
            argv: step.argv,
            ntasks: step.ntasks,
            nodes: step.nodes,
            ntasks_per_node: step.ntasks_per_node,
            cpus_per_task: step.cpus_per_task,
            nodelist: step.nodelist,
            env: step.env,
            cwd: step.cwd,
            pmi_port: u32::from(step.pmi_port),
            name: step.name,
            input: step.input,
        };
        if c.send(AgentMsg::StepRequest(req)) {
            self.origins.waiting(id, caller.key.job, events);
        } else {
            let _ = events.send(StepEvent::Refused {
                error: "the connection to the head was lost".into(),
            });
        }
    }

    /// Passes a `rudel kv` call to the head (answered by a KvReply).
    fn kv_request(
        &mut self,
        caller: crate::job_socket::Caller,
        call: crate::job_socket::KvCall,
        reply: tokio::sync::oneshot::Sender<crate::job_socket::Reply>,
        conn: Option<&Conn>,
    ) {
        use crate::job_socket::Reply;
        let Some(c) = conn else {
            let _ = reply.send(Reply::error("the agent has no connection to the head right now"));
            return;
        };
        self.pending_kv.retain(|_, tx| !tx.is_closed());
        self.next_step_request += 1;
        let id = self.next_step_request;
        let req = pb::KvRequest {
            id,
            job: caller.key.job,
            step_task: caller.step_task,
            task: Some(to_task_ref(caller.key, caller.attempt)),
            op: call.kv,
            key: call.key,
            value: call.value,
        };
        if c.send(AgentMsg::KvRequest(req)) {
            self.pending_kv.insert(id, reply);
        } else {
            let _ = reply.send(Reply::error("the connection to the head was lost"));
        }
    }

    /// Starts this node's share of a step the head launched (once: a repeat is ignored).
    fn step_launch(&mut self, l: pb::StepLaunch, conn: Option<&Conn>) {
        if !self.tree.first_time(l.job, l.step) {
            tracing::info!(job = l.job, step = l.step, "ignoring a repeated launch of a step");
            return;
        }
        if let Some(ends) = self.tree.killed_before_launch(&l, &self.cfg.name) {
            if let Some(c) = conn {
                for e in ends {
                    c.send(AgentMsg::StepTaskEnd(e));
                }
            }
            for s in self.tree.take_stdin(l.job, l.step) {
                self.step_tasks.stdin(s);
            }
            return;
        }
        let (job, step) = (l.job, l.step);
        let cx = crate::steps::LaunchCtx {
            exec: &self.exec,
            run_as: &self.run_as,
            dir: self.cfg.data_dir.join("steps"),
            node: &self.cfg.name,
            job_socket: self.job_socket.as_deref(),
            live: &self.live,
            pmi_library: self.pmi_library.as_deref(),
        };
        let failed = self.step_tasks.launch(l, &cx);
        // srun's stdin that came before this launch (through the tree a launch can be
        // overtaken by the head's first chunks), in order, now that its feeder exists.
        for s in self.tree.take_stdin(job, step) {
            self.step_tasks.stdin(s);
        }
        if let Some(c) = conn {
            for e in failed {
                c.send(AgentMsg::StepTaskEnd(e));
            }
        }
    }

    /// A launch of the tree (from the head's session or a parent agent; `from` names which,
    /// for the log): verified, its children served, then this node's share started.
    fn tree_launch(&mut self, t: pb::TreeLaunch, conn: Option<&Conn>, from: &str) -> Result<(), String> {
        if conn.is_none() {
            // Output and ends go to the head over the session: without one, let the head
            // (through the parent's report) deal with this node directly.
            return Err("this agent has no session with the head right now".into());
        }
        let l = self.tree.verify(&t, &self.cfg.name, self.term, now_ms())?;
        if self.tree.launched(l.job, l.step) {
            return Ok(());
        }
        tracing::info!(
            job = l.job,
            step = l.step,
            from,
            children = t.children.len(),
            "step launch through the tree"
        );
        self.tree.forward(l.job, l.step, t.children);
        self.step_launch(l, conn);
        Ok(())
    }

    /// What the launch tree's tasks report: a forwarded launch, or launches not delivered.
    fn tree_event(&mut self, ev: crate::tree::TreeEvent, conn: Option<&Conn>) {
        match ev {
            crate::tree::TreeEvent::Incoming { launch, reply } => {
                let answer = self.tree_launch(launch, conn, "agent").err().unwrap_or_default();
                if !answer.is_empty() {
                    tracing::warn!(error = %answer, "refused a forwarded step launch");
                }
                let _ = reply.send(answer);
            }
            crate::tree::TreeEvent::Undelivered(u) => {
                if let Some(c) = conn {
                    c.send(AgentMsg::TreeUndelivered(u));
                }
            }
        }
    }

    /// Sends step tasks' new output, and kills steps whose srun here hung up.
    fn step_tick(&mut self, conn: Option<&Conn>) {
        for s in self.tree.expired_stdin() {
            self.step_tasks.stdin(s);
        }
        let Some(c) = conn else { return };
        for (job, step) in self.origins.abandoned() {
            tracing::info!(job, step, "srun of the step is gone; killing the step");
            c.send(AgentMsg::StepSignal(pb::StepSignal {
                job,
                step,
                signal: libc::SIGKILL,
            }));
        }
        if self.step_tasks.is_empty() {
            return;
        }
        for o in self.step_tasks.drain() {
            c.send(AgentMsg::StepOutput(o));
        }
    }

    /// A step task ended: its last output, then its end, to the head.
    fn step_task_done(&mut self, r: &TaskReport, conn: Option<&Conn>) {
        self.live.remove_step(r.key.index);
        let Some((out, end)) = self.step_tasks.ended(r, &self.cfg.name) else {
            return;
        };
        if let Some(c) = conn {
            for o in out {
                c.send(AgentMsg::StepOutput(o));
            }
            c.send(AgentMsg::StepTaskEnd(end));
        }
    }

    /// Running here, or queued here behind another task.
    fn is_live(&self, key: TaskKey, attempt: u32) -> bool {
        self.exec.running().iter().any(|(k, a, _)| *k == key && *a == attempt)
            || self
                .waiting
                .values()
                .flatten()
                .any(|s| s.key == key && s.attempt == attempt)
    }

    /// Live, or already ended here (its result is kept until acknowledged): a launch of it
    /// is a duplicate.
    fn is_known(&self, key: TaskKey, attempt: u32) -> bool {
        self.journal.has_end(key, attempt) || self.is_live(key, attempt)
    }

    /// Starts these attempts. The intent is journaled before the spawn and the pid after
    /// it (one write each for the whole batch): an agent killed in between leaves an intent
    /// that the next agent process reports lost instead of starting the task a second time.
    fn start_all(&mut self, specs: Vec<ExecSpec>) -> Result<(), AgentError> {
        let mut seen = std::collections::HashSet::new();
        let specs: Vec<ExecSpec> = specs.into_iter().filter(|s| seen.insert((s.key, s.attempt))).collect();
        if specs.is_empty() {
            return Ok(());
        }
        let keys: Vec<(TaskKey, u32)> = specs.iter().map(|s| (s.key, s.attempt)).collect();
        self.journal.record_intents(&keys)?;
        let mut started = Vec::with_capacity(specs.len());
        for spec in specs {
            let (key, attempt) = (spec.key, spec.attempt);
            // SAFETY: plain syscall.
            let uid = spec
                .run_as
                .as_ref()
                .map_or_else(|| unsafe { libc::getuid() }, |c| c.uid);
            self.live.insert(key, attempt, uid);
            if let Some(pid) = self.exec.launch(spec) {
                started.push((key, attempt, pid));
            }
        }
        self.journal.record_launches(&started)?;
        Ok(())
    }

    /// Starts or queues these launched tasks (queued: behind a predecessor running here).
    fn launch_all(&mut self, tasks: Vec<pb::LaunchTask>, conn: Option<&Conn>) -> Result<(), AgentError> {
        let mut now = Vec::new();
        for t in tasks {
            if let Some(spec) = self.prepare(t, conn)? {
                now.push(spec);
            }
        }
        self.start_all(now)
    }

    /// Turns a launch into a spec to start now; queues it behind its predecessor or drops a
    /// duplicate (returns None). A launch that cannot be prepared is reported failed.
    fn prepare(&mut self, t: pb::LaunchTask, conn: Option<&Conn>) -> Result<Option<ExecSpec>, AgentError> {
        let task = t.task;
        let after = t.after.as_ref().map(task_ref);
        let placed = exec_spec(t, &self.scripts_dir, &self.run_as, &self.cfg.name).and_then(|mut s| {
            crate::launch::place_outputs(&mut s, &self.cfg.data_dir)?;
            if let Some(p) = &self.job_socket {
                s.env.retain(|(k, _)| k != crate::job_socket::SOCKET_ENV);
                s.env
                    .push((crate::job_socket::SOCKET_ENV.into(), p.display().to_string()));
            }
            Ok(s)
        });
        match placed {
            Ok(spec) => {
                if self.is_known(spec.key, spec.attempt) {
                    return Ok(None);
                }
                crate::launch::register_outputs(&spec, &self.outputs);
                match after {
                    Some((pk, pa)) if self.is_live(pk, pa) => {
                        self.waiting.entry((pk, pa)).or_default().push(spec);
                        Ok(None)
                    }
                    // The predecessor already ended here (or never ran): its cores are free.
                    _ => Ok(Some(spec)),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot launch task");
                if let Some(r) = task {
                    let (key, attempt) = task_ref(&r);
                    let now = now_ms();
                    let report = TaskReport {
                        key,
                        attempt,
                        outcome: TaskOutcome::SpawnFailed,
                        exit_code: Some(127),
                        signal: None,
                        start_ms: now,
                        end_ms: now,
                        message: e.to_string(),
                        usage: Default::default(),
                    };
                    self.on_results(vec![report], conn)?;
                }
                Ok(None)
            }
        }
    }

    /// Kills running tasks, journals their results and tries to deliver them.
    async fn stop(
        mut self,
        mut reports: mpsc::UnboundedReceiver<TaskReport>,
        mut conn: Option<Conn>,
    ) -> Result<(), AgentError> {
        self.stopping = true;
        let running = self.exec.running().len();
        if running > 0 {
            tracing::info!(tasks = running, "stopping: killing running tasks");
        }
        self.exec.shutdown().await;
        if let Some(j) = self.job_socket_server.take() {
            j.stop().await;
        }
        self.tree.stop().await;
        let mut batch = Vec::new();
        while let Ok(r) = reports.try_recv() {
            batch.push(r);
        }
        if !batch.is_empty() {
            self.on_results(batch, conn.as_ref())?;
            // Give the head a moment to acknowledge; what it does not is resent next start.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !self.journal.unacked().is_empty() {
                match tokio::time::timeout_at(deadline, next_head_message(&mut conn)).await {
                    Ok(Some(m)) => {
                        if let Some(HeadMsg::Ack(_)) = &m.msg {
                            self.on_head_message(m, None)?;
                        }
                    }
                    _ => break,
                }
            }
        }
        tracing::info!("agent stopped");
        Ok(())
    }
}
