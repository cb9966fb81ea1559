//! `scontrol show job|node|partition` in Slurm's `Key=Value` layout (the keys scripts
//! grep for); `hold`/`release`/`update` through the head's Hold and Update calls,
//! `requeue`/`requeuehold` through Requeue (`scontrol_requeue.rs`). The other changing
//! commands (suspend, ...) are refused until rudel has them.
use rudel_proto::v1 as pb;

use super::format;
use super::{SlurmError, SlurmResult};
use crate::client;

/// `scontrol`.
pub async fn scontrol(args: Vec<String>, head: &str) -> SlurmResult {
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|w| !w.starts_with('-'))
        .collect();
    match words.as_slice() {
        ["show", what, rest @ ..] => show(what, rest.first().copied(), head).await,
        [] | ["help"] => {
            println!("Usage: scontrol show job [ID] | show node [NAME] | show partition [NAME]");
            Ok(0)
        }
        [verb @ ("hold" | "uhold" | "release"), ids @ ..] => hold(ids, *verb == "release", head).await,
        ["update", pairs @ ..] => update(pairs, head).await,
        [verb @ ("requeue" | "requeuehold"), ids @ ..] => {
            super::scontrol_requeue::requeue(ids, *verb == "requeuehold", head).await
        }
        [verb @ ("suspend" | "resume" | "top"), ..] => Err(SlurmError::msg(format!(
            "scontrol {verb} is not supported yet by rudel (nothing was changed)"
        ))),
        [verb, ..] => Err(SlurmError::raw(format!("invalid keyword: {verb}"))),
    }
}

/// What `scontrol update` changes, from its `Key=Value` words.
#[derive(Debug, Default, PartialEq, Eq)]
struct Update {
    ids: Vec<u64>,
    priority: Option<i32>,
    time_limit_ms: Option<u64>,
    name: Option<String>,
}

/// Parses `JobId=N[,M] Priority=P TimeLimit=T JobName=X`; any other key is refused, so
/// that nothing is changed only in part.
fn parse_update(pairs: &[&str]) -> Result<Update, SlurmError> {
    let mut u = Update::default();
    for p in pairs {
        let Some((k, v)) = p.split_once('=') else {
            return Err(SlurmError::msg(format!("Invalid input: {p}")));
        };
        match k.to_ascii_lowercase().as_str() {
            "jobid" => {
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    match super::squeue::parse_ids(s).map_err(|_| SlurmError::msg(format!("Invalid job id {s}")))?[..] {
                        [(id, None)] => u.ids.push(id),
                        _ => {
                            return Err(SlurmError::msg(format!(
                                "updating one array task ({s}) is not supported yet; give the array's id (nothing was changed)"
                            )))
                        }
                    }
                }
            }
            "priority" => u.priority = Some(v.parse().map_err(|_| SlurmError::msg(format!("Invalid priority: {v}")))?),
            "timelimit" => {
                u.time_limit_ms = Some(if v.eq_ignore_ascii_case("unlimited") || v.eq_ignore_ascii_case("infinite") {
                    0
                } else {
                    rudel_core::parse::parse_duration(v).map_err(|_| SlurmError::msg("Invalid TimeLimit value"))?
                })
            }
            "jobname" | "name" => u.name = Some(v.to_string()),
            _ => {
                return Err(SlurmError::msg(format!(
                    "Update of {k} is not supported yet by rudel (JobId, Priority, TimeLimit, JobName are); nothing was changed"
                )))
            }
        }
    }
    if u.ids.is_empty() {
        return Err(SlurmError::msg("No job identification provided (JobId=N)"));
    }
    Ok(u)
}

/// `scontrol update JobId=N ...`: silent on success, as Slurm's.
async fn update(pairs: &[&str], head: &str) -> SlurmResult {
    let u = parse_update(pairs)?;
    let r = client::on_leader(head, |mut c| {
        let req = pb::UpdateRequest {
            job_ids: u.ids.clone(),
            priority: u.priority,
            time_limit_ms: u.time_limit_ms,
            name: u.name.clone(),
        };
        async move { c.update(req).await }
    })
    .await;
    changed_or_errors(r, &[])
}

