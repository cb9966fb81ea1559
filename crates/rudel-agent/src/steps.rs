//! Job steps on the agent (docs/parallel-jobs.md), both ends:
//! - [`Origins`]: the `srun` processes on this node waiting for their steps, by request
//!   and then by step; the head's answers, output and task ends are handed to them.
//! - [`StepTasks`]: this node's tasks of steps the head launched here. They run through
//!   the executor like any task (cgroup, kill on cancel, run as the job's user), under the
//!   reserved job id [`STEP_JOB`]; their output goes to files in the agent's directory,
//!   read as it grows and sent to the head.
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rudel_core::{TaskKey, TaskOutcome, TaskReport};
use rudel_proto::v1 as pb;
use tokio::sync::mpsc::UnboundedSender;

use crate::exec::{ExecSpec, Executor, StderrTarget};

/// Job id under which step tasks run in the executor (never a real job: real ids count
/// up from 1; `rudel exec` uses `u64::MAX`).
pub const STEP_JOB: u64 = u64::MAX - 1;

/// Most bytes of one task's stream sent in one message.
const CHUNK: u64 = 256 * 1024;

/// What the job socket tells an `srun` about its step, one JSON line each.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StepEvent {
    /// The head laid the step out and is starting its tasks.
    Started {
        step: u32,
        ntasks: u32,
        nodelist: String,
        task_nodes: Vec<String>,
    },
    /// Bytes from one task's stdout (`stream` 1) or stderr (2), base64.
    Output { rank: u32, stream: u8, data: String },
    /// One task ended (or never started: `error`).
    Ended {
        rank: u32,
        node: String,
        #[serde(default)]
        exit_code: Option<i32>,
        #[serde(default)]
        signal: Option<i32>,
        #[serde(default)]
        error: String,
    },
    /// The step was refused; nothing runs.
    Refused { error: String },
    /// `node` has written srun's stdin into its tasks up to byte `offset`.
    StdinAck { node: String, offset: u64 },
}

/// The `srun`s on this node: by request id until the head answers, then by step.
#[derive(Default)]
pub struct Origins {
    /// Request id -> (job, where the srun listens).
    pending: HashMap<u64, (u64, UnboundedSender<StepEvent>)>,
    /// (job, step) -> (tasks not yet ended, where the srun listens).
    live: HashMap<(u64, u32), (u32, UnboundedSender<StepEvent>)>,
}

impl Origins {
    pub fn waiting(&mut self, id: u64, job: u64, events: UnboundedSender<StepEvent>) {
        self.pending.insert(id, (job, events));
    }

    /// The head's answer to request `r.id`.
    pub fn answered(&mut self, r: pb::StepReply) {
        let Some((job, tx)) = self.pending.remove(&r.id) else {
            return;
        };
        if !r.error.is_empty() {
            let _ = tx.send(StepEvent::Refused { error: r.error });
            return;
        }
        let (step, ntasks) = (r.step, r.ntasks);
        let _ = tx.send(StepEvent::Started {
            step,
            ntasks,
            nodelist: r.nodelist,
            task_nodes: r.task_nodes,
        });
        self.live.insert((job, step), (ntasks, tx));
    }

    pub fn output(&self, o: pb::StepOutput) {
        use base64::Engine;
        if let Some((_, tx)) = self.live.get(&(o.job, o.step)) {
            let stream = if o.stream == pb::OutputStream::Stderr as i32 {
                2
            } else {
                1
            };
            let data = base64::engine::general_purpose::STANDARD.encode(&o.data);
            let _ = tx.send(StepEvent::Output {
                rank: o.rank,
                stream,
                data,
            });
        }
    }

    /// A node wrote the step's stdin up to `a.offset`: srun may send more.
    pub fn stdin_ack(&self, a: pb::StepStdinAck) {
        if let Some((_, tx)) = self.live.get(&(a.job, a.step)) {
            let _ = tx.send(StepEvent::StdinAck {
                node: a.node,
                offset: a.offset,
            });
        }
    }

    /// One task ended; the step is forgotten after its last (its srun then hangs up).
    pub fn ended(&mut self, e: pb::StepTaskEnd) {
        let k = (e.job, e.step);
        if let Some((left, tx)) = self.live.get_mut(&k) {
            *left = left.saturating_sub(1);
            let last = *left == 0;
            let _ = tx.send(StepEvent::Ended {
                rank: e.rank,
                node: e.node,
                exit_code: e.exit_code,
                signal: e.signal,
                error: e.error,
            });
            if last {
                self.live.remove(&k);
            }
        }
    }

