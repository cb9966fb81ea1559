//! rudel-tls: the cluster CA, join tokens, credential files and the rustls plumbing that
//! puts mutual TLS under every gRPC connection (head <-> agent, client -> head, head <-> head).
//! rustls with the ring provider; no OpenSSL.
pub mod ca;
pub mod client;
pub mod creds;
pub mod enroll;
pub mod explain;
pub mod launch_mac;
pub mod peer;
pub mod server;
pub mod token;

use std::sync::Arc;

pub use ca::{Ca, Issued};
pub use creds::Credentials;
pub use token::JoinToken;

/// The DNS name every head certificate carries and every client expects. Heads are found
/// by address; what a client checks is that the peer holds a head certificate from the
/// cluster CA, so one fixed name serves any address.
pub const HEAD_SERVER_NAME: &str = "rudel-head";

/// Why a TLS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot create a key or certificate: {0}")]
    Generate(String),
    #[error("{what}: {detail}")]
    Bad { what: String, detail: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> TlsError {
        TlsError::Generate(e.to_string())
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> TlsError {
        TlsError::Config(e.to_string())
    }
}

/// SHA-256 of a certificate's DER encoding: how heads recognise issued certificates.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses lower- or upper-case hex of exactly `N` bytes.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The crypto provider used everywhere (ring), so nothing depends on a process default.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Handshake signature checks with the provider's algorithms, shared by rudel's own
/// certificate verifiers (the pinned-CA one for joins, the head's client verifier).
pub(crate) mod signatures {
    use rustls::client::danger::HandshakeSignatureValid;
    use rustls::pki_types::CertificateDer;
    use rustls::{DigitallySignedStruct, SignatureScheme};

    pub fn tls12(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &crate::provider().signature_verification_algorithms)
    }

    pub fn tls13(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &crate::provider().signature_verification_algorithms)
    }

    pub fn schemes() -> Vec<SignatureScheme> {
        crate::provider().signature_verification_algorithms.supported_schemes()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&b), "0001abff");
        assert_eq!(unhex::<4>("0001ABff"), Some(b));
        assert_eq!(unhex::<4>("0001ab"), None);
        assert_eq!(unhex::<2>("zz00"), None);
    }
}
