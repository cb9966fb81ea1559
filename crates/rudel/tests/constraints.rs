//! Node labels and `--constraint` expressions place tasks only on matching nodes.
mod common;

use std::time::Duration;

use common::{Cluster, Opts};
use serde_json::json;

#[test]
fn constraints_select_nodes_and_impossible_ones_are_rejected() {
    let mut c = Cluster::head_only(Opts::default());
    c.start_named_agent_with("n1", &["--label", "gpu", "--label", "rack=a"]);
    c.start_named_agent_with("n2", &["--label", "rack=b"]);

    let nodes = c.nodes_json();
    let n1 = nodes.iter().find(|n| n["name"] == "n1").expect("n1 listed");
    assert_eq!(n1["labels"], json!({"gpu": "", "rack": "a"}), "{n1}");

    let gpu = c.submit(&["--array", "1-4", "--constraint", "gpu && rack==a", "--", "true"]);
    let v = c.wait_finished(gpu, Duration::from_secs(30));
    assert_eq!(v["state"], "completed", "{v}");
    assert_eq!(v["nodes"], json!(["n1"]), "{v}");

    let b = c.submit(&["--array", "1-4", "-C", "rack==b || !gpu", "--", "true"]);
    let v = c.wait_finished(b, Duration::from_secs(30));
    assert_eq!(v["nodes"], json!(["n2"]), "{v}");

    // A batch script's #SBATCH -C line is honoured too.
    std::fs::write(
        c.work.join("job.sh"),
        "#!/bin/sh\n#SBATCH -C gpu\necho on $RUDEL_NODE\n",
    )
    .unwrap();
    let out = c.rudel_ok(&["submit", "--json", "job.sh"]);
    let id: u64 = serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["id"]
        .as_u64()
        .unwrap();
    let v = c.wait_finished(id, Duration::from_secs(30));
    assert_eq!(v["nodes"], json!(["n1"]), "{v}");

    let before = c.jobs_all().len();
    // No node matches: rejected at submit, naming the expression and the nodes' labels.
    let out = c.rudel(&["submit", "--constraint", "tpu", "--", "true"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("no node matches") && out.stderr.contains("rack=b"),
        "{}",
        out.stderr
    );
    // Malformed expressions: exit 2, the problem named.
    for bad in ["rack=a", "gpu &&", "(gpu", "mem>=lots"] {
        let out = c.rudel(&["submit", "--constraint", bad, "--", "true"]);
        assert_eq!(out.code, Some(2), "{bad}: {out:?}");
        assert!(out.stderr.contains("invalid constraint"), "{bad}: {}", out.stderr);
    }
    assert_eq!(c.jobs_all().len(), before, "rejected submits must not create jobs");
}
