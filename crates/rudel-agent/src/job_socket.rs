//! The agent's job socket: how a process inside a job (the batch script, or the `srun`
//! it runs) asks rudel for something without holding cluster credentials (issue 11,
//! step 1 of job steps).
//!
//! The agent listens on a local Unix socket whose path tasks get as
//! [`SOCKET_ENV`]. The file mode lets every local user connect: who may ask for what is
//! decided from the peer credentials (`SO_PEERCRED`), never from the file mode. A caller is
//! accepted only if
//! - its pid carries this agent's `RUDEL_TASK` marker (`job.index.attempt@owner`, the owner
//!   being this agent's uid, so two agents on one machine never answer for each other),
//! - that attempt is live on this agent, and
//! - the caller's uid is the uid the task runs as.
//!
//! The marker is read from `/proc/PID/environ`. A process can rewrite its own initial
//! environment, so the marker alone would let a user's process outside any job pose as one
//! of the same user's jobs; the uid check keeps it from posing as anyone else's job, which
//! is the boundary that matters (a user may already act on their own jobs through the head).
//!
//! Wire format: one JSON request line, one JSON reply line, then the agent closes. Requests
//! are bounded in size and time so a stuck or hostile client cannot hold the agent.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rudel_core::ids::TaskKey;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::exec::contain::TASK_MARKER;
use crate::steps::StepEvent;

/// Environment variable giving tasks the path of the job socket.
pub const SOCKET_ENV: &str = "RUDEL_AGENT_SOCKET";

/// Longest request line accepted: a step request carries argv and options, never data.
const MAX_REQUEST: u64 = 64 * 1024;

/// How long a step request may wait for the head's answer: the head answers at once, so
/// this only bounds a lost connection.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// What a connection asks the agent's session to do for an identified caller.
#[derive(Debug)]
pub enum Forward {
    /// Run a step: the session asks the head and sends what happens to `events`.
    Run {
        caller: Caller,
        step: RunStep,
        events: tokio::sync::mpsc::UnboundedSender<StepEvent>,
    },
    /// Kill step `step` of the caller's job (srun's Ctrl-C twice, --kill-on-bad-exit).
    Kill { job: u64, step: u32 },
    /// A chunk of srun's stdin for the tasks of step `step` of the caller's job.
    Stdin {
        job: u64,
        step: u32,
        offset: u64,
        data: Vec<u8>,
        eof: bool,
    },
    /// A `rudel kv` call for the caller's job; the head's answer goes to `reply`.
    Kv {
        caller: Caller,
        call: KvCall,
        reply: tokio::sync::oneshot::Sender<Reply>,
    },
}

/// Where requests for the head go (the agent's session).
pub type ToHead = tokio::sync::mpsc::UnboundedSender<Forward>;

/// How long a client may take to send its request: a connection that sends nothing must
/// not keep a task of the agent waiting forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a caller or a request was refused; the text goes back to the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallerError {
    #[error("cannot read the peer credentials of the connection")]
    NoPeer,
    #[error("process {0} is not part of a rudel task on this node (no {TASK_MARKER} in its environment)")]
    NotATask(u32),
    #[error("process {pid} belongs to a task of another agent ({marker})")]
    OtherAgent { pid: u32, marker: String },
    #[error("task {0} is not running on this node")]
    NotRunning(String),
    #[error("uid {caller} may not act for task {task}, which runs as uid {owner}")]
    WrongUser { caller: u32, task: String, owner: u32 },
}

/// A process identified as part of a live task on this agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    /// The task (for a task of a step: its job and its executor index on this node).
    pub key: TaskKey,
    pub attempt: u32,
    /// A task of a job step started on this node, not the job's own task.
    pub step_task: bool,
}

/// The agent's view of its live tasks, as the job socket needs it.
pub trait TaskTable: Send + Sync {
    /// The uid the attempt runs as, if it is live on this agent.
    fn task_uid(&self, key: TaskKey, attempt: u32) -> Option<u32>;
    /// The job and uid of the step task with executor index `index`, if live here.
    fn step_task(&self, _index: u32) -> Option<(u64, u32)> {
        None
    }
}

