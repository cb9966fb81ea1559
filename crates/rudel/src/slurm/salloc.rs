//! `salloc [-N ..] [-n ..] [CMD]`, as Slurm's: gets an allocation, runs CMD (without
//! one, the user's `$SHELL`) here, on the machine salloc runs on, with the allocation in
//! its environment, and releases the allocation when CMD exits. `srun` in there starts
//! steps across the allocation through the head (`step_client.rs`).
//!
//! The allocation is a job whose only task holds it (`sleep infinity` on its first node,
//! output discarded) until salloc cancels it; its state ends `cancelled`. If the job
//! ends first (time limit, `scancel`), CMD gets SIGHUP, as Slurm revokes the allocation.
use std::time::Duration;

use clap::Parser;
use rudel_proto::v1 as pb;

use super::srun::Step;
use super::{SlurmError, SlurmResult};

/// `rudel submit`'s options, parsed from the holder job's words.
#[derive(Parser, Debug)]
struct SubmitLine {
    #[command(flatten)]
    a: crate::opts::SubmitArgs,
}

/// How often salloc looks at its job.
const POLL: Duration = Duration::from_millis(200);

/// The holder job's words: the allocation's shape, discarded output, a command that
/// waits until cancelled.
fn holder_words(step: &Step, name: &str) -> Vec<String> {
    let mut w = super::srun_alloc::alloc_words(step);
    w[0] = "submit".into();
    // alloc_words ends with `--name NAME`.
    if let Some(last) = w.last_mut() {
        *last = name.to_string();
    }
    w.extend(["--output", "/dev/null", "--", "sleep", "infinity"].map(String::from));
    w
}

/// Parses salloc's arguments; without a command, `shell`. True if a command was given.
fn parse(args: &[String], shell: &str) -> Result<(Step, bool), SlurmError> {
    match super::srun::parse(args) {
        Ok(s) => Ok((s, true)),
        Err(e) if e.lines.first().is_some_and(|l| l.contains("No command")) => {
            let mut with = args.to_vec();
            with.push(shell.to_string());
            Ok((super::srun::parse(&with)?, false))
        }
        Err(e) => Err(e),
    }
}

async fn show(
    c: &mut pb::rudel_client::RudelClient<tonic::transport::Channel>,
    id: u64,
) -> Result<pb::JobInfo, SlurmError> {
    c.show_job(pb::ShowJobRequest {
        job_id: id,
        stale: false,
    })
    .await
    .map(tonic::Response::into_inner)
    .map_err(|s| SlurmError::msg(format!("cannot read job {id}: {}", s.message())))
}

