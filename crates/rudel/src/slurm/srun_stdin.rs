//! srun's stdin, forwarded to the step's tasks (`--input`, docs/parallel-jobs.md).
//!
//! A thread reads stdin in chunks (a blocking read: tokio's stdin would keep srun from
//! exiting while a terminal waits for a line nobody reads); srun sends each chunk to
//! its agent with its offset in the stream. Each node that runs a reading task
//! acknowledges how far it has written; srun keeps at most [`WINDOW`] bytes beyond the
//! lowest acknowledgement of the nodes whose reading tasks still run, so a task that
//! does not read stops srun reading, not the agents' memory.
use std::collections::HashMap;
use std::io::Read;

use tokio::sync::mpsc;

use super::SlurmError;

/// Bytes read from stdin at a time.
const CHUNK: usize = 64 * 1024;
/// Most bytes sent and not yet written into every reading task.
const WINDOW: u64 = 1024 * 1024;

/// `--input`: which tasks read srun's stdin.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Input {
    /// Every task (Slurm's default).
    #[default]
    All,
    /// None: every task reads `/dev/null`.
    None,
    /// One task, by its rank.
    Rank(u32),
}

impl Input {
    pub(super) fn parse(v: &str) -> Result<Input, SlurmError> {
        match v {
            "all" => Ok(Input::All),
            "none" => Ok(Input::None),
            n if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n
                .parse()
                .map(Input::Rank)
                .map_err(|_| SlurmError::msg(format!("--input={n}: not a task id"))),
            f => Err(SlurmError::msg(format!(
                "--input={f}: reading stdin from a file on the nodes is not supported by rudel's \
                 srun (it forwards its own stdin: --input=all, a task id, or none); redirect in \
                 the command instead: srun sh -c 'prog < {f}'. Nothing was run"
            ))),
        }
    }

    /// The value for the step request.
    pub(super) fn wire(self) -> String {
        match self {
            Input::All => "all".into(),
            Input::None => "none".into(),
            Input::Rank(r) => r.to_string(),
        }
    }

    fn reads(self, rank: u32) -> bool {
        match self {
            Input::All => true,
            Input::None => false,
            Input::Rank(r) => r == rank,
        }
    }
}

/// Reads stdin on its own thread into a channel of one chunk (`None` = end of input).
/// The thread is not joined: it may block in `read` on a terminal for ever, and the
/// process exits without it.
fn reader() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(1);
    let spawned = std::thread::Builder::new().name("srun-stdin".into()).spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match stdin.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            buf.truncate(n);
            if tx.blocking_send((n > 0).then_some(buf)).is_err() || n == 0 {
                return;
            }
        }
    });
    if spawned.is_err() {
        // Without a reader the tasks would wait for input for ever: they get EOF.
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(None);
        return rx;
    }
    rx
}

/// Where the forwarding of stdin stands.
pub(super) struct Forward {
    input: Input,
    chunks: Option<mpsc::Receiver<Option<Vec<u8>>>>,
    /// Bytes sent so far.
    sent: u64,
    done: bool,
    /// Per node with reading tasks still running: how many, and how far it has written.
    nodes: HashMap<String, (u32, u64)>,
}

impl Forward {
    pub(super) fn new(input: Input) -> Forward {
        Forward {
            input,
            chunks: None,
            sent: 0,
            done: input == Input::None,
            nodes: HashMap::new(),
        }
    }

    /// The step started with `task_nodes` (node of each rank): reading begins.
    pub(super) fn started(&mut self, task_nodes: &[String]) {
        self.count_readers(task_nodes);
        if !self.done {
            self.chunks = Some(reader());
        }
    }

    fn count_readers(&mut self, task_nodes: &[String]) {
        for (rank, node) in task_nodes.iter().enumerate() {
            if self.input.reads(rank as u32) {
                self.nodes.entry(node.clone()).or_default().0 += 1;
            }
        }
        if self.nodes.is_empty() {
            self.done = true;
        }
    }

    pub(super) fn acked(&mut self, node: &str, offset: u64) {
        if let Some((_, at)) = self.nodes.get_mut(node) {
            *at = (*at).max(offset);
        }
    }

    /// Task `rank` on `node` ended: its node no longer holds the window back for it.
    pub(super) fn ended(&mut self, rank: u32, node: &str) {
        if !self.input.reads(rank) {
            return;
        }
        if let Some((left, _)) = self.nodes.get_mut(node) {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.nodes.remove(node);
            }
        }
    }

    /// Whether srun may read and send the next chunk now.
    fn open(&self) -> bool {
        let low = self.nodes.values().map(|(_, at)| *at).min().unwrap_or(self.sent);
        !self.done && self.chunks.is_some() && self.sent.saturating_sub(low) < WINDOW
    }

    /// The next control line to send (a chunk, or the end of input); pending while the
    /// window is full or everything was sent.
    pub(super) async fn next_line(&mut self) -> String {
        use base64::Engine;
        if !self.open() {
            return std::future::pending().await;
        }
        let Some(rx) = self.chunks.as_mut() else {
            return std::future::pending().await;
        };
        let chunk = rx.recv().await.flatten();
        let offset = self.sent;
        let v = match chunk {
            Some(data) => {
                self.sent += data.len() as u64;
                serde_json::json!({
                    "op": "stdin",
                    "offset": offset,
                    "data": base64::engine::general_purpose::STANDARD.encode(&data),
                })
            }
            None => {
                self.done = true;
                self.chunks = None;
                serde_json::json!({"op": "stdin", "offset": offset, "eof": true})
            }
        };
        format!("{v}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_modes_parse_and_files_are_refused() {
        assert_eq!(Input::parse("all").unwrap(), Input::All);
        assert_eq!(Input::parse("none").unwrap(), Input::None);
        assert_eq!(Input::parse("3").unwrap(), Input::Rank(3));
        let e = Input::parse("in.txt").unwrap_err();
        assert!(e.lines[0].contains("not supported"), "{:?}", e.lines);
    }

    #[test]
    fn the_window_is_held_by_the_slowest_node_with_running_readers() {
        let mut f = Forward::new(Input::All);
        f.nodes.insert("a".into(), (2, 0));
        f.nodes.insert("b".into(), (1, 0));
        f.chunks = Some(mpsc::channel(1).1);
        f.sent = WINDOW;
        assert!(!f.open(), "a full window must stop reading");
        f.acked("a", WINDOW);
        assert!(!f.open(), "b has not written anything yet");
        f.ended(2, "b");
        assert!(f.open(), "b's only reading task ended");
        f.ended(0, "a");
        f.acked("a", 0);
        assert!(f.open(), "acks never move backwards");
    }

    #[test]
    fn one_reading_rank_counts_only_its_node() {
        let mut f = Forward::new(Input::Rank(1));
        f.count_readers(&["a".into(), "b".into()]);
        assert_eq!(f.nodes.keys().collect::<Vec<_>>(), ["b"]);
        assert!(!f.done);
        let mut none = Forward::new(Input::Rank(5));
        none.count_readers(&["a".into()]);
        assert!(none.done, "no task reads: nothing is read");
    }
}
