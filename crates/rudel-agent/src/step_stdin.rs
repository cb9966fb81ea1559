//! srun's stdin for this node's tasks of a step (`srun --input`, docs/parallel-jobs.md).
//!
//! Each task that reads it gets the read end of a pipe as fd 0. One feeder per step
//! holds the write ends, writes each chunk the head relays into every one of them in
//! order, then acknowledges the offset it reached. srun sends at most a window of bytes
//! beyond the lowest acknowledgement of the step's nodes, so a task that does not read
//! stalls srun rather than filling memory here. A task that ended (broken pipe) is
//! dropped from its feeder; chunks for a step with no feeder here are acknowledged at
//! once, so srun never waits for a node that has nothing to feed.
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use rudel_proto::v1 as pb;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::task::JoinHandle;

/// A pipe for a task's stdin: (read end for the task, write end for the feeder). Both
/// close on exec, so no other task inherits a write end (its stdin would never see EOF);
/// the spawn dup2's the read end onto fd 0, which clears the flag there only.
pub fn pipe_for_task() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new descriptors we now own.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Only the feeder's end is non-blocking (a task reading a non-blocking stdin would
    // see EAGAIN); the flag belongs to each end's own open file description.
    // SAFETY: plain fcntl on a descriptor we own.
    let ok = unsafe {
        let fl = libc::fcntl(wr.as_raw_fd(), libc::F_GETFL);
        fl >= 0 && libc::fcntl(wr.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) == 0
    };
    if !ok {
        return Err(std::io::Error::last_os_error());
    }
    Ok((rd, wr))
}

/// One chunk, as relayed.
struct Chunk {
    offset: u64,
    data: Vec<u8>,
    eof: bool,
}

/// A step's feeder: its queue and its task (aborted when dropped, which closes the
/// pipes: the tasks then read EOF).
struct Feeder {
    queue: UnboundedSender<Chunk>,
    task: JoinHandle<()>,
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The feeders of this node's steps.
pub struct Feeders {
    by_step: HashMap<(u64, u32), Feeder>,
    node: String,
    acks: UnboundedSender<pb::StepStdinAck>,
}

impl Feeders {
    /// `acks` is where acknowledgements go (the session sends them to the head).
    pub fn new(node: String, acks: UnboundedSender<pb::StepStdinAck>) -> Feeders {
        Feeders {
            by_step: HashMap::new(),
            node,
            acks,
        }
    }

    /// Starts feeding step (job, step) into `writers` (write ends of its tasks' pipes).
    /// Must run inside the agent's runtime.
    pub fn start(&mut self, job: u64, step: u32, writers: Vec<OwnedFd>) {
        let pipes: Vec<pipe::Sender> = writers
            .into_iter()
            .filter_map(|fd| match pipe::Sender::from_owned_fd(fd) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(job, step, error = %e, "cannot use a step task's stdin pipe");
                    None
                }
            })
            .collect();
        let (queue, mut rx) = unbounded_channel::<Chunk>();
        let (acks, node) = (self.acks.clone(), self.node.clone());
        let task = tokio::spawn(async move {
            let mut pipes: Vec<Option<pipe::Sender>> = pipes.into_iter().map(Some).collect();
            while let Some(c) = rx.recv().await {
                for slot in pipes.iter_mut() {
                    if let Some(p) = slot {
                        // Broken pipe: the task ended or closed its stdin; it gets no more.
                        if p.write_all(&c.data).await.is_err() {
                            *slot = None;
                        }
                    }
                }
                let offset = c.offset + c.data.len() as u64;
                let _ = acks.send(pb::StepStdinAck {
                    job,
                    step,
                    node: node.clone(),
                    offset,
                });
                if c.eof {
                    break;
                }
            }
            // Dropping the write ends: the tasks read EOF.
        });
        self.by_step.insert((job, step), Feeder { queue, task });
    }

    /// A chunk from the head: queued for the step's feeder, or acknowledged at once when
    /// no task here reads it.
    pub fn feed(&mut self, s: pb::StepStdin) {
        let key = (s.job, s.step);
        let chunk = Chunk {
            offset: s.offset,
            data: s.data,
            eof: s.eof,
        };
        let unfed = match self.by_step.get(&key) {
            Some(f) => f.queue.send(chunk).err().map(|e| e.0),
            None => Some(chunk),
        };
        if let Some(c) = unfed {
            let _ = self.acks.send(pb::StepStdinAck {
                job: s.job,
                step: s.step,
                node: self.node.clone(),
                offset: c.offset + c.data.len() as u64,
            });
        }
    }

    /// The step has no task left here: its pipes close.
    pub fn stop(&mut self, job: u64, step: u32) {
        self.by_step.remove(&(job, step));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn chunk(offset: u64, data: &[u8], eof: bool) -> pb::StepStdin {
        pb::StepStdin {
            job: 1,
            step: 0,
            offset,
            data: data.to_vec(),
            eof,
        }
    }

    #[tokio::test]
    async fn chunks_reach_every_reader_in_order_then_eof_and_each_is_acknowledged() {
        let (acks, mut acked) = unbounded_channel();
        let mut f = Feeders::new("n1".into(), acks);
        let (r1, w1) = pipe_for_task().unwrap();
        let (r2, w2) = pipe_for_task().unwrap();
        f.start(1, 0, vec![w1, w2]);
        f.feed(chunk(0, b"hello ", false));
        f.feed(chunk(6, b"world\n", true));
        let offsets: Vec<u64> = [acked.recv().await.unwrap(), acked.recv().await.unwrap()]
            .iter()
            .map(|a| a.offset)
            .collect();
        assert_eq!(offsets, [6, 12]);
        for r in [r1, r2] {
            let mut s = String::new();
            // Blocking read to EOF: the read end is blocking, as a task sees it.
            std::fs::File::from(r).read_to_string(&mut s).unwrap();
            assert_eq!(s, "hello world\n");
        }
    }

    #[tokio::test]
    async fn a_reader_that_is_gone_or_a_step_without_readers_never_stalls_the_stream() {
        let (acks, mut acked) = unbounded_channel();
        let mut f = Feeders::new("n1".into(), acks);
        let (r1, w1) = pipe_for_task().unwrap();
        drop(r1);
        f.start(1, 0, vec![w1]);
        f.feed(chunk(0, b"x", false));
        assert_eq!(acked.recv().await.unwrap().offset, 1);
        // No feeder for step 5: acknowledged at once.
        f.feed(pb::StepStdin {
            step: 5,
            ..chunk(0, b"abc", false)
        });
        let a = acked.recv().await.unwrap();
        assert_eq!((a.step, a.offset), (5, 3));
    }
}
