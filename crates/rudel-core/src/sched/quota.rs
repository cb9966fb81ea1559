//! Queue limits in the replicated configuration (`limits.*` settings): how much one user
//! may have pending and how many pending tasks the whole queue may hold. Checked at the
//! apply of a submit (see `state/quota.rs`), so every head refuses the same submits.
//!
//! Without them one user's runaway workflow fills the queue and every head's memory.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The default bound on pending tasks in the whole queue: far above any real workload
/// (a 1,000,000-task array submits), low enough that the heads' memory holds it.
pub const DEFAULT_MAX_PENDING_TASKS: u64 = 10_000_000;

/// Limits of one user (`None`: unlimited).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserLimits {
    pub max_pending_tasks: Option<u64>,
    pub max_pending_jobs: Option<u64>,
    /// Tasks the user may run at once (the planner holds the rest back, see `sched/plan.rs`).
    pub max_running_tasks: Option<u64>,
    /// Cpus the user's running tasks may hold at once.
    pub max_running_cpus: Option<u64>,
    /// GPUs the user's running tasks may hold at once.
    pub max_running_gpus: Option<u64>,
}

/// Every queue limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Pending tasks the whole queue may hold.
    pub max_pending_tasks: u64,
    /// What each user may have, unless overridden in `users`.
    pub per_user: UserLimits,
    /// Per-user overrides (`limits.user.alice.max_pending_tasks=...`); a field left `None`
    /// falls back to `per_user`.
    pub users: BTreeMap<String, UserLimits>,
    /// Submits per second one user may make (a token bucket on the head that takes the
    /// call; an array is one submit). `None`: unlimited.
    pub submit_rate_per_user: Option<u64>,
    /// How many submits may come at once before the rate applies (default: the rate).
    pub submit_burst_per_user: Option<u64>,
    /// Limits per account (`limits.account.physics.max_running_cpus=...`), for all the
    /// account's jobs together; the account must be declared (`account.NAME`).
    #[serde(default)]
    pub accounts: BTreeMap<String, UserLimits>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending_tasks: DEFAULT_MAX_PENDING_TASKS,
            per_user: UserLimits::default(),
            users: BTreeMap::new(),
            submit_rate_per_user: None,
            submit_burst_per_user: None,
            accounts: BTreeMap::new(),
        }
    }
}

/// The user-limit fields a setting may name.
const USER_FIELDS: [&str; 5] = [
    "max_pending_tasks",
    "max_pending_jobs",
    "max_running_tasks",
    "max_running_cpus",
    "max_running_gpus",
];

impl UserLimits {
    /// The fields in [`USER_FIELDS`] order.
    fn fields(&self) -> [Option<u64>; 5] {
        [
            self.max_pending_tasks,
            self.max_pending_jobs,
            self.max_running_tasks,
            self.max_running_cpus,
            self.max_running_gpus,
        ]
    }

    /// Sets the field named `field` (one of [`USER_FIELDS`]).
    fn set_field(&mut self, field: &str, limit: Option<u64>) -> Result<(), String> {
        match field {
            "max_pending_tasks" => self.max_pending_tasks = limit,
            "max_pending_jobs" => self.max_pending_jobs = limit,
            "max_running_tasks" => self.max_running_tasks = limit,
            "max_running_cpus" => self.max_running_cpus = limit,
            "max_running_gpus" => self.max_running_gpus = limit,
            _ => return Err(format!("FIELD one of {}", USER_FIELDS.join(", "))),
        }
        Ok(())
    }

    fn limits_running(&self) -> bool {
        self.max_running_tasks.is_some() || self.max_running_cpus.is_some() || self.max_running_gpus.is_some()
    }
}

impl Limits {
    /// The scheduling version the limits in force need, with what needs it: a head of an
    /// older version would refuse or ignore them and leave its peers' state.
    pub fn needs_version(&self) -> Option<(u32, &'static str)> {
        if !self.accounts.is_empty() {
            Some((3, "limits.account.*"))
        } else if self.limits_running() || self.submit_rate_per_user.is_some() || self.submit_burst_per_user.is_some() {
            Some((2, "max_running_* / submit_*"))
        } else {
            None
        }
    }

    /// True when some running limit is set (the planner then consults the usage index).
    pub fn limits_running(&self) -> bool {
        self.per_user.limits_running()
            || self.users.values().any(UserLimits::limits_running)
            || self.accounts.values().any(UserLimits::limits_running)
    }

    /// The limits of account `name` (all unlimited when it has none).
    pub fn for_account(&self, name: &str) -> UserLimits {
        self.accounts.get(name).cloned().unwrap_or_default()
    }

    /// The limits that apply to `user`: an override where set, else the per-user default.
    pub fn for_user(&self, user: &str) -> UserLimits {
        let o = self.users.get(user);
        UserLimits {
            max_pending_tasks: o.and_then(|o| o.max_pending_tasks).or(self.per_user.max_pending_tasks),
            max_pending_jobs: o.and_then(|o| o.max_pending_jobs).or(self.per_user.max_pending_jobs),
            max_running_tasks: o.and_then(|o| o.max_running_tasks).or(self.per_user.max_running_tasks),
            max_running_cpus: o.and_then(|o| o.max_running_cpus).or(self.per_user.max_running_cpus),
            max_running_gpus: o.and_then(|o| o.max_running_gpus).or(self.per_user.max_running_gpus),
        }
    }