/// A Hold/Update answer as scontrol reports it: nothing on success; each job left as it
/// was (other than for a reason in `benign`) as an error, exit 1.
pub(super) fn changed_or_errors(
    r: Result<tonic::Response<pb::ChangeResponse>, crate::Failure>,
    benign: &[&str],
) -> SlurmResult {
    let r = match r {
        Ok(r) => r.into_inner(),
        Err(f) if format!("{:#}", f.error).starts_with("no ") => {
            return Err(SlurmError::msg("Invalid job id specified"));
        }
        Err(f) => return Err(f.into()),
    };
    let failed: Vec<String> = r
        .skipped
        .iter()
        .filter(|s| !benign.iter().any(|b| s.why.starts_with(b)))
        .map(|s| format!("job {}: {}", s.id, s.why))
        .collect();
    if failed.is_empty() {
        Ok(0)
    } else {
        Err(SlurmError::msg(failed.join("\n")))
    }
}

/// `scontrol hold|release ID[,ID] ...`: silent on success, as Slurm's.
async fn hold(ids: &[&str], release: bool, head: &str) -> SlurmResult {
    let mut job_ids = Vec::new();
    for s in ids.iter().flat_map(|s| s.split(',')).filter(|s| !s.is_empty()) {
        match super::squeue::parse_ids(s).map_err(|_| SlurmError::msg(format!("Invalid job id {s}")))?[..] {
            [(id, None)] => job_ids.push(id),
            _ => {
                return Err(SlurmError::msg(format!(
                    "holding or releasing one array task ({s}) is not supported yet; give the array's id \
                     (nothing was changed)"
                )))
            }
        }
    }
    if job_ids.is_empty() {
        return Err(SlurmError::msg("Invalid job id specified"));
    }
    let r = client::on_leader(head, |mut c| {
        let ids = job_ids.clone();
        async move { c.hold(pb::HoldRequest { job_ids: ids, release }).await }
    })
    .await;
    // Already held (or not held, for release) is no error, as Slurm's.
    changed_or_errors(r, &["already held", "not held"])
}

async fn show(what: &str, name: Option<&str>, head: &str) -> SlurmResult {
    let text = match what.to_ascii_lowercase().as_str() {
        "job" | "jobs" | "jobid" => show_jobs(name, head).await?,
        "node" | "nodes" => show_nodes(name, head).await?,
        "partition" | "partitions" => show_partitions(name, head).await?,
        other => return Err(SlurmError::raw(format!("invalid entity:{other} for keyword:show"))),
    };
    print!("{text}");
    Ok(0)
}

async fn show_jobs(id: Option<&str>, head: &str) -> Result<String, SlurmError> {
    let mut c = client::connect(head).await?;
    let Some(id) = id else {
        let jobs = c
            .list_jobs(pb::ListJobsRequest {
                all: true,
                stale: false,
            })
            .await
            .map_err(client::failure)?
            .into_inner()
            .jobs;
        if jobs.is_empty() {
            return Ok("No jobs in the system\n".into());
        }
        return Ok(jobs.iter().map(|j| job_record(j, None)).collect());
    };
    let invalid = || SlurmError::raw("slurm_load_jobs error: Invalid job id specified");
    let parsed = super::squeue::parse_ids(id).map_err(|_| invalid())?;
    let Some(&(job_id, index)) = parsed.first() else {
        return Err(invalid());
    };
    let j = match c.show_job(pb::ShowJobRequest { job_id, stale: false }).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Err(invalid()),
        Err(s) => return Err(client::failure(s).into()),
    };
    let index = index.or(j.task_index);
    if let Some(i) = index {
        let spec = j.spec.clone().unwrap_or_default();
        let in_array = rudel_core::parse::parse_array(&spec.array)
            .ok()
            .and_then(|a| a.position_of(i));
        if in_array.is_none() {
            return Err(invalid());
        }
    }
    Ok(job_record(&j, index))
}

/// A task's state when the job's details name it; otherwise pending if its index is
/// among the pending ones, else completed (the details list every other outcome).
fn task_state(j: &pb::JobInfo, index: u32) -> (String, Option<&pb::TaskInfo>) {
    if let Some(t) = j.task_details.iter().chain(&j.running_tasks).find(|t| t.index == index) {
        return (t.state.clone(), Some(t));
    }
    let pending = rudel_core::parse::parse_array(&j.pending_indices)
        .ok()
        .is_some_and(|a| a.position_of(index).is_some());
    (if pending { "pending" } else { "completed" }.into(), None)
}

