//! `sacct`: Slurm's accounting query over rudel's history (Slurm 22.05 output formats).
//!
//! A job's line is followed by its steps', as Slurm's: `ID.batch` (the batch script, or
//! the command of `rudel submit`, derived from the job's own record) and `ID.0`, `ID.1`,
//! ... (srun steps, recorded by the head when they end; see rudel-core steps.rs). `-X`
//! shows the job lines only; `-j ID.0` / `-j ID.batch` only that step. The usage Slurm
//! shows on a job's steps (MaxRSS, TotalCPU, UserCPU, SystemCPU) is measured per task of
//! the job, so it is on the job's line and its batch line. Array tasks are shown one per line as `ARRAYID_INDEX` with their own job id as
//! JobIDRaw; tasks past the store's per-job row cap (rudel-head's history_task.rs) that
//! completed are summed up in one `ID_[SPEC]` line.
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use rudel_proto::v1 as pb;
use serde_json::{json, Value};

use crate::{CmdResult, Failure};

const DEFAULT_FORMAT: &str = "JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode";
/// Partition shown for every job: rudel has one pool of nodes.
const PARTITION: &str = "rudel";

#[derive(Parser, Debug)]
#[command(name = "sacct", about = "Show finished and running jobs (Slurm-compatible)")]
pub struct SacctArgs {
    /// Allocations only: no step lines (`ID.batch`, `ID.0`, ...).
    #[arg(short = 'X', long = "allocations")]
    pub allocations: bool,
    /// Fields separated by '|' with no trailing '|'.
    #[arg(short = 'P', long = "parsable2")]
    pub parsable2: bool,
    /// Fields separated by '|' with a trailing '|'.
    #[arg(short = 'p', long = "parsable")]
    pub parsable: bool,
    /// No header.
    #[arg(short = 'n', long = "noheader")]
    pub noheader: bool,
    /// Fields to print, e.g. JobID,State,ExitCode,Elapsed%20.
    #[arg(short = 'o', long = "format", value_name = "FIELDS")]
    pub format: Option<String>,
    /// Jobs eligible/ended after this time (default: midnight today; with -j: no bound).
    #[arg(short = 'S', long = "starttime", value_name = "TIME")]
    pub starttime: Option<String>,
    /// Jobs submitted before this time (default: now).
    #[arg(short = 'E', long = "endtime", value_name = "TIME")]
    pub endtime: Option<String>,
    /// Only these jobs (comma-separated; ID or ID_INDEX).
    #[arg(short = 'j', long = "jobs", value_name = "IDS", value_delimiter = ',')]
    pub jobs: Vec<String>,
    /// Only jobs of these users (comma-separated).
    #[arg(short = 'u', long = "user", value_name = "USERS", value_delimiter = ',')]
    pub user: Vec<String>,
    /// Only jobs in these states (CD,F,CA,TO,NF,OOM,PD,R or full names).
    #[arg(short = 's', long = "state", value_name = "STATES", value_delimiter = ',')]
    pub state: Vec<String>,
    /// Jobs of every user (default: yours).
    #[arg(short = 'a', long = "allusers")]
    pub allusers: bool,
    /// Only jobs charged to these accounts (comma-separated).
    #[arg(short = 'A', long = "accounts", value_name = "ACCOUNTS", value_delimiter = ',')]
    pub accounts: Vec<String>,
    /// Only jobs of these names (comma-separated).
    #[arg(long = "name", alias = "jobname", value_name = "NAMES", value_delimiter = ',')]
    pub name: Vec<String>,
    /// Clusters to ask: rudel is one cluster, so `all` (workflow managers pass it) is it;
    /// any other name is refused rather than answered from this cluster.
    #[arg(short = 'M', long = "clusters", value_name = "CLUSTERS")]
    pub clusters: Option<String>,
    /// Slurm's JSON shape.
    #[arg(long)]
    pub json: bool,
}

/// `rudel sacct ARGS`: parses Slurm's options (help and usage errors as clap prints them).
pub async fn run_args(args: Vec<std::ffi::OsString>, head: &str) -> CmdResult {
    let argv = std::iter::once(std::ffi::OsString::from("sacct")).chain(args);
    match SacctArgs::try_parse_from(argv) {
        Ok(a) => run(a, head).await,
        Err(e) => {
            let _ = e.print();
            Ok(if e.use_stderr() { crate::EXIT_USAGE } else { 0 })
        }
    }
}

