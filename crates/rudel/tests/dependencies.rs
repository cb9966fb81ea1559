//! Dependencies, holds and begin times as a user sees them: jobs wait with Slurm's reason,
//! start only once their condition holds (the tasks record when they ran), and the ones
//! whose condition can never hold wait or are cancelled as asked.
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Cluster, Opts};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn reason(c: &Cluster, id: u64) -> String {
    c.show_json(id)["reason"].as_str().unwrap_or_default().to_string()
}

/// A command that appends `name` to the work dir's `order` file.
fn record(c: &Cluster, name: &str) -> Vec<String> {
    let log = c.work.join("order");
    vec![
        "--".into(),
        "sh".into(),
        "-c".into(),
        format!("echo {name} >> {}", log.display()),
    ]
}

fn submit_with(c: &Cluster, opts: &[&str], cmd: Vec<String>) -> u64 {
    let mut args: Vec<&str> = opts.to_vec();
    args.extend(cmd.iter().map(String::as_str));
    c.submit(&args)
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[test]
fn jobs_start_only_once_their_dependency_holds() {
    let c = Cluster::up(Opts::default().cpus(4));
    let go = c.work.join("go");
    let a = c.submit(&[
        "--",
        "sh",
        "-c",
        &format!(
            "while [ ! -e {} ]; do sleep 0.05; done; echo a >> {}",
            go.display(),
            c.work.join("order").display()
        ),
    ]);
    c.wait_state(a, |v| v["state"] == "running", T);
    let ok = submit_with(&c, &["--dependency", &format!("afterok:{a}")], record(&c, "ok"));
    let any = submit_with(&c, &["-d", &format!("afterany:{a}")], record(&c, "any"));
    let notok = submit_with(&c, &["--dependency", &format!("afternotok:{a}")], record(&c, "notok"));
    let started = submit_with(&c, &["--dependency", &format!("after:{a}")], record(&c, "started"));
    // `after` holds once a started: it runs while a still runs.
    let v = c.wait_finished(started, T);
    assert_eq!(v["state"], "completed", "{v:#}");
    for id in [ok, any, notok] {
        let r = reason(&c, id);
        assert!(r.starts_with("Dependency: waiting for after"), "job {id}: {r}");
        assert_eq!(
            c.show_json(id)["dependency"].as_str().map(|d| d.starts_with("after")),
            Some(true)
        );
    }
    // Nothing but `started` ran while a was running (ground truth: the tasks' own log).
    assert_eq!(c.read_work("order"), "started\n");
    std::fs::write(&go, "").unwrap();
    for id in [a, ok, any] {
        let v = c.wait_finished(id, T);
        assert_eq!(v["state"], "completed", "{v:#}");
    }
    let order = c.read_work("order");
    let lines: Vec<&str> = order.lines().collect();
    assert_eq!(lines[..2], ["started", "a"], "{order}");
    assert!(
        lines.contains(&"ok") && lines.contains(&"any") && !lines.contains(&"notok"),
        "{order}"
    );
    // afternotok on a success can never hold: pending, Slurm's reason, until cancelled.
    let r = reason(&c, notok);
    assert!(r.starts_with("DependencyNeverSatisfied"), "{r}");
    assert_eq!(c.show_json(notok)["state"], "pending");
    c.rudel_ok(&["cancel", &notok.to_string()]);
    assert_eq!(c.wait_finished(notok, T)["state"], "cancelled");
}

#[test]
fn invalid_dependencies_are_refused_or_cancel_as_asked() {
    let c = Cluster::up(Opts::default().cpus(2));
    // Unknown ids are refused at submit (no cycle can ever form); so are typos.
    for (dep, why) in [
        ("afterok:999", "unknown job 999"),
        ("afterok", "names no job id"),
        ("afterwards:1", "unknown dependency type"),
    ] {
        let o = c.rudel(&["submit", "--dependency", dep, "--", "true"]);
        assert_eq!(o.code, Some(2), "{dep}: {o}");
        assert!(o.stderr.contains(why), "{dep}: {o}");
    }
    let fail = c.submit(&["--", "sh", "-c", "exit 3"]);
    let killed = submit_with(
        &c,
        &["--dependency", &format!("afterok:{fail}"), "--kill-on-invalid-dep=yes"],
        record(&c, "killed"),
    );
    let on_fail = submit_with(
        &c,
        &["--dependency", &format!("afternotok:{fail}")],
        record(&c, "on_fail"),
    );
    assert_eq!(c.wait_finished(fail, T)["state"], "failed");
    let v = c.wait_finished(killed, T);
    assert_eq!(v["state"], "cancelled", "{v:#}");
    assert_eq!(c.wait_finished(on_fail, T)["state"], "completed");
    assert_eq!(c.read_work("order"), "on_fail\n");
}

#[test]
fn singleton_runs_one_job_of_a_name_at_a_time() {
    let c = Cluster::up(Opts::default().cpus(4));
    let log = c.work.join("singleton");
    // Each job records its start and end; two of the same name must never overlap.
    let body = format!(
        "echo start $RUDEL_JOB_ID >> {0}; sleep 0.3; echo end $RUDEL_JOB_ID >> {0}",
        log.display()
    );
    let ids: Vec<u64> = (0..3)
        .map(|_| c.submit(&["-J", "step", "--dependency", "singleton", "--", "sh", "-c", &body]))
        .collect();
    for &id in &ids {
        assert_eq!(c.wait_finished(id, T)["state"], "completed");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let expected: Vec<String> = ids
        .iter()
        .flat_map(|id| [format!("start {id}"), format!("end {id}")])
        .collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), expected, "one at a time, in order");
}

