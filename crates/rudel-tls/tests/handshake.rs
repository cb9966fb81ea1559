//! Real TLS handshakes over loopback between the head's acceptor and the client connector.
use std::time::Duration;

use rudel_tls::{ca::new_key, client, server, Ca, Credentials};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tower::Service;

fn identity(ca: &Ca, role: &str, name: &str, head: bool, ttl_ms: i64) -> Credentials {
    let key = new_key().unwrap();
    let exp = (rudel_tls::now_ms() as i64 + ttl_ms) as u64;
    let issued = ca.issue(role, name, key.public_key_raw(), exp, head).unwrap();
    Credentials {
        ca_pem: ca.cert_pem().to_string(),
        identity: Some((issued.cert_pem, key.serialize_pem())),
    }
}

struct Server {
    addr: std::net::SocketAddr,
    conns: tokio_stream::wrappers::ReceiverStream<Result<server::TlsConn, std::io::Error>>,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn serve(ca: &Ca) -> Server {
    let head = identity(ca, "head", "h1", true, 60_000);
    let cfg = server::server_config(&head).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    Server {
        addr,
        conns: server::incoming(listener, cfg, rx),
        _stop: stop,
    }
}

async fn dial(
    addr: std::net::SocketAddr,
    cfg: std::sync::Arc<rustls::ClientConfig>,
) -> Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>, std::io::Error> {
    let uri: tonic::transport::Uri = format!("http://{addr}").parse().unwrap();
    client::connector(cfg).call(uri).await
}

#[tokio::test]
async fn mutual_tls_identifies_the_client() {
    let ca = Ca::generate("test cluster").unwrap();
    let mut srv = serve(&ca).await;
    let user = identity(&ca, "client", "alice", false, 60_000);
    let fp = user.fingerprint().unwrap();
    let _c = dial(srv.addr, client::client_config(&user).unwrap()).await.unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(5), srv.conns.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    use tonic::transport::server::Connected;
    assert_eq!(conn.connect_info().fingerprint, fp);
}

#[tokio::test]
async fn pinned_join_accepts_the_right_ca_only() {
    let ca = Ca::generate("test cluster").unwrap();
    let mut srv = serve(&ca).await;
    let mut pin = [0u8; 16];
    pin.copy_from_slice(&ca.fingerprint().unwrap()[..16]);
    dial(srv.addr, client::pinned_config(pin).unwrap()).await.unwrap();
    let conn = srv.conns.next().await.unwrap().unwrap();
    use tonic::transport::server::Connected;
    assert_eq!(
        conn.connect_info().fingerprint,
        None,
        "a joining node has no certificate"
    );

    let err = dial(srv.addr, client::pinned_config([9u8; 16]).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not match the join token"), "{err}");
}

#[tokio::test]
async fn the_head_is_verified_and_client_certificates_are_identified_not_judged() {
    let ca = Ca::generate("test cluster").unwrap();
    let other = Ca::generate("other cluster").unwrap();
    let mut srv = serve(&ca).await;
    // A client of another cluster does not trust this head.
    let stranger = identity(&other, "client", "mallory", false, 60_000);
    let err = dial(srv.addr, client::client_config(&stranger).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not from our cluster CA"), "{err}");
    // A certificate of another CA, or an expired one, gets through the handshake with its
    // fingerprint: the head's registry refuses it per request, with a reason.
    use tonic::transport::server::Connected;
    for cert in [
        {
            let mut forged = identity(&other, "client", "mallory", false, 60_000);
            forged.ca_pem = ca.cert_pem().to_string();
            forged
        },
        identity(&ca, "client", "bob", false, -7_200_000),
    ] {
        let fp = cert.fingerprint().unwrap();
        let _c = dial(srv.addr, client::client_config(&cert).unwrap()).await.unwrap();
        let conn = srv.conns.next().await.unwrap().unwrap();
        assert_eq!(conn.connect_info().fingerprint, fp);
    }
}

#[tokio::test]
async fn plaintext_is_refused() {
    let ca = Ca::generate("test cluster").unwrap();
    let srv = serve(&ca).await;
    let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "the head must close a plain-text connection"
    );
}
