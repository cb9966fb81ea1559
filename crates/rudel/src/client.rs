//! Connecting to a head (its local Unix socket if there is one, else mutual TLS) and turning gRPC errors into messages a user
//! can act on.
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::anyhow;
use rudel_proto::v1 as pb;
use rudel_proto::v1::rudel_client::RudelClient;
use rudel_tls::Credentials;
use tonic::transport::Channel;

/// Where clients look for the head when neither --head nor $RUDEL_HEAD is set.
pub const DEFAULT_HEAD: &str = "127.0.0.1:7117";

/// Timeout of one unary call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

static CREDENTIALS_DIR: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Remembers --credentials / $RUDEL_CREDENTIALS for every connection of this process.
pub fn set_credentials_dir(dir: Option<PathBuf>) {
    let _ = CREDENTIALS_DIR.set(dir);
}

/// Where `rudel login` keeps credentials: `$XDG_CONFIG_HOME/rudel/credentials` or
/// `~/.config/rudel/credentials`.
pub fn login_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(d).join("rudel/credentials");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".config/rudel/credentials"),
        None => PathBuf::from("rudel-credentials"),
    }
}

/// True if the user named a credentials directory (then TLS with it is used, not the
/// local socket: the user chose to act as that certificate).
pub fn credentials_named() -> bool {
    matches!(CREDENTIALS_DIR.get(), Some(Some(_)))
}

/// The credentials directories tried, in order.
fn candidates() -> Vec<PathBuf> {
    if let Some(Some(d)) = CREDENTIALS_DIR.get() {
        return vec![d.clone()];
    }
    vec![
        login_dir(),
        rudel_head::credentials::admin_dir(&crate::daemon::default_data_dir().join("head")),
    ]
}

/// The TLS client configuration from the first credentials directory found.
fn tls() -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    let dirs = candidates();
    let Some(dir) = dirs.iter().find(|d| Credentials::exist(d)) else {
        let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(anyhow!(
            "no rudel credentials found (looked in {}). On the head's machine `rudel up`/`rudel head` \
             writes them to DATA/head/client; elsewhere run `rudel login --head ADDR --token TOKEN`. \
             Or point --credentials / $RUDEL_CREDENTIALS at a credentials directory",
            looked.join(", ")
        ));
    };
    let creds = Credentials::load(dir).map_err(|e| anyhow!("credentials in {}: {e}", dir.display()))?;
    rudel_tls::client::client_config(&creds).map_err(|e| anyhow!("credentials in {}: {e}", dir.display()))
}

/// How long a client waits for some head to lead (an election takes about a second).
pub const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Connects to the leader among the heads in `head` (`A` or `A,B,C`); unary calls time
/// out after [`CALL_TIMEOUT`].
pub async fn connect(head: &str) -> anyhow::Result<RudelClient<Channel>> {
    connect_with_timeout(head, CALL_TIMEOUT).await
}

/// Connects to any reachable head in `head` (for `--stale` reads and `status`).
pub async fn connect_any(head: &str) -> anyhow::Result<RudelClient<Channel>> {
    if let Some(c) = crate::socket::connect(head, credentials_named(), CALL_TIMEOUT, false).await? {
        return Ok(c);
    }
    let tls = tls()?;
    let mut last = None;
    for addr in addresses(head) {
        match dial(&addr, tls.clone(), CALL_TIMEOUT).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e.error),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no head address given (--head or $RUDEL_HEAD)")))
}

/// For `--stale` reads any head will do (and stderr says the answer may be behind);
/// otherwise the leader.
pub async fn connect_for(head: &str, stale: bool) -> anyhow::Result<RudelClient<Channel>> {
    if stale {
        let mut c = connect_any(head).await?;
        if let Ok(i) = c.cluster_info(pb::ClusterInfoRequest { with_hash: false }).await {
            let i = i.into_inner();
            if !i.is_leader {
                eprintln!(
                    "rudel: stale read from head {} (applied up to log index {}; {}); it may be behind",
                    i.node_id,
                    i.last_applied,
                    if i.leader_addr.is_empty() {
                        "no leader known: no quorum?".to_string()
                    } else {
                        format!("the leader is {}", i.leader_addr)
                    }
                );
            }
        }
        Ok(c)
    } else {
        connect(head).await
    }
}

