//! The long-running roles: `up` (head + local agent), `head`, `agent`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::Args;
use rudel_agent::AgentConfig;
use rudel_head::{Head, HeadConfig};
use tokio::sync::watch;

use crate::{client, CmdResult, Failure};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Data directory (Raft log, state, agent journal). Default: $RUDEL_DATA or ~/.local/share/rudel.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = client::DEFAULT_HEAD)]
    pub listen: SocketAddr,
    /// Cpus the local agent offers (default: all this process may use).
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,
    /// Memory the local agent offers, e.g. 8G (default: all physical memory).
    #[arg(long, value_name = "SIZE")]
    pub mem: Option<String>,
    /// Node name of the local agent (default: host name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Label for --constraint: `gpu` or `rack=a` (repeatable).
    #[arg(long = "label", value_name = "KEY[=VALUE]")]
    pub labels: Vec<String>,
    /// GPUs this node offers to tasks (`--gpus N` on submit), indices 0..N-1 (default: the
    /// NVIDIA devices found in /dev; 0 = none). Declaring GPUs a machine lacks is for tests.
    #[arg(long, value_name = "N")]
    pub gpus: Option<u32>,
    /// Another counted resource this node offers, NAME=COUNT (`fpga=2`, `gpu:a100=4`;
    /// repeatable); tasks ask with `--gres NAME:N`.
    #[arg(long = "resource", value_name = "NAME=COUNT")]
    pub resources: Vec<String>,
    /// Delay between SIGTERM and SIGKILL when a task is cancelled or times out.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub kill_grace: String,
    /// Most processes (threads included) one task may have, enforced by the task's pids
    /// cgroup (fork fails with EAGAIN beyond it); 0 = no limit. Without cgroups, a
    /// non-root agent sets RLIMIT_NPROC instead (per user: best effort).
    #[arg(long, value_name = "N", default_value_t = rudel_agent::DEFAULT_TASK_PIDS_MAX)]
    pub task_pids_max: u64,
    /// Give every task a private /tmp: a fresh directory, bind-mounted on /tmp in the
    /// task's own mount namespace and removed when the task ends (as Slurm's
    /// job_container/tmpfs). Needs root and a data directory outside /tmp.
    #[arg(long)]
    pub private_tmp: bool,
    /// An agent silent (no heartbeat) or disconnected this long is declared lost: its
    /// --requeue tasks run elsewhere, its --no-requeue tasks end node_fail.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub node_timeout: String,
    /// How long the initial join token (printed at the first start, kept in DATA/join-token)
    /// can be used to add nodes, e.g. 24h, 7d; "0" or "never" = until revoked. Later tokens:
    /// `rudel token create`. Nodes that joined keep working after it expires.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub join_token_ttl: String,
    /// How long finished jobs stay in the accounting history (`rudel history`, `sacct`), e.g. 30d.
    #[arg(long, value_name = "DURATION", default_value = "90d")]
    pub history_retention: String,
    #[command(flatten)]
    pub step_tree: crate::step_tree_args::StepTreeArgs,
    /// How long an interactive allocation (salloc, srun outside a job) is kept after its
    /// client stopped holding it (killed, its machine lost) before it is cancelled. Longer
    /// than a head failover: clients hold it again at the new leader.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub allocation_lease: String,
}

