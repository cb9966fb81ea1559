//! The head's Unix domain socket: the client service for users on the head's machine,
//! without TLS (the kernel vouches for the caller: SO_PEERCRED, see `auth`). It is also the
//! fast path: no handshake per CLI call.
//!
//! Two paths serve it: `<data dir>/rudel.sock`, and, where the head may create it (as
//! root), `/run/rudel/<port>.sock`, which the CLI finds with no flags from the head's
//! address (`RUDEL_HEAD=127.0.0.1:7117` → `/run/rudel/7117.sock`) — a data directory is
//! usually not reachable by other users, /run/rudel is root's and cannot be planted by
//! them. Both are mode 0666: any local user may connect, and is then only who the
//! kernel says.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// The well-known directory of head sockets.
pub const RUN_DIR: &str = "/run/rudel";

/// The socket in a head's data directory.
pub fn data_dir_socket(data_dir: &Path) -> PathBuf {
    data_dir.join("rudel.sock")
}

/// The well-known socket of the head listening on TCP `port`.
pub fn well_known_socket(port: u16) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{port}.sock"))
}

/// Binds one socket at `path`, replacing a stale one (the head holds the data directory
/// lock and the TCP port, so no live head serves it), mode 0666.
fn bind_one(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

/// Binds the data-directory socket (an error if that fails: the CLI on this machine relies
/// on it) and, if possible, the well-known one (skipped with a log line if not: a head not
/// run as root cannot create /run/rudel).
pub fn bind(data_dir: &Path, port: u16) -> std::io::Result<Vec<(PathBuf, UnixListener)>> {
    let own = data_dir_socket(data_dir);
    let mut out = vec![(own.clone(), bind_one(&own)?)];
    let wk = well_known_socket(port);
    let made = std::fs::create_dir_all(RUN_DIR)
        .and_then(|()| std::fs::set_permissions(RUN_DIR, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| bind_one(&wk));
    match made {
        Ok(l) => out.push((wk, l)),
        Err(e) => {
            tracing::info!(path = %wk.display(), error = %e, "no well-known socket (local users need RUDEL_SOCKET={})", own.display())
        }
    }
    Ok(out)
}

/// Removes the socket files (at shutdown), so that the CLI falls back to TLS at once.
pub fn remove(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

/// Serves the client service (with the same interceptor as TLS, which reads the peer
/// credentials) on each listener until `shutdown`.
pub fn serve<I>(
    listeners: Vec<(PathBuf, UnixListener)>,
    client: crate::client_service::ClientService,
    users: I,
    leader: std::sync::Arc<crate::socket_forward::LeaderLink>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>>
where
    I: tonic::service::Interceptor + Clone + Send + Sync + 'static,
{
    listeners
        .into_iter()
        .map(|(path, listener)| {
            // A follower passes calls on to the leader (see `socket_forward`).
            let forwarding = crate::socket_forward::Forwarding {
                inner: rudel_proto::v1::rudel_server::RudelServer::new(client.clone())
                    .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(256 << 20),
                link: std::sync::Arc::clone(&leader),
            };
            let svc = tonic::service::interceptor::InterceptedService::new(forwarding, users.clone());
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                let res = tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = res {
                    tracing::error!(path = %path.display(), error = %e, "local socket server failed");
                }
            })
        })
        .collect()
}
