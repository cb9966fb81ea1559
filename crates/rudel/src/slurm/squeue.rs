//! `squeue`: the queue in Slurm's formats (`-o`, `-O`, `--json`), one line per running
//! array task and pending array tasks folded into `41_[3-10]` (one line each with `-r`).
use clap::Parser;
use rudel_proto::v1 as pb;
use serde_json::{json, Value};

use super::format;
use super::{SlurmError, SlurmResult};
use crate::client;

#[derive(Parser, Debug)]
#[command(name = "squeue", disable_help_flag = true, version)]
struct Args {
    /// No header.
    #[arg(short = 'h', long = "noheader")]
    noheader: bool,
    #[arg(long)]
    help: bool,
    /// Output format, `%[.][width]X` fields.
    #[arg(short = 'o', long = "format")]
    format: Option<String>,
    /// Output fields by name: `JobID,Name:30,...`.
    #[arg(short = 'O', long = "Format")]
    fields: Option<String>,
    /// States to show (names or codes, comma-separated; `all`).
    #[arg(short = 't', long = "states")]
    states: Option<String>,
    /// Users (comma-separated).
    #[arg(short = 'u', long = "user")]
    users: Option<String>,
    /// Only my jobs.
    #[arg(long)]
    me: bool,
    /// Job ids: `ID`, `ID_INDEX`, comma-separated.
    #[arg(short = 'j', long = "jobs")]
    jobs: Option<String>,
    /// Job names (comma-separated).
    #[arg(short = 'n', long = "name")]
    names: Option<String>,
    /// Partitions (comma-separated).
    #[arg(short = 'p', long = "partition")]
    partitions: Option<String>,
    /// Accounts (comma-separated).
    #[arg(short = 'A', long = "account")]
    accounts: Option<String>,
    /// One line per array task.
    #[arg(short = 'r', long = "array")]
    array: bool,
    /// Long format.
    #[arg(short = 'l', long)]
    long: bool,
    /// Every partition (rudel hides none: accepted).
    #[arg(short = 'a', long = "all")]
    _all: bool,
    #[arg(long)]
    json: bool,
    /// Expected start times of pending jobs (`--format` START_FORMAT, pending only,
    /// sorted by start time), as Slurm's.
    #[arg(long)]
    start: bool,
}

const DEFAULT_FORMAT: &str = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R";
/// Slurm's `--start` format (squeue(1)).
const START_FORMAT: &str = "%.18i %.9P %.8j %.8u %.2t %.19S %.6D %20Y %R";
const LONG_FORMAT: &str = "%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R";

/// One line of squeue: a job, an array task, or an array's pending tasks.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// `%i`: `41`, `41_3`, `41_[3-10%2]`.
    pub id_text: String,
    /// `%A`: the job id of this line (a task's own).
    pub job_id: u64,
    /// `%F`: the array's id (the job id for a job that is not an array).
    pub array_job_id: u64,
    /// `%K`: the index, the pending indices, or `N/A`.
    pub array_task: String,
    pub is_array: bool,
    pub name: String,
    pub user: String,
    pub state: &'static str,
    pub reason: String,
    pub partition: String,
    /// `%a`: the account charged, empty for none.
    pub account: String,
    pub cpus: u32,
    pub nodes: Vec<String>,
    /// For a pending job under backfill: the nodes it is expected to start on.
    pub sched_nodes: Vec<String>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub submit_ms: u64,
    pub time_limit_ms: u64,
    pub priority: i32,
    pub mem_bytes: u64,
    pub gres: String,
    pub workdir: String,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
    pub exit_code: Option<i32>,
}

impl Row {
    fn time_used(&self) -> u64 {
        // A pending line's start is an expected one: nothing has run yet.
        if self.start_ms == 0 || self.state == "PENDING" {
            return 0;
        }
        let end = if self.end_ms > 0 {
            self.end_ms
        } else {
            rudel_tls::now_ms()
        };
        end.saturating_sub(self.start_ms) / 1000
    }

    fn nodelist(&self) -> String {
        rudel_core::hostlist::compress(&self.nodes)
    }

    fn reason_list(&self) -> String {
        if self.state == "PENDING" || self.nodes.is_empty() {
            format!("({})", self.reason)
        } else {
            self.nodelist()
        }
    }

    fn end_time(&self) -> String {
        if self.end_ms > 0 {
            format::time_or(self.end_ms, "N/A")
        } else if self.start_ms > 0 && self.time_limit_ms > 0 {
            format::time_or(self.start_ms + self.time_limit_ms, "N/A")
        } else {
            "N/A".into()
        }
    }