/// One job (or one array task) as `scontrol show job` prints it.
fn job_record(j: &pb::JobInfo, index: Option<u32>) -> String {
    let spec = j.spec.clone().unwrap_or_default();
    let (mut state, mut reason) = (j.state.clone(), j.reason.clone());
    let (mut start, mut end, mut nodes) = (j.start_ms, j.end_ms, j.nodes.clone());
    let (mut code, mut signal) = (j.exit_code, j.signal);
    let mut job_id = j.id;
    let array_part = match index {
        Some(i) => {
            let (st, t) = task_state(j, i);
            state = st;
            if let Some(t) = t {
                reason = t.reason.clone();
                start = t.start_ms;
                end = t.end_ms;
                nodes = if t.node.is_empty() {
                    Vec::new()
                } else {
                    vec![t.node.clone()]
                };
                code = t.exit_code;
                signal = t.signal;
            }
            let position = rudel_core::parse::parse_array(&spec.array)
                .ok()
                .and_then(|a| a.position_of(i))
                .unwrap_or(0);
            job_id = j.id + position;
            format!(" ArrayJobId={} ArrayTaskId={i}", j.id)
        }
        None if !spec.array.is_empty() => format!(" ArrayJobId={} ArrayTaskId={}", j.id, spec.array),
        None => String::new(),
    };
    let (stdout, stderr) = match index {
        Some(i) => task_paths(j, &spec, i, job_id, nodes.first().map_or("", String::as_str)),
        None => (j.output_path.clone(), j.error_path.clone()),
    };
    let slurm_state = format::job_state(&state, &reason);
    let reason_code = match slurm_state {
        "PENDING" => format::reason_code(&reason),
        "FAILED" | "OUT_OF_MEMORY" => "NonZeroExitCode".into(),
        _ => "None".into(),
    };
    let run_secs = if start == 0 {
        0
    } else {
        (if end > 0 { end } else { rudel_tls::now_ms() }).saturating_sub(start) / 1000
    };
    let time_limit = if spec.time_limit_ms == 0 {
        "UNLIMITED".to_string()
    } else {
        format::clock(spec.time_limit_ms.div_ceil(1000))
    };
    let end_text = if end > 0 {
        format::time_or(end, "Unknown")
    } else if start > 0 && spec.time_limit_ms > 0 {
        format::time_or(start + spec.time_limit_ms, "Unknown")
    } else {
        "Unknown".into()
    };
    // A batch script's text is not sent back; its arguments are.
    let batch = spec.argv.is_empty() || !spec.script.is_empty();
    let command = if batch {
        "(batch script)".to_string()
    } else {
        spec.argv.join(" ")
    };
    let exit = format!("{}:{}", code.unwrap_or(0), signal.unwrap_or(0));
    let mut gres: Vec<String> = spec.gres.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    gres.sort();
    let mut lic: Vec<String> = spec.licenses.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    lic.sort();
    let or_null = |v: Vec<String>| {
        if v.is_empty() {
            "(null)".to_string()
        } else {
            v.join(",")
        }
    };
    let mut s = String::new();
    s.push_str(&format!("JobId={job_id}{array_part} JobName={}\n", j.name));
    s.push_str(&format!(
        "   UserId={} GroupId={}\n",
        user_with_uid(&spec.user),
        user_with_uid(&spec.user)
    ));
    s.push_str(&format!(
        "   Priority={} Nice=0 Account={} QOS=(null)\n",
        spec.priority,
        if spec.account.is_empty() {
            "(null)"
        } else {
            &spec.account
        }
    ));
    s.push_str(&format!(
        "   JobState={slurm_state} Reason={reason_code} Dependency=(null)\n"
    ));
    s.push_str(&format!(
        "   Requeue={} Restarts=0 BatchFlag={} Reboot=0 ExitCode={exit}\n",
        u8::from(spec.requeue),
        u8::from(batch)
    ));
    s.push_str(&format!(
        "   RunTime={} TimeLimit={time_limit} TimeMin=N/A\n",
        format::clock(run_secs)
    ));
    s.push_str(&format!("   SubmitTime={}\n", format::time_or(j.submit_ms, "Unknown")));
    s.push_str(&format!(
        "   StartTime={} EndTime={end_text} Deadline=N/A\n",
        format::time_or(start, "Unknown")
    ));
    s.push_str(&format!(
        "   Partition={} AllocNode:Sid={}:0\n",
        spec.partition, spec.submit_host
    ));
    s.push_str(&format!("   NodeList={}\n", rudel_core::hostlist::compress(&nodes)));
    s.push_str(&format!(
        "   NumNodes=1 NumCPUs={} NumTasks=1 CPUs/Task={}\n",
        spec.cpus, spec.cpus
    ));
    s.push_str(&format!("   MinMemoryNode={}M\n", spec.mem_bytes >> 20));
    s.push_str(&format!(
        "   Features={} Gres={} Licenses={}\n",
        if spec.constraint.is_empty() {
            "(null)"
        } else {
            &spec.constraint
        },
        or_null(gres),
        or_null(lic)
    ));
    s.push_str(&format!("   Command={command}\n"));
    s.push_str(&format!("   WorkDir={}\n", spec.chdir));
    s.push_str(&format!("   StdErr={stderr}\n"));
    s.push_str("   StdIn=/dev/null\n");
    s.push_str(&format!("   StdOut={stdout}\n\n"));
    s
}

