//! Who may talk to the cluster: the cluster CA, join tokens and the certificates issued
//! with them. Replicated like everything else, so every head can authorize a caller and a
//! new leader can keep signing. Secrets of tokens are kept only as hashes; the CA key is
//! kept here because every head must be able to sign (heads are trusted alike).
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Issued certificates that expired this long ago are forgotten.
pub const FORGET_EXPIRED_AFTER_MS: u64 = 7 * 24 * 3600 * 1000;

/// What a certificate lets its holder do.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A node: holds the agent session, nothing else.
    Agent,
    /// A user: submit, list, cancel, watch.
    Client,
    /// A user who may also drain nodes, run `exec` and manage tokens.
    Admin,
    /// A head of the Raft group.
    Head,
    /// A user who may also drain and resume nodes (and otherwise acts as a client).
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Client => "client",
            Role::Admin => "admin",
            Role::Head => "head",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "agent" => Ok(Role::Agent),
            "client" => Ok(Role::Client),
            "admin" => Ok(Role::Admin),
            "head" => Ok(Role::Head),
            "operator" => Ok(Role::Operator),
            _ => Err(format!(
                "unknown role {s:?}: expected agent, client, operator, admin or head"
            )),
        }
    }
}

/// The cluster's certificate authority.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRecord {
    /// Common name of the CA (needed to sign with it again).
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Written by hand: the state derives `Debug`, and a debug print of it must not carry the
/// CA's private key (anyone with it can sign certificates for any role).
impl std::fmt::Debug for CaRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaRecord")
            .field("name", &self.name)
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A join token; the secret itself is never stored, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: u64,
    pub secret_hash: String,
    /// Role of the certificates issued with this token.
    pub role: Role,
    pub description: String,
    pub created_ms: u64,
    /// After this the token no longer issues certificates (None: until revoked).
    pub expires_ms: Option<u64>,
    /// Lifetime of each certificate issued with the token.
    pub cert_ttl_ms: u64,
    pub revoked_ms: Option<u64>,
    /// Certificates issued with it so far.
    pub uses: u64,
    /// The Unix user its certificates name ("" for tokens made before users were bound,
    /// and for agent and head tokens).
    #[serde(default)]
    pub user: String,
}

/// An issued certificate, keyed by the SHA-256 of its DER encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRecord {
    pub role: Role,
    /// Node name for agents, a label for the others.
    pub name: String,
    /// The node id the agent joined with (agents may register only as that node).
    pub node_uid: String,
    /// The token it was issued with (None: issued by a head for itself or its admin).
    pub token: Option<u64>,
    pub issued_ms: u64,
    pub expires_ms: u64,
    pub revoked_ms: Option<u64>,
    /// The Unix user the holder acts as (from its token; "" if the token named none).
    #[serde(default)]
    pub user: String,
}

/// A request to record a certificate the leader just signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertGrant {
    /// Hex SHA-256 of the certificate.
    pub fingerprint: String,
    pub role: Role,
    pub name: String,
    pub node_uid: String,
    pub expires_ms: u64,
    /// Token id and hex SHA-256 of the secret presented with the request, if any.
    pub token: Option<(u64, String)>,
    /// An agent grant that binds its node name to `node_uid`: refused while another machine
    /// holds the name. Entries written before names were bound lack it (false) and replay
    /// as they applied then.
    #[serde(default)]
    pub bind_name: bool,
}

/// A node name bound to another machine than the one asking for it. Shown to the refused
/// agent as is, so it says who holds the name and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameHeld {
    pub name: String,
    /// Node id (data directory uid) of the machine holding the name.
    pub holder_uid: String,
    /// Address of the holder's current or last session ("" if it never registered).
    pub holder_address: String,
    /// Node id of the machine that was refused.
    pub uid: String,
}

impl fmt::Display for NameHeld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.holder_address.is_empty() {
            "joined, not registered yet".to_string()
        } else {
            format!("last connected from {}", self.holder_address)
        };
        write!(
            f,
            "node name {name} is held by another machine (node id {holder}, {at}); this machine's node id is {uid}. \
             Start this agent with another --name, or, if the machine holding {name} is really gone, \
             have an admin run `rudel node forget {name}` and start this agent again",
            name = self.name,
            holder = self.holder_uid,
            uid = self.uid,
        )
    }
}

/// Everything about authentication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Security {
    pub ca: Option<CaRecord>,
    pub tokens: BTreeMap<u64, TokenRecord>,
    pub next_token: u64,
    pub certs: BTreeMap<String, CertRecord>,
}