/// One requested column: name and width (None: the field's default).
#[derive(Clone, Debug, PartialEq)]
struct Column {
    field: Field,
    width: usize,
    left: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Field {
    JobId,
    JobIdRaw,
    JobName,
    State,
    ExitCode,
    Elapsed,
    ElapsedRaw,
    Start,
    End,
    Submit,
    NodeList,
    AllocCpus,
    NTasks,
    ReqMem,
    MaxRss,
    TotalCpu,
    CpuTime,
    UserCpu,
    SystemCpu,
    User,
    Partition,
    Timelimit,
    Account,
}

/// (name as Slurm spells it, field, Slurm's default width).
const FIELDS: [(&str, Field, usize); 23] = [
    ("JobID", Field::JobId, 12),
    ("JobIDRaw", Field::JobIdRaw, 12),
    ("JobName", Field::JobName, 10),
    ("State", Field::State, 10),
    ("ExitCode", Field::ExitCode, 8),
    ("Elapsed", Field::Elapsed, 10),
    ("ElapsedRaw", Field::ElapsedRaw, 10),
    ("Start", Field::Start, 19),
    ("End", Field::End, 19),
    ("Submit", Field::Submit, 19),
    ("NodeList", Field::NodeList, 15),
    ("AllocCPUS", Field::AllocCpus, 10),
    ("NTasks", Field::NTasks, 8),
    ("ReqMem", Field::ReqMem, 10),
    ("MaxRSS", Field::MaxRss, 10),
    ("TotalCPU", Field::TotalCpu, 10),
    ("CPUTime", Field::CpuTime, 10),
    ("UserCPU", Field::UserCpu, 10),
    ("SystemCPU", Field::SystemCpu, 10),
    ("User", Field::User, 9),
    ("Partition", Field::Partition, 10),
    ("Timelimit", Field::Timelimit, 10),
    ("Account", Field::Account, 10),
];

fn parse_format(s: &str) -> Result<Vec<Column>, String> {
    s.split(',')
        .filter(|f| !f.trim().is_empty())
        .map(|f| {
            let (name, width) = match f.split_once('%') {
                Some((n, w)) => (n.trim(), Some(w.trim())),
                None => (f.trim(), None),
            };
            let (_, field, def) = FIELDS
                .iter()
                .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
                .ok_or_else(|| format!("invalid field requested: \"{name}\"; supported: {}", field_names()))?;
            let (left, width) = match width {
                None => (false, *def),
                Some(w) => {
                    let left = w.starts_with('-');
                    let n = w
                        .trim_start_matches('-')
                        .parse::<usize>()
                        .map_err(|_| format!("bad width in \"{f}\""))?;
                    (left, n)
                }
            };
            Ok(Column {
                field: *field,
                width,
                left,
            })
        })
        .collect()
}

fn field_names() -> String {
    FIELDS.iter().map(|(n, _, _)| *n).collect::<Vec<_>>().join(",")
}

/// Slurm state names and abbreviations -> rudel's.
fn state_filter(s: &str) -> Result<&'static str, String> {
    Ok(match s.to_ascii_uppercase().as_str() {
        "CD" | "COMPLETED" => "completed",
        "F" | "FAILED" => "failed",
        "CA" | "CANCELLED" => "cancelled",
        "TO" | "TIMEOUT" => "timeout",
        "NF" | "NODE_FAIL" => "node_fail",
        "PD" | "PENDING" => "pending",
        "R" | "RUNNING" => "running",
        "OOM" | "OUT_OF_MEMORY" => "out_of_memory",
        other => return Err(format!("unknown state \"{other}\"")),
    })
}

/// `sacct` (also `rudel sacct`).
pub async fn run(a: SacctArgs, head: &str) -> CmdResult {
    let usage = |e: String| Failure::usage(anyhow::anyhow!(e));
    let cols = parse_format(a.format.as_deref().unwrap_or(DEFAULT_FORMAT)).map_err(usage)?;
    let now = now_ms();
    let states = a
        .state
        .iter()
        .map(|s| state_filter(s).map(str::to_string))
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    let selectors = a
        .jobs
        .iter()
        .map(|j| Selector::parse(j))
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    let job_ids: Vec<u64> = selectors.iter().map(|s| s.id).collect();
    if let Some(c) = a.clusters.as_deref().filter(|c| !c.eq_ignore_ascii_case("all")) {
        return Err(usage(format!(
            "-M {c}: rudel answers for its own cluster only; use `-M all` or leave -M out"
        )));
    }
    let since = match &a.starttime {
        Some(t) => parse_time(t, now).map_err(|e| usage(format!("-S {t}: {e}")))?,
        None if job_ids.is_empty() => midnight(now),
        None => 0,
    };
    let until = match &a.endtime {
        Some(t) => parse_time(t, now).map_err(|e| usage(format!("-E {t}: {e}")))?,
        None => 0,
    };
    let users: Vec<String> = if !a.user.is_empty() {
        a.user.clone()
    } else if a.allusers || !job_ids.is_empty() || current_uid() == 0 {
        Vec::new()
    } else {
        vec![current_user()]
    };
    let req = pb::HistoryRequest {
        user: if users.len() == 1 {
            users[0].clone()
        } else {
            String::new()
        },
        states,
        since_ms: since,
        until_ms: until,
        name: String::new(),
        // Filtered by the head (its name index): a workflow polls its own jobs by name.
        names: a.name.clone(),
        job_ids,
        limit: 0,
        include_active: true,
    };
    let jobs: Vec<_> = crate::history::query(head, req)
        .await?
        .into_iter()
        .filter(|j| users.len() <= 1 || users.contains(&j.user))
        .filter(|j| a.accounts.is_empty() || a.accounts.contains(&j.account))
        .collect();
    let rows: Vec<Row> = jobs
        .iter()
        .flat_map(|j| rows_of(j, now))
        .filter(|r| selectors.is_empty() || selectors.iter().any(|s| s.matches(r)))
        .filter(|r| !(a.allocations && r.step.is_some()))
        .collect();
    if a.json {
        // Slurm's JSON lists a job's steps inside the job (`steps`), not as jobs.
        let jobs: Vec<Value> = rows
            .iter()
            .filter(|r| r.step.is_none())
            .map(|r| {
                let mut v = row_json(r, now);
                v["steps"] = Value::Array(
                    rows.iter()
                        .filter(|s| s.step.is_some() && std::ptr::eq(s.job, r.job) && s.task == r.task)
                        .map(|s| step_json(s, now))
                        .collect(),
                );
                v
            })
            .collect();
        // A step selector alone (`-j 41.0`) still shows that step, inside its job.
        let orphans: Vec<Value> = rows
            .iter()
            .filter(|s| s.step.is_some() && !rows.iter().any(|r| r.step.is_none() && std::ptr::eq(s.job, r.job)))
            .map(|s| {
                let mut v = row_json(s, now);
                v["steps"] = Value::Array(vec![step_json(s, now)]);
                v
            })
            .collect();
        println!(
            "{}",
            json!({ "jobs": jobs.into_iter().chain(orphans).collect::<Vec<_>>() })
        );
        return Ok(0);
    }
    print_table(&a, &cols, &rows, now);
    Ok(0)
}

