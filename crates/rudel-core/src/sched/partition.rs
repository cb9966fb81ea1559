//! Partitions (queues): named node sets with their own defaults, limits, priority tier and
//! state, part of the replicated scheduling configuration.
//!
//! A node set is a constraint expression over node facts and labels (`rack==a`, `gpu`,
//! `name==n1 || name==n2`); a node may be in several partitions. Without any partition
//! configured, every node is in [`DEFAULT_PARTITION`].
use serde::{Deserialize, Serialize};

use crate::constraint::Constraint;
use crate::node::Node;

/// The partition every node is in when none is configured (what `sinfo` and
/// `SLURM_JOB_PARTITION` show then).
pub const DEFAULT_PARTITION: &str = "batch";

/// Whether a partition takes and runs jobs (Slurm's partition states).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionState {
    /// Takes new jobs and runs them.
    #[default]
    Up,
    /// Refuses new jobs; its pending jobs still start.
    Drain,
    /// Takes new jobs but starts none.
    Down,
}

impl PartitionState {
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionState::Up => "up",
            PartitionState::Drain => "drain",
            PartitionState::Down => "down",
        }
    }
}

/// One partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Partition {
    /// Its nodes; `None` = every node.
    pub nodes: Option<Constraint>,
    /// Jobs that name no partition go to the default one.
    pub default: bool,
    pub state: PartitionState,
    /// Jobs of a higher tier are considered first, whatever the queue order says.
    pub tier: i32,
    /// Slurm's PriorityJobFactor: the `multifactor` partition factor is this over the
    /// highest of all partitions.
    pub factor: u16,
    /// Time limit given to jobs that set none (0: none).
    pub default_time_ms: u64,
    /// Longest time limit a job may ask for (0: no limit). A job without a time limit gets
    /// this one when there is no default.
    pub max_time_ms: u64,
    /// Memory per cpu given to jobs that ask for no memory (0: none).
    pub default_mem_per_cpu: u64,
}

impl Partition {
    /// True when `n` belongs to this partition.
    pub fn contains(&self, n: &Node) -> bool {
        n.matches(self.nodes.as_ref())
    }

    /// Parses `nodes=EXPR;default=yes;state=up;tier=1;default_time=1h;max_time=1d;
    /// default_mem_per_cpu=1G` (every field optional).
    pub fn parse(text: &str) -> Result<Partition, String> {
        let mut p = Partition::default();
        for field in text.split(';').map(str::trim).filter(|f| !f.is_empty()) {
            let (k, v) = field
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("expected FIELD=VALUE, got {field:?}"))?;
            let dur = |v: &str| crate::parse::parse_duration(v).map_err(|e| format!("{k}: {e}"));
            match k {
                "nodes" if v.is_empty() || v.eq_ignore_ascii_case("all") => p.nodes = None,
                "nodes" => p.nodes = Some(Constraint::parse(v).map_err(|e| format!("nodes: {e}"))?),
                "default" => p.default = matches!(v, "yes" | "true" | "1"),
                "state" => {
                    p.state = match v.to_ascii_lowercase().as_str() {
                        "up" => PartitionState::Up,
                        "drain" => PartitionState::Drain,
                        "down" => PartitionState::Down,
                        _ => return Err(format!("state: up, drain or down, got {v:?}")),
                    }
                }
                "tier" => p.tier = v.parse().map_err(|_| format!("tier: a whole number, got {v:?}"))?,
                "factor" => {
                    p.factor = v
                        .parse()
                        .map_err(|_| format!("factor: a whole number from 0 to 65535, got {v:?}"))?
                }
                "default_time" => p.default_time_ms = dur(v)?,
                "max_time" => p.max_time_ms = dur(v)?,
                "default_mem_per_cpu" => {
                    p.default_mem_per_cpu =
                        crate::parse::parse_size(v).map_err(|e| format!("default_mem_per_cpu: {e}"))?
                }
                _ => {
                    return Err(format!(
                        "unknown partition field {k:?}; fields: nodes, default, state, tier, factor, default_time, \
                         max_time, default_mem_per_cpu"
                    ))
                }
            }
        }
        if p.default_time_ms > 0 && p.max_time_ms > 0 && p.default_time_ms > p.max_time_ms {
            return Err("default_time is longer than max_time".into());
        }
        Ok(p)
    }

    /// The form [`Partition::parse`] reads.
    pub fn to_text(&self) -> String {
        let mut f = vec![format!(
            "nodes={}",
            self.nodes.as_ref().map_or("ALL".to_string(), |c| c.to_string())
        )];
        if self.default {
            f.push("default=yes".into());
        }
        f.push(format!("state={}", self.state.as_str()));
        if self.tier != 0 {
            f.push(format!("tier={}", self.tier));
        }
        if self.factor != 0 {
            f.push(format!("factor={}", self.factor));
        }
        if self.default_time_ms > 0 {
            f.push(format!(
                "default_time={}",
                crate::parse::format_duration(self.default_time_ms)
            ));
        }
        if self.max_time_ms > 0 {
            f.push(format!("max_time={}", crate::parse::format_duration(self.max_time_ms)));
        }
        if self.default_mem_per_cpu > 0 {
            f.push(format!(
                "default_mem_per_cpu={}",
                crate::parse::format_size(self.default_mem_per_cpu)
            ));
        }
        f.join(";")
    }
}

/// A valid partition name: what Slurm scripts use (`-p gpu`, `-p long-run`).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("bad partition name {name:?}: letters, digits and _ - ."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_parse_and_print_the_same() {
        let p = Partition::parse("nodes=gpu && rack==a; default=yes; tier=2; default_time=1h; max_time=1d").unwrap();
        assert!(p.default && p.nodes.is_some());
        assert_eq!((p.tier, p.default_time_ms, p.max_time_ms), (2, 3_600_000, 86_400_000));
        assert_eq!(Partition::parse(&p.to_text()).unwrap(), p);
        assert_eq!(Partition::parse("nodes=ALL").unwrap().nodes, None);
        assert!(Partition::parse("colour=red")
            .unwrap_err()
            .contains("unknown partition field"));
        assert!(Partition::parse("state=sleepy").is_err());
        assert!(Partition::parse("default_time=2h;max_time=1h").is_err());
        assert!(check_name("long-run").is_ok() && check_name("a b").is_err());
    }
}