/// The uids of the tasks this agent has started and not yet seen end: the session adds a
/// task when it spawns it and removes it on its report, the socket reads it.
#[derive(Debug, Default)]
pub struct LiveTasks(
    std::sync::Mutex<std::collections::HashMap<(TaskKey, u32), u32>>,
    /// Step tasks: executor index -> (job, uid).
    std::sync::Mutex<std::collections::HashMap<u32, (u64, u32)>>,
);

impl LiveTasks {
    pub fn insert_step(&self, index: u32, job: u64, uid: u32) {
        self.1
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(index, (job, uid));
    }

    pub fn remove_step(&self, index: u32) {
        self.1.lock().unwrap_or_else(|e| e.into_inner()).remove(&index);
    }

    pub fn insert(&self, key: TaskKey, attempt: u32, uid: u32) {
        // A poisoned lock only means a reader panicked; the map itself stays consistent.
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((key, attempt), uid);
    }

    pub fn remove(&self, key: TaskKey, attempt: u32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&(key, attempt));
    }
}

impl TaskTable for LiveTasks {
    fn task_uid(&self, key: TaskKey, attempt: u32) -> Option<u32> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(key, attempt))
            .copied()
    }

    fn step_task(&self, index: u32) -> Option<(u64, u32)> {
        self.1.lock().unwrap_or_else(|e| e.into_inner()).get(&index).copied()
    }
}

/// The served job socket; [`JobSocket::stop`] ends it and every connection.
pub struct JobSocket {
    pub path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl JobSocket {
    /// Stops serving (open connections are dropped) and waits until the server is gone.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Binds the job socket in `data_dir` and serves it in the background, or None (logged)
/// when it cannot be bound: tasks then get no [`SOCKET_ENV`], and whatever needs the
/// socket says so instead of hanging.
pub fn start(data_dir: &Path, owner: String, tasks: Arc<LiveTasks>, to_head: ToHead) -> Option<JobSocket> {
    let path = socket_path(data_dir);
    match bind(&path) {
        Ok(l) => {
            let task = tokio::spawn(serve(l, owner, tasks, to_head));
            tracing::info!(path = %path.display(), "job socket listening");
            Some(JobSocket { path, task })
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot bind the job socket: job steps unavailable on this node");
            None
        }
    }
}

/// A request from a job process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Which task the caller belongs to (answered by the agent itself).
    Whoami,
    /// Start a job step and follow it (see docs/parallel-jobs.md): the connection then
    /// carries [`StepEvent`] lines to the caller and [`Control`] lines from it.
    Run(RunStep),
    /// `rudel kv`: answered by the head for the caller's job.
    Kv(KvCall),
}

/// One `rudel kv` call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCall {
    /// `put`, `get`, `wait` or `incr`.
    pub kv: String,
    pub key: String,
    #[serde(default)]
    pub value: String,
    /// How long `wait` may wait (0: [`KV_WAIT_DEFAULT`]).
    #[serde(default)]
    pub timeout_s: u64,
}

/// How long `rudel kv wait` waits by default: long enough for any rendezvous, bounded so
/// a forgotten waiter never holds a connection forever.
pub const KV_WAIT_DEFAULT: Duration = Duration::from_secs(3600);

/// A step as srun asks for it (0 / empty = not given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStep {
    pub argv: Vec<String>,
    #[serde(default)]
    pub ntasks: u32,
    #[serde(default)]
    pub nodes: u32,
    #[serde(default)]
    pub ntasks_per_node: u32,
    #[serde(default)]
    pub cpus_per_task: u32,
    #[serde(default)]
    pub nodelist: Vec<String>,
    #[serde(default)]
    pub env: std::collections::HashMap<String, String>,
    #[serde(default)]
    pub cwd: String,
    /// srun's PMI-1 server port on this node; 0 = none (`--mpi=none`).
    #[serde(default)]
    pub pmi_port: u16,
    /// The step's name for accounting (srun -J); empty: the command's basename.
    #[serde(default)]
    pub name: String,
    /// Which tasks read srun's stdin: "all", a task id, or "none" / empty.
    #[serde(default)]
    pub input: String,
}

