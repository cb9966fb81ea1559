//! `rudel submit` / `rudel run`: options (from the command line and from #RUDEL/#SBATCH
//! lines of a script) to a job spec.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Parser};
use rudel_core::limits::{self, check_spec, InputError};
use rudel_core::parse;
use rudel_proto::v1 as pb;
use tokio::time::Instant;

use crate::{client, CmdResult, Failure};

/// Options shared by `submit` and `run`.
#[derive(Args, Debug, Clone, Default)]
pub struct SubmitArgs {
    /// Cpus per task.
    #[arg(short = 'c', long, value_name = "N")]
    pub cpus: Option<u32>,
    /// Memory per task, e.g. 512M, 4G (a plain number is MiB); enforced as a limit.
    #[arg(long, value_name = "SIZE")]
    pub mem: Option<String>,
    /// Memory per cpu (the task gets it times --cpus), as Slurm's --mem-per-cpu.
    #[arg(long, value_name = "SIZE")]
    pub mem_per_cpu: Option<String>,
    /// Time limit per task, e.g. 30s, 10m, 2h, 1-00:00:00, 90 (minutes).
    #[arg(short = 't', long, value_name = "DURATION")]
    pub time: Option<String>,
    /// Job name (default: the command's name).
    #[arg(short = 'J', long, value_name = "NAME")]
    pub name: Option<String>,
    /// Admins only: submit on behalf of this Unix user (the head refuses it for others;
    /// without it the job's user is whoever the head identifies the caller as).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Priority: higher runs first (default 0; may be negative).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub priority: Option<i32>,
    /// Job array, e.g. 1-100, 1-100:2, 1,5,7, 1-1000%50 (%N: at most N run at once).
    #[arg(short = 'a', long, value_name = "SPEC")]
    pub array: Option<String>,
    /// Output file pattern (%j job id, %a array index, %x name, %N node, %u user); "none" discards.
    #[arg(short = 'o', long, value_name = "PATTERN")]
    pub output: Option<String>,
    /// Error file pattern (default: into the output file); "none" discards.
    #[arg(short = 'e', long, value_name = "PATTERN")]
    pub error: Option<String>,
    /// Working directory of the tasks (default: the current directory).
    #[arg(short = 'D', long, value_name = "DIR")]
    pub chdir: Option<String>,
    /// Set an environment variable for the tasks (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Which of your environment variables the tasks get (Slurm's --export): ALL (default),
    /// NONE, VAR,VAR (only those), VAR=val to set one; ALL,VAR=val adds to everything.
    #[arg(long, value_name = "ALL|NONE|VARS")]
    pub export: Option<String>,
    /// Rerun the task elsewhere if its node is lost (at-least-once; the default).
    #[arg(long, overrides_with = "no_requeue")]
    pub requeue: bool,
    /// Never run a task twice: if its node is lost it ends `node_fail` (at-most-once).
    #[arg(long, overrides_with = "requeue")]
    pub no_requeue: bool,
    /// Run only on nodes matching this expression, e.g. 'gpu && rack==a', 'mem>=64G || !slow'.
    #[arg(short = 'C', long, value_name = "EXPR")]
    pub constraint: Option<String>,
    /// GPUs per task: the task gets that many GPUs of its node to itself, named by
    /// CUDA_VISIBLE_DEVICES (and ROCR_VISIBLE_DEVICES, GPU_DEVICE_ORDINAL, RUDEL_GPUS).
    #[arg(short = 'G', long, value_name = "N")]
    pub gpus: Option<u32>,
    /// Generic resources per task, Slurm's form: gpu:2, gpu:a100:1, fpga (1), a,b.
    #[arg(long, value_name = "NAME[:TYPE][:N],...")]
    pub gres: Option<String>,
    /// Cluster licenses per task, e.g. matlab:2,ansys (declared by an admin:
    /// `rudel admin config set licenses=matlab:10`); the task waits until they are free.
    #[arg(short = 'L', long, value_name = "NAME[:N],...")]
    pub licenses: Option<String>,
    /// Partitions the job may run in, first preferred (default: the default partition;
    /// `rudel partitions` lists them). Their defaults apply: time limit, memory per cpu.
    #[arg(short = 'p', long, value_name = "NAME[,NAME...]")]
    pub partition: Option<String>,
    /// The account to charge (default: your first account, if an admin declared accounts
    /// with `rudel admin config set account.NAME=users=...`); its limits apply.
    #[arg(short = 'A', long, value_name = "NAME")]
    pub account: Option<String>,
    /// Start only once these jobs reach a state, Slurm's syntax: afterok:ID[:ID...] (ended
    /// completed), afterany, afternotok, after:ID[+MIN] (started), singleton (no other job
    /// of this name and user runs); `,` = all, `?` = any. `ID_INDEX` names one array task.
    #[arg(short = 'd', long, value_name = "TYPE:ID[:ID...]")]
    pub dependency: Option<String>,
    /// With --dependency: `yes` cancels the job when its dependency can never hold
    /// (default `no`: it stays pending with reason DependencyNeverSatisfied, as in Slurm).
    #[arg(long, value_name = "yes|no")]
    pub kill_on_invalid_dep: Option<String>,
    /// Submit held: nothing starts until `rudel release ID`.
    #[arg(short = 'H', long)]
    pub hold: bool,
    /// Start no task before this time: now+N[seconds|minutes|hours|days], HH:MM[:SS],
    /// YYYY-MM-DD[THH:MM[:SS]] (UTC), as read by the head's clock.
    #[arg(short = 'b', long, value_name = "TIME")]
    pub begin: Option<String>,
    /// Send SIG to the job's script TIME seconds (default 60) before its time limit, so a
    /// `trap` can checkpoint: B:USR1@120 (Slurm's --signal; the B: form only).
    #[arg(long, value_name = "B:SIG[@TIME]")]
    pub signal: Option<String>,
    /// append: add to existing output files (e.g. over requeues) instead of truncating them.
    #[arg(long, value_name = "append|truncate")]
    pub open_mode: Option<String>,
    /// Client request id (letters, digits and . _ : @ + -; at most 256): a submit repeated
    /// with the same id returns the job of the first one instead of creating a second.
    /// Default: a fresh id. When a submit's outcome is unknown, rudel prints the command
    /// to retry it safely with its id (and exits 124).
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub alloc: crate::alloc_opts::AllocArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments (after `--`), or a script file and its arguments.
    #[arg(trailing_var_arg = true, value_name = "CMD|SCRIPT")]
    pub command: Vec<String>,
}