/// Waits until the job runs; its record then (nodes). Says it waits, as Slurm's does.
async fn granted(
    c: &mut pb::rudel_client::RudelClient<tonic::transport::Channel>,
    id: u64,
) -> Result<pb::JobInfo, SlurmError> {
    eprintln!("salloc: Pending job allocation {id}");
    let mut said = false;
    loop {
        let j = show(c, id).await?;
        match j.state.as_str() {
            "running" if !j.nodes.is_empty() => return Ok(j),
            "pending" | "held" | "running" => {}
            other => {
                return Err(SlurmError::msg(format!(
                    "job {id} ended ({other}) before it was granted: {}",
                    j.reason
                )))
            }
        }
        if !said {
            eprintln!("salloc: job {id} queued and waiting for resources");
            said = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The allocation's variables for CMD.
fn env(j: &pb::JobInfo, step: &Step) -> Vec<(String, String)> {
    let id = j.id.to_string();
    let nodes = rudel_core::hostlist::compress(&j.nodes);
    let mut v = vec![
        ("SLURM_JOB_ID", id.clone()),
        ("SLURM_JOBID", id),
        ("SLURM_JOB_NAME", j.name.clone()),
        ("SLURM_JOB_NODELIST", nodes.clone()),
        ("SLURM_NODELIST", nodes),
        ("SLURM_NNODES", j.nodes.len().to_string()),
        ("SLURM_JOB_NUM_NODES", j.nodes.len().to_string()),
    ];
    if step.ntasks > 0 {
        v.push(("SLURM_NTASKS", step.ntasks.to_string()));
        v.push(("SLURM_NPROCS", step.ntasks.to_string()));
    }
    v.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Runs CMD here until it exits, or until the job ends (CMD then gets SIGHUP).
async fn run_here(
    c: &mut pb::rudel_client::RudelClient<tonic::transport::Channel>,
    id: u64,
    cmd: &[String],
    vars: Vec<(String, String)>,
) -> Result<u8, SlurmError> {
    let mut child = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .envs(vars)
        // A job step's marker would make srun in there take itself for a task.
        .env_remove("RUDEL_TASK")
        .env_remove("RUDEL_AGENT_SOCKET")
        .spawn()
        .map_err(|e| SlurmError::msg(format!("cannot run {}: {e}", cmd[0])))?;
    let pid = child.id();
    // Waited for on a thread of its own (the binary's runtime has no process driver).
    let (tx, mut exited) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    // Ctrl-C is for CMD (an interactive shell's foreground job), not for salloc.
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| SlurmError::msg(format!("signal: {e}")))?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut revoked = false;
    loop {
        tokio::select! {
            st = &mut exited => {
                let st = st
                    .map_err(|_| SlurmError::msg("lost the wait for the command"))?
                    .map_err(|e| SlurmError::msg(format!("waiting for {}: {e}", cmd[0])))?;
                use std::os::unix::process::ExitStatusExt;
                let code = st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
                return Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(255));
            }
            _ = int.recv() => {}
            _ = tick.tick(), if !revoked => {
                let ended = show(c, id).await.is_ok_and(|j| !matches!(j.state.as_str(), "running" | "pending" | "held"));
                if ended {
                    revoked = true;
                    eprintln!("salloc: Job allocation {id} has been revoked.");
                    // SAFETY: plain kill of our own child (not yet reaped: the wait above
                    // has not returned).
                    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
                }
            }
        }
    }
}

pub async fn salloc(args: Vec<String>, head: &str) -> SlurmResult {
    let shell = std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into());
    let (step, given) = parse(&args, &shell)?;
    let name = step.job_name.clone().unwrap_or_else(|| {
        if given {
            step.command[0].clone()
        } else {
            "interactive".into()
        }
    });
    let words = holder_words(&step, &name);
    let line = SubmitLine::try_parse_from(&words).map_err(|e| SlurmError::msg(format!("{e}")))?;
    let (spec, a) = crate::opts::build_spec(line.a, false)?;
    let request_id = a.request_id.clone().unwrap_or_else(crate::opts::new_request_id);
    let id = crate::opts::submit_spec(head, spec, request_id).await?.job_id;
    let mut c = crate::client::connect(head)
        .await
        .map_err(|e| SlurmError::msg(format!("{e:#}")))?;
    // Ctrl-C while waiting cancels the request (below), as Slurm's salloc does; without
    // this the pending job would later hold its allocation with nobody to release it.
    let waited = tokio::select! {
        g = granted(&mut c, id) => g,
        _ = tokio::signal::ctrl_c() => Err(SlurmError::msg(format!(
            "interrupted while waiting; job allocation {id} is cancelled"
        ))),
    };
    let outcome = match waited {
        Ok(j) => {
            eprintln!("salloc: Granted job allocation {id}");
            run_here(&mut c, id, &step.command, env(&j, &step)).await
        }
        Err(e) => Err(e),
    };
    let _ = c
        .cancel(pb::CancelRequest {
            job_ids: vec![id],
            ..Default::default()
        })
        .await;
    eprintln!("salloc: Relinquishing job allocation {id}");
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_command_the_shell_runs_and_the_holder_is_named_interactive() {
        let (s, given) = parse(&["-N".into(), "2".into()], "/bin/bash").unwrap();
        assert!(!given);
        assert_eq!(s.command, ["/bin/bash"]);
        let w = holder_words(&s, "interactive");
        let line = SubmitLine::try_parse_from(&w).unwrap();
        assert_eq!(line.a.alloc.nodes.as_deref(), Some("2"));
        assert_eq!(w[w.len() - 2..], ["sleep", "infinity"]);
    }
}
