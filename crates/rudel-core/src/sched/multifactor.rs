//! The `multifactor` order: Slurm's priority/multifactor formula,
//!
//! ```text
//! priority = weight_age       * age factor
//!          + weight_fairshare * fair-share factor
//!          + weight_jobsize   * job-size factor
//!          + weight_partition * partition factor
//!          + weight_priority  * the job's own --priority (--nice N is -N)
//! ```
//!
//! with every factor in [0, 1]:
//! - age: time since submission (or the `--begin` time), over `max_age_s`, at most 1;
//! - fair-share: `2^(-U/S)` of the job's user as of the last Tick (`state/fairshare.rs`);
//! - job size: the job's cpus over all cpus of the cluster (Slurm favours large jobs by
//!   default too);
//! - partition: the highest `factor` of the job's partitions over the highest of all
//!   partitions (Slurm's PriorityJobFactor; the partition `tier` still orders first).
//!
//! Rudel has no QOS: Slurm's QOS weight has no counterpart. Factors are Q32 fixed point and
//! the priority is kept with 20 fractional bits ([`PRIORITY_FRAC_BITS`]), so two jobs of
//! nearly equal priority still order by it, then by id. A priority changes with time; the
//! queue holds the value computed when the job entered it or at the last re-keying Tick.
use crate::job::Job;
use crate::sched::fixed::{ratio_q32, ONE_Q32};
use crate::state::State;

/// Fractional bits of [`Priority::value`].
pub const PRIORITY_FRAC_BITS: u32 = 20;

/// A job's multifactor priority and the factors it comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Priority {
    /// Q32 factors in [0, 1].
    pub age: u64,
    pub fairshare: u64,
    pub jobsize: u64,
    pub partition: u64,
    /// `weight_priority * --priority`, in whole priority points.
    pub own: i64,
    /// The total, with [`PRIORITY_FRAC_BITS`] fractional bits (higher first).
    pub value: i64,
}

impl Priority {
    /// The priority rounded to whole points, as `squeue`/`sprio` show it.
    pub fn points(&self) -> i64 {
        (self.value + (1 << (PRIORITY_FRAC_BITS - 1))) >> PRIORITY_FRAC_BITS
    }
}

fn clamp_q32(v: u128) -> u64 {
    u64::try_from(v.min(u128::from(ONE_Q32))).unwrap_or(ONE_Q32)
}

/// Cpus the job asks for: per task, times the tasks of a multi-node allocation.
fn job_cpus(job: &Job) -> u64 {
    let per = u64::from(job.spec.cpus);
    match &job.spec.alloc {
        Some(a) => {
            let tasks = a
                .ntasks
                .unwrap_or_else(|| a.nodes_min.saturating_mul(a.ntasks_per_node.unwrap_or(1)));
            per.saturating_mul(u64::from(tasks.max(1)))
        }
        None => per,
    }
}

/// The job's priority now (the state's time, its cached fair-share factors and cpus).
pub fn priority(state: &State, job: &Job) -> Priority {
    let mut memo = Memo::default();
    memo.priority(state, job)
}

/// What many priority computations in one entry share: the partition factor of each
/// partition list and the fair-share factor of each user. A re-keying Tick computes up to
/// 50,000 priorities; splitting partition lists and looking names up for each was most
/// of its cost at 10,000 nodes.
#[derive(Default)]
pub struct Memo<'s> {
    max_part: Option<u64>,
    parts: rustc_hash::FxHashMap<&'s str, u64>,
    users: rustc_hash::FxHashMap<&'s str, u64>,
}

impl<'s> Memo<'s> {
    /// [`priority`], with the per-list and per-user factors remembered.
    pub fn priority(&mut self, state: &'s State, job: &'s Job) -> Priority {
        let max_part = *self.max_part.get_or_insert_with(|| {
            state
                .sched
                .partitions
                .values()
                .map(|p| u64::from(p.factor))
                .max()
                .unwrap_or(0)
        });
        let mine = *self
            .parts
            .entry(job.spec.partition.as_str())
            .or_insert_with(|| partition_factor(state, &job.spec.partition));
        let fairshare = *self
            .users
            .entry(job.spec.user.as_str())
            .or_insert_with(|| state.fairshare.factor(&job.spec.user));
        compute(state, job, fairshare, mine, max_part)
    }
}

