//! The caller's side: TLS client configurations (with the cluster CA, or pinned to a CA
//! fingerprint for a first join) and a connector that puts TLS under a tonic channel.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{creds::parse_certs, explain, fingerprint, Credentials, TlsError, HEAD_SERVER_NAME};

fn roots(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in parse_certs(ca_pem, "CA certificate")? {
        roots.add(c)?;
    }
    Ok(roots)
}

fn finish(
    builder: rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    creds: Option<&Credentials>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut cfg = match creds.map(|c| c.parsed_identity()).transpose()?.flatten() {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Trusts heads certified by the credentials' CA; presents the identity if there is one.
pub fn client_config(creds: &Credentials) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(&creds.ca_pem)?), crate::provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    finish(builder, Some(creds))
}

/// For a node that has only a join token: trusts a head whose chain contains a CA whose
/// fingerprint starts with `ca_pin`, and whose certificate that CA signed.
pub fn pinned_config(ca_pin: [u8; 16]) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa { pin: ca_pin }));
    finish(builder, None)
}

#[derive(Debug)]
struct PinnedCa {
    pin: [u8; 16],
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c.as_ref())[..16] == self.pin)
            .ok_or(rustls::Error::General(
                "the head's CA does not match the join token (wrong cluster, or a man in the middle)".into(),
            ))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crate::provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp, now)
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

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, std::io::Error>> + Send>>;

/// TCP + TLS to the endpoint's host:port; errors say what went wrong in the handshake.
pub fn connector(
    cfg: Arc<ClientConfig>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future = Connecting,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |uri: Uri| {
        let cfg = cfg.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or("127.0.0.1")
                .trim_matches(|c| c == '[' || c == ']')
                .to_string();
            let port = uri.port_u16().unwrap_or(7117);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(HEAD_SERVER_NAME)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let tls = TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), explain::client_side(&e)))?;
            Ok(TokioIo::new(tls))
        }) as Connecting
    })
}

/// `http://addr` for tonic (TLS is below it, in the connector).
pub fn endpoint(addr: &str) -> Result<Endpoint, TlsError> {
    let a = addr.trim();
    let a = a
        .strip_prefix("https://")
        .or_else(|| a.strip_prefix("http://"))
        .unwrap_or(a);
    Endpoint::from_shared(format!("http://{a}")).map_err(|e| TlsError::Bad {
        what: format!("head address {addr:?}"),
        detail: e.to_string(),
    })
}

/// Connects `ep` through TLS with `cfg`.
pub async fn connect(ep: &Endpoint, cfg: Arc<ClientConfig>) -> Result<Channel, tonic::transport::Error> {
    ep.connect_with_connector(connector(cfg)).await
}

/// A channel that connects on first use (and reconnects) through TLS with `cfg`.
pub fn connect_lazy(ep: &Endpoint, cfg: Arc<ClientConfig>) -> Channel {
    ep.connect_with_connector_lazy(connector(cfg))
}
