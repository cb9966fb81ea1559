//! Forwarding of local-socket calls by a head that does not lead. A user on a follower
//! head's machine has no certificate (the socket is how they authenticate), so the CLI
//! cannot go to the leader itself; the follower passes the call on, unchanged, over its
//! own head-to-head TLS connection, and names the caller in [`ON_BEHALF`]: the role, uid
//! and user the kernel gave it on its socket. The leader believes that header only from
//! a head certificate of this cluster (see `auth::identify`), which already may do
//! anything, so no one gains a right they did not have.
//!
//! The call is forwarded as HTTP/2 (any RPC, streaming ones included), so new RPCs need
//! nothing here. `ClusterInfo` is answered locally: it is how a client learns who leads.
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rudel_core::security::Role;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::Service;

use crate::auth::Caller;
use crate::raft::network::PeerTls;
use crate::raft::Raft;

/// Header naming the socket caller a follower forwards for: `ROLE:UID:USER`.
pub const ON_BEHALF: &str = "rudel-on-behalf-of";

/// Calls a follower answers itself.
const LOCAL_PATHS: [&str; 1] = ["/rudel.v1.Rudel/ClusterInfo"];

/// How a follower reaches the leader: who leads (Raft's view) and a TLS channel per
/// leader address, made with this head's own certificate.
pub struct LeaderLink {
    pub raft: Raft,
    pub head_id: u64,
    pub tls: PeerTls,
    channels: Mutex<HashMap<String, Channel>>,
}

impl LeaderLink {
    pub fn new(raft: Raft, head_id: u64, tls: PeerTls) -> LeaderLink {
        LeaderLink {
            raft,
            head_id,
            tls,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The leader's address when another head leads (`None`: this head leads, or no one
    /// is known to: the call is then served here, which answers as it would anyway).
    fn other_leader(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader.filter(|l| *l != self.head_id)?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// A channel to `addr`, made once (lazily connected, reconnecting on its own).
    fn channel(&self, addr: &str) -> Result<Channel, String> {
        let mut m = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.get(addr) {
            return Ok(c.clone());
        }
        let tls = self
            .tls
            .get()
            .cloned()
            .ok_or("this head's credentials are not loaded yet")?;
        let ep = rudel_tls::client::endpoint(addr)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20));
        let c = rudel_tls::client::connect_lazy(&ep, tls);
        m.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn forget(&self, addr: &str) {
        self.channels.lock().unwrap_or_else(|e| e.into_inner()).remove(addr);
    }
}

/// The header value for `caller` (a socket caller, as the interceptor admitted it).
pub fn on_behalf_value(c: &Caller) -> Option<String> {
    Some(format!("{}:{}:{}", c.role, c.uid?, c.user))
}

/// Parses [`on_behalf_value`]'s text: (role, uid, user). Only client and admin roles are
/// ever forwarded (what a socket caller can be).
pub fn parse_on_behalf(v: &str) -> Option<(Role, u32, String)> {
    let mut it = v.splitn(3, ':');
    let role = match it.next()? {
        "admin" => Role::Admin,
        "client" => Role::Client,
        _ => return None,
    };
    let uid = it.next()?.parse().ok()?;
    let user = it.next()?.to_string();
    (!user.is_empty()).then_some((role, uid, user))
}

/// The client service on the local socket, forwarding to the leader when another head
/// leads. Sits inside the interceptor, which has put the socket [`Caller`] in the
/// request's extensions.
#[derive(Clone)]
pub struct Forwarding<S> {
    pub inner: S,
    pub link: Arc<LeaderLink>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Forwarding<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Forwarding<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // Never trusted from a client: only this head writes it, below.
        req.headers_mut().remove(ON_BEHALF);
        let leader = if LOCAL_PATHS.contains(&req.uri().path()) {
            None
        } else {
            self.link.other_leader()
        };
        let behalf = req.extensions().get::<Caller>().and_then(on_behalf_value);
        match (leader, behalf) {
            (Some(addr), Some(behalf)) => {
                let link = Arc::clone(&self.link);
                Box::pin(async move { Ok(forward(&link, &addr, &behalf, req).await) })
            }
            _ => Box::pin(self.inner.call(req)),
        }
    }
}

/// Passes `req` to the leader at `addr` for the caller `behalf`; a failure to reach it
/// becomes an `UNAVAILABLE` status naming the leader (the CLI retries those).
async fn forward(link: &LeaderLink, addr: &str, behalf: &str, mut req: http::Request<Body>) -> http::Response<Body> {
    let unavailable = |why: String| {
        tracing::warn!(leader = addr, error = %why, "cannot forward a socket call to the leader");
        tonic::Status::unavailable(format!(
            "this head does not lead and cannot reach the leader at {addr}: {why}"
        ))
        .into_http()
    };
    let Ok(value) = http::HeaderValue::from_str(behalf) else {
        return unavailable("the caller's name is not a valid header".into());
    };
    req.headers_mut().insert(ON_BEHALF, value);
    let mut ch = match link.channel(addr) {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    tracing::debug!(
        leader = addr,
        path = req.uri().path(),
        behalf,
        "forwarding a socket call"
    );
    match tower::ServiceExt::ready(&mut ch).await {
        Ok(ch) => match ch.call(req).await {
            Ok(resp) => resp,
            Err(e) => {
                link.forget(addr);
                unavailable(e.to_string())
            }
        },
        Err(e) => {
            link.forget(addr);
            unavailable(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_round_trips_and_bad_values_are_refused() {
        assert_eq!(
            parse_on_behalf("client:1000:alice"),
            Some((Role::Client, 1000, "alice".to_string()))
        );
        assert_eq!(parse_on_behalf("admin:0:root").map(|p| p.0), Some(Role::Admin));
        assert_eq!(parse_on_behalf("head:0:root"), None, "only socket roles");
        assert_eq!(parse_on_behalf("client:x:alice"), None);
        assert_eq!(parse_on_behalf("client:1000:"), None);
        assert_eq!(parse_on_behalf("client"), None);
    }
}