#[derive(Args, Debug)]
pub struct HeadArgs {
    /// Data directory of this head. Default: $RUDEL_DATA/head or ~/.local/share/rudel/head.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = client::DEFAULT_HEAD)]
    pub listen: SocketAddr,
    /// Address others use to reach this head (default: --listen).
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<String>,
    /// Join the head group of the head at ADDR (any member; the leader is found) instead of
    /// starting a new cluster. Needs --token on first start only.
    #[arg(long, value_name = "ADDR")]
    pub join: Option<String>,
    /// Head token for --join (`rudel token create --role head` on the group).
    #[arg(long, env = "RUDEL_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// An agent silent (no heartbeat) or disconnected this long is declared lost: its
    /// --requeue tasks run elsewhere, its --no-requeue tasks end node_fail.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub node_timeout: String,
    /// How long the initial join token (printed at the first start, kept in DATA/join-token)
    /// can be used to add nodes, e.g. 24h, 7d; "0" or "never" = until revoked. Later tokens:
    /// `rudel token create`. Nodes that joined keep working after it expires.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub join_token_ttl: String,
    /// How long finished jobs stay in the accounting history (`rudel history`, `sacct`), e.g. 30d.
    #[arg(long, value_name = "DURATION", default_value = "90d")]
    pub history_retention: String,
    #[command(flatten)]
    pub step_tree: crate::step_tree_args::StepTreeArgs,
    /// How long an interactive allocation (salloc, srun outside a job) is kept after its
    /// client stopped holding it (killed, its machine lost) before it is cancelled. Longer
    /// than a head failover: clients hold it again at the new leader.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub allocation_lease: String,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Agent data directory (result journal, node id). Default: $RUDEL_DATA/agent or ~/.local/share/rudel/agent.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Node name (default: host name). A name belongs to the machine (data directory) that
    /// first joined under it: another machine joining under a name in use is refused (give
    /// it another --name; if the old machine is gone for good, an admin runs `rudel node
    /// forget NAME` first).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Label for --constraint: `gpu` or `rack=a` (repeatable).
    #[arg(long = "label", value_name = "KEY[=VALUE]")]
    pub labels: Vec<String>,
    /// GPUs this node offers to tasks (`--gpus N` on submit), indices 0..N-1 (default: the
    /// NVIDIA devices found in /dev; 0 = none). Declaring GPUs a machine lacks is for tests.
    #[arg(long, value_name = "N")]
    pub gpus: Option<u32>,
    /// Another counted resource this node offers, NAME=COUNT (`fpga=2`, `gpu:a100=4`;
    /// repeatable); tasks ask with `--gres NAME:N`.
    #[arg(long = "resource", value_name = "NAME=COUNT")]
    pub resources: Vec<String>,
    /// Cpus offered (default: all this process may use).
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,
    /// Without a head for this long, kill the running tasks (the head gave them up long
    /// before); "0" keeps them running forever.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub orphan_timeout: String,
    /// Memory offered, e.g. 8G (default: all physical memory).
    #[arg(long, value_name = "SIZE")]
    pub mem: Option<String>,
    /// Delay between SIGTERM and SIGKILL when a task is cancelled or times out.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub kill_grace: String,
    /// Most processes (threads included) one task may have, enforced by the task's pids
    /// cgroup (fork fails with EAGAIN beyond it); 0 = no limit. Without cgroups, a
    /// non-root agent sets RLIMIT_NPROC instead (per user: best effort).
    #[arg(long, value_name = "N", default_value_t = rudel_agent::DEFAULT_TASK_PIDS_MAX)]
    pub task_pids_max: u64,
    /// Give every task a private /tmp: a fresh directory, bind-mounted on /tmp in the
    /// task's own mount namespace and removed when the task ends (as Slurm's
    /// job_container/tmpfs). Needs root and a data directory outside /tmp.
    #[arg(long)]
    pub private_tmp: bool,
    /// Run jobs whose user is root (uid 0). An agent running as root starts every task as
    /// its job's user and refuses root's jobs unless this is given.
    #[arg(long)]
    pub allow_root_jobs: bool,
    /// Join token (printed by `rudel up`/`rudel head`, or from `rudel token create`). Used
    /// once to get this node's certificate, which is kept in DATA/tls; later starts need
    /// no token (or a new one once the certificate has expired).
    #[arg(long, env = "RUDEL_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Tests only: advertise this port for the launch-tree listener instead of its own
    /// (a listener nobody can reach, to exercise the head's direct resend).
    #[arg(long, value_name = "PORT", hide = true)]
    pub tree_advertise_port: Option<u16>,
}

/// `$RUDEL_DATA`, else `$XDG_DATA_HOME/rudel`, else `~/.local/share/rudel`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RUDEL_DATA") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("rudel");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/rudel"),
        None => PathBuf::from("rudel-data"),
    }
}

/// Where the CLI on this machine finds admin credentials.
fn print_credentials_hint(head: &Head, custom_data: bool) {
    if custom_data && head.admin_dir.join("ca.pem").is_file() {
        println!(
            "  CLI credentials (admin): export RUDEL_CREDENTIALS={}",
            head.admin_dir.display()
        );
    }
}

