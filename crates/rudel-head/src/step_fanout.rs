//! Sends a step's launches: to every node directly for small steps, through a tree of
//! agents for larger ones (docs/parallel-jobs.md, "Launch tree"; the shape is
//! `step_tree.rs`). Each launch in a tree carries a tag made with its node's session key
//! (`rudel_tls::launch_mac`), so agents in between cannot forge one. Launches an agent
//! could not pass on come back as `TreeUndelivered` and go out directly then: a step never
//! waits on a node of the tree that is gone.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prost::Message;
use rudel_proto::v1 as pb;
use rudel_proto::v1::head_message::Msg as HeadMsg;
use rudel_tls::launch_mac::LaunchKey;

use crate::agent_service::AgentService;
use crate::step_tree::{self, TreeConfig, TreeNode};

/// How long a tree launch stays valid: ample for a deep tree of slow links; after that
/// an agent refuses it (its parent reports it undelivered and the head sends it directly).
const LAUNCH_VALIDITY: Duration = Duration::from_secs(60);
/// Launches kept for a direct resend are dropped this long after the step began at the
/// latest (normally at the step's end): bounds the memory a lost step's entry holds.
const PENDING_MAX_AGE: Duration = Duration::from_secs(600);

/// Where a node's agent takes forwarded launches: its listener and its certificate.
#[derive(Clone, Debug)]
pub struct TreePeer {
    pub addr: String,
    pub cert_sha256: String,
}

/// A step's launches kept for a direct resend: when sent, and each node's.
type Kept = (Instant, HashMap<String, pb::StepLaunch>);

/// The tree's configuration and the launches sent through trees, by step and node, kept
/// for a direct resend.
#[derive(Default)]
pub struct Fanout {
    pub config: TreeConfig,
    pending: Mutex<HashMap<(u64, u32), Kept>>,
}

impl Fanout {
    pub fn new(config: TreeConfig) -> Fanout {
        Fanout {
            config,
            pending: Mutex::default(),
        }
    }

    fn keep(&self, job: u64, step: u32, launches: HashMap<String, pb::StepLaunch>) {
        if let Ok(mut p) = self.pending.lock() {
            p.retain(|_, (at, _)| at.elapsed() < PENDING_MAX_AGE);
            p.insert((job, step), (Instant::now(), launches));
        }
    }

    fn take(&self, job: u64, step: u32, node: &str) -> Option<pb::StepLaunch> {
        self.pending
            .lock()
            .ok()?
            .get_mut(&(job, step))
            .and_then(|(_, m)| m.remove(node))
    }

    /// The step ended: nothing of it is resent.
    pub fn forget(&self, job: u64, step: u32) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&(job, step));
        }
    }
}

/// What the head needs of a node's session to put it in a tree.
struct Member {
    key: LaunchKey,
    peer: TreePeer,
}

/// Sends each (node, launch) of a step, in the step's node order.
pub fn launch(svc: &AgentService, launches: Vec<(String, pb::StepLaunch)>) {
    let cfg = svc.fanout.config;
    if !cfg.use_tree(launches.len()) {
        for (node, l) in launches {
            crate::step_relay::launch_direct(svc, &node, l);
        }
        return;
    }
    let members: HashMap<String, Member> = match svc.sessions.lock() {
        Ok(s) => launches
            .iter()
            .filter_map(|(node, _)| {
                let h = s.get(node)?;
                let peer = h.tree.clone()?;
                Some((
                    node.clone(),
                    Member {
                        key: h.launch_key.clone(),
                        peer,
                    },
                ))
            })
            .collect(),
        Err(_) => HashMap::new(),
    };
    // Nodes without a session (their tasks end at once, reported to srun) or without a
    // listener (an older agent) get theirs directly; the tree is built over the rest.
    let (tree, direct): (Vec<_>, Vec<_>) = launches.into_iter().partition(|(n, _)| members.contains_key(n));
    for (node, l) in direct {
        crate::step_relay::launch_direct(svc, &node, l);
    }
    if tree.is_empty() {
        return;
    }
    let (job, step) = (tree[0].1.job, tree[0].1.step);
    if !cfg.use_tree(tree.len()) {
        for (node, l) in tree {
            crate::step_relay::launch_direct(svc, &node, l);
        }
        return;
    }
    let expires_ms = crate::proposer::now_ms() + LAUNCH_VALIDITY.as_millis() as u64;
    let roots = step_tree::build(tree.len(), cfg.fanout);
    let built: Vec<pb::TreeLaunch> = roots
        .iter()
        .map(|r| tree_launch(r, &tree, &members, expires_ms))
        .collect();
    svc.fanout.keep(job, step, tree.iter().cloned().collect());
    tracing::info!(
        job,
        step,
        nodes = tree.len(),
        fanout = cfg.fanout,
        depth = step_tree::depth(&roots),
        "launching the step through a tree of agents"
    );
    for (root, tl) in roots.iter().zip(built) {
        let node = tl.node.clone();
        if !crate::step_relay::send_to(svc, &node, HeadMsg::TreeLaunch(tl)) {
            // Its session ended since: it and its subtree get theirs directly (it then
            // reports its tasks ended for want of a session).
            let names: Vec<String> = step_tree::members(root)
                .into_iter()
                .map(|i| tree[i].0.clone())
                .collect();
            resend(svc, job, step, &names);
        }
    }
}

/// The signed launch of tree node `t` with its subtree.
fn tree_launch(
    t: &TreeNode,
    launches: &[(String, pb::StepLaunch)],
    members: &HashMap<String, Member>,
    expires_ms: u64,
) -> pb::TreeLaunch {
    let (node, l) = &launches[t.node];
    let bytes = l.encode_to_vec();
    let (mac, addr, cert) = match members.get(node) {
        Some(m) => (
            m.key.sign(node, expires_ms, &bytes),
            m.peer.addr.clone(),
            m.peer.cert_sha256.clone(),
        ),
        // Not reached: every node of the tree has a member entry. An empty tag is refused
        // by the agent, whose parent then reports it undelivered.
        None => Default::default(),
    };
    pb::TreeLaunch {
        node: node.clone(),
        addr,
        cert_sha256: cert,
        launch: bytes,
        expires_ms,
        mac,
        children: t
            .children
            .iter()
            .map(|c| tree_launch(c, launches, members, expires_ms))
            .collect(),
    }
}

/// Sends these nodes' launches of the step directly, each at most once.
fn resend(svc: &AgentService, job: u64, step: u32, nodes: &[String]) {
    for node in nodes {
        if let Some(l) = svc.fanout.take(job, step, node) {
            crate::step_relay::launch_direct(svc, node, l);
        }
    }
}

/// An agent of the tree (`from`) could not pass these launches on: they go directly.
pub fn on_undelivered(svc: &AgentService, from: &str, u: pb::TreeUndelivered) {
    tracing::warn!(
        job = u.job,
        step = u.step,
        from,
        nodes = ?u.nodes,
        error = %u.error,
        "launches not delivered through the tree; sending them directly"
    );
    resend(svc, u.job, u.step, &u.nodes);
}