/// Why a caller is not let in; the text is shown to it and logged on the head.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("certificate not issued by this cluster's heads (unknown fingerprint)")]
    Unknown,
    #[error("certificate of {name} was revoked")]
    Revoked { name: String },
    #[error(
        "certificate of {name} expired (users: `rudel login` with a new token; nodes: restart the agent with --token)"
    )]
    Expired { name: String },
}

impl Security {
    /// The token a join presents, checked for use at `now_ms`.
    pub fn check_token(&self, id: u64, secret_hash: &str, now_ms: u64) -> Result<&TokenRecord, String> {
        let bad = || "invalid join token (unknown or mistyped; `rudel token list` shows valid ones)".to_string();
        let t = self.tokens.get(&id).ok_or_else(bad)?;
        if t.secret_hash != secret_hash {
            return Err(bad());
        }
        if t.revoked_ms.is_some() {
            return Err(format!("join token {id} was revoked"));
        }
        if t.expires_ms.is_some_and(|e| now_ms >= e) {
            return Err(format!("join token {id} has expired"));
        }
        Ok(t)
    }

    /// The node id of another valid agent certificate issued for node `name` (one that
    /// joined but has not registered yet), if any.
    pub fn agent_cert_holder(&self, name: &str, uid: &str, now_ms: u64) -> Option<&str> {
        self.certs
            .values()
            .find(|c| {
                c.role == Role::Agent
                    && c.name == name
                    && c.node_uid != uid
                    && c.revoked_ms.is_none()
                    && c.expires_ms > now_ms
            })
            .map(|c| c.node_uid.as_str())
    }

    /// Revokes every agent certificate issued for node `name`; returns how many.
    pub(crate) fn revoke_node_certs(&mut self, name: &str, now_ms: u64) -> u64 {
        let mut n = 0;
        for c in self.certs.values_mut() {
            if c.role == Role::Agent && c.name == name && c.revoked_ms.is_none() {
                c.revoked_ms = Some(now_ms);
                n += 1;
            }
        }
        n
    }

    /// The certificate with this fingerprint, if it may be used at `now_ms`.
    pub fn authorize(&self, fingerprint: &str, now_ms: u64) -> Result<&CertRecord, Denied> {
        let c = self.certs.get(fingerprint).ok_or(Denied::Unknown)?;
        if c.revoked_ms.is_some() {
            return Err(Denied::Revoked { name: c.name.clone() });
        }
        if now_ms >= c.expires_ms {
            return Err(Denied::Expired { name: c.name.clone() });
        }
        Ok(c)
    }

    pub(crate) fn init_ca(&mut self, ca: CaRecord) -> Result<(), String> {
        match &self.ca {
            Some(have) if *have == ca => Ok(()),
            Some(_) => Err("the cluster already has a CA".into()),
            None => {
                self.ca = Some(ca);
                Ok(())
            }
        }
    }

    pub(crate) fn create_token(
        &mut self,
        secret_hash: String,
        role: Role,
        description: String,
        expires_ms: Option<u64>,
        cert_ttl_ms: u64,
        now_ms: u64,
    ) -> u64 {
        self.next_token = self.next_token.max(1);
        let id = self.next_token;
        self.next_token += 1;
        self.tokens.insert(
            id,
            TokenRecord {
                id,
                secret_hash,
                role,
                description,
                created_ms: now_ms,
                expires_ms,
                cert_ttl_ms,
                revoked_ms: None,
                uses: 0,
                user: String::new(),
            },
        );
        id
    }

    /// Names the Unix user the certificates of token `id` act as.
    pub(crate) fn bind_token_user(&mut self, id: u64, user: String) {
        if let Some(t) = self.tokens.get_mut(&id) {
            t.user = user;
        }
    }

    /// Revokes a token and every certificate issued with it; returns the certificates'
    /// names, or None if there is no such token.
    pub(crate) fn revoke_token(&mut self, id: u64, now_ms: u64) -> Option<Vec<String>> {
        let t = self.tokens.get_mut(&id)?;
        t.revoked_ms.get_or_insert(now_ms);
        let mut names = Vec::new();
        for c in self.certs.values_mut().filter(|c| c.token == Some(id)) {
            if c.revoked_ms.is_none() {
                c.revoked_ms = Some(now_ms);
                names.push(c.name.clone());
            }
        }
        Some(names)
    }