    /// The value of a `%` letter or an `-O` name (lower case).
    pub fn field(&self, key: &str) -> Option<String> {
        Some(match key {
            "i" | "jobarrayid" => self.id_text.clone(),
            "A" | "jobid" => match key {
                // -O JobID shows the array's id for a folded line, as Slurm's.
                "jobid" if self.is_array => self.array_job_id.to_string(),
                _ => self.job_id.to_string(),
            },
            "F" | "arrayjobid" => self.array_job_id.to_string(),
            "K" | "arraytaskid" => self.array_task.clone(),
            "j" | "name" => self.name.clone(),
            "u" | "username" | "user" => self.user.clone(),
            "T" | "state" => self.state.into(),
            "t" | "statecompact" => format::compact_state(self.state).into(),
            "M" | "timeused" => format::elapsed(self.time_used()),
            "l" | "timelimit" => format::limit(self.time_limit_ms),
            "D" | "numnodes" => self.nodes.len().max(1).to_string(),
            "R" | "reasonlist" => self.reason_list(),
            "r" | "reason" => self.reason.clone(),
            "N" | "nodelist" => self.nodelist(),
            "Y" | "schednodes" if self.sched_nodes.is_empty() => "(null)".into(),
            "Y" | "schednodes" => rudel_core::hostlist::compress(&self.sched_nodes),
            "P" | "partition" => self.partition.clone(),
            "C" | "numcpus" => self.cpus.to_string(),
            "c" | "mincpus" => self.cpus.to_string(),
            "a" | "account" if self.account.is_empty() => "(null)".into(),
            "a" | "account" => self.account.clone(),
            "V" | "submittime" => format::time_or(self.submit_ms, "N/A"),
            "S" | "starttime" => format::time_or(self.start_ms, "N/A"),
            "e" | "endtime" => self.end_time(),
            "Q" | "priority" => self.priority.to_string(),
            "y" | "nice" => "0".into(),
            "b" | "tres-per-node" | "gres" => self.gres.clone(),
            "m" | "minmemory" => mem_text(self.mem_bytes),
            "Z" | "workdir" => self.workdir.clone(),
            "o" | "command" => self.command.clone(),
            "stdout" => self.stdout.clone(),
            "stderr" => self.stderr.clone(),
            "exitcode" => self.exit_code.map_or("0".into(), |c| c.to_string()),
            _ => return None,
        })
    }
}

/// Memory as Slurm shows a request: `0`, `512M`, `4G`.
fn mem_text(bytes: u64) -> String {
    let mib = bytes >> 20;
    if mib == 0 {
        "0".into()
    } else if mib.is_multiple_of(1024) {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
    }
}

/// The header of a `%` letter or `-O` name.
fn header(key: &str) -> Option<String> {
    Some(
        match key {
            "i" | "A" | "jobid" => "JOBID",
            "jobarrayid" => "JOBID",
            "F" | "arrayjobid" => "ARRAY_JOB_ID",
            "K" | "arraytaskid" => "ARRAY_TASK_ID",
            "j" | "name" => "NAME",
            "u" | "username" | "user" => "USER",
            "T" | "state" => "STATE",
            "t" | "statecompact" => "ST",
            "M" | "timeused" => "TIME",
            "l" | "timelimit" => "TIME_LIMIT",
            "D" | "numnodes" => "NODES",
            "R" | "reasonlist" => "NODELIST(REASON)",
            "r" | "reason" => "REASON",
            "N" | "nodelist" => "NODELIST",
            "Y" | "schednodes" => "SCHEDNODES",
            "P" | "partition" => "PARTITION",
            "C" | "numcpus" => "CPUS",
            "c" | "mincpus" => "MIN_CPUS",
            "a" | "account" => "ACCOUNT",
            "V" | "submittime" => "SUBMIT_TIME",
            "S" | "starttime" => "START_TIME",
            "e" | "endtime" => "END_TIME",
            "Q" | "priority" => "PRIORITY",
            "y" | "nice" => "NICE",
            "b" | "tres-per-node" | "gres" => "TRES_PER_NODE",
            "m" | "minmemory" => "MIN_MEMORY",
            "Z" | "workdir" => "WORK_DIR",
            "o" | "command" => "COMMAND",
            "stdout" => "STDOUT",
            "stderr" => "STDERR",
            "exitcode" => "EXIT_CODE",
            _ => return None,
        }
        .to_string(),
    )
}

