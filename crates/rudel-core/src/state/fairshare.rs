//! Fair-share usage per user, in the replicated state (scheduling version 4 on).
//!
//! Usage is what a user's running tasks held, in cpu-microseconds: allocated cpus (plus
//! GPUs times `fairshare.gpu_weight`) times the time they ran, measured in the log's own
//! time (`State::now_ms` of the entries where a task started and stopped), never a
//! replica's clock. Each user has a charge *rate* (cpus and GPUs of started tasks) kept up
//! where a task starts and stops, so usage accrues exactly without scanning running tasks.
//!
//! At every `Tick` entry usage decays by `2^(-dt/half_life)` for the log time `dt` since
//! the last one (Slurm's PriorityDecayHalfLife) and the fair-share factor of every user is
//! computed again (Slurm's classic formula, flat: one level of users):
//!
//! ```text
//! S = shares(user) / sum of shares        (normalized shares)
//! U = usage(user)  / sum of usage         (effective usage)
//! F = 2^(-U / S)                          (1 with no usage; 0.5 at exactly its share)
//! ```
//!
//! over the users in the table (who ran something and still have usage or running tasks)
//! and those with configured shares. The factors are cached until the next Tick, as Slurm
//! recomputes priorities every PriorityCalcPeriod. All of it is integer math
//! (`sched/fixed.rs`): replicas agree bit for bit.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::JobId;
use crate::job::RunningTask;
use crate::sched::fair::{FairConfig, CALC_PERIOD_VERSION, FAIR_VERSION};
use crate::sched::fixed::{exp2_neg_q32, mul_q32, ratio_q32, ONE_Q32};
use crate::sched::order::QueueKey;

/// One user's usage and what it is charged for now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserUsage {
    /// Decayed usage in cpu-microseconds (text in snapshots: JSON numbers stop at 64 bits
    /// in most readers).
    #[serde(with = "u128_text")]
    pub usage: u128,
    /// Cpus and GPUs of this user's started tasks.
    pub cpus: u64,
    pub gpus: u64,
    /// Log time up to which `usage` includes them.
    pub since_ms: u64,
}

/// The fair-share table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FairShare {
    pub users: BTreeMap<String, UserUsage>,
    /// Log time of the last decay (a Tick, or the entry that raised the version to 3).
    pub tick_ms: u64,
    /// Fair-share factor per user (Q32) as of the last Tick; a user absent has 1.
    pub factors: BTreeMap<String, u64>,
    /// Cpus of all nodes as of the last Tick (the job-size factor's denominator).
    pub total_cpus: u64,
    /// Where the next Tick goes on re-prioritising queued jobs (by job id).
    pub rekey_from: JobId,
}

/// One row of `rudel share`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareRow {
    pub user: String,
    pub shares: u64,
    /// Q32 fractions.
    pub norm_shares: u64,
    pub usage_cpu_us: u128,
    pub effective_usage: u64,
    pub factor: u64,
    /// Cpus of running tasks charged now.
    pub running_cpus: u64,
}

impl FairShare {
    /// A user's fair-share factor as of the last Tick (Q32).
    pub fn factor(&self, user: &str) -> u64 {
        self.factors.get(user).copied().unwrap_or(ONE_Q32)
    }

    /// Adds what `user`'s started tasks held since the last accrual.
    fn accrue(u: &mut UserUsage, now: u64, gpu_weight_milli: u64) {
        let dt = u128::from(now.saturating_sub(u.since_ms));
        // cpus * ms * 1000 = cpu-µs; GPUs weighted in thousandths likewise.
        let rate = u128::from(u.cpus) * 1000 + u128::from(u.gpus) * u128::from(gpu_weight_milli);
        u.usage = u.usage.saturating_add(rate.saturating_mul(dt));
        u.since_ms = u.since_ms.max(now);
    }