#[test]
fn held_jobs_wait_until_released() {
    let c = Cluster::up(Opts::default().cpus(2));
    let held = submit_with(&c, &["--hold"], record(&c, "held"));
    let r = reason(&c, held);
    assert!(r.starts_with("JobHeldUser"), "{r}");
    assert_eq!(c.show_json(held)["held"], true);
    // A pending job can be held after submit; a finished one cannot.
    let go = c.work.join("go");
    let blocker = c.submit(&[
        "-c",
        "2",
        "--",
        "sh",
        "-c",
        &format!("while [ ! -e {} ]; do sleep 0.05; done", go.display()),
    ]);
    c.wait_state(blocker, |v| v["state"] == "running", T);
    let later = submit_with(&c, &[], record(&c, "later"));
    let o = c.rudel_ok(&["hold", &later.to_string()]);
    assert!(o.stdout.contains(&format!("Held job {later}")), "{o}");
    let running = c.rudel(&["hold", &blocker.to_string()]);
    assert_eq!(running.code, Some(1), "nothing pending to hold: {running}");
    assert!(running.stderr.contains("no pending task"), "{running}");
    let unknown = c.rudel(&["release", "999"]);
    assert_ne!(unknown.code, Some(0), "{unknown}");
    std::fs::write(&go, "").unwrap();
    c.wait_finished(blocker, T);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.read_work("order"), "", "held jobs did not start on free cpus");
    for id in [held, later] {
        assert_eq!(c.show_json(id)["state"], "pending");
    }
    let o = c.rudel_ok(&["release", "--json", &held.to_string(), &later.to_string()]);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["changed"].as_array().map(Vec::len), Some(2), "{v}");
    for id in [held, later] {
        assert_eq!(c.wait_finished(id, T)["state"], "completed");
    }
}

#[test]
fn begin_time_delays_the_start() {
    let c = Cluster::up(Opts::default().cpus(1));
    let stamp = c.work.join("started");
    let submitted = epoch_ms();
    let id = c.submit(&[
        "--begin",
        "now+2",
        "--",
        "sh",
        "-c",
        &format!("date +%s%3N > {}", stamp.display()),
    ]);
    let r = reason(&c, id);
    assert!(r.starts_with("BeginTime"), "{r}");
    assert_eq!(c.wait_finished(id, T)["state"], "completed");
    let started: u64 = std::fs::read_to_string(&stamp).unwrap().trim().parse().unwrap();
    assert!(
        started >= submitted + 2_000,
        "started {} ms after submit",
        started - submitted
    );
    assert!(
        started < submitted + 6_000,
        "late by more than the tick: {} ms",
        started - submitted
    );
    let bad = c.rudel(&["submit", "--begin", "tomorrowish", "--", "true"]);
    assert_eq!(bad.code, Some(2), "{bad}");
    assert!(bad.stderr.contains("invalid --begin time"), "{bad}");
}

#[test]
fn sbatch_directives_carry_dependency_and_hold() {
    let c = Cluster::up(Opts::default().cpus(2));
    let first = c.submit(&["--", "true"]);
    let script = c.work.join("step2.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n#SBATCH --dependency=afterok:{first}\n#SBATCH -H\necho step2 >> {}\n",
            c.work.join("order").display()
        ),
    )
    .unwrap();
    let id = c.submit(&[&script.display().to_string()]);
    c.wait_finished(first, T);
    let r = reason(&c, id);
    assert!(r.starts_with("JobHeldUser"), "held even once the dependency holds: {r}");
    c.rudel_ok(&["release", &id.to_string()]);
    assert_eq!(c.wait_finished(id, T)["state"], "completed");
    assert_eq!(c.read_work("order"), "step2\n");
}

