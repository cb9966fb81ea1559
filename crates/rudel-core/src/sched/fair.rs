//! Settings of fair-share accounting (`fairshare.*`) and of the `multifactor` order
//! (`multifactor.*`), part of the replicated [`super::SchedConfig`]. What they mean is in
//! `state/fairshare.rs` (usage and its decay) and `sched/multifactor.rs` (the priority).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The first scheduling version that records fair-share usage and knows `multifactor`
/// (3 is accounts).
pub const FAIR_VERSION: u32 = 4;

/// From this version on a `Tick` decays usage and re-keys the queue only once
/// `fairshare.calc_period_s` has passed since the last time it did; before, every Tick
/// did, whatever it was proposed for.
pub const CALC_PERIOD_VERSION: u32 = 9;

/// Largest weight (Slurm's weights are 32-bit too).
pub const MAX_WEIGHT: u64 = u32::MAX as u64;
/// Most shares one user may hold.
pub const MAX_SHARES: u64 = 1_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FairConfig {
    /// Usage loses half its weight in this time (Slurm's PriorityDecayHalfLife, 7 days).
    pub half_life_s: u64,
    /// How often the leader proposes a Tick that decays usage and recomputes priorities
    /// (Slurm's PriorityCalcPeriod, 5 minutes).
    pub calc_period_s: u64,
    /// What one GPU-second counts as, in thousandths of a cpu-second (Slurm bills cpus
    /// only unless TRESBillingWeights says otherwise: 0).
    pub gpu_weight_milli: u64,
    /// Shares per user; users not named have [`FairConfig::DEFAULT_SHARES`].
    pub shares: BTreeMap<String, u64>,
    pub weight_age: u64,
    pub weight_fairshare: u64,
    pub weight_jobsize: u64,
    pub weight_partition: u64,
    /// Priority points per unit of the job's own `--priority` (`--nice N` is `-N`).
    pub weight_priority: u64,
    /// Age at which the age factor reaches 1 (Slurm's PriorityMaxAge, 7 days).
    pub max_age_s: u64,
    /// Most queued jobs one Tick re-prioritises (the rest on the following Ticks): 100,000
    /// took 88 ms in one Tick (release build), 50,000 keeps a Tick near 45 ms.
    pub rekey_per_tick: u64,
}

impl Default for FairConfig {
    fn default() -> Self {
        FairConfig {
            half_life_s: 7 * 86_400,
            calc_period_s: 300,
            gpu_weight_milli: 0,
            shares: BTreeMap::new(),
            weight_age: 1_000,
            weight_fairshare: 10_000,
            weight_jobsize: 0,
            weight_partition: 0,
            weight_priority: 1,
            max_age_s: 7 * 86_400,
            rekey_per_tick: 50_000,
        }
    }
}

impl FairConfig {
    pub const DEFAULT_SHARES: u64 = 1;

    /// A user's shares.
    pub fn shares_of(&self, user: &str) -> u64 {
        self.shares.get(user).copied().unwrap_or(Self::DEFAULT_SHARES)
    }