/// Why a job's pending tasks wait, as Slurm's code. With no reason the tasks are placed
/// and wait on their node for a running task's cpus: `Resources`.
fn pending_reason(j: &pb::JobInfo) -> String {
    if j.reason.is_empty() {
        "Resources".into()
    } else {
        format::reason_code(&j.reason)
    }
}

/// A line's fields shared by all lines of one job.
fn base_row(j: &pb::JobInfo) -> Row {
    let spec = j.spec.clone().unwrap_or_default();
    let mut gres: Vec<String> = spec.gres.iter().map(|(k, v)| format!("gres:{k}:{v}")).collect();
    gres.sort();
    let state = format::job_state(&j.state, &j.reason);
    Row {
        id_text: j.id.to_string(),
        job_id: j.id,
        array_job_id: j.id,
        array_task: "N/A".into(),
        is_array: false,
        name: j.name.clone(),
        user: spec.user.clone(),
        state,
        reason: if format::is_final(state) && state != "COMPLETED" {
            match state {
                "FAILED" | "OUT_OF_MEMORY" => "NonZeroExitCode".into(),
                _ => "None".into(),
            }
        } else if state == "PENDING" {
            pending_reason(j)
        } else {
            "None".into()
        },
        partition: spec.partition.clone(),
        account: spec.account.clone(),
        cpus: spec.cpus,
        nodes: j.nodes.clone(),
        sched_nodes: if state == "PENDING" {
            j.sched_nodes.clone()
        } else {
            Vec::new()
        },
        // A pending job's start time is its expected start (under backfill), as Slurm's.
        start_ms: if state == "PENDING" {
            j.expected_start_ms
        } else {
            j.start_ms
        },
        end_ms: j.end_ms,
        submit_ms: j.submit_ms,
        time_limit_ms: spec.time_limit_ms,
        priority: spec.priority,
        mem_bytes: spec.mem_bytes,
        gres: if gres.is_empty() { "N/A".into() } else { gres.join(",") },
        workdir: spec.chdir.clone(),
        stdout: j.output_path.clone(),
        stderr: j.error_path.clone(),
        command: if spec.argv.is_empty() {
            "(batch script)".into()
        } else {
            spec.argv.join(" ")
        },
        exit_code: j.exit_code,
    }
}

/// The lines of one job: one for a plain job; for an array, one per task holding
/// resources and one for its pending tasks (one per pending task with `expand`).
pub fn rows(j: &pb::JobInfo, expand: bool) -> Vec<Row> {
    let spec = j.spec.clone().unwrap_or_default();
    let base = base_row(j);
    if spec.array.is_empty() {
        return vec![base];
    }
    let array = rudel_core::parse::parse_array(&spec.array).ok();
    let own_id = |index: u32| j.id + array.as_ref().and_then(|a| a.position_of(index)).unwrap_or(0);
    let task_row = |index: u32, state: &'static str, node: Option<&str>, start_ms: u64| Row {
        id_text: format!("{}_{index}", j.id),
        job_id: own_id(index),
        array_task: index.to_string(),
        state,
        reason: if state == "PENDING" {
            pending_reason(j)
        } else {
            "None".into()
        },
        nodes: node.map(|n| vec![n.to_string()]).unwrap_or_default(),
        start_ms,
        end_ms: 0,
        ..base.clone()
    };
    if format::is_final(base.state) {
        return vec![Row {
            id_text: format!("{}_[{}]", j.id, spec.array),
            array_task: spec.array.clone(),
            is_array: true,
            ..base
        }];
    }
    let mut out = Vec::new();
    if !j.pending_indices.is_empty() {
        if expand {
            let indices = rudel_core::parse::parse_array(&j.pending_indices).ok();
            let n = indices.as_ref().map_or(0, |a| a.len());
            for p in 0..n {
                if let Some(i) = indices.as_ref().and_then(|a| a.index_at(p)) {
                    out.push(task_row(i, "PENDING", None, 0));
                }
            }
        } else {
            let limit = array
                .as_ref()
                .and_then(|a| a.limit)
                .map(|l| format!("%{l}"))
                .unwrap_or_default();
            let single = j.pending_indices.parse::<u32>().ok().filter(|_| limit.is_empty());
            out.push(Row {
                id_text: match single {
                    Some(i) => format!("{}_{i}", j.id),
                    None => format!("{}_[{}{limit}]", j.id, j.pending_indices),
                },
                job_id: single.map_or(j.id, own_id),
                array_task: format!("{}{limit}", j.pending_indices),
                is_array: true,
                state: "PENDING",
                start_ms: j.expected_start_ms,
                sched_nodes: j.sched_nodes.clone(),
                end_ms: 0,
                nodes: Vec::new(),
                reason: pending_reason(j),
                ..base.clone()
            });
        }
    }
    for t in &j.running_tasks {
        let state = if t.state == "running" { "RUNNING" } else { "PENDING" };
        out.push(task_row(
            t.index,
            state,
            (state == "RUNNING").then_some(t.node.as_str()),
            t.start_ms,
        ));
    }
    // Running lines after pending ones, as Slurm sorts (pending first, then running).
    out.sort_by_key(|r| r.state != "PENDING");
    out
}