/// What srun may send while its step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    /// Kill every task of the step.
    Kill,
    /// A chunk of srun's stdin (base64) starting at byte `offset` of the stream; `eof`
    /// closes the tasks' stdin after it.
    Stdin {
        offset: u64,
        #[serde(default)]
        data: String,
        #[serde(default)]
        eof: bool,
    },
}

/// Longest control line srun may send (a stdin chunk of 64 KiB is about 88 KiB in base64):
/// a longer one ends the connection, and so the step, rather than the agent's memory.
const MAX_CONTROL: u64 = 1 << 20;

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `rudel kv`: whether the key exists, and its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Reply {
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply {
            job: None,
            index: None,
            attempt: None,
            error: Some(msg.into()),
            found: None,
            value: None,
        }
    }

    /// The head's answer to a `rudel kv` call.
    pub fn kv(r: rudel_proto::v1::KvReply) -> Reply {
        if !r.error.is_empty() {
            return Reply::error(r.error);
        }
        Reply {
            job: None,
            index: None,
            attempt: None,
            error: None,
            found: Some(r.found),
            value: r.found.then_some(r.value),
        }
    }

    fn of(c: &Caller) -> Reply {
        Reply {
            job: Some(c.key.job),
            index: Some(c.key.index),
            attempt: Some(c.attempt),
            error: None,
            found: None,
            value: None,
        }
    }
}

/// Parses a `RUDEL_TASK` value `job.index.attempt@owner`; None unless `owner` matches.
pub fn parse_marker(value: &str, owner: &str) -> Option<(TaskKey, u32)> {
    let (ids, by) = value.split_once('@')?;
    if by != owner {
        return None;
    }
    let mut it = ids.split('.');
    let job = it.next()?.parse().ok()?;
    let index = it.next()?.parse().ok()?;
    let attempt = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some((TaskKey { job, index }, attempt))
}

/// The `RUDEL_TASK` value in a NUL-separated environment block.
fn marker_in(environ: &[u8]) -> Option<String> {
    let prefix = format!("{TASK_MARKER}=");
    environ
        .split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Identifies the process `pid` (running as `uid`) as part of a live task of the agent
/// `owner`. `proc_root` is `/proc` (a directory in tests).
pub fn identify(
    pid: u32,
    uid: u32,
    owner: &str,
    proc_root: &Path,
    tasks: &dyn TaskTable,
) -> Result<Caller, CallerError> {
    let environ = std::fs::read(proc_root.join(pid.to_string()).join("environ")).unwrap_or_default();
    let marker = marker_in(&environ).ok_or(CallerError::NotATask(pid))?;
    let (key, attempt) = parse_marker(&marker, owner).ok_or_else(|| CallerError::OtherAgent {
        pid,
        marker: marker.clone(),
    })?;
    let step = (key.job == crate::steps::STEP_JOB)
        .then(|| tasks.step_task(key.index))
        .flatten();
    let (task, owner_uid, key) = match step {
        Some((job, owner)) => (
            format!("of a step of job {job} (local {})", key.index),
            Some(owner),
            TaskKey { job, index: key.index },
        ),
        None => (
            format!("{}.{} (attempt {attempt})", key.job, key.index),
            tasks.task_uid(key, attempt),
            key,
        ),
    };
    let owner_uid = owner_uid.ok_or_else(|| CallerError::NotRunning(task.clone()))?;
    if owner_uid != uid {
        return Err(CallerError::WrongUser {
            caller: uid,
            task,
            owner: owner_uid,
        });
    }
    Ok(Caller {
        pid,
        uid,
        key,
        attempt,
        step_task: step.is_some(),
    })
}

/// Binds the job socket at `path` (a stale file from an earlier agent is replaced) with a
/// mode every local user can connect through: see the module doc for who is answered.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

/// Serves the job socket until aborted. Each connection is handled on its own task, so a
/// slow client never delays another; the tasks belong to this one (dropped with it).
pub async fn serve(listener: UnixListener, owner: String, tasks: Arc<dyn TaskTable>, to_head: ToHead) {
    let owner: Arc<str> = owner.into();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "job socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (owner, tasks, to_head) = (owner.clone(), tasks.clone(), to_head.clone());
        conns.spawn(async move {
            if let Err(e) = handle(stream, &owner, tasks.as_ref(), Path::new("/proc"), &to_head).await {
                tracing::debug!(error = %e, "job socket: connection ended");
            }
        });
    }
}