fn addresses(head: &str) -> Vec<String> {
    head.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A head that could not be dialed, and whether trying again may help.
#[derive(Debug)]
struct DialError {
    /// Refused, reset, timed out and the like (a head restarting, or not up yet); not a
    /// TLS refusal or a malformed address, which no retry cures.
    transient: bool,
    error: anyhow::Error,
}

async fn dial(
    addr: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<RudelClient<Channel>, DialError> {
    let ep = rudel_tls::client::endpoint(addr)
        .map_err(|e| DialError {
            transient: false,
            error: anyhow!("{e}"),
        })?
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout)
        .tcp_nodelay(true);
    let ch = rudel_tls::client::connect(&ep, tls).await.map_err(|e| {
        let tls_refusal = rudel_tls::explain::find_tls(&e).is_some();
        DialError {
            transient: !tls_refusal,
            error: anyhow!(
                "cannot reach the head at {addr}: {}. Is `rudel up` (or `rudel head`) running? Set --head or $RUDEL_HEAD to point elsewhere",
                rudel_tls::explain::chain(&e)
            ),
        }
    })?;
    Ok(RudelClient::new(ch)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(rudel_head::MAX_MESSAGE_BYTES))
}

/// Pauses between attempts to reach a head: exponential from 50 ms up to 1 s, each with
/// ±50% jitter, so that the clients of a restarting head do not all come back at the
/// same instant.
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(50),
        }
    }
}

impl Backoff {
    const MAX: Duration = Duration::from_secs(1);

    /// Sleeps for the next pause, but not past `deadline`.
    pub async fn pause(&mut self, deadline: tokio::time::Instant) {
        use rand::Rng;
        let jittered = self.next.mul_f64(rand::thread_rng().gen_range(0.5..1.5));
        self.next = (self.next * 2).min(Self::MAX);
        let until = (tokio::time::Instant::now() + jittered).min(deadline);
        tokio::time::sleep_until(until).await;
    }
}

/// Connects to the leader: asks each given head who leads and follows the answer; waits
/// up to [`LEADER_WAIT`] while an election is under way or no head can be reached (a
/// head restarting is back within a second or two).
pub async fn connect_with_timeout(head: &str, timeout: Duration) -> anyhow::Result<RudelClient<Channel>> {
    connect_until(head, timeout, tokio::time::Instant::now() + LEADER_WAIT).await
}

/// Connects for a write whose refusal by a head that does not lead is retried by the
/// caller (see [`is_not_leader`]): the local socket is used without first asking its head
/// who leads. That question was a second round trip in every local `rudel submit` (issue
/// 12); when it matters (no leader known), the write itself is refused as "not the
/// leader" and the retry asks it, through [`connect_until`], as before.
pub async fn connect_for_retried_write(
    head: &str,
    timeout: Duration,
    deadline: tokio::time::Instant,
) -> anyhow::Result<RudelClient<Channel>> {
    if let Some(c) = crate::socket::connect(head, credentials_named(), timeout, false).await? {
        return Ok(c);
    }
    connect_until(head, timeout, deadline).await
}