/// One `-j` entry: `ID` (a job, an array, or an array task by its own job id) or
/// `ARRAYID_INDEX`, optionally with a step (`ID.batch`, `ID.0`).
#[derive(Debug, PartialEq)]
struct Selector {
    id: u64,
    index: Option<u32>,
    step: Option<StepId>,
}

/// Which step of a job a line shows.
#[derive(Clone, Debug, PartialEq)]
enum StepId {
    /// The batch script (`ID.batch`).
    Batch,
    /// An srun step (`ID.N`).
    Srun(u32),
    /// A step rudel never has (`ID.extern`, `ID.interactive`): selects no line.
    Other(String),
}

impl StepId {
    fn parse(s: &str) -> StepId {
        match s {
            "batch" => StepId::Batch,
            _ => s.parse().map_or_else(|_| StepId::Other(s.to_string()), StepId::Srun),
        }
    }

    fn suffix(&self) -> String {
        match self {
            StepId::Batch => "batch".into(),
            StepId::Srun(n) => n.to_string(),
            StepId::Other(s) => s.clone(),
        }
    }
}

impl Selector {
    fn parse(s: &str) -> Result<Selector, String> {
        let bad = || format!("invalid job id \"{s}\"");
        // A step suffix (`.batch`, `.0`) names that step only.
        let (s0, step) = match s.split_once('.') {
            Some((j, st)) if !st.is_empty() => (j, Some(StepId::parse(st))),
            Some(_) => return Err(bad()),
            None => (s, None),
        };
        let (id, index) = match s0.split_once('_') {
            Some((id, i)) => (id, Some(i.parse::<u32>().map_err(|_| bad())?)),
            None => (s0, None),
        };
        Ok(Selector {
            id: id.parse().map_err(|_| bad())?,
            index,
            step,
        })
    }

    /// True when the line shows what this entry names (Slurm: an array's id shows all its
    /// tasks; a task's own id or `ID_INDEX` shows that task; a job's id shows its steps
    /// too, `ID.N` only that step).
    fn matches(&self, r: &Row) -> bool {
        let job = match self.index {
            Some(i) => r.job.job_id == self.id && r.task == Some(i),
            None => r.job.job_id == self.id || r.raw_id == self.id,
        };
        job && (self.step.is_none() || self.step == r.step)
    }
}

/// Usage of one line (KiB, µs, µs); None when the agent measured nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Usage {
    max_rss_kb: u64,
    user_cpu_us: u64,
    sys_cpu_us: u64,
}

impl Usage {
    fn of(max_rss_kb: u64, user_cpu_us: u64, sys_cpu_us: u64) -> Option<Usage> {
        (max_rss_kb > 0 || user_cpu_us > 0 || sys_cpu_us > 0).then_some(Usage {
            max_rss_kb,
            user_cpu_us,
            sys_cpu_us,
        })
    }
}

/// One output line: a job, or one task of an array.
struct Row<'a> {
    job: &'a pb::HistoryJob,
    id: String,
    /// Slurm's JobIDRaw: the task's own job id for an array task.
    raw_id: u64,
    usage: Option<Usage>,
    task: Option<u32>,
    state: String,
    exit: (i32, i32),
    start_ms: u64,
    end_ms: u64,
    node: Vec<String>,
    /// None: a job (or array task) line; Some: one of its steps.
    step: Option<StepId>,
    /// The step's name, tasks and cpus (steps only).
    step_name: String,
    ntasks: u32,
    cpus: u32,
}

/// The job's own line (not an array).
fn job_row(j: &pb::HistoryJob) -> Row<'_> {
    Row {
        job: j,
        id: j.job_id.to_string(),
        raw_id: j.job_id,
        usage: Usage::of(j.max_rss_kb, j.user_cpu_us, j.sys_cpu_us),
        task: None,
        state: j.state.clone(),
        exit: (j.exit_code.unwrap_or(0), j.signal.unwrap_or(0)),
        start_ms: j.start_ms,
        end_ms: j.end_ms,
        node: j.nodes.clone(),
        step: None,
        step_name: String::new(),
        ntasks: 0,
        cpus: j.cpus,
    }
}

