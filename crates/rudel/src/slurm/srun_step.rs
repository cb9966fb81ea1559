//! A job step across the allocation: `srun` asks its agent through the job socket
//! (`$RUDEL_AGENT_SOCKET`), then prints the tasks' output as it arrives and exits with
//! the highest task exit code, as Slurm's srun does.
//!
//! Signals: the first Ctrl-C prints the step's state, a second within a second kills the
//! step (Slurm's srun); SIGTERM or SIGHUP kill the step. srun dying for any other reason
//! closes the socket, and the agent kills the step then.
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::signal::unix::{signal, SignalKind};

// What the agent sends, one JSON line each.
use rudel_agent::steps::StepEvent as Event;

use super::pmi_server::PmiServer;
use super::srun::{Mpi, Step};
use super::srun_stdin::Forward;
use super::{SlurmError, SlurmResult};

/// Variables of an enclosing step's PMI: the head sets them anew for a step with PMI, and
/// a step without must not inherit them (mpirun's daemons would take them as their own).
const PMI_VARS: [&str; 6] = [
    "PMI_PORT",
    "PMI_ID",
    "PMI_RANK",
    "PMI_SIZE",
    "FLUX_JOB_ID",
    "FLUX_PMI_LIBRARY_PATH",
];

/// The request line for the agent; `pmi_port` 0 = no PMI server.
fn request(step: &Step, pmi_port: u16) -> Result<String, SlurmError> {
    let cwd = std::env::current_dir()
        .map_err(|e| SlurmError::msg(format!("cannot read the working directory: {e}")))?
        .display()
        .to_string();
    // The step inherits srun's environment, as Slurm's default --export=ALL; the marker
    // of this task is the executor's to set on the step's own tasks.
    let env: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k != "RUDEL_TASK" && !PMI_VARS.contains(&k.as_str()))
        .chain(step.env.iter().cloned())
        .collect();
    let v = serde_json::json!({
        "op": "run",
        "argv": step.command,
        "ntasks": step.ntasks,
        "nodes": step.nodes,
        "ntasks_per_node": step.ntasks_per_node,
        "cpus_per_task": step.cpus_per_task.unwrap_or(0),
        "nodelist": step.nodelist,
        "env": env,
        "cwd": cwd,
        "pmi_port": pmi_port,
        "name": step.job_name.clone().unwrap_or_default(),
        "input": step.input.wire(),
    });
    Ok(format!("{v}\n"))
}

/// Output of one task, passed on whole lines at a time so tasks never interleave
/// mid-line (and `--label` can prefix every line).
#[derive(Default)]
struct Lines {
    partial: BTreeMap<(u32, u8), Vec<u8>>,
    width: usize,
    label: bool,
}

impl Lines {
    fn write(&self, rank: u32, stream: u8, line: &[u8]) {
        let mut buf = Vec::with_capacity(line.len() + 8);
        if self.label {
            buf.extend(format!("{rank:>w$}: ", w = self.width).as_bytes());
        }
        buf.extend_from_slice(line);
        // A closed stdout (srun | head) must not kill the step's bookkeeping.
        let _ = if stream == 2 {
            std::io::stderr().write_all(&buf)
        } else {
            std::io::stdout().write_all(&buf)
        };
    }

    fn add(&mut self, rank: u32, stream: u8, data: &[u8]) {
        let buf = self.partial.entry((rank, stream)).or_default();
        buf.extend_from_slice(data);
        let Some(last) = buf.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let rest = buf.split_off(last + 1);
        let whole = std::mem::replace(buf, rest);
        for line in whole.split_inclusive(|b| *b == b'\n') {
            self.write(rank, stream, line);
        }
    }

    /// A task ended: what it wrote after its last newline.
    fn flush(&mut self, rank: u32) {
        for stream in [1u8, 2] {
            if let Some(rest) = self.partial.remove(&(rank, stream)).filter(|r| !r.is_empty()) {
                let mut rest = rest;
                rest.push(b'\n');
                self.write(rank, stream, &rest);
            }
        }
        let _ = std::io::stdout().flush();
    }
}

/// Where the step stands, for the exit code and Ctrl-C's status line.
#[derive(Default)]
struct Progress {
    job: String,
    step: Option<u32>,
    ntasks: u32,
    ended: u32,
    worst: u8,
    killed: bool,
}

impl Progress {
    fn id(&self) -> String {
        format!(
            "StepId={}.{}",
            self.job,
            self.step.map_or("?".into(), |s| s.to_string())
        )
    }

    /// Records an end; true if it was a failure.
    fn ended(&mut self, rank: u32, node: &str, code: Option<i32>, sig: Option<i32>, error: &str) -> bool {
        self.ended += 1;
        let (exit, what) = match (code, sig) {
            _ if !error.is_empty() => (2, error.to_string()),
            (_, Some(s)) => (128 + s, signal_name(s)),
            (Some(c), None) => (c, format!("Exited with exit code {c}")),
            (None, None) => (1, "ended without an exit status".into()),
        };
        if exit != 0 {
            eprintln!("srun: error: {node}: task {rank}: {what}");
        }
        self.worst = self.worst.max(u8::try_from(exit.clamp(0, 255)).unwrap_or(255));
        exit != 0
    }
}

fn signal_name(s: i32) -> String {
    match s {
        libc::SIGKILL => "Killed".into(),
        libc::SIGTERM => "Terminated".into(),
        libc::SIGINT => "Interrupt".into(),
        libc::SIGSEGV => "Segmentation fault".into(),
        libc::SIGABRT => "Aborted".into(),
        other => format!("Killed by signal {other}"),
    }
}

