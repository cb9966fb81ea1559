//! The Slurm commands from the same binary: called as `sbatch`, `squeue`, `scancel`,
//! `sinfo`, `scontrol` (links made by `rudel slurm install DIR`), the binary answers as
//! that command, with Slurm's options, output formats, messages and exit codes.
//!
//! They find the head as the `rudel` CLI does, from the environment only (Slurm's
//! commands have no `--head`): `$RUDEL_HEAD` (default 127.0.0.1:7117) and
//! `$RUDEL_CREDENTIALS` (default: `rudel login`'s, else a local head's).
mod allocation;
mod format;
mod install;
mod multi_prog;
mod pmi_server;
pub mod sacct;
mod salloc;
mod sbatch;
mod scancel;
mod scontrol;
mod scontrol_requeue;
mod sinfo;
mod squeue;
mod srun;
mod srun_alloc;
mod srun_stdin;
mod srun_step;
mod sshare;
mod step_client;

use std::process::ExitCode;

pub use install::{install, SlurmArgs};

/// The names the binary answers to besides `rudel`.
pub const COMMANDS: [&str; 9] = [
    "sbatch", "squeue", "scancel", "sinfo", "scontrol", "sacct", "srun", "salloc", "sshare",
];

/// The Slurm command this process was started as (the file name of argv[0]), if any.
pub fn invoked_as() -> Option<&'static str> {
    let arg0 = std::env::args_os().next()?;
    let name = std::path::Path::new(&arg0).file_name()?.to_str()?.to_string();
    COMMANDS.into_iter().find(|c| *c == name)
}

/// A Slurm command's failure: the lines it prints (each prefixed `CMD: error: ` unless
/// `raw`) and its exit code (Slurm's commands exit 1 on errors).
#[derive(Debug)]
pub struct SlurmError {
    pub lines: Vec<String>,
    pub raw: bool,
    pub code: u8,
}

impl SlurmError {
    /// `CMD: error: MSG`, exit 1.
    pub fn msg(m: impl std::fmt::Display) -> SlurmError {
        SlurmError {
            lines: m.to_string().lines().map(String::from).collect(),
            raw: false,
            code: 1,
        }
    }

    /// A message printed as is (Slurm prints some without the `CMD: error:` prefix).
    pub fn raw(m: impl std::fmt::Display) -> SlurmError {
        SlurmError {
            raw: true,
            ..SlurmError::msg(m)
        }
    }
}

impl From<crate::Failure> for SlurmError {
    fn from(f: crate::Failure) -> SlurmError {
        SlurmError::msg(format!("{:#}", f.error))
    }
}

impl From<anyhow::Error> for SlurmError {
    fn from(e: anyhow::Error) -> SlurmError {
        SlurmError::msg(format!("{e:#}"))
    }
}

pub type SlurmResult = Result<u8, SlurmError>;

/// Where the Slurm commands find the head: `$RUDEL_HEAD`, else the default address.
fn head() -> String {
    std::env::var("RUDEL_HEAD")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| crate::client::DEFAULT_HEAD.to_string())
}

/// Runs the Slurm command `name` with this process's arguments and returns the exit code.
pub fn main(name: &str, rt: &tokio::runtime::Runtime) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    crate::client::set_credentials_dir(std::env::var_os("RUDEL_CREDENTIALS").map(Into::into));
    let head = head();
    let res = rt.block_on(async {
        match name {
            "sbatch" => sbatch::sbatch(args, &head).await,
            "squeue" => squeue::squeue(args, &head).await,
            "scancel" => scancel::scancel(args, &head).await,
            "sinfo" => sinfo::sinfo(args, &head).await,
            "scontrol" => scontrol::scontrol(args, &head).await,
            "srun" => srun::srun(args, &head).await,
            "salloc" => salloc::salloc(args, &head).await,
            "sshare" => sshare::sshare(args, &head).await,
            "sacct" => Ok(sacct::run_args(args.into_iter().map(Into::into).collect(), &head).await?),
            other => Err(SlurmError::msg(format!(
                "{other} is not supported yet: multi-node jobs and job steps are issue 11. \
                 Submit batch work with sbatch (or `rudel run -- CMD` to run one command and see its output)"
            ))),
        }
    });
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            for l in &e.lines {
                if e.raw {
                    eprintln!("{l}");
                } else {
                    eprintln!("{name}: error: {l}");
                }
            }
            ExitCode::from(e.code)
        }
    }
}

/// Parses a Slurm command's options with clap; a usage error is printed as Slurm's
/// commands print theirs (`CMD: <message>`, then a hint), exit 1; `--help` and
/// `--version` print and exit 0.
fn parse<T: clap::Parser>(name: &str, args: Vec<String>) -> Result<T, SlurmError> {
    match T::try_parse_from(std::iter::once(name.to_string()).chain(args)) {
        Ok(t) => Ok(t),
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            print!("{e}");
            Err(SlurmError {
                lines: Vec::new(),
                raw: true,
                code: 0,
            })
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad usage").trim_start_matches("error: ");
            Err(SlurmError::raw(format!(
                "{name}: {first}\nTry \"{name} --help\" for more information"
            )))
        }
    }
}