/// The batch step of a job that started: the script on the job's first node, from the
/// job's own record (Slurm: `ID.batch`, JobName `batch`, one task, the script's exit
/// code; a job killed at its time limit shows its batch step CANCELLED).
fn batch_row<'a>(j: &'a pb::HistoryJob) -> Option<Row<'a>> {
    if j.start_ms == 0 {
        return None;
    }
    let mut r = job_row(j);
    r.id = format!("{}.batch", j.job_id);
    r.step = Some(StepId::Batch);
    r.step_name = "batch".into();
    r.ntasks = 1;
    r.node = j.nodes.first().cloned().into_iter().collect();
    if r.state == "timeout" {
        r.state = "cancelled".into();
    }
    Some(r)
}

/// The lines of a job's recorded srun steps, by step id.
fn step_rows(j: &pb::HistoryJob) -> impl Iterator<Item = Row<'_>> {
    j.steps.iter().map(move |s| Row {
        job: j,
        id: format!("{}.{}", j.job_id, s.step),
        raw_id: j.job_id,
        usage: None,
        task: None,
        state: s.state.clone(),
        exit: (s.exit_code, s.signal),
        start_ms: s.start_ms,
        end_ms: s.end_ms,
        node: if s.nodelist.is_empty() {
            Vec::new()
        } else {
            vec![s.nodelist.clone()]
        },
        step: Some(StepId::Srun(s.step)),
        step_name: s.name.clone(),
        ntasks: s.ntasks,
        cpus: s.cpus,
    })
}

fn rows_of(j: &pb::HistoryJob, _now: u64) -> Vec<Row<'_>> {
    if j.array.is_empty() {
        let mut rows = vec![job_row(j)];
        rows.extend(batch_row(j));
        rows.extend(step_rows(j));
        return rows;
    }
    let mut rows: Vec<Row> = j
        .task_records
        .iter()
        .map(|t| Row {
            job: j,
            id: format!("{}_{}", j.job_id, t.index),
            // Records from before per-task ids were stored have 0 here.
            raw_id: if t.job_id == 0 { j.job_id } else { t.job_id },
            usage: Usage::of(t.max_rss_kb, t.user_cpu_us, t.sys_cpu_us),
            task: Some(t.index),
            state: t.state.clone(),
            exit: (t.exit_code.unwrap_or(0), t.signal.unwrap_or(0)),
            start_ms: t.start_ms,
            end_ms: t.end_ms,
            node: if t.node.is_empty() {
                Vec::new()
            } else {
                vec![t.node.clone()]
            },
            step: None,
            step_name: String::new(),
            ntasks: 0,
            cpus: j.cpus,
        })
        .collect();
    let rest = j.tasks.saturating_sub(rows.len() as u64);
    if rest > 0 {
        let state = rest_state(j, &rows);
        rows.push(Row {
            job: j,
            id: format!("{}_[{}]", j.job_id, j.array),
            raw_id: j.job_id,
            usage: None,
            task: None,
            state,
            exit: (0, 0),
            start_ms: j.start_ms,
            end_ms: j.end_ms,
            node: j.nodes.clone(),
            step: None,
            step_name: String::new(),
            ntasks: 0,
            cpus: j.cpus,
        });
    }
    // Steps of an array's tasks are recorded under the array's id.
    rows.extend(step_rows(j));
    rows
}

/// The state of an array's tasks that have no line of their own: the one state the job's
/// counts leave once the listed tasks are taken out (tasks cancelled before they ran are
/// `cancelled`, not `completed`), else the job's state.
fn rest_state(j: &pb::HistoryJob, listed: &[Row]) -> String {
    let mut left: Vec<(String, u64)> = j.counts.iter().map(|c| (c.state.clone(), c.count)).collect();
    for r in listed {
        // The counts know a memory kill as `failed`.
        let counted = if r.state == "out_of_memory" {
            "failed"
        } else {
            r.state.as_str()
        };
        if let Some(c) = left.iter_mut().find(|(s, _)| s == counted) {
            c.1 = c.1.saturating_sub(1);
        }
    }
    let mut states = left.into_iter().filter(|(_, n)| *n > 0);
    match (states.next(), states.next()) {
        (Some((s, _)), None) => s,
        _ => j.state.clone(),
    }
}

/// The state as Slurm prints it.
fn slurm_state(r: &Row) -> String {
    match r.state.as_str() {
        "completed" => "COMPLETED".into(),
        "failed" => "FAILED".into(),
        "cancelled" if r.step.is_some() => "CANCELLED".into(),
        "cancelled" => format!("CANCELLED by {}", uid_of(&r.job.user)),
        "timeout" => "TIMEOUT".into(),
        "node_fail" => "NODE_FAIL".into(),
        "out_of_memory" => "OUT_OF_MEMORY".into(),
        "pending" => "PENDING".into(),
        "running" => "RUNNING".into(),
        other => other.to_ascii_uppercase(),
    }
}

fn elapsed_s(r: &Row, now: u64) -> u64 {
    if r.start_ms == 0 {
        return 0;
    }
    let end = if r.end_ms == 0 { now } else { r.end_ms };
    end.saturating_sub(r.start_ms) / 1000
}