    /// Steps whose srun has gone away (connection closed): they must be killed, as
    /// Slurm kills a step whose srun dies. Forgotten here.
    pub fn abandoned(&mut self) -> Vec<(u64, u32)> {
        self.pending.retain(|_, (_, tx)| !tx.is_closed());
        let gone: Vec<(u64, u32)> = self
            .live
            .iter()
            .filter(|(_, (_, tx))| tx.is_closed())
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.live.remove(k);
        }
        gone
    }

    /// The connection to the head was lost: every waiting srun is told, as its step's
    /// output and ends can no longer reach it.
    pub fn head_lost(&mut self) {
        let msg = "the agent lost its connection to the head: srun cannot follow its step any more (its tasks end with the job)".to_string();
        let txs = self.pending.drain().map(|(_, (_, tx))| tx);
        for tx in txs.chain(self.live.drain().map(|(_, (_, tx))| tx)) {
            let _ = tx.send(StepEvent::Refused { error: msg.clone() });
        }
    }
}

/// One task of a step running here.
struct StepTask {
    job: u64,
    step: u32,
    rank: u32,
    out: PathBuf,
    err: PathBuf,
    out_sent: u64,
    err_sent: u64,
}

/// This node's tasks of steps, by their executor index.
pub struct StepTasks {
    tasks: HashMap<u32, StepTask>,
    next: u32,
    /// Feeders of srun's stdin into the tasks that read it.
    stdin: crate::step_stdin::Feeders,
}

/// What starting a task of a step needs from the agent.
pub struct LaunchCtx<'a> {
    pub exec: &'a Executor,
    pub run_as: &'a crate::users::RunAs,
    pub dir: PathBuf,
    pub node: &'a str,
    pub job_socket: Option<&'a Path>,
    /// Where the job socket learns that a step task is live (so `rudel kv` works in it).
    pub live: &'a crate::job_socket::LiveTasks,
    /// The PMI library for steps with PMI (`crate::pmi`).
    pub pmi_library: Option<&'a Path>,
}

impl StepTasks {
    /// `stdin_acks` is where the stdin feeders acknowledge what they wrote.
    pub fn new(node: String, stdin_acks: UnboundedSender<pb::StepStdinAck>) -> StepTasks {
        StepTasks {
            tasks: HashMap::new(),
            next: 0,
            stdin: crate::step_stdin::Feeders::new(node, stdin_acks),
        }
    }

