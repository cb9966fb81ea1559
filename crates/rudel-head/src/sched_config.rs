//! `rudel admin config`: reading and changing the replicated scheduling configuration.
use rudel_core::sched::{SchedConfig, SCHED_VERSION};
use rudel_core::{Command, Response};
use rudel_proto::v1 as pb;
use tonic::Status;

use crate::proposer::{now_ms, Proposer};

/// Settings a request may name at most (there are only a few).
const MAX_SETTINGS: usize = 64;

/// The configuration as the API shows it.
pub fn to_pb(c: &SchedConfig) -> pb::SchedConfig {
    pb::SchedConfig {
        settings: c
            .all_settings()
            .into_iter()
            .map(|(name, value)| pb::SchedSetting { name, value })
            .collect(),
        head_version: SCHED_VERSION,
    }
}

/// Checks the change against the current configuration (a clear error without a log
/// entry), then commits it; apply checks it again, at its place in the log.
pub async fn set(
    proposer: &Proposer,
    current: &SchedConfig,
    req: pb::SetSchedConfigRequest,
) -> Result<pb::SchedConfig, Status> {
    if req.settings.is_empty() || req.settings.len() > MAX_SETTINGS {
        return Err(Status::invalid_argument(format!(
            "name between 1 and {MAX_SETTINGS} settings, e.g. `rudel admin config set order=fifo`"
        )));
    }
    let settings: Vec<(String, String)> = req.settings.into_iter().map(|s| (s.name, s.value)).collect();
    current
        .with_all(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let cmd = Command::Configure {
        settings: settings.clone(),
        now_ms: now_ms(),
    };
    match proposer.propose(cmd).await? {
        Response::Configured { settings: applied } => {
            tracing::warn!(?settings, "scheduling configuration changed");
            Ok(pb::SchedConfig {
                settings: applied
                    .into_iter()
                    .map(|(name, value)| pb::SchedSetting { name, value })
                    .collect(),
                head_version: SCHED_VERSION,
            })
        }
        Response::Rejected { reason } => Err(Status::failed_precondition(reason)),
        other => Err(Status::internal(format!("unexpected configure result {other:?}"))),
    }
}

/// Every partition (the implicit default one when none is configured) with its nodes and
/// load, from the applied state.
pub fn partitions(state: &rudel_core::State) -> pb::ListPartitionsResponse {
    use rudel_core::sched::{Partition, DEFAULT_PARTITION};
    let implicit;
    let parts: Vec<(&str, &Partition)> = if state.sched.partitions.is_empty() {
        implicit = Partition {
            default: true,
            ..Partition::default()
        };
        vec![(DEFAULT_PARTITION, &implicit)]
    } else {
        state.sched.partitions.iter().map(|(n, p)| (n.as_str(), p)).collect()
    };
    let partitions = parts
        .into_iter()
        .map(|(name, p)| {
            let nodes: Vec<&rudel_core::Node> = state.nodes.iter().filter(|n| p.contains(n)).collect();
            let in_part = |j: &&rudel_core::Job| j.spec.partition.split(',').any(|x| x == name);
            let jobs: Vec<&rudel_core::Job> = state.jobs.values().filter(in_part).collect();
            pb::PartitionInfo {
                name: name.to_string(),
                state: p.state.as_str().into(),
                is_default: p.default,
                tier: p.tier,
                node_expr: p.nodes.as_ref().map_or("ALL".into(), |c| c.to_string()),
                nodes: nodes.iter().map(|n| n.name.clone()).collect(),
                cpus: nodes.iter().map(|n| n.cpus).sum(),
                cpus_used: nodes.iter().map(|n| n.cpus_used).sum(),
                default_time_ms: p.default_time_ms,
                max_time_ms: p.max_time_ms,
                default_mem_per_cpu: p.default_mem_per_cpu,
                pending_jobs: jobs.iter().filter(|j| j.has_pending()).count() as u64,
                running_jobs: jobs.iter().filter(|j| !j.running.is_empty()).count() as u64,
            }
        })
        .collect();
    pb::ListPartitionsResponse { partitions }
}
