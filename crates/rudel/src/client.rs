//! Connecting to a head and turning gRPC errors into messages a user can act on.
use std::time::Duration;

use anyhow::anyhow;
use rudel_proto::v1::rudel_client::RudelClient;
use tonic::transport::{Channel, Endpoint};

/// Where clients look for the head when neither --head nor $RUDEL_HEAD is set.
pub const DEFAULT_HEAD: &str = "127.0.0.1:7117";

/// Timeout of one unary call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the head at `addr`; unary calls time out after [`CALL_TIMEOUT`].
pub async fn connect(addr: &str) -> anyhow::Result<RudelClient<Channel>> {
    connect_with_timeout(addr, CALL_TIMEOUT).await
}

/// Connects with a per-call timeout of `timeout` (for calls that legitimately run long).
pub async fn connect_with_timeout(addr: &str, timeout: Duration) -> anyhow::Result<RudelClient<Channel>> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let ep = Endpoint::from_shared(url)
        .map_err(|e| anyhow!("bad head address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout)
        .tcp_nodelay(true);
    let ch = ep.connect().await.map_err(|e| {
        anyhow!("cannot reach the head at {addr}: {e}. Is `rudel up` (or `rudel head`) running? Set --head or $RUDEL_HEAD to point elsewhere")
    })?;
    Ok(RudelClient::new(ch)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(16 << 20))
}

/// A gRPC status as a user-facing error.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
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