    /// A task of `user` starts (or stops: `sign` false) holding cpus and GPUs at `now`.
    pub fn charge(&mut self, user: &str, cpus: u64, gpus: u64, now: u64, cfg: &FairConfig, start: bool) {
        let u = self.users.entry(user.to_string()).or_insert_with(|| UserUsage {
            since_ms: now,
            ..UserUsage::default()
        });
        Self::accrue(u, now, cfg.gpu_weight_milli);
        if start {
            u.cpus = u.cpus.saturating_add(cpus);
            u.gpus = u.gpus.saturating_add(gpus);
        } else {
            u.cpus = u.cpus.saturating_sub(cpus);
            u.gpus = u.gpus.saturating_sub(gpus);
        }
    }

    /// Recomputes the cached factors from the usage as it is (shares changed).
    pub fn refresh(&mut self, cfg: &FairConfig) {
        self.factors = self
            .rows(cfg)
            .into_iter()
            .filter(|r| r.factor != ONE_Q32)
            .map(|r| (r.user, r.factor))
            .collect();
    }

    /// Accrues every user to `now`, decays usage by the time since the last Tick, drops
    /// users with nothing left, and recomputes the factors.
    pub fn tick(&mut self, now: u64, cfg: &FairConfig) {
        for u in self.users.values_mut() {
            Self::accrue(u, now, cfg.gpu_weight_milli);
        }
        let dt_ms = u128::from(now.saturating_sub(self.tick_ms));
        let half_ms = u128::from(cfg.half_life_s.max(1)) * 1000;
        let keep = exp2_neg_q32(ratio_q32(dt_ms, half_ms));
        if keep < ONE_Q32 {
            for u in self.users.values_mut() {
                u.usage = mul_q32(u.usage, keep);
            }
        }
        self.users.retain(|_, u| u.usage > 0 || u.cpus > 0 || u.gpus > 0);
        self.tick_ms = self.tick_ms.max(now);
        self.refresh(cfg);
    }

    /// Shares, usage and factor of every user in the table or with configured shares,
    /// computed from the current usage (what the next Tick would cache).
    pub fn rows(&self, cfg: &FairConfig) -> Vec<ShareRow> {
        let mut names: Vec<&String> = self.users.keys().chain(cfg.shares.keys()).collect();
        names.sort();
        names.dedup();
        let total_shares: u128 = names.iter().map(|n| u128::from(cfg.shares_of(n))).sum();
        let total_usage: u128 = self.users.values().fold(0u128, |a, u| a.saturating_add(u.usage));
        names
            .into_iter()
            .map(|n| {
                let shares = cfg.shares_of(n);
                let u = self.users.get(n).cloned().unwrap_or_default();
                let norm_shares = ratio_q32(u128::from(shares), total_shares.max(1));
                let effective = ratio_q32(u.usage, total_usage);
                // x = U / S in Q32: (U_q32 * total_shares) / shares.
                let x = effective.saturating_mul(total_shares) / u128::from(shares.max(1));
                ShareRow {
                    user: n.clone(),
                    shares,
                    norm_shares: clamp_q32(norm_shares),
                    usage_cpu_us: u.usage,
                    effective_usage: clamp_q32(effective),
                    factor: exp2_neg_q32(x),
                    running_cpus: u.cpus,
                }
            })
            .collect()
    }
}

fn clamp_q32(v: u128) -> u64 {
    u64::try_from(v.min(u128::from(ONE_Q32))).unwrap_or(ONE_Q32)
}

/// What a started task is charged for: its cpus (all slices of a multi-node job) and GPUs.
fn weight(rt: &RunningTask, spec_cpus: u32) -> (u64, u64) {
    (super::running::task_cpus(rt, spec_cpus), super::running::task_gpus(rt))
}

impl super::State {
    /// Fair-share accounting runs from scheduling version 4 on: an older head keeps no
    /// usage, and heads that switched it on at different entries would disagree.
    pub fn fair_on(&self) -> bool {
        self.sched.version >= FAIR_VERSION
    }

