//! The head's side: a TLS acceptor under tonic. Client certificates are optional at the
//! handshake (a joining node has none yet). A presented certificate is not judged here:
//! the handshake proves the peer holds its key, and the head looks the certificate up in
//! the replicated registry of issued certificates (issued by us, not revoked, not
//! expired, role) on every request. That decision then reaches the caller as a gRPC
//! status with the reason: with TLS 1.3 a handshake-time refusal would arrive after the
//! client's first write and surface as a broken pipe. Plain-text connections are
//! refused and logged.
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::{creds::parse_certs, explain, Credentials, TlsError};

/// A connection slower than this to finish its handshake is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection, attached to every request on it.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// SHA-256 of the client certificate, if one was presented (its key proven).
    pub fingerprint: Option<[u8; 32]>,
    /// The client certificate itself (DER), for checks beyond the registry.
    pub cert: Option<Arc<Vec<u8>>>,
}

/// An accepted, handshaken connection.
pub struct TlsConn {
    io: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Server configuration from a head's credentials (identity required). The chain sent
/// includes the CA, so a joining node can check it against the pin in its token.
pub fn server_config(creds: &Credentials) -> Result<Arc<ServerConfig>, TlsError> {
    let (mut chain, key) = creds
        .parsed_identity()?
        .ok_or_else(|| TlsError::Config("a head needs its own certificate".into()))?;
    chain.extend(parse_certs(&creds.ca_pem, "CA certificate")?);
    let mut cfg = ServerConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(RegistryDecides))
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Asks for a client certificate, checks the peer's signature with it, and leaves the
/// verdict on the certificate to the registry lookup of each request.
#[derive(Debug)]
struct RegistryDecides;

impl ClientCertVerifier for RegistryDecides {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        crate::signatures::tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        crate::signatures::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crate::signatures::schemes()
    }
}

/// What the first bytes of a connection say about it.
fn sniff(first: &[u8]) -> Option<&'static str> {
    // A TLS connection starts with a handshake record (0x16).
    match first.first() {
        None | Some(0x16) => None,
        _ if first.starts_with(b"PRI * HTTP/2") => Some("plain-text HTTP/2 (gRPC without TLS)"),
        _ if first.iter().take(3).all(u8::is_ascii_uppercase) => Some("plain-text HTTP/1"),
        _ => Some("not TLS"),
    }
}

/// Accepts connections on `listener` until `shutdown`, handshakes each on its own task and
/// yields the good ones. Refusals (plain text, bad certificate) are logged with the peer.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
                _ = tx.closed() => break,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(acceptor, tcp, remote)).await {
                    Ok(Ok(conn)) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(refusal)) => tracing::warn!(peer = %remote, "refused connection: {refusal}"),
                    Err(_) => tracing::warn!(peer = %remote, "refused connection: no TLS handshake within 10 s"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(acceptor: TlsAcceptor, tcp: TcpStream, remote: SocketAddr) -> Result<TlsConn, String> {
    let mut first = [0u8; 12];
    let n = tcp.peek(&mut first).await.map_err(|e| e.to_string())?;
    if let Some(what) = sniff(&first[..n]) {
        return Err(format!(
            "{what}: rudel heads speak only mutual TLS (use the rudel CLI with credentials, see `rudel login --help`)"
        ));
    }
    let io = acceptor.accept(tcp).await.map_err(|e| explain::server_side(&e))?;
    let cert = io
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec());
    let fingerprint = cert.as_ref().map(|c| crate::fingerprint(c));
    Ok(TlsConn {
        io,
        info: PeerInfo {
            remote,
            fingerprint,
            cert: cert.map(Arc::new),
        },
    })
}

/// Recognises head certificates by themselves: signed by the cluster CA, for the head
/// name, with server authentication. Heads use it for each other's Raft traffic, which
/// must work before a new head has the registry of issued certificates (it receives it
/// through that very traffic).
pub struct HeadCertCheck {
    verifier: Arc<rustls::client::WebPkiServerVerifier>,
    /// Certificates verified lately, with when: every Raft RPC is checked, and a full
    /// chain verification (an ECDSA signature check) per append was a measurable share of
    /// a follower's CPU; a certificate is verified again after [`REVERIFY_AFTER`], so
    /// expiry is still noticed.
    verified: std::sync::Mutex<std::collections::HashMap<Vec<u8>, std::time::Instant>>,
}

/// How long a verified head certificate is trusted without verifying it again.
const REVERIFY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);
/// More distinct certificates than this in the cache means something odd; start over.
const MAX_VERIFIED: usize = 256;

impl HeadCertCheck {
    pub fn new(ca_pem: &str) -> Result<HeadCertCheck, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in parse_certs(ca_pem, "CA certificate")? {
            roots.add(c)?;
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crate::provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(HeadCertCheck {
            verifier,
            verified: Default::default(),
        })
    }

    /// Ok if `der` is a valid, unexpired head certificate of this cluster.
    pub fn check(&self, der: &[u8]) -> Result<(), String> {
        use rustls::client::danger::ServerCertVerifier;
        let now = std::time::Instant::now();
        if let Ok(v) = self.verified.lock() {
            if v.get(der).is_some_and(|at| now.duration_since(*at) < REVERIFY_AFTER) {
                return Ok(());
            }
        }
        let name = rustls::pki_types::ServerName::try_from(crate::HEAD_SERVER_NAME).map_err(|e| e.to_string())?;
        self.verifier
            .verify_server_cert(&CertificateDer::from(der), &[], &name, &[], UnixTime::now())
            .map_err(|e| format!("not a head certificate of this cluster: {e}"))?;
        if let Ok(mut v) = self.verified.lock() {
            if v.len() >= MAX_VERIFIED {
                v.clear();
            }
            v.insert(der.to_vec(), now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der_of(pem: &str) -> Vec<u8> {
        parse_certs(pem, "test certificate").unwrap()[0].to_vec()
    }

    #[test]
    fn head_certificates_of_the_cluster_pass_and_others_never_do() {
        let ca = crate::Ca::generate("test").unwrap();
        let other = crate::Ca::generate("other").unwrap();
        let key = crate::ca::new_key().unwrap();
        let exp = crate::now_ms() + 60_000;
        let ours = ca.issue("head", "h1", key.public_key_raw(), exp, true).unwrap();
        let theirs = other.issue("head", "h1", key.public_key_raw(), exp, true).unwrap();
        let not_head = ca.issue("agent", "n1", key.public_key_raw(), exp, false).unwrap();
        let check = HeadCertCheck::new(ca.cert_pem()).unwrap();
        // Twice each: the second answer comes from the cache for the good one only.
        for _ in 0..2 {
            assert!(check.check(&der_of(&ours.cert_pem)).is_ok());
            assert!(check.check(&der_of(&theirs.cert_pem)).is_err());
            assert!(check.check(&der_of(&not_head.cert_pem)).is_err());
        }
        assert_eq!(check.verified.lock().unwrap().len(), 1);
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(&[0x16, 3, 1]), None);
        assert_eq!(sniff(b""), None);
        assert!(sniff(b"PRI * HTTP/2.0").unwrap().contains("HTTP/2"));
        assert!(sniff(b"GET / HTTP/1.1").unwrap().contains("HTTP/1"));
        assert_eq!(sniff(&[1, 2, 3]), Some("not TLS"));
    }
}