/// Parses the directive lines of a script as if they were given on the command line.
#[derive(Parser, Debug)]
#[command(name = "script directives", no_binary_name = true, args_override_self = true)]
struct DirectiveArgs {
    #[command(flatten)]
    args: SubmitArgs,
}

/// Did the user put `--` before the command? (Then it is a command, not a script.)
fn dash_dash_given() -> bool {
    std::env::args().any(|a| a == "--")
}

/// Merges `later` over `earlier`: options given in `later` win.
fn merge(earlier: SubmitArgs, later: SubmitArgs) -> SubmitArgs {
    SubmitArgs {
        cpus: later.cpus.or(earlier.cpus),
        mem: later.mem.or(earlier.mem),
        time: later.time.or(earlier.time),
        name: later.name.or(earlier.name),
        user: later.user.or(earlier.user),
        priority: later.priority.or(earlier.priority),
        array: later.array.or(earlier.array),
        output: later.output.or(earlier.output),
        error: later.error.or(earlier.error),
        chdir: later.chdir.or(earlier.chdir),
        env: [earlier.env, later.env].concat(),
        export: later.export.or(earlier.export),
        requeue: if later.requeue || later.no_requeue {
            later.requeue
        } else {
            earlier.requeue
        },
        no_requeue: if later.requeue || later.no_requeue {
            later.no_requeue
        } else {
            earlier.no_requeue
        },
        request_id: later.request_id.or(earlier.request_id),
        dependency: later.dependency.or(earlier.dependency),
        kill_on_invalid_dep: later.kill_on_invalid_dep.or(earlier.kill_on_invalid_dep),
        hold: later.hold || earlier.hold,
        begin: later.begin.or(earlier.begin),
        signal: later.signal.or(earlier.signal),
        open_mode: later.open_mode.or(earlier.open_mode),
        constraint: later.constraint.or(earlier.constraint),
        gpus: later.gpus.or(earlier.gpus),
        gres: later.gres.or(earlier.gres),
        licenses: later.licenses.or(earlier.licenses),
        mem_per_cpu: later.mem_per_cpu.or(earlier.mem_per_cpu),
        partition: later.partition.or(earlier.partition),
        account: later.account.or(earlier.account),
        json: later.json || earlier.json,
        alloc: later.alloc.over(earlier.alloc),
        command: later.command,
    }
}