    /// A task of `job` started holding its resources (placed free, or took over from its
    /// predecessor), or stopped (`start` false).
    pub(crate) fn fair_charge(&mut self, job: JobId, cpus: u64, gpus: u64, start: bool) {
        if !self.fair_on() {
            return;
        }
        let Some(j) = self.jobs.get(&job) else { return };
        let user = j.spec.user.clone();
        self.fairshare
            .charge(&user, cpus, gpus, self.now_ms, &self.sched.fair, start);
    }

    /// [`State::fair_charge`] for a task the state holds (a successor taking over).
    pub(crate) fn fair_charge_task(&mut self, key: crate::ids::TaskKey, start: bool) {
        let w = self
            .jobs
            .get(&key.job)
            .and_then(|j| j.running.get(&key.index).map(|rt| weight(rt, j.spec.cpus)));
        if let Some((cpus, gpus)) = w {
            self.fair_charge(key.job, cpus, gpus, start);
        }
    }

    /// A running multi-node task gave back `cpus` (its other nodes freed) and goes on.
    pub(crate) fn fair_shrink(&mut self, user: &str, cpus: u64) {
        if self.fair_on() {
            self.fairshare
                .charge(user, cpus, 0, self.now_ms, &self.sched.fair, false);
        }
    }

    /// The cluster switched to version 4: starts charging every task running now.
    pub(crate) fn fair_enable(&mut self) {
        let now = self.now_ms;
        self.fairshare = FairShare {
            tick_ms: now,
            ..FairShare::default()
        };
        let started: Vec<(String, u64, u64)> = self
            .jobs
            .values()
            .flat_map(|j| {
                j.running.values().filter(|rt| rt.after.is_none()).map(|rt| {
                    let (c, g) = weight(rt, j.spec.cpus);
                    (j.spec.user.clone(), c, g)
                })
            })
            .collect();
        for (user, cpus, gpus) in started {
            self.fairshare.charge(&user, cpus, gpus, now, &self.sched.fair, true);
        }
        self.fairshare.total_cpus = self.nodes.iter().map(|n| u64::from(n.cpus)).sum();
    }

    /// A `Tick` entry: decay, new factors, and (under `multifactor`) new priorities for up
    /// to `rekey_per_tick` queued jobs; from version 9 on only once `calc_period_s` has
    /// passed since the last (Slurm's PriorityCalcPeriod).
    pub(crate) fn fair_tick(&mut self) {
        if !self.fair_on() {
            return;
        }
        let due = self
            .fairshare
            .tick_ms
            .saturating_add(self.sched.fair.calc_period_s.saturating_mul(1000));
        if self.sched.version >= CALC_PERIOD_VERSION && self.now_ms < due {
            // Ticks come for other reasons too (a time limit, a capped pass going on):
            // each re-keyed up to `rekey_per_tick` jobs, 240 ms at 10,000 nodes.
            return;
        }
        self.fairshare.tick(self.now_ms, &self.sched.fair);
        self.fairshare.total_cpus = self.nodes.iter().map(|n| u64::from(n.cpus)).sum();
        if self.sched.order == crate::sched::Order::Multifactor {
            self.rekey();
        }
    }

    /// When the leader should propose the next fair-share Tick: a period after the last
    /// one while there is usage to decay or a multifactor queue to age.
    pub fn fair_wake_ms(&self) -> Option<u64> {
        if !self.fair_on() {
            return None;
        }
        let aging = self.sched.order == crate::sched::Order::Multifactor && !self.queue.is_empty();
        (aging || !self.fairshare.users.is_empty()).then(|| {
            self.fairshare
                .tick_ms
                .saturating_add(self.sched.fair.calc_period_s * 1000)
        })
    }

