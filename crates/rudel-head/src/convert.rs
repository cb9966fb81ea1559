//! Conversions between the wire types (`rudel.v1`) and rudel-core's model.
use rudel_core::job::TaskState;
use rudel_core::limits::{check_spec, SpecText};
use rudel_core::pattern::{self, PatternVars};
use rudel_core::query;
use rudel_core::{Job, JobSpec, Node, State};
use rudel_proto::v1 as pb;
use tonic::Status;

/// Most task records returned by `show` for one job.
pub const MAX_TASK_DETAILS: usize = 1_000;

/// The text fields of a wire spec, for [`rudel_core::limits::check_spec`]; variables in
/// name order, so the first problem reported does not depend on hash order.
pub fn pb_text(s: &pb::JobSpec) -> SpecText<'_> {
    let mut env: Vec<(&str, &str)> = s.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.sort_unstable();
    SpecText {
        name: &s.name,
        argv: &s.argv,
        script: &s.script,
        env,
        chdir: &s.chdir,
        output: &s.output,
        error: &s.error,
    }
}

/// Wire spec to core spec, with the checks that need no state. The limits of
/// [`rudel_core::limits`] are checked here, at the entrance, not in apply: a spec whose
/// tasks could never start is refused before it reaches the log.
pub fn spec_from_pb(s: pb::JobSpec) -> Result<JobSpec, Status> {
    check_spec(&pb_text(&s)).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if !s.account.is_empty() {
        rudel_core::sched::account::check_name(&s.account)
            .map_err(|e| Status::invalid_argument(format!("--account: {e}")))?;
    }
    let array = if s.array.is_empty() {
        None
    } else {
        Some(rudel_core::parse::parse_array(&s.array).map_err(|e| Status::invalid_argument(e.to_string()))?)
    };
    let spec = JobSpec {
        argv: s.argv,
        script: s.script,
        name: s.name,
        cpus: s.cpus.max(1),
        mem_bytes: s.mem_bytes,
        time_limit_ms: s.time_limit_ms,
        priority: s.priority,
        array,
        output: s.output,
        error: s.error,
        chdir: s.chdir,
        env: std::sync::Arc::new(s.env.into_iter().collect()),
        requeue: s.requeue,
        user: s.user,
        constraint: if s.constraint.trim().is_empty() {
            None
        } else {
            Some(
                rudel_core::constraint::Constraint::parse(&s.constraint)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            )
        },
        gres: s.gres.into_iter().collect(),
        licenses: s.licenses.into_iter().collect(),
        partition: s.partition,
        submit_dir: s.submit_dir,
        submit_host: s.submit_host,
        dependency: dependency_from_pb(&s.dependency)?,
        kill_on_invalid_dep: s.kill_on_invalid_dep,
        hold: s.hold,
        begin_ms: begin_from_pb(&s.begin, s.begin_ms)?,
        signal: if s.signal.trim().is_empty() {
            None
        } else {
            Some(rudel_core::signal::parse(&s.signal).map_err(|e| Status::invalid_argument(e.to_string()))?)
        },
        open_append: s.open_append,
        mem_per_cpu: s.mem_per_cpu,
        account: s.account,
        interactive: s.interactive,
        alloc: rudel_core::alloc::AllocSpec::parse_text(&s.allocation)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
            .map(Box::new),
    };
    rudel_core::resources::check_request("resources", &spec.gres).map_err(Status::invalid_argument)?;
    rudel_core::resources::check_request("licenses", &spec.licenses).map_err(Status::invalid_argument)?;
    rudel_core::state::validate_spec(&spec).map_err(Status::invalid_argument)?;
    Ok(spec)
}

fn dependency_from_pb(text: &str) -> Result<Option<rudel_core::deps::DepSpec>, Status> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    rudel_core::deps::parse(text)
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("--dependency={text}: {e}")))
}

