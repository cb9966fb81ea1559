//! The head's relay of job steps between agents (see `steps.rs`): launches go from the
//! asking agent's request to every node of the step, output and task ends come back to
//! the asking agent, kills go out to the step's nodes. Every message names its node's
//! current session; a node without one is reported to the step's srun, never waited for.
use rudel_proto::v1 as pb;
use rudel_proto::v1::head_message::Msg as HeadMsg;

use crate::agent_service::AgentService;
use crate::steps;

/// Sends `msg` to `node`'s current session (or to the client stream of that origin
/// name, see `client_steps.rs`); false if there is none.
pub(crate) fn send_to(svc: &AgentService, node: &str, msg: HeadMsg) -> bool {
    if node.starts_with(crate::client_steps::PREFIX) {
        return svc.clients.send(node, msg);
    }
    let Ok(sessions) = svc.sessions.lock() else {
        return false;
    };
    sessions
        .get(node)
        .is_some_and(|h| h.to_agent.send(Ok(pb::HeadMessage { msg: Some(msg) })).is_ok())
}

/// A step request from `node`'s agent: refused, or answered and launched on its nodes.
pub fn on_request(svc: &AgentService, node: &str, term: u64, r: pb::StepRequest) {
    let planned = steps::plan(&svc.shared.read().state, node, &r);
    start(svc, node, term, &r, planned);
}

/// Answers `origin` (a node, or a client stream) with the refusal or the started step,
/// and launches it on its nodes; the step's (job, id) if it started.
pub fn start(
    svc: &AgentService,
    node: &str,
    term: u64,
    r: &pb::StepRequest,
    planned: Result<steps::Planned, String>,
) -> Option<(u64, u32)> {
    let p = match planned {
        Ok(p) => p,
        Err(error) => {
            tracing::info!(node, error = %error, "step refused");
            send_to(
                svc,
                node,
                HeadMsg::StepReply(pb::StepReply {
                    id: r.id,
                    error,
                    ..Default::default()
                }),
            );
            return None;
        }
    };
    let floor = svc.shared.read().state.jobs.get(&p.task.job).map_or(0, |j| j.next_step);
    let acct = crate::step_acct::StepAcct::new(
        crate::step_acct::step_name(r),
        p.nodelist.clone(),
        p.ntasks,
        r.cpus_per_task,
        crate::proposer::now_ms(),
    );
    let step = svc.steps.begin(&p, node, acct, floor);
    tracing::info!(job = p.task.job, step, ntasks = p.ntasks, nodes = %p.nodelist, "step starting");
    let task_nodes = p
        .parts
        .iter()
        .flat_map(|part| part.ranks.iter().map(|_| part.name.clone()))
        .collect();
    send_to(
        svc,
        node,
        HeadMsg::StepReply(pb::StepReply {
            id: r.id,
            error: String::new(),
            step,
            ntasks: p.ntasks,
            nodelist: p.nodelist.clone(),
            task_nodes,
        }),
    );
    let launches = p
        .parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let launch = pb::StepLaunch {
                job: p.task.job,
                step,
                user: p.user.clone(),
                argv: r.argv.clone(),
                env: steps::node_env(&r.env, &p, step, i, r.cpus_per_task),
                cwd: r.cwd.clone(),
                ranks: part.ranks.clone(),
                cores: part.cores.clone(),
                mem_bytes: part.mem_bytes,
                term,
                stdin_ranks: p.input.ranks_of(part),
            };
            (part.name.clone(), launch)
        })
        .collect();
    crate::step_fanout::launch(svc, launches);
    Some((p.task.job, step))
}