    /// Re-prioritises queued jobs, in job-id order from where the last Tick stopped, at
    /// most `rekey_per_tick` of them (a queue larger than that is done over several
    /// Ticks, round-robin), so one Tick's cost is bounded however long the queue.
    ///
    /// It walks the queue, not every job (finished ones included), and takes each job's
    /// tier from the key the queue holds: the tier changes only with the partitions, and
    /// a `Configure` that changes them rebuilds the queue.
    fn rekey(&mut self) {
        let cap = usize::try_from(self.sched.fair.rekey_per_tick).unwrap_or(usize::MAX);
        let from = self.fairshare.rekey_from;
        let mut queued: Vec<QueueKey> = self
            .queue
            .iter()
            .filter(|k| self.jobs.get(&k.2).is_some_and(|j| j.has_pending()))
            .copied()
            .collect();
        queued.sort_unstable_by_key(|k| k.2);
        let split = queued.partition_point(|k| k.2 < from);
        queued.rotate_left(split);
        let chosen = &queued[..cap.min(queued.len())];
        self.fairshare.rekey_from = self.rekey_resume(from, chosen, cap);
        let mut changed: Vec<(QueueKey, i64)> = Vec::new();
        let mut memo = crate::sched::multifactor::Memo::default();
        for &key in chosen {
            let Some(j) = self.jobs.get(&key.2) else { continue };
            let p = memo.priority(self, j).value;
            if p != j.mf_priority {
                changed.push((key, p));
            }
        }
        drop(memo);
        self.requeue_keys(&changed);
    }

    /// Where the next re-keying starts: the job after the last one re-keyed (in the
    /// round-robin order from `from`), when this Tick stopped at its cap; 0 when it went
    /// around. Kept as it was when every job was walked: the value is replicated.
    fn rekey_resume(&self, from: JobId, chosen: &[QueueKey], cap: usize) -> JobId {
        use std::ops::Bound::{Excluded, Unbounded};
        if chosen.len() < cap {
            return 0;
        }
        let next = match chosen.last() {
            None => self.jobs.range(from..).chain(self.jobs.range(..from)).next(),
            Some(&(_, _, last)) if last >= from => self
                .jobs
                .range((Excluded(last), Unbounded))
                .chain(self.jobs.range(..from))
                .next(),
            Some(&(_, _, last)) => self.jobs.range((Excluded(last), Excluded(from))).next(),
        };
        next.map_or(0, |(id, _)| *id)
    }

    /// Moves each job to its new multifactor priority in the queue. Many moves rebuild
    /// the queue from sorted keys: one bulk build instead of a removal and an insertion
    /// in a large tree for each.
    fn requeue_keys(&mut self, changed: &[(QueueKey, i64)]) {
        for &((_, _, id), p) in changed {
            if let Some(j) = self.jobs.get_mut(&id) {
                j.mf_priority = p;
            }
        }
        let new_key = |&((tier, _, id), p): &(QueueKey, i64)| (tier, p.saturating_neg(), id);
        if changed.len() > self.queue.len() / 8 {
            // A job has one key in the queue: its id finds its new priority.
            let moved: rustc_hash::FxHashMap<JobId, i64> = changed.iter().map(|&((_, _, id), p)| (id, p)).collect();
            let mut keys: Vec<QueueKey> = std::mem::take(&mut self.queue)
                .into_iter()
                .map(|k| moved.get(&k.2).map_or(k, |p| (k.0, p.saturating_neg(), k.2)))
                .collect();
            keys.sort_unstable();
            self.queue = keys.into_iter().collect();
        } else {
            for c in changed {
                self.queue.remove(&c.0);
                self.queue.insert(new_key(c));
            }
        }
    }

    /// Sets a job's multifactor priority before it enters the queue; false when it is in
    /// the queue already (its stored key must stay what the queue holds).
    pub(crate) fn fair_prepare_enqueue(&mut self, id: JobId) -> bool {
        let Some(j) = self.jobs.get(&id) else { return false };
        if self.queue.contains(&self.sched.queue_key(j)) {
            return false;
        }
        let p = crate::sched::multifactor::priority(self, j).value;
        if let Some(j) = self.jobs.get_mut(&id) {
            j.mf_priority = p;
        }
        true
    }

