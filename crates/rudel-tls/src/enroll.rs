//! Getting and keeping a certificate: a node (or a user) without credentials trades a
//! join token for one, once; later starts load it from the data directory.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::{Credentials, JoinToken};
use rudel_proto::v1 as pb;
use rudel_proto::v1::enroll_client::EnrollClient;

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The head said no (bad, revoked or expired token): retrying will not help.
    #[error("{0}")]
    Refused(String),
    /// No head could be reached or the exchange failed: retrying may help.
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Local(String),
}

/// What kind of certificate the caller wants.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Want {
    Agent,
    /// client or admin
    User,
    /// a head joining the group
    Head,
}

/// What a successful join produced.
pub struct Joined {
    pub creds: Credentials,
    pub role: String,
    pub expires_unix_ms: u64,
}

/// Trades `token` for a certificate on a new key: tries each head in turn. The head is
/// trusted only if its CA matches the pin in the token.
pub async fn join(
    heads: &[String],
    token: &str,
    name: &str,
    node_uid: &str,
    want: Want,
) -> Result<Joined, EnrollError> {
    let token: JoinToken = token.parse().map_err(EnrollError::Local)?;
    let key = crate::ca::new_key().map_err(|e| EnrollError::Local(e.to_string()))?;
    let tls = crate::client::pinned_config(token.ca_pin).map_err(|e| EnrollError::Local(e.to_string()))?;
    let mut last = EnrollError::Unreachable("no head address given".into());
    for addr in heads {
        let req = pb::JoinRequest {
            token: token.to_string(),
            name: name.to_string(),
            public_key: key.public_key_raw().to_vec(),
            node_uid: node_uid.to_string(),
            want: match want {
                Want::Agent => "agent",
                Want::User => "user",
                Want::Head => "head",
            }
            .into(),
        };
        match join_one(addr, tls.clone(), req).await {
            Ok(reply) => {
                return Ok(Joined {
                    creds: Credentials {
                        ca_pem: reply.ca_pem,
                        identity: Some((reply.cert_pem, key.serialize_pem())),
                    },
                    role: reply.role,
                    expires_unix_ms: reply.expires_unix_ms,
                })
            }
            Err(e @ EnrollError::Refused(_)) => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn join_one(
    addr: &str,
    tls: Arc<rustls::ClientConfig>,
    req: pb::JoinRequest,
) -> Result<pb::JoinReply, EnrollError> {
    let ep = crate::client::endpoint(addr)
        .map_err(|e| EnrollError::Local(e.to_string()))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(15));
    let ch = crate::client::connect(&ep, tls).await.map_err(|e| {
        EnrollError::Unreachable(format!(
            "cannot reach the head at {addr}: {}",
            crate::explain::chain(&e)
        ))
    })?;
    match EnrollClient::new(ch).join(req).await {
        Ok(r) => Ok(r.into_inner()),
        Err(s) if matches!(s.code(), tonic::Code::PermissionDenied | tonic::Code::InvalidArgument) => Err(
            EnrollError::Refused(format!("the head at {addr} refused the join: {}", s.message())),
        ),
        Err(s) => Err(EnrollError::Unreachable(format!(
            "join at {addr} failed: {}",
            s.message()
        ))),
    }
}

/// The agent's credentials directory inside its data directory.
pub fn tls_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("tls")
}
