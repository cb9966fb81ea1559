//! Waiting on jobs and following their output: `rudel wait`, `logs`, `run`.
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use rudel_core::parse;
use rudel_proto::v1 as pb;
use rudel_proto::v1::rudel_client::RudelClient;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::opts::{build_spec, new_request_id, submit_spec, SubmitArgs};
use crate::output_stream::{self, Copied, Reader, Sink};
use crate::{client, CmdResult, Failure};

/// Exit code of `wait` when its --timeout passes (as timeout(1) does).
pub const EXIT_TIMEOUT: u8 = 124;

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Job ids.
    #[arg(required = true)]
    pub ids: Vec<u64>,
    /// Give up after this long (exit 124), e.g. 30s, 10m.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Print the final state of the jobs as JSON.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Output is read over the network: the client asks the leader head, which asks the agent of the
task's node over its session; no filesystem needs to be shared with the node. The agent only
reads files it opened for that task. A task on a node that is down or unreachable gives an
error after a timeout (with --follow, after 30 s of retrying).

A pending job has no output yet: `logs` says so on stderr and exits 0; `logs -f` waits for it
to start. A job with `--output none` has nothing to show (said on stderr, exit 0). With
--follow, every task of an array is followed at once, each line prefixed by `[INDEX] `;
--task N follows one. Without --follow, the tasks that started are printed one after the
other under `==> task N <==`.")]
pub struct LogsArgs {
    /// Job id (or an array task's own id).
    pub id: u64,
    /// Keep printing new output until the job's tasks end and their files are drained.
    #[arg(short, long)]
    pub follow: bool,
    /// Array index of one task (default: all tasks).
    #[arg(long, value_name = "INDEX")]
    pub task: Option<u32>,
    /// Print the error file instead of the output file (when they differ).
    #[arg(long)]
    pub stderr: bool,
}

/// Streams job updates until every job is finished or `deadline` passes; reconnects when
/// the head goes away (e.g. restarts) in the meantime. Calls `on_update` for each update.
pub async fn watch_until_done(
    head: &str,
    ids: &[u64],
    deadline: Option<Instant>,
    mut on_update: impl FnMut(&pb::WatchUpdate),
) -> Result<Option<Vec<pb::JobInfo>>, Failure> {
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt = async {
            let mut c = client::connect(head)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let mut stream = c.watch(pb::WatchRequest { job_ids: ids.to_vec() }).await?.into_inner();
            while let Some(u) = stream.message().await? {
                on_update(&u);
                if u.done {
                    return Ok(Some(u.jobs));
                }
            }
            Ok::<_, tonic::Status>(None)
        };
        let res = match deadline {
            Some(d) => match tokio::time::timeout_at(d, attempt).await {
                Ok(r) => r,
                Err(_) => return Ok(None),
            },
            None => attempt.await,
        };
        match res {
            Ok(Some(jobs)) => return Ok(Some(jobs)),
            Err(s) if s.code() == tonic::Code::NotFound || s.code() == tonic::Code::InvalidArgument => {
                return Err(client::failure(s));
            }
            Ok(None) | Err(_) => {
                // The head went away mid-stream; it may be restarting. Try again.
                tracing::info!("lost the head while waiting; reconnecting");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
            }
        }
    }
}

fn count(j: &pb::JobInfo, state: &str) -> u64 {
    j.counts.iter().find(|c| c.state == state).map_or(0, |c| c.count)
}

fn progress_line(jobs: &[pb::JobInfo]) -> String {
    let total: u64 = jobs.iter().map(|j| j.tasks).sum();
    let pending: u64 = jobs.iter().map(|j| count(j, "pending")).sum();
    let running: u64 = jobs.iter().map(|j| count(j, "running")).sum();
    let done = total - pending - running;
    let bad: u64 = jobs.iter().map(done_not_ok).sum();
    let width = 30u64;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    format!(
        "[{}{}] {done}/{total} done, {running} running, {pending} pending{}",
        "#".repeat(filled as usize),
        ".".repeat((width - filled) as usize),
        if bad > 0 {
            format!(", {bad} not ok")
        } else {
            String::new()
        }
    )
}

fn done_not_ok(j: &pb::JobInfo) -> u64 {
    ["failed", "cancelled", "timeout", "node_fail"]
        .iter()
        .map(|s| count(j, s))
        .sum()
}