/// Sends `node` its launch over its session; without one, the step's srun learns at once
/// that these tasks never start.
pub(crate) fn launch_direct(svc: &AgentService, node: &str, launch: pb::StepLaunch) {
    let (job, step, ranks) = (launch.job, launch.step, launch.ranks.clone());
    if send_to(svc, node, HeadMsg::StepLaunch(launch)) {
        return;
    }
    for rank in ranks {
        on_task_end(
            svc,
            pb::StepTaskEnd {
                job,
                step,
                rank,
                exit_code: None,
                signal: None,
                error: format!("node {node} has no session with the head"),
                node: node.to_string(),
            },
        );
    }
}

/// Output of a step task: to the agent whose srun waits for it.
pub fn on_output(svc: &AgentService, o: pb::StepOutput) {
    if let Some(origin) = svc.steps.origin(o.job, o.step) {
        send_to(svc, &origin, HeadMsg::StepOutput(o));
    }
}

/// A step task ended: to the agent whose srun waits for it; after the step's last task,
/// its record goes to accounting.
pub fn on_task_end(svc: &AgentService, e: pb::StepTaskEnd) {
    if let Some((origin, record)) = svc.steps.task_ended(&e, crate::proposer::now_ms()) {
        let (job, step) = (e.job, e.step);
        send_to(svc, &origin, HeadMsg::StepTaskEnd(e));
        if let Some(r) = record {
            svc.fanout.forget(job, step);
            crate::step_records::send(&svc.step_records, r);
        }
    }
}

/// srun asked to kill its step (or is gone): to every node of the step.
pub fn on_signal(svc: &AgentService, s: pb::StepSignal) {
    svc.steps.kill_requested(s.job, s.step);
    for node in svc.steps.nodes(s.job, s.step) {
        send_to(svc, &node, HeadMsg::StepSignal(s));
    }
}

/// A `rudel kv` request from `node`'s agent: answered now, or when its key is put.
pub fn on_kv(svc: &AgentService, node: &str, r: pb::KvRequest) {
    let checked = crate::kv::check(&svc.shared.read().state, node, &r);
    let outcome = match checked {
        Ok(()) => svc.kv.request(node, &r),
        Err(error) => crate::kv::Outcome {
            reply: Some(pb::KvReply {
                id: r.id,
                error,
                ..Default::default()
            }),
            wake: Vec::new(),
        },
    };
    if let Some(reply) = outcome.reply {
        send_to(svc, node, HeadMsg::KvReply(reply));
    }
    for (w, reply) in outcome.wake {
        send_to(svc, &w.node, HeadMsg::KvReply(reply));
    }
}

/// Kills the steps of allocations that ended (the job finished, was cancelled or lost a
/// node): their tasks on other nodes would otherwise outlive the job. Drops the key-value
/// stores of jobs that ended, answering their waiters.
pub fn reap(svc: &AgentService) {
    // One read of the state for both; the lock is released before anything is sent.
    let (woken, reaped) = {
        let applied = svc.shared.read();
        (
            svc.kv.reap(&applied.state),
            svc.steps.reap(&applied.state, crate::proposer::now_ms()),
        )
    };
    let steps::Reaped {
        kill: kills,
        records,
        origins,
    } = reaped;
    for (origin, job, step) in origins {
        // An srun outside the job (a salloc shell's, one holding its own allocation) would
        // otherwise wait for task ends that no longer reach it: the step is forgotten
        // here. One inside the job ends with the job's processes.
        if origin.starts_with(crate::client_steps::PREFIX) {
            svc.clients.end(
                &origin,
                tonic::Status::aborted(format!(
                    "job {job}'s allocation ended (cancelled, time limit or a node lost): step {job}.{step} was killed with it"
                )),
            );
        }
    }
    for r in records {
        crate::step_records::send(&svc.step_records, r);
    }
    for (w, reply) in woken {
        send_to(svc, &w.node, HeadMsg::KvReply(reply));
    }
    for (node, job, step) in kills {
        tracing::info!(job, step, node = %node, "killing a step whose allocation ended");
        send_to(
            svc,
            &node,
            HeadMsg::StepSignal(pb::StepSignal {
                job,
                step,
                signal: libc::SIGKILL,
            }),
        );
    }
}