/// The one command another machine needs to join.
fn print_join_hint(head: &Head, addr: &str) {
    match (&head.join_token, head.join_token_expires_ms) {
        (Some(t), Some(until)) => println!(
            "  add a node with: rudel agent --head {addr} --token {t}\n  (this token can be used until {}; later: `rudel token create`)",
            crate::show::timestamp(until)
        ),
        (Some(t), None) => println!("  add a node with: rudel agent --head {addr} --token {t}"),
        (None, _) => println!(
            "  add a node with a token from `rudel token create` (on any head; the initial one has expired or was revoked): \
             rudel agent --head {addr} --token TOKEN"
        ),
    }
}

/// Where `rudel up` remembers its local agent's node: "NAME UID".
fn local_node_file(data: &std::path::Path) -> PathBuf {
    data.join("head").join("local-node")
}

/// `rudel up`'s own agent is this machine by construction. If its data directory was
/// wiped (a new uid) while the name is still bound to the uid it had before, the name
/// would be refused to it as held by "another machine", and nobody could run `rudel node
/// forget` with the head down: so the old binding is forgotten here, as an admin would
/// (its tasks are lost, as they are with the directory that held them).
async fn rebind_local_node(
    head: &Head,
    data: &std::path::Path,
    agent_dir: &std::path::Path,
    name: &str,
) -> Result<(), Failure> {
    std::fs::create_dir_all(agent_dir).with_context(|| format!("cannot create {}", agent_dir.display()))?;
    let uid = rudel_agent::identity::load_or_create_uid(agent_dir)
        .with_context(|| format!("cannot read the node id in {}", agent_dir.display()))?;
    let file = local_node_file(data);
    let before = std::fs::read_to_string(&file).unwrap_or_default();
    let mut it = before.split_whitespace();
    if let (Some(old_name), Some(old_uid)) = (it.next(), it.next()) {
        if old_name == name && old_uid != uid && head.node_uid(name).as_deref() == Some(old_uid) {
            let tasks = head.forget_node(name).await.context("cannot rebind the local node")?;
            tracing::warn!(node = name, old_uid, uid = %uid, tasks, "the local agent's data directory is new: forgot the node it replaces");
        }
    }
    if before.trim() != format!("{name} {uid}") {
        std::fs::write(&file, format!("{name} {uid}\n")).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

/// `--history-retention`: a positive duration.
fn parse_retention(s: &str) -> Result<Duration, Failure> {
    let ms = rudel_core::parse::parse_duration(s).map_err(|e| Failure::usage(anyhow!("--history-retention: {e}")))?;
    if ms == 0 {
        return Err(Failure::usage(anyhow!("--history-retention must be more than 0")));
    }
    Ok(Duration::from_millis(ms))
}

/// `--join-token-ttl`: None for "0"/"never" (no expiry).
fn parse_join_token_ttl(s: &str) -> Result<Option<Duration>, Failure> {
    if s.trim().eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let ms = rudel_core::parse::parse_duration(s).map_err(|e| Failure::usage(anyhow!("--join-token-ttl: {e}")))?;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

/// The token `rudel up`'s own agent joins with: the initial one while it is valid; once
/// that has expired, a short-lived one made for it, but only if the agent has no valid
/// certificate (a restart after the token expired must not fail for want of one).
async fn local_agent_token(head: &Head, agent_dir: &std::path::Path) -> Result<Option<String>, Failure> {
    if head.join_token.is_some() || !rudel_agent::session::needs_certificate(agent_dir) {
        return Ok(head.join_token.clone());
    }
    let t = head
        .create_token(
            rudel_core::security::Role::Agent,
            "local agent of `rudel up`",
            Duration::from_secs(600),
        )
        .await
        .context("cannot create a join token for the local agent")?;
    Ok(Some(t))
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        // Without signal handlers we can only run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}

fn agent_config(
    heads: Vec<String>,
    data: PathBuf,
    name: Option<String>,
    cpus: Option<u32>,
    mem: Option<&str>,
    kill_grace: &str,
    offer: Offer<'_>,
) -> Result<AgentConfig, Failure> {
    let mut cfg = AgentConfig::new(heads, data);
    offer.apply(&mut cfg)?;
    for l in offer.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        let ok_name = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c));
        if !ok_name || ["cpus", "mem", "arch", "os", "name"].contains(&k) {
            return Err(Failure::usage(anyhow!(
                "--label {l:?}: a label is NAME or NAME=VALUE, NAME made of letters, digits and _-.:/ \
                 (not cpus, mem, arch, os or name, which every node has)"
            )));
        }
        cfg.labels.insert(k.to_string(), v.to_string());
    }
    if let Some(n) = name {
        cfg.name = n;
    }
    if let Some(c) = cpus {
        if c == 0 {
            return Err(Failure::usage(anyhow!("--cpus must be at least 1")));
        }
        cfg.cpus = c;
    }
    if let Some(m) = mem {
        cfg.mem_bytes = rudel_core::parse::parse_size(m).map_err(|e| Failure::usage(anyhow!("--mem: {e}")))?;
    }
    let grace =
        rudel_core::parse::parse_duration(kill_grace).map_err(|e| Failure::usage(anyhow!("--kill-grace: {e}")))?;
    cfg.kill_grace = Duration::from_millis(grace);
    Ok(cfg)
}

/// What the operator says the node offers beyond cpus and memory: `--label`, `--gpus`,
/// `--resource`.
struct Offer<'a> {
    labels: &'a [String],
    gpus: Option<u32>,
    resources: &'a [String],
}