fn usage(msg: impl std::fmt::Display) -> Failure {
    Failure::usage(anyhow!("{msg}"))
}

/// Builds the job spec; every input problem is a usage error (exit 2).
pub fn build_spec(a: SubmitArgs, script_mode_allowed: bool) -> Result<(pb::JobSpec, SubmitArgs), Failure> {
    if a.command.is_empty() {
        return Err(usage(
            "no command given: use `rudel submit [OPTIONS] -- CMD [ARGS]` or `rudel submit [OPTIONS] SCRIPT`",
        ));
    }
    if script_mode_allowed && !dash_dash_given() {
        let path = PathBuf::from(&a.command[0]);
        let script = std::fs::read_to_string(&path).map_err(|e| {
            usage(format!(
                "cannot read script {}: {e} (to run a command instead, put it after `--`)",
                path.display()
            ))
        })?;
        return spec_with_script(a, script, &path);
    }
    let argv = a.command.clone();
    finish_spec(a, String::new(), argv)
}

/// Builds the spec of a batch script whose text is `script` (read from `path`, which
/// names it in messages and gives the default job name); `a.command` is the script's
/// path and arguments. Its directives count below the options in `a`.
pub fn spec_with_script(mut a: SubmitArgs, script: String, path: &Path) -> Result<(pb::JobSpec, SubmitArgs), Failure> {
    rudel_core::script::check_script(&script).map_err(|e| usage(format!("{}: {e}", path.display())))?;
    let d = rudel_core::script::directives(&script).map_err(|e| usage(format!("{}: {e}", path.display())))?;
    for w in &d.warnings {
        eprintln!("rudel: warning: {}: {w}", path.display());
    }
    let from_script = DirectiveArgs::try_parse_from(&d.args).map_err(|e| {
        usage(format!(
            "{}: bad #RUDEL/#SBATCH option: {}",
            path.display(),
            e.to_string().trim()
        ))
    })?;
    if from_script.args.json || !from_script.args.command.is_empty() {
        return Err(usage(format!(
            "{}: directive lines may hold options only",
            path.display()
        )));
    }
    check_directive_lines(&d, path)?;
    if a.name.is_none() && from_script.args.name.is_none() {
        a.name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    }
    a = merge(from_script.args, a);
    let argv = a.command.get(1..).unwrap_or_default().to_vec();
    finish_spec(a, script, argv)
}

/// Parses translated option words (from [`rudel_core::script::translate_options`]) as
/// `submit` options.
pub fn parse_option_words(words: &[String]) -> Result<SubmitArgs, Failure> {
    DirectiveArgs::try_parse_from(words)
        .map(|d| d.args)
        .map_err(|e| usage(e.to_string().trim().to_string()))
}

/// `later` over `earlier`: the options given in `later` win.
pub fn merge_args(earlier: SubmitArgs, later: SubmitArgs) -> SubmitArgs {
    merge(earlier, later)
}

