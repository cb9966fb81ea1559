//! TLS between agents, for step launches forwarded through the launch tree
//! (docs/parallel-jobs.md). The listening agent presents its own certificate and admits
//! only clients with a certificate of the cluster CA; the connecting agent accepts only
//! the one certificate the head named for that child (its SHA-256), so launches (whose
//! environment may hold secrets) go to no one else, even someone holding another
//! certificate of the cluster on that address.
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::{creds::parse_certs, fingerprint, Credentials, TlsError};

/// The listening side: this agent's certificate; clients must present one of the CA's.
pub fn server_config(creds: &Credentials) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key) = creds
        .parsed_identity()?
        .ok_or_else(|| TlsError::Config("an agent needs its own certificate to serve other agents".into()))?;
    let mut roots = RootCertStore::empty();
    for c in parse_certs(&creds.ca_pem, "CA certificate")? {
        roots.add(c)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// The connecting side: presents this agent's certificate, accepts only the server
/// certificate whose SHA-256 is `pin`.
pub fn client_config(creds: &Credentials, pin: [u8; 32]) -> Result<Arc<ClientConfig>, TlsError> {
    let (chain, key) = creds
        .parsed_identity()?
        .ok_or_else(|| TlsError::Config("an agent needs its own certificate to reach other agents".into()))?;
    let mut cfg = ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert { pin }))
        .with_client_auth_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct PinnedCert {
    pin: [u8; 32],
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The head issued and registered this exact certificate for the child; its expiry
        // and revocation are the head's business (it names only nodes with a live session).
        if fingerprint(end_entity.as_ref()) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the agent at this address is not the node the head named (certificate differs)".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crate::signatures::tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crate::signatures::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crate::signatures::schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(ca: &crate::Ca, name: &str) -> Credentials {
        let key = crate::ca::new_key().unwrap();
        let cert = ca
            .issue("agent", name, key.public_key_raw(), crate::now_ms() + 60_000, false)
            .unwrap();
        Credentials {
            ca_pem: ca.cert_pem().to_string(),
            identity: Some((cert.cert_pem, key.serialize_pem())),
        }
    }

    /// A full TLS handshake in memory; the error of whichever side refused.
    fn handshake(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(crate::HEAD_SERVER_NAME).unwrap();
        let mut c = rustls::ClientConnection::new(client, name)?;
        let mut s = rustls::ServerConnection::new(server)?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                s.read_tls(&mut buf.as_slice()).unwrap();
                s.process_new_packets()?;
            }
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                c.read_tls(&mut buf.as_slice()).unwrap();
                c.process_new_packets()?;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        Err(rustls::Error::General("no handshake".into()))
    }

    #[test]
    fn a_parent_reaches_only_the_named_child_and_a_child_admits_only_the_cluster() {
        let ca = crate::Ca::generate("test").unwrap();
        let (parent, child, other) = (agent(&ca, "n1"), agent(&ca, "n2"), agent(&ca, "n3"));
        let child_fp = child.fingerprint().unwrap().unwrap();
        let other_fp = other.fingerprint().unwrap().unwrap();
        let server = server_config(&child).unwrap();
        assert!(handshake(client_config(&parent, child_fp).unwrap(), server.clone()).is_ok());
        // Pinned to another node's certificate: the parent refuses this server.
        let e = handshake(client_config(&parent, other_fp).unwrap(), server.clone()).unwrap_err();
        assert!(e.to_string().contains("not the node the head named"), "{e}");
        // A client certificate of another cluster: the child refuses it.
        let foreign = agent(&crate::Ca::generate("other").unwrap(), "n1");
        assert!(handshake(client_config(&foreign, child_fp).unwrap(), server).is_err());
    }
}
