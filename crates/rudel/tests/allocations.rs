//! Multi-node allocations (issue 11, first part) on three agents of one host: the batch
//! script runs once, on the first node, and sees its whole allocation in Slurm's formats;
//! a gang takes every node at once or waits; losing a node ends the job NODE_FAIL and
//! frees every node. Ground truth is what the tasks record themselves.
mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Opts};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// `rudel up` (node n1) plus agents n2 and n3, 2 cpus each; nodes lost after 2 s.
fn three_nodes() -> (Cluster, Vec<usize>) {
    let mut c = Cluster::up(Opts::default().up_args(&["--node-timeout", "2s"]));
    let agents = vec![c.start_named_agent("n2"), c.start_named_agent("n3")];
    (c, agents)
}

/// The `KEY=VALUE` lines a task recorded, as a map.
fn env_of(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Submits a script whose directives ask for an allocation; it records its environment,
/// its hostfile and what `srun` without `-n 1` did (a step of every task).
fn submit_recording(c: &Cluster, tag: &str, directives: &str) -> u64 {
    let bin = c.tmp.path().join("bin");
    let script = format!(
        "#!/bin/sh\n{directives}\n\
         env | grep -E '^(SLURM|SLURMD|RUDEL)_' | sort > env-{tag}.txt\n\
         cat \"$RUDEL_HOSTFILE\" > hosts-{tag}.txt\n\
         {srun} hostname > srun-{tag}.txt 2>&1; echo \"exit=$?\" >> srun-{tag}.txt\n\
         {srun} -n 1 true && echo one-task-ok >> srun-{tag}.txt\n",
        srun = bin.join("srun").display()
    );
    std::fs::write(c.work.join(format!("{tag}.sh")), script).unwrap();
    c.submit(&[&format!("{tag}.sh")])
}

#[test]
fn the_script_runs_once_on_the_first_node_and_sees_its_whole_allocation() {
    let (c, _agents) = three_nodes();
    let bin = c.tmp.path().join("bin");
    c.rudel_ok(&["slurm", "install", &bin.display().to_string()]);

    let a = submit_recording(&c, "a", "#SBATCH -N 3 -n 6");
    let v = c.wait_finished(a, WAIT);
    assert_eq!(v["state"], "completed", "{v}");
    assert_eq!(v["nodes"], json!(["n1", "n2", "n3"]), "{v}");
    let env = env_of(&c.read_work("env-a.txt"));
    for (k, want) in [
        ("SLURM_JOB_NODELIST", "n[1-3]"),
        ("SLURM_NODELIST", "n[1-3]"),
        ("SLURM_NNODES", "3"),
        ("SLURM_JOB_NUM_NODES", "3"),
        ("SLURM_NTASKS", "6"),
        ("SLURM_NPROCS", "6"),
        ("SLURM_TASKS_PER_NODE", "2(x3)"),
        ("SLURM_JOB_CPUS_PER_NODE", "2(x3)"),
        ("SLURM_CPUS_ON_NODE", "2"),
        ("SLURMD_NODENAME", "n1"),
        ("RUDEL_NODES", "n1,n2,n3"),
        ("RUDEL_ALLOCATION", "n1:2:2,n2:2:2,n3:2:2"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(want), "{k}: {env:?}");
    }
    assert!(!env.contains_key("SLURM_NTASKS_PER_NODE"), "not asked: {env:?}");
    assert_eq!(c.read_work("hosts-a.txt"), "n1 slots=2\nn2 slots=2\nn3 slots=2\n");
    // A step of all six tasks runs on every node (tests/steps.rs has the details).
    let srun = c.read_work("srun-a.txt");
    let mut hosts: Vec<&str> = srun.lines().filter(|l| !l.contains('=') && !l.contains("ok")).collect();
    hosts.sort();
    assert_eq!(hosts.len(), 6, "{srun}");
    assert!(srun.contains("exit=0"), "{srun}");
    assert!(srun.contains("one-task-ok"), "srun -n 1 still runs: {srun}");

    let b = submit_recording(&c, "b", "#SBATCH -N 2 --ntasks-per-node 2");
    let v = c.wait_finished(b, WAIT);
    assert_eq!(v["state"], "completed", "{v}");
    let env = env_of(&c.read_work("env-b.txt"));
    for (k, want) in [
        ("SLURM_NNODES", "2"),
        ("SLURM_NTASKS", "4"),
        ("SLURM_TASKS_PER_NODE", "2(x2)"),
        ("SLURM_NTASKS_PER_NODE", "2"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(want), "{k}: {env:?}");
    }
    assert_eq!(c.read_work("hosts-b.txt").lines().count(), 2);

    // More nodes than the cluster has: refused at submit, nothing created.
    let out = c.rudel(&["submit", "-N", "4", "--", "true"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("asks for 4 nodes"), "{}", out.stderr);
}

/// (start, end) in seconds, as a task recorded them.
fn interval(c: &Cluster, name: &str) -> (f64, f64) {
    let t = c.read_work(name);
    let v: Vec<f64> = t.split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(v.len(), 2, "{name}: {t:?}");
    (v[0], v[1])
}

#[test]
fn a_gang_waits_for_all_its_nodes_and_never_shares_them_with_smaller_jobs() {
    let (c, _agents) = three_nodes();
    let rec = |tag: &str| format!("s=$(date +%s.%N); sleep 2; echo $s $(date +%s.%N) > t-{tag}.txt");
    // Two jobs that fit together (4 + 2 cpus), then a gang needing all six, then a small one.
    let two = c.submit(&["-N", "2", "--ntasks-per-node", "2", "--", "sh", "-c", &rec("two")]);
    let one = c.submit(&["-c", "2", "--", "sh", "-c", &rec("one")]);
    let all = c.submit(&["-N", "3", "--exclusive", "--", "sh", "-c", &rec("all")]);
    let late = c.submit(&["--", "sh", "-c", &rec("late")]);
    for id in [two, one, all, late] {
        let v = c.wait_finished(id, WAIT);
        assert_eq!(v["state"], "completed", "{v}");
    }
    let (t2, t1, ta, tl) = (
        interval(&c, "t-two.txt"),
        interval(&c, "t-one.txt"),
        interval(&c, "t-all.txt"),
        interval(&c, "t-late.txt"),
    );
    let overlap = |a: (f64, f64), b: (f64, f64)| a.0 < b.1 && b.0 < a.1;
    assert!(
        overlap(t2, t1),
        "the 2-node and 1-node jobs fit together: {t2:?} {t1:?}"
    );
    assert!(
        !overlap(ta, t2) && !overlap(ta, t1),
        "the gang shares no node: {ta:?} {t2:?} {t1:?}"
    );
    assert!(
        tl.0 >= ta.0,
        "the small job behind the gang does not overtake it: {tl:?} {ta:?}"
    );
    assert_eq!(c.show_json(all)["nodes"], json!(["n1", "n2", "n3"]));
}

#[test]
fn losing_a_node_of_a_running_allocation_ends_it_node_fail_and_frees_every_node() {
    let (mut c, agents) = three_nodes();
    let job = c.submit(&[
        "-N",
        "2",
        "-w",
        "n1,n3",
        "--no-requeue",
        "--",
        "sh",
        "-c",
        "echo $$ > pid.txt; sleep 120",
    ]);
    let v = c.wait_state(job, |v| v["state"] == "running", WAIT);
    assert_eq!(v["nodes"], json!(["n1", "n3"]), "{v}");
    let start = Instant::now();
    while c.read_work("pid.txt").trim().is_empty() {
        assert!(start.elapsed() < WAIT, "the script never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid: i32 = c.read_work("pid.txt").trim().parse().unwrap();
    // n3 holds a slice but runs nothing: kill its agent.
    c.daemons[agents[1]].kill9();
    let v = c.wait_finished(job, WAIT);
    assert_eq!(v["state"], "node_fail", "{v}");
    // The script on n1 is gone, and every surviving node is free for a new gang.
    let gone = Instant::now();
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(
            gone.elapsed() < Duration::from_secs(20),
            "script {pid} still runs on n1"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let next = c.submit(&["-N", "2", "--ntasks-per-node", "2", "--", "true"]);
    let v = c.wait_finished(next, WAIT);
    assert_eq!(v["state"], "completed", "{v}");
    assert_eq!(v["nodes"], json!(["n1", "n2"]), "{v}");
}
