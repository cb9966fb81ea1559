//! Connecting to a head (always mutual TLS) and turning gRPC errors into messages a user
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
    let tls = tls()?;
    let mut last = None;
    for addr in addresses(head) {
        match dial(&addr, tls.clone(), CALL_TIMEOUT).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
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

async fn dial(
    addr: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> anyhow::Result<RudelClient<Channel>> {
    let ep = rudel_tls::client::endpoint(addr)
        .map_err(|e| anyhow!("{e}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout)
        .tcp_nodelay(true);
    let ch = rudel_tls::client::connect(&ep, tls).await.map_err(|e| {
        anyhow!(
            "cannot reach the head at {addr}: {}. Is `rudel up` (or `rudel head`) running? Set --head or $RUDEL_HEAD to point elsewhere",
            rudel_tls::explain::chain(&e)
        )
    })?;
    Ok(RudelClient::new(ch)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(16 << 20))
}

/// Connects to the leader: asks each given head who leads and follows the answer; waits
/// up to [`LEADER_WAIT`] while an election is under way.
pub async fn connect_with_timeout(head: &str, timeout: Duration) -> anyhow::Result<RudelClient<Channel>> {
    let tls = tls()?;
    let addrs = addresses(head);
    if addrs.is_empty() {
        return Err(anyhow!("no head address given (--head or $RUDEL_HEAD)"));
    }
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    let mut told = false;
    loop {
        let mut unreachable = None;
        let mut answered = Vec::new();
        for addr in &addrs {
            let mut c = match dial(addr, tls.clone(), timeout).await {
                Ok(c) => c,
                Err(e) => {
                    unreachable = Some(e);
                    continue;
                }
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
        if answered.is_empty() {
            return Err(unreachable.unwrap_or_else(|| anyhow!("no head reachable at {head}")));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow!(
                "no leader: {} answered but none leads (no quorum: too few heads reachable?). \
                 Writes and consistent reads are refused until a majority of heads is back; \
                 `--stale` reads work on any head",
                answered.join(", ")
            ));
        }
        if !told {
            eprintln!("rudel: waiting for the heads to elect a leader…");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// True if a head refused a write because it no longer leads (leadership moved between
/// finding the leader and the call): nothing was written, so the call can be repeated on
/// the new leader.
pub fn is_not_leader(s: &tonic::Status) -> bool {
    s.metadata().get("rudel-leader").is_some() || s.message().starts_with("this head is not the leader")
}

/// Runs `call` on the leader; if that head answers "not the leader", finds the leader
/// again and repeats the call (up to 3 times), so that the user never has to know which
/// head leads.
pub async fn on_leader<T, F, Fut>(head: &str, mut call: F) -> Result<T, crate::Failure>
where
    F: FnMut(RudelClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut tries = 0;
    loop {
        let c = connect(head).await?;
        match call(c).await {
            Ok(v) => return Ok(v),
            Err(s) if tries < 3 && is_not_leader(&s) => {
                tries += 1;
                tracing::info!(error = %s.message(), "leadership moved; asking the heads again");
                tokio::time::sleep(Duration::from_millis(100 * tries)).await;
            }
            Err(s) => return Err(failure(s)),
        }
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
