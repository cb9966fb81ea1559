//! The scheduling configuration: part of the replicated state, changed only by a log entry
//! (`Command::Configure`), so every head switches policy at the same log index.
use serde::{Deserialize, Serialize};

use super::order::Order;

/// The scheduling behaviour this build implements. Scheduling runs inside apply, so it is
/// part of the consensus protocol: a head that applied an entry with scheduling code other
/// than its peers' would silently reach another state. Every change to what the scheduler
/// decides for the same log gets a new version, and a head refuses entries and snapshots
/// that ask for a newer version than this (see [`SchedConfig::check_supported`]).
pub const SCHED_VERSION: u32 = 10;

/// The first version with a cap on placements per pass (`max_starts`).
pub const MAX_STARTS_VERSION: u32 = 8;

/// The first version that numbers turns for the `round_robin` order at submit and
/// enforces running limits per user in the planner.
pub const TURNS_VERSION: u32 = 2;

/// The first version that charges jobs to declared accounts (`account.NAME`) and enforces
/// account limits.
pub const ACCOUNTS_VERSION: u32 = 3;

/// Tasks that may wait on an agent behind one running task, for jobs whose tasks are short
/// ([`crate::job::Job::queue_depth`]): the default and the bound of `short_queue_depth`.
pub const MAX_QUEUED_PER_SLOT: u32 = 8;

/// The replicated scheduling configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedConfig {
    /// The scheduling behaviour the cluster runs. Raised by an admin once every head runs a
    /// build that implements it.
    pub version: u32,
    /// Which pending job goes first.
    pub order: Order,
    /// Tasks that may wait on an agent behind one running task of the same shape (0: none).
    pub queue_depth: u32,
    /// The same for jobs whose tasks are short (they end before a report can go through the
    /// log and a new task come back).
    pub short_queue_depth: u32,
    /// Cluster-wide licenses: name → how many may be held at once (`-L matlab:2` takes 2).
    pub licenses: std::collections::BTreeMap<String, u64>,
    /// Partitions by name; none = every node is in [`super::DEFAULT_PARTITION`].
    pub partitions: std::collections::BTreeMap<String, super::Partition>,
    /// Queue limits per user and for the whole queue (`limits.*`).
    #[serde(default)]
    pub limits: super::quota::Limits,
    /// Accounts by name (`account.NAME=users=...`); none = `--account` is only a label.
    #[serde(default)]
    pub accounts: std::collections::BTreeMap<String, super::account::Account>,
    /// Fair-share accounting and `multifactor` weights (`fairshare.*`, `multifactor.*`).
    #[serde(default)]
    pub fair: super::fair::FairConfig,
    /// Time-based backfill (`backfill`, `backfill.max_jobs`; see `sched/backfill.rs`).
    #[serde(default)]
    pub backfill: super::BackfillConfig,
    /// Preemption by partition tier (`preempt`, `preempt.grace_s`; see `sched/preempt.rs`).
    #[serde(default)]
    pub preempt: super::PreemptConfig,
    /// Tasks one scheduling pass may place at most (0: no cap). A pass that stops at the
    /// cap leaves `State::more_to_place` set and the leader proposes a `Tick` at once to
    /// go on, so that one entry never holds the log for the whole backlog (an entry that
    /// placed 81,137 tasks took 24 s at 10,000 nodes, `bench/sched-sim scale`).
    #[serde(default)]
    pub max_starts: u32,
    /// Ordinary and full passes (`pass.*`, version 10; see `sched/passes.rs`).
    #[serde(default)]
    pub pass: super::passes::PassConfig,
}

impl Default for SchedConfig {
    fn default() -> Self {
        SchedConfig {
            version: 1,
            order: Order::Priority,
            queue_depth: 2,
            short_queue_depth: MAX_QUEUED_PER_SLOT,
            licenses: std::collections::BTreeMap::new(),
            partitions: std::collections::BTreeMap::new(),
            limits: super::quota::Limits::default(),
            accounts: std::collections::BTreeMap::new(),
            fair: super::fair::FairConfig::default(),
            backfill: super::BackfillConfig::default(),
            preempt: super::PreemptConfig::default(),
            max_starts: 0,
            pass: super::passes::PassConfig::default(),
        }
    }
}

/// The refusal of a setting the cluster's scheduling version does not know yet.
fn needs_version(key: &str, value: &str, needed: u32, runs: u32) -> ConfigError {
    ConfigError::BadValue {
        key: key.into(),
        value: value.into(),
        expected: format!(
            "scheduling version {needed} or later first (this cluster runs {runs}; set \
             version={needed} once every head runs a build that has it)"
        ),
    }
}