/// One connection: identify, read one request, answer it.
async fn handle(
    stream: UnixStream,
    owner: &str,
    tasks: &dyn TaskTable,
    proc_root: &Path,
    to_head: &ToHead,
) -> std::io::Result<()> {
    let caller = match stream.peer_cred() {
        Ok(c) => match c.pid() {
            Some(pid) if pid > 0 => identify(pid as u32, c.uid(), owner, proc_root, tasks),
            _ => Err(CallerError::NoPeer),
        },
        Err(_) => Err(CallerError::NoPeer),
    };
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    // The request is read even from a refused caller: closing before it is sent would
    // hand the client a broken pipe instead of the reason.
    let request = read_request(&mut rd).await;
    let reply = match (caller, request) {
        (Err(e), _) => {
            tracing::info!(error = %e, "job socket: caller refused");
            Reply::error(e.to_string())
        }
        (Ok(_), Err(msg)) => Reply::error(msg),
        (Ok(c), Ok(Request::Whoami)) => Reply::of(&c),
        (Ok(c), Ok(Request::Run(_))) if c.step_task => {
            Reply::error("srun inside a job step is not supported: run srun from the batch script")
        }
        (Ok(c), Ok(Request::Run(step))) => return follow_step(c, step, rd, wr, to_head).await,
        (Ok(c), Ok(Request::Kv(call))) => kv(c, call, to_head).await,
    };
    write_line(&mut wr, &reply).await?;
    wr.shutdown().await
}

async fn write_line<T: Serialize>(wr: &mut tokio::net::unix::OwnedWriteHalf, v: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
    line.push(b'\n');
    wr.write_all(&line).await
}

/// Passes a `rudel kv` call to the head and waits (bounded) for its answer.
async fn kv(caller: Caller, call: KvCall, to_head: &ToHead) -> Reply {
    let limit = if call.kv == "wait" {
        match call.timeout_s {
            0 => KV_WAIT_DEFAULT,
            s => Duration::from_secs(s),
        }
    } else {
        HEAD_TIMEOUT
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    if to_head.send(Forward::Kv { caller, call, reply }).is_err() {
        return Reply::error("the agent is shutting down");
    }
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Reply::error("the agent lost its connection to the head before it answered"),
        Err(_) => Reply::error(format!("timed out after {} s", limit.as_secs())),
    }
}