impl Offer<'_> {
    /// Declared resources replace detected ones of the same name.
    fn apply(&self, cfg: &mut AgentConfig) -> Result<(), Failure> {
        for r in self.resources {
            let (name, n) =
                rudel_core::resources::parse_inventory(r).map_err(|e| Failure::usage(anyhow!("--resource: {e}")))?;
            cfg.gres.insert(name, n);
        }
        if let Some(n) = self.gpus {
            if n > rudel_core::resources::MAX_GRES_UNITS {
                return Err(Failure::usage(anyhow!(
                    "--gpus: at most {}",
                    rudel_core::resources::MAX_GRES_UNITS
                )));
            }
            cfg.gres.insert("gpu".into(), n);
        }
        cfg.gres.retain(|_, n| *n > 0);
        Ok(())
    }
}

/// `--task-pids-max`: 0 (no limit) or at least 2 (on cgroup v1 the agent's spawner
/// thread counts in the task's cgroup for the instant of the spawn).
fn task_pids_max(n: u64) -> Result<u64, Failure> {
    if n == 1 {
        return Err(Failure::usage(anyhow!(
            "--task-pids-max 1 would leave a task no room to start: give 0 (no limit) or at least 2"
        )));
    }
    Ok(n)
}

/// A duration option of at least `min_s` seconds; `why` says why not less.
fn parse_at_least(flag: &str, s: &str, min_s: u64, why: &str) -> Result<Duration, Failure> {
    let ms = rudel_core::parse::parse_duration(s).map_err(|e| Failure::usage(anyhow!("{flag}: {e}")))?;
    if ms < min_s * 1000 {
        return Err(Failure::usage(anyhow!("{flag} must be at least {min_s}s ({why})")));
    }
    Ok(Duration::from_millis(ms))
}

fn parse_lease(s: &str) -> Result<Duration, Failure> {
    parse_at_least(
        "--allocation-lease",
        s,
        2,
        "clients reconnect with a backoff of up to a second",
    )
}

fn parse_timeout(s: &str) -> Result<Duration, Failure> {
    parse_at_least("--node-timeout", s, 1, "agents send a heartbeat every second")
}

/// `rudel up`.
pub async fn up(a: UpArgs) -> CmdResult {
    let custom_data = a.data.is_some();
    let data = a.data.unwrap_or_else(default_data_dir);
    let mut hcfg = HeadConfig::new(data.join("head"), a.listen);
    hcfg.node_timeout = parse_timeout(&a.node_timeout)?;
    hcfg.join_token_ttl = parse_join_token_ttl(&a.join_token_ttl)?;
    hcfg.history_retention = parse_retention(&a.history_retention)?;
    hcfg.step_tree = a.step_tree.config()?;
    hcfg.allocation_lease = parse_lease(&a.allocation_lease)?;
    let head = Head::start(hcfg).await.context("cannot start the head")?;
    let addr = head.local_addr.to_string();
    let agent_dir = data.join("agent");
    let name = a.name.unwrap_or_else(rudel_agent::identity::hostname);
    rebind_local_node(&head, &data, &agent_dir, &name).await?;
    let token = local_agent_token(&head, &agent_dir).await?;
    let mut cfg = agent_config(
        vec![addr.clone()],
        agent_dir,
        Some(name),
        a.cpus,
        a.mem.as_deref(),
        &a.kill_grace,
        Offer {
            labels: &a.labels,
            gpus: a.gpus,
            resources: &a.resources,
        },
    )?;
    cfg.task_pids_max = task_pids_max(a.task_pids_max)?;
    cfg.private_tmp = a.private_tmp;
    cfg.token = token;
    // The single-machine dev cluster: its admin is whoever started it, root included.
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cfg.allow_root_jobs = true;
        println!("running as root: jobs run as their submitting user, root's jobs allowed (--allow-root-jobs)");
    }
    println!("rudel is up: head on {addr}, data in {}", data.display());
    println!("  submit with: rudel submit -- echo hello   (or set RUDEL_HEAD={addr} if not the default)");
    print_credentials_hint(&head, custom_data);
    print_join_hint(&head, &addr);
    let (stop_tx, stop_rx) = watch::channel(false);
    let agent = spawn_on_own_thread(rudel_agent::run(cfg, stop_rx))?;
    // If the head fails, the agent stops too (killing its tasks): nothing could take
    // their results any more.
    let res = finish_agent(agent, stop_tx, head.failure()).await;
    let peers = head.has_peers();
    head.shutdown().await;
    match res? {
        None => Ok(0),
        Some(why) => Err(Failure::from(head_failed(&why, &data.join("head"), peers))),
    }
}

