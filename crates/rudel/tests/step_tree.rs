//! Step launch through a tree of agents (issue 11, docs/parallel-jobs.md "Launch tree"):
//! with a small fanout and threshold, a step over 7 agents goes head -> 2 agents -> their
//! children -> theirs (3 levels). Ground truth is what every task records (its rank, node
//! id and node); the agents' logs show how each launch arrived, so the test fails if the
//! head still sent every launch itself. A node whose tree listener cannot be reached gets
//! its launch (and its subtree's) from the head directly, and the step completes.
mod common;

use std::time::Duration;

use common::{Cluster, Opts};

const WAIT: Duration = Duration::from_secs(90);
const NODES: u32 = 7;

/// `rudel up` (n1) plus n2..n7; `bad` start with a tree port nobody listens on.
fn seven_nodes(bad: &[&str]) -> (Cluster, String) {
    let mut c = Cluster::up(Opts::default().cpus(1).up_args(&[
        "--node-timeout",
        "5s",
        "--step-tree-fanout",
        "2",
        "--step-tree-threshold",
        "2",
    ]));
    for i in 2..=NODES {
        let name = format!("n{i}");
        if bad.contains(&name.as_str()) {
            let port = common::free_port().to_string();
            c.start_named_agent_with(&name, &["--tree-advertise-port", &port]);
        } else {
            c.start_named_agent(&name);
        }
    }
    let bin = c.tmp.path().join("bin");
    c.rudel_ok(&["slurm", "install", &bin.display().to_string()]);
    (c, bin.join("srun").display().to_string())
}

/// Runs one step over all 7 nodes, srun's stdin a line every task reads (srun's default
/// --input=all: through the tree, the head's first stdin chunk may reach a node before its
/// launch); returns each rank's record "PROCID NODEID NODE NODE LINE".
fn run_step(c: &Cluster, srun: &str) -> Vec<String> {
    let script = format!(
        "#!/bin/sh\n#SBATCH -N {NODES} -n {NODES}\n\
         printf 'via-stdin\\n' | {srun} sh -c 'read x; echo \"$SLURM_PROCID $SLURM_NODEID $SLURMD_NODENAME $RUDEL_NODE $x\" > task-$SLURM_PROCID.txt' 2> step.err; echo \"exit=$?\" > step.code\n"
    );
    std::fs::write(c.work.join("tree.sh"), script).unwrap();
    let id = c.submit(&["tree.sh"]);
    let v = c.wait_finished(id, WAIT);
    assert_eq!(v["state"], "completed", "{v}\n{}", c.logs_tail());
    assert_eq!(c.read_work("step.code"), "exit=0\n", "{}", c.read_work("step.err"));
    (0..NODES).map(|r| c.read_work(&format!("task-{r}.txt"))).collect()
}

/// Every rank ran once, on the node its node id names, with consistent variables.
fn check_ranks(records: &[String]) -> Vec<String> {
    let mut nodes = Vec::new();
    for (rank, rec) in records.iter().enumerate() {
        let f: Vec<&str> = rec.split_whitespace().collect();
        assert_eq!(f.len(), 5, "task {rank}: {rec:?}");
        assert_eq!(f[4], "via-stdin", "task {rank}: {rec:?}");
        assert_eq!(f[0], rank.to_string(), "task {rank}: {rec:?}");
        // One task per node: node id = rank.
        assert_eq!(f[1], rank.to_string(), "task {rank}: {rec:?}");
        assert_eq!(f[2], f[3], "task {rank}: {rec:?}");
        nodes.push(f[2].to_string());
    }
    let mut distinct = nodes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), NODES as usize, "one task on each node: {nodes:?}");
    nodes
}

/// Log lines of node `name`'s agent that say a launch came through the tree.
fn tree_lines(c: &Cluster, name: &str) -> Vec<String> {
    let log = agent_log(c, name);
    log.lines()
        .filter(|l| l.contains("step launch through the tree"))
        .map(String::from)
        .collect()
}

/// The log of node `name`'s agent (n1's is `rudel up`'s, shared with the head).
fn agent_log(c: &Cluster, name: &str) -> String {
    c.daemons
        .iter()
        .find(|d| {
            let t = d.log_text();
            let me = format!("name={name}");
            (name == "n1" && d.role == "up") || (d.role == "agent" && t.split_whitespace().any(|w| w == me))
        })
        .map(|d| d.log_text())
        .unwrap_or_else(|| panic!("no log for {name}"))
}

