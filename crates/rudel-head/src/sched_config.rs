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
            .settings()
            .into_iter()
            .map(|(name, value)| pb::SchedSetting {
                name: name.to_string(),
                value,
            })
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