    /// A chunk of srun's stdin for this node's tasks of its step.
    pub fn stdin(&mut self, s: pb::StepStdin) {
        self.stdin.feed(s);
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Starts this node's tasks of a step; the ends of those that could not start (they
    /// also arrive as executor reports when the spawn itself fails).
    pub fn launch(&mut self, l: pb::StepLaunch, cx: &LaunchCtx<'_>) -> Vec<pb::StepTaskEnd> {
        let failed = |error: String| -> Vec<pb::StepTaskEnd> {
            l.ranks
                .iter()
                .map(|&rank| pb::StepTaskEnd {
                    job: l.job,
                    step: l.step,
                    rank,
                    exit_code: None,
                    signal: None,
                    error: error.clone(),
                    node: cx.node.to_string(),
                })
                .collect()
        };
        let user = match cx.run_as.resolve(&l.user, cx.node) {
            Ok(u) => u,
            Err(e) => return failed(e.to_string()),
        };
        if let Err(e) = std::fs::create_dir_all(&cx.dir) {
            return failed(format!("cannot create {}: {e}", cx.dir.display()));
        }
        let mut base: Vec<(String, String)> = l.env.clone().into_iter().collect();
        if !base.iter().any(|(k, _)| k == "PATH") {
            base.push(("PATH".into(), crate::launch::DEFAULT_PATH.into()));
        }
        if let Some(u) = &user {
            crate::login_env::fill(&mut base, &u.login);
        }
        if let Some(p) = cx.job_socket {
            base.retain(|(k, _)| k != crate::job_socket::SOCKET_ENV);
            base.push((crate::job_socket::SOCKET_ENV.into(), p.display().to_string()));
        }
        let pmi_library = match crate::pmi::library_for(&base, cx.pmi_library, cx.node) {
            Ok(lib) => lib,
            Err(e) => return failed(e),
        };
        let creds = user.map(|u| u.creds);
        let mut ends = Vec::new();
        let mut writers = Vec::new();
        for (local, &rank) in l.ranks.iter().enumerate() {
            let index = self.next;
            self.next = self.next.wrapping_add(1);
            let out = cx.dir.join(format!("{index}.out"));
            let err = cx.dir.join(format!("{index}.err"));
            let made = [&out, &err]
                .into_iter()
                .try_for_each(|p| crate::launch::give_to_user(p, creds.as_ref()));
            if let Err(e) = made {
                ends.extend(failed(e.to_string()).into_iter().filter(|x| x.rank == rank));
                continue;
            }
            let mut env = base.clone();
            env.push(("SLURM_PROCID".into(), rank.to_string()));
            env.push(("SLURM_LOCALID".into(), local.to_string()));
            env.push(("RUDEL_STEP_TASK".into(), rank.to_string()));
            if let Some(lib) = pmi_library {
                crate::pmi::add_task_env(&mut env, rank, lib);
            }
            env.sort();
            let stdin = if l.stdin_ranks.contains(&rank) {
                match crate::step_stdin::pipe_for_task() {
                    Ok((rd, wr)) => {
                        writers.push(wr);
                        Some(std::sync::Arc::new(rd))
                    }
                    Err(e) => {
                        let e = format!("cannot make a stdin pipe: {e}");
                        ends.extend(failed(e).into_iter().filter(|x| x.rank == rank));
                        continue;
                    }
                }
            } else {
                None
            };
            let spec = ExecSpec {
                key: TaskKey { job: STEP_JOB, index },
                attempt: 1,
                argv: l.argv.clone(),
                cwd: PathBuf::from(if l.cwd.is_empty() { "/" } else { l.cwd.as_str() }),
                env,
                stdout: Some(out.clone()),
                stderr: StderrTarget::File(err.clone()),
                cores: l.cores.clone(),
                mem_bytes: l.mem_bytes,
                time_limit: None,
                warn: None,
                append_output: false,
                run_as: creds.clone(),
                stdin,
            };
            // SAFETY: plain syscall.
            let uid = creds.as_ref().map_or_else(|| unsafe { libc::getuid() }, |c| c.uid);
            cx.live.insert_step(index, l.job, uid);
            self.tasks.insert(
                index,
                StepTask {
                    job: l.job,
                    step: l.step,
                    rank,
                    out,
                    err,
                    out_sent: 0,
                    err_sent: 0,
                },
            );
            // The end (a failed spawn included) arrives through the executor's reports.
            cx.exec.launch(spec);
        }
        if !writers.is_empty() {
            self.stdin.start(l.job, l.step, writers);
        }
        ends
    }

    /// New output of every task since the last call.
    pub fn drain(&mut self) -> Vec<pb::StepOutput> {
        let mut out = Vec::new();
        for t in self.tasks.values_mut() {
            read_new(t, &mut out);
        }
        out
    }

    /// A step task's executor report: its remaining output and its end; None if the
    /// report is not of a step task known here.
    pub fn ended(&mut self, r: &TaskReport, node: &str) -> Option<(Vec<pb::StepOutput>, pb::StepTaskEnd)> {
        let mut t = self.tasks.remove(&r.key.index)?;
        if !self.tasks.values().any(|o| o.job == t.job && o.step == t.step) {
            self.stdin.stop(t.job, t.step);
        }
        let mut out = Vec::new();
        read_new(&mut t, &mut out);
        let _ = std::fs::remove_file(&t.out);
        let _ = std::fs::remove_file(&t.err);
        let error = if r.outcome == TaskOutcome::SpawnFailed {
            r.message.clone()
        } else {
            String::new()
        };
        let end = pb::StepTaskEnd {
            job: t.job,
            step: t.step,
            rank: t.rank,
            exit_code: r.exit_code,
            signal: r.signal,
            error,
            node: node.to_string(),
        };
        Some((out, end))
    }

    /// The steps with tasks here, for the head at registration: a node cut off while its
    /// job was lost kept running its step tasks forever once back, as the head's kill
    /// had nowhere to go (`tests/step_node_loss.rs`).
    pub fn running_steps(&self) -> Vec<(u64, u32)> {
        let mut v: Vec<(u64, u32)> = self.tasks.values().map(|t| (t.job, t.step)).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Executor keys of the tasks of step `step` of job `job` (every step if None).
    pub fn keys_of(&self, job: u64, step: Option<u32>) -> Vec<TaskKey> {
        self.tasks
            .iter()
            .filter(|(_, t)| t.job == job && step.is_none_or(|s| s == t.step))
            .map(|(&index, _)| TaskKey { job: STEP_JOB, index })
            .collect()
    }
}

/// Appends what `t`'s files gained since the last read.
fn read_new(t: &mut StepTask, out: &mut Vec<pb::StepOutput>) {
    for (path, sent, stream) in [
        (&t.out, &mut t.out_sent, pb::OutputStream::Stdout),
        (&t.err, &mut t.err_sent, pb::OutputStream::Stderr),
    ] {
        loop {
            let data = read_from(path, *sent, CHUNK);
            if data.is_empty() {
                break;
            }
            *sent += data.len() as u64;
            let full = data.len() as u64 == CHUNK;
            out.push(pb::StepOutput {
                job: t.job,
                step: t.step,
                rank: t.rank,
                stream: stream as i32,
                data,
            });
            if !full {
                break;
            }
        }
    }
}

/// At most `max` bytes of `path` from `offset` (nothing if it cannot be read).
fn read_from(path: &Path, offset: u64, max: u64) -> Vec<u8> {
    let mut data = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.take(max).read_to_end(&mut data);
        }
    }
    data
}
