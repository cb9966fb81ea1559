//! The Enroll service: the one RPC a head answers without a client certificate. A node
//! or user presents a join token and a public key and gets a certificate back.
use std::sync::Arc;

use rudel_core::security::{CertGrant, Role};
use rudel_core::{Command, Response};
use rudel_proto::v1 as pb;
use rudel_tls::server::PeerInfo;
use rudel_tls::JoinToken;
use tonic::{Request, Status};

use crate::credentials::cluster_ca;
use crate::proposer::{now_ms, Proposer};
use crate::SharedState;

#[derive(Clone)]
pub struct EnrollService {
    pub proposer: Proposer,
    pub shared: Arc<SharedState>,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 255 && n.chars().all(|c| c.is_ascii_alphanumeric() || "._-@:".contains(c))
}

#[tonic::async_trait]
impl pb::enroll_server::Enroll for EnrollService {
    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<tonic::Response<pb::JoinReply>, Status> {
        let peer = req
            .extensions()
            .get::<PeerInfo>()
            .map_or_else(|| "?".to_string(), |p| p.remote.to_string());
        let r = req.into_inner();
        let refuse = |why: String| {
            tracing::warn!(peer = %peer, name = %r.name, node_uid = %r.node_uid, "refused join: {why}");
            Status::permission_denied(why)
        };
        let token: JoinToken = r.token.parse().map_err(refuse)?;
        if !valid_name(&r.name) {
            return Err(Status::invalid_argument(format!(
                "name {:?}: 1-255 letters, digits and ._-@:",
                r.name
            )));
        }
        let secret_hash = token.secret_hash();
        let (role, cert_ttl_ms) = {
            let a = self.shared.read();
            let t = a
                .state
                .security
                .check_token(token.id, &secret_hash, now_ms())
                .map_err(refuse)?;
            (t.role, t.cert_ttl_ms)
        };
        match (r.want.as_str(), role) {
            ("agent", Role::Agent) | ("user", Role::Client | Role::Admin | Role::Operator) | ("head", Role::Head) | ("", _) => {}
            ("head", _) => {
                return Err(refuse(format!(
                    "join token {} is for role {role}; heads join with a head token (`rudel token create --role head`)",
                    token.id
                )))
            }
            ("agent", _) => {
                return Err(refuse(format!(
                    "join token {} is for role {role}; nodes join with an agent token (`rudel token create --role agent`)",
                    token.id
                )))
            }
            _ => {
                return Err(refuse(format!(
                    "join token {} is for role {role}; `rudel login` needs one made with `rudel token create --role client` (or admin)",
                    token.id
                )))
            }
        }
        if role == Role::Agent && r.node_uid.is_empty() {
            return Err(Status::invalid_argument("an agent joins with its node id"));
        }
        let ca = cluster_ca(&self.shared).map_err(Status::unavailable)?;
        let expires = now_ms() + cert_ttl_ms;
        let issued = ca
            .issue(role.as_str(), &r.name, &r.public_key, expires, role == Role::Head)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let grant = CertGrant {
            fingerprint: rudel_tls::hex(&issued.fingerprint),
            role,
            name: r.name.clone(),
            node_uid: r.node_uid.clone(),
            expires_ms: issued.expires_unix_ms,
            token: Some((token.id, secret_hash)),
            // A node name is bound to one machine: the state refuses this grant while
            // another machine holds the name (checked where it is decided, in log order).
            bind_name: role == Role::Agent,
        };
        match self
            .proposer
            .propose(Command::GrantCert {
                grant,
                now_ms: now_ms(),
            })
            .await?
        {
            Response::Ok => {}
            Response::Rejected { reason } => return Err(refuse(reason)),
            other => return Err(Status::internal(format!("unexpected grant result {other:?}"))),
        }
        tracing::info!(peer = %peer, name = %r.name, role = %role, token = token.id, "issued a certificate");
        Ok(tonic::Response::new(pb::JoinReply {
            cert_pem: issued.cert_pem,
            ca_pem: ca.cert_pem().to_string(),
            role: role.to_string(),
            expires_unix_ms: issued.expires_unix_ms,
        }))
    }
}