/// Runs `step` of job `job` across the allocation and follows it to its end: asked
/// through the agent's job socket from inside a task of the job, through the head's
/// `Step` RPC from outside (a `salloc` shell, see `step_client.rs`).
pub async fn run(job: &str, step: Step, head: &str) -> SlurmResult {
    if let Ok(sock) = std::env::var("RUDEL_AGENT_SOCKET") {
        let stream = UnixStream::connect(&sock)
            .await
            .map_err(|e| SlurmError::msg(format!("cannot reach the agent at {sock}: {e}. Nothing was run")))?;
        let (rd, wr) = stream.into_split();
        return follow(job, step, rd, wr).await;
    }
    let id = job
        .parse::<u64>()
        .map_err(|_| SlurmError::msg(format!("SLURM_JOB_ID={job} is not a job id. Nothing was run")))?;
    let (rd, wr) = tokio::io::split(super::step_client::open(head, id).await?);
    follow(job, step, rd, wr).await
}

async fn follow<R, W>(job: &str, step: Step, rd: R, mut wr: W) -> SlurmResult
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut pmi = match step.mpi {
        Mpi::Pmi1 => Some(
            PmiServer::start(format!("rudel-{job}"))
                .await
                .map_err(|e| SlurmError::msg(format!("cannot start the step's PMI server: {e}. Nothing was run")))?,
        ),
        Mpi::None => None,
    };
    let port = pmi.as_ref().map_or(0, PmiServer::port);
    wr.write_all(request(&step, port)?.as_bytes())
        .await
        .map_err(|e| SlurmError::msg(format!("cannot send the step to the agent: {e}")))?;
    let mut lines = BufReader::new(rd).lines();
    let mut out = Lines {
        label: step.label,
        ..Default::default()
    };
    let mut p = Progress {
        job: job.to_string(),
        ..Default::default()
    };
    let mut int = signal(SignalKind::interrupt()).map_err(|e| SlurmError::msg(format!("signal: {e}")))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| SlurmError::msg(format!("signal: {e}")))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| SlurmError::msg(format!("signal: {e}")))?;
    let mut last_int: Option<Instant> = None;
    let mut stdin = Forward::new(step.input);
    loop {
        let kill = tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(l)) => on_event(&l, &mut out, &mut p, step.kill_on_bad_exit, pmi.as_ref(), &mut stdin)?,
                Ok(None) | Err(_) => break,
            },
            line = stdin.next_line() => {
                // The agent gone: the event stream ends too, and says so.
                let _ = wr.write_all(line.as_bytes()).await;
                false
            }
            a = pmi_abort(&mut pmi), if !p.killed => {
                eprintln!("srun: error: task {}: {}; killing the step", a.rank, a.what);
                true
            }
            _ = int.recv() => {
                let again = last_int.is_some_and(|t| t.elapsed() < Duration::from_secs(1));
                last_int = Some(Instant::now());
                if !again {
                    eprintln!("srun: interrupt (one more within 1 sec to abort)");
                    eprintln!("srun: {}: {} of {} tasks running", p.id(), p.ntasks - p.ended.min(p.ntasks), p.ntasks);
                }
                again
            }
            _ = term.recv() => true,
            _ = hup.recv() => true,
        };
        if kill && !p.killed {
            p.killed = true;
            eprintln!("srun: Terminating {}", p.id());
            let _ = wr.write_all(b"{\"op\":\"kill\"}\n").await;
        }
    }
    if p.step.is_none() || p.ended < p.ntasks {
        return Err(SlurmError::msg(format!(
            "lost the connection to the agent before the step ended ({} of {} tasks ended)",
            p.ended, p.ntasks
        )));
    }
    Ok(p.worst)
}

/// The PMI server's next reason to kill the step; pending without a server.
async fn pmi_abort(pmi: &mut Option<PmiServer>) -> super::pmi_server::Abort {
    match pmi {
        Some(s) => s.abort().await,
        None => std::future::pending().await,
    }
}

/// Handles one event line; true if the step must be killed now.
fn on_event(
    line: &str,
    out: &mut Lines,
    p: &mut Progress,
    kill_on_bad_exit: bool,
    pmi: Option<&PmiServer>,
    stdin: &mut Forward,
) -> Result<bool, SlurmError> {
    use base64::Engine;
    let ev: Event =
        serde_json::from_str(line).map_err(|e| SlurmError::msg(format!("bad message from the agent: {e}")))?;
    match ev {
        Event::Started {
            step,
            ntasks,
            nodelist,
            task_nodes,
        } => {
            p.step = Some(step);
            p.ntasks = ntasks;
            if let Some(s) = pmi {
                s.started(&task_nodes);
            }
            stdin.started(&task_nodes);
            out.width = ntasks.saturating_sub(1).to_string().len();
            tracing::debug!(step, ntasks, %nodelist, ?task_nodes, "step started");
            Ok(false)
        }
        Event::Output { rank, stream, data } => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| SlurmError::msg(format!("bad output from the agent: {e}")))?;
            out.add(rank, stream, &bytes);
            Ok(false)
        }
        Event::Ended {
            rank,
            node,
            exit_code,
            signal,
            error,
        } => {
            out.flush(rank);
            stdin.ended(rank, &node);
            let bad = p.ended(rank, &node, exit_code, signal, &error);
            Ok(bad && kill_on_bad_exit)
        }
        Event::StdinAck { node, offset } => {
            stdin.acked(&node, offset);
            Ok(false)
        }
        Event::Refused { error } => Err(SlurmError::msg(error)),
    }
}