/// One array task's output and error paths (the job's are the first task's); empty when
/// discarded, the error path the output's when they share a file.
fn task_paths(j: &pb::JobInfo, spec: &pb::JobSpec, index: u32, task_job: u64, node: &str) -> (String, String) {
    use rudel_core::pattern::{resolve, PatternVars};
    let vars = PatternVars {
        job: j.id,
        task_job,
        index: Some(index),
        name: &j.name,
        node,
        user: &spec.user,
    };
    let out = resolve(&spec.output, &vars, &spec.chdir).unwrap_or_default();
    let err = if spec.error.is_empty() {
        out.clone()
    } else {
        resolve(&spec.error, &vars, &spec.chdir).unwrap_or_default()
    };
    (out, err)
}

/// `name(uid)` as Slurm shows users, when the name is known here.
fn user_with_uid(name: &str) -> String {
    let Ok(c) = std::ffi::CString::new(name) else {
        return name.to_string();
    };
    // SAFETY: getpwnam_r writes only into `pw` and `buf`, which we own and size.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) == 0 && !out.is_null() {
            return format!("{name}({})", pw.pw_uid);
        }
    }
    name.to_string()
}

async fn show_nodes(name: Option<&str>, head: &str) -> Result<String, SlurmError> {
    let (parts, nodes) = super::sinfo::load(head).await?;
    let chosen: Vec<&pb::NodeInfo> = nodes.iter().filter(|n| name.is_none_or(|x| x == n.name)).collect();
    if chosen.is_empty() {
        return Err(match name {
            Some(n) => SlurmError::raw(format!("Node {n} not found")),
            None => SlurmError::raw("No nodes in the system"),
        });
    }
    Ok(chosen
        .iter()
        .map(|n| {
            let in_parts: Vec<&str> = parts
                .iter()
                .filter(|p| p.nodes.contains(&n.name))
                .map(|p| p.name.as_str())
                .collect();
            let mut gres: Vec<String> = n
                .gres
                .iter()
                .map(|(k, v)| format!("{k}:{}", v.split('/').nth(1).unwrap_or(v)))
                .collect();
            gres.sort();
            let state = super::sinfo::node_state(&n.state).0.to_ascii_uppercase();
            format!(
                "NodeName={} Arch={}\n   CPUAlloc={} CPUTot={}\n   Gres={}\n   NodeAddr={} Version={}\n   OS={}\n   \
                 RealMemory={} AllocMem={} FreeMem={}\n   State={state}\n   Partitions={}\n   Reason={}\n\n",
                n.name,
                n.arch,
                n.cpus_used,
                n.cpus,
                if gres.is_empty() {
                    "(null)".into()
                } else {
                    gres.join(",")
                },
                n.address,
                n.version,
                n.os,
                n.mem_bytes >> 20,
                n.mem_used >> 20,
                n.mem_bytes.saturating_sub(n.mem_used) >> 20,
                in_parts.join(","),
                if n.reason.is_empty() { "(null)" } else { &n.reason },
            )
        })
        .collect())
}

