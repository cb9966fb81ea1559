//! `rudel explain`: why a job waits, node by node, as a user sees it on a real cluster.
mod common;

use std::time::Duration;

use common::{Cluster, Opts};

const WAIT: Duration = Duration::from_secs(30);

fn explain_json(c: &Cluster, id: u64) -> serde_json::Value {
    let out = c.rudel_ok(&["explain", &id.to_string(), "--json"]);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn verdict_of(v: &serde_json::Value, node: &str) -> String {
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == node)
        .unwrap_or_else(|| panic!("no {node} in {v}"))["verdict"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_waiting_job_is_explained_node_by_node() {
    let mut c = Cluster::up(Opts::default().cpus(2));
    c.start_named_agent_with("n2", &["--label", "spare"]);
    // Both nodes full.
    let hogs: Vec<u64> = (0..2)
        .map(|_| c.submit(&["--cpus", "2", "--", "sleep", "60"]))
        .collect();
    for h in &hogs {
        c.wait_state(*h, |v| v["state"] == "running", WAIT);
    }
    // --no-requeue: such tasks are never queued on a node behind a running one (that case
    // is explained as `Queued`), so these wait in the queue.
    let wide = c.submit(&["--no-requeue", "--cpus", "2", "--", "true"]);
    let picky = c.submit(&["--no-requeue", "--constraint", "spare", "--", "true"]);

    let v = explain_json(&c, wide);
    assert_eq!(v["state"], "pending", "{v}");
    assert_eq!(v["needs"], "2 cpus per task", "{v}");
    assert_eq!(v["queue_position"], 1, "{v}");
    assert!(v["reason"].as_str().unwrap().starts_with("Resources"), "{v}");
    for n in ["n1", "n2"] {
        assert_eq!(verdict_of(&v, n), "busy", "{v}");
    }

    let v = explain_json(&c, picky);
    assert_eq!(v["queue_position"], 2, "{v}");
    assert_eq!(verdict_of(&v, "n1"), "constraint", "{v}");
    assert_eq!(verdict_of(&v, "n2"), "busy", "{v}");
    assert_eq!(
        v["reserved_for"], wide,
        "the first job that fits nowhere holds the order: {v}"
    );

    let text = c.rudel_ok(&["explain", &wide.to_string()]).stdout;
    assert!(text.contains("2 node(s) could run it, resources in use now"), "{text}");
    assert!(text.contains("0 of 2 cpus"), "{text}");

    let running = c.rudel_ok(&["explain", &hogs[0].to_string()]).stdout;
    assert!(running.contains("nothing of it waits"), "{running}");

    let unknown = c.rudel(&["explain", "999999"]);
    assert!(!unknown.ok(), "{unknown}");
    assert!(unknown.stderr.contains("no job 999999"), "{unknown}");

    c.rudel_ok(&["cancel", &hogs[0].to_string(), &hogs[1].to_string()]);
    let done = c.wait_finished(wide, WAIT);
    assert_eq!(done["state"], "completed", "{done}");
}
