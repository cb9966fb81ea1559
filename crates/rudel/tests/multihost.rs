//! rudel across hosts: a head and agents in separate network namespaces (own addresses,
//! joined by a bridge), with network cuts, kill -9 and SIGSTOP as faults.
//!
//! Every test task appends lines to a ground-truth file outside the namespaces
//! (`JOB INDEX ATTEMPT NODE [start|end EPOCH_MS]`, one short `>>` write each, atomic under
//! O_APPEND); the assertions check that file and what `rudel show/nodes/wait` report.
//! Needs root and network-namespace support: without them the tests fail and say why.
mod common;
mod netns;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use netns::{count_by, epoch_ms, read_events, run_bounded, task_procs, Cluster, ClusterOpts, Event};
use serde_json::Value;

/// Task line without events (test 1).
const LINE_TASK: &str = r#"echo "$RUDEL_JOB_ID $RUDEL_ARRAY_INDEX $RUDEL_ATTEMPT $RUDEL_NODE" >> "$RDL_TRUTH""#;

/// Start line, a sleep, end line. First attempts on host1 (the victim of the fault tests)
/// sleep 30 s so that they are still alive when the node comes back and must be killed;
/// first attempts elsewhere 8 s; reruns 2 s.
const FAULT_TASK: &str = r#"echo "$RUDEL_JOB_ID $RUDEL_ARRAY_INDEX $RUDEL_ATTEMPT $RUDEL_NODE start $(date +%s%3N)" >> "$RDL_TRUTH"
if [ "$RUDEL_ATTEMPT" != 1 ]; then sleep 2; elif [ "$RUDEL_NODE" = host1 ]; then sleep 30; else sleep 8; fi
echo "$RUDEL_JOB_ID $RUDEL_ARRAY_INDEX $RUDEL_ATTEMPT $RUDEL_NODE end $(date +%s%3N)" >> "$RDL_TRUTH""#;

/// Start line, a short sleep, end line (test 4).
const SHORT_TASK: &str = r#"echo "$RUDEL_JOB_ID $RUDEL_ARRAY_INDEX $RUDEL_ATTEMPT $RUDEL_NODE start $(date +%s%3N)" >> "$RDL_TRUTH"
sleep 0.2
echo "$RUDEL_JOB_ID $RUDEL_ARRAY_INDEX $RUDEL_ATTEMPT $RUDEL_NODE end $(date +%s%3N)" >> "$RDL_TRUTH""#;

fn truth_env(path: &Path) -> String {
    format!("RDL_TRUTH={}", path.display())
}

/// Submits an array whose tasks run `sh -c SCRIPT`.
fn submit_sh(cl: &Cluster, truth: &Path, array: &str, extra: &[&str], script: &str) -> u64 {
    let env = truth_env(truth);
    let mut args = vec!["--array", array, "--output", "none", "--env", &env];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    cl.submit(&args)
}

fn starts(ev: &[Event]) -> Vec<&Event> {
    ev.iter().filter(|e| e.what == "start").collect()
}

fn task_state(job: &Value, index: u32) -> String {
    job["task_details"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["index"] == index))
        .and_then(|t| t["state"].as_str())
        .unwrap_or("?")
        .to_string()
}

fn count(job: &Value, state: &str) -> u64 {
    job["counts"][state].as_u64().unwrap_or(0)
}

/// No (job, index, attempt) may ever start twice.
fn assert_no_attempt_started_twice(ev: &[Event]) {
    let twice: Vec<_> = count_by(&starts(ev).into_iter().cloned().collect::<Vec<_>>(), |e| {
        (e.job, e.index, e.attempt)
    })
    .into_iter()
    .filter(|(_, n)| *n > 1)
    .collect();
    assert!(
        twice.is_empty(),
        "task attempts that started twice (job, index, attempt) → starts: {twice:?}"
    );
}