/// The spec from options that are all known, `script` (empty for a command) and the
/// task's argv.
fn finish_spec(a: SubmitArgs, script: String, argv: Vec<String>) -> Result<(pb::JobSpec, SubmitArgs), Failure> {
    let cpus = a.cpus.unwrap_or(1);
    if cpus == 0 {
        return Err(usage("--cpus must be at least 1"));
    }
    let mem_bytes = match (&a.mem, &a.mem_per_cpu) {
        (Some(_), Some(_)) => return Err(usage("give --mem (per task) or --mem-per-cpu, not both")),
        (Some(m), None) => parse::parse_size(m).map_err(|e| usage(format!("--mem: {e}")))?,
        (None, Some(m)) => parse::parse_size(m)
            .map_err(|e| usage(format!("--mem-per-cpu: {e}")))?
            .checked_mul(u64::from(cpus))
            .ok_or_else(|| usage("--mem-per-cpu times --cpus is too large"))?,
        (None, None) => 0,
    };
    let mem_per_cpu = match &a.mem_per_cpu {
        Some(m) => parse::parse_size(m).map_err(|e| usage(format!("--mem-per-cpu: {e}")))?,
        None => 0,
    };
    let (mem_bytes, allocation) = crate::alloc_opts::allocation(&a, mem_bytes, cpus).map_err(usage)?;
    let time_limit_ms = match &a.time {
        Some(t) => parse::parse_duration(t).map_err(|e| usage(format!("--time: {e}")))?,
        None => 0,
    };
    let array = match &a.array {
        Some(s) => parse::parse_array(s)
            .map_err(|e| usage(format!("--array: {e}")))?
            .to_spec_string(),
        None => String::new(),
    };
    let constraint = match &a.constraint {
        Some(c) => rudel_core::constraint::Constraint::parse(c)
            .map_err(|e| usage(format!("--constraint: {e}")))?
            .to_string(),
        None => String::new(),
    };
    let cwd = std::env::current_dir()
        .context("cannot determine the current directory")
        .map_err(Failure::from)?;
    let chdir = match &a.chdir {
        Some(d) if Path::new(d).is_absolute() => PathBuf::from(d),
        Some(d) => cwd.join(d),
        None => cwd.clone(),
    };
    check_given(&a).map_err(usage)?;
    let mut env = exported_env(a.export.as_deref())?;
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| usage(format!("--env {kv:?}: expected KEY=VALUE")))?;
        env.insert(k.to_string(), v.to_string());
    }
    let spec = pb::JobSpec {
        argv,
        script,
        name: a.name.clone().unwrap_or_default(),
        cpus,
        mem_bytes,
        time_limit_ms,
        priority: a.priority.unwrap_or(0),
        array,
        output: a.output.clone().unwrap_or_default(),
        error: a.error.clone().unwrap_or_default(),
        chdir: chdir.display().to_string(),
        env: env.into_iter().collect(),
        requeue: !a.no_requeue,
        user: match &a.user {
            Some(u) => {
                let u = as_user_name(u)?;
                set_as_user(&u);
                u
            }
            None => user_name(),
        },
        constraint,
        gres: gres_request(&a)?.into_iter().collect(),
        licenses: match &a.licenses {
            Some(l) => rudel_core::resources::parse_licenses(l)
                .map_err(|e| usage(format!("--licenses: {e}")))?
                .into_iter()
                .collect(),
            None => Default::default(),
        },
        partition: a.partition.clone().unwrap_or_default(),
        account: a.account.clone().unwrap_or_default(),
        interactive: false,
        submit_dir: cwd.display().to_string(),
        submit_host: rudel_agent::identity::hostname(),
        dependency: dependency_text(&a)?,
        kill_on_invalid_dep: kill_on_invalid_dep(&a)?,
        hold: a.hold,
        begin: begin_text(&a)?,
        begin_ms: 0,
        signal: match &a.signal {
            Some(sig) => rudel_core::signal::parse(sig).map_err(usage)?.to_string(),
            None => String::new(),
        },
        allocation,
        mem_per_cpu,
        open_append: match a.open_mode.as_deref() {
            None | Some("truncate") => false,
            Some("append") => true,
            Some(other) => return Err(usage(format!("--open-mode={other}: give append or truncate"))),
        },
    };
    // The head checks the same (a gRPC client may bypass this CLI); checking here too
    // means a spec that could never run is not even sent.
    check_spec(&rudel_head::convert::pb_text(&spec)).map_err(usage)?;
    Ok((spec, a))
}