#[test]
fn a_step_over_seven_agents_is_launched_through_a_three_level_tree() {
    let (c, srun) = seven_nodes(&[]);
    let nodes = check_ranks(&run_step(&c, &srun));
    let head = agent_log(&c, "n1");
    assert!(
        head.contains("launching the step through a tree of agents") && head.contains("depth=3"),
        "{}",
        common::tail(&head, 30)
    );
    // Nodes 0 and 1 of the step hear from the head; 2..6 from another agent (heap order:
    // node i's children are 2(i+1) and 2(i+1)+1).
    for (i, name) in nodes.iter().enumerate() {
        let lines = tree_lines(&c, name);
        assert_eq!(lines.len(), 1, "{name} (node {i}): {lines:?}");
        let from = if i < 2 { "head" } else { "agent" };
        assert!(
            lines[0].contains(&format!("from=\"{from}\"")),
            "{name} (node {i}): {lines:?}"
        );
        let children = (2 * (i + 1)..(2 * (i + 1) + 2).min(NODES as usize)).count();
        assert!(
            lines[0].contains(&format!("children={children}")),
            "{name} (node {i}): {lines:?}"
        );
    }
    // A second step: again every rank once (connections between agents are reused).
    for r in 0..NODES {
        let _ = std::fs::remove_file(c.work.join(format!("task-{r}.txt")));
    }
    assert_eq!(check_ranks(&run_step(&c, &srun)), nodes);
}

#[test]
fn a_node_whose_tree_listener_cannot_be_reached_gets_its_launch_from_the_head() {
    // n3 advertises a port nobody listens on. The step's node 2 is a child of node 0 and
    // the parent of node 6: both must get their launches from the head directly.
    let (c, srun) = seven_nodes(&["n3"]);
    let nodes = check_ranks(&run_step(&c, &srun));
    let pos = nodes.iter().position(|n| n == "n3").expect("n3 ran a task");
    assert!(
        pos >= 2,
        "n3 is node {pos} of the step, a child of the head: no forward to it to fail ({nodes:?})"
    );
    let head = agent_log(&c, "n1");
    let undelivered: Vec<&str> = head
        .lines()
        .filter(|l| l.contains("launches not delivered through the tree"))
        .collect();
    assert_eq!(undelivered.len(), 1, "{}", common::tail(&head, 40));
    // Its subtree (heap children of node `pos`) came back with it.
    let mut subtree = vec![pos];
    let mut i = 0;
    while i < subtree.len() {
        let p = subtree[i];
        subtree.extend((2 * (p + 1)..(2 * (p + 1) + 2).min(NODES as usize)).collect::<Vec<_>>());
        i += 1;
    }
    for &p in &subtree {
        assert!(
            undelivered[0].contains(&format!("\"{}\"", nodes[p])),
            "{}: {}",
            nodes[p],
            undelivered[0]
        );
        assert!(
            tree_lines(&c, &nodes[p]).is_empty(),
            "{} got its launch through the tree",
            nodes[p]
        );
    }
    // The others still went through the tree.
    for (p, name) in nodes.iter().enumerate() {
        if !subtree.contains(&p) {
            assert_eq!(tree_lines(&c, name).len(), 1, "{name}");
        }
    }
}

#[test]
fn a_fanout_that_makes_no_tree_is_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    for (role, fanout) in [("head", "1"), ("up", "0")] {
        let data = tmp.path().join(format!("data-{role}"));
        let mut cmd = std::process::Command::new(common::RUDEL);
        cmd.args([role, "--data", &data.display().to_string(), "--listen"])
            .arg(format!("127.0.0.1:{}", common::free_port()))
            .args(["--step-tree-fanout", fanout]);
        let out = common::run_bounded(cmd, Duration::from_secs(20));
        assert_eq!(out.code, Some(2), "{role}: {out}");
        assert!(
            out.stderr.contains(&format!("--step-tree-fanout {fanout}")) && out.stderr.contains("at least 2"),
            "{role}: {out}"
        );
        assert!(!data.exists(), "{role} created its data directory");
    }
}
