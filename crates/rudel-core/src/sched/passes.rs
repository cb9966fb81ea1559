//! Ordinary passes and full passes (scheduling version 10): which entries run the whole
//! pass, backfill included, and which run a short one.
//!
//! Before version 10 every entry ran the whole pass: a report of one node walked
//! `backfill.max_jobs` jobs past the blocked one and re-checked the reservation, 10 ms
//! and more at 10,000 nodes where the placements themselves took well under one
//! (`bench/sched-sim scale`). From version 10 on, an ordinary entry (a submit, a report,
//! anything but a `Tick`) places tasks in queue order until the first job that cannot
//! start and stops there, with caps on the tasks it places and the jobs it looks at, as
//! Slurm's event-driven main scheduler does (`default_queue_depth`). What lies past that
//! job (backfill, jobs of other partitions, preemption) waits for a full pass: the entry
//! records that one is due, and the leader proposes a `Tick` for it once
//! `pass.full_interval_ms` of log time has gone by since the last full pass.
//!
//! Stopping early only ever delays a start, never makes one the full pass would refuse:
//! nothing behind the first blocked job starts in an ordinary pass, so no reservation
//! and no queue order can be broken by it.
use serde::{Deserialize, Serialize};

/// The first scheduling version with ordinary passes.
pub const PASSES_VERSION: u32 = 10;

/// `pass.ordinary_starts` default: at about 30 µs a placement at 10,000 nodes, an
/// ordinary entry stays near 1 ms.
pub const DEFAULT_ORDINARY_STARTS: u32 = 32;

/// `pass.ordinary_jobs` default (Slurm's `default_queue_depth`).
pub const DEFAULT_ORDINARY_JOBS: u32 = 100;

/// `pass.full_interval_ms` default.
pub const DEFAULT_FULL_INTERVAL_MS: u64 = 1_000;

/// Which pass an entry runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PassKind {
    /// The whole pass: a `Tick`'s, and every entry's before version 10.
    Full,
    /// The short pass of any other entry from version 10 on.
    Ordinary,
}

/// `pass.*` of [`super::SchedConfig`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PassConfig {
    /// Most tasks an ordinary pass places (0: only `max_starts` caps it). A pass that
    /// stops there leaves the rest to a `Tick` at once, as `max_starts` does.
    pub ordinary_starts: u32,
    /// Most jobs an ordinary pass looks at.
    pub ordinary_jobs: u32,
    /// Least log time from one full pass to the next one an ordinary entry asks for.
    pub full_interval_ms: u64,
}

impl Default for PassConfig {
    fn default() -> Self {
        PassConfig {
            ordinary_starts: DEFAULT_ORDINARY_STARTS,
            ordinary_jobs: DEFAULT_ORDINARY_JOBS,
            full_interval_ms: DEFAULT_FULL_INTERVAL_MS,
        }
    }
}

impl PassConfig {
    pub const KEYS: [&'static str; 3] = ["pass.ordinary_starts", "pass.ordinary_jobs", "pass.full_interval_ms"];

    /// Sets one `pass.*` setting; `Err` is the expected form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let v = value.trim();
        match key {
            "pass.ordinary_starts" => {
                self.ordinary_starts = v
                    .parse()
                    .ok()
                    .filter(|n| *n <= 1_000_000)
                    .ok_or("tasks an ordinary entry places at most, 0 to 1000000 (0: only max_starts caps it)")?;
            }
            "pass.ordinary_jobs" => {
                self.ordinary_jobs = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or("jobs an ordinary entry looks at most, 1 to 1000000")?;
            }
            "pass.full_interval_ms" => {
                self.full_interval_ms = v
                    .parse()
                    .ok()
                    .filter(|n| *n <= 3_600_000)
                    .ok_or("milliseconds from 0 (a full pass right after each entry that needs one) to 3600000")?;
            }
            _ => return Err(format!("one of {}", Self::KEYS.join(", "))),
        }
        Ok(())
    }

    pub fn settings(&self) -> Vec<(String, String)> {
        vec![
            ("pass.ordinary_starts".into(), self.ordinary_starts.to_string()),
            ("pass.ordinary_jobs".into(), self.ordinary_jobs.to_string()),
            ("pass.full_interval_ms".into(), self.full_interval_ms.to_string()),
        ]
    }

    pub fn is_default(&self) -> bool {
        *self == PassConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, NodeRegistration, Response};
    use crate::job::JobSpec;
    use crate::testkit::{configure, one_node, spec, submit};
    use crate::State;

    /// n1 of 2 cpus and n2 of 1, at scheduling version 10 with `settings`; a job holds
    /// all of n1 and a 2-cpu job waits behind it (it reserves n1, the only node it fits).
    fn blocked_cluster(settings: &[(&str, &str)]) -> (State, crate::JobId) {
        let mut s = one_node(2);
        s.apply(Command::RegisterNode {
            reg: NodeRegistration {
                name: "n2".into(),
                uid: "u2".into(),
                cpus: 1,
                mem_bytes: 1 << 30,
                ..NodeRegistration::default()
            },
            now_ms: 1_000,
        });
        let mut all = vec![("version", "10"), ("queue_depth", "0"), ("short_queue_depth", "0")];
        all.extend_from_slice(settings);
        assert!(matches!(configure(&mut s, &all), Response::Configured { .. }));
        submit(&mut s, JobSpec { cpus: 2, ..spec() });
        let big = submit(&mut s, JobSpec { cpus: 2, ..spec() });
        assert_eq!(s.blocked_job, Some(big));
        (s, big)
    }

