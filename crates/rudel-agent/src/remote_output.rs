//! Answering the head's `ReadOutput` requests over the agent's session stream.
use std::path::Path;
use std::sync::Arc;

use rudel_core::TaskKey;
use rudel_proto::v1 as pb;
use rudel_proto::v1::agent_message::Msg as AgentMsg;
use tokio::sync::mpsc;

use crate::output::{OutputError, OutputFiles, Stream, AGENT_OUTPUT_DIR, MAX_TASKS};

/// Prepares `<data_dir>/output` (where `rudel run` output lives) and the registry of output
/// files. Files left there by an earlier agent process are deleted: their tasks died with it
/// and the registry that could name them is gone, so nobody can read them any more.
pub fn open_output_dir(data_dir: &Path) -> std::io::Result<OutputFiles> {
    let dir = data_dir.join(AGENT_OUTPUT_DIR);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot clear old run output"),
    }
    std::fs::create_dir_all(&dir)?;
    Ok(OutputFiles::new(Some(dir), MAX_TASKS))
}

/// Reads the chunk off the session loop (disk I/O must not delay launches or heartbeats) and
/// sends the answer on the session stream.
pub fn answer(files: Arc<OutputFiles>, r: pb::ReadOutput, tx: mpsc::UnboundedSender<pb::AgentMessage>) {
    tokio::task::spawn_blocking(move || {
        let chunk = handle(&files, &r);
        // The session may have ended meanwhile; the head then answers the client itself.
        let _ = tx.send(pb::AgentMessage {
            msg: Some(AgentMsg::OutputChunk(chunk)),
        });
    });
}

/// One request, answered from the registry: a task key and a stream, never a path.
pub fn handle(files: &OutputFiles, r: &pb::ReadOutput) -> pb::OutputChunk {
    let key = TaskKey {
        job: r.job_id,
        index: r.index,
    };
    if r.release {
        files.release(key);
        return pb::OutputChunk {
            id: r.id,
            ..Default::default()
        };
    }
    let stream = match pb::OutputStream::try_from(r.stream) {
        Ok(pb::OutputStream::Stderr) => Stream::Stderr,
        _ => Stream::Stdout,
    };
    match files.read_chunk(key, stream, r.offset, u64::from(r.max_bytes)) {
        Ok(c) => pb::OutputChunk {
            id: r.id,
            data: c.data,
            size: c.size,
            ..Default::default()
        },
        Err(e) => pb::OutputChunk {
            id: r.id,
            unknown_task: matches!(e, OutputError::UnknownTask(_)),
            error: e.to_string(),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(job: u64, offset: u64, max: u32) -> pb::ReadOutput {
        pb::ReadOutput {
            id: 9,
            job_id: job,
            index: 0,
            stream: pb::OutputStream::Stdout as i32,
            offset,
            max_bytes: max,
            release: false,
        }
    }

    #[test]
    fn answers_by_task_key_with_the_request_id() {
        let d = tempfile::tempdir().unwrap();
        let files = open_output_dir(d.path()).unwrap();
        let p = d.path().join(AGENT_OUTPUT_DIR).join("3_0.out");
        std::fs::write(&p, b"0123456789").unwrap();
        files.register(TaskKey { job: 3, index: 0 }, Stream::Stdout, p.clone());
        let c = handle(&files, &req(3, 4, 3));
        assert_eq!((c.id, c.data.as_slice(), c.size), (9, &b"456"[..], 10));
        let c = handle(&files, &req(3, 50, 3));
        assert!(c.data.is_empty() && c.error.is_empty());
        let c = handle(&files, &req(4, 0, 3));
        assert!(c.unknown_task && c.error.contains("not known"), "{c:?}");
        let c = handle(
            &files,
            &pb::ReadOutput {
                release: true,
                ..req(3, 0, 0)
            },
        );
        assert!(c.error.is_empty());
        assert!(!p.exists(), "released run output is deleted");
        assert!(handle(&files, &req(3, 0, 3)).unknown_task);
    }

    #[test]
    fn old_run_output_is_cleared_at_start() {
        let d = tempfile::tempdir().unwrap();
        let old = d.path().join(AGENT_OUTPUT_DIR).join("1_0.out");
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::write(&old, b"x").unwrap();
        open_output_dir(d.path()).unwrap();
        assert!(!old.exists());
        assert!(d.path().join(AGENT_OUTPUT_DIR).is_dir());
    }
}