fn value(c: Field, r: &Row, now: u64) -> String {
    let j = r.job;
    match c {
        Field::JobId => r.id.clone(),
        Field::JobIdRaw => r.raw_id.to_string(),
        Field::JobName if r.step.is_some() => r.step_name.clone(),
        Field::JobName => j.name.clone(),
        Field::State => slurm_state(r),
        Field::ExitCode => format!("{}:{}", r.exit.0, r.exit.1),
        Field::Elapsed => duration(elapsed_s(r, now)),
        Field::ElapsedRaw => elapsed_s(r, now).to_string(),
        Field::Start => opt_time(r.start_ms),
        Field::End => opt_time(r.end_ms),
        Field::Submit => local_time(j.submit_ms),
        Field::NodeList if r.node.is_empty() => "None assigned".into(),
        Field::NodeList => r.node.join(","),
        Field::AllocCpus if r.start_ms == 0 => "0".into(),
        Field::AllocCpus => r.cpus.to_string(),
        // Slurm leaves it empty on the allocation's line.
        Field::NTasks if r.step.is_none() => String::new(),
        Field::NTasks => r.ntasks.to_string(),
        Field::ReqMem if j.mem_bytes == 0 => "0".into(),
        Field::ReqMem => format!("{}M", j.mem_bytes.div_ceil(1 << 20)),
        // Empty, as Slurm prints for a job without gathered data (older agents, lost tasks).
        Field::MaxRss => r.usage.map(|u| kib(u.max_rss_kb)).unwrap_or_default(),
        Field::TotalCpu => r
            .usage
            .map(|u| cpu_time(u.user_cpu_us.saturating_add(u.sys_cpu_us)))
            .unwrap_or_default(),
        Field::UserCpu => r.usage.map(|u| cpu_time(u.user_cpu_us)).unwrap_or_default(),
        Field::SystemCpu => r.usage.map(|u| cpu_time(u.sys_cpu_us)).unwrap_or_default(),
        Field::CpuTime => duration(elapsed_s(r, now) * u64::from(if r.start_ms == 0 { 0 } else { r.cpus })),
        // Slurm prints these on the job's line only.
        Field::User | Field::Partition | Field::Timelimit if r.step.is_some() => String::new(),
        Field::User => j.user.clone(),
        Field::Partition => PARTITION.into(),
        Field::Timelimit if j.time_limit_ms == 0 => "UNLIMITED".into(),
        Field::Timelimit => duration(j.time_limit_ms.div_ceil(1000)),
        Field::Account => j.account.clone(),
    }
}

fn header(c: Field) -> &'static str {
    FIELDS.iter().find(|(_, f, _)| *f == c).map_or("", |(n, _, _)| n)
}

/// Slurm pads to the width (right-aligned unless `%-N`) and cuts long values to
/// width-1 characters plus '+'.
fn fit(s: &str, c: &Column) -> String {
    let n = s.chars().count();
    let s = if n > c.width && c.width > 0 {
        let mut t: String = s.chars().take(c.width - 1).collect();
        t.push('+');
        t
    } else {
        s.to_string()
    };
    if c.left {
        format!("{s:<w$}", w = c.width)
    } else {
        format!("{s:>w$}", w = c.width)
    }
}

