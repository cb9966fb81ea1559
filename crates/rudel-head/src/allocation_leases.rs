//! Leases of interactive allocations. `salloc` and an `srun` outside a job hold their
//! allocation from outside the cluster: the work they run is theirs (a shell, a step), and
//! the job itself only holds the nodes. If such a client dies without releasing (SIGKILL,
//! its machine lost), nothing else would ever end the job. So the client holds a
//! `HoldAllocation` stream to the leader while it holds the allocation, and the leader
//! cancels an interactive job that has had no such stream for the lease, as Slurm's
//! controller ends the allocation of an srun that stops answering its pings.
//!
//! The registry lives in the leader's memory. A new leader learns the interactive jobs
//! from the state once (`adopt`) and gives each a full lease from then: clients of the old
//! leader reconnect within it.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rudel_core::{Command, State};

/// Default lease: longer than a leader failover plus the client's reconnect backoff.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
struct Held {
    /// Open `HoldAllocation` streams.
    streams: usize,
    /// Since when no stream was open (or since the job was first seen).
    since: Instant,
    /// When this leader last proposed its cancel (proposed again a lease later if the
    /// job still runs: the proposal may have failed).
    cancelled_at: Option<Instant>,
}

/// The interactive jobs this leader watches.
#[derive(Debug, Default)]
pub struct Leases {
    held: Mutex<HashMap<u64, Held>>,
}

/// An open stream's hold on its job; dropping it (the stream ended) starts the lease.
#[derive(Debug)]
pub struct Guard {
    leases: Arc<Leases>,
    job: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.leases.detach(self.job, Instant::now());
    }
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        // A panic elsewhere while holding the lock leaves only counters behind.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts watching `job` (just submitted, or seen by a new leader), if not yet.
    pub fn watch(&self, job: u64, now: Instant) {
        self.lock().entry(job).or_insert(Held {
            streams: 0,
            since: now,
            cancelled_at: None,
        });
    }

    /// A client opened a stream for `job`.
    pub fn attach(self: &Arc<Self>, job: u64, now: Instant) -> Guard {
        self.watch(job, now);
        if let Some(h) = self.lock().get_mut(&job) {
            h.streams += 1;
        }
        Guard {
            leases: self.clone(),
            job,
        }
    }

    fn detach(&self, job: u64, now: Instant) {
        if let Some(h) = self.lock().get_mut(&job) {
            h.streams = h.streams.saturating_sub(1);
            if h.streams == 0 {
                h.since = now;
            }
        }
    }

    /// Watches every interactive job of `state` not yet ended (a new leader's first look).
    pub fn adopt(&self, state: &State, now: Instant) {
        for j in state.jobs.values() {
            if j.spec.interactive && !j.is_finished() {
                self.watch(j.id, now);
            }
        }
    }

    /// No longer leader: forgets everything (streams to this head end with its leadership).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The jobs to cancel now: watched, not ended, without a stream for `lease`. Forgets
    /// jobs that ended or are gone.
    pub fn expired(&self, state: &State, lease: Duration, now: Instant) -> Vec<u64> {
        let mut held = self.lock();
        held.retain(|id, _| state.jobs.get(id).is_some_and(|j| !j.is_finished()));
        let mut out = Vec::new();
        for (&id, h) in held.iter_mut() {
            let gone = h.streams == 0 && now.saturating_duration_since(h.since) >= lease;
            let asked = h.cancelled_at.is_some_and(|t| now.saturating_duration_since(t) < lease);
            if gone && !asked {
                h.cancelled_at = Some(now);
                out.push(id);
            }
        }
        out.sort_unstable();
        out
    }
}

