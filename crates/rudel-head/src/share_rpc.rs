//! The Share call (`rudel share`, `sshare`): every user's fair-share standing from this
//! head's replicated state. Like Slurm's sshare without PrivateData=usage, any
//! authenticated caller sees every user's row: fair-share is about how users compare.
use rudel_core::state::State;
use rudel_proto::v1 as pb;

/// Q32 fraction to a float, for display only.
fn frac(q: u64) -> f64 {
    q as f64 / (1u64 << 32) as f64
}

/// The rows of `users` (empty: all).
pub fn share(state: &State, users: &[String]) -> pb::ShareResponse {
    let rows = state
        .share_report()
        .into_iter()
        .filter(|r| users.is_empty() || users.contains(&r.user))
        .map(|r| pb::ShareRow {
            user: r.user,
            raw_shares: r.shares,
            norm_shares: frac(r.norm_shares),
            raw_usage: r.usage_cpu_us as f64 / 1e6,
            effective_usage: frac(r.effective_usage),
            fairshare: frac(r.factor),
            running_cpus: r.running_cpus,
        })
        .collect();
    pb::ShareResponse {
        rows,
        enabled: state.fair_on(),
        version: state.sched.version,
        order: state.sched.order.as_str().into(),
        half_life_s: state.sched.fair.half_life_s,
    }
}
