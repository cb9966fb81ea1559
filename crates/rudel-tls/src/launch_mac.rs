//! Authenticates step launches that travel through other agents (the launch tree,
//! docs/parallel-jobs.md): the head gives every agent session a random key over its TLS
//! session and tags each node's launch with that node's key. An agent runs a forwarded
//! launch only if the tag verifies, so a compromised agent in the middle of the tree can
//! drop launches (its parent's report or the step's end shows it) but cannot make another
//! node run anything the head did not issue, as any user.
use ring::hmac;

/// Bytes of a session key.
pub const KEY_LEN: usize = 32;
/// Separates these tags from any other use of the key.
const DOMAIN: &[u8] = b"rudel-step-launch-v1\0";

/// One agent session's launch key. Its Debug output never shows the key.
#[derive(Clone)]
pub struct LaunchKey([u8; KEY_LEN]);

impl std::fmt::Debug for LaunchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LaunchKey(..)")
    }
}

/// Why a launch was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MacError {
    #[error("the launch key has {0} bytes, not {KEY_LEN}")]
    KeyLength(usize),
    #[error("the launch's tag does not verify: not issued by the head for this node and session")]
    Forged,
    #[error("the launch expired {0} ms ago")]
    Expired(u64),
}

impl LaunchKey {
    /// A new random key.
    pub fn random() -> LaunchKey {
        LaunchKey(rand::random())
    }

    /// The key as received in Welcome.launch_key.
    pub fn from_bytes(b: &[u8]) -> Result<LaunchKey, MacError> {
        <[u8; KEY_LEN]>::try_from(b)
            .map(LaunchKey)
            .map_err(|_| MacError::KeyLength(b.len()))
    }

    /// The key's bytes, for Welcome.launch_key only.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }

    /// The tag of `launch` (an encoded StepLaunch) for `node`, valid until `expires_ms`.
    pub fn sign(&self, node: &str, expires_ms: u64, launch: &[u8]) -> Vec<u8> {
        hmac::sign(&self.key(), &message(node, expires_ms, launch))
            .as_ref()
            .to_vec()
    }

    /// Ok if `mac` is this key's tag of (node, expires_ms, launch) and `now_ms` is not past
    /// `expires_ms`. The comparison is constant-time (ring).
    pub fn verify(&self, node: &str, expires_ms: u64, launch: &[u8], mac: &[u8], now_ms: u64) -> Result<(), MacError> {
        hmac::verify(&self.key(), &message(node, expires_ms, launch), mac).map_err(|_| MacError::Forged)?;
        if now_ms > expires_ms {
            return Err(MacError::Expired(now_ms - expires_ms));
        }
        Ok(())
    }
}

/// Length-prefixed fields, so no two different (node, launch) pairs give the same bytes.
fn message(node: &str, expires_ms: u64, launch: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 16 + node.len() + launch.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&expires_ms.to_be_bytes());
    m.extend_from_slice(&(node.len() as u64).to_be_bytes());
    m.extend_from_slice(node.as_bytes());
    m.extend_from_slice(launch);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_verifies_only_for_its_key_node_launch_and_time() {
        let k = LaunchKey::random();
        let mac = k.sign("n2", 1_000, b"launch bytes");
        assert_eq!(k.verify("n2", 1_000, b"launch bytes", &mac, 999), Ok(()));
        // Tampered launch, other node, other expiry, other key, truncated tag.
        assert_eq!(k.verify("n2", 1_000, b"launch bytez", &mac, 999), Err(MacError::Forged));
        assert_eq!(k.verify("n3", 1_000, b"launch bytes", &mac, 999), Err(MacError::Forged));
        assert_eq!(k.verify("n2", 9_000, b"launch bytes", &mac, 999), Err(MacError::Forged));
        let other = LaunchKey::random();
        assert_eq!(
            other.verify("n2", 1_000, b"launch bytes", &mac, 999),
            Err(MacError::Forged)
        );
        assert_eq!(
            k.verify("n2", 1_000, b"launch bytes", &mac[..16], 999),
            Err(MacError::Forged)
        );
        // Valid but too late.
        assert_eq!(
            k.verify("n2", 1_000, b"launch bytes", &mac, 1_500),
            Err(MacError::Expired(500))
        );
    }

    #[test]
    fn keys_round_trip_and_never_print() {
        let k = LaunchKey::random();
        let back = LaunchKey::from_bytes(k.bytes()).unwrap();
        assert_eq!(back.bytes(), k.bytes());
        assert_eq!(format!("{k:?}"), "LaunchKey(..)");
        assert_eq!(LaunchKey::from_bytes(&[0; 5]).unwrap_err(), MacError::KeyLength(5));
    }
}