async fn show_partitions(name: Option<&str>, head: &str) -> Result<String, SlurmError> {
    let (parts, _) = super::sinfo::load(head).await?;
    let chosen: Vec<&pb::PartitionInfo> = parts.iter().filter(|p| name.is_none_or(|x| x == p.name)).collect();
    if chosen.is_empty() {
        return Err(SlurmError::raw(format!("Partition {} not found", name.unwrap_or(""))));
    }
    let time = |ms: u64, none: &str| {
        if ms == 0 {
            none.to_string()
        } else {
            format::clock(ms.div_ceil(1000))
        }
    };
    Ok(chosen
        .iter()
        .map(|p| {
            format!(
                "PartitionName={}\n   Default={} State={}\n   DefaultTime={} MaxTime={}\n   Nodes={}\n   \
                 PriorityTier={} TotalCPUs={} TotalNodes={}\n   DefMemPerCPU={}\n\n",
                p.name,
                if p.is_default { "YES" } else { "NO" },
                p.state.to_ascii_uppercase(),
                time(p.default_time_ms, "NONE"),
                time(p.max_time_ms, "UNLIMITED"),
                rudel_core::hostlist::compress(&p.nodes),
                p.tier,
                p.cpus,
                p.nodes.len(),
                if p.default_mem_per_cpu == 0 {
                    "UNLIMITED".to_string()
                } else {
                    (p.default_mem_per_cpu >> 20).to_string()
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_words_as_scontrol_takes_them() {
        let u = parse_update(&["JobId=5,6", "Priority=10", "TimeLimit=1:30:00", "JobName=x"]).unwrap();
        assert_eq!(
            u,
            Update {
                ids: vec![5, 6],
                priority: Some(10),
                time_limit_ms: Some(5_400_000),
                name: Some("x".into())
            }
        );
        assert_eq!(
            parse_update(&["jobid=5", "timelimit=UNLIMITED"]).unwrap().time_limit_ms,
            Some(0)
        );
        assert!(parse_update(&["JobId=5", "Nice=3"]).unwrap_err().lines[0].contains("nothing was changed"));
        assert!(parse_update(&["Priority=3"]).is_err());
        assert!(parse_update(&["JobId=5_2", "Priority=3"]).is_err());
    }

    #[test]
    fn a_job_record_has_the_keys_scripts_grep_for() {
        let j = pb::JobInfo {
            id: 4,
            name: "s.sh".into(),
            state: "running".into(),
            tasks: 5,
            start_ms: 1,
            nodes: vec!["vm".into()],
            pending_indices: "2-5".into(),
            running_tasks: vec![pb::TaskInfo {
                index: 1,
                state: "running".into(),
                node: "vm".into(),
                start_ms: 1,
                ..Default::default()
            }],
            spec: Some(pb::JobSpec {
                array: "1-5".into(),
                user: "nobody-here-x".into(),
                partition: "batch".into(),
                cpus: 1,
                chdir: "/tmp/sref".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = job_record(&j, Some(1));
        assert!(
            r.starts_with("JobId=4 ArrayJobId=4 ArrayTaskId=1 JobName=s.sh\n"),
            "{r}"
        );
        for key in [
            "UserId=nobody-here-x ",
            "JobState=RUNNING Reason=None",
            "ExitCode=0:0",
            "TimeLimit=UNLIMITED",
            "Partition=batch",
            "NodeList=vm",
            "NumCPUs=1",
            "WorkDir=/tmp/sref",
        ] {
            assert!(r.contains(key), "{key} in {r}");
        }
        let r = job_record(&j, Some(3));
        assert!(r.contains("StdOut=/tmp/sref/rudel-4_3.out"), "{r}");
        assert!(r.starts_with("JobId=6 ArrayJobId=4 ArrayTaskId=3 "), "{r}");
        assert!(r.contains("JobState=PENDING"), "{r}");
    }
}