    /// Sets `key` (without its `fairshare.`/`multifactor.` prefix is not how it comes:
    /// the full key) to `value`; `Err` is the expected form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let num = |lo: u64, hi: u64, what: &str| -> Result<u64, String> {
            value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|v| (lo..=hi).contains(v))
                .ok_or_else(|| format!("{what} from {lo} to {hi}"))
        };
        let secs = |lo: u64, what: &str| -> Result<u64, String> {
            let v = value.trim();
            // The key says seconds: a plain number is seconds here, not Slurm's minutes.
            let s = match v.parse::<u64>() {
                Ok(s) => s,
                Err(_) => {
                    crate::parse::parse_duration(v)
                        .map_err(|e| format!("{what} in seconds, or a duration such as 5m, 7d ({e})"))?
                        / 1000
                }
            };
            if s < lo {
                return Err(format!("{what}: at least {lo} s"));
            }
            Ok(s)
        };
        match key {
            "fairshare.half_life_s" => self.half_life_s = secs(1, "a half-life")?,
            "fairshare.calc_period_s" => self.calc_period_s = secs(1, "a period")?,
            "fairshare.gpu_weight" => self.gpu_weight_milli = parse_milli(value)?,
            "multifactor.weight_age" => self.weight_age = num(0, MAX_WEIGHT, "a weight")?,
            "multifactor.weight_fairshare" => self.weight_fairshare = num(0, MAX_WEIGHT, "a weight")?,
            "multifactor.weight_jobsize" => self.weight_jobsize = num(0, MAX_WEIGHT, "a weight")?,
            "multifactor.weight_partition" => self.weight_partition = num(0, MAX_WEIGHT, "a weight")?,
            "multifactor.weight_priority" => self.weight_priority = num(0, MAX_WEIGHT, "a weight")?,
            "multifactor.max_age_s" => self.max_age_s = secs(1, "an age")?,
            "multifactor.rekey_per_tick" => self.rekey_per_tick = num(1, u64::from(u32::MAX), "a job count")?,
            _ if key.starts_with("fairshare.user.") => {
                let user = &key["fairshare.user.".len()..];
                if user.is_empty() {
                    return Err("fairshare.user.NAME=SHARES names a user".into());
                }
                if value.trim().is_empty() {
                    self.shares.remove(user);
                } else {
                    let s = num(1, MAX_SHARES, "a share count")?;
                    self.shares.insert(user.to_string(), s);
                }
            }
            _ => return Err(format!("one of {}", Self::KEYS.join(", "))),
        }
        Ok(())
    }

    /// The setting names, for errors and help.
    pub const KEYS: [&'static str; 11] = [
        "fairshare.half_life_s",
        "fairshare.calc_period_s",
        "fairshare.gpu_weight",
        "fairshare.user.NAME",
        "multifactor.weight_age",
        "multifactor.weight_fairshare",
        "multifactor.weight_jobsize",
        "multifactor.weight_partition",
        "multifactor.weight_priority",
        "multifactor.max_age_s",
        "multifactor.rekey_per_tick",
    ];

    /// Every setting that differs from its default, as (key, value).
    pub fn settings(&self) -> Vec<(String, String)> {
        let d = FairConfig::default();
        let mut v = Vec::new();
        let mut put = |k: &str, x: u64, dx: u64, text: String| {
            if x != dx {
                v.push((k.to_string(), text));
            }
        };
        put(
            "fairshare.half_life_s",
            self.half_life_s,
            d.half_life_s,
            self.half_life_s.to_string(),
        );
        put(
            "fairshare.calc_period_s",
            self.calc_period_s,
            d.calc_period_s,
            self.calc_period_s.to_string(),
        );
        put(
            "fairshare.gpu_weight",
            self.gpu_weight_milli,
            d.gpu_weight_milli,
            milli_text(self.gpu_weight_milli),
        );
        put(
            "multifactor.weight_age",
            self.weight_age,
            d.weight_age,
            self.weight_age.to_string(),
        );
        put(
            "multifactor.weight_fairshare",
            self.weight_fairshare,
            d.weight_fairshare,
            self.weight_fairshare.to_string(),
        );
        put(
            "multifactor.weight_jobsize",
            self.weight_jobsize,
            d.weight_jobsize,
            self.weight_jobsize.to_string(),
        );
        put(
            "multifactor.weight_partition",
            self.weight_partition,
            d.weight_partition,
            self.weight_partition.to_string(),
        );
        put(
            "multifactor.weight_priority",
            self.weight_priority,
            d.weight_priority,
            self.weight_priority.to_string(),
        );
        put(
            "multifactor.max_age_s",
            self.max_age_s,
            d.max_age_s,
            self.max_age_s.to_string(),
        );
        put(
            "multifactor.rekey_per_tick",
            self.rekey_per_tick,
            d.rekey_per_tick,
            self.rekey_per_tick.to_string(),
        );
        v.extend(
            self.shares
                .iter()
                .map(|(u, s)| (format!("fairshare.user.{u}"), s.to_string())),
        );
        v
    }

    /// True when this differs from the defaults (a version-2 head knows none of it).
    pub fn is_default(&self) -> bool {
        *self == FairConfig::default()
    }
}

/// `1.5` → 1500 (thousandths), at most three decimals, at most 1,000,000.
fn parse_milli(value: &str) -> Result<u64, String> {
    let bad = || "a number of cpu-seconds per GPU-second with at most 3 decimals, e.g. 2 or 0.5".to_string();
    let v = value.trim();
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || (int.is_empty() && frac.is_empty()) {
        return Err(bad());
    }
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if !digits(int) || !digits(frac) {
        return Err(bad());
    }
    let i: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let f: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<3}").parse().map_err(|_| bad())?
    };
    let m = i.checked_mul(1000).and_then(|m| m.checked_add(f)).ok_or_else(bad)?;
    if m > 1_000_000_000 {
        return Err(bad());
    }
    Ok(m)
}

fn milli_text(m: u64) -> String {
    if m.is_multiple_of(1000) {
        (m / 1000).to_string()
    } else {
        format!("{}.{:03}", m / 1000, m % 1000)
            .trim_end_matches('0')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_print_and_refuse_bad_values() {
        let mut c = FairConfig::default();
        c.set("fairshare.half_life_s", "1h").unwrap();
        c.set("fairshare.gpu_weight", "2.5").unwrap();
        c.set("fairshare.user.alice", "3").unwrap();
        c.set("multifactor.weight_age", "0").unwrap();
        assert_eq!(
            (
                c.half_life_s,
                c.gpu_weight_milli,
                c.shares_of("alice"),
                c.shares_of("bob")
            ),
            (3600, 2500, 3, 1)
        );
        let mut again = FairConfig::default();
        for (k, v) in c.settings() {
            again.set(&k, &v).unwrap();
        }
        assert_eq!(again, c);
        assert!(c.set("fairshare.half_life_s", "0").is_err());
        assert!(c.set("fairshare.gpu_weight", "1.2345").is_err());
        assert!(c.set("fairshare.user.bob", "0").unwrap_err().contains("1 to"));
        assert!(c.set("multifactor.weight_age", "-1").is_err());
        assert!(c
            .set("multifactor.colour", "1")
            .unwrap_err()
            .contains("weight_fairshare"));
        c.set("fairshare.user.alice", "").unwrap();
        assert_eq!(c.shares_of("alice"), 1);
        assert_eq!(milli_text(500), "0.5");
    }
}
