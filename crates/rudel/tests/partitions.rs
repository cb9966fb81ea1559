//! Partitions: node sets by label expression, their defaults and limits, their state, and
//! `-p` on submit; `rudel partitions` shows them.
mod common;

use std::time::Duration;

use common::{Cluster, Opts};
use serde_json::Value;

fn partitions(c: &Cluster) -> Vec<Value> {
    let o = c.rudel_ok(&["partitions", "--json"]);
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("partitions --json: {e}: {o}"))
}

fn node_of(c: &Cluster, id: u64) -> String {
    let v = c.wait_finished(id, Duration::from_secs(30));
    assert_eq!(v["state"], "completed", "{v:#}");
    v["nodes"][0].as_str().unwrap_or_default().to_string()
}

#[test]
fn jobs_run_in_their_partitions_with_its_defaults_and_limits() {
    let mut c = Cluster::up(Opts::default().name("small1"));
    c.start_named_agent_with("big1", &["--label", "big", "--cpus", "1"]);
    // Without configuration every node is in the default partition `batch`.
    let p = partitions(&c);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0]["name"].as_str(), p[0]["default"].as_bool()),
        (Some("batch"), Some(true))
    );
    assert_eq!(p[0]["nodes"].as_array().map(Vec::len), Some(2), "{p:?}");
    let before = c.submit(&["--", "true"]);
    c.wait_finished(before, Duration::from_secs(30));

    c.rudel_ok(&[
        "admin",
        "config",
        "set",
        "partition.small=nodes=!big;default=yes;max_time=1h",
        "partition.big=nodes=big;tier=1;default_time=10m",
    ]);
    let p = partitions(&c);
    let by_name = |n: &str| p.iter().find(|x| x["name"] == n).cloned().unwrap_or_default();
    assert_eq!(by_name("small")["nodes"], serde_json::json!(["small1"]), "{p:?}");
    assert_eq!(by_name("big")["nodes"], serde_json::json!(["big1"]), "{p:?}");
    let human = c.rudel_ok(&["partitions"]);
    assert!(human.stdout.contains("small*"), "the default is marked: {human}");

    // The default partition and its maximum as the time limit; -p big and its default.
    let plain = c.submit(&["--", "true"]);
    assert_eq!(node_of(&c, plain), "small1");
    let v = c.show_json(plain);
    assert_eq!(
        (v["partition"].as_str(), v["time_limit_ms"].as_u64()),
        (Some("small"), Some(3_600_000)),
        "{v:#}"
    );
    let big = c.submit(&["-p", "big", "--", "true"]);
    assert_eq!(node_of(&c, big), "big1");
    assert_eq!(c.show_json(big)["time_limit_ms"], 600_000);
    // A list: the first partition that allows the job (2 h is too long for small).
    let long = c.submit(&["-p", "small,big", "--time", "2h", "--", "true"]);
    assert_eq!(node_of(&c, long), "big1");

    // Refusals name what exists and what is allowed.
    let nope = c.rudel(&["submit", "-p", "nope", "--", "true"]);
    assert_eq!(nope.code, Some(2), "{nope}");
    assert!(
        nope.stderr.contains("no partition \"nope\"") && nope.stderr.contains("big, small"),
        "{nope}"
    );
    let too_long = c.rudel(&["submit", "-p", "small", "--time", "2h", "--", "true"]);
    assert_eq!(too_long.code, Some(2), "{too_long}");
    assert!(
        too_long
            .stderr
            .contains("longer than the partition allows (small: 01:00:00)"),
        "{too_long}"
    );
    // Removing a partition that unfinished jobs use is refused.
    let hold = c.submit(&["-p", "big", "--", "sleep", "30"]);
    c.wait_state(hold, |v| v["state"] == "running", Duration::from_secs(20));
    let rm = c.rudel(&["admin", "config", "set", "partition.big="]);
    assert_ne!(rm.code, Some(0), "{rm}");
    assert!(rm.stderr.contains("partition big still has 1 unfinished jobs"), "{rm}");
    c.rudel_ok(&["cancel", &hold.to_string()]);
    c.wait_finished(hold, Duration::from_secs(30));

    // A down partition takes jobs but starts none until it is up again.
    c.rudel_ok(&["admin", "config", "set", "partition.big=nodes=big;tier=1;state=down"]);
    let waits = c.submit(&["-p", "big", "--", "true"]);
    let v = c.wait_state(
        waits,
        |v| v["reason"].as_str().unwrap_or_default().starts_with("PartitionDown"),
        Duration::from_secs(20),
    );
    assert_eq!(v["state"], "pending", "{v:#}");
    c.rudel_ok(&["admin", "config", "set", "partition.big=nodes=big;tier=1;state=up"]);
    assert_eq!(node_of(&c, waits), "big1");
    // A draining partition takes no new jobs.
    c.rudel_ok(&["admin", "config", "set", "partition.big=nodes=big;state=drain"]);
    let drained = c.rudel(&["submit", "-p", "big", "--", "true"]);
    assert_eq!(drained.code, Some(2), "{drained}");
    assert!(drained.stderr.contains("draining"), "{drained}");
}
