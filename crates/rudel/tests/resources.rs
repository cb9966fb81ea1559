//! Counted resources: GPUs (a declared inventory, as on a test machine without GPUs) and
//! generic resources per node, licenses per cluster. Ground truth comes from the tasks:
//! each records when it ran and which devices it was given.
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Cluster, Opts};

/// (start ms, end ms, devices) of every task that wrote to `file`.
fn runs(c: &Cluster, file: &str) -> Vec<(u64, u64, String)> {
    c.read_work(file)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f.get(2).unwrap_or(&"").to_string(),
            )
        })
        .collect()
}

/// A task body that records its start, end and `$CUDA_VISIBLE_DEVICES` into `file`.
fn recorder(file: &str, secs: &str) -> String {
    format!("s=$(date +%s%3N); sleep {secs}; echo \"$s $(date +%s%3N) ${{CUDA_VISIBLE_DEVICES:-none}}\" >> {file}")
}

fn most_at_once(runs: &[(u64, u64, String)]) -> usize {
    runs.iter()
        .map(|(s, _, _)| runs.iter().filter(|(s2, e2, _)| s2 <= s && s < e2).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn gpus_are_given_to_one_task_at_a_time_and_named_in_its_environment() {
    let c = Cluster::up(
        Opts::default()
            .cpus(4)
            .up_args(&["--gpus", "2", "--resource", "fpga=1"]),
    );
    let nodes = c.nodes_json();
    assert_eq!(nodes[0]["gres"]["gpu"]["total"], 2, "{nodes:?}");
    assert_eq!(nodes[0]["gres"]["fpga"]["total"], 1, "{nodes:?}");
    let human = c.rudel_ok(&["nodes"]);
    assert!(human.stdout.contains("fpga:0/1,gpu:0/2"), "{human}");

    // Four cpus but two GPUs: at most two of these run at once, on different GPUs.
    let id = c.submit(&[
        "--array",
        "1-4",
        "--gpus",
        "1",
        "--",
        "sh",
        "-c",
        &recorder("gpu.log", "1"),
    ]);
    let v = c.wait_finished(id, Duration::from_secs(60));
    assert_eq!(v["state"], "completed", "{v:#}");
    let r = runs(&c, "gpu.log");
    assert_eq!(r.len(), 4, "{r:?}");
    assert_eq!(most_at_once(&r), 2, "two GPUs, one task each: {r:?}");
    for (s, e, dev) in &r {
        assert!(dev == "0" || dev == "1", "one GPU by index: {r:?}");
        for (s2, _, dev2) in r.iter().filter(|(s2, _, _)| s2 != s) {
            if s <= s2 && s2 < e {
                assert_ne!(dev, dev2, "two tasks on one GPU at once: {r:?}");
            }
        }
    }
    let devices: BTreeSet<&str> = r.iter().map(|(_, _, d)| d.as_str()).collect();
    assert_eq!(devices.len(), 2, "both GPUs used: {r:?}");

    // A task without GPUs gets none named; one asking for more than any node has is refused.
    let plain = c.rudel_ok(&["run", "--", "sh", "-c", "echo ${CUDA_VISIBLE_DEVICES:-none}"]);
    assert_eq!(plain.stdout.trim(), "none", "{plain}");
    let two = c.rudel_ok(&["run", "--gres", "gpu:2", "--", "sh", "-c", "echo $CUDA_VISIBLE_DEVICES"]);
    assert_eq!(two.stdout.trim(), "0,1", "{two}");
    let fpga = c.rudel_ok(&["run", "--gres", "fpga", "--", "true"]);
    assert_eq!(fpga.code, Some(0), "{fpga}");
    let big = c.rudel(&["submit", "--gpus", "3", "--", "true"]);
    assert_eq!(big.code, Some(2), "{big}");
    assert!(big.stderr.contains("no node has the resources gpu:3"), "{big}");
    let typed = c.rudel(&["submit", "--gres", "gpu:a100:1", "--", "true"]);
    assert_eq!(typed.code, Some(2), "{typed}");
    assert!(
        typed.stderr.contains("n1 [fpga:1,gpu:2]"),
        "names what nodes have: {typed}"
    );
    let both = c.rudel(&["submit", "--gpus", "1", "--gres", "gpu:1", "--", "true"]);
    assert_eq!(both.code, Some(2), "{both}");
}

#[test]
fn a_license_is_a_semaphore_across_the_cluster() {
    let c = Cluster::up(Opts::default().cpus(4));
    let unknown = c.rudel(&["submit", "-L", "matlab", "--", "true"]);
    assert_eq!(unknown.code, Some(2), "{unknown}");
    assert!(unknown.stderr.contains("no license \"matlab\""), "{unknown}");

    c.rudel_ok(&["admin", "config", "set", "licenses=matlab:2"]);
    let too_many = c.rudel(&["submit", "-L", "matlab:3", "--", "true"]);
    assert_eq!(too_many.code, Some(2), "{too_many}");
    // Four cpus, two licenses, two per task: one task at a time.
    let id = c.submit(&[
        "--array",
        "1-3",
        "-L",
        "matlab:2",
        "--",
        "sh",
        "-c",
        &recorder("lic.log", "1"),
    ]);
    let waiting = c.wait_state(id, |v| v["state"] == "running", Duration::from_secs(20));
    let reason = waiting["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("Licenses"),
        "the others wait for the license: {waiting:#}"
    );
    // The count cannot drop below what running tasks hold.
    let lower = c.rudel(&["admin", "config", "set", "licenses=matlab:1"]);
    assert_ne!(lower.code, Some(0), "{lower}");
    assert!(lower.stderr.contains("hold 2 matlab licenses"), "{lower}");
    let v = c.wait_finished(id, Duration::from_secs(60));
    assert_eq!(v["state"], "completed", "{v:#}");
    let r = runs(&c, "lic.log");
    assert_eq!(r.len(), 3, "{r:?}");
    assert_eq!(most_at_once(&r), 1, "the license allows one task at a time: {r:?}");
}
