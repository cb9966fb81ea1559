//! `rudel`: one binary for the head, the agent, and every client command.
mod admin;
mod alloc_opts;
mod client;
mod config_cmd;
mod daemon;
mod exec;
mod explain_cmd;
mod follow;
mod history;
mod hold_cmd;
mod job_refs;
mod kv_cmd;
mod lazy_args;
mod limits_cmd;
mod node_cmd;
mod opts;
mod output_stream;
mod partitions_cmd;
mod requeue_cmd;
mod runtime;
mod share_cmd;
mod show;
mod slurm;
mod socket;
mod step_tree_args;
mod tokens;
mod whoami;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lazy_args::Lazy;

/// A cluster manager and batch scheduler: run batch work on one laptop or many Linux nodes.
///
/// Start a one-node cluster with `rudel up`, then submit from another terminal:
///   rudel submit -- echo hello        # queue a job; output goes to rudel-<id>.out
///   rudel run -- hostname             # run and stream the output, exit with its code
///   rudel submit --array 1-100%10 -- ./work.sh   # an array, at most 10 at once
///   rudel jobs; rudel show 1; rudel wait 1; rudel logs 1 -f
#[derive(Parser, Debug)]
#[command(
    name = "rudel",
    version,
    about,
    long_about,
    verbatim_doc_comment,
    args_override_self = true
)]
struct Cli {
    /// Head address (host:port), or several (A,B,C: the leader is found); also $RUDEL_HEAD.
    /// Default 127.0.0.1:7117.
    #[arg(long, global = true, env = "RUDEL_HEAD", value_name = "ADDR")]
    head: Option<String>,
    /// Credentials directory (ca.pem, cert.pem, key.pem); also $RUDEL_CREDENTIALS. Default:
    /// ~/.config/rudel/credentials (from `rudel login`), else DATA/head/client of a local head.
    #[arg(long, global = true, env = "RUDEL_CREDENTIALS", value_name = "DIR")]
    credentials: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a head and a local agent in one foreground process (a one-node cluster).
    Up(Lazy<daemon::UpArgs>),
    /// Run a head (controller) only.
    Head(Lazy<daemon::HeadArgs>),
    /// Run an agent that executes tasks for a head.
    Agent(Lazy<daemon::AgentArgs>),
    /// Queue a job: `rudel submit [OPTIONS] -- CMD [ARGS]` or `rudel submit [OPTIONS] SCRIPT [ARGS]`.
    Submit(Lazy<opts::SubmitArgs>),
    /// Submit a job, stream its output, and exit with its exit code.
    Run(Lazy<opts::SubmitArgs>),
    /// List jobs (unfinished ones unless --all).
    Jobs(Lazy<show::JobsArgs>),
    /// Show one job in detail.
    Show(Lazy<show::ShowArgs>),
    /// Cancel jobs: pending tasks end at once, running ones are killed with their whole process tree.
    Cancel(Lazy<show::CancelArgs>),
    /// Keep pending jobs from starting (running tasks go on) until `rudel release`.
    Hold(Lazy<hold_cmd::HoldArgs>),
    /// Let held jobs start.
    Release(Lazy<hold_cmd::HoldArgs>),
    /// Change jobs that have not started: --priority, --time, --name.
    Update(Lazy<hold_cmd::UpdateArgs>),
    /// Put jobs or array tasks (41_3) back to pending to run again; running ones are killed first.
    Requeue(Lazy<requeue_cmd::RequeueArgs>),
    /// Wait until jobs finish; exit 0 only if every task completed with exit code 0.
    Wait(Lazy<follow::WaitArgs>),
    /// Print a job's output (--follow: keep printing until the job ends).
    Logs(Lazy<follow::LogsArgs>),
    /// List compute nodes and their resources.
    Nodes(Lazy<show::NodesArgs>),
    /// List partitions (queues): state, tier, nodes, limits, load; `*` marks the default.
    Partitions(Lazy<partitions_cmd::PartitionsArgs>),
    /// Stop placing new work on nodes; running work finishes (state draining, then drained).
    Drain(Lazy<show::DrainArgs>),
    /// Let drained nodes take work again.
    Resume(Lazy<show::ResumeArgs>),
    /// Manage nodes (admin): `rudel node forget NAME` lets another machine take the name.
    Node(Lazy<node_cmd::NodeArgs>),
    /// Run a command on nodes in parallel through their agents (no ssh); outputs grouped.
    Exec(Lazy<exec::ExecArgs>),
    /// The head answering: its id, the leader, Raft term and last applied log index.
    Status(Lazy<show::StatusArgs>),
    /// Who the head takes you for: user, uid (local socket), role, transport, certificate.
    Whoami(Lazy<whoami::WhoamiArgs>),
    /// Why a job waits, node by node: what each node lacks now, which job the free nodes
    /// are kept for, its place in the queue.
    Explain(Lazy<explain_cmd::ExplainArgs>),
    /// Your limits (pending, running, submit rate) next to what you use now; admins may
    /// ask for any user.
    Limits(Lazy<limits_cmd::LimitsArgs>),
    /// Fair-share per user: shares, decayed usage, effective usage, fair-share factor
    /// (as Slurm's sshare).
    Share(Lazy<share_cmd::ShareArgs>),
    /// The job's key-value store, from inside a running job: put, get, wait, incr
    /// (rendezvous and barriers between a job's tasks; deleted with the job).
    Kv(Lazy<kv_cmd::KvArgs>),
    /// Manage join tokens (admin): create, list, revoke.
    Token(Lazy<tokens::TokenArgs>),
    /// Get user credentials for this machine with a client/admin token (for remote CLIs).
    Login(Lazy<tokens::LoginArgs>),
    /// Operate the head group: list/remove heads, step-down drill.
    Admin(Lazy<admin::AdminArgs>),
    /// The Slurm commands (sbatch, squeue, scancel, sinfo, scontrol): `rudel slurm install DIR`
    /// makes them as links to this binary, which answers as the name it is called by.
    Slurm(Lazy<slurm::SlurmArgs>),
    /// Finished jobs from the accounting history (kept --history-retention on the heads).
    History(Lazy<history::HistoryArgs>),
    /// Slurm's sacct (the argv[0] dispatcher runs this for `sacct`).
    #[command(hide = true, disable_help_flag = true)]
    Sacct {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

impl Cmd {
    /// Daemons and the commands that stream keep worker threads; the rest are one-shot
    /// calls (see `runtime`).
    fn shape(&self) -> runtime::Shape {
        match self {
            Cmd::Up(_) | Cmd::Head(_) | Cmd::Agent(_) | Cmd::Run(_) | Cmd::Wait(_) | Cmd::Logs(_) => {
                runtime::Shape::Workers
            }
            Cmd::Exec(_) | Cmd::Admin(_) | Cmd::Slurm(_) => runtime::Shape::Workers,
            _ => runtime::Shape::OneShot,
        }
    }
}

/// Exit code for bad usage or input (like clap's own usage errors).
pub const EXIT_USAGE: u8 = 2;

/// An error with the exit code it should produce.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    /// Bad input from the user: exit 2.
    pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            error: error.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure { code: 1, error }
    }
}

