//! This agent's part in launching job steps through a tree of agents
//! (docs/parallel-jobs.md, "Launch tree"): the session's launch key, the check of every
//! launch that came through the tree, the record of steps already launched here, and the
//! listener and forwarder it owns.
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use prost::Message;
use rudel_proto::v1 as pb;
use rudel_tls::launch_mac::LaunchKey;
use tokio::sync::{mpsc, oneshot};

use crate::tree_forward::Forwarder;
use crate::tree_server::TreeServer;

/// Steps remembered as launched here: a launch of one of them again (the head resending
/// one whose delivery through the tree looked failed, or a replay) is ignored.
const SEEN_MAX: usize = 4096;

/// Steps whose stdin is held for a launch not arrived yet; beyond, chunks go on as before
/// (acknowledged unfed): memory stays bounded (srun's window per step times this).
const HELD_STEPS_MAX: usize = 64;
/// Stdin held longer than this is let go (the launch is not coming: refused, or killed).
const HOLD_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// What reaches the agent's loop from the tree's tasks.
pub enum TreeEvent {
    /// A launch a parent agent forwarded; answered with "" (taken) or why not.
    Incoming {
        launch: pb::TreeLaunch,
        reply: oneshot::Sender<String>,
    },
    /// Launches this agent could not pass on: for the head.
    Undelivered(pb::TreeUndelivered),
}

/// The last SEEN_MAX steps put in.
#[derive(Default)]
struct Recent {
    set: HashSet<(u64, u32)>,
    order: VecDeque<(u64, u32)>,
}