/// `--dependency`, checked here so a typo is a usage error before anything is sent (the
/// head parses it again: the check that counts).
fn dependency_text(a: &SubmitArgs) -> Result<String, Failure> {
    let Some(d) = &a.dependency else {
        return Ok(String::new());
    };
    rudel_core::deps::parse(d).map_err(|e| usage(format!("--dependency={d}: {e}")))?;
    Ok(d.clone())
}

fn kill_on_invalid_dep(a: &SubmitArgs) -> Result<bool, Failure> {
    match a.kill_on_invalid_dep.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("no") => Ok(false),
        Some("yes") => Ok(true),
        Some(other) => Err(usage(format!("--kill-on-invalid-dep={other}: give yes or no"))),
    }
}

/// `--begin`, checked against this machine's clock; the head resolves it with its own.
fn begin_text(a: &SubmitArgs) -> Result<String, Failure> {
    let Some(b) = &a.begin else { return Ok(String::new()) };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    rudel_core::begin::parse_begin(b, now).map_err(|e| usage(format!("--begin: {e}")))?;
    Ok(b.clone())
}

/// `--gres` and `--gpus` as one per-task request.
fn gres_request(a: &SubmitArgs) -> Result<rudel_core::resources::GresRequest, Failure> {
    let mut req = match &a.gres {
        Some(g) => rudel_core::resources::parse_gres(g).map_err(|e| usage(format!("--gres: {e}")))?,
        None => Default::default(),
    };
    if let Some(n) = a.gpus {
        if n == 0 || n > rudel_core::resources::MAX_GRES_UNITS {
            return Err(usage(format!(
                "--gpus: give 1 to {} GPUs per task",
                rudel_core::resources::MAX_GRES_UNITS
            )));
        }
        if req.keys().any(|k| rudel_core::resources::serves(k, "gpu")) {
            return Err(usage("give GPUs with --gpus or with --gres gpu:N, not both"));
        }
        req.insert("gpu".into(), n);
    }
    Ok(req)
}

/// Checks the values given as options (on the command line or on one directive line)
/// against the limits a spec must keep ([`rudel_core::limits`]).
fn check_given(a: &SubmitArgs) -> Result<(), InputError> {
    if let Some(n) = &a.name {
        limits::check_name(n)?;
    }
    for kv in &a.env {
        // A missing '=' is reported where the variable is parsed.
        if let Some((k, v)) = kv.split_once('=') {
            limits::check_env(k, v)?;
        }
    }
    for (field, p) in [("--chdir", &a.chdir), ("--output", &a.output), ("--error", &a.error)] {
        if let Some(p) = p {
            limits::check_path(field, p)?;
        }
    }
    if let Some(id) = &a.request_id {
        limits::check_request_id(id)?;
    }
    Ok(())
}

/// The values of each directive line of a script, checked with the line named (like other
/// script errors): `job.sh: script line 3: --env X: value is ...`.
fn check_directive_lines(d: &rudel_core::script::Directives, path: &Path) -> Result<(), Failure> {
    for (line, words) in d.by_line() {
        // A line that does not parse alone (an option whose value is on the next line)
        // is still checked below, as part of the whole spec, without its line.
        let Ok(one) = DirectiveArgs::try_parse_from(&words) else {
            continue;
        };
        check_given(&one.args).map_err(|e| usage(format!("{}: script line {line}: {e}", path.display())))?;
    }
    Ok(())
}

