//! When the history writer syncs a commit to disk.
//!
//! Every applied log entry moves the store's "applied up to" marker, even one that ended
//! no job (a submit, a hold). Each of those commits was an fsync of history.redb: a second
//! fsync per submit beside the Raft log's, in another thread, which on a small VM delayed
//! the next submit's log fsync behind it (measured for issue 12). A commit that holds
//! records (ended jobs and tasks) is still synced at once; one that only moves the marker
//! is made durable by the next synced commit, and at the latest [`MARKER_SYNC_EVERY`]
//! after it.
//!
//! Nothing recorded can be lost this way: a crash can only leave the marker behind the
//! records, and a marker behind makes the head re-record (at start, from its snapshot:
//! `History::backfill_needed`; and from the log it replays), which replaces rows with the
//! same ones.
use std::time::{Duration, Instant};

use redb::Durability;

/// Longest a marker-only commit stays unsynced (redb frees pages only in synced commits,
/// so this also bounds the file's growth between them).
pub const MARKER_SYNC_EVERY: Duration = Duration::from_secs(1);

/// The writer's sync state.
#[derive(Debug)]
pub struct MarkerSync {
    last_synced: Instant,
    /// A commit since `last_synced` was not synced.
    unsynced: bool,
}

impl MarkerSync {
    pub fn new(now: Instant) -> MarkerSync {
        MarkerSync {
            last_synced: now,
            unsynced: false,
        }
    }

    /// The durability of the next commit: immediate if it holds records or the marker has
    /// waited long enough.
    pub fn durability(&self, has_records: bool, now: Instant) -> Durability {
        if has_records || now.duration_since(self.last_synced) >= MARKER_SYNC_EVERY {
            Durability::Immediate
        } else {
            Durability::None
        }
    }

    /// Notes a successful commit made with `d`.
    pub fn committed(&mut self, d: Durability, now: Instant) {
        if matches!(d, Durability::None) {
            self.unsynced = true;
        } else {
            self.last_synced = now;
            self.unsynced = false;
        }
    }

    /// True while an unsynced commit waits for a sync.
    pub fn pending(&self) -> bool {
        self.unsynced
    }

    /// How long the writer may wait for work before it must sync (`idle` if nothing waits).
    pub fn wait(&self, idle: Duration, now: Instant) -> Duration {
        if self.unsynced {
            (self.last_synced + MARKER_SYNC_EVERY)
                .saturating_duration_since(now)
                .min(idle)
        } else {
            idle
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_synced_at_once_and_a_moved_marker_within_the_bound() {
        let t0 = Instant::now();
        let mut s = MarkerSync::new(t0);
        assert!(matches!(s.durability(true, t0), Durability::Immediate));
        let d = s.durability(false, t0);
        assert!(matches!(d, Durability::None));
        s.committed(d, t0);
        assert!(s.pending());
        // The writer wakes up in time to sync it even if nothing else comes.
        let idle = Duration::from_secs(600);
        assert!(s.wait(idle, t0) <= MARKER_SYNC_EVERY);
        let later = t0 + MARKER_SYNC_EVERY;
        assert_eq!(s.wait(idle, later), Duration::ZERO);
        let d = s.durability(false, later);
        assert!(matches!(d, Durability::Immediate));
        s.committed(d, later);
        assert!(!s.pending());
        assert_eq!(s.wait(idle, later), idle);
    }

    #[test]
    fn a_synced_commit_with_records_makes_the_marker_durable_too() {
        let t0 = Instant::now();
        let mut s = MarkerSync::new(t0);
        s.committed(Durability::None, t0);
        s.committed(s.durability(true, t0), t0);
        assert!(!s.pending());
    }
}