    fn running(s: &State, job: crate::JobId) -> usize {
        s.jobs[&job].running.len()
    }

    /// An ordinary entry stops at the first job that cannot start: a job behind it that
    /// fits elsewhere waits for the full pass the entry left due, then starts there.
    #[test]
    fn an_ordinary_entry_stops_at_the_blocked_job_and_the_due_full_pass_goes_on() {
        let (mut s, big) = blocked_cluster(&[("pass.full_interval_ms", "5000")]);
        let last_full = s.last_full_pass_ms;
        let small = submit(&mut s, spec());
        assert_eq!(running(&s, small), 0, "an ordinary pass does not pass the blocked job");
        assert_eq!(s.blocked_job, Some(big));
        assert_eq!(s.full_pass_due_ms, Some(last_full + 5_000));
        assert_eq!(s.next_wake_ms(), Some(last_full + 5_000), "the leader Ticks then");
        let why = crate::query::pending_reason(&s, &s.jobs[&small]);
        assert!(
            why.starts_with("Priority: ") && why.contains("full scheduling pass"),
            "{why}"
        );
        s.apply(Command::Tick {
            now_ms: last_full + 5_000,
        });
        assert_eq!(running(&s, small), 1, "the full pass starts it on n2");
        assert_eq!(s.full_pass_due_ms, None);
        assert_eq!(s.last_full_pass_ms, last_full + 5_000);
        assert_eq!(crate::invariants::check_all(&s), Ok(()));
    }

    /// Before version 10 the same entry runs the full pass and the job starts at once.
    #[test]
    fn before_version_10_every_entry_runs_the_full_pass() {
        let (mut s, _) = blocked_cluster(&[]);
        assert!(matches!(
            configure(&mut s, &[("version", "9")]),
            Response::Configured { .. }
        ));
        let small = submit(&mut s, spec());
        assert_eq!(running(&s, small), 1);
        assert_eq!(s.full_pass_due_ms, None);
    }

    /// `pass.ordinary_starts` caps an ordinary pass; the rest starts in a `Tick` the
    /// leader proposes at once.
    #[test]
    fn an_ordinary_pass_places_at_most_ordinary_starts_and_a_tick_goes_on() {
        let mut s = one_node(8);
        let settings = [("version", "10"), ("queue_depth", "0"), ("pass.ordinary_starts", "2")];
        assert!(matches!(configure(&mut s, &settings), Response::Configured { .. }));
        let array = Some(crate::parse::parse_array("0-4").unwrap());
        let job = submit(&mut s, JobSpec { array, ..spec() });
        assert_eq!(running(&s, job), 2);
        assert!(s.more_to_place);
        assert_eq!(s.next_wake_ms(), Some(s.now_ms), "due at once");
        s.apply(Command::Tick { now_ms: s.now_ms });
        assert_eq!(running(&s, job), 5, "a full pass has no ordinary cap");
        assert!(!s.more_to_place);
    }

    /// `pass.ordinary_jobs` bounds the jobs an ordinary pass looks at; the full pass
    /// looks at the rest.
    #[test]
    fn an_ordinary_pass_looks_at_most_at_ordinary_jobs() {
        let mut s = one_node(8);
        let settings = [
            ("version", "10"),
            ("pass.ordinary_jobs", "1"),
            ("pass.full_interval_ms", "0"),
        ];
        assert!(matches!(configure(&mut s, &settings), Response::Configured { .. }));
        let held: Vec<crate::JobId> = (0..3)
            .map(|_| submit(&mut s, JobSpec { hold: true, ..spec() }))
            .collect();
        s.apply(Command::Release {
            jobs: held.clone(),
            now_ms: s.now_ms,
        });
        let started: Vec<usize> = held.iter().map(|j| running(&s, *j)).collect();
        assert_eq!(started, [1, 0, 0]);
        assert_eq!(
            s.next_wake_ms(),
            Some(s.last_full_pass_ms),
            "due at once with no interval"
        );
        s.apply(Command::Tick { now_ms: s.now_ms });
        assert!(held.iter().all(|j| running(&s, *j) == 1));
    }

    /// The `pass.*` settings need version 10: an older head would run full passes.
    #[test]
    fn settings_need_version_10() {
        let mut s = one_node(1);
        let r = configure(&mut s, &[("pass.full_interval_ms", "5")]);
        assert!(
            matches!(r, Response::Rejected { ref reason } if reason.contains("scheduling version 10 or later first")),
            "{r:?}"
        );
    }

    #[test]
    fn settings_round_trip_and_bad_values_are_refused() {
        let mut c = PassConfig::default();
        c.set("pass.ordinary_starts", "0").unwrap();
        c.set("pass.ordinary_jobs", "7").unwrap();
        c.set("pass.full_interval_ms", "250").unwrap();
        let mut again = PassConfig::default();
        for (k, v) in c.settings() {
            again.set(&k, &v).unwrap();
        }
        assert_eq!(again, c);
        assert!(c.set("pass.ordinary_jobs", "0").is_err());
        assert!(c.set("pass.full_interval_ms", "-1").is_err());
        assert!(c.set("pass.nope", "1").unwrap_err().contains("pass.ordinary_jobs"));
    }
}