/// `rudel wait`.
pub async fn wait(a: WaitArgs, head: &str) -> CmdResult {
    let deadline = match &a.timeout {
        Some(t) => {
            let ms = parse::parse_duration(t).map_err(|e| Failure::usage(anyhow!("--timeout: {e}")))?;
            (ms > 0).then(|| Instant::now() + Duration::from_millis(ms))
        }
        None => None,
    };
    let bar = !a.quiet && !a.json && std::io::stderr().is_terminal();
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    let res = watch_until_done(head, &a.ids, deadline, |u| {
        if bar && last_draw.elapsed() >= Duration::from_millis(100) {
            last_draw = Instant::now();
            eprint!("\r{}\x1b[K", progress_line(&u.jobs));
            let _ = std::io::stderr().flush();
        }
    })
    .await?;
    if bar {
        eprint!("\r\x1b[K");
    }
    let Some(jobs) = res else {
        eprintln!(
            "rudel: timed out waiting for job(s) {}",
            a.ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        );
        return Ok(EXIT_TIMEOUT);
    };
    let ok = jobs.iter().all(|j| j.state == "completed" && j.exit_code == Some(0));
    if a.json {
        println!(
            "{}",
            serde_json::Value::Array(jobs.iter().map(crate::show::job_json).collect())
        );
    } else if !a.quiet {
        for j in &jobs {
            let detail = if j.tasks > 1 {
                let c: Vec<String> = j.counts.iter().map(|c| format!("{} {}", c.count, c.state)).collect();
                format!(" ({})", c.join(", "))
            } else {
                match (j.exit_code, j.signal) {
                    (_, Some(s)) => format!(" (signal {s})"),
                    (Some(c), None) if c != 0 => format!(" (exit code {c})"),
                    _ => String::new(),
                }
            };
            let reason = if j.state != "completed" && !j.reason.is_empty() {
                format!(": {}", j.reason)
            } else {
                String::new()
            };
            println!("Job {} {}{}{}", j.id, j.state, detail, reason);
        }
    }
    Ok(if ok { 0 } else { 1 })
}

fn array_indices(j: &pb::JobInfo) -> Vec<u32> {
    let spec = j.spec.clone().unwrap_or_default();
    match parse::parse_array(&spec.array) {
        Ok(a) if !spec.array.is_empty() => (0..a.len()).filter_map(|p| a.index_at(p)).collect(),
        _ => vec![0],
    }
}

fn discards(pattern: &str) -> bool {
    pattern.trim().eq_ignore_ascii_case("none")
}

/// Most tasks of an array followed at the same time (each polls the leader while it runs);
/// the others start as earlier ones end.
const MAX_FOLLOWED: usize = 256;

/// Follows `streams` (stderr?) of `indices` concurrently until each task ended and its
/// files are drained; `prefix`: put `[index] ` before each line.
async fn follow_tasks(
    head: &str,
    c: &RudelClient<Channel>,
    id: u64,
    indices: &[u32],
    streams: &[bool],
    prefix: bool,
) -> Result<(), Failure> {
    use futures::StreamExt;
    let lock = Arc::new(Mutex::new(()));
    // Job updates (start, end) wake the followers between polls.
    let (wake_tx, wake_rx) = tokio::sync::watch::channel(0u64);
    let head_owned = head.to_string();
    let watcher = tokio::spawn(async move {
        let _ = watch_until_done(&head_owned, &[id], None, |_| {
            wake_tx.send_modify(|n| *n += 1);
        })
        .await;
    });
    let jobs: Vec<(u32, bool)> = indices
        .iter()
        .flat_map(|&i| streams.iter().map(move |&e| (i, e)))
        .collect();
    let mut runs = futures::stream::iter(jobs.into_iter().map(|(index, stderr)| {
        let mut reader = Reader::new(head, Some(c.clone()));
        let mut sink = Sink::new(stderr, prefix.then_some(index), lock.clone());
        let wake = Some(wake_rx.clone());
        async move {
            let r = output_stream::copy_task(&mut reader, id, index, stderr, true, wake, &mut |d| sink.write(d)).await;
            sink.finish();
            r
        }
    }))
    .buffer_unordered(MAX_FOLLOWED);
    let mut res = Ok(());
    while let Some(r) = runs.next().await {
        if let Err(e) = r {
            res = Err(e);
            break;
        }
    }
    drop(runs);
    // Owned here: stopped whether the followers finished or failed.
    watcher.abort();
    res
}