/// What a command returns: its exit code, or a failure.
pub type CmdResult = Result<u8, Failure>;

fn main() -> ExitCode {
    // Called as `sbatch`, `squeue`, ... (a link made by `rudel slurm install`).
    if let Some(name) = slurm::invoked_as() {
        // SAFETY: setting a signal disposition to its default has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        return match client_runtime(name) {
            Ok(rt) => slurm::main(name, &rt),
            Err(e) => {
                eprintln!("{name}: error: cannot start the async runtime: {e}");
                ExitCode::from(1)
            }
        };
    }
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Up(_) | Cmd::Head(_) | Cmd::Agent(_)) {
        // A client piped into `head` should end quietly when the pipe closes, like other
        // Unix tools, rather than panic on a failed write.
        // SAFETY: setting a signal disposition to its default has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    init_tracing(&cli.command);
    let rt = match runtime::build(cli.command.shape()) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rudel: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let head = cli.head.clone().unwrap_or_else(|| client::DEFAULT_HEAD.to_string());
    client::set_credentials_dir(cli.credentials.clone());
    let res = rt.block_on(async move {
        match cli.command {
            Cmd::Up(Lazy(a)) => daemon::up(a).await,
            Cmd::Head(Lazy(a)) => daemon::head(a).await,
            Cmd::Agent(Lazy(a)) => daemon::agent(a, &head).await,
            Cmd::Submit(Lazy(a)) => opts::submit(a, &head).await,
            Cmd::Run(Lazy(a)) => follow::run(a, &head).await,
            Cmd::Jobs(Lazy(a)) => show::jobs(a, &head).await,
            Cmd::Show(Lazy(a)) => show::show(a, &head).await,
            Cmd::Cancel(Lazy(a)) => show::cancel(a, &head).await,
            Cmd::Hold(Lazy(a)) => hold_cmd::hold(a, &head, false).await,
            Cmd::Release(Lazy(a)) => hold_cmd::hold(a, &head, true).await,
            Cmd::Update(Lazy(a)) => hold_cmd::update(a, &head).await,
            Cmd::Requeue(Lazy(a)) => requeue_cmd::requeue(a, &head).await,
            Cmd::Wait(Lazy(a)) => follow::wait(a, &head).await,
            Cmd::Logs(Lazy(a)) => follow::logs(a, &head).await,
            Cmd::Nodes(Lazy(a)) => show::nodes(a, &head).await,
            Cmd::Partitions(Lazy(a)) => partitions_cmd::partitions(a, &head).await,
            Cmd::Drain(Lazy(a)) => show::drain(a, &head).await,
            Cmd::Resume(Lazy(a)) => show::resume(a, &head).await,
            Cmd::Node(Lazy(a)) => node_cmd::node(a, &head).await,
            Cmd::Exec(Lazy(a)) => exec::exec(a, &head).await,
            Cmd::Status(Lazy(a)) => show::status(a, &head).await,
            Cmd::Whoami(Lazy(a)) => whoami::whoami(a, &head).await,
            Cmd::Explain(Lazy(a)) => explain_cmd::explain(a, &head).await,
            Cmd::Limits(Lazy(a)) => limits_cmd::limits(a, &head).await,
            Cmd::Share(Lazy(a)) => share_cmd::share(a, &head).await,
            Cmd::Kv(Lazy(a)) => kv_cmd::kv(a).await,
            Cmd::Token(Lazy(a)) => tokens::token(a, &head).await,
            Cmd::Login(Lazy(a)) => tokens::login(a, &head).await,
            Cmd::Admin(Lazy(a)) => admin::admin(a, &head).await,
            Cmd::Slurm(Lazy(a)) => slurm::install(a, &head).await,
            Cmd::History(Lazy(a)) => history::history(a, &head).await,
            Cmd::Sacct { args } => slurm::sacct::run_args(args, &head).await,
        }
    });
    // Background tasks (e.g. a stream the server still holds) must not keep us alive.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    match res {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("rudel: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

/// The runtime of a Slurm command (a client: one worker), with warnings-only logs.
///
/// The query commands run on the calling thread: workflow tools start them many times a
/// second, and a worker thread (its stack, its malloc arena, the wake-ups between it and
/// the main thread) was a measurable part of each process's cost. The others keep a worker
/// so a blocking wait (srun's child) never starves the connection they hold.
fn client_runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUDEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=warn,h2=warn,tower=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    if matches!(name, "squeue" | "sacct" | "sinfo") {
        return runtime::build(runtime::Shape::OneShot);
    }
    runtime::build(runtime::Shape::Workers)
}

fn init_tracing(cmd: &Cmd) {
    use std::io::IsTerminal;
    let daemon = matches!(cmd, Cmd::Up(_) | Cmd::Head(_) | Cmd::Agent(_));
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if !daemon && std::env::var_os("RUDEL_LOG").is_none() {
        // A client's default is warnings from every crate: a plain level, without the
        // per-crate filter (parsing it was 2% of a `rudel submit`'s CPU).
        fmt.with_max_level(tracing::Level::WARN).init();
        return;
    }
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUDEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},openraft=warn,h2=warn,tower=warn")));
    fmt.with_env_filter(filter).init();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks over every subcommand, the lazily built ones included
    /// (`debug_assert` builds the whole tree): a duplicated option or a bad default is
    /// found here rather than by the user who calls that subcommand.
    #[test]
    fn the_command_line_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
