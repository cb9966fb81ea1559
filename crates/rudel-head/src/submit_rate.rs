//! Per-user submit rate limit (`limits.submit_rate_per_user` jobs per second, burst
//! `limits.submit_burst_per_user`, default the rate): admission control on the head that
//! takes the call, before anything is proposed. A token bucket per user (`governor`); an
//! array is one submit. Not replicated: refusing a call changes no state, and a client
//! that moves to another head meets that head's own bucket, at most doubling its rate in
//! the seconds of a failover.
//!
//! Without it one user's workflow tool submitting in a tight loop fills the log and slows
//! every other user's submits (issue 12's storm benchmark).
use std::num::NonZeroU32;
use std::sync::Mutex;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use tonic::Status;

type Buckets = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// Users tracked before buckets that are full again are dropped (a bucket refilled to
/// its burst is the same as none).
const TRACKED_USERS: usize = 10_000;

#[derive(Default)]
pub struct SubmitRate {
    /// The buckets of the (rate, burst) in force; rebuilt when the configuration changes.
    buckets: Mutex<Option<((NonZeroU32, NonZeroU32), Buckets)>>,
}

fn non_zero(v: Option<u64>) -> Option<NonZeroU32> {
    v.and_then(|v| NonZeroU32::new(u32::try_from(v).unwrap_or(u32::MAX)))
}

impl SubmitRate {
    /// Takes one submit of `user` from its bucket, or refuses with how long to wait.
    pub fn check(&self, user: &str, rate: Option<u64>, burst: Option<u64>) -> Result<(), Status> {
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rate) = non_zero(rate) else {
            *guard = None;
            return Ok(());
        };
        let key = (rate, non_zero(burst).unwrap_or(rate));
        if guard.as_ref().map(|(k, _)| *k) != Some(key) {
            *guard = Some((key, RateLimiter::keyed(Quota::per_second(key.0).allow_burst(key.1))));
        }
        let Some((_, buckets)) = guard.as_ref() else {
            return Ok(());
        };
        if buckets.len() > TRACKED_USERS {
            buckets.retain_recent();
        }
        buckets.check_key(&user.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            tracing::info!(user, rate = rate.get(), "refused submit: over the per-user submit rate");
            Status::resource_exhausted(format!(
                "{user} is submitting faster than {rate} jobs/s (limit); retry in {:.2} s",
                wait.as_secs_f64().max(0.01)
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_over_the_burst_is_refused_with_the_wait_and_others_are_not() {
        let r = SubmitRate::default();
        for _ in 0..3 {
            r.check("alice", Some(1), Some(3)).unwrap();
        }
        let e = r.check("alice", Some(1), Some(3)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.message()
                .starts_with("alice is submitting faster than 1 jobs/s (limit); retry in "),
            "{e}"
        );
        r.check("bob", Some(1), Some(3)).unwrap();
        // No limit configured: everything passes.
        for _ in 0..10 {
            r.check("alice", None, None).unwrap();
        }
    }
}