/// The fault scenario of tests 2 and 3: a `--requeue` and a `--no-requeue` array of 3 tasks
/// each on 3 agents with 3 cpus: the spreading scheduler puts one task of each job on every
/// host and leaves one free slot per host, so a requeued task can start at once elsewhere.
struct Scenario {
    truth: std::path::PathBuf,
    req: u64,
    noreq: u64,
    /// (job, index, attempt) running on host1 when the fault hit.
    victims: Vec<(u64, u32, u32)>,
    req_victim: u32,
    noreq_victim: u32,
}

fn start_scenario(cl: &Cluster) -> Scenario {
    let truth = cl.net.tmp.path().join("truth.txt");
    let req = submit_sh(cl, &truth, "1-3", &["--requeue"], FAULT_TASK);
    let noreq = submit_sh(cl, &truth, "1-3", &["--no-requeue"], FAULT_TASK);
    // Wait until all six tasks have started (their start lines are written).
    let deadline = Instant::now() + Duration::from_secs(20);
    let ev = loop {
        let ev = read_events(&truth);
        let n = starts(&ev).len();
        if n >= 6 {
            break ev;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of 6 tasks started within 20 s; jobs: {:?} / {:?}\n{}",
            cl.show(req).map(|j| j["counts"].clone()),
            cl.show(noreq).map(|j| j["counts"].clone()),
            cl.net.logs_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let hosts: BTreeSet<&str> = ev.iter().map(|e| e.node.as_str()).collect();
    assert_eq!(
        hosts,
        BTreeSet::from(["host1", "host2", "host3"]),
        "tasks should run on every host: {ev:?}"
    );
    let on1 = |job: u64| -> Option<u32> { ev.iter().find(|e| e.job == job && e.node == "host1").map(|e| e.index) };
    let (Some(req_victim), Some(noreq_victim)) = (on1(req), on1(noreq)) else {
        panic!("expected one task of each job on host1 (spreading placement), got {ev:?}");
    };
    Scenario {
        truth,
        req,
        noreq,
        victims: vec![(req, req_victim, 1), (noreq, noreq_victim, 1)],
        req_victim,
        noreq_victim,
    }
}

/// Polls (bounded) until host1 is shown `down`, the victim of the --no-requeue job is
/// `node_fail` and the victim of the --requeue job has started again on another host.
/// Returns the epoch ms of the down observation and of that restart (from the ground truth).
/// With `while_gone` false (the agent came back before its node timed out), host1 need not
/// be `down` and the rerun may run anywhere, host1 included.
fn await_node_loss(cl: &Cluster, s: &Scenario, t_fault: u64, bound: Duration, while_gone: bool) -> (u64, u64) {
    let deadline = Instant::now() + bound;
    let (mut t_down, mut t_nodefail, mut t_rerun) = (None, None, None);
    if !while_gone {
        t_down = Some(t_fault);
    }
    loop {
        if t_down.is_none() && cl.node_state(1).as_deref() == Some("down") {
            t_down = Some(epoch_ms());
        }
        if t_nodefail.is_none() {
            if let Some(j) = cl.show(s.noreq) {
                if task_state(&j, s.noreq_victim) == "node_fail" {
                    t_nodefail = Some(epoch_ms());
                }
            }
        }
        if t_rerun.is_none() {
            t_rerun = read_events(&s.truth)
                .iter()
                .find(|e| {
                    e.job == s.req
                        && e.index == s.req_victim
                        && e.what == "start"
                        && e.attempt >= 2
                        && (e.node != "host1" || !while_gone)
                })
                .map(|e| e.ms);
        }
        if let (Some(d), Some(_), Some(r)) = (t_down, t_nodefail, t_rerun) {
            return (d, r);
        }
        if Instant::now() > deadline {
            panic!(
                "{:?} after the fault: host1 shown down: {:?} (state now {:?}), --no-requeue task {} node_fail: {:?} \
                 (state now {:?}), --requeue task {} rerun{}: {:?}\nground truth:\n{}\n{}",
                bound,
                t_down.map(|t| t.saturating_sub(t_fault)),
                cl.node_state(1),
                s.noreq_victim,
                t_nodefail.map(|t| t.saturating_sub(t_fault)),
                cl.show(s.noreq).map(|j| task_state(&j, s.noreq_victim)),
                s.req_victim,
                if while_gone { " elsewhere" } else { "" },
                t_rerun.map(|t| t.saturating_sub(t_fault)),
                std::fs::read_to_string(&s.truth).unwrap_or_default(),
                cl.net.logs_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until host1 is connected again (any state but `down`).
fn await_node_back(cl: &Cluster, bound: Duration) -> u64 {
    let deadline = Instant::now() + bound;
    loop {
        match cl.node_state(1).as_deref() {
            Some("idle" | "mixed" | "allocated") => return epoch_ms(),
            st => assert!(
                Instant::now() < deadline,
                "host1 not back within {bound:?} (state {st:?})\n{}",
                cl.net.logs_tail(40)
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until no process of the given-up attempts lives in host1 any more.
fn await_victims_gone(cl: &Cluster, s: &Scenario, bound: Duration) -> u64 {
    let deadline = Instant::now() + bound;
    loop {
        let left = task_procs(&cl.net.procs_in(1), &s.victims);
        if left.is_empty() {
            return epoch_ms();
        }
        assert!(
            Instant::now() < deadline,
            "{bound:?} after host1 came back, processes of given-up task attempts still run there \
             (a second live copy): {:?}\n{}",
            left.iter().map(|p| (p.pid, p.cmdline.clone())).collect::<Vec<_>>(),
            cl.net.logs_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Final checks of the fault scenario, on `rudel show` and on the ground truth.
fn check_scenario_outcome(cl: &Cluster, s: &Scenario) {
    let req = cl.wait_finished(s.req, Duration::from_secs(40));
    let noreq = cl.wait_finished(s.noreq, Duration::from_secs(40));
    assert_eq!(
        count(&req, "completed"),
        3,
        "--requeue job: every task completes: {}",
        req["counts"]
    );
    assert_eq!(req["state"], "completed", "--requeue job state: {req}");
    assert_eq!(
        task_state(&noreq, s.noreq_victim),
        "node_fail",
        "--no-requeue task on the lost node: {}",
        noreq["task_details"]
    );
    assert_eq!(
        count(&noreq, "completed"),
        2,
        "the other --no-requeue tasks complete: {}",
        noreq["counts"]
    );
    assert_eq!(count(&noreq, "node_fail"), 1, "{}", noreq["counts"]);
    let o = cl.rudel(&["wait", &s.req.to_string(), "--timeout", "10s", "--quiet"]);
    assert_eq!(o.code, Some(0), "`rudel wait` of the --requeue job: {o}");

    // Every node is back to idle: no cores stay allocated to given-up or fenced attempts.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let nodes = cl.nodes_opt().unwrap_or_default();
        let idle = nodes.len() == 3
            && nodes
                .iter()
                .all(|n| n["state"] == "idle" && n["cpus_used"] == 0 && n["running_tasks"] == 0);
        if idle {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes not all idle 10 s after both jobs ended: {nodes:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let ev = read_events(&s.truth);
    assert_no_attempt_started_twice(&ev);
    for i in 1..=3u32 {
        let ends = ev
            .iter()
            .filter(|e| e.job == s.req && e.index == i && e.what == "end")
            .count();
        assert!(ends >= 1, "--requeue task {i} never completed (no end line): {ev:?}");
        let st = ev
            .iter()
            .filter(|e| e.job == s.noreq && e.index == i && e.what == "start")
            .count();
        assert!(
            st <= 1,
            "--no-requeue task {i} started {st} times (at-most-once broken): {ev:?}"
        );
    }
    // The given-up attempts were killed when host1 returned, long before their 30 s sleep.
    for &(job, index, attempt) in &s.victims {
        let ended = ev
            .iter()
            .any(|e| (e.job, e.index, e.attempt) == (job, index, attempt) && e.what == "end");
        assert!(
            !ended,
            "given-up task {job}.{index} attempt {attempt} ran to its end on host1: {ev:?}"
        );
    }
    let reruns: Vec<&Event> = ev
        .iter()
        .filter(|e| e.job == s.req && e.attempt >= 2 && e.what == "start")
        .collect();
    println!("reruns of the --requeue job: {reruns:?}");
}

// ---------------------------------------------------------------------------------------

#[test]
fn three_agents_share_an_array() {
    let t0 = Instant::now();
    let cl = Cluster::start(ClusterOpts {
        agents: 3,
        cpus: 2,
        node_timeout: None,
    });
    let truth = cl.net.tmp.path().join("truth.txt");
    let t_submit = Instant::now();
    let job = submit_sh(&cl, &truth, "1-3000", &[], LINE_TASK);
    let o = run_bounded(
        cl.command(&["wait", &job.to_string(), "--timeout", "120s", "--quiet"]),
        Duration::from_secs(130),
    );
    let run_time = t_submit.elapsed();
    assert_eq!(
        o.code,
        Some(0),
        "`rudel wait` of the 3,000-task array: {o}\n{}",
        cl.net.logs_tail(30)
    );
    let j = cl.show_ok(job);
    assert_eq!(count(&j, "completed"), 3000, "{}", j["counts"]);

    let ev = read_events(&truth);
    assert_eq!(ev.len(), 3000, "ground truth has {} lines, expected 3,000", ev.len());
    assert!(
        ev.iter().all(|e| e.job == job),
        "lines of another job in the ground truth"
    );
    let per_index = count_by(&ev, |e| e.index);
    let expected: BTreeSet<u32> = (1..=3000).collect();
    assert_eq!(
        per_index.keys().copied().collect::<BTreeSet<_>>(),
        expected,
        "every index exactly once"
    );
    assert!(per_index.values().all(|n| *n == 1), "an index ran twice");
    assert!(
        ev.iter().all(|e| e.attempt == 1),
        "attempt should be 1 everywhere: {:?}",
        ev.iter().find(|e| e.attempt != 1)
    );
    let per_node: BTreeMap<String, usize> = count_by(&ev, |e| e.node.clone());
    assert_eq!(
        per_node.keys().cloned().collect::<BTreeSet<_>>(),
        ["host1", "host2", "host3"].iter().map(|s| s.to_string()).collect(),
        "all three nodes should have run tasks: {per_node:?}"
    );
    let nodes = cl.nodes_opt().expect("rudel nodes");
    for n in &nodes {
        assert_eq!(n["running_tasks"], 0, "node still busy after the job: {n}");
    }
    println!(
        "three_agents_share_an_array: 3,000 tasks in {:.2} s ({:.0} tasks/s) over {per_node:?}; test took {:.1} s",
        run_time.as_secs_f64(),
        3000.0 / run_time.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn cut_agent_requeues_and_fences() {
    let t0 = Instant::now();
    let cl = Cluster::start(ClusterOpts {
        agents: 3,
        cpus: 3,
        node_timeout: Some("3s".into()),
    });
    let s = start_scenario(&cl);

    let t_cut = epoch_ms();
    cl.net.cut(1);
    let (t_down, t_rerun) = await_node_loss(&cl, &s, t_cut, Duration::from_secs(20), true);
    let cut_to_rerun = t_rerun.saturating_sub(t_cut);
    println!(
        "cut_agent_requeues_and_fences: cut → host1 shown down {} ms; cut → requeued task started elsewhere {} ms (target ≤ 15000)",
        t_down - t_cut,
        cut_to_rerun
    );
    // Still cut off: the old copies keep running there (nobody can reach them).
    assert!(
        !task_procs(&cl.net.procs_in(1), &s.victims).is_empty(),
        "the old task processes on the cut-off host should still be alive before it reconnects"
    );

    let t_heal = epoch_ms();
    cl.net.heal(1);
    let t_back = await_node_back(&cl, Duration::from_secs(30));
    let t_gone = await_victims_gone(&cl, &s, Duration::from_secs(10));
    println!(
        "cut_agent_requeues_and_fences: heal → host1 back {} ms; heal → given-up copies killed {} ms",
        t_back - t_heal,
        t_gone.saturating_sub(t_heal)
    );
    check_scenario_outcome(&cl, &s);
    assert!(
        cut_to_rerun <= 15_000,
        "cut → requeued task running elsewhere took {cut_to_rerun} ms (target ≤ 15 s)"
    );
    println!(
        "cut_agent_requeues_and_fences: test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn killed_agent_restart() {
    let t0 = Instant::now();
    let mut cl = Cluster::start(ClusterOpts {
        agents: 3,
        cpus: 3,
        node_timeout: Some("3s".into()),
    });
    let s = start_scenario(&cl);

    let t_kill = epoch_ms();
    cl.kill9_agent(1);
    // The tasks run in their own sessions: they outlive the agent (orphans).
    let orphans = task_procs(&cl.net.procs_in(1), &s.victims);
    println!(
        "killed_agent_restart: {} orphaned task processes alive after kill -9",
        orphans.len()
    );
    std::thread::sleep(Duration::from_millis(300));
    let n1 = cl
        .nodes_opt()
        .unwrap_or_default()
        .into_iter()
        .find(|n| n["name"] == "host1");
    println!("killed_agent_restart: host1 0.3 s after kill -9 (session gone, not yet timed out): {n1:?}");
    let (t_down, t_rerun) = await_node_loss(&cl, &s, t_kill, Duration::from_secs(20), true);
    println!(
        "killed_agent_restart: kill → host1 shown down {} ms; kill → requeued task started elsewhere {} ms",
        t_down - t_kill,
        t_rerun.saturating_sub(t_kill)
    );

    let t_restart = epoch_ms();
    cl.start_agent(1);
    let t_back = await_node_back(&cl, Duration::from_secs(30));
    let t_gone = await_victims_gone(&cl, &s, Duration::from_secs(10));
    println!(
        "killed_agent_restart: restart → host1 back {} ms; restart → orphans gone {} ms",
        t_back - t_restart,
        t_gone.saturating_sub(t_restart)
    );
    check_scenario_outcome(&cl, &s);
    // Nothing of either job is left anywhere in host1 (reruns there, if any, have ended too).
    let all_attempts: Vec<(u64, u32, u32)> = [s.req, s.noreq]
        .iter()
        .flat_map(|&j| (1..=3u32).flat_map(move |i| (1..=5u32).map(move |a| (j, i, a))))
        .collect();
    let left = task_procs(&cl.net.procs_in(1), &all_attempts);
    assert!(
        left.is_empty(),
        "task processes left in host1 after both jobs ended: {left:?}"
    );
    println!("killed_agent_restart: test took {:.1} s", t0.elapsed().as_secs_f64());
}

/// The agent is killed and restarted within a second, before its node times out: the
/// journal's orphans are killed and reported lost; the head requeues / fails them.
#[test]
fn killed_agent_quick_restart() {
    let t0 = Instant::now();
    let mut cl = Cluster::start(ClusterOpts {
        agents: 3,
        cpus: 3,
        node_timeout: Some("3s".into()),
    });
    let s = start_scenario(&cl);

    let t_kill = epoch_ms();
    cl.kill9_agent(1);
    std::thread::sleep(Duration::from_millis(500));
    cl.start_agent(1);
    let t_back = await_node_back(&cl, Duration::from_secs(20));
    let t_gone = await_victims_gone(&cl, &s, Duration::from_secs(10));
    let (_, t_rerun) = await_node_loss(&cl, &s, t_kill, Duration::from_secs(20), false);
    println!(
        "killed_agent_quick_restart: kill → host1 back {} ms; kill → orphans gone {} ms; kill → requeued task started {} ms",
        t_back - t_kill,
        t_gone.saturating_sub(t_kill),
        t_rerun.saturating_sub(t_kill)
    );
    check_scenario_outcome(&cl, &s);
    println!(
        "killed_agent_quick_restart: test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn paused_head_resumes() {
    let t0 = Instant::now();
    let cl = Cluster::start(ClusterOpts {
        agents: 3,
        cpus: 2,
        node_timeout: None,
    });
    let truth = cl.net.tmp.path().join("truth.txt");
    let n = 120u32;
    let job = submit_sh(&cl, &truth, &format!("1-{n}"), &[], SHORT_TASK);
    let deadline = Instant::now() + Duration::from_secs(20);
    while starts(&read_events(&truth)).len() < 12 {
        assert!(
            Instant::now() < deadline,
            "the array did not get going within 20 s\n{}",
            cl.net.logs_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = read_events(&truth).len();
    netns::pause(cl.head_pid);
    std::thread::sleep(Duration::from_secs(2));
    let during = read_events(&truth).len() - before;
    netns::resume(cl.head_pid);
    println!("paused_head_resumes: {during} ground-truth lines written while the head was stopped");

    let o = run_bounded(
        cl.command(&["wait", &job.to_string(), "--timeout", "60s", "--quiet"]),
        Duration::from_secs(70),
    );
    assert_eq!(
        o.code,
        Some(0),
        "`rudel wait` after the head resumed: {o}\n{}",
        cl.net.logs_tail(30)
    );
    let j = cl.show_ok(job);
    assert_eq!(count(&j, "completed"), n as u64, "{}", j["counts"]);

    let ev = read_events(&truth);
    assert_no_attempt_started_twice(&ev);
    for i in 1..=n {
        let st = ev.iter().filter(|e| e.index == i && e.what == "start").count();
        let en = ev.iter().filter(|e| e.index == i && e.what == "end").count();
        assert_eq!(
            (st, en),
            (1, 1),
            "task {i}: {st} starts, {en} ends (nothing may be lost or rerun)"
        );
    }
    assert!(
        ev.iter().all(|e| e.attempt == 1),
        "a task was rerun: {:?}",
        ev.iter().find(|e| e.attempt != 1)
    );
    let nodes = cl.nodes_opt().expect("rudel nodes");
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    for nd in &nodes {
        assert_ne!(
            nd["state"], "down",
            "a node was declared lost because the head paused: {nd}"
        );
    }
    println!("paused_head_resumes: test took {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn exec_reaches_every_host_and_drain_stops_placement() {
    let cl = Cluster::start(ClusterOpts {
        agents: 3,
        cpus: 2,
        node_timeout: None,
    });

    // `rudel exec --all` runs on every host: each answers with its own address.
    let o = cl.rudel(&[
        "exec",
        "--all",
        "--json",
        "--",
        "sh",
        "-c",
        "echo $RUDEL_NODE; ip -4 -o addr show eth0",
    ]);
    assert_eq!(o.code, Some(0), "{o}");
    let results: Vec<Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(results.len(), 3, "{o}");
    for host in 1..=3 {
        let name = Cluster::node_name(host);
        let r = results
            .iter()
            .find(|r| r["node"] == name.as_str())
            .unwrap_or_else(|| panic!("no result of {name}: {o}"));
        let out = r["output"].as_str().unwrap_or_default();
        assert!(out.contains(&name), "{name}: {out}");
        assert!(
            out.contains(&cl.net.ip(host)),
            "{name} should report its address {}: {out}",
            cl.net.ip(host)
        );
    }
    // Grouped text output: identical results share one line.
    let o = cl.rudel(&["exec", "--all", "--", "true"]);
    assert_eq!(o.code, Some(0), "{o}");
    assert!(o.stdout.starts_with("host[1-3] (3): exit 0"), "{o}");

    // Draining host1 keeps new work off it.
    cl.rudel_ok(&["drain", &Cluster::node_name(1), "--reason", "test"]);
    let job = cl.submit(&["--array", "1-30", "--output", "none", "--", "true"]);
    let o = cl.rudel(&["wait", &job.to_string(), "--timeout", "60s", "--quiet"]);
    assert_eq!(o.code, Some(0), "{o}");
    let j = cl.show(job).expect("show");
    let nodes: BTreeSet<String> = j["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(String::from))
        .collect();
    assert!(
        !nodes.contains(&Cluster::node_name(1)),
        "drained host1 ran tasks: {nodes:?}"
    );
    cl.rudel_ok(&["resume", &Cluster::node_name(1)]);

    // A host cut off from the network: exec reports it failed, names it, exits non-zero.
    cl.net.cut(2);
    let o = cl.rudel(&["exec", "--all", "--timeout", "2s", "--", "true"]);
    cl.net.heal(2);
    assert_eq!(o.code, Some(1), "{o}");
    assert!(
        o.stderr.contains(&Cluster::node_name(2)),
        "the unreachable host must be named: {o}"
    );
    assert!(o.stdout.contains("host[1,3] (2): exit 0"), "{o}");
}

#[test]
fn joining_needs_a_valid_token_and_clients_need_certificates() {
    let mut cl = Cluster::start(ClusterOpts {
        agents: 2,
        cpus: 1,
        node_timeout: None,
    });
    // Both agents joined with the head's token over the bridge (Cluster::start waited).
    let head_log = cl.head_log_text();
    for host in 1..=2 {
        let line = head_log
            .lines()
            .find(|l| l.contains("issued a certificate") && l.contains(&format!("name={}", Cluster::node_name(host))))
            .unwrap_or_else(|| panic!("no certificate issued to host{host}:\n{head_log}"));
        assert!(
            line.contains(&cl.net.ip(host)),
            "issued to the host's own address: {line}"
        );
    }

    // An agent with a forged token (right cluster pin, wrong secret) is refused and says so.
    let token = cl.join_token();
    let (pin_part, secret) = token.rsplit_once('-').unwrap();
    let flipped: String = secret.chars().map(|ch| if ch == '0' { '1' } else { '0' }).collect();
    let forged = format!("{pin_part}-{flipped}");
    let data = cl.net.tmp.path().join("intruder");
    let log = cl.net.tmp.path().join("intruder.log");
    let head = cl.head_addr.clone();
    let d = data.display().to_string();
    let pid = cl.net.spawn(
        2,
        &[
            netns::RUDEL,
            "agent",
            "--head",
            &head,
            "--data",
            &d,
            "--name",
            "intruder",
            "--token",
            &forged,
        ],
        &log,
    );
    assert!(
        cl.net.reap(pid, Duration::from_secs(20)),
        "the refused agent should exit"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("refused the join: invalid join token"),
        "agent side:\n{text}"
    );
    assert!(
        cl.head_log_text().contains("refused join: invalid join token"),
        "head side:\n{}",
        cl.head_log_text()
    );
    assert!(!data.join("tls/cert.pem").exists(), "no certificate for a bad token");
    let names: Vec<String> = cl
        .nodes_opt()
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n["name"].as_str().map(String::from))
        .collect();
    assert!(!names.contains(&"intruder".to_string()), "{names:?}");

    // A user on host 1 without a certificate (only the CA file) is refused, and the head
    // logs the refusal with host 1's address.
    let ca_only = cl.net.tmp.path().join("ca-only");
    std::fs::create_dir_all(&ca_only).unwrap();
    std::fs::copy(cl.admin_credentials().join("ca.pem"), ca_only.join("ca.pem")).unwrap();
    let o = cl.rudel_on_host(1, &ca_only, &["jobs"]);
    assert_eq!(o.code, Some(1), "{o}");
    assert!(o.stderr.contains("no client certificate"), "{o}");
    let refused = cl
        .head_log_text()
        .lines()
        .any(|l| l.contains("refused request: no client certificate") && l.contains(&cl.net.ip(1)));
    assert!(refused, "head log:\n{}", cl.head_log_text());

    // With a client token, the same user logs in from host 1 and can submit from there.
    let o = cl.rudel_ok(&["token", "create", "--role", "client", "--user", "root", "--json"]);
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    let user_token = v["token"].as_str().unwrap().to_string();
    let user = cl.net.tmp.path().join("user-creds");
    let u = user.display().to_string();
    let o = cl.rudel_on_host(1, &user, &["login", "--token", &user_token, "--save-to", &u]);
    assert!(o.ok(), "{o}");
    let o = cl.rudel_on_host(1, &user, &["run", "--", "sh", "-c", "echo on $RUDEL_NODE"]);
    assert_eq!(o.code, Some(0), "{o}");
    assert!(o.stdout.contains("on host"), "{o}");
}
