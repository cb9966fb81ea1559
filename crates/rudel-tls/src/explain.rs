//! Turning TLS failures into sentences a user can act on.
use rustls::{AlertDescription, CertificateError, Error};

fn rustls_error(e: &std::io::Error) -> Option<&Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<Error>())
}

/// A failed handshake as seen by the head (logged with the peer's address).
pub fn server_side(e: &std::io::Error) -> String {
    match rustls_error(e) {
        Some(Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. })) => {
            "client certificate expired (the holder must get a new one: `rudel login` / re-join with a token)".into()
        }
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature)) => {
            "client certificate not issued by this cluster's CA".into()
        }
        Some(Error::InvalidCertificate(c)) => format!("bad client certificate: {c:?}"),
        Some(Error::AlertReceived(a)) => {
            format!("the client aborted the TLS handshake ({a:?}: it does not trust this head's certificate?)")
        }
        Some(other) => format!("TLS handshake failed: {other}"),
        None => format!("TLS handshake failed: {e}"),
    }
}

/// A failed handshake as seen by a client or agent.
pub fn client_side(e: &std::io::Error) -> String {
    match rustls_error(e) {
        Some(r) => client_side_tls(r),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the TLS handshake (not a rudel head, or it refused us: see its log)".into()
        }
        None => format!("TLS handshake failed: {e}"),
    }
}

/// A TLS error somewhere in `e`'s source chain, explained; None if there is none. (With
/// TLS 1.3 the head's verdict on our certificate arrives after the handshake, so it shows
/// up as the cause of a failed call.)
pub fn find_tls(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Error>() {
            return Some(client_side_tls(r));
        }
        if let Some(r) = err.downcast_ref::<std::io::Error>().and_then(rustls_error) {
            return Some(client_side_tls(r));
        }
        cur = err.source();
    }
    None
}

fn client_side_tls(e: &Error) -> String {
    match e {
        Error::AlertReceived(AlertDescription::CertificateExpired) => {
            "the head refused our certificate: it has expired (get a new one: `rudel login`, or restart the agent with --token)".into()
        }
        Error::AlertReceived(
            AlertDescription::UnknownCA | AlertDescription::BadCertificate | AlertDescription::DecryptError,
        ) => "the head refused our certificate: it is not from this cluster's CA (credentials of another cluster?)".into(),
        Error::AlertReceived(a) => format!("the head ended the TLS handshake ({a:?})"),
        Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "the head's certificate is not from our cluster CA (wrong address, or credentials of another cluster)".into()
        }
        Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            "the head's certificate has expired".into()
        }
        Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => {
            "the peer's certificate is not a head certificate".into()
        }
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            "the server does not speak TLS (a plain-text server, or not a rudel head)".into()
        }
        Error::General(msg) => msg.clone(),
        other => format!("TLS handshake failed: {other}"),
    }
}

/// The messages of an error and its sources, without repeats ("transport error: ...").
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = err.source();
    }
    parts.join(": ")
}