/// Runs a step for `c` and streams what happens to it until its last task ended, the head
/// refused it, or the caller hung up (which kills the step: see `Origins::abandoned`).
async fn follow_step(
    c: Caller,
    step: RunStep,
    rd: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut wr: tokio::net::unix::OwnedWriteHalf,
    to_head: &ToHead,
) -> std::io::Result<()> {
    let (events, mut rx) = tokio::sync::mpsc::unbounded_channel();
    if to_head
        .send(Forward::Run {
            caller: c,
            step,
            events,
        })
        .is_err()
    {
        return write_line(
            &mut wr,
            &StepEvent::Refused {
                error: "the agent is shutting down".into(),
            },
        )
        .await;
    }
    let mut started: Option<(u32, u32)> = None;
    let mut ended = 0u32;
    // Control lines are read on their own task: a line read half-way when an event
    // wins the select below would otherwise be lost with the cancelled read.
    let (ctl_tx, mut controls) = tokio::sync::mpsc::channel(4);
    let reader = AbortOnDrop(tokio::spawn(read_controls(rd, ctl_tx)));
    let answer = tokio::time::sleep(HEAD_TIMEOUT);
    tokio::pin!(answer);
    loop {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                match &ev {
                    StepEvent::Started { step, ntasks, .. } => started = Some((*step, *ntasks)),
                    StepEvent::Ended { .. } => ended += 1,
                    StepEvent::Refused { .. } => {
                        write_line(&mut wr, &ev).await?;
                        break;
                    }
                    StepEvent::Output { .. } | StepEvent::StdinAck { .. } => {}
                }
                write_line(&mut wr, &ev).await?;
                if started.is_some_and(|(_, n)| ended >= n) {
                    break;
                }
            }
            ctl = controls.recv() => {
                // None: srun hung up (or sent a line too long).
                let Some(ctl) = ctl else { break };
                if let Some((step, _)) = started {
                    let _ = to_head.send(control(c.key.job, step, ctl));
                }
            }
            _ = &mut answer, if started.is_none() => {
                let error = format!("no answer from the head within {} s", HEAD_TIMEOUT.as_secs());
                write_line(&mut wr, &StepEvent::Refused { error }).await?;
                break;
            }
        }
    }
    drop(reader);
    wr.shutdown().await
}

/// Aborts the task when dropped (the connection's control reader ends with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads srun's control lines until it hangs up, sends a line longer than
/// [`MAX_CONTROL`], or nobody listens any more.
async fn read_controls(mut rd: BufReader<tokio::net::unix::OwnedReadHalf>, tx: tokio::sync::mpsc::Sender<Control>) {
    let mut line = String::new();
    loop {
        line.clear();
        match (&mut rd).take(MAX_CONTROL).read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with('\n') => return,
            Ok(_) => {}
        }
        if let Ok(ctl) = serde_json::from_str::<Control>(line.trim_end()) {
            if tx.send(ctl).await.is_err() {
                return;
            }
        }
    }
}

/// What a control line from srun asks of the head.
fn control(job: u64, step: u32, ctl: Control) -> Forward {
    match ctl {
        Control::Kill => Forward::Kill { job, step },
        Control::Stdin { offset, data, eof } => {
            let (data, eof) = stdin_chunk(&data, eof);
            Forward::Stdin {
                job,
                step,
                offset,
                data,
                eof,
            }
        }
    }
}

/// A stdin chunk's bytes from its base64 text, and whether the stream ends with it. Both
/// ways of asking for a step (this socket, the head's `Step` RPC) decode the same way.
pub fn stdin_chunk(data: &str, eof: bool) -> (Vec<u8>, bool) {
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(data) {
        Ok(bytes) => (bytes, eof),
        // Undecodable data would corrupt the stream silently: the tasks' stdin ends.
        Err(_) => (Vec::new(), true),
    }
}

/// Reads one bounded request line within [`REQUEST_TIMEOUT`].
async fn read_request(rd: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> Result<Request, String> {
    let mut line = String::new();
    let mut r = rd.take(MAX_REQUEST);
    match tokio::time::timeout(REQUEST_TIMEOUT, r.read_line(&mut line)).await {
        Err(_) => return Err("no request within 5 s".into()),
        Ok(Err(e)) => return Err(format!("cannot read request: {e}")),
        Ok(Ok(_)) => {}
    }
    if !line.ends_with('\n') {
        return Err(format!("request not a single line of at most {MAX_REQUEST} bytes"));
    }
    serde_json::from_str(line.trim_end()).map_err(|e| format!("bad request: {e}"))
}

/// Where an agent with data directory `data_dir` puts its job socket.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("job.sock")
}

#[cfg(test)]
mod tests;
