//! The head group: listing members, adding a head (learner first, voter once caught up,
//! through openraft's joint consensus), removing one, and starting an election on
//! purpose. Also the id file every head keeps in its data directory.
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};
use rudel_proto::v1 as pb;
use tonic::Status;

use crate::raft::Raft;

/// A learner this far behind the leader's log (entries) is close enough to become a voter.
const CAUGHT_UP_ENTRIES: u64 = 1_000;
/// How long PromoteHead waits for the learner to catch up.
const PROMOTE_WAIT: Duration = Duration::from_secs(60);

/// File holding this head's id in its data directory.
pub fn id_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("head-id")
}

/// The head id recorded in `data_dir`, if any.
pub fn load_id(data_dir: &Path) -> Option<u64> {
    std::fs::read_to_string(id_file(data_dir)).ok()?.trim().parse().ok()
}

/// Records this head's id in `data_dir`.
pub fn save_id(data_dir: &Path, id: u64) -> std::io::Result<()> {
    let p = id_file(data_dir);
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(tmp, p)
}

/// "Not the leader" with the leader's address in the `rudel-leader` metadata.
pub fn not_leader(raft: &Raft) -> Status {
    let m = raft.metrics().borrow().clone();
    let leader = m
        .current_leader
        .and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.addr.clone()));
    crate::proposer::ProposeError::NotLeader { leader }.into()
}

fn is_leader(raft: &Raft, me: u64) -> bool {
    raft.metrics().borrow().current_leader == Some(me)
}

/// Members with their roles and (on the leader) replication progress.
pub fn list(raft: &Raft, me: u64) -> pb::ListHeadsResponse {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let heads = membership
        .nodes()
        .map(|(id, node)| pb::HeadInfo {
            id: *id,
            addr: node.addr.clone(),
            role: if voters.contains(id) { "voter" } else { "learner" }.into(),
            leader: m.current_leader == Some(*id),
            matched: match &m.replication {
                Some(r) => r.get(id).and_then(|l| l.as_ref()).map_or(0, |l| l.index),
                None if *id == me => m.last_applied.map_or(0, |l| l.index),
                None => 0,
            },
        })
        .collect();
    pb::ListHeadsResponse {
        heads,
        answered_by: me,
        term: m.current_term,
        leader_id: m.current_leader.unwrap_or(0),
        last_log_index: m.last_log_index.unwrap_or(0),
        last_applied: m.last_applied.map_or(0, |l| l.index),
    }
}

/// Serializes membership changes made through this head. Two heads joining at the same
/// moment would otherwise both be given the next free id (the membership seen in the
/// metrics only changes once the first change is committed), and openraft refuses a
/// second joint-consensus change while one is in progress.
#[derive(Default)]
pub struct Changes {
    /// Highest head id this head has handed out, so ids are never reused even before
    /// the membership that contains them shows in the metrics.
    last_id: tokio::sync::Mutex<u64>,
}

fn raft_err(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("membership change failed: {e}"))
}

/// Adds a head at `addr` as a learner; returns its new id (or its id if already a member).
pub async fn add(raft: &Raft, changes: &Changes, me: u64, addr: &str) -> Result<u64, Status> {
    let mut last_id = changes.last_id.lock().await;
    if !is_leader(raft, me) {
        return Err(not_leader(raft));
    }
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    if let Some((id, _)) = membership.nodes().find(|(_, n)| n.addr == addr) {
        return Ok(*id);
    }
    let id = membership.nodes().map(|(id, _)| *id).max().unwrap_or(0).max(*last_id) + 1;
    raft.add_learner(id, BasicNode { addr: addr.to_string() }, false)
        .await
        .map_err(raft_err)?;
    *last_id = id;
    tracing::info!(head = id, addr, "added a head as learner");
    Ok(id)
}

/// Makes learner `id` a voter once it has caught up.
pub async fn promote(raft: &Raft, changes: &Changes, me: u64, id: u64) -> Result<(), Status> {
    if !is_leader(raft, me) {
        return Err(not_leader(raft));
    }
    let deadline = tokio::time::Instant::now() + PROMOTE_WAIT;
    loop {
        let m = raft.metrics().borrow().clone();
        if m.membership_config.membership().voter_ids().any(|v| v == id) {
            return Ok(());
        }
        let last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map_or(0, |l| l.index);
        if matched + CAUGHT_UP_ENTRIES >= last && matched > 0 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Status::deadline_exceeded(format!(
                "head {id} did not catch up within {PROMOTE_WAIT:?} (at {matched} of {last})"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _serial = changes.last_id.lock().await;
    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        .await
        .map_err(raft_err)?;
    tracing::info!(head = id, "head promoted to voter");
    Ok(())
}

/// Removes head `id` from the group.
pub async fn remove(raft: &Raft, changes: &Changes, me: u64, id: u64) -> Result<(), Status> {
    let _serial = changes.last_id.lock().await;
    if !is_leader(raft, me) {
        return Err(not_leader(raft));
    }
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    if membership.get_node(&id).is_none() {
        return Err(Status::not_found(format!(
            "no head {id} in the group (see `rudel admin heads`)"
        )));
    }
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    if voters.contains(&id) {
        if voters.len() == 1 {
            return Err(Status::failed_precondition("cannot remove the last voting head"));
        }
        raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(raft_err)?;
    } else {
        raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(raft_err)?;
    }
    tracing::info!(head = id, "head removed from the group");
    Ok(())
}