/// `rudel head`.
pub async fn head(a: HeadArgs) -> CmdResult {
    let custom_data = a.data.is_some();
    let data = a.data.unwrap_or_else(|| default_data_dir().join("head"));
    let mut cfg = HeadConfig::new(data.clone(), a.listen);
    cfg.advertise = a.advertise.clone();
    // Tuning knob (and how tests exercise snapshot installs): log entries between snapshots.
    if let Some(n) = std::env::var("RUDEL_SNAPSHOT_EVERY")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        cfg.timing.snapshot_every = n.max(10);
    }
    if let Some(j) = a.join.clone() {
        if a.advertise.is_none() && a.listen.ip().is_unspecified() {
            return Err(Failure::usage(anyhow!(
                "--join with --listen {}: give --advertise HOST:PORT, the address the other heads reach this one at",
                a.listen
            )));
        }
        if a.token.is_none() && rudel_head::heads::load_id(&data).is_none() {
            return Err(Failure::usage(anyhow!(
                "--join needs --token on this head's first start (`rudel token create --role head` on the group)"
            )));
        }
        cfg.join = Some((j, a.token.clone().unwrap_or_default()));
    }
    cfg.node_timeout = parse_timeout(&a.node_timeout)?;
    cfg.join_token_ttl = parse_join_token_ttl(&a.join_token_ttl)?;
    cfg.history_retention = parse_retention(&a.history_retention)?;
    cfg.step_tree = a.step_tree.config()?;
    cfg.allocation_lease = parse_lease(&a.allocation_lease)?;
    let head = Head::start(cfg).await.context("cannot start the head")?;
    println!(
        "rudel head {} listening on {}, data in {}",
        head.head_id,
        head.local_addr,
        data.display()
    );
    let addr = a.advertise.clone().unwrap_or_else(|| head.local_addr.to_string());
    print_credentials_hint(&head, custom_data);
    print_join_hint(&head, &addr);
    let failed = tokio::select! {
        _ = termination() => None,
        why = head.failure() => Some(why),
    };
    let peers = head.has_peers();
    head.shutdown().await;
    match failed {
        None => Ok(0),
        Some(why) => Err(Failure::from(head_failed(&why, &data, peers))),
    }
}

/// The error a head exits with when its Raft core stopped by itself. `peers`: the group
/// has other heads to catch up from (a one-head cluster has none, and is down meanwhile).
fn head_failed(why: &str, data: &std::path::Path, peers: bool) -> anyhow::Error {
    tracing::error!(error = why, "the replicated log failed; this head stops");
    let after = if peers {
        "it catches up from the other heads, which carry on meanwhile if they have a quorum"
    } else {
        "it recovers from its own log (what was acknowledged is kept there); this is the \
         cluster's only head, so the cluster is down until then"
    };
    anyhow!(
        "this head stopped: its replicated log failed ({why}). Fix the cause (free space in {}, \
         check the disk), then start it again with the same --data: {after}",
        data.display()
    )
}