/// Slurm's default order (`-S P,t,-p`): partition, then state (pending before running
/// before finished ones), then higher priority first; ties keep job id order.
fn sort_as_slurm(rows: &mut [Row]) {
    let rank = |s: &str| format::JOB_STATES.iter().position(|x| *x == s).unwrap_or(usize::MAX);
    rows.sort_by(|a, b| {
        a.partition
            .cmp(&b.partition)
            .then(rank(a.state).cmp(&rank(b.state)))
            .then(b.priority.cmp(&a.priority))
    });
}

/// Which lines to show.
struct Filter {
    states: Option<Vec<&'static str>>,
    users: Option<Vec<String>>,
    names: Option<Vec<String>>,
    partitions: Option<Vec<String>>,
    accounts: Option<Vec<String>>,
    /// (job id, array index).
    ids: Option<Vec<(u64, Option<u32>)>>,
}

fn list(s: &Option<String>) -> Option<Vec<String>> {
    s.as_ref().map(|s| {
        s.split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    })
}

/// `41`, `41_3` (also `41_[3]`).
pub fn parse_ids(s: &str) -> Result<Vec<(u64, Option<u32>)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            let bad = || format!("Invalid job id: {x}");
            match x.split_once('_') {
                None => x.parse().map(|id| (id, None)).map_err(|_| bad()),
                Some((id, ix)) => Ok((
                    id.parse().map_err(|_| bad())?,
                    Some(ix.trim_matches(|c| c == '[' || c == ']').parse().map_err(|_| bad())?),
                )),
            }
        })
        .collect()
}

impl Filter {
    fn keeps(&self, r: &Row) -> bool {
        let default_states = ["PENDING", "RUNNING", "COMPLETING"];
        let state_ok = match &self.states {
            Some(s) if !s.is_empty() => s.contains(&r.state),
            Some(_) => true,
            None => true,
        } && (self.states.is_some() || self.ids.is_some() || default_states.contains(&r.state));
        let user_ok = self.users.as_ref().is_none_or(|u| u.contains(&r.user));
        let name_ok = self.names.as_ref().is_none_or(|n| n.contains(&r.name));
        let part_ok = self
            .partitions
            .as_ref()
            .is_none_or(|p| r.partition.split(',').any(|x| p.iter().any(|y| y == x)));
        let account_ok = self.accounts.as_ref().is_none_or(|a| a.contains(&r.account));
        let id_ok = self.ids.as_ref().is_none_or(|ids| {
            ids.iter().any(|(id, ix)| match ix {
                None => *id == r.array_job_id || *id == r.job_id,
                Some(i) => *id == r.array_job_id && r.array_task == i.to_string(),
            })
        });
        state_ok && user_ok && name_ok && part_ok && account_ok && id_ok
    }
}

/// Slurm's `squeue --json` shape for one line (the fields rudel has).
fn row_json(r: &Row) -> Value {
    let task: Value = r.array_task.parse::<u32>().map_or(Value::Null, |i| json!(i));
    json!({
        "job_id": r.job_id,
        "array_job_id": if r.array_task == "N/A" { 0 } else { r.array_job_id },
        "array_task_id": task,
        "array_task_string": if r.is_array { r.array_task.clone() } else { String::new() },
        "name": r.name,
        "user_name": r.user,
        "account": r.account,
        "job_state": r.state,
        "state_reason": r.reason,
        "partition": r.partition,
        "nodes": r.nodelist(),
        "node_count": 1,
        "cpus": r.cpus,
        "time_limit": if r.time_limit_ms == 0 { Value::Null } else { json!(r.time_limit_ms.div_ceil(60_000)) },
        "submit_time": r.submit_ms / 1000,
        "start_time": r.start_ms / 1000,
        "end_time": r.end_ms / 1000,
        "priority": r.priority,
        "exit_code": r.exit_code.unwrap_or(0),
        "current_working_directory": r.workdir,
        "standard_output": r.stdout,
        "standard_error": r.stderr,
        "command": r.command,
    })
}

