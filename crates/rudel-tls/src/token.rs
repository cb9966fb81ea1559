//! Join tokens: `rdl1-<CA pin>-<id>-<secret>`. The CA pin (first 16 bytes of the CA
//! certificate's SHA-256) lets a new node check it reached the right cluster before it
//! sends the secret; the head keeps only a hash of the secret.
use std::fmt;
use std::str::FromStr;

use crate::{hex, unhex};

const PREFIX: &str = "rdl1";

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_pin: [u8; 16],
    pub id: u64,
    pub secret: [u8; 16],
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret in logs.
        write!(f, "JoinToken {{ id: {}, ca_pin: {} }}", self.id, hex(&self.ca_pin))
    }
}

impl JoinToken {
    /// A new token with a random secret for the CA with fingerprint `ca_fp`.
    pub fn generate(ca_fp: &[u8; 32]) -> JoinToken {
        let mut ca_pin = [0u8; 16];
        ca_pin.copy_from_slice(&ca_fp[..16]);
        JoinToken {
            ca_pin,
            id: 0,
            secret: rand::random(),
        }
    }

    /// Hex SHA-256 of the secret (what the cluster state keeps).
    pub fn secret_hash(&self) -> String {
        hash_secret(&self.secret)
    }
}

/// Hex SHA-256 of a token secret.
pub fn hash_secret(secret: &[u8; 16]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret).as_ref())
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}-{}-{}-{}", hex(&self.ca_pin), self.id, hex(&self.secret))
    }
}

impl FromStr for JoinToken {
    type Err = String;
    fn from_str(s: &str) -> Result<JoinToken, String> {
        let bad = |why: &str| format!("malformed join token ({why}); it looks like rdl1-<32 hex>-<id>-<32 hex>");
        let parts: Vec<&str> = s.trim().split('-').collect();
        if parts.len() != 4 || parts[0] != PREFIX {
            return Err(bad("wrong shape"));
        }
        let ca_pin = unhex::<16>(parts[1]).ok_or_else(|| bad("CA pin"))?;
        let id = parts[2].parse().map_err(|_| bad("id"))?;
        let secret = unhex::<16>(parts[3]).ok_or_else(|| bad("secret"))?;
        Ok(JoinToken { ca_pin, id, secret })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let mut t = JoinToken::generate(&[7u8; 32]);
        t.id = 42;
        let s = t.to_string();
        assert!(s.starts_with("rdl1-07070707"));
        assert_eq!(s.parse::<JoinToken>().unwrap(), t);
        assert!(
            !format!("{t:?}").contains(&hex(&t.secret)),
            "Debug must hide the secret"
        );
        for bad in ["", "rdl1", "rdl2-00-1-00", &s.replace("-42-", "-x-"), &s[..s.len() - 1]] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(t.secret_hash().len(), 64);
    }
}