/// 20 chains of 10 jobs (afterok on the previous link): every chain runs in order.
#[test]
fn a_dag_of_chains_runs_in_order() {
    let c = Cluster::up(Opts::default().cpus(4));
    let (chains, links) = (20, 10);
    let mut last = Vec::new();
    for link in 0..links {
        for chain in 0..chains {
            let log = c.work.join(format!("chain-{chain}"));
            let cmd = format!("echo {link} >> {}", log.display());
            let id = if link == 0 {
                c.submit(&["--", "sh", "-c", &cmd])
            } else {
                let dep = format!("afterok:{}", last[chain]);
                c.submit(&["-d", &dep, "--", "sh", "-c", &cmd])
            };
            if link == 0 {
                last.push(id);
            } else {
                last[chain] = id;
            }
        }
    }
    for &id in &last {
        assert_eq!(c.wait_finished(id, Duration::from_secs(120))["state"], "completed");
    }
    let expected: String = (0..links).map(|l| format!("{l}\n")).collect();
    for chain in 0..chains {
        assert_eq!(c.read_work(&format!("chain-{chain}")), expected, "chain {chain}");
    }
}

#[test]
fn update_changes_pending_jobs_only() {
    let c = Cluster::up(Opts::default().cpus(1));
    c.rudel_ok(&["admin", "config", "set", "queue_depth=0"]);
    let go = c.work.join("go");
    let blocker = c.submit(&[
        "--",
        "sh",
        "-c",
        &format!("while [ ! -e {} ]; do sleep 0.05; done", go.display()),
    ]);
    c.wait_state(blocker, |v| v["state"] == "running", T);
    let low = submit_with(&c, &[], record(&c, "low"));
    let high = submit_with(&c, &[], record(&c, "high"));
    let o = c.rudel_ok(&[
        "update",
        &high.to_string(),
        "--priority",
        "10",
        "--time",
        "5m",
        "-J",
        "renamed",
    ]);
    assert!(o.stdout.contains(&format!("Updated job {high}")), "{o}");
    let v = c.show_json(high);
    assert_eq!(
        (v["priority"].as_i64(), v["time_limit_ms"].as_u64()),
        (Some(10), Some(300_000)),
        "{v:#}"
    );
    assert_eq!(v["name"], "renamed");
    let started = c.rudel(&["update", &blocker.to_string(), "--priority", "5"]);
    assert_eq!(started.code, Some(1), "{started}");
    assert!(started.stderr.contains("already started"), "{started}");
    let nothing = c.rudel(&["update", &low.to_string()]);
    assert_eq!(nothing.code, Some(2), "{nothing}");
    std::fs::write(&go, "").unwrap();
    for id in [low, high] {
        assert_eq!(c.wait_finished(id, T)["state"], "completed");
    }
    assert_eq!(c.read_work("order"), "high\nlow\n", "the raised priority ran first");
}

/// `aftercorr`: task i of B starts once task i of A completed, whatever the other tasks
/// of A do; the task whose counterpart failed waits with `DependencyNeverSatisfied`.
/// A's tasks are released one by one by the test (files `go1`..`go3`), so the order is
/// the test's, and each B task records what it saw of A when it started.
#[test]
fn aftercorr_pairs_array_tasks_one_by_one() {
    let c = Cluster::up(Opts::default().cpus(6));
    let w = c.work.display().to_string();
    let a_script = format!(
        "i=$RUDEL_ARRAY_INDEX; while [ ! -e {w}/go$i ]; do sleep 0.05; done; \
         echo a$i >> {w}/order; [ $i != 2 ]"
    );
    let a = c.submit(&["--array", "1-3", "--", "sh", "-c", &a_script]);
    let b_script = format!("echo b$RUDEL_ARRAY_INDEX >> {w}/order");
    let b = c.submit(&[
        "--array",
        "1-3",
        "--dependency",
        &format!("aftercorr:{a}"),
        "--",
        "sh",
        "-c",
        &b_script,
    ]);
    let order = || std::fs::read_to_string(c.work.join("order")).unwrap_or_default();
    let wait_for = |line: &str| {
        let start = std::time::Instant::now();
        while !order().lines().any(|l| l == line) {
            assert!(start.elapsed() < T, "{line} never ran; order: {:?}", order());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(order(), "", "no B task starts before its counterpart");
    assert!(reason(&c, b).starts_with("Dependency"), "{}", reason(&c, b));

    std::fs::write(c.work.join("go3"), "").unwrap();
    wait_for("b3");
    assert_eq!(order(), "a3\nb3\n", "b3 runs while a1 and a2 still run");
    std::fs::write(c.work.join("go2"), "").unwrap();
    std::fs::write(c.work.join("go1"), "").unwrap();
    wait_for("b1");
    let a_done = c.wait_finished(a, T);
    assert_eq!(a_done["state"], "failed", "{a_done}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!order().contains("b2"), "b2's counterpart failed: {:?}", order());
    let v = c.show_json(b);
    assert_eq!(v["counts"], serde_json::json!({"completed": 2, "pending": 1}), "{v}");
    assert!(
        reason(&c, b).starts_with("DependencyNeverSatisfied"),
        "{}",
        reason(&c, b)
    );
    c.rudel_ok(&["cancel", &format!("{b}_2")]);
    let v = c.wait_finished(b, T);
    assert_eq!(v["state"], "cancelled", "{v}");
}