/// The highest `factor` of the partitions a job names.
fn partition_factor(state: &State, list: &str) -> u64 {
    list.split(',')
        .map(|name| {
            state
                .sched
                .partitions
                .get(name.trim())
                .map_or(0, |p| u64::from(p.factor))
        })
        .max()
        .unwrap_or(0)
}

fn compute(state: &State, job: &Job, fairshare: u64, mine: u64, max_part: u64) -> Priority {
    let cfg = &state.sched.fair;
    let since = job.submit_ms.max(job.spec.begin_ms);
    let age_ms = state.now_ms.saturating_sub(since);
    let max_age_ms = cfg.max_age_s.max(1).saturating_mul(1000);
    let age = clamp_q32(ratio_q32(u128::from(age_ms.min(max_age_ms)), u128::from(max_age_ms)));
    let jobsize = clamp_q32(ratio_q32(
        u128::from(job_cpus(job)),
        u128::from(state.fairshare.total_cpus.max(1)),
    ));
    let partition = if max_part == 0 {
        0
    } else {
        clamp_q32(ratio_q32(u128::from(mine), u128::from(max_part)))
    };
    let own = i128::from(cfg.weight_priority) * i128::from(job.spec.priority);
    let weighted: u128 = [
        (cfg.weight_age, age),
        (cfg.weight_fairshare, fairshare),
        (cfg.weight_jobsize, jobsize),
        (cfg.weight_partition, partition),
    ]
    .iter()
    .map(|&(w, f)| u128::from(w) * u128::from(f))
    .sum();
    // Q32 products down to the key's fraction bits; weights are at most 2^32, so the sum
    // of four is below 2^66 before and 2^54 after the shift.
    let factors = i128::try_from(weighted >> (32 - PRIORITY_FRAC_BITS)).unwrap_or(i128::MAX);
    let value = factors.saturating_add(own << PRIORITY_FRAC_BITS);
    let clamp = |v: i128| i64::try_from(v.clamp(i128::from(i64::MIN + 1), i128::from(i64::MAX))).unwrap_or(0);
    Priority {
        age,
        fairshare,
        jobsize,
        partition,
        own: clamp(own),
        value: clamp(value),
    }
}

/// `rudel explain`'s priority line under `multifactor` (empty under other orders): the
/// priority the queue holds, what it is now, and each weighted factor.
pub fn explain(state: &State, job: &Job) -> String {
    if state.sched.order != crate::sched::Order::Multifactor {
        return String::new();
    }
    let cfg = &state.sched.fair;
    let p = priority(state, job);
    let q = crate::sched::fixed::q32_text;
    let held = (job.mf_priority + (1 << (PRIORITY_FRAC_BITS - 1))) >> PRIORITY_FRAC_BITS;
    format!(
        "{} (queued at {held}; recomputed every {} s): age {} x {} + fairshare {} x {} (user {}) + jobsize {} x {} + \
         partition {} x {} + own priority {}",
        p.points(),
        cfg.calc_period_s,
        q(p.age),
        cfg.weight_age,
        q(p.fairshare),
        cfg.weight_fairshare,
        job.spec.user,
        q(p.jobsize),
        cfg.weight_jobsize,
        q(p.partition),
        cfg.weight_partition,
        p.own,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Response;
    use crate::testkit::{configure, one_node, spec, submit};

    #[test]
    fn factors_add_up_as_slurm_weighs_them() {
        let mut s = one_node(4);
        let r = configure(
            &mut s,
            &[
                ("version", "4"),
                ("order", "multifactor"),
                ("multifactor.weight_age", "1000"),
                ("multifactor.weight_jobsize", "400"),
                ("multifactor.max_age_s", "100"),
            ],
        );
        assert!(!matches!(r, Response::Rejected { .. }), "{r:?}");
        let mut sp = spec();
        sp.cpus = 2;
        sp.priority = -5;
        let id = submit(&mut s, sp);
        s.now_ms += 50_000;
        let p = priority(&s, &s.jobs[&id]);
        assert_eq!(p.age, ONE_Q32 / 2, "50 of 100 s");
        assert_eq!(p.fairshare, ONE_Q32, "no usage yet");
        assert_eq!(p.jobsize, ONE_Q32 / 2, "2 of 4 cpus");
        assert_eq!(p.partition, 0, "no partition factors");
        // 1000*0.5 + 10000*1 + 400*0.5 - 5.
        assert_eq!(p.points(), 500 + 10_000 + 200 - 5);
        s.now_ms += 1_000_000;
        assert_eq!(priority(&s, &s.jobs[&id]).age, ONE_Q32, "capped at max_age");
    }
}
