//! Reading a task's output files for remote followers (issue 10 §6).
//!
//! The head asks "chunk of stream S of task T from offset O, at most N bytes"; this module
//! answers it. Only paths the agent itself registered when it opened them for a task can be
//! read: a request names a task key and a stream, never a path, so a compromised or buggy head
//! cannot make the agent read arbitrary files. Generic by task key + stream so `srun` stdio
//! can reuse it.
//!
//! Registering costs one map insert per launched task and nothing else: files are only opened
//! when someone reads them, so following output does not slow task throughput.
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rudel_core::TaskKey;

/// Upper bound of one chunk: keeps agent memory bounded whatever the requester asks for.
pub const MAX_CHUNK: u64 = 1 << 20;

/// Most tasks whose files are remembered; the oldest are forgotten first. Bounds the agent's
/// memory on a node that runs millions of tasks (about 200 bytes per entry).
pub const MAX_TASKS: usize = 100_000;

/// Output paths starting with this prefix (absolute, so the head's pattern resolution keeps
/// them as they are) are put by the agent into `<data dir>/output/`: `rudel run` uses it so
/// its output never lands in a predictable directory on a shared `/tmp`.
pub const AGENT_DIR_PREFIX: &str = "/@rudel-agent-output/";

/// Sub-directory of the agent's data directory holding `rudel run` output.
pub const AGENT_OUTPUT_DIR: &str = "output";

/// Which output stream of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("task {0} is not known on this node (it never ran here, or the agent restarted since)")]
    UnknownTask(TaskKey),
    #[error("task {0} has no separate {1:?} file (discarded, or written into its output file)")]
    NoSuchStream(TaskKey, Stream),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("output name {0:?} after {AGENT_DIR_PREFIX} must be one plain file name")]
pub struct BadAgentPath(pub String);

/// Maps a launch's output path to where the file goes on this node: paths under
/// [`AGENT_DIR_PREFIX`] move into `<data_dir>/output/`, others stay as they are.
pub fn place(path: PathBuf, data_dir: &Path) -> Result<PathBuf, BadAgentPath> {
    let Some(name) = path.to_str().and_then(|p| p.strip_prefix(AGENT_DIR_PREFIX)) else {
        return Ok(path);
    };
    // One plain component only: `..` or a slash would escape the output directory.
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(BadAgentPath(name.to_owned()));
    }
    Ok(data_dir.join(AGENT_OUTPUT_DIR).join(name))
}

/// One chunk of a file. `size` is the file's length when read, so a follower knows whether
/// it has drained the file (offset + data.len() == size).
#[derive(Debug, PartialEq, Eq)]
pub struct Chunk {
    pub data: Vec<u8>,
    pub size: u64,
}

#[derive(Debug, Clone, Default)]
struct TaskFiles {
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
}

#[derive(Default)]
struct Inner {
    files: HashMap<TaskKey, TaskFiles>,
    /// Registration order, for forgetting the oldest beyond `cap`.
    order: VecDeque<TaskKey>,
}

/// Paths the agent opened for its tasks, by task key and stream.
pub struct OutputFiles {
    inner: Mutex<Inner>,
    cap: usize,
    /// Files under here (the agent's output directory) are deleted on release.
    owned_dir: Option<PathBuf>,
}

impl Default for OutputFiles {
    fn default() -> Self {
        OutputFiles::new(None, MAX_TASKS)
    }
}

impl OutputFiles {
    /// `owned_dir`: files below it belong to the agent and are deleted when released.
    pub fn new(owned_dir: Option<PathBuf>, cap: usize) -> Self {
        OutputFiles {
            inner: Mutex::new(Inner::default()),
            cap: cap.max(1),
            owned_dir,
        }
    }

    pub fn register(&self, task: TaskKey, stream: Stream, path: PathBuf) {
        let mut g = self.lock();
        if !g.files.contains_key(&task) {
            g.order.push_back(task);
        }
        let e = g.files.entry(task).or_default();
        match stream {
            Stream::Stdout => e.stdout = Some(path),
            Stream::Stderr => e.stderr = Some(path),
        }
        while g.files.len() > self.cap {
            let Some(old) = g.order.pop_front() else { break };
            g.files.remove(&old);
        }
    }

    /// Forget a task's files; delete those in the agent's own output directory.
    pub fn release(&self, task: TaskKey) {
        let gone = {
            let mut g = self.lock();
            g.order.retain(|k| *k != task);
            g.files.remove(&task)
        };
        let Some(f) = gone else { return };
        for p in [f.stdout, f.stderr].into_iter().flatten() {
            if self.owned_dir.as_ref().is_some_and(|d| p.starts_with(d)) {
                if let Err(e) = std::fs::remove_file(&p) {
                    tracing::debug!(path = %p.display(), error = %e, "cannot remove delivered output");
                }
            }
        }
    }