/// `--begin` text resolved by this head's clock (the leader's, as Slurm's controller does).
fn begin_from_pb(text: &str, absolute_ms: u64) -> Result<u64, Status> {
    if text.trim().is_empty() {
        return Ok(absolute_ms);
    }
    rudel_core::begin::parse_begin(text, crate::proposer::now_ms()).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Core spec to wire spec.
pub fn spec_to_pb(s: &JobSpec) -> pb::JobSpec {
    pb::JobSpec {
        argv: s.argv.clone(),
        script: String::new(),
        name: s.name.clone(),
        cpus: s.cpus,
        mem_bytes: s.mem_bytes,
        time_limit_ms: s.time_limit_ms,
        priority: s.priority,
        array: s.array.as_ref().map(|a| a.to_spec_string()).unwrap_or_default(),
        output: s.output.clone(),
        error: s.error.clone(),
        chdir: s.chdir.clone(),
        env: Default::default(),
        requeue: s.requeue,
        user: s.user.clone(),
        constraint: s.constraint.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        gres: s.gres.clone().into_iter().collect(),
        licenses: s.licenses.clone().into_iter().collect(),
        partition: s.partition.clone(),
        submit_dir: s.submit_dir.clone(),
        submit_host: s.submit_host.clone(),
        dependency: s.dependency.as_ref().map(ToString::to_string).unwrap_or_default(),
        kill_on_invalid_dep: s.kill_on_invalid_dep,
        hold: s.hold,
        begin: String::new(),
        begin_ms: s.begin_ms,
        signal: s.signal.map(|w| w.to_string()).unwrap_or_default(),
        open_append: s.open_append,
        mem_per_cpu: s.mem_per_cpu,
        account: s.account.clone(),
        interactive: s.interactive,
        allocation: s.alloc.as_ref().map(|a| a.to_text()).unwrap_or_default(),
    }
}

/// Display name of a job: its name, else its command's base name.
pub fn job_name(spec: &JobSpec) -> String {
    if !spec.name.is_empty() {
        return spec.name.clone();
    }
    match spec.argv.first() {
        Some(a) => a.rsplit('/').next().unwrap_or(a).to_string(),
        None => "script".into(),
    }
}

/// Resolved output and error paths of one task; `None` = discarded, error `Some("")` = into output.
pub fn output_paths(job: &Job, index: u32, node: &str) -> (Option<String>, Option<String>) {
    let spec = &job.spec;
    let name = job_name(spec);
    let vars = PatternVars {
        job: job.id,
        task_job: job.task_job_id(index),
        index: if job.is_array() { Some(index) } else { None },
        name: &name,
        node,
        user: &spec.user,
    };
    let out_pat = if spec.output.is_empty() {
        pattern::default_output(job.is_array())
    } else {
        spec.output.as_str()
    };
    let out = pattern::resolve(out_pat, &vars, &spec.chdir);
    let err = if spec.error.is_empty() {
        Some(String::new())
    } else {
        pattern::resolve(&spec.error, &vars, &spec.chdir)
    };
    (out, err)
}

/// A job as the API shows it.
pub fn job_info(state: &State, job: &Job, details: bool) -> pb::JobInfo {
    let status = query::exit_status(job);
    let st = job.state();
    let reason = match st {
        TaskState::Pending | TaskState::Running => query::pending_reason(state, job),
        TaskState::Completed => String::new(),
        _ => query::failure_reason(job),
    };
    let first_index = job.index_at(0);
    let nodes = query::job_nodes(job);
    let first_node = nodes.first().cloned().unwrap_or_default();
    let (out, err) = output_paths(job, first_index, &first_node);
    let (expected_start_ms, sched_nodes) = rudel_core::sched::backfill_explain::expected_start(state, job)
        .filter(|_| st == TaskState::Pending)
        .unwrap_or_default();
    pb::JobInfo {
        expected_start_ms,
        sched_nodes,
        // Filled from the accounting store by ShowJob only (`history_service::steps_of`).
        steps: Vec::new(),
        steps_dropped: job.steps_dropped,
        task_index: None,
        held: job.held,
        pending_indices: rudel_core::pending::pending_indices(job),
        running_tasks: query::running_views(state, job).into_iter().map(task_info).collect(),
        id: job.id,
        name: job_name(&job.spec),
        state: st.as_str().into(),
        spec: Some(spec_to_pb(&job.spec)),
        tasks: job.total,
        counts: {
            let c = job.display_counts();
            TaskState::ALL
                .iter()
                .zip(c)
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| pb::StateCount {
                    state: s.as_str().into(),
                    count: n,
                })
                .collect()
        },
        exit_code: status.and_then(|(c, _)| c),
        signal: status.and_then(|(_, s)| s),
        nodes,
        submit_ms: job.submit_ms,
        start_ms: job.start_ms.unwrap_or(0),
        end_ms: job.end_ms.unwrap_or(0),
        reason,
        task_details: if details {
            query::task_views(state, job, MAX_TASK_DETAILS)
                .into_iter()
                .map(task_info)
                .collect()
        } else {
            Vec::new()
        },
        output_path: out.clone().unwrap_or_default(),
        error_path: match err {
            Some(e) if e.is_empty() => out.unwrap_or_default(),
            Some(e) => e,
            None => String::new(),
        },
    }
}

/// A task as the API shows it.
fn task_info(t: query::TaskView) -> pb::TaskInfo {
    pb::TaskInfo {
        index: t.index,
        state: t.state.as_str().into(),
        node: t.node,
        attempt: t.attempt,
        exit_code: t.exit_code,
        signal: t.signal,
        start_ms: t.start_ms,
        end_ms: t.end_ms,
        reason: t.reason,
    }
}

/// A node as the API shows it.
pub fn node_info(n: &Node) -> pb::NodeInfo {
    pb::NodeInfo {
        name: n.name.clone(),
        state: n.display_state().into(),
        cpus: n.cpus,
        cpus_used: n.cpus_used,
        mem_bytes: n.mem_bytes,
        mem_used: n.mem_used,
        mem_enforcement: n.mem_enforcement.clone(),
        containment: n.containment.clone(),
        run_as: n.run_as.clone(),
        version: n.version.clone(),
        arch: n.arch.clone(),
        os: n.os.clone(),
        last_seen_ms: n.last_seen_ms,
        running_tasks: n.running.len() as u32,
        address: n.address.clone(),
        labels: n.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        gres: n
            .gres
            .iter()
            .map(|(k, p)| (k.clone(), format!("{}/{}", p.total() - p.available(), p.total())))
            .collect(),
        reason: match (&n.drain, n.liveness) {
            (_, rudel_core::node::Liveness::Down) => n.down_reason.clone(),
            (Some(r), _) => r.clone(),
            _ => String::new(),
        },
    }
}