/// `rudel agent`.
pub async fn agent(a: AgentArgs, head: &str) -> CmdResult {
    let heads: Vec<String> = head
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if heads.is_empty() {
        return Err(Failure::usage(anyhow!(
            "give the head address with --head ADDR or $RUDEL_HEAD"
        )));
    }
    let data = a.data.unwrap_or_else(|| default_data_dir().join("agent"));
    let offer = Offer {
        labels: &a.labels,
        gpus: a.gpus,
        resources: &a.resources,
    };
    let mut cfg = agent_config(heads, data, a.name, a.cpus, a.mem.as_deref(), &a.kill_grace, offer)?;
    cfg.task_pids_max = task_pids_max(a.task_pids_max)?;
    let orphan = rudel_core::parse::parse_duration(&a.orphan_timeout)
        .map_err(|e| Failure::usage(anyhow!("--orphan-timeout: {e}")))?;
    cfg.orphan_timeout = (orphan > 0).then(|| Duration::from_millis(orphan));
    cfg.token = a.token;
    cfg.allow_root_jobs = a.allow_root_jobs;
    cfg.tree_advertise_port = a.tree_advertise_port;
    cfg.private_tmp = a.private_tmp;
    let (stop_tx, stop_rx) = watch::channel(false);
    let run = tokio::spawn(rudel_agent::run(cfg, stop_rx));
    finish_agent(run, stop_tx, std::future::pending()).await.map(|_| 0)
}

/// Runs the local agent on its own runtime thread, so the head's blocking work (fsync of the
/// log) never delays starting the next task; returns a handle awaitable from the head's runtime.
fn spawn_on_own_thread(
    fut: impl std::future::Future<Output = Result<(), rudel_agent::AgentError>> + Send + 'static,
) -> Result<tokio::task::JoinHandle<Result<(), rudel_agent::AgentError>>, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::from(anyhow!("cannot start the agent runtime: {e}")))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rudel-agent".into())
        .spawn(move || {
            let _ = tx.send(rt.block_on(fut));
        })
        .map_err(|e| Failure::from(anyhow!("cannot start the agent thread: {e}")))?;
    Ok(tokio::spawn(async move {
        rx.await.unwrap_or_else(|_| {
            tracing::error!("agent thread ended without a result");
            Ok(())
        })
    }))
}

/// Runs until the agent ends by itself (an error) or a signal asks it to stop.
async fn finish_agent(
    mut run: tokio::task::JoinHandle<Result<(), rudel_agent::AgentError>>,
    stop_tx: watch::Sender<bool>,
    head_failure: impl std::future::Future<Output = String>,
) -> Result<Option<String>, Failure> {
    let mut failed = None;
    let res = tokio::select! {
        r = &mut run => r,
        why = head_failure => {
            failed = Some(why);
            stop_agent(run, stop_tx).await?
        }
        _ = termination() => stop_agent(run, stop_tx).await?,
    };
    match res {
        Ok(Ok(())) => Ok(failed),
        Ok(Err(e)) => Err(Failure::from(anyhow!(e).context("agent failed"))),
        Err(e) => Err(Failure::from(anyhow!("agent task failed: {e}"))),
    }
}

/// Asks the agent to stop (it kills its tasks and journals their end) and waits for it.
async fn stop_agent(
    run: tokio::task::JoinHandle<Result<(), rudel_agent::AgentError>>,
    stop_tx: watch::Sender<bool>,
) -> Result<Result<Result<(), rudel_agent::AgentError>, tokio::task::JoinError>, Failure> {
    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .map_err(|_| Failure::from(anyhow!("agent did not stop within 30 s")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_token_ttl_accepts_durations_and_never() {
        assert_eq!(
            parse_join_token_ttl("24h").ok(),
            Some(Some(Duration::from_secs(86_400)))
        );
        assert_eq!(parse_join_token_ttl("never").ok(), Some(None));
        assert_eq!(parse_join_token_ttl("0").ok(), Some(None));
        assert!(parse_join_token_ttl("soon").is_err());
    }

    #[test]
    fn a_failed_head_says_where_it_recovers_from() {
        let dir = std::path::Path::new("/d");
        let group = head_failed("disk full", dir, true).to_string();
        assert!(group.contains("catches up from the other heads"), "{group}");
        let alone = head_failed("disk full", dir, false).to_string();
        assert!(!alone.contains("other heads"), "a one-head cluster has none: {alone}");
        assert!(alone.contains("only head") && alone.contains("/d"), "{alone}");
    }
}
