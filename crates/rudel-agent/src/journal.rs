//! Append-only local journal of task starts and results, so results survive an agent
//! process crash until the head acknowledges them, and no task is started twice.
//!
//! At-most-once: the intent to start a task attempt is written *before* the spawn and its
//! pid right after. An agent killed between the two left a task that may run (or may have
//! run) with no pid on record; the next agent process finds such an intent, looks for the
//! process by the `RUDEL_TASK` marker in its environment, and reports the attempt lost
//! either way. Without the intent record that task was unknown to the next agent process,
//! which started it again when the head repeated its launch (a `--no-requeue` task ran twice).
//!
//! File: `<dir>/journal.jsonl`, one JSON record per line. Writes go to the page cache
//! without fsync: a process crash keeps them; a machine crash also kills the tasks, which
//! the head handles as a lost node. Each call is one buffered write (one syscall).
//! The file is compacted (rewritten with only live records) on open and when dead
//! records dominate.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rudel_core::{TaskKey, TaskOutcome, TaskReport};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal: cannot encode record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What a previous agent process left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Results not yet acknowledged by the head (send them again).
    pub unacked: Vec<TaskReport>,
    /// Tasks started (or about to be) but never reported: their processes may still run.
    pub orphans: Vec<Orphan>,
}

/// A task process started by a previous agent process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    pub key: TaskKey,
    pub attempt: u32,
    /// 0 if only the intent to start was recorded (the agent stopped before the spawn
    /// returned): the process, if any, is found by its `RUDEL_TASK` marker.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot); tells a
    /// reused pid apart. 0 if unknown (the process is then never killed).
    pub start_time: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Record {
    /// About to start this attempt (written before the spawn).
    Intent {
        key: TaskKey,
        attempt: u32,
    },
    Launch(Orphan),
    End {
        report: TaskReport,
    },
    Ack {
        done: Vec<(TaskKey, u32)>,
    },
}

/// Compact when there are more than this many records and most of them are dead.
const COMPACT_MIN_RECORDS: u64 = 10_000;

pub struct Journal {
    path: PathBuf,
    out: BufWriter<File>,
    launches: HashMap<(TaskKey, u32), Orphan>,
    /// Unacknowledged results in order of arrival.
    ends: BTreeMap<u64, TaskReport>,
    end_seq: HashMap<(TaskKey, u32), u64>,
    next_seq: u64,
    /// Records in the file now.
    records: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Journal {
    /// Opens (or creates) `dir/journal.jsonl`, recovers its live records and compacts it.
    pub fn open(dir: &Path) -> Result<(Journal, Recovered), JournalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join("journal.jsonl");
        let text = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut j = Journal {
            out: BufWriter::with_capacity(64 * 1024, open_append(&path, false)?),
            path,
            launches: HashMap::new(),
            ends: BTreeMap::new(),
            end_seq: HashMap::new(),
            next_seq: 0,
            records: 0,
        };
        let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        let last_idx = lines.iter().rposition(|l| !l.iter().all(|b| b.is_ascii_whitespace()));
        for (i, line) in lines.into_iter().enumerate() {
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            match serde_json::from_slice::<Record>(line) {
                Ok(r) => j.apply(r),
                Err(e) => {
                    if Some(i) == last_idx {
                        warn!(path = %j.path.display(), error = %e, "skipping torn last journal line");
                    } else {
                        warn!(path = %j.path.display(), line = i + 1, error = %e, "skipping corrupt journal line");
                    }
                }
            }
        }
        j.compact()?;
        let mut orphans: Vec<Orphan> = j.launches.values().cloned().collect();
        orphans.sort_by_key(|o| (o.key, o.attempt));
        let rec = Recovered {
            unacked: j.unacked(),
            orphans,
        };
        if !rec.unacked.is_empty() || !rec.orphans.is_empty() {
            info!(
                unacked = rec.unacked.len(),
                orphans = rec.orphans.len(),
                "journal recovered"
            );
        }
        Ok((j, rec))
    }

