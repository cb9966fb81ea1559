//! A node dies under a running multi-node job step (issue 11), on network hosts: each
//! agent in a network namespace of its own with its own `/tmp` and work directory. A batch
//! job of three nodes runs `srun -N 3 -n 6`, whose tasks sleep; then one host disappears:
//!
//! - the way a machine dies: its agent and every process on it get SIGKILL at once;
//! - the way a cable is pulled: the agent lives on but nobody reaches it.
//!
//! What a user sees is asserted: the job ends `node_fail` (or, with `--requeue`, runs
//! again on other nodes), its batch script and `srun` are gone, no task of the step is
//! left on a surviving host, and the survivors take new work. Ground truth is what the
//! processes record themselves (pid, node, network namespace) in a directory every host
//! sees, outside `/tmp`, as a shared home would be. Needs root and network namespaces.
mod common;
mod netns;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns::{Cluster, ClusterOpts};

const WAIT: Duration = Duration::from_secs(60);
/// How long a surviving host may keep a dead job's processes.
const CLEANUP: Duration = Duration::from_secs(20);

/// A directory every host sees (outside `/tmp`), removed when dropped.
struct Shared(PathBuf);

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn shared(tag: &str) -> Shared {
    let dir = PathBuf::from(format!("/var/tmp/rudel-netloss-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Shared(dir)
}

/// One process's own record: `what attempt rank pid node netns`.
#[derive(Debug, Clone)]
struct Rec {
    what: String,
    attempt: u32,
    rank: u32,
    pid: i32,
    node: String,
    netns: String,
}

/// Every record written so far (files are renamed into place: never half-written).
fn records(dir: &Path) -> Vec<Rec> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir.join("rec")) else {
        return v;
    };
    for e in rd.flatten() {
        if e.path().extension().is_some_and(|x| x == "tmp") {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let f: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(f.len(), 6, "malformed record {:?}: {text:?}", e.path());
        let num = |s: &str| s.parse::<i64>().unwrap_or_else(|_| panic!("malformed record {text:?}"));
        v.push(Rec {
            what: f[0].to_string(),
            attempt: num(f[1]) as u32,
            rank: num(f[2]) as u32,
            pid: num(f[3]) as i32,
            node: f[4].to_string(),
            netns: f[5].to_string(),
        });
    }
    v.sort_by_key(|r| (r.attempt, r.what.clone(), r.rank));
    v
}

/// Is the recorded process still alive (same pid in the same network namespace: a reused
/// pid elsewhere does not count)?
fn alive(r: &Rec) -> bool {
    std::fs::read_link(format!("/proc/{}/ns/net", r.pid)).is_ok_and(|l| l.to_string_lossy() == r.netns)
}

/// The batch script: records itself and its `srun` (which runs in the background so the
/// script can record its pid), then waits. Each of the 6 step tasks records itself and
/// sleeps.
fn submit_job(cl: &Cluster, dir: &Path, requeue: bool) -> u64 {
    let d = dir.display();
    let rec = |what: &str, rank: &str, pid: &str| {
        format!(
            "echo \"{what} $RUDEL_ATTEMPT {rank} {pid} $SLURMD_NODENAME $(readlink /proc/self/ns/net)\" \
             > {d}/rec/{what}.$RUDEL_ATTEMPT.{rank}.tmp && \
             mv {d}/rec/{what}.$RUDEL_ATTEMPT.{rank}.tmp {d}/rec/{what}.$RUDEL_ATTEMPT.{rank}"
        )
    };
    let task = format!("{}; sleep 300", rec("task", "$SLURM_PROCID", "$$"));
    let script = format!(
        "#!/bin/sh\n#SBATCH -N 3 --ntasks-per-node 2\n\
         export PATH={d}/bin:$PATH\n\
         {script_rec}\n\
         srun -N 3 -n 6 sh -c '{task}' > {d}/srun.$RUDEL_ATTEMPT.out 2>&1 &\n\
         SRUN=$!\n\
         {srun_rec}\n\
         wait $SRUN\n",
        script_rec = rec("script", "0", "$$"),
        srun_rec = rec("srun", "0", "$SRUN"),
    );
    let path = dir.join("job.sh");
    std::fs::write(&path, script).unwrap();
    let rq = if requeue { "--requeue" } else { "--no-requeue" };
    cl.submit(&[rq, &path.display().to_string()])
}

/// Waits until attempt `attempt` has its script, srun and 6 tasks recorded.
fn wait_recorded(cl: &Cluster, dir: &Path, attempt: u32) -> Vec<Rec> {
    let deadline = Instant::now() + WAIT;
    loop {
        let r: Vec<Rec> = records(dir).into_iter().filter(|r| r.attempt == attempt).collect();
        if r.len() == 8 {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "attempt {attempt}: only {r:?} recorded\nsrun: {}\n{}",
            std::fs::read_to_string(dir.join(format!("srun.{attempt}.out"))).unwrap_or_default(),
            cl.net.logs_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded by [`CLEANUP`]) until none of `recs` lives any more.
fn assert_all_gone(cl: &Cluster, recs: &[Rec], what: &str) {
    let deadline = Instant::now() + CLEANUP;
    loop {
        let left: Vec<&Rec> = recs.iter().filter(|r| alive(r)).collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still alive after {CLEANUP:?}: {left:?}\n{}",
            cl.net.logs_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Nodes of the step's tasks, in rank order.
fn task_nodes(recs: &[Rec]) -> Vec<String> {
    recs.iter()
        .filter(|r| r.what == "task")
        .map(|r| r.node.clone())
        .collect()
}

fn setup(tag: &str, agents: usize) -> (Shared, Cluster) {
    let dir = shared(tag);
    std::fs::create_dir_all(dir.0.join("rec")).unwrap();
    let cl = Cluster::start_private_fs(ClusterOpts {
        agents,
        cpus: 2,
        node_timeout: Some("3s".into()),
    });
    cl.rudel_ok(&["slurm", "install", &dir.0.join("bin").display().to_string()]);
    (dir, cl)
}

/// Two tasks on each of three distinct nodes, one of them the batch script's (with
/// `srun` beside it); returns (the script's node, the two others).
fn check_layout(recs: &[Rec]) -> (String, Vec<String>) {
    let nodes = task_nodes(recs);
    let mut distinct = nodes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{recs:?}");
    for n in &distinct {
        assert_eq!(nodes.iter().filter(|x| *x == n).count(), 2, "{recs:?}");
    }
    let script = recs
        .iter()
        .find(|r| r.what == "script")
        .map(|r| r.node.clone())
        .unwrap_or_default();
    let srun = recs
        .iter()
        .find(|r| r.what == "srun")
        .map(|r| r.node.clone())
        .unwrap_or_default();
    assert_eq!(script, srun, "{recs:?}");
    assert!(distinct.contains(&script), "{recs:?}");
    let others = distinct.into_iter().filter(|n| *n != script).collect();
    (script, others)
}

/// Host index of node `hostN`.
fn host_of(node: &str) -> usize {
    node.strip_prefix("host")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected node name {node}"))
}

#[test]
fn a_host_that_dies_under_a_step_ends_the_job_node_fail_and_leaves_nothing_on_the_survivors() {
    let (dir, mut cl) = setup("kill", 3);
    let job = submit_job(&cl, &dir.0, false);
    let first = wait_recorded(&cl, &dir.0, 1);
    let (script_node, others) = check_layout(&first);
    // A node of the step that is not the batch script's dies.
    let victim = others[0].clone();
    cl.kill_host(host_of(&victim));
    let v = cl.wait_finished(job, WAIT);
    assert_eq!(v["state"], "node_fail", "{v}");
    // Script, srun and every step task on the two survivors are gone (the victim's died
    // with it).
    assert_all_gone(&cl, &first, "the dead job's processes");
    // The survivors are free: a new two-node job runs on them.
    let next = cl.submit(&["-N", "2", "--ntasks-per-node", "2", "--", "true"]);
    let v = cl.wait_finished(next, WAIT);
    assert_eq!(v["state"], "completed", "{v}");
    // `nodes` lists the allocation in placement order (the batch node first), which
    // depends on which survivor frees first: compare as sets.
    let mut want = vec![script_node, others[1].clone()];
    want.sort();
    let mut got: Vec<String> = serde_json::from_value(v["nodes"].clone()).unwrap_or_default();
    got.sort();
    assert_eq!(got, want, "{v}");
}

#[test]
fn a_host_cut_off_under_a_step_requeues_the_job_elsewhere_and_its_tasks_die_when_it_returns() {
    let (dir, cl) = setup("cut", 4);
    let job = submit_job(&cl, &dir.0, true);
    let first = wait_recorded(&cl, &dir.0, 1);
    let (_, others) = check_layout(&first);
    // A node of the step that is not the batch script's loses its cable: its agent and
    // tasks live on, unreachable.
    let victim = others[0].clone();
    cl.net.cut(host_of(&victim));
    // The job runs again (attempt 2) on the three nodes left.
    let second = wait_recorded(&cl, &dir.0, 2);
    check_layout(&second);
    assert!(!task_nodes(&second).contains(&victim), "{second:?}");
    // Nothing of the first attempt is left on the reachable hosts.
    let reachable: Vec<Rec> = first.iter().filter(|r| r.node != victim).cloned().collect();
    assert_all_gone(&cl, &reachable, "the first attempt's processes on the reachable hosts");
    // The cut host's tasks belong to an attempt that ended: once it is back, they die.
    cl.net.heal(host_of(&victim));
    let cut: Vec<Rec> = first.iter().filter(|r| r.node == victim).cloned().collect();
    assert_all_gone(&cl, &cut, "the first attempt's tasks on the cut host once it is back");
    // The second attempt was not disturbed by its return.
    assert!(second.iter().all(alive), "{second:?}");
    cl.rudel_ok(&["cancel", &job.to_string()]);
    let v = cl.wait_finished(job, WAIT);
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_all_gone(&cl, &second, "the cancelled job's processes");
}