    /// Applies one `limits.*` setting (`key` without the `limits.` prefix). `Err` holds
    /// what was expected.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "max_pending_tasks" => {
                self.max_pending_tasks = value.trim().parse().map_err(|_| "a number of tasks".to_string())?;
            }
            "max_pending_tasks_per_user" => self.per_user.max_pending_tasks = parse_limit(value)?,
            "max_pending_jobs_per_user" => self.per_user.max_pending_jobs = parse_limit(value)?,
            "max_running_tasks_per_user" => self.per_user.max_running_tasks = parse_limit(value)?,
            "max_running_cpus_per_user" => self.per_user.max_running_cpus = parse_limit(value)?,
            "max_running_gpus_per_user" => self.per_user.max_running_gpus = parse_limit(value)?,
            "submit_rate_per_user" => self.submit_rate_per_user = parse_limit(value)?,
            "submit_burst_per_user" => self.submit_burst_per_user = parse_limit(value)?,
            _ if key.starts_with("user.") => set_override(&mut self.users, "user", &key["user.".len()..], value)?,
            _ if key.starts_with("account.") => {
                set_override(&mut self.accounts, "account", &key["account.".len()..], value)?
            }
            _ => {
                return Err(format!(
                    "one of limits.max_pending_tasks, limits.max_pending_tasks_per_user, \
                     limits.max_pending_jobs_per_user, limits.max_running_tasks_per_user, \
                     limits.max_running_cpus_per_user, limits.max_running_gpus_per_user, \
                     limits.submit_rate_per_user, \
                     limits.submit_burst_per_user, limits.user.NAME.{{{f}}}, \
                     limits.account.NAME.{{{f}}}",
                    f = USER_FIELDS.join(",")
                ))
            }
        }
        Ok(())
    }

    /// (name, value) of every limit setting, overrides included.
    pub fn settings(&self) -> Vec<(String, String)> {
        let mut v = vec![
            (
                "limits.max_pending_tasks".to_string(),
                self.max_pending_tasks.to_string(),
            ),
            (
                "limits.max_pending_tasks_per_user".to_string(),
                show_limit(self.per_user.max_pending_tasks),
            ),
            (
                "limits.max_pending_jobs_per_user".to_string(),
                show_limit(self.per_user.max_pending_jobs),
            ),
            (
                "limits.max_running_tasks_per_user".to_string(),
                show_limit(self.per_user.max_running_tasks),
            ),
            (
                "limits.max_running_cpus_per_user".to_string(),
                show_limit(self.per_user.max_running_cpus),
            ),
            (
                "limits.max_running_gpus_per_user".to_string(),
                show_limit(self.per_user.max_running_gpus),
            ),
            (
                "limits.submit_rate_per_user".to_string(),
                show_limit(self.submit_rate_per_user),
            ),
            (
                "limits.submit_burst_per_user".to_string(),
                show_limit(self.submit_burst_per_user),
            ),
        ];
        for (kind, map) in [("user", &self.users), ("account", &self.accounts)] {
            for (name, l) in map {
                for (field, limit) in USER_FIELDS.iter().zip(l.fields()) {
                    if let Some(n) = limit {
                        v.push((format!("limits.{kind}.{name}.{field}"), n.to_string()));
                    }
                }
            }
        }
        v
    }
}

/// Sets `NAME.FIELD` (the key after `limits.user.` or `limits.account.`) in `map`; an
/// override left with no field set is dropped.
fn set_override(map: &mut BTreeMap<String, UserLimits>, kind: &str, rest: &str, value: &str) -> Result<(), String> {
    let (name, field) = rest
        .rsplit_once('.')
        .filter(|(n, _)| !n.is_empty())
        .ok_or_else(|| format!("limits.{kind}.NAME.FIELD with FIELD one of {}", USER_FIELDS.join(", ")))?;
    let limit = parse_limit(value)?;
    let entry = map.entry(name.to_string()).or_default();
    let set = entry.set_field(field, limit);
    if *entry == UserLimits::default() {
        map.remove(name);
    }
    set
}

/// A limit value: a number, or `unlimited`/empty for none.
fn parse_limit(value: &str) -> Result<Option<u64>, String> {
    match value.trim() {
        "" | "unlimited" => Ok(None),
        v => v.parse().map(Some).map_err(|_| "a number, or `unlimited`".to_string()),
    }
}

fn show_limit(l: Option<u64>) -> String {
    l.map_or_else(|| "unlimited".to_string(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_wins_over_the_per_user_default_field_by_field() {
        let mut l = Limits::default();
        l.set("max_pending_tasks_per_user", "100").unwrap();
        l.set("max_pending_jobs_per_user", "5").unwrap();
        l.set("user.alice.max_pending_tasks", "7").unwrap();
        assert_eq!(
            l.for_user("alice"),
            UserLimits {
                max_pending_tasks: Some(7),
                max_pending_jobs: Some(5),
                ..UserLimits::default()
            }
        );
        assert_eq!(l.for_user("bob").max_pending_tasks, Some(100));
        l.set("user.alice.max_pending_tasks", "unlimited").unwrap();
        assert!(l.users.is_empty(), "an empty override is dropped");
        assert!(l.set("user.alice.colour", "1").is_err());
        assert!(l.set("max_pending_tasks", "lots").is_err());
        assert!(l.set("nope", "1").is_err());
    }

    #[test]
    fn settings_round_trip() {
        let mut l = Limits::default();
        l.set("max_pending_tasks", "50").unwrap();
        l.set("user.a.b.max_pending_jobs", "3").unwrap();
        let mut again = Limits::default();
        for (k, v) in l.settings() {
            again.set(&k["limits.".len()..], &v).unwrap();
        }
        assert_eq!(again, l);
    }
}
