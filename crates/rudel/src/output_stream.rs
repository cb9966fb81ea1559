//! Reading task output over the network (client -> leader -> the task's agent), for
//! `rudel logs [-f]` and `rudel run`: no filesystem shared with the node is needed.
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rudel_proto::v1 as pb;
use rudel_proto::v1::rudel_client::RudelClient;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::{client, Failure};

/// Bytes asked for per read (the head and agent cap it at 1 MiB too): memory stays bounded
/// whatever the file's size.
const CHUNK: u32 = 1 << 20;
/// Pause between reads that found nothing new, while the task runs / waits to start.
const RUNNING_POLL: Duration = Duration::from_millis(200);
const PENDING_POLL: Duration = Duration::from_millis(1000);
/// How long a follower keeps retrying a node it cannot reach before it gives up with the
/// head's error (the head itself declares a silent node lost after its node timeout).
const UNREACHABLE_GRACE: Duration = Duration::from_secs(30);
/// One read, including finding the leader again after a failover.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// How far a copy got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copied {
    /// The task has not started (only without follow).
    Pending,
    /// Everything written so far was copied; the task still runs (only without follow).
    Running,
    /// The task ended and its file was drained.
    Ended,
}

/// A connection to the leader, re-established when leadership moves.
pub struct Reader {
    head: String,
    client: Option<RudelClient<Channel>>,
}

/// The head could not reach the task's node (as opposed to the head being unreachable).
fn node_unreachable(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unavailable && s.message().starts_with("cannot read the output of task")
}

impl Reader {
    pub fn new(head: &str, client: Option<RudelClient<Channel>>) -> Reader {
        Reader {
            head: head.to_string(),
            client,
        }
    }

    /// One read on the leader; follows a leader change or a broken connection.
    pub async fn read(&mut self, req: pb::ReadOutputRequest) -> Result<pb::ReadOutputResponse, tonic::Status> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            let mut c = match self.client.take() {
                Some(c) => c,
                None => client::connect(&self.head)
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?,
            };
            let s = match tokio::time::timeout_at(deadline, c.read_output(req)).await {
                Ok(Ok(r)) => {
                    self.client = Some(c);
                    return Ok(r.into_inner());
                }
                Ok(Err(s)) => s,
                Err(_) => tonic::Status::deadline_exceeded("no answer from the head in time"),
            };
            let retry = !node_unreachable(&s)
                && (client::is_not_leader(&s) || matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown));
            if !retry || Instant::now() >= deadline {
                if !client::is_not_leader(&s) {
                    self.client = Some(c);
                }
                return Err(s);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Copies stream `stderr` of task `index` of `job` to `out`, from the start; with `follow`,
/// until the task ended and the file is drained.
pub async fn copy_task(
    reader: &mut Reader,
    job: u64,
    index: u32,
    stderr: bool,
    follow: bool,
    mut wake: Option<tokio::sync::watch::Receiver<u64>>,
    out: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<Copied, Failure> {
    // Polls are cut short by job updates (`wake`), so a follower sees a task's end at once
    // instead of one poll interval later (`rudel run -- /bin/true` stays a ~10 ms round trip).
    let mut offset = 0u64;
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let req = pb::ReadOutputRequest {
            job_id: job,
            index,
            stderr,
            offset,
            max_bytes: CHUNK,
            release: false,
        };
        let r = match reader.read(req).await {
            Ok(r) => r,
            Err(s) if follow && node_unreachable(&s) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_GRACE {
                    return Err(client::failure(s));
                }
                tokio::time::sleep(PENDING_POLL).await;
                continue;
            }
            Err(s) => return Err(client::failure(s)),
        };
        unreachable_since = None;
        if !r.data.is_empty() {
            out(&r.data);
            offset += r.data.len() as u64;
            continue;
        }
        // Nothing new: "ended" was decided before the agent read, so an empty read of an
        // ended task means the file is complete.
        match (r.task_state.as_str(), follow) {
            ("ended", _) => return Ok(Copied::Ended),
            ("pending", false) => return Ok(Copied::Pending),
            (_, false) => return Ok(Copied::Running),
            ("pending", true) => pause(&mut wake, PENDING_POLL).await,
            _ => pause(&mut wake, RUNNING_POLL).await,
        }
    }
}

/// Waits `d`, or less if a job update arrives on `wake`.
async fn pause(wake: &mut Option<tokio::sync::watch::Receiver<u64>>, d: Duration) {
    match wake {
        Some(w) => {
            if tokio::time::timeout(d, w.changed()).await.is_ok_and(|r| r.is_err()) {
                // The watcher is gone (job done or lost): plain polling from here on.
                *wake = None;
            }
        }
        None => tokio::time::sleep(d).await,
    }
}

/// Tells the task's agent the output was delivered (deletes `rudel run`'s files there).
pub async fn release(reader: &mut Reader, job: u64, index: u32) {
    let req = pb::ReadOutputRequest {
        job_id: job,
        index,
        release: true,
        ..Default::default()
    };
    if let Err(s) = reader.read(req).await {
        tracing::debug!(error = %s.message(), job, index, "cannot release delivered output");
    }
}

/// Where copied bytes go: straight through, or line by line with the array index in front
/// (`[7] line`) when several tasks are followed at once, so their lines do not mix.
pub struct Sink {
    to_stderr: bool,
    prefix: Option<String>,
    partial: Vec<u8>,
    lock: Arc<Mutex<()>>,
}

impl Sink {
    pub fn new(to_stderr: bool, index: Option<u32>, lock: Arc<Mutex<()>>) -> Sink {
        Sink {
            to_stderr,
            prefix: index.map(|i| format!("[{i}] ")),
            partial: Vec::new(),
            lock,
        }
    }

    pub fn write(&mut self, data: &[u8]) {
        let Some(prefix) = &self.prefix else {
            return self.emit(data.to_vec());
        };
        self.partial.extend_from_slice(data);
        let Some(last_nl) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let rest = self.partial.split_off(last_nl + 1);
        let done = std::mem::replace(&mut self.partial, rest);
        self.emit(prefix_lines(prefix, &done));
    }

    /// Writes a last line that had no newline.
    pub fn finish(&mut self) {
        if self.partial.is_empty() {
            return;
        }
        let mut last = std::mem::take(&mut self.partial);
        last.push(b'\n');
        let p = self.prefix.clone().unwrap_or_default();
        self.emit(prefix_lines(&p, &last));
    }

    fn emit(&self, bytes: Vec<u8>) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // A closed pipe (`| head`) is not an error worth reporting per chunk.
        if self.to_stderr {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(&bytes);
            let _ = e.flush();
        } else {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(&bytes);
            let _ = o.flush();
        }
    }
}

/// `prefix` before each line of `text` (which ends with a newline).
fn prefix_lines(prefix: &str, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + prefix.len() * 4);
    for line in text.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_every_line() {
        assert_eq!(prefix_lines("[3] ", b"a\nb\n"), b"[3] a\n[3] b\n");
        assert_eq!(prefix_lines("[3] ", b"\n"), b"[3] \n");
    }

    #[test]
    fn node_unreachable_is_told_apart_from_a_head_problem() {
        assert!(node_unreachable(&tonic::Status::unavailable(
            "cannot read the output of task 4_0: n1: the node is not connected"
        )));
        assert!(!node_unreachable(&tonic::Status::unavailable("connection refused")));
    }
}
