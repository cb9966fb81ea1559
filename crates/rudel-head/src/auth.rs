//! Who may call what. A TLS request is let in if the client certificate it came with was
//! issued by this cluster (fingerprint in the replicated registry), is neither revoked nor
//! expired, and has a role the service serves. A request on the local Unix socket is let
//! in as the Unix user the kernel names (SO_PEERCRED). Refusals are logged with the peer
//! address and returned with the reason.
use std::sync::Arc;

use rudel_core::security::Role;
use rudel_tls::server::PeerInfo;
use tonic::{Request, Status};

use crate::proposer::now_ms;
use crate::SharedState;

/// The authenticated caller of a request (inserted by the interceptor).
#[derive(Clone, Debug)]
pub struct Caller {
    pub role: Role,
    pub name: String,
    /// Hex SHA-256 of its certificate.
    pub fingerprint: String,
    /// The node id an agent certificate is bound to.
    pub node_uid: String,
    /// The Unix user the caller acts as ("" for a client certificate bound to none).
    pub user: String,
    /// Its uid (socket callers only).
    pub uid: Option<u32>,
    pub transport: crate::identity::Transport,
}

impl Caller {
    /// True for roles that may act on every job.
    pub fn is_admin(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Head)
    }
}

/// A tonic interceptor admitting callers whose certificate has one of `roles`.
pub fn require(
    shared: Arc<SharedState>,
    service: &'static str,
    roles: &'static [Role],
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut req: Request<()>| {
        let caller = identify(&shared, &req, service, roles)?;
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

fn identify(shared: &SharedState, req: &Request<()>, service: &str, roles: &[Role]) -> Result<Caller, Status> {
    if let Some(uds) = req.extensions().get::<tonic::transport::server::UdsConnectInfo>() {
        return socket_caller(uds, service);
    }
    let peer = req.extensions().get::<PeerInfo>();
    let remote = peer.map_or_else(|| "?".to_string(), |p| p.remote.to_string());
    let refuse = |why: String, status: fn(String) -> Status| {
        tracing::warn!(peer = %remote, service, "refused request: {why}");
        Err(status(why))
    };
    let Some(fp) = peer.and_then(|p| p.fingerprint) else {
        return refuse(
            "no client certificate: this head requires mutual TLS. Get credentials with \
             `rudel login --head ADDR --token TOKEN` (token from `rudel token create --role client`) \
             or point $RUDEL_CREDENTIALS at a credentials directory"
                .into(),
            Status::unauthenticated,
        );
    };
    let fingerprint = rudel_tls::hex(&fp);
    let a = shared.read();
    match a.state.security.authorize(&fingerprint, now_ms()) {
        Err(denied @ rudel_core::security::Denied::Revoked { .. }) => {
            refuse(format!("{denied}"), Status::unauthenticated).map_err(revoked)
        }
        Err(denied) => refuse(format!("{denied}"), Status::unauthenticated),
        Ok(c) if !roles.contains(&c.role) => {
            let (role, name) = (c.role, c.name.clone());
            drop(a);
            refuse(
                format!("{name} holds a {role} certificate, which may not use the {service} service"),
                Status::permission_denied,
            )
        }
        Ok(c) if c.role == Role::Head && req.metadata().contains_key(crate::socket_forward::ON_BEHALF) => {
            let via = c.name.clone();
            drop(a);
            forwarded_caller(req, via, fingerprint, &remote)
        }
        Ok(c) => Ok(Caller {
            role: c.role,
            name: c.name.clone(),
            fingerprint,
            node_uid: c.node_uid.clone(),
            user: crate::identity::tls_user(c.role, &c.user),
            uid: None,
            transport: crate::identity::Transport::Tls,
        }),
    }
}

/// The socket caller a follower head forwarded a call for (only a head certificate is
/// believed: see `socket_forward`).
fn forwarded_caller(req: &Request<()>, via: String, fingerprint: String, remote: &str) -> Result<Caller, Status> {
    let text = req
        .metadata()
        .get(crate::socket_forward::ON_BEHALF)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some((role, uid, user)) = crate::socket_forward::parse_on_behalf(text) else {
        tracing::warn!(peer = %remote, head = %via, value = text, "refused forwarded request: bad caller header");
        return Err(Status::invalid_argument("a forwarded call names no valid caller"));
    };
    Ok(Caller {
        role,
        name: format!("{user}@socket via {via}"),
        fingerprint,
        node_uid: String::new(),
        user,
        uid: Some(uid),
        transport: crate::identity::Transport::Forwarded,
    })
}

/// A caller on the local socket: the kernel's word for its uid, mapped to a name on this
/// machine. Only the client service is served there (never agent or Raft traffic).
fn socket_caller(uds: &tonic::transport::server::UdsConnectInfo, service: &str) -> Result<Caller, Status> {
    let Some(cred) = uds.peer_cred else {
        tracing::warn!(service, "refused socket request: no peer credentials");
        return Err(Status::unauthenticated(
            "the kernel gave no peer credentials for this socket connection",
        ));
    };
    let uid = cred.uid();
    let Some(user) = crate::identity::user_name(uid) else {
        tracing::warn!(uid, service, "refused socket request: uid unknown to NSS on the head");
        return Err(Status::permission_denied(format!(
            "uid {uid} has no user name on the head's machine (getpwuid); ask an admin to add the user"
        )));
    };
    Ok(Caller {
        role: crate::identity::socket_role(uid),
        name: format!("{user}@socket"),
        fingerprint: String::new(),
        node_uid: String::new(),
        user,
        uid: Some(uid),
        transport: crate::identity::Transport::Socket,
    })
}

/// Metadata key marking a refusal because the caller's certificate was revoked (an agent
/// that sees it leaves the cluster instead of retrying).
pub const REVOKED_KEY: &str = "rudel-revoked";

/// Marks a status as "your certificate was revoked".
pub fn revoked(mut s: Status) -> Status {
    s.metadata_mut()
        .insert(REVOKED_KEY, tonic::metadata::MetadataValue::from_static("1"));
    s
}

/// Metadata key marking a refusal because another machine holds the node name (an agent
/// that sees it exits with the message instead of retrying).
pub const NAME_HELD_KEY: &str = "rudel-name-held";

/// Marks a status as "this node name is held by another machine".
pub fn name_held(mut s: Status) -> Status {
    s.metadata_mut()
        .insert(NAME_HELD_KEY, tonic::metadata::MetadataValue::from_static("1"));
    s
}

/// The interceptor of head-to-head (Raft) traffic: the peer must hold a head certificate
/// of this cluster (checked against the CA itself, so a new head with an empty registry
/// can follow), and it must not be revoked in the registry if the registry knows it.
pub fn require_head(
    shared: Arc<SharedState>,
    check: Arc<rudel_tls::server::HeadCertCheck>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let peer = req.extensions().get::<PeerInfo>();
        let remote = peer.map_or_else(|| "?".to_string(), |p| p.remote.to_string());
        let Some((cert, fp)) = peer.and_then(|p| Some((p.cert.clone()?, p.fingerprint?))) else {
            tracing::warn!(peer = %remote, "refused raft request: no client certificate");
            return Err(Status::unauthenticated("raft traffic needs a head certificate"));
        };
        if let Err(why) = check.check(&cert) {
            tracing::warn!(peer = %remote, "refused raft request: {why}");
            return Err(Status::unauthenticated(why));
        }
        let revoked = {
            let a = shared.read();
            a.state
                .security
                .certs
                .get(&rudel_tls::hex(&fp))
                .is_some_and(|c| c.revoked_ms.is_some())
        };
        if revoked {
            tracing::warn!(peer = %remote, "refused raft request: head certificate revoked");
            return Err(revoked_status());
        }
        Ok(req)
    }
}

fn revoked_status() -> Status {
    revoked(Status::unauthenticated("head certificate revoked"))
}

/// The caller the interceptor admitted.
pub fn caller<T>(req: &Request<T>) -> Result<&Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::internal("request without an authenticated caller"))
}

/// Refuses callers that are not admins (or heads) for `what`.
pub fn require_admin<T>(req: &Request<T>, what: &str) -> Result<(), Status> {
    let c = caller(req)?;
    if c.is_admin() {
        return Ok(());
    }
    tracing::warn!(caller = %c.name, role = %c.role, "refused {what}: admin only");
    Err(Status::permission_denied(format!(
        "{what} needs an admin certificate; {} holds a {} certificate",
        c.name, c.role
    )))
}

/// Refuses callers that are neither admins nor operators for `what` (drain, resume).
pub fn require_operator<T>(req: &Request<T>, what: &str) -> Result<(), Status> {
    let c = caller(req)?;
    if c.is_admin() || c.role == Role::Operator {
        return Ok(());
    }
    tracing::warn!(caller = %c.name, user = %c.user, role = %c.role, "refused {what}: operators and admins only");
    Err(Status::permission_denied(format!(
        "{what} needs an operator or admin; {} is a {} (`rudel token create --role operator --user U` makes operator credentials)",
        if c.user.is_empty() { &c.name } else { &c.user },
        c.role
    )))
}