/// `squeue`.
pub async fn squeue(args: Vec<String>, head: &str) -> SlurmResult {
    let a: Args = super::parse("squeue", args)?;
    if a.help {
        println!("Usage: squeue [-h] [-o FORMAT | -O FIELDS] [-t STATES] [-u USERS] [--me] [-j IDS] [-n NAMES] [-p PARTS] [-r] [-l] [--json]");
        return Ok(0);
    }
    let states = match &a.states {
        Some(s) => Some(format::parse_states(s).map_err(SlurmError::msg)?.unwrap_or_default()),
        None if a.start => Some(vec!["PENDING"]),
        None => None,
    };
    let ids = match &a.jobs {
        Some(s) => Some(parse_ids(s).map_err(SlurmError::msg)?),
        None => None,
    };
    let mut users = list(&a.users);
    if a.me {
        users.get_or_insert_with(Vec::new).push(crate::opts::user_name());
    }
    let filter = Filter {
        states,
        users,
        names: list(&a.names),
        partitions: list(&a.partitions),
        accounts: list(&a.accounts),
        ids,
    };
    let items = if let Some(f) = &a.fields {
        format::parse_fields(f)
    } else {
        let fmt = a.format.clone().or_else(|| std::env::var("SQUEUE_FORMAT").ok());
        let fmt = fmt.unwrap_or_else(|| {
            if a.start {
                START_FORMAT
            } else if a.long {
                LONG_FORMAT
            } else {
                DEFAULT_FORMAT
            }
            .into()
        });
        format::parse_percent(&fmt).map_err(SlurmError::msg)?
    };
    // Finished jobs only when asked for (a state filter naming them, or job ids).
    let all = filter.ids.is_some()
        || filter
            .states
            .as_ref()
            .is_some_and(|s| s.is_empty() || s.iter().any(|s| format::is_final(s)));
    let mut c = client::connect(head).await?;
    let jobs = c
        .list_jobs(pb::ListJobsRequest { all, stale: false })
        .await
        .map_err(client::failure)?
        .into_inner()
        .jobs;
    if let Some(ids) = &filter.ids {
        let known = |id: u64| jobs.iter().any(|j| id >= j.id && id < j.id + j.tasks.max(1));
        if !ids.iter().any(|(id, _)| known(*id)) {
            return Err(SlurmError::raw("slurm_load_jobs error: Invalid job id specified"));
        }
    }
    let expand = a.array
        || filter
            .ids
            .as_ref()
            .is_some_and(|ids| ids.iter().any(|(_, ix)| ix.is_some()));
    let mut lines: Vec<Row> = jobs
        .iter()
        .flat_map(|j| rows(j, expand))
        .filter(|r| filter.keeps(r))
        .collect();
    sort_as_slurm(&mut lines);
    if a.start {
        // --sort=S: by expected start; unknown (N/A) ones after, in the usual order.
        lines.sort_by_key(|r| if r.start_ms == 0 { u64::MAX } else { r.start_ms });
    }
    if a.json {
        let v: Vec<Value> = lines.iter().map(row_json).collect();
        println!(
            "{}",
            json!({"meta": {"plugin": {"type": "rudel"}}, "errors": [], "jobs": v})
        );
        return Ok(0);
    }
    let mut out = String::new();
    if a.long && a.fields.is_none() && a.format.is_none() {
        out.push_str(&format!("{}\n", date_line()));
    }
    if !a.noheader {
        out.push_str(&format::render(&items, header).map_err(SlurmError::msg)?);
        out.push('\n');
    }
    for r in &lines {
        out.push_str(&format::render(&items, |k| r.field(k)).map_err(SlurmError::msg)?);
        out.push('\n');
    }
    print!("{out}");
    Ok(0)
}

