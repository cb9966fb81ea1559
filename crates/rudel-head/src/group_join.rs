//! A new head joining an existing group: trade a head token for a head certificate, ask
//! the leader for an id (added as a learner), and, once serving, ask to become a voter.
use std::sync::Arc;
use std::time::Duration;

use rudel_proto::v1 as pb;
use rudel_proto::v1::rudel_client::RudelClient;
use rudel_tls::Credentials;
use tonic::transport::Channel;

use crate::HeadError;

/// How long a joining head keeps trying to reach the leader.
const JOIN_PATIENCE: Duration = Duration::from_secs(60);

fn err(e: impl std::fmt::Display) -> HeadError {
    HeadError::Raft(format!("joining the head group: {e}"))
}

async fn client(addr: &str, tls: Arc<rustls::ClientConfig>) -> Result<RudelClient<Channel>, String> {
    let ep = rudel_tls::client::endpoint(addr)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(70));
    let ch = rudel_tls::client::connect(&ep, tls)
        .await
        .map_err(|e| format!("cannot reach {addr}: {}", rudel_tls::explain::chain(&e)))?;
    Ok(RudelClient::new(ch))
}

/// Runs `call` against the leader, starting at `addr` and following "not the leader"
/// redirects, retrying for up to a minute.
async fn at_leader<T, F, Fut>(addr: &str, tls: Arc<rustls::ClientConfig>, mut call: F) -> Result<T, String>
where
    F: FnMut(RudelClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + JOIN_PATIENCE;
    let mut target = addr.to_string();
    loop {
        let res = match client(&target, tls.clone()).await {
            Ok(c) => call(c).await.map_err(|s| {
                if let Some(l) = s.metadata().get("rudel-leader").and_then(|v| v.to_str().ok()) {
                    target = l.to_string();
                }
                format!("{}: {}", target, s.message())
            }),
            Err(e) => Err(e),
        };
        match res {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(e) => {
                tracing::info!("waiting for the group's leader: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

/// First start of a head with `--join`: gets its certificate and its id (as a learner).
pub async fn join(join_addr: &str, token: &str, advertise: &str) -> Result<(Credentials, u64), HeadError> {
    let name = format!("head@{advertise}");
    let joined = rudel_tls::enroll::join(
        &[join_addr.to_string()],
        token,
        &name,
        "",
        rudel_tls::enroll::Want::Head,
    )
    .await
    .map_err(err)?;
    let tls = rudel_tls::client::client_config(&joined.creds).map_err(err)?;
    let addr = advertise.to_string();
    let id = at_leader(join_addr, tls, |mut c| {
        let addr = addr.clone();
        async move { c.add_head(pb::AddHeadRequest { addr }).await.map(|r| r.into_inner().id) }
    })
    .await
    .map_err(err)?;
    tracing::info!(head = id, "joined the head group as a learner");
    Ok((joined.creds, id))
}

/// Asks the leader (found from any of `addrs`) to make head `id` a voter; retries until
/// it is one or `stop` fires.
pub async fn promote(addrs: Vec<String>, tls: Arc<rustls::ClientConfig>, id: u64) {
    for round in 0u32.. {
        let addr = &addrs[round as usize % addrs.len().max(1)];
        let res = at_leader(addr, tls.clone(), |mut c| async move {
            c.promote_head(pb::PromoteHeadRequest { id }).await.map(|_| ())
        })
        .await;
        match res {
            Ok(()) => {
                tracing::info!(head = id, "this head is now a voter");
                return;
            }
            Err(e) => {
                tracing::warn!(head = id, "not yet a voter: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
