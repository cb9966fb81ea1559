//! Waiting on jobs and following their output: `rudel wait`, `logs`, `run`.
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use rudel_core::parse;
use rudel_core::pattern::{self, PatternVars};
use rudel_proto::v1 as pb;
use tokio::time::Instant;

use crate::opts::{build_spec, new_request_id, submit_spec, SubmitArgs};
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
pub struct LogsArgs {
    /// Job id.
    pub id: u64,
    /// Keep printing new output until the job ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Array index of the task (default: all tasks; with --follow, the first).
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

/// Output path of one task, resolved like the head does.
fn task_path(j: &pb::JobInfo, index: u32, stderr: bool) -> Option<PathBuf> {
    let spec = j.spec.clone().unwrap_or_default();
    let is_array = !spec.array.is_empty();
    let node = j
        .task_details
        .iter()
        .find(|t| t.index == index)
        .map(|t| t.node.clone())
        .or_else(|| j.nodes.first().cloned())
        .unwrap_or_default();
    // The task's own job id: the array's id plus the task's position (as the head
    // computes it for `%j`).
    let position = rudel_core::parse::parse_array(&spec.array)
        .ok()
        .and_then(|a| a.position_of(index))
        .unwrap_or(0);
    let vars = PatternVars {
        job: j.id,
        task_job: j.id + position,
        index: is_array.then_some(index),
        name: &j.name,
        node: &node,
        user: &spec.user,
    };
    let out_pat = if spec.output.is_empty() {
        pattern::default_output(is_array).to_string()
    } else {
        spec.output.clone()
    };
    if stderr && !spec.error.is_empty() {
        return pattern::resolve(&spec.error, &vars, &spec.chdir).map(PathBuf::from);
    }
    pattern::resolve(&out_pat, &vars, &spec.chdir).map(PathBuf::from)
}

fn array_indices(j: &pb::JobInfo) -> Vec<u32> {
    let spec = j.spec.clone().unwrap_or_default();
    match parse::parse_array(&spec.array) {
        Ok(a) if !spec.array.is_empty() => (0..a.len()).filter_map(|p| a.index_at(p)).collect(),
        _ => vec![0],
    }
}

/// Copies new bytes of `path` from `offset` to `out`; returns the new offset.
fn copy_new(path: &Path, offset: u64, out: &mut dyn Write) -> u64 {
    let Ok(mut f) = std::fs::File::open(path) else {
        return offset;
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut buf = Vec::new();
    match f.read_to_end(&mut buf) {
        Ok(n) if n > 0 => {
            let _ = out.write_all(&buf);
            let _ = out.flush();
            offset + n as u64
        }
        _ => offset,
    }
}

/// Follows files until the job ends: polls the files every 100 ms (they may live on a
/// shared filesystem, where inotify does not see remote writes).
async fn follow_files(head: &str, id: u64, files: Vec<(PathBuf, bool)>) -> Result<Option<pb::JobInfo>, Failure> {
    let mut offsets = vec![0u64; files.len()];
    let drain = |offsets: &mut Vec<u64>| {
        for (i, (p, to_stderr)) in files.iter().enumerate() {
            offsets[i] = if *to_stderr {
                copy_new(p, offsets[i], &mut std::io::stderr())
            } else {
                copy_new(p, offsets[i], &mut std::io::stdout())
            };
        }
    };
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let head_owned = head.to_string();
    let watcher = tokio::spawn(async move {
        let r = watch_until_done(&head_owned, &[id], None, |_| {}).await;
        let _ = done_tx.send(r);
    });
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let result = loop {
        tokio::select! {
            _ = tick.tick() => drain(&mut offsets),
            r = &mut done_rx => break r.map_err(|_| Failure::from(anyhow!("lost track of job {id}")))?,
        }
    };
    watcher.abort();
    drain(&mut offsets);
    Ok(result?.and_then(|mut v| v.pop()))
}

/// `rudel logs`.
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
    let indices = match a.task {
        Some(t) => vec![t],
        None => array_indices(&j),
    };
    if a.follow {
        let index = indices.first().copied().unwrap_or(0);
        let Some(path) = task_path(&j, index, a.stderr) else {
            return Err(Failure::usage(anyhow!(
                "job {} discards its output (--output none)",
                a.id
            )));
        };
        follow_files(head, a.id, vec![(path, false)]).await?;
        return Ok(0);
    }
    let many = indices.len() > 1;
    let mut printed = 0;
    for i in indices {
        let Some(path) = task_path(&j, i, a.stderr) else {
            return Err(Failure::usage(anyhow!(
                "job {} discards its output (--output none)",
                a.id
            )));
        };
        if !path.exists() {
            continue;
        }
        if many {
            println!("==> task {i}: {} <==", path.display());
        }
        copy_new(&path, 0, &mut std::io::stdout());
        printed += 1;
    }
    if printed == 0 && j.state != "pending" {
        eprintln!(
            "rudel: no output file of job {} found here (looked for {})",
            a.id, j.output_path
        );
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

/// `rudel run`: submit, stream output, exit with the job's code; Ctrl-C cancels the job.
pub async fn run(mut a: SubmitArgs, head: &str) -> CmdResult {
    let mut temp_dir = None;
    if a.output.is_none() {
        // Like srun: output goes to the terminal, not to files left behind.
        let dir = std::env::temp_dir().join(format!("rudel-run-{}", unsafe { libc::getuid() }));
        std::fs::create_dir_all(&dir).map_err(|e| Failure::from(anyhow!("cannot create {}: {e}", dir.display())))?;
        a.output = Some(dir.join("%j_%a.out").display().to_string());
        if a.error.is_none() {
            a.error = Some(dir.join("%j_%a.err").display().to_string());
        }
        temp_dir = Some(dir);
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
    let indices = array_indices(&j);
    let cleanup = |j: &pb::JobInfo| {
        if temp_dir.is_some() {
            for i in array_indices(j) {
                for e in [false, true] {
                    if let Some(p) = task_path(j, i, e) {
                        let _ = std::fs::remove_file(p);
                    }
                }
            }
        }
    };
    let follow = async {
        if indices.len() == 1 {
            let mut files = Vec::new();
            if let Some(p) = task_path(&j, indices[0], false) {
                files.push((p, false));
            }
            if let Some(p) = task_path(&j, indices[0], true) {
                if files.first().is_none_or(|(o, _)| *o != p) {
                    files.push((p, true));
                }
            }
            follow_files(head, id, files).await
        } else {
            let fin = watch_until_done(head, &[id], None, |_| {})
                .await?
                .and_then(|mut v| v.pop());
            for i in &indices {
                if let Some(p) = task_path(&j, *i, false) {
                    copy_new(&p, 0, &mut std::io::stdout());
                }
                if let Some(p) = task_path(&j, *i, true) {
                    copy_new(&p, 0, &mut std::io::stderr());
                }
            }
            Ok(fin)
        }
    };
    tokio::select! {
        res = follow => {
            let fin = res?.ok_or_else(|| Failure::from(anyhow!("job {id} vanished while running")))?;
            cleanup(&fin);
            if fin.state != "completed" && fin.state != "failed" {
                eprintln!("rudel: job {id} {}{}", fin.state, if fin.reason.is_empty() { String::new() } else { format!(": {}", fin.reason) });
            }
            Ok(job_exit_code(&fin))
        }
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\nrudel: interrupted; cancelling job {id}");
            let _ = c.cancel(pb::CancelRequest { job_ids: vec![id], ..Default::default() }).await;
            cleanup(&j);
            Ok(130)
        }
    }
}
