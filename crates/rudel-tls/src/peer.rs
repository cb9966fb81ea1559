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