/// `--user U` of this process's submit: the head honours it for admins only.
static AS_USER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Asks the head to create this process's job as `user` (admin only; the head refuses
/// clients with a clear message, never silently submitting as someone else).
pub fn set_as_user(user: &str) {
    let _ = AS_USER.set(user.to_string());
}

/// When and where `spec` would start if submitted now (`sbatch --test-only`); nothing is
/// submitted.
pub async fn will_run(head: &str, spec: pb::JobSpec) -> Result<pb::WillRunResponse, Failure> {
    let req = pb::SubmitRequest {
        spec: Some(spec),
        request_id: String::new(),
        as_user: AS_USER.get().cloned().unwrap_or_default(),
    };
    check_request_size(&req)?;
    let mut c = client::connect(head).await.map_err(Failure::from)?;
    c.will_run(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| Failure::from(anyhow::anyhow!("{}", s.message())))
}

/// The submitting user's name (informational: the head decides the job's user): $USER, else the password database, else the uid.
pub fn user_name() -> String {
    if let Ok(u) = std::env::var("USER") {
        if !u.is_empty() {
            return u;
        }
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    name_of_uid(uid).unwrap_or_else(|| uid.to_string())
}

/// The password database's name for `uid` on this machine.
fn name_of_uid(uid: libc::uid_t) -> Option<String> {
    // SAFETY: getpwuid_r writes only into the buffers we own; the name is read before they
    // go out of scope.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) == 0
            && !out.is_null()
            && !pw.pw_name.is_null()
        {
            return Some(std::ffi::CStr::from_ptr(pw.pw_name).to_string_lossy().into_owned());
        }
        None
    }
}

/// `--user NAME` or, as sbatch's `--uid`, a numeric uid (named from this machine's
/// password database, since the head and the agents know users by name).
fn as_user_name(u: &str) -> Result<String, Failure> {
    match u.parse::<libc::uid_t>() {
        Ok(uid) => name_of_uid(uid).ok_or_else(|| usage(format!("--uid={u}: no user has uid {u} on this machine"))),
        Err(_) => Ok(u.to_string()),
    }
}

fn exported_env(export: Option<&str>) -> Result<BTreeMap<String, String>, Failure> {
    let Some(list) = export.map(str::trim) else {
        return Ok(all_portable_env());
    };
    // Slurm's semantics: `ALL` (the default) passes the whole environment, `NONE` nothing;
    // otherwise only the listed variables, `VAR` with its value here and `VAR=val` as
    // given; `ALL,VAR=val` and `NONE,VAR=val` start from all or nothing.
    let items: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let mut m = if items.iter().any(|i| i.eq_ignore_ascii_case("ALL")) {
        all_portable_env()
    } else {
        BTreeMap::new()
    };
    for item in items
        .iter()
        .filter(|i| !i.eq_ignore_ascii_case("ALL") && !i.eq_ignore_ascii_case("NONE"))
    {
        let name = item.split_once('=').map_or(*item, |(k, _)| k);
        limits::check_env_name("--export", name).map_err(usage)?;
        let (k, v) = match item.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match std::env::var(item) {
                Ok(v) => (item.to_string(), v),
                // Slurm passes nothing for a listed variable that is not set.
                Err(_) => continue,
            },
        };
        limits::check_env_name("--export", &k).map_err(usage)?;
        limits::check_env(&k, &v).map_err(usage)?;
        m.insert(k, v);
    }
    // What sbatch hands slurmd for any --export: the value as given, and the request to
    // merge the user's login environment (the agent adds the login variables a job lacks).
    m.insert("SLURM_EXPORT_ENV".into(), list.to_string());
    m.insert("SLURM_GET_USER_ENV".into(), "1".into());
    Ok(m)
}