/// What the sweep needs from the head.
pub struct Sweep {
    pub leases: Arc<Leases>,
    pub lease: Duration,
    pub raft: crate::raft::Raft,
    pub head_id: u64,
    pub shared: Arc<crate::raft::SharedState>,
    pub proposer: crate::proposer::Proposer,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// How often the leader looks for expired leases.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Runs until shutdown: on the leader, cancels interactive jobs whose client is gone.
pub async fn sweep(mut s: Sweep) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = s.shutdown.changed() => return,
        }
        let now = Instant::now();
        if s.raft.metrics().borrow().current_leader != Some(s.head_id) {
            if leading {
                s.leases.clear();
            }
            leading = false;
            continue;
        }
        if !leading {
            s.leases.adopt(&s.shared.read().state, now);
            leading = true;
        }
        let expired = s.leases.expired(&s.shared.read().state, s.lease, now);
        if expired.is_empty() {
            continue;
        }
        tracing::warn!(jobs = ?expired, lease_s = s.lease.as_secs(), "cancelling interactive allocations whose client (salloc, srun) is gone");
        let cmd = Command::Cancel {
            jobs: expired,
            now_ms: crate::proposer::now_ms(),
        };
        if let Err(e) = s.proposer.propose(cmd).await {
            tracing::warn!(error = %e, "could not cancel abandoned allocations (tried again after a lease)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rudel_core::{JobSpec, NodeRegistration, Response};

    /// One node running one job, interactive or not.
    fn state_with(interactive: bool) -> (State, u64) {
        let mut s = State::new();
        s.apply(Command::RegisterNode {
            reg: NodeRegistration {
                name: "n1".into(),
                uid: "u1".into(),
                cpus: 2,
                mem_bytes: 1 << 30,
                ..NodeRegistration::default()
            },
            now_ms: 1_000,
        });
        let spec = JobSpec {
            argv: vec!["sleep".into(), "infinity".into()],
            cpus: 1,
            chdir: "/".into(),
            user: "u".into(),
            interactive,
            ..JobSpec::default()
        };
        let r = s.apply(Command::Submit {
            request_id: String::new(),
            spec,
            now_ms: 1_000,
        });
        let Response::Submitted { job, .. } = r else {
            panic!("{r:?}")
        };
        (s, job)
    }

    #[test]
    fn a_job_without_a_stream_for_the_lease_is_cancelled_once() {
        let (s, id) = state_with(true);
        let l = Arc::new(Leases::default());
        let t0 = Instant::now();
        let lease = Duration::from_secs(30);
        let g = l.attach(id, t0);
        assert!(l.expired(&s, lease, t0 + lease * 3).is_empty(), "held by a stream");
        drop(g);
        let gone = Instant::now();
        assert!(l.expired(&s, lease, gone + lease / 2).is_empty(), "within the lease");
        assert_eq!(l.expired(&s, lease, gone + lease), [id]);
        assert!(
            l.expired(&s, lease, gone + lease + lease / 2).is_empty(),
            "asked once per lease"
        );
        assert_eq!(
            l.expired(&s, lease, gone + lease * 2),
            [id],
            "asked again if still running"
        );
    }

    #[test]
    fn a_new_leader_gives_every_interactive_job_a_full_lease() {
        let (s, id) = state_with(true);
        let l = Leases::default();
        let t0 = Instant::now();
        l.adopt(&s, t0);
        let lease = Duration::from_secs(5);
        assert!(l.expired(&s, lease, t0 + lease / 2).is_empty());
        assert_eq!(l.expired(&s, lease, t0 + lease), [id]);
        let (s, _) = state_with(false);
        let l = Leases::default();
        l.adopt(&s, t0);
        assert!(
            l.expired(&s, lease, t0 + lease * 9).is_empty(),
            "batch jobs have no lease"
        );
    }

    #[test]
    fn unknown_jobs_are_forgotten() {
        let (s, id) = state_with(true);
        let l = Leases::default();
        let t0 = Instant::now();
        l.watch(id + 100, t0);
        let lease = Duration::from_secs(1);
        assert!(l.expired(&s, lease, t0 + lease).is_empty());
        assert!(l.lock().is_empty());
    }
}
