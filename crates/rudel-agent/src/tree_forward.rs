//! Passing launches on to this node's children in the launch tree (docs/parallel-jobs.md).
//! Each child is called on its own task with a timeout; a child that cannot be reached,
//! refuses, or does not answer in time is reported to the head with its whole subtree
//! (`TreeUndelivered`), and the head sends those launches directly. So a node of the tree
//! that is gone delays its subtree by at most the timeout, never forever.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rudel_proto::v1 as pb;
use rudel_proto::v1::step_tree_client::StepTreeClient;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::tree::TreeEvent;

/// TCP connect and TLS handshake with a child.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The whole call, connection included: the child answers once it took the launch.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections kept to other agents (by address and certificate); beyond this the cache
/// starts over (a node is child of few others, so this is only reached by churn).
const MAX_CHANNELS: usize = 1024;

pub struct Forwarder {
    creds: Arc<rudel_tls::Credentials>,
    channels: Arc<Mutex<HashMap<(String, String), Channel>>>,
    /// The calls in flight; dropped (aborted) with the agent.
    calls: JoinSet<()>,
    events: mpsc::UnboundedSender<TreeEvent>,
}

impl Forwarder {
    pub fn new(creds: Arc<rudel_tls::Credentials>, events: mpsc::UnboundedSender<TreeEvent>) -> Forwarder {
        Forwarder {
            creds,
            channels: Default::default(),
            calls: JoinSet::new(),
            events,
        }
    }

    /// Hands each child its launch (with its subtree), concurrently.
    pub fn forward(&mut self, job: u64, step: u32, children: Vec<pb::TreeLaunch>) {
        while self.calls.try_join_next().is_some() {}
        for child in children {
            let (creds, channels, events) = (self.creds.clone(), self.channels.clone(), self.events.clone());
            self.calls.spawn(async move {
                let node = child.node.clone();
                let nodes = subtree_nodes(&child);
                let res = match tokio::time::timeout(CALL_TIMEOUT, call(&creds, &channels, child)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
                };
                if let Err(error) = res {
                    tracing::warn!(job, step, child = %node, error = %error, "cannot pass a step launch on; the head sends it directly");
                    let _ = events.send(TreeEvent::Undelivered(pb::TreeUndelivered {
                        job,
                        step,
                        nodes,
                        error: format!("{node}: {error}"),
                    }));
                }
            });
        }
    }
}

/// The node names of a launch's subtree, itself first.
pub fn subtree_nodes(t: &pb::TreeLaunch) -> Vec<String> {
    let mut out = vec![t.node.clone()];
    for c in &t.children {
        out.extend(subtree_nodes(c));
    }
    out
}

async fn call(
    creds: &rudel_tls::Credentials,
    channels: &Mutex<HashMap<(String, String), Channel>>,
    child: pb::TreeLaunch,
) -> Result<(), String> {
    let key = (child.addr.clone(), child.cert_sha256.clone());
    let cached = channels.lock().ok().and_then(|c| c.get(&key).cloned());
    let channel = match cached {
        Some(c) => c,
        None => {
            let pin = rudel_tls::unhex::<32>(&child.cert_sha256).ok_or("the head named no certificate for it")?;
            let tls = rudel_tls::peer::client_config(creds, pin).map_err(|e| e.to_string())?;
            let ep = rudel_tls::client::endpoint(&child.addr)
                .map_err(|e| e.to_string())?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true);
            let c = rudel_tls::client::connect(&ep, tls)
                .await
                .map_err(|e| rudel_tls::explain::chain(&e))?;
            if let Ok(mut m) = channels.lock() {
                if m.len() >= MAX_CHANNELS {
                    m.clear();
                }
                m.insert(key.clone(), c.clone());
            }
            c
        }
    };
    let reply = StepTreeClient::new(channel)
        .max_encoding_message_size(64 << 20)
        .forward(child)
        .await;
    match reply {
        Ok(r) if r.get_ref().error.is_empty() => Ok(()),
        Ok(r) => Err(format!("refused: {}", r.get_ref().error)),
        Err(s) => {
            // A broken cached connection is not used again.
            if let Ok(mut m) = channels.lock() {
                m.remove(&key);
            }
            Err(s.message().to_string())
        }
    }
}
