//! Append-only local journal of task launches and results, so results survive an agent
//! process crash until the head acknowledges them.
//!
//! File: `<dir>/journal.jsonl`, one JSON record per line. Writes go to the page cache
//! without fsync: a process crash keeps them; a machine crash also kills the tasks, which
//! the head handles as a lost node. Each call is one buffered write (one syscall).
//! The file is compacted (rewritten with only live records) on open and when dead
//! records dominate.
use std::collections::{BTreeMap, HashMap};
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
    /// Tasks launched but never reported: their processes may still run.
    pub orphans: Vec<Orphan>,
}

/// A task process started by a previous agent process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    pub key: TaskKey,
    pub attempt: u32,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot); tells a
    /// reused pid apart. 0 if unknown (the process is then never killed).
    pub start_time: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Record {
    Launch(Orphan),
    End { report: TaskReport },
    Ack { done: Vec<(TaskKey, u32)> },
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
            serde_json::to_writer(&mut w, &Record::Launch(o.clone()))?;
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

    /// Records that a task started (reads its start time from `/proc/<pid>/stat`).
    pub fn record_launch(&mut self, key: TaskKey, attempt: u32, pid: u32) -> Result<(), JournalError> {
        let start_time = proc_start_time(pid).unwrap_or(0);
        self.append(vec![Record::Launch(Orphan {
            key,
            attempt,
            pid,
            start_time,
        })])
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
    proc_stat(pid).map(|(start, _)| start)
}

/// (starttime, session id) from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(u64, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may contain spaces and parentheses: fields after the last ')'.
    let rest: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state): session is field 6, starttime field 22.
    Some((rest.get(19)?.parse().ok()?, rest.get(3)?.parse().ok()?))
}

/// Kills orphans left by a previous agent process: SIGKILL to the process group, but
/// only if `/proc/<pid>/stat` still shows the recorded start time (a reused pid is never
/// killed; the process must also still lead its own session, as tasks do). Returns a
/// `Lost` report for every orphan.
pub fn reap_orphans(orphans: &[Orphan]) -> Vec<TaskReport> {
    let now = now_ms();
    orphans
        .iter()
        .map(|o| {
            // Same start time, and still the leader of its own session as every task is.
            let alive = o.start_time != 0 && o.pid > 1 && proc_stat(o.pid) == Some((o.start_time, o.pid));
            let message = if alive {
                // SAFETY: plain syscalls; the pid is the (still same) group leader.
                unsafe {
                    libc::kill(-(o.pid as i32), libc::SIGKILL);
                    libc::kill(o.pid as i32, libc::SIGKILL);
                }
                warn!(task = %o.key, attempt = o.attempt, pid = o.pid, "killed orphaned task");
                "the agent restarted while the task ran; its processes were killed".to_string()
            } else {
                "the agent restarted while the task ran; the process was gone".to_string()
            };
            TaskReport {
                key: o.key,
                attempt: o.attempt,
                outcome: TaskOutcome::Lost,
                exit_code: None,
                signal: alive.then_some(libc::SIGKILL),
                start_ms: 0,
                end_ms: now,
                message,
            }
        })
        .collect()
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