fn print_table(a: &SacctArgs, cols: &[Column], rows: &[Row], now: u64) {
    let parsable = a.parsable || a.parsable2;
    let line = |vals: Vec<String>| {
        if parsable {
            let mut s = vals.join("|");
            if a.parsable {
                s.push('|');
            }
            s
        } else {
            vals.iter()
                .zip(cols)
                .map(|(v, c)| fit(v, c))
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    if !a.noheader {
        println!("{}", line(cols.iter().map(|c| header(c.field).to_string()).collect()));
        if !parsable {
            println!(
                "{}",
                cols.iter().map(|c| "-".repeat(c.width)).collect::<Vec<_>>().join(" ")
            );
        }
    }
    for r in rows {
        println!("{}", line(cols.iter().map(|c| value(c.field, r, now)).collect()));
    }
}

fn row_json(r: &Row, now: u64) -> Value {
    let j = r.job;
    let secs = |ms: u64| ms / 1000;
    json!({
        "job_id": r.raw_id,
        "name": j.name,
        "user": j.user,
        "account": j.account,
        "partition": PARTITION,
        "nodes": if r.node.is_empty() { "None assigned".to_string() } else { r.node.join(",") },
        "state": { "current": slurm_state(r).split(' ').next().unwrap_or(""), "reason": "None" },
        "exit_code": exit_json(r),
        "array": {
            "job_id": if j.array.is_empty() { 0 } else { j.job_id },
            "task_id": r.task,
            "task": if j.array.is_empty() { String::new() } else { j.array.clone() },
        },
        "required": { "CPUs": j.cpus, "memory": j.mem_bytes >> 20 },
        "time": {
            "submission": secs(j.submit_ms),
            "start": secs(r.start_ms),
            "end": secs(r.end_ms),
            "elapsed": elapsed_s(r, now),
            "limit": if j.time_limit_ms == 0 { Value::Null } else { json!(j.time_limit_ms / 60_000) },
            "user": cpu_json(r.usage.map_or(0, |u| u.user_cpu_us)),
            "system": cpu_json(r.usage.map_or(0, |u| u.sys_cpu_us)),
            "total": cpu_json(r.usage.map_or(0, |u| u.user_cpu_us.saturating_add(u.sys_cpu_us))),
        },
        "working_directory": j.work_dir,
    })
}

/// A row's `exit_code` object, in Slurm's shape (jobs and steps alike).
fn exit_json(r: &Row) -> Value {
    json!({
        "status": match (r.state.as_str(), r.exit) {
            ("completed", _) => "SUCCESS",
            (_, (_, s)) if s != 0 => "SIGNALED",
            _ if r.end_ms == 0 => "PENDING",
            _ => "FAILED",
        },
        "return_code": r.exit.0,
        "signal": { "signal_id": r.exit.1 },
    })
}

/// A step inside its job's JSON (`steps`), in Slurm's shape.
fn step_json(r: &Row, now: u64) -> Value {
    let secs = |ms: u64| ms / 1000;
    let id = r.step.as_ref().map(StepId::suffix).unwrap_or_default();
    json!({
        "step": { "id": format!("{}.{id}", r.job.job_id), "name": value(Field::JobName, r, now) },
        "state": slurm_state(r).split(' ').next().unwrap_or(""),
        "exit_code": exit_json(r),
        "nodes": { "range": r.node.join(","), "count": r.node.iter().map(|n| expand_count(n)).sum::<usize>() },
        "tasks": { "count": r.ntasks },
        "CPU": { "count": r.cpus },
        "time": {
            "start": secs(r.start_ms),
            "end": secs(r.end_ms),
            "elapsed": elapsed_s(r, now),
        },
    })
}

/// Nodes a compressed hostlist names (1 if it cannot be read).
fn expand_count(list: &str) -> usize {
    rudel_core::hostlist::expand(list).map_or(1, |v| v.len())
}

/// A size in KiB as sacct prints MaxRSS (`convert_num_unit` with its default
/// CONVERT_NUM_UNIT_EXACT): scaled up only while it divides exactly, so `51200` is `50M`
/// and `51201` is `51201K`.
pub fn kib(mut n: u64) -> String {
    if n == 0 {
        return "0".into();
    }
    let mut unit = 0;
    const UNITS: [char; 5] = ['K', 'M', 'G', 'T', 'P'];
    while n.is_multiple_of(1024) && unit + 1 < UNITS.len() {
        n /= 1024;
        unit += 1;
    }
    format!("{n}{}", UNITS[unit])
}

/// A CPU time as sacct prints TotalCPU/UserCPU/SystemCPU: `MM:SS.mmm` under an hour,
/// `HH:MM:SS` under a day, `D-HH:MM:SS` beyond.
pub fn cpu_time(us: u64) -> String {
    let secs = us / 1_000_000;
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else if h > 0 {
        format!("{h:02}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}.{:03}", us / 1000 % 1000)
    }
}

/// Slurm's JSON CPU time: `{"seconds": S, "microseconds": US}`.
fn cpu_json(us: u64) -> Value {
    json!({ "seconds": us / 1_000_000, "microseconds": us % 1_000_000 })
}

/// `code:signal` of a record's worst task.
pub fn exit_code(j: &pb::HistoryJob) -> String {
    format!("{}:{}", j.exit_code.unwrap_or(0), j.signal.unwrap_or(0))
}

/// Slurm's `[DD-]HH:MM:SS`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

fn opt_time(ms: u64) -> String {
    if ms == 0 {
        "Unknown".into()
    } else {
        local_time(ms)
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn local_tm(secs: i64) -> libc::tm {
    // SAFETY: localtime_r only writes into the tm we pass; a zeroed tm is a valid value.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let t: libc::time_t = secs as libc::time_t;
        libc::localtime_r(&t, &mut tm);
        tm
    }
}

fn from_tm(mut tm: libc::tm) -> Result<u64, String> {
    tm.tm_isdst = -1;
    // SAFETY: mktime reads and normalises the tm we own.
    let t = unsafe { libc::mktime(&mut tm) };
    if t < 0 {
        return Err("time out of range".into());
    }
    Ok(t as u64 * 1000)
}

/// `YYYY-MM-DDTHH:MM:SS` in local time, as Slurm prints times (empty for none).
pub fn local_time(ms: u64) -> String {
    if ms == 0 {
        return String::new();
    }
    crate::show::timestamp(ms)
}

fn midnight(now: u64) -> u64 {
    let mut tm = local_tm((now / 1000) as i64);
    tm.tm_hour = 0;
    tm.tm_min = 0;
    tm.tm_sec = 0;
    from_tm(tm).unwrap_or(0)
}

fn num(s: &str) -> Result<i32, String> {
    s.parse::<i32>().map_err(|_| format!("\"{s}\" is not a number"))
}

/// Slurm's time formats (sacct -S/-E): `YYYY-MM-DD[THH:MM[:SS]]`, `MM/DD[/YY][-HH:MM[:SS]]`,
/// `MMDD[YY]`, `HH:MM[:SS]` (today), `now[{+|-}N[seconds|minutes|hours|days|weeks]]`,
/// `today`, `midnight`, `noon`; in local time. Returns ms since the epoch.
pub fn parse_time(s: &str, now: u64) -> Result<u64, String> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("now") {
        return relative(rest, now);
    }
    match lower.as_str() {
        "today" | "midnight" => return Ok(midnight(now)),
        "noon" => return Ok(midnight(now) + 12 * 3_600_000),
        _ => {}
    }
    let mut tm = local_tm((now / 1000) as i64);
    let (date, time) = if let Some((d, t)) = s.split_once('T') {
        (d, Some(t))
    } else if s.contains('/') && s.contains('-') {
        s.split_once('-').map_or((s, None), |(d, t)| (d, Some(t)))
    } else if s.contains(':') {
        ("", Some(s))
    } else {
        (s, None)
    };
    if date.contains('-') {
        let p: Vec<&str> = date.split('-').collect();
        if p.len() != 3 {
            return Err("expected YYYY-MM-DD".into());
        }
        tm.tm_year = num(p[0])? - 1900;
        tm.tm_mon = num(p[1])? - 1;
        tm.tm_mday = num(p[2])?;
    } else if date.contains('/') {
        let p: Vec<&str> = date.split('/').collect();
        tm.tm_mon = num(p[0])? - 1;
        tm.tm_mday = num(p.get(1).ok_or("expected MM/DD")?)?;
        if let Some(y) = p.get(2) {
            tm.tm_year = num(y)? + 100;
        }
    } else if date.len() == 4 || date.len() == 6 {
        tm.tm_mon = num(&date[0..2])? - 1;
        tm.tm_mday = num(&date[2..4])?;
        if date.len() == 6 {
            tm.tm_year = num(&date[4..6])? + 100;
        }
    } else if !date.is_empty() {
        return Err("unknown time format (try YYYY-MM-DD[THH:MM[:SS]], MM/DD[/YY], HH:MM[:SS], now-1hour)".into());
    }
    tm.tm_hour = 0;
    tm.tm_min = 0;
    tm.tm_sec = 0;
    if let Some(t) = time {
        let p: Vec<&str> = t.split(':').collect();
        if p.len() < 2 || p.len() > 3 {
            return Err("expected HH:MM[:SS]".into());
        }
        tm.tm_hour = num(p[0])?;
        tm.tm_min = num(p[1])?;
        tm.tm_sec = p.get(2).map(|x| num(x)).transpose()?.unwrap_or(0);
    }
    from_tm(tm)
}

fn relative(rest: &str, now: u64) -> Result<u64, String> {
    if rest.is_empty() {
        return Ok(now);
    }
    let (sign, body) = match rest.split_at(1) {
        ("+", b) => (1i64, b),
        ("-", b) => (-1i64, b),
        _ => return Err("expected now[{+|-}COUNT[seconds|minutes|hours|days|weeks]]".into()),
    };
    let digits: String = body.chars().take_while(char::is_ascii_digit).collect();
    let n: i64 = digits.parse().map_err(|_| "missing count after now+/-".to_string())?;
    let unit = &body[digits.len()..];
    let secs = match unit {
        "" | "s" | "sec" | "second" | "seconds" => 1,
        "min" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        u => return Err(format!("unknown unit \"{u}\"")),
    };
    Ok((now as i64 + sign * n * secs * 1000).max(0) as u64)
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

fn current_user() -> String {
    std::env::var("USER").unwrap_or_else(|_| current_uid().to_string())
}

/// The uid Slurm names in `CANCELLED by UID`: the job owner's (rudel records no canceller).
fn uid_of(user: &str) -> String {
    let Ok(c) = std::ffi::CString::new(user) else {
        return "0".into();
    };
    // SAFETY: getpwnam returns null or a pointer to a static passwd record we only read.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        user.parse::<u32>().map_or_else(|_| "0".into(), |u| u.to_string())
    } else {
        // SAFETY: checked non-null above.
        unsafe { (*pw).pw_uid }.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_parses_names_and_widths() {
        let c = parse_format("jobid,State%20,JobName%-5").unwrap();
        assert_eq!(c[0].field, Field::JobId);
        assert_eq!(c[0].width, 12);
        assert_eq!((c[1].width, c[1].left), (20, false));
        assert_eq!((c[2].width, c[2].left), (5, true));
        assert!(parse_format("Nope").unwrap_err().contains("Nope"));
    }

    #[test]
    fn fit_pads_and_truncates_as_slurm() {
        let c = Column {
            field: Field::JobName,
            width: 5,
            left: false,
        };
        assert_eq!(fit("ab", &c), "   ab");
        assert_eq!(fit("abcdefgh", &c), "abcd+");
    }

    #[test]
    fn usage_formats_as_sacct() {
        assert_eq!(kib(0), "0");
        assert_eq!(kib(51_201), "51201K");
        assert_eq!(kib(51_200), "50M");
        assert_eq!(kib(2 << 20), "2G");
        assert_eq!(cpu_time(0), "00:00.000");
        assert_eq!(cpu_time(61_234_567), "01:01.234");
        assert_eq!(cpu_time(3_723_000_000), "01:02:03");
        assert_eq!(cpu_time(90_061_000_000), "1-01:01:01");
    }

    #[test]
    fn unlisted_array_tasks_take_the_state_their_counts_leave() {
        let count = |s: &str, n| pb::StateCount {
            state: s.into(),
            count: n,
        };
        let task = |i, s: &str| pb::HistoryTask {
            index: i,
            state: s.into(),
            ..Default::default()
        };
        let j = pb::HistoryJob {
            job_id: 5,
            state: "cancelled".into(),
            array: "1-4".into(),
            tasks: 4,
            end_ms: 9,
            counts: vec![count("completed", 1), count("failed", 1), count("cancelled", 2)],
            task_records: vec![task(1, "completed"), task(2, "failed")],
            ..Default::default()
        };
        let rows = rows_of(&j, 10);
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[2].id.as_str(), rows[2].state.as_str()), ("5_[1-4]", "cancelled"));
    }

    #[test]
    fn job_selectors() {
        let sel = |id, index, step| Selector { id, index, step };
        assert_eq!(Selector::parse("41").unwrap(), sel(41, None, None));
        assert_eq!(Selector::parse("41_3").unwrap(), sel(41, Some(3), None));
        assert_eq!(Selector::parse("41.batch").unwrap(), sel(41, None, Some(StepId::Batch)));
        assert_eq!(Selector::parse("41.2").unwrap(), sel(41, None, Some(StepId::Srun(2))));
        assert_eq!(
            Selector::parse("41.extern").unwrap(),
            sel(41, None, Some(StepId::Other("extern".into())))
        );
        assert!(Selector::parse("41.").is_err());
        assert!(Selector::parse("41_x").is_err());
        assert!(Selector::parse("abc").is_err());
    }

    #[test]
    fn a_job_line_is_followed_by_its_batch_and_srun_steps() {
        let step = |n, st: &str, code, name: &str| pb::HistoryStep {
            step: n,
            name: name.into(),
            state: st.into(),
            exit_code: code,
            start_ms: 2_000,
            end_ms: 3_000,
            nodelist: "n[1-2]".into(),
            ntasks: 2,
            cpus: 2,
            ..Default::default()
        };
        let j = pb::HistoryJob {
            job_id: 41,
            name: "job.sh".into(),
            state: "timeout".into(),
            start_ms: 1_000,
            end_ms: 9_000,
            nodes: vec!["n1".into(), "n2".into()],
            cpus: 4,
            signal: Some(9),
            steps: vec![step(0, "completed", 0, "true"), step(1, "failed", 3, "sh")],
            ..Default::default()
        };
        let rows = rows_of(&j, 10_000);
        let show = |f: Field| rows.iter().map(|r| value(f, r, 10_000)).collect::<Vec<_>>();
        assert_eq!(show(Field::JobId), ["41", "41.batch", "41.0", "41.1"]);
        assert_eq!(show(Field::JobName), ["job.sh", "batch", "true", "sh"]);
        assert_eq!(show(Field::State), ["TIMEOUT", "CANCELLED", "COMPLETED", "FAILED"]);
        assert_eq!(show(Field::ExitCode), ["0:9", "0:9", "0:0", "3:0"]);
        assert_eq!(show(Field::NodeList), ["n1,n2", "n1", "n[1-2]", "n[1-2]"]);
        assert_eq!(show(Field::NTasks), ["", "1", "2", "2"]);
        assert_eq!(show(Field::Elapsed), ["00:00:08", "00:00:08", "00:00:01", "00:00:01"]);
        let one = Selector::parse("41.1").unwrap();
        assert_eq!(rows.iter().filter(|r| one.matches(r)).count(), 1);
        let batch = Selector::parse("41.batch").unwrap();
        assert_eq!(
            rows.iter()
                .filter(|r| batch.matches(r))
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>(),
            ["41.batch"]
        );
        let pending = pb::HistoryJob {
            job_id: 42,
            ..Default::default()
        };
        assert_eq!(rows_of(&pending, 0).len(), 1, "no batch step before the job starts");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "00:00:00");
        assert_eq!(duration(3661), "01:01:01");
        assert_eq!(duration(90_061), "1-01:01:01");
    }

    #[test]
    fn times_parse_in_slurm_formats() {
        let now = parse_time("2026-11-28T10:30:00", 0).unwrap();
        assert_eq!(local_time(now), "2026-11-28T10:30:00");
        assert_eq!(
            local_time(parse_time("2026-11-28", now).unwrap()),
            "2026-11-28T00:00:00"
        );
        assert_eq!(
            local_time(parse_time("11/27-08:00", now).unwrap()),
            "2026-11-27T08:00:00"
        );
        assert_eq!(local_time(parse_time("11/27/25", now).unwrap()), "2025-11-27T00:00:00");
        assert_eq!(local_time(parse_time("112725", now).unwrap()), "2025-11-27T00:00:00");
        assert_eq!(local_time(parse_time("09:15", now).unwrap()), "2026-11-28T09:15:00");
        assert_eq!(parse_time("now-1hour", now).unwrap(), now - 3_600_000);
        assert_eq!(local_time(parse_time("midnight", now).unwrap()), "2026-11-28T00:00:00");
        assert!(parse_time("yesterday-ish", now).is_err());
    }

    #[test]
    fn states_map_from_slurm_names() {
        assert_eq!(state_filter("CD").unwrap(), "completed");
        assert_eq!(state_filter("cancelled").unwrap(), "cancelled");
        assert_eq!(state_filter("OOM").unwrap(), "out_of_memory");
        assert!(state_filter("BOGUS").is_err());
    }
}