/// This process's environment, without the variables a task could not be given (names
/// that are not valid, or not UTF-8), each named in a warning: the user did not list
/// them, so they do not fail the submit, but they are not dropped silently either.
fn all_portable_env() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (k, v) in std::env::vars_os() {
        let (k, v) = match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => (k, v),
            (k, _) => {
                let name = k.unwrap_or_else(|k| k.to_string_lossy().into_owned());
                eprintln!("rudel: warning: not passing ${name} to the tasks: not UTF-8");
                continue;
            }
        };
        if let Err(e) = limits::check_env_name("not passing the environment variable", &k) {
            eprintln!("rudel: warning: {e}");
            continue;
        }
        m.insert(k, v);
    }
    m
}

/// A request id unique enough for one client: host, pid, time and a random number
/// (characters outside the request id alphabet in the host name become `_`).
pub fn new_request_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let host: String = rudel_agent::identity::hostname()
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // From the OS directly: `rand::random` seeds a ChaCha generator first, whose CPU
    // feature probe (cpuid, a trap to the hypervisor in a VM) was a measurable part of a
    // `rudel submit`. Host, pid and time already make the id unique; these bits guard
    // against a clock that repeats, so an unlikely getrandom failure leaves them zero.
    let mut salt = [0u8; 4];
    let _ = rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut salt);
    format!("{host}-{}-{t:x}-{:08x}", std::process::id(), u32::from_le_bytes(salt))
}

/// Exit code when a submit's outcome is unknown (it may have reached the head, no answer
/// came before the deadline): the timeout convention, as `rudel wait --timeout`.
pub const EXIT_OUTCOME_UNKNOWN: u8 = crate::follow::EXIT_TIMEOUT;

/// How long a submit keeps trying: the deadline of one call.
const SUBMIT_DEADLINE: Duration = client::CALL_TIMEOUT;

/// Refuses (exit 2) a request the head would refuse for its size, before sending it:
/// sending tens of MiB only to be refused (or cut off by HTTP/2) wastes time and network.
fn check_request_size(req: &pb::SubmitRequest) -> Result<(), Failure> {
    let len = prost::Message::encoded_len(req);
    if len > rudel_head::MAX_MESSAGE_BYTES {
        return Err(usage(format!(
            "the submit request is {len} bytes; a head accepts at most {} per request: keep large inputs in files",
            rudel_head::MAX_MESSAGE_BYTES
        )));
    }
    Ok(())
}

/// True if a failed submit may still have reached a head and been written: the answer is
/// not one the head gives before proposing (bad input, no permission, not the leader).
fn may_have_been_written(s: &tonic::Status) -> bool {
    use tonic::Code;
    !client::is_not_leader(s)
        && matches!(
            s.code(),
            Code::Unavailable
                | Code::Unknown
                | Code::DeadlineExceeded
                | Code::Internal
                | Code::Cancelled
                | Code::Aborted
        )
}

