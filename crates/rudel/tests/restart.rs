//! Durability: the head killed with SIGKILL and restarted while tasks run, `rudel up`
//! restarted, and the data-directory lock.
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{count, Cluster, Opts};

#[test]
fn head_kill9_and_restart_while_tasks_run() {
    let mut c = Cluster::head_only(Opts::default());
    c.start_agent();

    let body = "echo start-$RUDEL_ARRAY_INDEX >> starts.log; sleep 3; echo done-$RUDEL_ARRAY_INDEX";
    let array = c.submit(&["--array", "1-6", "--", "sh", "-c", body]);
    let quick: Vec<u64> = (0..3)
        .map(|k| {
            c.submit(&[
                "--",
                "sh",
                "-c",
                &format!("echo quick-{k} >> quick.log; echo quick-{k}"),
            ])
        })
        .collect();
    let acked = c.jobs_all().len();
    assert_eq!(acked, 4);

    c.wait_state(array, |v| count(v, "running") >= 1, Duration::from_secs(20));
    let port = c.port();
    c.daemon("head").kill9();
    // While the head is away, the running tasks (3 s each) finish: their results wait in
    // the agent's journal.
    std::thread::sleep(Duration::from_millis(3500));
    let t0 = Instant::now();
    c.start_head(Some(port));
    eprintln!("head back after {:?}", t0.elapsed());

    let mut ids: Vec<String> = vec![array.to_string()];
    ids.extend(quick.iter().map(u64::to_string));
    let mut args: Vec<&str> = vec!["wait", "--timeout", "90s"];
    args.extend(ids.iter().map(String::as_str));
    let w = c.rudel(&args);
    assert_eq!(
        w.code,
        Some(0),
        "every job acknowledged before the kill must complete: {w}\n{}",
        c.logs_tail()
    );

    let jobs = c.jobs_all();
    let listed: Vec<u64> = jobs.iter().filter_map(|j| j["id"].as_u64()).collect();
    for id in std::iter::once(array).chain(quick.iter().copied()) {
        assert!(
            listed.contains(&id),
            "job {id} lost across the head restart: {listed:?}"
        );
    }

    let v = c.show_json(array);
    assert_eq!(count(&v, "completed"), 6, "{v:#}");
    for t in v["task_details"].as_array().unwrap() {
        assert_eq!(t["attempt"], 1, "task was rerun: {t}");
    }
    for i in 1..=6 {
        let out = c.read_work(&format!("rudel-{array}_{i}.out"));
        assert_eq!(out, format!("done-{i}\n"), "output of task {i}");
    }
    // Each task started exactly once.
    let mut starts: BTreeMap<String, usize> = BTreeMap::new();
    for l in c.read_work("starts.log").lines() {
        *starts.entry(l.to_string()).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = (1..=6).map(|i| (format!("start-{i}"), 1)).collect();
    assert_eq!(starts, expected, "array tasks must run exactly once");
    let mut q: Vec<String> = c.read_work("quick.log").lines().map(String::from).collect();
    q.sort();
    assert_eq!(
        q,
        vec!["quick-0", "quick-1", "quick-2"],
        "quick jobs must run exactly once"
    );

    // New ids continue after the old ones.
    let next = c.submit(&["--", "true"]);
    assert!(next > *quick.iter().max().unwrap(), "id {next} reused after restart");
}

#[test]
fn up_restart_keeps_acknowledged_jobs() {
    let mut c = Cluster::up(Opts::default());
    let ids: Vec<u64> = (0..3)
        .map(|k| c.submit(&["--name", &format!("keep-{k}"), "--", "echo", "kept"]))
        .collect();
    let mut args = vec!["wait".to_string(), "--timeout".into(), "30s".into()];
    args.extend(ids.iter().map(u64::to_string));
    let w = c.rudel(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(w.code, Some(0), "{w}");
    let before = c.jobs_all();
    // A task still running when `rudel up` stops: the agent must take it down with it.
    let m = common::marker(303);
    let running = c.submit(&["--", "sh", "-c", &format!("sleep {m}")]);
    c.wait_state(running, |v| v["state"] == "running", Duration::from_secs(20));
    assert!(
        common::eventually(Duration::from_secs(10), || !common::procs_matching(&m).is_empty()),
        "the task never started"
    );

    let port = c.port();
    let code = c.daemon("up").stop(libc::SIGTERM, Duration::from_secs(15));
    assert_eq!(
        code,
        Some(0),
        "rudel up must shut down cleanly on SIGTERM\n{}",
        c.logs_tail()
    );
    let left = common::procs_matching(&m);
    assert!(left.is_empty(), "task processes outlived `rudel up`: {left:?}");
    c.start_up(Some(port));

    let all = c.jobs_all();
    assert!(
        all.iter().any(|j| j["id"] == running),
        "the job running at shutdown is gone: {all:#?}"
    );
    let after: Vec<serde_json::Value> = all.into_iter().filter(|j| j["id"] != running).collect();
    let summary = |jobs: &[serde_json::Value]| -> Vec<(u64, String, String)> {
        jobs.iter()
            .map(|j| {
                (
                    j["id"].as_u64().unwrap(),
                    j["name"].as_str().unwrap().to_string(),
                    j["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(summary(&after), summary(&before), "jobs --all changed across a restart");
    assert_eq!(after.len(), 3);
    for (k, id) in ids.iter().enumerate() {
        let v = c.show_json(*id);
        assert_eq!(v["name"], format!("keep-{k}"));
        assert_eq!(v["state"], "completed");
    }
    let next = c.submit(&["--", "echo", "after"]);
    assert!(next > *ids.iter().max().unwrap(), "id {next} not above {ids:?}");
    let w = c.rudel(&["wait", &next.to_string(), "--timeout", "30s"]);
    assert_eq!(w.code, Some(0), "{w}");
}

#[test]
fn second_up_on_same_data_dir_is_refused() {
    let c = Cluster::up(Opts::default());
    let other = common::free_port();
    let data = c.data.display().to_string();
    let listen = format!("127.0.0.1:{other}");
    let o = c.rudel_in_bounded(
        &c.work,
        &["up", "--data", &data, "--listen", &listen, "--cpus", "1"],
        Duration::from_secs(20),
    );
    assert!(
        !o.timed_out,
        "a second `rudel up` on the same data directory kept running: {o}"
    );
    assert!(!o.ok() && o.code.is_some(), "second `rudel up` must exit non-zero: {o}");
    assert!(
        o.stderr.contains("in use"),
        "stderr must say the data directory is in use: {o}"
    );
    assert!(o.stderr.contains(&data), "stderr should name the directory: {o}");

    // The first one keeps working.
    let id = c.submit(&["--", "echo", "first"]);
    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "30s"]);
    assert_eq!(w.code, Some(0), "{w}");
    assert!(c.node_idle());
}

#[test]
fn submit_while_the_head_restarts_succeeds() {
    let mut c = Cluster::up(Opts::default());
    let port = c.port();
    c.daemon("up").kill9();
    // The submit starts while nothing listens; the head is back about a second later.
    let cmd = c.command_in(&c.work, &["submit", "--json", "--", "echo", "during-restart"]);
    let submitter = std::thread::spawn(move || common::run_bounded(cmd, Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(1000));
    let t0 = Instant::now();
    c.start_up(Some(port));
    eprintln!("head back after {:?}", t0.elapsed());
    let o = submitter.join().unwrap();
    assert!(
        o.ok(),
        "a submit during a 1 s head restart must succeed: {o}\n{}",
        c.logs_tail()
    );
    eprintln!("submit took {:?}", o.elapsed);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    let id = v["id"].as_u64().unwrap();
    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "30s"]);
    assert_eq!(w.code, Some(0), "{w}");
    assert_eq!(c.jobs_all().len(), 1, "exactly one job");
}
