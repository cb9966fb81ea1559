//! Nodes the state says are up but that hold no session with the leader. A session's own
//! timers declare its node lost when it goes silent; these nodes have no session to time
//! out (the head restarted, or leadership moved to a head they never reached), so the
//! leader gives each of them the node timeout, counted from when it began to lead, to
//! connect before declaring it lost (through the log, fenced by the node's epoch).
use std::collections::HashMap;
use std::time::Duration;

use rudel_core::node::Liveness;
use rudel_core::Command;
use tokio::time::Instant;

use crate::agent_service::AgentService;
use crate::proposer::now_ms;

/// Runs until `svc.shutdown` fires.
pub async fn sweep(svc: AgentService) {
    let mut shutdown = svc.shutdown.clone();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut leading_since: Option<Instant> = None;
    let mut missing: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let m = svc.raft.metrics().borrow().clone();
        if m.current_leader != Some(m.id) {
            leading_since = None;
            missing.clear();
            continue;
        }
        let now = Instant::now();
        let since = *leading_since.get_or_insert(now);
        let with_session: Vec<String> = match svc.sessions.lock() {
            Ok(s) => s.keys().cloned().collect(),
            Err(_) => continue,
        };
        let candidates: Vec<(String, u64)> = svc
            .shared
            .read()
            .state
            .nodes
            .iter()
            .filter(|n| n.liveness != Liveness::Down && !with_session.contains(&n.name))
            .map(|n| (n.name.clone(), n.epoch))
            .collect();
        missing.retain(|name, _| candidates.iter().any(|(n, _)| n == name));
        for (name, epoch) in candidates {
            let first = *missing.entry(name.clone()).or_insert(now.max(since));
            if now.duration_since(first) < svc.node_timeout {
                continue;
            }
            missing.remove(&name);
            let reason = format!("no session with the leader for {:?}", svc.node_timeout);
            tracing::warn!(node = %name, "{reason}; declaring the node lost");
            let cmd = Command::NodeLost {
                name: name.clone(),
                epoch,
                reason,
                now_ms: now_ms(),
            };
            if let Err(e) = svc.proposer.propose(cmd).await {
                tracing::warn!(node = %name, error = %e, "could not declare the node lost");
            }
        }
    }
}