/// Submits, retrying until [`SUBMIT_DEADLINE`]: connecting again (with backoff) while no
/// head can be reached, and sending again with the same request id (so a retry is never
/// a second job) when the leader moved or the outcome of an attempt is unknown. If the
/// deadline passes after a request may have been written, says so, with the request id
/// and the command that retries safely (exit [`EXIT_OUTCOME_UNKNOWN`]).
pub async fn submit_spec(head: &str, spec: pb::JobSpec, request_id: String) -> Result<pb::SubmitResponse, Failure> {
    let req = pb::SubmitRequest {
        spec: Some(spec),
        request_id,
        as_user: AS_USER.get().cloned().unwrap_or_default(),
    };
    check_request_size(&req)?;
    let deadline = Instant::now() + SUBMIT_DEADLINE;
    let mut backoff = client::Backoff::default();
    // The last error after which the job may exist.
    let mut unknown: Option<String> = None;
    let mut first = true;
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        // The first try skips asking the local head who leads; a refusal as "not the
        // leader" brings us back here, where the retries ask.
        let connected = if std::mem::take(&mut first) {
            client::connect_for_retried_write(head, left, deadline).await
        } else {
            client::connect_until(head, left, deadline).await
        };
        let mut c = match connected {
            Ok(c) => c,
            Err(e) if unknown.is_none() => {
                return Err(Failure::from(e.context("nothing was submitted")));
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot reach a head to repeat the submit");
                break;
            }
        };
        match tokio::time::timeout_at(deadline, c.submit(req.clone())).await {
            Ok(Ok(r)) => return Ok(r.into_inner()),
            Ok(Err(s)) if client::is_not_leader(&s) => {
                tracing::info!(error = %s.message(), "leadership moved; submitting to the new leader");
            }
            Ok(Err(s)) if may_have_been_written(&s) => {
                let e = client::status_error(s);
                eprintln!(
                    "rudel: no answer to the submit ({e:#}); sending it again with the same request id {}",
                    req.request_id
                );
                unknown = Some(format!("{e:#}"));
            }
            Ok(Err(s)) => return Err(client::failure(s)),
            Err(_) => {
                unknown = Some(format!("no answer within {} s", SUBMIT_DEADLINE.as_secs()));
                break;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        backoff.pause(deadline).await;
    }
    Err(outcome_unknown(
        &req.request_id,
        unknown.as_deref().unwrap_or("no answer"),
    ))
}

/// The failure of a submit that may or may not have created its job.
fn outcome_unknown(request_id: &str, last: &str) -> Failure {
    Failure {
        code: EXIT_OUTCOME_UNKNOWN,
        error: anyhow!(
            "the outcome of this submit is unknown: the request may have reached the head, but no answer came \
             within {} s (last error: {last}). The job may or may not exist; its request id is {request_id}. \
             To retry safely (a head never creates a second job for one request id), run:\n  {}",
            SUBMIT_DEADLINE.as_secs(),
            retry_command(std::env::args().collect(), request_id)
        ),
    }
}

/// This command line with `--request-id ID` (inserted after `submit`/`run`, or replacing
/// the one given), quoted for a POSIX shell.
fn retry_command(args: Vec<String>, request_id: &str) -> String {
    let mut out: Vec<String> = vec!["rudel".into()];
    let mut inserted = false;
    let mut it = args.into_iter().skip(1).peekable();
    while let Some(a) = it.next() {
        if a == "--" {
            out.push(a);
            out.extend(it.by_ref());
            break;
        }
        if a == "--request-id" {
            it.next();
            continue;
        }
        if a.starts_with("--request-id=") {
            continue;
        }
        let is_cmd = !inserted && (a == "submit" || a == "run");
        out.push(a);
        if is_cmd {
            out.push("--request-id".into());
            out.push(request_id.into());
            inserted = true;
        }
    }
    out.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
}

/// `a` as one word for a POSIX shell.
fn shell_quote(a: &str) -> String {
    let plain = !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c));
    if plain {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// `rudel submit`.
pub async fn submit(a: SubmitArgs, head: &str) -> CmdResult {
    let (spec, a) = build_spec(a, true)?;
    let rid = a.request_id.clone().unwrap_or_else(new_request_id);
    let resp = submit_spec(head, spec, rid).await?;
    if a.json {
        let v = serde_json::json!({"id": resp.job_id, "tasks": resp.tasks, "duplicate": resp.duplicate});
        println!("{v}");
    } else {
        println!("Submitted job {}", resp.job_id);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_retry_command_carries_the_request_id() {
        assert_eq!(
            retry_command(
                args(&[
                    "/usr/bin/rudel",
                    "--head",
                    "h:1",
                    "submit",
                    "-J",
                    "a b",
                    "--",
                    "echo",
                    "it's"
                ]),
                "r-1"
            ),
            "rudel --head h:1 submit --request-id r-1 -J 'a b' -- echo 'it'\\''s'"
        );
        assert_eq!(
            retry_command(
                args(&["rudel", "submit", "--request-id", "x", "--request-id=y", "job.sh"]),
                "x"
            ),
            "rudel submit --request-id x job.sh"
        );
    }
}
