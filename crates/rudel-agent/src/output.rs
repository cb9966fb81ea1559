//! Reading a task's output files for remote followers (issue 10 §6).
//!
//! The head asks "chunk of stream S of task T from offset O, at most N bytes"; this module
//! answers it. Only paths the agent itself registered when it opened them for a task can be
//! read: a request names a task key and a stream, never a path, so a compromised or buggy head
//! cannot make the agent read arbitrary files. Generic by task key + stream so `srun` stdio
//! can reuse it.
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Upper bound of one chunk: keeps agent memory bounded whatever the requester asks for.
pub const MAX_CHUNK: u64 = 1 << 20;

/// Which output stream of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("task {0} has no {1:?} file on this node")]
    UnknownTask(String, Stream),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One chunk of a file. `size` is the file's length when read, so a follower knows whether
/// it has drained the file (offset + data.len() == size).
#[derive(Debug, PartialEq, Eq)]
pub struct Chunk {
    pub data: Vec<u8>,
    pub size: u64,
}

/// Paths the agent opened for its tasks, by (task key, stream).
#[derive(Default)]
pub struct OutputFiles {
    files: Mutex<HashMap<(String, Stream), PathBuf>>,
}

impl OutputFiles {
    pub fn register(&self, task: &str, stream: Stream, path: PathBuf) {
        self.lock().insert((task.to_owned(), stream), path);
    }

    /// Forget a task's files (job removed / output delivered).
    pub fn forget(&self, task: &str) {
        self.lock().retain(|(t, _), _| t != task);
    }

    pub fn read_chunk(&self, task: &str, stream: Stream, offset: u64, max: u64) -> Result<Chunk, OutputError> {
        let path = self
            .lock()
            .get(&(task.to_owned(), stream))
            .cloned()
            .ok_or_else(|| OutputError::UnknownTask(task.to_owned(), stream))?;
        read_at(&path, offset, max.min(MAX_CHUNK))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Stream), PathBuf>> {
        // A panic while holding this lock leaves the map consistent (single inserts/removes),
        // so a poisoned lock must not stop output delivery.
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Read at most `max` bytes at `offset`; an offset at or beyond EOF yields an empty chunk
/// (the file may still grow while the task runs), not an error.
fn read_at(path: &Path, offset: u64, max: u64) -> Result<Chunk, OutputError> {
    let io = |source| OutputError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
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

    fn setup(content: &[u8]) -> (tempfile::TempDir, OutputFiles) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        std::fs::write(&p, content).unwrap();
        let files = OutputFiles::default();
        files.register("7.0", Stream::Stdout, p);
        (dir, files)
    }

    #[test]
    fn reads_chunks_within_bounds() {
        let (_d, f) = setup(b"hello world");
        let c = f.read_chunk("7.0", Stream::Stdout, 0, 5).unwrap();
        assert_eq!(c.data, b"hello");
        assert_eq!(c.size, 11);
        let c = f.read_chunk("7.0", Stream::Stdout, 6, 100).unwrap();
        assert_eq!(c.data, b"world");
    }

    #[test]
    fn caps_chunk_size() {
        let (_d, f) = setup(&vec![b'x'; (MAX_CHUNK + 10) as usize]);
        let c = f.read_chunk("7.0", Stream::Stdout, 0, u64::MAX).unwrap();
        assert_eq!(c.data.len() as u64, MAX_CHUNK);
    }

    #[test]
    fn offset_beyond_eof_is_empty() {
        let (_d, f) = setup(b"abc");
        let c = f.read_chunk("7.0", Stream::Stdout, 3, 10).unwrap();
        assert!(c.data.is_empty());
        let c = f.read_chunk("7.0", Stream::Stdout, 1000, 10).unwrap();
        assert!(c.data.is_empty());
        assert_eq!(c.size, 3);
    }

    #[test]
    fn unknown_task_or_stream_is_refused() {
        let (_d, f) = setup(b"abc");
        assert!(matches!(
            f.read_chunk("8.0", Stream::Stdout, 0, 10),
            Err(OutputError::UnknownTask(..))
        ));
        assert!(matches!(
            f.read_chunk("7.0", Stream::Stderr, 0, 10),
            Err(OutputError::UnknownTask(..))
        ));
        f.forget("7.0");
        assert!(f.read_chunk("7.0", Stream::Stdout, 0, 10).is_err());
    }
}