    /// `rudel share`: every user's shares and usage now, with the fair-share factor the
    /// scheduler uses (the one cached at the last Tick).
    pub fn share_report(&self) -> Vec<ShareRow> {
        let mut rows = self.fairshare.rows(&self.sched.fair);
        for r in &mut rows {
            r.factor = self.fairshare.factor(&r.user);
        }
        rows
    }

    /// The charge rates counted from the running tasks (what the table must hold): the
    /// invariant check of property tests.
    pub fn fair_recount(&self) -> BTreeMap<String, (u64, u64)> {
        let mut m: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for j in self.jobs.values() {
            for rt in j.running.values().filter(|rt| rt.after.is_none()) {
                let (c, g) = weight(rt, j.spec.cpus);
                let e = m.entry(j.spec.user.clone()).or_default();
                e.0 += c;
                e.1 += g;
            }
        }
        m
    }
}

mod u128_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let t = String::deserialize(d)?;
        t.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Response, TaskOutcome};
    use crate::ids::TaskKey;
    use crate::job::JobSpec;
    use crate::state::State;
    use crate::testkit::{configure, one_node, report, spec, submit};

    fn of(user: &str, cpus: u32) -> JobSpec {
        JobSpec {
            user: user.into(),
            cpus,
            ..spec()
        }
    }

    fn end(s: &mut State, job: JobId, now: u64) {
        let attempt = s.jobs[&job].running[&0].attempt;
        let key = TaskKey { job, index: 0 };
        s.apply(Command::Reports {
            node: "n1".into(),
            // The agent's own times are ignored: usage counts in the log's time.
            reports: vec![report(key, attempt, TaskOutcome::Exited, 0, 1, 2)],
            now_ms: now,
        });
    }

    fn tick(s: &mut State, now: u64) {
        s.apply(Command::Tick { now_ms: now });
    }

    fn v3(s: &mut State, more: &[(&str, &str)]) {
        let mut all = vec![("version", "4")];
        all.extend_from_slice(more);
        let r = configure(s, &all);
        assert!(!matches!(r, Response::Rejected { .. }), "{r:?}");
    }

    #[test]
    fn usage_is_cpus_times_log_time_and_halves_each_half_life() {
        let mut s = one_node(4);
        v3(&mut s, &[("fairshare.half_life_s", "100")]);
        let j = submit(&mut s, of("a", 2));
        let t0 = s.now_ms;
        end(&mut s, j, t0 + 10_000);
        assert_eq!(s.fairshare.users["a"].usage, 20_000_000, "2 cpus for 10 s, in cpu-µs");
        assert_eq!(s.fairshare.users["a"].cpus, 0);
        // A Tick decays by the log time since the last one (usage charged in between
        // included: at most one calc period's decay too much, as Slurm's period does).
        tick(&mut s, t0 + 10_000);
        let u1 = s.fairshare.users["a"].usage;
        tick(&mut s, t0 + 10_000 + 100_000);
        assert!(
            s.fairshare.users["a"].usage.abs_diff(u1 / 2) <= 1,
            "one half-life later"
        );
        tick(&mut s, t0 + 10_000 + 150_000);
        let u = s.fairshare.users["a"].usage as f64;
        assert!((u - u1 as f64 * 0.5 * 0.5f64.sqrt()).abs() < 2.0, "{u}");
        // Running tasks accrue at every Tick too, not only when they end.
        let j2 = submit(&mut s, of("b", 1));
        let t1 = s.now_ms;
        tick(&mut s, t1 + 5_000);
        let b = s.fairshare.users["b"].usage as f64;
        assert!((b - 5e6 * (-0.05f64).exp2()).abs() < 2.0, "{b}");
        end(&mut s, j2, t1 + 6_000);
        assert_eq!(s.fair_recount(), BTreeMap::new());
    }

    #[test]
    fn factor_is_two_to_the_minus_usage_over_shares() {
        let mut f = FairShare::default();
        let mut cfg = FairConfig::default();
        cfg.shares.insert("b".into(), 3);
        f.users.insert(
            "a".into(),
            UserUsage {
                usage: 300,
                ..UserUsage::default()
            },
        );
        f.users.insert(
            "b".into(),
            UserUsage {
                usage: 100,
                ..UserUsage::default()
            },
        );
        let rows = f.rows(&cfg);
        // a: U = 0.75, S = 0.25 -> 2^-3; b: U = 0.25, S = 0.75 -> 2^-(1/3).
        assert_eq!(rows[0].factor, ONE_Q32 / 8);
        let b = rows[1].factor as f64 / ONE_Q32 as f64;
        assert!((b - (-1.0f64 / 3.0).exp2()).abs() < 1e-8, "{b}");
        assert_eq!(
            (rows[0].norm_shares, rows[1].effective_usage),
            (ONE_Q32 / 4, ONE_Q32 / 4)
        );
    }

    #[test]
    fn a_heavy_user_waits_behind_a_light_users_later_job() {
        let mut s = one_node(1);
        v3(&mut s, &[("order", "multifactor"), ("multifactor.weight_age", "0")]);
        let past = submit(&mut s, of("heavy", 1));
        let t = s.now_ms;
        end(&mut s, past, t + 100_000);
        tick(&mut s, t + 100_001);
        assert!(s.fairshare.factor("heavy") < ONE_Q32 && s.fairshare.factor("light") == ONE_Q32);
        let blocker = submit(&mut s, of("x", 1));
        let h = submit(&mut s, of("heavy", 1));
        let l = submit(&mut s, of("light", 1));
        assert!(s.jobs[&h].running.is_empty() && s.jobs[&l].running.is_empty());
        let now = s.now_ms + 10;
        end(&mut s, blocker, now);
        assert!(
            !s.jobs[&l].running.is_empty(),
            "the light user's later job starts first"
        );
        assert!(s.jobs[&h].running.is_empty());
        let e = crate::explain::explain(&s, h).unwrap();
        assert!(
            e.priority.contains("fairshare 0.5") && e.priority.contains("user heavy"),
            "{}",
            e.priority
        );
    }

    /// Where the old re-keying (a walk of every job in id order) would go on from.
    fn walked_resume(s: &State, from: JobId, cap: usize) -> JobId {
        let mut n = 0;
        for j in s.jobs.range(from..).chain(s.jobs.range(..from)).map(|(_, j)| j) {
            if n >= cap {
                return j.id;
            }
            if j.has_pending() && s.queue.contains(&s.sched.queue_key(j)) {
                n += 1;
            }
        }
        0
    }

    #[test]
    fn rekeying_the_queue_resumes_where_walking_every_job_did() {
        // `rekey_from` is replicated: walking the queue instead of every job must not
        // move it, or heads of two builds at one version would re-key different jobs.
        let mut s = one_node(1);
        v3(&mut s, &[("order", "multifactor"), ("multifactor.rekey_per_tick", "2")]);
        let ids: Vec<JobId> = (0..8).map(|_| submit(&mut s, of("a", 1))).collect();
        // A running job and cancelled ones are not queued but stay in the job map.
        assert!(!s.jobs[&ids[0]].running.is_empty());
        let now = s.now_ms;
        s.apply(Command::Cancel {
            jobs: vec![ids[3], ids[7]],
            now_ms: now,
        });
        let mut seen = Vec::new();
        for round in 1..=8u64 {
            let from = s.fairshare.rekey_from;
            let expected = walked_resume(&s, from, 2);
            tick(&mut s, now + round * 1_000);
            assert_eq!(s.fairshare.rekey_from, expected, "round {round}, from {from}");
            seen.push(expected);
        }
        assert!(
            seen.contains(&ids[3]),
            "a resume point may be a job not queued: {seen:?}"
        );
        assert!(
            seen.windows(2).any(|w| w[1] < w[0]),
            "and the walk goes around: {seen:?}"
        );
    }

    #[test]
    fn from_version_9_only_a_tick_a_period_after_the_last_decays_and_rekeys() {
        for (version, decays_early) in [("8", true), ("9", false)] {
            let mut s = one_node(4);
            v3(
                &mut s,
                &[
                    ("version", version),
                    ("fairshare.half_life_s", "100"),
                    ("fairshare.calc_period_s", "60"),
                ],
            );
            let j = submit(&mut s, of("a", 2));
            let t0 = s.now_ms;
            end(&mut s, j, t0 + 10_000);
            let before = s.fairshare.users["a"].usage;
            let last = s.fairshare.tick_ms;
            // A Tick for another reason (a time limit, a capped pass), 20 s later.
            tick(&mut s, t0 + 20_000);
            let after = s.fairshare.users["a"].usage;
            assert_eq!(after < before, decays_early, "version {version}");
            assert_eq!(s.fairshare.tick_ms > last, decays_early, "version {version}");
            // A period after the last decay every version decays.
            tick(&mut s, last + 60_000);
            assert!(s.fairshare.users["a"].usage < before, "version {version}");
        }
    }

    #[test]
    fn multifactor_and_fair_settings_need_version_3() {
        let mut s = one_node(1);
        for (k, v) in [
            ("order", "multifactor"),
            ("fairshare.user.a", "2"),
            ("multifactor.weight_age", "5"),
        ] {
            let Response::Rejected { reason } = configure(&mut s, &[("version", "3"), (k, v)]) else {
                panic!("{k} accepted at version 2")
            };
            assert!(reason.contains("version=4"), "{reason}");
        }
        let Response::Rejected { reason } = configure(&mut s, &[("partition.p", "factor=3")]) else {
            panic!("a partition factor accepted at version 1")
        };
        assert!(reason.contains("version=4"), "{reason}");
        // Nothing is charged before version 4.
        let j = submit(&mut s, of("a", 1));
        let t = s.now_ms + 1_000;
        end(&mut s, j, t);
        assert!(s.fairshare.users.is_empty() && s.fair_wake_ms().is_none());
    }

    #[test]
    fn switching_to_version_3_charges_tasks_already_running() {
        let mut s = one_node(2);
        let j = submit(&mut s, of("a", 2));
        v3(&mut s, &[]);
        assert_eq!(
            s.fair_recount(),
            s.fairshare
                .users
                .iter()
                .map(|(u, x)| (u.clone(), (x.cpus, x.gpus)))
                .collect()
        );
        let t = s.now_ms;
        end(&mut s, j, t + 1_000);
        assert_eq!(s.fairshare.users["a"].usage, 2_000_000);
        assert_eq!(s.fair_wake_ms(), Some(s.fairshare.tick_ms + 300_000));
    }

    #[test]
    fn the_table_survives_a_snapshot_and_old_snapshots_decode() {
        let mut s = one_node(1);
        v3(&mut s, &[]);
        let j = submit(&mut s, of("a", 1));
        let t = s.now_ms + 1_234;
        end(&mut s, j, t);
        let text = serde_json::to_string(&s).unwrap();
        let back: State = serde_json::from_str(&text).unwrap();
        assert_eq!(back.fairshare, s.fairshare);
        let mut v = serde_json::to_value(&s).unwrap();
        v.as_object_mut().unwrap().remove("fairshare");
        let old: State = serde_json::from_value(v).unwrap();
        assert_eq!(old.fairshare, FairShare::default());
    }
}