/// Why a configuration change or an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown scheduling setting {key:?}; settings: {}", SchedConfig::KEYS.join(", "))]
    UnknownKey { key: String },
    #[error("bad value {value:?} for {key}: {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: String,
    },
    #[error(
        "this head implements scheduling behaviour version {ours} but the cluster runs version \
         {wanted} (set by a newer rudel); it stops instead of applying entries differently from \
         its peers: upgrade this head's rudel binary and start it again"
    )]
    NewerVersion { wanted: u32, ours: u32 },
    #[error(
        "scheduling behaviour version {wanted} is not implemented by this head (it implements \
         1 to {ours}); upgrade every head first"
    )]
    UnsupportedVersion { wanted: u32, ours: u32 },
    #[error(
        "this head implements step records of version {ours} but the log holds one of version \
         {wanted} (written by a newer rudel); it stops instead of applying it differently from \
         its peers: upgrade this head's rudel binary and start it again"
    )]
    NewerStepRecord { wanted: u32, ours: u32 },
}

impl SchedConfig {
    /// Setting names, in display order.
    pub const KEYS: [&'static str; 20] = [
        "version",
        "order",
        "queue_depth",
        "short_queue_depth",
        "licenses",
        "partition.NAME",
        "account.NAME",
        "limits.*",
        "fairshare.*",
        "multifactor.*",
        "backfill",
        "backfill.max_jobs",
        "backfill.interval_s",
        "backfill.reservations",
        "preempt",
        "preempt.grace_s",
        "max_starts",
        "pass.ordinary_starts",
        "pass.ordinary_jobs",
        "pass.full_interval_ms",
    ];

    /// Refuses a configuration this build cannot run.
    pub fn check_supported(&self) -> Result<(), ConfigError> {
        if self.version > SCHED_VERSION {
            return Err(ConfigError::NewerVersion {
                wanted: self.version,
                ours: SCHED_VERSION,
            });
        }
        Ok(())
    }

