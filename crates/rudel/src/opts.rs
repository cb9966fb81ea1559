//! `rudel submit` / `rudel run`: options (from the command line and from #RUDEL/#SBATCH
//! lines of a script) to a job spec.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::{Args, Parser};
use rudel_core::parse;
use rudel_proto::v1 as pb;

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
    /// Time limit per task, e.g. 30s, 10m, 2h, 1-00:00:00, 90 (minutes).
    #[arg(short = 't', long, value_name = "DURATION")]
    pub time: Option<String>,
    /// Job name (default: the command's name).
    #[arg(short = 'J', long, value_name = "NAME")]
    pub name: Option<String>,
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
    /// Which of your environment variables the tasks get: ALL (default), NONE, or VAR,VAR.
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
    /// Client request id: retrying a submit with the same id does not create a second job.
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
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
        constraint: later.constraint.or(earlier.constraint),
        json: later.json || earlier.json,
        command: later.command,
    }
}

fn usage(msg: impl std::fmt::Display) -> Failure {
    Failure::usage(anyhow!("{msg}"))
}

/// Builds the job spec; every input problem is a usage error (exit 2).
pub fn build_spec(mut a: SubmitArgs, script_mode_allowed: bool) -> Result<(pb::JobSpec, SubmitArgs), Failure> {
    if a.command.is_empty() {
        return Err(usage(
            "no command given: use `rudel submit [OPTIONS] -- CMD [ARGS]` or `rudel submit [OPTIONS] SCRIPT`",
        ));
    }
    let mut script = String::new();
    let mut argv = a.command.clone();
    if script_mode_allowed && !dash_dash_given() {
        let path = PathBuf::from(&a.command[0]);
        script = std::fs::read_to_string(&path).map_err(|e| {
            usage(format!(
                "cannot read script {}: {e} (to run a command instead, put it after `--`)",
                path.display()
            ))
        })?;
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
        if a.name.is_none() && from_script.args.name.is_none() {
            a.name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        }
        a = merge(from_script.args, a);
        argv = a.command[1..].to_vec();
    }
    let cpus = a.cpus.unwrap_or(1);
    if cpus == 0 {
        return Err(usage("--cpus must be at least 1"));
    }
    let mem_bytes = match &a.mem {
        Some(m) => parse::parse_size(m).map_err(|e| usage(format!("--mem: {e}")))?,
        None => 0,
    };
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
        None => cwd,
    };
    let mut env = exported_env(a.export.as_deref())?;
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| usage(format!("--env {kv:?}: expected KEY=VALUE")))?;
        if k.is_empty() {
            return Err(usage(format!("--env {kv:?}: empty variable name")));
        }
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
        user: user_name(),
        constraint,
    };
    Ok((spec, a))
}

/// The submitting user's name: $USER, else the password database, else the uid.
fn user_name() -> String {
    if let Ok(u) = std::env::var("USER") {
        if !u.is_empty() {
            return u;
        }
    }
    // SAFETY: getuid has no preconditions; getpwuid_r writes only into the buffers we own.
    unsafe {
        let uid = libc::getuid();
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) == 0
            && !out.is_null()
            && !pw.pw_name.is_null()
        {
            return std::ffi::CStr::from_ptr(pw.pw_name).to_string_lossy().into_owned();
        }
        uid.to_string()
    }
}

fn exported_env(export: Option<&str>) -> Result<BTreeMap<String, String>, Failure> {
    let all = || std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    Ok(match export.map(str::trim) {
        None | Some("ALL") | Some("all") => all().collect(),
        Some("NONE") | Some("none") => BTreeMap::new(),
        Some(list) => {
            let mut m = BTreeMap::new();
            for item in list.split(',').filter(|s| !s.is_empty()) {
                match item.split_once('=') {
                    Some((k, v)) => m.insert(k.to_string(), v.to_string()),
                    None => m.insert(item.to_string(), std::env::var(item).unwrap_or_default()),
                };
            }
            m
        }
    })
}

/// A request id unique enough for one client: pid, time and a counter.
pub fn new_request_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{}-{t:x}", rudel_agent::identity::hostname(), std::process::id())
}

/// Submits, retrying with the same request id (so a retry is never a second job) when the
/// outcome is unknown or the head no longer leads: the leader is looked up again first, as
/// leadership may have moved. Returns the response.
pub async fn submit_spec(head: &str, spec: pb::JobSpec, request_id: String) -> Result<pb::SubmitResponse, Failure> {
    let mut delay = std::time::Duration::from_millis(200);
    for attempt in 0..5 {
        let mut client = client::connect(head).await?;
        let req = pb::SubmitRequest {
            spec: Some(spec.clone()),
            request_id: request_id.clone(),
        };
        match client.submit(req).await {
            Ok(r) => return Ok(r.into_inner()),
            // Internal: the head's log write failed (its disk, say); the entry may still
            // have reached the others, which the request id takes care of.
            Err(s)
                if attempt < 4
                    && matches!(
                        s.code(),
                        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Internal
                    ) =>
            {
                tracing::warn!(error = %s.message(), "submit not confirmed; retrying with the same request id");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(s) => return Err(client::failure(s)),
        }
    }
    Err(Failure::from(anyhow!("submit failed after 5 attempts")))
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
