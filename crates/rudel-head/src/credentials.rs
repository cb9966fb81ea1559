//! A head's credentials: the cluster CA (created by the first head, kept in the replicated
//! state), the head's own certificate, the admin credentials for local CLI use, and the
//! initial join token printed at start. Also signing for joins.
use std::path::{Path, PathBuf};
use std::time::Duration;

use rudel_core::security::{CaRecord, CertGrant, Role};
use rudel_core::{Command, Response};
use rudel_tls::{Ca, Credentials, JoinToken};

use crate::proposer::{now_ms, Proposer};
use crate::{HeadError, Raft, SharedState};

/// Lifetime of head and admin certificates.
pub const LONG_CERT_TTL_MS: u64 = 5 * 365 * 24 * 3600 * 1000;
/// Default lifetime of certificates issued with a join token.
pub const DEFAULT_CERT_TTL_MS: u64 = 365 * 24 * 3600 * 1000;

/// Where a head keeps its own TLS identity (under its data directory).
pub fn head_tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// Where a head writes admin credentials for the CLI on its machine.
pub fn admin_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("client")
}

/// File holding the initial join token (0600), so it can be printed again on restart.
pub fn join_token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("join-token")
}

/// What `bootstrap` set up.
pub struct HeadCredentials {
    pub creds: Credentials,
    /// The initial join token, if it is still valid.
    pub join_token: Option<String>,
    /// When it expires (None: never).
    pub join_token_expires_ms: Option<u64>,
    pub admin_dir: PathBuf,
}

fn err(what: &str, e: impl std::fmt::Display) -> HeadError {
    HeadError::Raft(format!("{what}: {e}"))
}

/// The cluster CA from the replicated state.
pub fn cluster_ca(shared: &SharedState) -> Result<Ca, String> {
    let ca = shared
        .read()
        .state
        .security
        .ca
        .clone()
        .ok_or("the cluster has no CA yet (its first head has not finished starting)")?;
    Ca::load(&ca.name, &ca.cert_pem, &ca.key_pem).map_err(|e| e.to_string())
}

async fn propose(proposer: &Proposer, cmd: Command) -> Result<Response, HeadError> {
    match proposer.propose(cmd).await {
        Ok(Response::Rejected { reason }) => Err(err("credentials", reason)),
        Ok(r) => Ok(r),
        Err(e) => Err(err("credentials", e)),
    }
}

/// Signs a certificate for a fresh key and records it; returns the credentials.
pub async fn issue_local(
    proposer: &Proposer,
    ca: &Ca,
    role: Role,
    name: &str,
    head: bool,
) -> Result<Credentials, HeadError> {
    let key = rudel_tls::ca::new_key().map_err(|e| err("key", e))?;
    let expires = now_ms() + LONG_CERT_TTL_MS;
    let issued = ca
        .issue(role.as_str(), name, key.public_key_raw(), expires, head)
        .map_err(|e| err("certificate", e))?;
    let grant = CertGrant {
        fingerprint: rudel_tls::hex(&issued.fingerprint),
        role,
        name: name.to_string(),
        node_uid: String::new(),
        expires_ms: issued.expires_unix_ms,
        token: None,
        bind_name: false,
    };
    propose(
        proposer,
        Command::GrantCert {
            grant,
            now_ms: now_ms(),
        },
    )
    .await?;
    Ok(Credentials {
        ca_pem: ca.cert_pem().to_string(),
        identity: Some((issued.cert_pem, key.serialize_pem())),
    })
}

