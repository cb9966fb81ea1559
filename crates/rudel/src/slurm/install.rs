//! `rudel slurm install DIR`: links named after the Slurm commands, pointing at this
//! binary, so that putting DIR on PATH gives users `sbatch`, `squeue`, ...
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};

use crate::{CmdResult, Failure};

#[derive(Args, Debug)]
pub struct SlurmArgs {
    #[command(subcommand)]
    pub cmd: SlurmCmd,
}

#[derive(Subcommand, Debug)]
pub enum SlurmCmd {
    /// Create sbatch, squeue, scancel, sinfo, scontrol, sacct, srun and salloc in DIR as
    /// links to this binary (which answers as the command it is called by).
    Install(InstallArgs),
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Directory for the links (created if missing), e.g. ~/.local/bin.
    pub dir: PathBuf,
    /// Replace files of those names that are not links (e.g. a real Slurm's commands).
    #[arg(long)]
    pub force: bool,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What happened to one name.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Created,
    Replaced,
    Unchanged,
}

impl Outcome {
    fn as_str(&self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Replaced => "replaced",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// `rudel slurm ...`.
pub async fn install(a: SlurmArgs, _head: &str) -> CmdResult {
    let SlurmCmd::Install(a) = a.cmd;
    let exe = std::env::current_exe().context("cannot find the path of this rudel binary")?;
    std::fs::create_dir_all(&a.dir).with_context(|| format!("cannot create {}", a.dir.display()))?;
    // Refuse before changing anything, so a refusal leaves the directory as it was.
    if !a.force {
        let blocking: Vec<String> = super::COMMANDS
            .iter()
            .map(|c| a.dir.join(c))
            .filter(|p| p.symlink_metadata().is_ok_and(|m| !m.file_type().is_symlink()))
            .map(|p| p.display().to_string())
            .collect();
        if !blocking.is_empty() {
            return Err(Failure::usage(anyhow!(
                "not replacing {}: not links (a real Slurm's commands?); nothing was changed. Use --force to replace them",
                blocking.join(", ")
            )));
        }
    }
    let mut done = Vec::new();
    for c in super::COMMANDS {
        let link = a.dir.join(c);
        let outcome = place_link(&exe, &link)?;
        done.push((c, link, outcome));
    }
    if a.json {
        let v: Vec<serde_json::Value> = done
            .iter()
            .map(|(c, l, o)| serde_json::json!({"command": c, "path": l, "target": exe, "outcome": o.as_str()}))
            .collect();
        println!("{}", serde_json::json!({ "links": v }));
    } else {
        for (_, l, o) in &done {
            println!("{} {} -> {}", o.as_str(), l.display(), exe.display());
        }
    }
    Ok(0)
}

/// Makes `link` a symbolic link to `exe` (replacing whatever is there).
fn place_link(exe: &Path, link: &Path) -> anyhow::Result<Outcome> {
    let existing = link.symlink_metadata().ok();
    if existing.as_ref().is_some_and(|m| m.file_type().is_symlink())
        && std::fs::read_link(link).ok().as_deref() == Some(exe)
    {
        return Ok(Outcome::Unchanged);
    }
    // A new link under a temporary name, renamed over the old one: the command is never
    // missing, even for a moment, for users running it meanwhile.
    let tmp = link.with_extension(format!("rudel-tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(exe, &tmp).with_context(|| format!("cannot create the link {}", tmp.display()))?;
    std::fs::rename(&tmp, link).with_context(|| format!("cannot move the link into place at {}", link.display()))?;
    Ok(if existing.is_some() {
        Outcome::Replaced
    } else {
        Outcome::Created
    })
}
