//! The local fast path: the head's Unix socket (no TLS handshake; the head identifies the
//! caller by the kernel's peer credentials). Preferred for every command when there is
//! one for the head asked for; TLS otherwise.
//!
//! Which socket: `$RUDEL_SOCKET` if set (then it must work: an explicit choice is never
//! silently replaced by TLS); none if credentials were named explicitly (--credentials /
//! `$RUDEL_CREDENTIALS`: the user chose to act as that certificate); else the well-known
//! `/run/rudel/<port>.sock` of a head address on this machine, else the default data
//! directory's `head/rudel.sock`.
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use hyper_util::rt::TokioIo;
use rudel_proto::v1::rudel_client::RudelClient;
use tonic::transport::{Channel, Endpoint};

/// A socket to try, and whether the user named it (then failing to use it is an error).
pub struct Choice {
    pub path: PathBuf,
    pub explicit: bool,
}

/// The socket to use for `head` (`A` or `A,B,C`), if any.
pub fn choose(head: &str, credentials_named: bool) -> Option<Choice> {
    if let Some(p) = std::env::var_os("RUDEL_SOCKET").filter(|p| !p.is_empty()) {
        return Some(Choice {
            path: PathBuf::from(p),
            explicit: true,
        });
    }
    if credentials_named {
        return None;
    }
    let local = head
        .split(',')
        .map(str::trim)
        .filter(|a| is_local(a))
        .filter_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()))
        .map(rudel_head::local_socket::well_known_socket);
    let own = rudel_head::local_socket::data_dir_socket(&crate::daemon::default_data_dir().join("head"));
    local
        .chain(std::iter::once(own))
        .find(|p| p.exists())
        .map(|path| Choice { path, explicit: false })
}

/// True if `addr` (HOST:PORT) resolves to a loopback address (the head on this machine).
fn is_local(addr: &str) -> bool {
    addr.to_socket_addrs()
        .map(|mut it| it.any(|a| a.ip().is_loopback()))
        .unwrap_or(false)
}

/// Connects to the head's socket at `path`; unary calls time out after `timeout`.
pub async fn dial(path: PathBuf, timeout: Duration) -> anyhow::Result<RudelClient<Channel>> {
    // The URI is not used to connect (the connector dials the socket); it must parse.
    let ep = Endpoint::try_from("http://rudel.sock")?
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout);
    let shown = path.display().to_string();
    let ch = ep
        .connect_with_connector(tower::service_fn(move |_| {
            let p = path.clone();
            async move { tokio::net::UnixStream::connect(p).await.map(TokioIo::new) }
        }))
        .await
        .with_context(|| format!("cannot connect to the head's socket {shown}"))?;
    Ok(RudelClient::new(ch)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(rudel_head::MAX_MESSAGE_BYTES))
}

/// The socket client if a usable socket is found and its head leads or knows the leader
/// (`need_leader`: a follower forwards the calls); an error only for an explicit
/// `$RUDEL_SOCKET` that does not work.
pub async fn connect(
    head: &str,
    credentials_named: bool,
    timeout: Duration,
    need_leader: bool,
) -> anyhow::Result<Option<RudelClient<Channel>>> {
    let Some(choice) = choose(head, credentials_named) else {
        return Ok(None);
    };
    let attempt = async {
        let mut c = dial(choice.path.clone(), timeout).await?;
        if !need_leader {
            return Ok(Some(c));
        }
        let info = c
            .cluster_info(rudel_proto::v1::ClusterInfoRequest { with_hash: false })
            .await
            .map_err(crate::client::status_error)?
            .into_inner();
        // A follower that knows the leader passes socket calls on to it (as the same
        // user), so a local user needs no certificate on any head's machine.
        if info.is_leader || !info.leader_addr.is_empty() {
            return Ok(Some(c));
        }
        tracing::info!("the local head knows no leader; trying TLS");
        Ok::<_, anyhow::Error>(None)
    };
    match attempt.await {
        Ok(c) => Ok(c),
        Err(e) if choice.explicit => Err(anyhow!("{e:#} (RUDEL_SOCKET={})", choice.path.display())),
        Err(e) => {
            tracing::debug!(error = %e, "local socket unusable; using TLS");
            Ok(None)
        }
    }
}