    /// This configuration with one setting changed; the value is checked.
    pub fn with(&self, key: &str, value: &str) -> Result<SchedConfig, ConfigError> {
        let bad = |expected: String| ConfigError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            expected,
        };
        let mut c = self.clone();
        match key {
            "version" => {
                let v: u32 = value
                    .parse()
                    .map_err(|_| bad(format!("a number from 1 to {SCHED_VERSION}")))?;
                if v == 0 || v > SCHED_VERSION {
                    return Err(ConfigError::UnsupportedVersion {
                        wanted: v,
                        ours: SCHED_VERSION,
                    });
                }
                c.version = v;
            }
            "order" => {
                let names: Vec<&str> = Order::ALL.iter().map(|o| o.as_str()).collect();
                c.order = Order::parse(value).ok_or_else(|| bad(format!("one of {}", names.join(", "))))?;
            }
            "queue_depth" | "short_queue_depth" => {
                let v: u32 = value
                    .parse()
                    .ok()
                    .filter(|v| *v <= MAX_QUEUED_PER_SLOT)
                    .ok_or_else(|| bad(format!("a number from 0 to {MAX_QUEUED_PER_SLOT}")))?;
                if key == "queue_depth" {
                    c.queue_depth = v;
                } else {
                    c.short_queue_depth = v;
                }
            }
            "licenses" => {
                let expected = || "NAME:COUNT[,NAME:COUNT...] (e.g. matlab:10,ansys:2), or empty for none".to_string();
                c.licenses = if value.trim().is_empty() {
                    std::collections::BTreeMap::new()
                } else {
                    crate::resources::parse_licenses(value)
                        .map_err(|_| bad(expected()))?
                        .into_iter()
                        .map(|(k, v)| (k, u64::from(v)))
                        .collect()
                };
            }
            _ if key.starts_with("partition.") => {
                let name = &key["partition.".len()..];
                super::partition::check_name(name).map_err(&bad)?;
                if value.trim().is_empty() {
                    c.partitions.remove(name);
                } else {
                    let p = super::Partition::parse(value).map_err(|e| bad(format!(
                        "{e} (form: nodes=EXPR;default=yes;state=up|drain|down;tier=N;default_time=D;max_time=D;default_mem_per_cpu=SIZE; empty removes it)"
                    )))?;
                    c.partitions.insert(name.to_string(), p);
                }
            }
            _ if key.starts_with("account.") => {
                let name = &key["account.".len()..];
                super::account::check_name(name).map_err(&bad)?;
                if value.trim().is_empty() {
                    c.accounts.remove(name);
                } else {
                    let a = super::account::Account::parse(value)
                        .map_err(|e| bad(format!("{e} (form: users=alice,bob; empty removes it)")))?;
                    c.accounts.insert(name.to_string(), a);
                }
            }
            _ if key.starts_with("limits.") => {
                c.limits.set(&key["limits.".len()..], value).map_err(bad)?;
            }
            "backfill" | "backfill.max_jobs" | "backfill.interval_s" | "backfill.reservations" => {
                c.backfill.set(key, value).map_err(bad)?
            }
            "preempt" | "preempt.grace_s" => c.preempt.set(key, value).map_err(bad)?,
            _ if key.starts_with("pass.") => c.pass.set(key, value).map_err(bad)?,
            "max_starts" => {
                c.max_starts = value
                    .parse()
                    .map_err(|_| bad("tasks placed per scheduling pass at most, 0 for no cap".into()))?;
            }
            _ if key.starts_with("fairshare.") || key.starts_with("multifactor.") => {
                c.fair.set(key, value).map_err(bad)?;
            }
            _ => return Err(ConfigError::UnknownKey { key: key.to_string() }),
        }
        Ok(c)
    }

    /// This configuration with several settings changed, all or nothing.
    pub fn with_all<'a>(
        &self,
        settings: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<SchedConfig, ConfigError> {
        let c = settings.into_iter().try_fold(self.clone(), |c, (k, v)| c.with(k, v))?;
        let defaults: Vec<&String> = c.partitions.iter().filter(|(_, p)| p.default).map(|(n, _)| n).collect();
        if defaults.len() > 1 {
            return Err(ConfigError::BadValue {
                key: "partition".into(),
                value: defaults.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","),
                expected: "at most one default partition".into(),
            });
        }
        if let Some(name) = c.limits.accounts.keys().find(|n| !c.accounts.contains_key(*n)) {
            return Err(ConfigError::BadValue {
                key: format!("limits.account.{name}"),
                value: name.clone(),
                expected: format!("a declared account (declare it first: account.{name}=users=...)"),
            });
        }
        c.check_version_covers()?;
        Ok(c)
    }

    /// Refuses settings that an older scheduling version than the configured one does not
    /// know: a head of that version would ignore them (running limits, the submit rate,
    /// accounts, fair-share settings) or, for round_robin, order every job as turn 0 (turns
    /// are numbered only from version 2 on), and reach another state than its peers.
    fn check_version_covers(&self) -> Result<(), ConfigError> {
        let mut needs: Vec<(u32, &str, &str)> = Vec::new();
        if let Some((v, what)) = self.limits.needs_version() {
            needs.push((v, "limits", what));
        }
        if self.order == Order::RoundRobin {
            needs.push((TURNS_VERSION, "order", "round_robin"));
        }
        if !self.accounts.is_empty() {
            needs.push((ACCOUNTS_VERSION, "account", "account.NAME"));
        }
        let fair = super::fair::FAIR_VERSION;
        if self.order == Order::Multifactor {
            needs.push((fair, "order", "multifactor"));
        }
        if !self.fair.is_default() {
            needs.push((fair, "fairshare/multifactor", "fairshare.* / multifactor.*"));
        }
        if self.partitions.values().any(|p| p.factor != 0) {
            needs.push((fair, "partition", "factor=N"));
        }
        if !self.backfill.is_default() {
            needs.push((
                super::backfill::BACKFILL_VERSION,
                "backfill",
                "backfill / backfill.max_jobs",
            ));
        }
        if self.backfill.needs_reservations_version() {
            needs.push((
                super::backfill::RESERVATIONS_VERSION,
                "backfill",
                "conservative / backfill.reservations",
            ));
        }
        if self.preempt.mode != super::PreemptMode::Off {
            needs.push((super::PREEMPT_VERSION, "preempt", self.preempt.mode.as_str()));
        }
        if self.max_starts != 0 {
            needs.push((MAX_STARTS_VERSION, "max_starts", "a cap"));
        }
        if !self.pass.is_default() {
            needs.push((super::passes::PASSES_VERSION, "pass", "pass.*"));
        }
        match needs.into_iter().find(|(v, _, _)| self.version < *v) {
            None => Ok(()),
            Some((v, key, value)) => Err(needs_version(key, value, v, self.version)),
        }
    }

    /// The partitions a job may use, resolved from what it asked (`gpu,batch`; empty: the
    /// default partition), with the time limit and memory it gets there.
    pub fn resolve_partitions(&self, asked: &str) -> Result<Vec<String>, String> {
        if self.partitions.is_empty() {
            return match asked.trim() {
                "" | super::DEFAULT_PARTITION => Ok(vec![super::DEFAULT_PARTITION.to_string()]),
                other => Err(format!(
                    "no partition {other:?}: this cluster has one partition, {} (an admin adds more with \
                     `rudel admin config set partition.NAME=nodes=EXPR`)",
                    super::DEFAULT_PARTITION
                )),
            };
        }
        let names: Vec<String> = if asked.trim().is_empty() {
            let d = self.partitions.iter().find(|(_, p)| p.default).map(|(n, _)| n.clone());
            vec![d.ok_or_else(|| {
                format!(
                    "no partition given and no default partition; partitions: {}",
                    self.partitions.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?]
        } else {
            asked
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        for n in &names {
            match self.partitions.get(n) {
                None => {
                    return Err(format!(
                        "no partition {n:?}; partitions: {}",
                        self.partitions.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                }
                Some(p) if p.state == super::PartitionState::Drain => {
                    return Err(format!("partition {n} is draining: it takes no new jobs"))
                }
                Some(_) => {}
            }
        }
        Ok(names)
    }

    /// A job's place in the queue: higher partition tiers first, then the order.
    pub fn queue_key(&self, job: &crate::job::Job) -> super::order::QueueKey {
        let tier = job
            .spec
            .partition
            .split(',')
            .filter_map(|p| self.partitions.get(p.trim()))
            .map(|p| i64::from(p.tier))
            .max()
            .unwrap_or(0);
        let (rank, id) = self.order.key(job);
        (-tier, rank, id)
    }

    /// (name, value) of every setting, partitions included (`partition.NAME`).
    pub fn all_settings(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self.settings().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        v.extend(
            self.partitions
                .iter()
                .map(|(n, p)| (format!("partition.{n}"), p.to_text())),
        );
        v.extend(self.accounts.iter().map(|(n, a)| (format!("account.{n}"), a.to_text())));
        v.extend(self.limits.settings());
        v.extend(self.fair.settings());
        v.extend(self.backfill.settings());
        v.extend(self.preempt.settings());
        v.extend(self.pass.settings());
        v
    }

    /// (name, value) of every plain setting, in display order.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("version", self.version.to_string()),
            ("order", self.order.as_str().to_string()),
            ("queue_depth", self.queue_depth.to_string()),
            ("short_queue_depth", self.short_queue_depth.to_string()),
            ("max_starts", self.max_starts.to_string()),
            // Partitions come last, one setting each (see `partition_settings`).
            (
                "licenses",
                self.licenses
                    .iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_bad_values_are_refused() {
        let c = SchedConfig::default()
            .with_all([("order", "fifo"), ("queue_depth", "0")])
            .unwrap();
        assert_eq!((c.order, c.queue_depth), (Order::Fifo, 0));
        let again = SchedConfig::default()
            .with_all(c.settings().iter().map(|(k, v)| (*k, v.as_str())))
            .unwrap();
        assert_eq!(again, c);
        let e = c.with("order", "lottery").unwrap_err().to_string();
        assert!(e.contains("priority, fifo, sjf"), "{e}");
        let e = c.with("queue_depth", "99").unwrap_err().to_string();
        assert!(e.contains("0 to 8"), "{e}");
        let e = c.with("colour", "blue").unwrap_err().to_string();
        assert!(
            e.contains("unknown scheduling setting") && e.contains("short_queue_depth"),
            "{e}"
        );
        let newer = SCHED_VERSION + 1;
        assert!(matches!(
            c.with("version", &newer.to_string()),
            Err(ConfigError::UnsupportedVersion { wanted, .. }) if wanted == newer
        ));
        assert_eq!(c.with("version", "6").unwrap().version, 6);
        assert!(matches!(
            c.with("version", "0"),
            Err(ConfigError::UnsupportedVersion { .. })
        ));
        // All or nothing.
        assert!(c.with_all([("order", "sjf"), ("nope", "1")]).is_err());
    }

    #[test]
    fn account_settings_need_version_3_and_limits_a_declared_account() {
        let c = SchedConfig::default();
        let e = c
            .with_all([("account.physics", "users=alice")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("scheduling version 3 or later first"), "{e}");
        let v3 = c.with_all([("version", "3")]).unwrap();
        let e = v3
            .with_all([("limits.account.physics.max_running_tasks", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("declare it first: account.physics=users="), "{e}");
        let ok = v3
            .with_all([
                ("account.physics", "users=alice,bob"),
                ("limits.account.physics.max_running_tasks", "2"),
            ])
            .unwrap();
        // Every setting round-trips, the account before its limits.
        let again = SchedConfig::default()
            .with_all(ok.all_settings().iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap();
        assert_eq!(again, ok);
        assert!(v3.with("account.bad name", "users=a").is_err());
    }

    #[test]
    fn a_newer_version_is_refused_by_this_build() {
        let newer = SchedConfig {
            version: SCHED_VERSION + 1,
            ..SchedConfig::default()
        };
        let e = newer.check_supported().unwrap_err().to_string();
        assert!(e.contains("upgrade this head"), "{e}");
        assert!(SchedConfig::default().check_supported().is_ok());
    }

    #[test]
    fn an_old_state_without_a_config_decodes_to_the_defaults() {
        let c: SchedConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, SchedConfig::default());
    }
}
