//! The agent's listener for step launches forwarded by other agents (the launch tree,
//! docs/parallel-jobs.md): gRPC over mutual TLS (`rudel_tls::peer`). It checks nothing
//! itself: each launch goes to the agent's loop, which verifies the head's tag and
//! answers; the parent's call waits for that answer only, not for the subtree.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rudel_proto::v1 as pb;
use rudel_proto::v1::step_tree_server::{StepTree, StepTreeServer};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Request, Response, Status};

use crate::tree::TreeEvent;

/// The agent's loop answers within this, or the call fails (its parent then reports the
/// launch undelivered and the head sends it directly).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(4);
/// Largest forwarded launch accepted (a launch and its subtree's).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

struct Service {
    events: mpsc::UnboundedSender<TreeEvent>,
}

#[tonic::async_trait]
impl StepTree for Service {
    async fn forward(&self, req: Request<pb::TreeLaunch>) -> Result<Response<pb::TreeReply>, Status> {
        let (reply, answer) = oneshot::channel();
        let launch = req.into_inner();
        self.events
            .send(TreeEvent::Incoming { launch, reply })
            .map_err(|_| Status::unavailable("the agent is stopping"))?;
        match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            Ok(Ok(error)) => Ok(Response::new(pb::TreeReply { error })),
            Ok(Err(_)) => Err(Status::unavailable("the agent dropped the launch")),
            Err(_) => Err(Status::deadline_exceeded("the agent did not take the launch in time")),
        }
    }
}

/// The running listener; stopped with the agent.
pub struct TreeServer {
    pub port: u16,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TreeServer {
    /// Listens on every address (other nodes reach it at the address the head sees this
    /// agent come from) on a port of the kernel's choice.
    pub async fn start(
        creds: &rudel_tls::Credentials,
        events: mpsc::UnboundedSender<TreeEvent>,
    ) -> Result<TreeServer, String> {
        let tls = rudel_tls::peer::server_config(creds).map_err(|e| e.to_string())?;
        // Both families where the kernel has IPv6 (dual-stack `[::]`), else IPv4 only.
        let listener = match tokio::net::TcpListener::bind(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))).await
        {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], 0)))
                .await
                .map_err(|e| format!("cannot listen for forwarded step launches: {e}"))?,
        };
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let (stop, stop_rx) = watch::channel(false);
        let incoming = rudel_tls::server::incoming(listener, tls, stop_rx.clone());
        let svc = StepTreeServer::new(Service { events })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(1 << 20);
        let mut stopped = stop_rx;
        let task = tokio::spawn(async move {
            let res = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "launch-tree listener failed");
            }
        });
        Ok(TreeServer { port, stop, task })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Shared so the forwarder's clients and the server use one set of credentials.
pub type Creds = Arc<rudel_tls::Credentials>;