/// `rudel logs`: output is read through the leader from the agent of the task's node, so
/// no filesystem needs to be shared with it.
pub async fn logs(a: LogsArgs, head: &str) -> CmdResult {
    let mut c = client::connect(head).await?;
    let j = c
        .show_job(pb::ShowJobRequest {
            job_id: a.id,
            stale: false,
        })
        .await
        .map_err(client::failure)?
        .into_inner();
    let spec = j.spec.clone().unwrap_or_default();
    let job_id = j.id;
    // An array task's own id names one task of its array.
    let task = j.task_index.or(a.task);
    let stderr = a.stderr && !spec.error.is_empty();
    if discards(if stderr { &spec.error } else { &spec.output }) {
        let what = if stderr { "error" } else { "output" };
        eprintln!("rudel: job {job_id} discards its {what} (--{what} none): there is nothing to show");
        return Ok(0);
    }
    let all = array_indices(&j);
    if let Some(t) = task {
        if !all.contains(&t) {
            return Err(Failure::usage(anyhow!("job {job_id} has no task {t}")));
        }
    }
    let indices = task.map_or(all, |t| vec![t]);
    if a.follow {
        if j.state == "pending" {
            eprintln!("rudel: job {job_id} is pending; waiting for it to start");
        }
        follow_tasks(head, &c, job_id, &indices, &[stderr], indices.len() > 1).await?;
        return Ok(0);
    }
    let many = indices.len() > 1;
    let mut reader = Reader::new(head, Some(c));
    let mut started = 0;
    for i in indices {
        let mut buf = Vec::new();
        let got = output_stream::copy_task(&mut reader, job_id, i, stderr, false, None, &mut |d| {
            buf.extend_from_slice(d)
        })
        .await?;
        if got == Copied::Pending {
            continue;
        }
        started += 1;
        if many {
            println!("==> task {i} <==");
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&buf);
        let _ = out.flush();
    }
    if started == 0 {
        // Not an error: the job is fine, it has just not produced anything yet.
        eprintln!("rudel: job {job_id} is pending: no output yet (`rudel logs -f {job_id}` waits for it)");
    }
    Ok(0)
}

/// The exit code `run` returns for a finished job.
fn job_exit_code(j: &pb::JobInfo) -> u8 {
    match (j.exit_code, j.signal) {
        (_, Some(s)) => 128u8.saturating_add(s.clamp(0, 127) as u8),
        (Some(c), None) => u8::try_from(c.clamp(0, 255)).unwrap_or(1),
        (None, None) => 1,
    }
}

/// Why a job ended when it was not a plain exit 0, for stderr: its state, exit code or
/// signal, and the head's reason (OOM, time limit, node failure, cancelled, ...).
fn end_note(j: &pb::JobInfo) -> Option<String> {
    if j.state == "completed" && j.exit_code.unwrap_or(0) == 0 && j.signal.is_none() {
        return None;
    }
    // The head's reason often names the code already ("exit code 4"): not twice.
    let said = j.reason.contains("exit code") || j.reason.contains("signal") || j.reason.contains("killed by");
    let status = match (j.exit_code, j.signal) {
        _ if said => String::new(),
        (_, Some(s)) => format!(" (killed by signal {s})"),
        (Some(c), None) => format!(" (exit code {c})"),
        (None, None) => String::new(),
    };
    let reason = if j.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", j.reason)
    };
    Some(format!("rudel: job {} {}{status}{reason}", j.id, j.state))
}

/// `rudel run`: submit, stream output, exit with the job's code; Ctrl-C cancels the job.
///
/// Without --output/--error, the output goes to files in the agent's data directory
/// (`DATA/output/`), is streamed back through the leader, and is deleted once delivered:
/// nothing lands in a predictable place on the client's (possibly shared) `/tmp`.
pub async fn run(mut a: SubmitArgs, head: &str) -> CmdResult {
    use rudel_agent::output::AGENT_DIR_PREFIX;
    let on_agent = a.output.is_none();
    if on_agent {
        a.output = Some(format!("{AGENT_DIR_PREFIX}%j_%a.out"));
        if a.error.is_none() {
            a.error = Some(format!("{AGENT_DIR_PREFIX}%j_%a.err"));
        }
    }
    let (spec, a) = build_spec(a, false)?;
    let resp = submit_spec(head, spec, a.request_id.clone().unwrap_or_else(new_request_id)).await?;
    let id = resp.job_id;
    let mut c = client::connect(head).await?;
    let j = c
        .show_job(pb::ShowJobRequest {
            job_id: id,
            stale: false,
        })
        .await
        .map_err(client::failure)?
        .into_inner();
    let spec = j.spec.clone().unwrap_or_default();
    let indices = array_indices(&j);
    let mut streams = Vec::new();
    if !discards(&spec.output) {
        streams.push(false);
    }
    if !spec.error.is_empty() && !discards(&spec.error) {
        streams.push(true);
    }
    let follow = async {
        follow_tasks(head, &c, id, &indices, &streams, indices.len() > 1).await?;
        watch_until_done(head, &[id], None, |_| {}).await
    };
    tokio::select! {
        res = follow => {
            let fin = res?.and_then(|mut v| v.pop()).ok_or_else(|| Failure::from(anyhow!("job {id} vanished while running")))?;
            if on_agent {
                let mut reader = Reader::new(head, Some(c.clone()));
                for i in &indices {
                    output_stream::release(&mut reader, id, *i).await;
                }
            }
            if let Some(note) = end_note(&fin) {
                eprintln!("{note}");
            }
            Ok(job_exit_code(&fin))
        }
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\nrudel: interrupted; cancelling job {id}");
            let _ = c.cancel(pb::CancelRequest { job_ids: vec![id], ..Default::default() }).await;
            Ok(130)
        }
    }
}