    pub fn read_chunk(&self, task: TaskKey, stream: Stream, offset: u64, max: u64) -> Result<Chunk, OutputError> {
        let path = {
            let g = self.lock();
            let f = g.files.get(&task).ok_or(OutputError::UnknownTask(task))?;
            match stream {
                Stream::Stdout => f.stdout.clone(),
                Stream::Stderr => f.stderr.clone(),
            }
        }
        .ok_or(OutputError::NoSuchStream(task, stream))?;
        read_at(&path, offset, max.min(MAX_CHUNK))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the map consistent (single inserts/removes),
        // so a poisoned lock must not stop output delivery.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Read at most `max` bytes at `offset`; an offset at or beyond EOF yields an empty chunk
/// (the file may still grow while the task runs), not an error. A file not created yet (the
/// task is about to start) reads as empty too.
fn read_at(path: &Path, offset: u64, max: u64) -> Result<Chunk, OutputError> {
    let io = |source| OutputError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Chunk {
                data: Vec::new(),
                size: 0,
            })
        }
        Err(e) => return Err(io(e)),
    };
    let size = f.metadata().map_err(io)?.len();
    if offset >= size {
        return Ok(Chunk { data: Vec::new(), size });
    }
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut data = Vec::new();
    f.take(max.min(size - offset)).read_to_end(&mut data).map_err(io)?;
    Ok(Chunk { data, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T7: TaskKey = TaskKey { job: 7, index: 0 };

    fn setup(content: &[u8]) -> (tempfile::TempDir, OutputFiles) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        std::fs::write(&p, content).unwrap();
        let files = OutputFiles::default();
        files.register(T7, Stream::Stdout, p);
        (dir, files)
    }

    #[test]
    fn reads_chunks_within_bounds() {
        let (_d, f) = setup(b"hello world");
        let c = f.read_chunk(T7, Stream::Stdout, 0, 5).unwrap();
        assert_eq!(c.data, b"hello");
        assert_eq!(c.size, 11);
        let c = f.read_chunk(T7, Stream::Stdout, 6, 100).unwrap();
        assert_eq!(c.data, b"world");
    }

    #[test]
    fn caps_chunk_size() {
        let (_d, f) = setup(&vec![b'x'; (MAX_CHUNK + 10) as usize]);
        let c = f.read_chunk(T7, Stream::Stdout, 0, u64::MAX).unwrap();
        assert_eq!(c.data.len() as u64, MAX_CHUNK);
        let c = f.read_chunk(T7, Stream::Stdout, MAX_CHUNK, u64::MAX).unwrap();
        assert_eq!(c.data.len(), 10);
    }

    #[test]
    fn offset_beyond_eof_is_empty() {
        let (_d, f) = setup(b"abc");
        let c = f.read_chunk(T7, Stream::Stdout, 3, 10).unwrap();
        assert!(c.data.is_empty());
        let c = f.read_chunk(T7, Stream::Stdout, 1000, 10).unwrap();
        assert!(c.data.is_empty());
        assert_eq!(c.size, 3);
    }

    #[test]
    fn file_not_created_yet_reads_empty() {
        let d = tempfile::tempdir().unwrap();
        let f = OutputFiles::default();
        f.register(T7, Stream::Stdout, d.path().join("later"));
        assert_eq!(
            f.read_chunk(T7, Stream::Stdout, 0, 10).unwrap(),
            Chunk { data: vec![], size: 0 }
        );
    }

    #[test]
    fn unknown_task_or_stream_is_refused() {
        let (_d, f) = setup(b"abc");
        assert!(matches!(
            f.read_chunk(TaskKey { job: 8, index: 0 }, Stream::Stdout, 0, 10),
            Err(OutputError::UnknownTask(..))
        ));
        assert!(matches!(
            f.read_chunk(T7, Stream::Stderr, 0, 10),
            Err(OutputError::NoSuchStream(..))
        ));
        f.release(T7);
        assert!(matches!(
            f.read_chunk(T7, Stream::Stdout, 0, 10),
            Err(OutputError::UnknownTask(..))
        ));
    }

    #[test]
    fn oldest_tasks_are_forgotten_beyond_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let f = OutputFiles::new(None, 2);
        for i in 0..3 {
            f.register(
                TaskKey { job: 1, index: i },
                Stream::Stdout,
                d.path().join(format!("{i}")),
            );
        }
        let k = |i| TaskKey { job: 1, index: i };
        assert!(matches!(
            f.read_chunk(k(0), Stream::Stdout, 0, 1),
            Err(OutputError::UnknownTask(..))
        ));
        assert!(f.read_chunk(k(1), Stream::Stdout, 0, 1).is_ok());
        assert!(f.read_chunk(k(2), Stream::Stdout, 0, 1).is_ok());
    }

    #[test]
    fn release_deletes_only_files_in_the_agent_dir() {
        let d = tempfile::tempdir().unwrap();
        let owned = d.path().join(AGENT_OUTPUT_DIR);
        std::fs::create_dir_all(&owned).unwrap();
        let mine = owned.join("7_0.out");
        let users = d.path().join("user.err");
        std::fs::write(&mine, b"x").unwrap();
        std::fs::write(&users, b"y").unwrap();
        let f = OutputFiles::new(Some(owned), 10);
        f.register(T7, Stream::Stdout, mine.clone());
        f.register(T7, Stream::Stderr, users.clone());
        f.release(T7);
        assert!(!mine.exists());
        assert!(users.exists(), "a user's batch output file must stay");
    }

    #[test]
    fn agent_dir_paths_are_placed_in_the_data_dir_and_cannot_escape() {
        let data = Path::new("/var/lib/rudel");
        assert_eq!(
            place(PathBuf::from("/@rudel-agent-output/5_0.out"), data).unwrap(),
            data.join("output/5_0.out")
        );
        assert_eq!(
            place(PathBuf::from("/home/u/x.out"), data).unwrap(),
            PathBuf::from("/home/u/x.out")
        );
        for bad in ["..", "a/../../etc", ""] {
            assert!(place(PathBuf::from(format!("{AGENT_DIR_PREFIX}{bad}")), data).is_err());
        }
    }
}