/// The date line of `-l`, as Slurm's (`Sat Nov 28 10:12:06 2026`).
pub fn date_line() -> String {
    let secs = (rudel_tls::now_ms() / 1000) as libc::time_t;
    let mut buf = [0u8; 64];
    // SAFETY: localtime_r and strftime write only into `tm` and `buf`, which we own, and
    // strftime never writes more than buf.len() bytes.
    let n = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return String::new();
        }
        libc::strftime(
            buf.as_mut_ptr().cast(),
            buf.len(),
            c"%a %b %d %H:%M:%S %Y".as_ptr(),
            &tm,
        )
    };
    String::from_utf8_lossy(&buf[..n.min(buf.len())]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, array: &str, state: &str, pending: &str, running: &[(u32, &str)]) -> pb::JobInfo {
        pb::JobInfo {
            id,
            name: "s.sh".into(),
            state: state.into(),
            tasks: 6,
            reason: if state == "pending" {
                "Priority: behind others".into()
            } else {
                String::new()
            },
            spec: Some(pb::JobSpec {
                array: array.into(),
                user: "root".into(),
                partition: "batch".into(),
                cpus: 1,
                ..Default::default()
            }),
            pending_indices: pending.into(),
            running_tasks: running
                .iter()
                .map(|(i, n)| pb::TaskInfo {
                    index: *i,
                    state: "running".into(),
                    node: n.to_string(),
                    start_ms: 1,
                    ..Default::default()
                })
                .collect(),
            nodes: running.iter().map(|(_, n)| n.to_string()).collect(),
            ..Default::default()
        }
    }

    fn render_all(rows: &[Row], fmt: &str) -> Vec<String> {
        let items = format::parse_percent(fmt).unwrap();
        rows.iter()
            .map(|r| format::render(&items, |k| r.field(k)).unwrap())
            .collect()
    }

    #[test]
    fn pending_arrays_fold_and_running_tasks_get_lines() {
        // As Slurm 22.05 printed for `sbatch -a 1-5` with task 1 running (ids 4, own id 6 for 4_1).
        let j = job(4, "1-5", "running", "2-5", &[(1, "vm")]);
        let r = rows(&j, false);
        assert_eq!(
            render_all(&r, "%i %T %K %A %F %t"),
            ["4_[2-5] PENDING 2-5 4 4 PD", "4_1 RUNNING 1 4 4 R"]
        );
        let r = rows(&j, true);
        assert_eq!(r.len(), 5);
        assert_eq!(r[0].id_text, "4_2");
        assert_eq!(r[0].job_id, 5);
        let j = job(7, "1-6%2", "pending", "1-6", &[]);
        assert_eq!(render_all(&rows(&j, false), "%i|%K|%R"), ["7_[1-6%2]|1-6%2|(Priority)"]);
        let plain = job(9, "", "pending", "", &[]);
        assert_eq!(render_all(&rows(&plain, false), "%i %K %a %b"), ["9 N/A (null) N/A"]);
    }

    #[test]
    fn pending_lines_come_first_across_jobs_as_slurm_sorts() {
        // Slurm 22.05: `sbatch -a 1-3 s.sh` (16, two cpus) then `sbatch -a 1-3%2 s.sh` (17).
        let mut r = rows(&job(16, "1-3", "running", "3", &[(1, "vm"), (2, "vm")]), false);
        r.extend(rows(&job(17, "1-3%2", "pending", "1-3", &[]), false));
        sort_as_slurm(&mut r);
        assert_eq!(
            render_all(&r, "%i %t %R"),
            [
                "16_3 PD (Resources)",
                "17_[1-3%2] PD (Priority)",
                "16_1 R vm",
                "16_2 R vm"
            ]
        );
    }

    #[test]
    fn default_format_matches_slurms_columns() {
        let j = job(4, "1-5", "running", "2-5", &[(1, "vm")]);
        let r = rows(&j, false);
        let lines = render_all(&r, DEFAULT_FORMAT);
        assert_eq!(
            lines[0],
            "           4_[2-5]     batch     s.sh     root PD       0:00      1 (Resources)"
        );
    }

    #[test]
    fn filters_by_state_id_and_index() {
        let j = job(4, "1-5", "running", "2-5", &[(1, "vm")]);
        let r = rows(&j, true);
        let f = |states, ids| Filter {
            states,
            users: None,
            names: None,
            partitions: None,
            accounts: None,
            ids,
        };
        assert_eq!(r.iter().filter(|x| f(Some(vec!["RUNNING"]), None).keeps(x)).count(), 1);
        assert_eq!(
            r.iter().filter(|x| f(None, Some(vec![(4, Some(3))])).keeps(x)).count(),
            1
        );
        assert_eq!(r.iter().filter(|x| f(None, Some(vec![(4, None)])).keeps(x)).count(), 5);
        assert_eq!(parse_ids("4_3,5").unwrap(), [(4, Some(3)), (5, None)]);
        assert_eq!(parse_ids("abc").unwrap_err(), "Invalid job id: abc");
    }
}