    /// Records a signed certificate (checking the token again, deterministically).
    pub(crate) fn grant(&mut self, g: CertGrant, now_ms: u64) -> Result<(), String> {
        let token = match &g.token {
            Some((id, hash)) => {
                let t = self.check_token(*id, hash, now_ms)?;
                if t.role != g.role {
                    return Err(format!("join token {id} is for role {}, not {}", t.role, g.role));
                }
                Some(*id)
            }
            None => None,
        };
        let mut user = String::new();
        if let Some(id) = token {
            if let Some(t) = self.tokens.get_mut(&id) {
                t.uses += 1;
                user = t.user.clone();
            }
        }
        self.certs
            .retain(|_, c| c.expires_ms.saturating_add(FORGET_EXPIRED_AFTER_MS) > now_ms);
        self.certs.insert(
            g.fingerprint,
            CertRecord {
                role: g.role,
                name: g.name,
                node_uid: g.node_uid,
                token,
                issued_ms: now_ms,
                expires_ms: g.expires_ms,
                revoked_ms: None,
                user,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(fp: &str, token: Option<(u64, &str)>, role: Role) -> CertGrant {
        CertGrant {
            fingerprint: fp.into(),
            role,
            name: format!("n-{fp}"),
            node_uid: "u".into(),
            expires_ms: 10_000,
            token: token.map(|(i, h)| (i, h.to_string())),
            bind_name: false,
        }
    }

    #[test]
    fn token_life_cycle() {
        let mut s = Security::default();
        let id = s.create_token("h".into(), Role::Agent, "d".into(), Some(5_000), 10_000, 100);
        assert_eq!(id, 1);
        assert!(s.check_token(1, "x", 200).is_err(), "wrong secret");
        assert!(s.check_token(2, "h", 200).is_err(), "unknown id");
        assert!(s.check_token(1, "h", 200).is_ok());
        assert!(s.check_token(1, "h", 5_000).unwrap_err().contains("expired"));
        assert!(s
            .grant(grant("a", Some((1, "h")), Role::Client), 200)
            .unwrap_err()
            .contains("role"));
        s.grant(grant("a", Some((1, "h")), Role::Agent), 200).unwrap();
        s.grant(grant("b", None, Role::Admin), 200).unwrap();
        assert_eq!(s.tokens[&1].uses, 1);
        assert!(s.authorize("a", 300).is_ok());
        assert_eq!(s.authorize("zz", 300), Err(Denied::Unknown));
        assert!(matches!(s.authorize("a", 10_000), Err(Denied::Expired { .. })));
        assert_eq!(s.revoke_token(1, 400), Some(vec!["n-a".to_string()]));
        assert!(matches!(s.authorize("a", 500), Err(Denied::Revoked { .. })));
        assert!(s.authorize("b", 500).is_ok(), "certificates of other tokens stay valid");
        assert!(s.check_token(1, "h", 500).unwrap_err().contains("revoked"));
        assert_eq!(s.revoke_token(9, 500), None);
    }

    #[test]
    fn old_expired_certificates_are_forgotten() {
        let mut s = Security::default();
        s.grant(grant("a", None, Role::Agent), 0).unwrap();
        s.grant(grant("b", None, Role::Agent), 10_000 + FORGET_EXPIRED_AFTER_MS)
            .unwrap();
        assert!(!s.certs.contains_key("a"));
        assert!(s.certs.contains_key("b"));
    }

    #[test]
    fn ca_is_set_once() {
        let mut s = Security::default();
        let ca = CaRecord {
            name: "x".into(),
            cert_pem: "c".into(),
            key_pem: "k".into(),
        };
        s.init_ca(ca.clone()).unwrap();
        s.init_ca(ca.clone()).unwrap();
        let other = CaRecord { name: "y".into(), ..ca };
        assert!(s.init_ca(other).is_err());
    }

    #[test]
    fn the_ca_key_never_appears_in_debug_even_inside_the_state() {
        let key = "-----BEGIN PRIVATE KEY-----\nSECRETBYTES\n-----END PRIVATE KEY-----\n";
        let mut s = Security::default();
        s.init_ca(CaRecord {
            name: "x".into(),
            cert_pem: "c".into(),
            key_pem: key.into(),
        })
        .unwrap();
        let state = crate::state::State {
            security: s,
            ..crate::state::State::new()
        };
        for text in [format!("{state:?}"), format!("{state:#?}")] {
            assert!(!text.contains("SECRETBYTES") && !text.contains("PRIVATE KEY"), "{text}");
        }
    }
}