/// [`connect_with_timeout`] with an explicit deadline for finding the leader.
pub async fn connect_until(
    head: &str,
    timeout: Duration,
    deadline: tokio::time::Instant,
) -> anyhow::Result<RudelClient<Channel>> {
    if let Some(c) = crate::socket::connect(head, credentials_named(), timeout, true).await? {
        return Ok(c);
    }
    let tls = tls()?;
    let addrs = addresses(head);
    if addrs.is_empty() {
        return Err(anyhow!("no head address given (--head or $RUDEL_HEAD)"));
    }
    let mut told_election = false;
    let mut told_unreachable = false;
    let mut backoff = Backoff::default();
    loop {
        let mut unreachable = None;
        let mut answered = Vec::new();
        for addr in &addrs {
            let mut c = match dial(addr, tls.clone(), timeout).await {
                Ok(c) => c,
                Err(e) if e.transient => {
                    unreachable = Some(e.error);
                    continue;
                }
                Err(e) => return Err(e.error),
            };
            let info = match c.cluster_info(pb::ClusterInfoRequest { with_hash: false }).await {
                Ok(i) => i.into_inner(),
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    unreachable = Some(status_error(s));
                    continue;
                }
                Err(s) => return Err(status_error(s)),
            };
            if info.is_leader {
                return Ok(c);
            }
            answered.push(addr.clone());
            if !info.leader_addr.is_empty() && !addrs.contains(&info.leader_addr) {
                if let Ok(mut l) = dial(&info.leader_addr, tls.clone(), timeout).await {
                    let leads = l
                        .cluster_info(pb::ClusterInfoRequest { with_hash: false })
                        .await
                        .is_ok_and(|i| i.into_inner().is_leader);
                    if leads {
                        return Ok(l);
                    }
                }
            }
        }
        let now = tokio::time::Instant::now();
        if answered.is_empty() {
            let error = unreachable.unwrap_or_else(|| anyhow!("no head reachable at {head}"));
            if now >= deadline {
                return Err(error);
            }
            if !told_unreachable {
                eprintln!(
                    "rudel: no head answers at {head} yet; retrying for up to {} s…",
                    deadline.saturating_duration_since(now).as_secs_f64().ceil()
                );
                tracing::debug!(error = %error, "head unreachable; retrying");
                told_unreachable = true;
            }
            backoff.pause(deadline).await;
            continue;
        }
        if now >= deadline {
            return Err(anyhow!(
                "no leader: {} answered but none leads (no quorum: too few heads reachable?). \
                 Writes and consistent reads are refused until a majority of heads is back; \
                 `--stale` reads work on any head",
                answered.join(", ")
            ));
        }
        if !told_election {
            eprintln!("rudel: waiting for the heads to elect a leader…");
            told_election = true;
        }
        tokio::time::sleep(Duration::from_millis(200).min(deadline.saturating_duration_since(now))).await;
    }
}

/// True if a head refused a write because it no longer leads (leadership moved between
/// finding the leader and the call): nothing was written, so the call can be repeated on
/// the new leader.
pub fn is_not_leader(s: &tonic::Status) -> bool {
    s.metadata().get("rudel-leader").is_some() || s.message().starts_with("this head is not the leader")
}

/// Runs `call` on the leader; if that head answers "not the leader", finds the leader
/// again and repeats the call, so that the user never has to know which head leads. For
/// idempotent calls only (cancel): a call whose connection broke is repeated too, with
/// backoff, until [`CALL_TIMEOUT`] has passed.
pub async fn on_leader<T, F, Fut>(head: &str, mut call: F) -> Result<T, crate::Failure>
where
    F: FnMut(RudelClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    let mut backoff = Backoff::default();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let c = connect_until(head, left.max(Duration::from_millis(1)), deadline).await?;
        let s = match tokio::time::timeout_at(deadline, call(c)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(s)) => s,
            Err(_) => tonic::Status::deadline_exceeded(format!("no answer within {} s", CALL_TIMEOUT.as_secs())),
        };
        let again = is_not_leader(&s) || matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown);
        if !again || tokio::time::Instant::now() >= deadline {
            return Err(failure(s));
        }
        tracing::info!(error = %s.message(), "the call did not go through; asking the heads again");
        backoff.pause(deadline).await;
    }
}

/// A gRPC status as a user-facing error (a TLS refusal behind a failed call is named).
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    if let Some(tls) = rudel_tls::explain::find_tls(&s) {
        return anyhow!("{tls}");
    }
    if s.code() == tonic::Code::Unknown || s.code() == tonic::Code::Unavailable {
        if let Some(src) = std::error::Error::source(&s) {
            return anyhow!("{}: {}", s.message(), rudel_tls::explain::chain(src));
        }
    }
    anyhow!("{}", s.message())
}

/// True for statuses caused by the request itself (exit code 2).
pub fn is_input_error(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::InvalidArgument
}

/// Maps a status to a failure with the right exit code.
pub fn failure(s: tonic::Status) -> crate::Failure {
    let code = if is_input_error(&s) { crate::EXIT_USAGE } else { 1 };
    crate::Failure {
        code,
        error: status_error(s),
    }
}