/// Creates a join token; returns it (the only time its secret exists outside the caller).
pub async fn create_token(
    proposer: &Proposer,
    ca: &Ca,
    role: Role,
    description: String,
    ttl: Option<Duration>,
    cert_ttl_ms: u64,
    user: String,
) -> Result<(JoinToken, Option<u64>), Response> {
    let fp = ca
        .fingerprint()
        .map_err(|e| Response::Rejected { reason: e.to_string() })?;
    let mut token = JoinToken::generate(&fp);
    let now = now_ms();
    let expires_ms = ttl.map(|t| now + t.as_millis() as u64);
    let cmd = Command::CreateToken {
        secret_hash: token.secret_hash(),
        role,
        description,
        expires_ms,
        cert_ttl_ms,
        now_ms: now,
        user,
    };
    match proposer.propose(cmd).await {
        Ok(Response::TokenCreated { id }) => {
            token.id = id;
            Ok((token, expires_ms))
        }
        Ok(other) => Err(other),
        Err(e) => Err(Response::Rejected { reason: e.to_string() }),
    }
}

/// Makes sure the cluster has a CA and this head has its credentials, admin credentials
/// and an initial join token. Runs on a head that leads (the first head of a cluster) or
/// that already has its credentials on disk.
pub async fn bootstrap(
    raft: &Raft,
    proposer: &Proposer,
    shared: &SharedState,
    data_dir: &Path,
    head_id: u64,
    join_token_ttl: Option<Duration>,
) -> Result<HeadCredentials, HeadError> {
    let tls_dir = head_tls_dir(data_dir);
    let admin = admin_dir(data_dir);
    let token_file = join_token_file(data_dir);
    // A head with credentials has been set up before (or joined a group with a token):
    // only the first head of a cluster creates the CA, admin credentials and first token.
    if !Credentials::exist(&tls_dir) {
        // Only a leader can record them; a new one-head cluster elects itself fast.
        raft.wait(Some(Duration::from_secs(30)))
            .metrics(|m| m.current_leader == Some(head_id), "leadership")
            .await
            .map_err(|e| err("waiting to lead before creating credentials", e))?;
        if shared.read().state.security.ca.is_none() {
            let name = format!("rudel cluster {}", rudel_tls::hex(&rand::random::<[u8; 6]>()));
            let ca = Ca::generate(&name).map_err(|e| err("CA", e))?;
            let record = CaRecord {
                name,
                cert_pem: ca.cert_pem().to_string(),
                key_pem: ca.key_pem(),
            };
            propose(proposer, Command::InitCa { ca: record }).await?;
            tracing::info!("created the cluster CA");
        }
        let ca = cluster_ca(shared).map_err(|e| err("CA", e))?;
        let save = |c: &Credentials, dir: &Path| c.save(dir).map_err(|e| err("saving credentials", e));
        if !Credentials::exist(&admin) {
            let c = issue_local(proposer, &ca, Role::Admin, &format!("admin@head-{head_id}"), false).await?;
            save(&c, &admin)?;
        }
        if !token_file.is_file() {
            let (token, _) = create_token(
                proposer,
                &ca,
                Role::Agent,
                "initial token (printed by the head)".into(),
                join_token_ttl,
                DEFAULT_CERT_TTL_MS,
                String::new(),
            )
            .await
            .map_err(|r| err("join token", format!("{r:?}")))?;
            rudel_tls::creds::write_atomic(&token_file, &token.to_string(), 0o600).map_err(|e| err("join token", e))?;
        }
        // Last: its presence marks the setup as done.
        let c = issue_local(proposer, &ca, Role::Head, &format!("head-{head_id}"), true).await?;
        save(&c, &tls_dir)?;
    }
    let creds = Credentials::load(&tls_dir).map_err(|e| err("head credentials", e))?;
    let valid = std::fs::read_to_string(&token_file)
        .ok()
        .and_then(|t| t.trim().parse::<JoinToken>().ok())
        .and_then(|t| {
            let a = shared.read();
            let expires = a
                .state
                .security
                .check_token(t.id, &t.secret_hash(), now_ms())
                .ok()?
                .expires_ms;
            Some((t.to_string(), expires))
        });
    let (join_token, join_token_expires_ms) = valid.map_or((None, None), |(t, e)| (Some(t), e));
    Ok(HeadCredentials {
        creds,
        join_token,
        join_token_expires_ms,
        admin_dir: admin,
    })
}