    fn apply(&mut self, r: Record) {
        match r {
            Record::Intent { key, attempt } => {
                self.launches.insert(
                    (key, attempt),
                    Orphan {
                        key,
                        attempt,
                        pid: 0,
                        start_time: 0,
                    },
                );
            }
            Record::Launch(o) => {
                self.launches.insert((o.key, o.attempt), o);
            }
            Record::End { report } => {
                let k = (report.key, report.attempt);
                self.launches.remove(&k);
                if let Some(old) = self.end_seq.remove(&k) {
                    self.ends.remove(&old);
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                self.end_seq.insert(k, seq);
                self.ends.insert(seq, report);
            }
            Record::Ack { done } => {
                for k in done {
                    if let Some(seq) = self.end_seq.remove(&k) {
                        self.ends.remove(&seq);
                    }
                }
            }
        }
    }

    /// Serialises records into the buffer, flushes once, then applies them.
    fn append(&mut self, recs: Vec<Record>) -> Result<(), JournalError> {
        for r in &recs {
            serde_json::to_writer(&mut self.out, r)?;
            self.out.write_all(b"\n").map_err(io_err(&self.path))?;
        }
        self.out.flush().map_err(io_err(&self.path))?;
        self.records += recs.len() as u64;
        for r in recs {
            self.apply(r);
        }
        let live = (self.launches.len() + self.ends.len()) as u64;
        if self.records > COMPACT_MIN_RECORDS && self.records > 4 * live {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with only the live records (write a temp file, rename).
    fn compact(&mut self) -> Result<(), JournalError> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut w = BufWriter::with_capacity(64 * 1024, File::create(&tmp).map_err(io_err(&tmp))?);
        let mut launches: Vec<&Orphan> = self.launches.values().collect();
        launches.sort_by_key(|o| (o.key, o.attempt));
        let mut n = 0u64;
        for o in launches {
            let rec = if o.pid == 0 {
                Record::Intent {
                    key: o.key,
                    attempt: o.attempt,
                }
            } else {
                Record::Launch(o.clone())
            };
            serde_json::to_writer(&mut w, &rec)?;
            w.write_all(b"\n").map_err(io_err(&tmp))?;
            n += 1;
        }
        for r in self.ends.values() {
            serde_json::to_writer(&mut w, &Record::End { report: r.clone() })?;
            w.write_all(b"\n").map_err(io_err(&tmp))?;
            n += 1;
        }
        w.flush().map_err(io_err(&tmp))?;
        drop(w);
        std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        self.out = BufWriter::with_capacity(64 * 1024, open_append(&self.path, true)?);
        self.records = n;
        Ok(())
    }

    /// Records the intent to start these attempts; call before spawning them (one write
    /// for the whole batch).
    pub fn record_intents(&mut self, tasks: &[(TaskKey, u32)]) -> Result<(), JournalError> {
        if tasks.is_empty() {
            return Ok(());
        }
        self.append(
            tasks
                .iter()
                .map(|&(key, attempt)| Record::Intent { key, attempt })
                .collect(),
        )
    }

    /// Records that these attempts started, with their pids (start times are read from
    /// `/proc/<pid>/stat`); one write for the batch.
    pub fn record_launches(&mut self, started: &[(TaskKey, u32, u32)]) -> Result<(), JournalError> {
        if started.is_empty() {
            return Ok(());
        }
        self.append(
            started
                .iter()
                .map(|&(key, attempt, pid)| {
                    Record::Launch(Orphan {
                        key,
                        attempt,
                        pid,
                        start_time: proc_start_time(pid).unwrap_or(0),
                    })
                })
                .collect(),
        )
    }

    /// Records that a task started (reads its start time from `/proc/<pid>/stat`).
    #[cfg(test)]
    pub fn record_launch(&mut self, key: TaskKey, attempt: u32, pid: u32) -> Result<(), JournalError> {
        self.record_launches(&[(key, attempt, pid)])
    }

    /// Records a task's result (kept until acknowledged).
    pub fn record_end(&mut self, report: &TaskReport) -> Result<(), JournalError> {
        self.append(vec![Record::End { report: report.clone() }])
    }

    /// The head has stored these results: forget them.
    pub fn ack(&mut self, done: &[(TaskKey, u32)]) -> Result<(), JournalError> {
        let done: Vec<_> = done.iter().copied().filter(|k| self.end_seq.contains_key(k)).collect();
        if done.is_empty() {
            return Ok(());
        }
        self.append(vec![Record::Ack { done }])
    }

    /// True when a result of this attempt is kept (not yet acknowledged).
    pub fn has_end(&self, key: TaskKey, attempt: u32) -> bool {
        self.end_seq.contains_key(&(key, attempt))
    }

    /// Results not yet acknowledged, oldest first.
    pub fn unacked(&self) -> Vec<TaskReport> {
        self.ends.values().cloned().collect()
    }
}

fn open_append(path: &Path, must_exist: bool) -> Result<File, JournalError> {
    OpenOptions::new()
        .append(true)
        .create(!must_exist)
        .open(path)
        .map_err(io_err(path))
}

/// Field 22 (starttime) of `/proc/<pid>/stat`.
pub(crate) fn proc_start_time(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|s| s.start_time)
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ProcStat {
    /// Field 3: `R`, `S`, `Z` (exited, not yet reaped), ...
    state: u8,
    /// Field 6.
    session: u32,
    /// Field 22, clock ticks since boot: tells a reused pid apart.
    start_time: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may contain spaces and parentheses: fields after the last ')'.
    let rest: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
    Some(ProcStat {
        state: *rest.first()?.as_bytes().first()?,
        session: rest.get(3)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
    })
}

pub use crate::exec::contain::{task_marker, TASK_MARKER};

/// Session leaders (as every task is) whose environment carries one of the `wanted`
/// markers: marker -> pid. Reads every process's environment: only done at start, when a
/// previous agent process left intents without pids.
fn find_by_marker(wanted: &HashSet<String>) -> HashMap<String, u32> {
    let mut found = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    let prefix = format!("{TASK_MARKER}=");
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if proc_stat(pid).is_none_or(|s| s.session != pid) {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let marker = env
            .split(|&b| b == 0)
            .find_map(|v| v.strip_prefix(prefix.as_bytes()))
            .and_then(|m| std::str::from_utf8(m).ok());
        if let Some(m) = marker.filter(|m| wanted.contains(*m)) {
            found.insert(m.to_string(), pid);
        }
    }
    found
}

/// What became of a task a previous agent process started.
#[derive(Debug, PartialEq, Eq)]
enum OrphanFate {
    /// Still ran: its process group was killed.
    Killed,
    /// Had exited; nobody collected its status (the previous agent was its parent).
    Ended,
    /// No such process any more.
    Gone,
    /// Only the intent was recorded and no process carries its marker.
    NotFound,
}

/// Kills orphans left by a previous agent process: SIGKILL to the process group, but
/// only if `/proc/<pid>/stat` still shows the recorded start time (a reused pid is never
/// killed) and the process still leads its own session, as tasks do. An orphan with only
/// an intent is looked up by its marker. Returns a `Lost` report for every orphan: its
/// outcome is unknown, so a `--no-requeue` task must not run again.
pub fn reap_orphans(orphans: &[Orphan], owner: &str) -> Vec<TaskReport> {
    let now = now_ms();
    let wanted: HashSet<String> = orphans
        .iter()
        .filter(|o| o.pid == 0)
        .map(|o| task_marker(owner, o.key, o.attempt))
        .collect();
    let by_marker = if wanted.is_empty() {
        HashMap::new()
    } else {
        find_by_marker(&wanted)
    };
    orphans
        .iter()
        .map(|o| {
            let fate = match o.pid {
                0 => match by_marker.get(&task_marker(owner, o.key, o.attempt)) {
                    Some(&pid) => kill_orphan(pid, None),
                    None => OrphanFate::NotFound,
                },
                pid => kill_orphan(pid, Some(o.start_time)),
            };
            if fate != OrphanFate::Gone && fate != OrphanFate::NotFound {
                warn!(task = %o.key, attempt = o.attempt, ?fate, "orphaned task of the previous agent process");
            }
            let message = match fate {
                OrphanFate::Killed => "the agent restarted while the task ran; its processes were killed",
                OrphanFate::Ended => "the task ended while its agent was down; its exit status was lost",
                OrphanFate::Gone => "the agent restarted while the task ran; the process was gone and its result lost",
                OrphanFate::NotFound => {
                    "the agent stopped while starting the task; it may have started (no process left)"
                }
            };
            TaskReport {
                key: o.key,
                attempt: o.attempt,
                outcome: TaskOutcome::Lost,
                exit_code: None,
                signal: (fate == OrphanFate::Killed).then_some(libc::SIGKILL),
                start_ms: 0,
                end_ms: now,
                message: message.to_string(),
                usage: Default::default(),
            }
        })
        .collect()
}

/// Kills the process group led by `pid` if that is still the task (same start time when
/// known; a session leader). A zombie leader has ended, but members of its group may live.
fn kill_orphan(pid: u32, start_time: Option<u64>) -> OrphanFate {
    let Some(stat) = proc_stat(pid) else {
        return OrphanFate::Gone;
    };
    let same = start_time.is_none_or(|t| t != 0 && t == stat.start_time);
    if pid <= 1 || !same || stat.session != pid {
        return OrphanFate::Gone;
    }
    // SAFETY: plain syscalls; the pid is the (still same) group leader, or a zombie that
    // keeps its pid and group id reserved until reaped.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
        libc::kill(pid as i32, libc::SIGKILL);
    }
    if stat.state == b'Z' {
        OrphanFate::Ended
    } else {
        OrphanFate::Killed
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(job: u64, index: u32, code: i32) -> TaskReport {
        TaskReport {
            key: TaskKey { job, index },
            attempt: 0,
            outcome: TaskOutcome::Exited,
            exit_code: Some(code),
            signal: None,
            start_ms: 1,
            end_ms: 2,
            message: String::new(),
            usage: Default::default(),
        }
    }

    #[test]
    fn roundtrip_ack_and_torn_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = |job| TaskKey { job, index: 0 };
        {
            let (mut j, rec) = Journal::open(dir.path()).expect("open");
            assert_eq!(rec, Recovered::default());
            j.record_launch(k(1), 0, 999_999_999).expect("launch");
            j.record_launch(k(2), 0, 999_999_998).expect("launch");
            j.record_launch(k(3), 0, 999_999_997).expect("launch");
            j.record_end(&rep(1, 0, 0)).expect("end");
            j.record_end(&rep(2, 0, 3)).expect("end");
            j.ack(&[(k(1), 0)]).expect("ack");
            assert_eq!(j.unacked(), vec![rep(2, 0, 3)]);
        }
        // Simulate a crash in the middle of writing a record.
        let path = dir.path().join("journal.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).expect("append");
        f.write_all(br#"{"t":"end","report":{"key":{"job":3,"ind"#)
            .expect("write");
        drop(f);
        let (mut j, rec) = Journal::open(dir.path()).expect("reopen");
        assert_eq!(rec.unacked, vec![rep(2, 0, 3)]);
        assert_eq!(rec.orphans.len(), 1);
        assert_eq!(rec.orphans[0].key, k(3));
        assert_eq!(rec.orphans[0].pid, 999_999_997);
        assert_eq!(rec.orphans[0].start_time, 0);
        // Compacted: one launch and one end, no torn line.
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2, "{text}");
        // Appending after the recovered torn line works.
        j.record_end(&rep(3, 0, 1)).expect("end");
        j.ack(&[(k(2), 0)]).expect("ack");
        drop(j);
        let (j, rec) = Journal::open(dir.path()).expect("reopen 2");
        assert_eq!(rec.unacked, vec![rep(3, 0, 1)]);
        assert!(rec.orphans.is_empty());
        assert_eq!(j.unacked(), vec![rep(3, 0, 1)]);
    }

    #[test]
    fn an_intent_without_a_pid_is_recovered_as_an_orphan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = |job| TaskKey { job, index: 0 };
        {
            let (mut j, _) = Journal::open(dir.path()).expect("open");
            j.record_intents(&[(k(1), 1), (k(2), 1), (k(3), 1)]).expect("intents");
            // 1 started (pid known), 2 started and ended, 3 only intended.
            j.record_launches(&[(k(1), 1, 999_999_999), (k(2), 1, 999_999_998)])
                .expect("launches");
            j.record_end(&TaskReport {
                attempt: 1,
                ..rep(2, 0, 0)
            })
            .expect("end");
        }
        let (j, rec) = Journal::open(dir.path()).expect("reopen");
        let got: Vec<(TaskKey, u32, u32)> = rec.orphans.iter().map(|o| (o.key, o.attempt, o.pid)).collect();
        assert_eq!(got, vec![(k(1), 1, 999_999_999), (k(3), 1, 0)]);
        drop(j);
        // Compaction kept the intent as an intent.
        let text = std::fs::read_to_string(dir.path().join("journal.jsonl")).expect("read");
        assert!(text.contains(r#""t":"intent""#), "{text}");
        let (_, again) = Journal::open(dir.path()).expect("reopen 2");
        assert_eq!(again.orphans, rec.orphans);
        // The intent-only orphan is reported lost without anything to kill.
        let reps = reap_orphans(&rec.orphans[1..], "test-agent");
        assert_eq!((reps[0].key, reps[0].outcome), (k(3), TaskOutcome::Lost));
        assert_eq!(reps[0].signal, None);
    }

    #[test]
    fn compaction_bounds_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _) = Journal::open(dir.path()).expect("open");
        for i in 0..(COMPACT_MIN_RECORDS + 100) {
            j.record_end(&rep(i, 0, 0)).expect("end");
            j.ack(&[(TaskKey { job: i, index: 0 }, 0)]).expect("ack");
        }
        let lines = std::fs::read_to_string(dir.path().join("journal.jsonl"))
            .expect("read")
            .lines()
            .count() as u64;
        assert!(lines < COMPACT_MIN_RECORDS, "{lines} lines");
        assert!(j.unacked().is_empty());
    }

    #[test]
    fn start_time_of_self() {
        let t = proc_start_time(std::process::id()).expect("own stat");
        assert!(t > 0);
        assert_eq!(proc_start_time(u32::MAX), None);
    }
}
