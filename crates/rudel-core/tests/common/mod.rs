//! Helpers shared by rudel-core's integration tests (the crate's own `testkit` is
//! crate-private).
use rudel_core::{TaskKey, TaskOutcome, TaskReport};

/// A task attempt that exited 0 at `now` (started and ended then: the tests that use it
/// track run time from the log's own start and end entries).
pub fn exited(key: TaskKey, attempt: u32, now: u64) -> TaskReport {
    TaskReport {
        key,
        attempt,
        outcome: TaskOutcome::Exited,
        exit_code: Some(0),
        signal: None,
        start_ms: now,
        end_ms: now,
        message: String::new(),
        usage: Default::default(),
    }
}
