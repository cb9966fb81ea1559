//! Draining a node stops placement on it; running work finishes; resume undoes it.
mod common;

use std::time::Duration;

use common::{Cluster, Opts};

#[test]
fn drain_stops_placement_and_resume_restores_it() {
    let mut c = Cluster::head_only(Opts::default());
    c.start_named_agent("n1");
    c.start_named_agent("n2");

    // A task running on n1 keeps running through the drain.
    let long = c.submit(&["--cpus", "2", "--", "sleep", "2"]);
    let v = c.wait_state(long, |v| v["state"] == "running", Duration::from_secs(10));
    let busy = v["nodes"][0].as_str().unwrap_or_default().to_string();
    let other = if busy == "n1" { "n2" } else { "n1" };
    c.rudel_ok(&["drain", &busy, "--reason", "maintenance"]);
    let nodes = c.nodes_json();
    let n = nodes
        .iter()
        .find(|n| n["name"] == busy.as_str())
        .expect("drained node listed");
    assert_eq!(n["state"], "draining", "{n}");
    assert_eq!(n["reason"], "maintenance", "{n}");

    // New work goes only to the other node.
    let array = c.submit(&["--array", "1-6", "--", "sh", "-c", "echo $RUDEL_NODE"]);
    let done = c.wait_finished(array, Duration::from_secs(30));
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["nodes"], serde_json::json!([other]), "{done}");

    // The running task finished normally; the node is now drained.
    let v = c.wait_finished(long, Duration::from_secs(10));
    assert_eq!(v["state"], "completed", "{v}");
    let nodes = c.nodes_json();
    assert_eq!(
        nodes
            .iter()
            .find(|n| n["name"] == busy.as_str())
            .map(|n| n["state"].clone()),
        Some("drained".into())
    );

    // Unknown names change nothing and say so.
    let out = c.rudel(&["drain", "nosuchnode", other]);
    assert!(!out.ok(), "draining an unknown node must fail");
    assert!(out.stderr.contains("nosuchnode"), "{}", out.stderr);
    let nodes = c.nodes_json();
    assert_eq!(
        nodes.iter().find(|n| n["name"] == other).map(|n| n["state"].clone()),
        Some("idle".into())
    );

    // Resume: the node takes work again.
    c.rudel_ok(&["resume", &busy]);
    c.rudel_ok(&["drain", other]);
    let again = c.submit(&["--", "true"]);
    let v = c.wait_finished(again, Duration::from_secs(10));
    assert_eq!(v["nodes"], serde_json::json!([busy]), "{v}");
}
