//! `rudel exec`: a command run on many nodes at once through their agent sessions (no
//! ssh), outside the job queue; results gathered per node.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rudel_core::constraint::Constraint;
use rudel_core::node::Liveness;
use rudel_proto::v1 as pb;
use tokio::sync::oneshot;
use tonic::Status;

use crate::agent_service::SessionTable;
use crate::raft::SharedState;

/// Per-node time limit when the request gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest per-node time limit accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Extra time the head waits for an agent's answer beyond the command's own limit.
const SLACK: Duration = Duration::from_secs(5);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One command for one agent session.
pub struct ExecCall {
    pub id: u64,
    pub argv: Vec<String>,
    pub timeout_ms: u64,
    pub reply: oneshot::Sender<pb::ExecResult>,
}

fn failed(node: &str, error: impl Into<String>) -> pb::ExecNodeResult {
    pb::ExecNodeResult {
        node: node.to_string(),
        error: error.into(),
        ..Default::default()
    }
}

/// Runs `req` on the selected nodes in parallel and returns one result per node.
pub async fn run(
    shared: &SharedState,
    sessions: &SessionTable,
    req: pb::ExecRequest,
) -> Result<pb::ExecResponse, Status> {
    if req.argv.is_empty() || req.argv[0].is_empty() {
        return Err(Status::invalid_argument(
            "no command given: rudel exec [--all | --nodes LIST] -- CMD [ARGS]",
        ));
    }
    let timeout = match req.timeout_ms {
        0 => DEFAULT_TIMEOUT,
        ms => Duration::from_millis(ms),
    };
    if timeout > MAX_TIMEOUT {
        return Err(Status::invalid_argument("--timeout may be at most 24h"));
    }
    let constraint = if req.constraint.trim().is_empty() {
        None
    } else {
        Some(Constraint::parse(&req.constraint).map_err(|e| Status::invalid_argument(e.to_string()))?)
    };
    let targets: Vec<(String, bool)> = {
        let a = shared.read();
        let st = &a.state;
        if !req.nodes.is_empty() {
            let unknown: Vec<&String> = req.nodes.iter().filter(|n| st.node(n).is_none()).collect();
            if !unknown.is_empty() {
                let list: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
                return Err(Status::not_found(format!(
                    "no such node: {} (see `rudel nodes`)",
                    list.join(", ")
                )));
            }
        }
        st.nodes
            .iter()
            .filter(|n| req.nodes.is_empty() || req.nodes.contains(&n.name))
            .filter(|n| n.matches(constraint.as_ref()))
            // With no explicit list, nodes known to be down are skipped; named ones are
            // reported as failed so the user sees them.
            .filter(|n| !req.nodes.is_empty() || n.liveness == Liveness::Up)
            .map(|n| (n.name.clone(), n.liveness == Liveness::Up))
            .collect()
    };
    if targets.is_empty() {
        return Err(Status::not_found("no node selected (none is up, or none matches)"));
    }
    let mut waits = Vec::new();
    for (node, up) in targets {
        let handle = if up {
            sessions.lock().ok().and_then(|s| s.get(&node).map(|h| h.exec.clone()))
        } else {
            None
        };
        let Some(tx) = handle else {
            waits.push((node, None));
            continue;
        };
        let (reply, rx) = oneshot::channel();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let call = ExecCall {
            id,
            argv: req.argv.clone(),
            timeout_ms: timeout.as_millis() as u64,
            reply,
        };
        waits.push((node, tx.send(call).ok().map(|_| rx)));
    }
    let results = futures::future::join_all(waits.into_iter().map(|(node, rx)| async move {
        let Some(rx) = rx else {
            return failed(&node, "node is not connected");
        };
        match tokio::time::timeout(timeout + SLACK, rx).await {
            Ok(Ok(r)) => pb::ExecNodeResult {
                node,
                exit_code: r.exit_code,
                signal: r.signal,
                output: r.output,
                truncated: r.truncated,
                timed_out: r.timed_out,
                error: r.error,
            },
            Ok(Err(_)) => failed(&node, "the node's session ended before it answered"),
            Err(_) => pb::ExecNodeResult {
                timed_out: true,
                ..failed(&node, "no answer in time")
            },
        }
    }))
    .await;
    Ok(pb::ExecResponse { results })
}
