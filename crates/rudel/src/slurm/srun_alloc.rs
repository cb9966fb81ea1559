//! `srun` outside a job: an allocation of its own, one step in it, released at the end
//! (`srun -N2 hostname`), as Slurm's srun does. The allocation is a job whose command is
//! this same `srun` with the same arguments: inside it, that srun runs the step across
//! the allocation's nodes (`srun_step.rs`); its output is streamed back and its exit code
//! is this srun's, as `rudel run` does for any job.
use clap::Parser;

use super::srun::Step;
use super::{SlurmError, SlurmResult};

/// `rudel run`'s options, parsed from the allocation's words.
#[derive(Parser, Debug)]
struct RunLine {
    #[command(flatten)]
    a: crate::opts::SubmitArgs,
}

/// The path this srun was started by (a link named `srun`: the name picks the command,
/// so the binary's resolved path would not do).
fn own_path() -> Result<String, SlurmError> {
    let a0 = std::env::args().next().unwrap_or_else(|| "srun".into());
    if a0.contains('/') {
        return std::path::absolute(&a0)
            .map(|p| p.display().to_string())
            .map_err(|e| SlurmError::msg(format!("cannot resolve {a0}: {e}")));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(&a0))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
        .ok_or_else(|| SlurmError::msg(format!("cannot find {a0} on PATH to run it inside the allocation")))
}

/// The allocation's options: the step's shape, as Slurm sizes srun's own allocation.
pub(super) fn alloc_words(step: &Step) -> Vec<String> {
    let mut w = vec!["run".to_string()];
    let mut opt = |k: &str, v: String| {
        w.push(k.to_string());
        w.push(v);
    };
    if step.nodes > 0 {
        opt("--nodes", step.nodes.to_string());
    }
    if step.ntasks > 0 {
        opt("--ntasks", step.ntasks.to_string());
    }
    if step.ntasks_per_node > 0 {
        opt("--ntasks-per-node", step.ntasks_per_node.to_string());
    }
    if let Some(c) = step.cpus_per_task {
        opt("--cpus", c.to_string());
    }
    for n in &step.nodelist {
        opt("--nodelist", n.clone());
    }
    opt(
        "--name",
        step.job_name.clone().unwrap_or_else(|| step.command[0].clone()),
    );
    w
}

/// True if stdin is a pipe, socket or regular file: input someone meant to feed.
fn stdin_is_data() -> bool {
    // SAFETY: a zeroed stat is valid for fstat to fill; fd 0 may be closed (then false).
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(0, &mut st) != 0 {
            return false;
        }
        matches!(
            st.st_mode & libc::S_IFMT,
            libc::S_IFIFO | libc::S_IFREG | libc::S_IFSOCK
        )
    }
}

/// Allocates, runs `args` as the step inside, streams its output, returns its exit code.
pub async fn run(step: &Step, args: &[String], head: &str) -> SlurmResult {
    // The step's srun runs inside the allocation as its batch task, whose stdin is
    // /dev/null: piped input would silently never reach the tasks. (A terminal is let
    // through: what one types is for srun's Ctrl-C handling, as with `srun hostname`.)
    if step.input != super::srun_stdin::Input::None && stdin_is_data() {
        return Err(SlurmError::msg(
            "srun outside an allocation cannot forward its stdin yet (it can inside one:              sbatch or salloc). Give the input to the command (srun sh -c 'prog < FILE'),              or pass --input=none if the tasks need no input. Nothing was run",
        ));
    }
    let mut words = alloc_words(step);
    words.push("--".into());
    words.push(own_path()?);
    words.extend(args.iter().cloned());
    let line = RunLine::try_parse_from(&words).map_err(|e| SlurmError::msg(format!("{e}")))?;
    let code = crate::follow::run(line.a, head).await?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allocation_is_sized_like_the_step() {
        let s = super::super::srun::parse(&["-N".into(), "2".into(), "-n4".into(), "-l".into(), "hostname".into()])
            .unwrap();
        let w = alloc_words(&s);
        assert_eq!(w, ["run", "--nodes", "2", "--ntasks", "4", "--name", "hostname"]);
        let mut words = w;
        words.extend(["--".into(), "/x/srun".into(), "hostname".into()]);
        let line = RunLine::try_parse_from(&words).unwrap();
        assert_eq!(line.a.alloc.nodes.as_deref(), Some("2"));
    }
}