impl Recent {
    /// False if it was there already.
    fn insert(&mut self, k: (u64, u32)) -> bool {
        if !self.set.insert(k) {
            return false;
        }
        self.order.push_back(k);
        if self.order.len() > SEEN_MAX {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

pub struct Tree {
    /// This session's key (None: no session with the head, so no launch is taken).
    key: Option<LaunchKey>,
    /// Steps launched here.
    seen: Recent,
    /// Steps killed here before their launch arrived: through the tree a kill can overtake
    /// a launch, whose tasks would then run unkilled while srun waits for them.
    killed: Recent,
    /// The port advertised to the head (0: no listener).
    port: u16,
    server: Option<TreeServer>,
    forwarder: Forwarder,
    /// srun's stdin for steps whose launch has not come yet, in arrival order.
    held: std::collections::HashMap<(u64, u32), (std::time::Instant, Vec<pb::StepStdin>)>,
}

impl Tree {
    /// Starts the listener. Without one (no port, no certificate) the agent still works:
    /// it advertises no port and the head launches its share directly.
    pub async fn start(
        creds: rudel_tls::Credentials,
        advertise_port: Option<u16>,
    ) -> (Tree, mpsc::UnboundedReceiver<TreeEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let creds = Arc::new(creds);
        let server = match TreeServer::start(&creds, tx.clone()).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("no launch-tree listener (this node gets step launches from the head directly): {e}");
                None
            }
        };
        let own = server.as_ref().map_or(0, |s| s.port);
        if let Some(p) = advertise_port {
            tracing::warn!(
                listening = own,
                advertised = p,
                "advertising another port for the launch tree (test option)"
            );
        }
        let tree = Tree {
            key: None,
            seen: Recent::default(),
            killed: Recent::default(),
            port: advertise_port.unwrap_or(own),
            server,
            forwarder: Forwarder::new(creds, tx),
            held: Default::default(),
        };
        (tree, rx)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The key of the session just opened (Welcome.launch_key).
    pub fn set_key(&mut self, bytes: &[u8]) {
        self.key = match LaunchKey::from_bytes(bytes) {
            Ok(k) => Some(k),
            Err(e) => {
                if !bytes.is_empty() {
                    tracing::warn!("ignoring the head's launch key: {e}");
                }
                None
            }
        };
    }

    /// The session ended: launches tagged with its key are not taken any more.
    pub fn session_lost(&mut self) {
        self.key = None;
    }

    /// True the first time a step is launched here; records it.
    pub fn first_time(&mut self, job: u64, step: u32) -> bool {
        self.seen.insert((job, step))
    }

    pub fn launched(&self, job: u64, step: u32) -> bool {
        self.seen.set.contains(&(job, step))
    }

    /// A kill for a step with no task here: if its launch was not seen yet, remember it.
    pub fn kill_without_tasks(&mut self, job: u64, step: u32) {
        if !self.launched(job, step) {
            self.killed.insert((job, step));
        }
    }

    /// The ends to report instead of starting `l`, if its step was killed before it came.
    pub fn killed_before_launch(&self, l: &pb::StepLaunch, node: &str) -> Option<Vec<pb::StepTaskEnd>> {
        if !self.killed.set.contains(&(l.job, l.step)) {
            return None;
        }
        let end = |rank| pb::StepTaskEnd {
            job: l.job,
            step: l.step,
            rank,
            exit_code: None,
            signal: Some(libc::SIGKILL),
            error: "the step was killed before its launch reached this node".into(),
            node: node.to_string(),
        };
        Some(l.ranks.iter().copied().map(end).collect())
    }

    /// The launch in `t` if the head issued it for this node in this session, it has not
    /// expired, and its leader is not stale.
    pub fn verify(&self, t: &pb::TreeLaunch, node: &str, term: u64, now_ms: u64) -> Result<pb::StepLaunch, String> {
        verify(self.key.as_ref(), t, node, term, now_ms)
    }

    /// A stdin chunk of a step not launched here yet is held for its launch (the head
    /// sends chunks only to nodes with a rank that reads them, so one is coming); a chunk
    /// that cannot wait is given back.
    pub fn hold_stdin(&mut self, s: pb::StepStdin) -> Option<pb::StepStdin> {
        let k = (s.job, s.step);
        if self.launched(s.job, s.step) || (!self.held.contains_key(&k) && self.held.len() >= HELD_STEPS_MAX) {
            return Some(s);
        }
        self.held
            .entry(k)
            .or_insert_with(|| (std::time::Instant::now(), Vec::new()))
            .1
            .push(s);
        None
    }

    /// The stdin held for this step, in order.
    pub fn take_stdin(&mut self, job: u64, step: u32) -> Vec<pb::StepStdin> {
        self.held.remove(&(job, step)).map(|(_, v)| v).unwrap_or_default()
    }

    /// Stdin held too long: to be fed (acknowledged) as if no task read it.
    pub fn expired_stdin(&mut self) -> Vec<pb::StepStdin> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let old: Vec<(u64, u32)> = self
            .held
            .iter()
            .filter(|(_, (at, _))| at.elapsed() >= HOLD_FOR)
            .map(|(k, _)| *k)
            .collect();
        old.into_iter().flat_map(|(j, s)| self.take_stdin(j, s)).collect()
    }

    /// Passes the children's launches on.
    pub fn forward(&mut self, job: u64, step: u32, children: Vec<pb::TreeLaunch>) {
        if !children.is_empty() {
            self.forwarder.forward(job, step, children);
        }
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
    }
}

/// The report that `t`'s whole subtree was not delivered (None if its launch does not
/// even decode: then it names no step the head could resend).
pub fn undelivered(t: &pb::TreeLaunch) -> Option<pb::TreeUndelivered> {
    let l = pb::StepLaunch::decode(t.launch.as_slice()).ok()?;
    Some(pb::TreeUndelivered {
        job: l.job,
        step: l.step,
        nodes: crate::tree_forward::subtree_nodes(t),
        error: String::new(),
    })
}

fn verify(
    key: Option<&LaunchKey>,
    t: &pb::TreeLaunch,
    node: &str,
    term: u64,
    now_ms: u64,
) -> Result<pb::StepLaunch, String> {
    let key = key.ok_or("this agent has no session with the head right now")?;
    if t.node != node {
        return Err(format!("the launch is for node {}, this is {node}", t.node));
    }
    key.verify(node, t.expires_ms, &t.launch, &t.mac, now_ms)
        .map_err(|e| e.to_string())?;
    let l = pb::StepLaunch::decode(t.launch.as_slice()).map_err(|e| format!("undecodable launch: {e}"))?;
    if l.term < term {
        return Err(format!("launch from a stale leader (term {} < {term})", l.term));
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(key: &LaunchKey, node: &str, l: &pb::StepLaunch, expires: u64) -> pb::TreeLaunch {
        let bytes = l.encode_to_vec();
        pb::TreeLaunch {
            node: node.into(),
            mac: key.sign(node, expires, &bytes),
            launch: bytes,
            expires_ms: expires,
            ..Default::default()
        }
    }

    #[test]
    fn only_untampered_launches_of_this_node_and_session_are_taken() {
        let key = LaunchKey::random();
        let l = pb::StepLaunch {
            job: 7,
            step: 2,
            user: "alice".into(),
            argv: vec!["true".into()],
            ranks: vec![3],
            term: 5,
            ..Default::default()
        };
        let good = signed(&key, "n3", &l, 10_000);
        assert_eq!(verify(Some(&key), &good, "n3", 5, 1_000).unwrap(), l);
        // Another user, another command or other ranks: the tag no longer verifies.
        let mut tampered = good.clone();
        let mut evil = l.clone();
        evil.user = "root".into();
        tampered.launch = evil.encode_to_vec();
        let e = verify(Some(&key), &tampered, "n3", 5, 1_000).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        // Re-addressed to another node, with another session's key, or without a session.
        let mut other = good.clone();
        other.node = "n4".into();
        assert!(verify(Some(&key), &other, "n4", 5, 1_000).is_err());
        assert!(verify(Some(&key), &good, "n4", 5, 1_000)
            .unwrap_err()
            .contains("for node n3"));
        assert!(verify(Some(&LaunchKey::random()), &good, "n3", 5, 1_000).is_err());
        assert!(verify(None, &good, "n3", 5, 1_000).unwrap_err().contains("no session"));
        // Expired, and from a stale leader.
        assert!(verify(Some(&key), &good, "n3", 5, 20_000)
            .unwrap_err()
            .contains("expired"));
        assert!(verify(Some(&key), &good, "n3", 6, 1_000).unwrap_err().contains("stale"));
    }
}

#[cfg(test)]
mod recent_tests {
    use super::*;

    #[test]
    fn recent_remembers_the_last_steps_only() {
        let mut r = Recent::default();
        assert!(r.insert((1, 0)));
        assert!(!r.insert((1, 0)));
        for s in 1..=SEEN_MAX as u32 {
            assert!(r.insert((1, s)));
        }
        // (1, 0) was the oldest: forgotten, so it counts as new again.
        assert!(r.insert((1, 0)));
        assert_eq!(r.set.len(), SEEN_MAX);
    }
}
