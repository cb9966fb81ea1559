//! `salloc [-N ..] [-n ..] [CMD]`, as Slurm's: gets an allocation, runs CMD (without
//! one, the user's `$SHELL`) here, on the machine salloc runs on, with the allocation in
//! its environment, and hands the allocation back when CMD exits; the job then ends as
//! CMD's exit code says. `srun` in there starts steps across the allocation through the
//! head (`step_client.rs`). The allocation is held as `allocation.rs` says. If the job
//! ends first (time limit, `scancel`), CMD gets SIGHUP, as Slurm revokes the allocation.
use super::allocation::Allocation;
use super::srun::Step;
use super::{SlurmError, SlurmResult};

/// Parses salloc's arguments; without a command, `shell`.
fn parse(args: &[String], shell: &str) -> Result<Step, SlurmError> {
    match super::srun::parse(args) {
        Ok(s) => Ok(s),
        Err(e) if e.lines.first().is_some_and(|l| l.contains("No command")) => {
            let mut with = args.to_vec();
            with.push(shell.to_string());
            super::srun::parse(&with)
        }
        Err(e) => Err(e),
    }
}

/// Runs CMD here until it exits, or until the job ends (CMD then gets SIGHUP).
async fn run_here(alloc: &mut Allocation, cmd: &[String], vars: Vec<(String, String)>) -> Result<u8, SlurmError> {
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
            _ = alloc.revoked(), if !revoked => {
                revoked = true;
                eprintln!("salloc: Job allocation {} has been revoked.", alloc.id);
                // SAFETY: plain kill of our own child (not yet reaped: the wait above
                // has not returned).
                unsafe { libc::kill(pid as i32, libc::SIGHUP) };
            }
        }
    }
}

pub async fn salloc(args: Vec<String>, head: &str) -> SlurmResult {
    let shell = std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into());
    let step = parse(&args, &shell)?;
    // Slurm 22.05 names every salloc job `interactive` (checked: `salloc -N1 true`).
    let name = step.job_name.clone().unwrap_or_else(|| "interactive".into());
    let (mut alloc, nodes) = Allocation::obtain(&step, &name, head, "salloc", true).await?;
    let id = alloc.id;
    eprintln!("salloc: Granted job allocation {id}");
    let vars = super::allocation::env(id, &name, &nodes, &step);
    let outcome = run_here(&mut alloc, &step.command, vars).await;
    eprintln!("salloc: Relinquishing job allocation {id}");
    alloc.complete(outcome.as_ref().map_or(1, |c| i32::from(*c))).await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_command_the_shell_runs() {
        let s = parse(&["-N".into(), "2".into()], "/bin/bash").unwrap();
        assert_eq!(s.command, ["/bin/bash"]);
        let s = parse(&["-N".into(), "2".into(), "true".into()], "/bin/bash").unwrap();
        assert_eq!(s.command, ["true"]);
    }
}
