//! `rudel admin config`: show and change the replicated scheduling configuration.
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use rudel_proto::v1 as pb;
use serde_json::json;

use crate::{client, CmdResult, Failure};

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub cmd: ConfigCmd,
}

/// The scheduling configuration lives in the replicated state: every head applies a change
/// at the same log index, and it survives restarts and failovers.
#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print every scheduling setting and its value.
    Show {
        /// Print JSON: {"settings": {"order": "priority", ...}, "head_version": N}.
        #[arg(long)]
        json: bool,
    },
    /// Change settings, all or nothing, e.g. `order=fifo queue_depth=0`.
    ///
    /// Settings: `order` = priority (higher --priority first, then submission order; the
    /// default) | fifo (submission order) | sjf (shortest time limit first) | round_robin
    /// (one job per user in turn; needs version=2);
    /// `queue_depth` / `short_queue_depth` = 0..8 tasks queued on an agent behind one
    /// running task of the same shape, for ordinary and for short tasks; `version` = the
    /// scheduling behaviour version the cluster runs (raise it only once every head runs
    /// a rudel that implements it: a head that does not stops rather than diverge).
    Set {
        /// NAME=VALUE pairs.
        #[arg(required = true, value_name = "NAME=VALUE")]
        settings: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Apply a TOML file of settings (`order = "fifo"`, `queue_depth = 2`), all or nothing.
    ///
    /// Dotted names may be tables (`[pass]` then `full_interval_ms = 500`) or quoted
    /// (`"backfill.max_jobs" = 500`, needed where the plain name is a setting too).
    Apply {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub async fn config(a: ConfigArgs, head: &str) -> CmdResult {
    match a.cmd {
        ConfigCmd::Show { json } => {
            let mut c = client::connect(head).await?;
            let r = c
                .get_sched_config(pb::GetSchedConfigRequest {})
                .await
                .map_err(client::failure)?;
            print(&r.into_inner(), json);
            Ok(0)
        }
        ConfigCmd::Set { settings, json } => {
            let pairs = settings.iter().map(|s| parse_pair(s)).collect::<Result<Vec<_>, _>>()?;
            set(head, pairs, json).await
        }
        ConfigCmd::Apply { file, json } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))
                .map_err(Failure::usage)?;
            let pairs = parse_file(&text)
                .with_context(|| format!("in {}", file.display()))
                .map_err(Failure::usage)?;
            set(head, pairs, json).await
        }
    }
}

async fn set(head: &str, pairs: Vec<(String, String)>, json: bool) -> CmdResult {
    let mut c = client::connect(head).await?;
    let req = pb::SetSchedConfigRequest {
        settings: pairs
            .into_iter()
            .map(|(name, value)| pb::SchedSetting { name, value })
            .collect(),
    };
    let r = c.set_sched_config(req).await.map_err(client::failure)?;
    print(&r.into_inner(), json);
    Ok(0)
}

fn parse_pair(s: &str) -> Result<(String, String), Failure> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(Failure::usage(anyhow!("expected NAME=VALUE, got {s:?}"))),
    }
}

/// Settings from a TOML file; values may be strings, integers or booleans. Dotted names
/// may be written as tables (`[pass]` then `full_interval_ms = 500`, or
/// `pass.full_interval_ms = 500`) or quoted (`"backfill.max_jobs" = 500`, needed where the
/// plain name is a setting too, as `backfill`).
fn parse_file(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let e = e.to_string();
        // Only a clash of a plain name with dotted ones gets the hint: after any other
        // syntax error it would send the user looking in the wrong place.
        let hint = if e.contains("dotted key") {
            "\n(where a name is a setting itself and the start of dotted ones, as `backfill` \
             and `backfill.max_jobs`, quote the dotted ones: \"backfill.max_jobs\" = 500)"
        } else {
            ""
        };
        anyhow!("not valid TOML: {}{hint}", e.trim_end())
    })?;
    let mut pairs = Vec::new();
    flatten("", table, &mut pairs)?;
    if pairs.is_empty() {
        return Err(anyhow!("no settings in the file"));
    }
    Ok(pairs)
}

/// The settings of `table`, its names prefixed with `prefix` (tables give dotted names).
fn flatten(prefix: &str, table: toml::Table, pairs: &mut Vec<(String, String)>) -> anyhow::Result<()> {
    for (k, v) in table {
        let name = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Table(t) => {
                flatten(&name, t, pairs)?;
                continue;
            }
            other => {
                return Err(anyhow!(
                    "{name}: expected a string or a number, got {}",
                    other.type_str()
                ))
            }
        };
        pairs.push((name, value));
    }
    Ok(())
}

fn print(c: &pb::SchedConfig, json_out: bool) {
    if json_out {
        let settings: serde_json::Map<String, serde_json::Value> =
            c.settings.iter().map(|s| (s.name.clone(), json!(s.value))).collect();
        println!("{}", json!({"settings": settings, "head_version": c.head_version}));
        return;
    }
    for s in &c.settings {
        println!("{:<18} {}", s.name, s.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_pairs_parse_to_settings() {
        let p = parse_file("# policy\norder = \"fifo\"\nqueue_depth = 0\n").unwrap();
        assert_eq!(
            p,
            vec![("order".into(), "fifo".into()), ("queue_depth".into(), "0".into())]
        );
        assert!(parse_file("order = [1]").unwrap_err().to_string().contains("order"));
        let dotted = "backfill = \"easy\"\n\"backfill.max_jobs\" = 50\npass.full_interval_ms = 0\n\
                      [partition]\nbatch = \"nodes=all\"\n";
        let mut p = parse_file(dotted).unwrap();
        p.sort();
        let want = [
            ("backfill", "easy"),
            ("backfill.max_jobs", "50"),
            ("partition.batch", "nodes=all"),
            ("pass.full_interval_ms", "0"),
        ];
        assert_eq!(p, want.map(|(k, v)| (k.to_string(), v.to_string())));
        let clash = parse_file("backfill = \"easy\"\nbackfill.max_jobs = 50\n").unwrap_err();
        assert!(clash.to_string().contains("quote the dotted ones"), "{clash}");
        let other = parse_file("order = \"fifo\n").unwrap_err();
        assert!(!other.to_string().contains("dotted"), "{other}");
        assert!(parse_file("").is_err());
        assert!(parse_file("order = ").is_err());
        assert_eq!(parse_pair("order=sjf").unwrap(), ("order".into(), "sjf".into()));
        assert!(parse_pair("order").is_err());
        assert!(parse_pair("=x").is_err());
    }
}
