//! The replicated scheduling configuration (`rudel admin config`): the queue order it sets
//! decides what runs first, bad settings are refused, and it survives a restart.
mod common;

use std::time::Duration;

use common::{eventually, skewed_clock, Cluster, Opts};
use serde_json::Value;

fn config(c: &Cluster) -> Value {
    let o = c.rudel_ok(&["admin", "config", "show", "--json"]);
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("config show --json: {e}: {o}"))
}

/// Runs a blocker on the single cpu, queues a low-priority job then a high-priority one,
/// releases the blocker and returns the order in which the two ran (from the tasks).
fn run_order(c: &Cluster, round: &str) -> String {
    let go = c.work.join(format!("go-{round}"));
    let blocker = c.submit(&[
        "--",
        "sh",
        "-c",
        &format!("while [ ! -e {} ]; do sleep 0.05; done", go.display()),
    ]);
    c.wait_state(blocker, |v| v["state"] == "running", Duration::from_secs(20));
    let log = c.work.join(format!("order-{round}"));
    let low = c.submit(&[
        "--priority",
        "0",
        "--",
        "sh",
        "-c",
        &format!("echo low >> {}", log.display()),
    ]);
    let high = c.submit(&[
        "--priority",
        "10",
        "--",
        "sh",
        "-c",
        &format!("echo high >> {}", log.display()),
    ]);
    std::fs::write(&go, "").unwrap();
    for id in [blocker, low, high] {
        let v = c.wait_finished(id, Duration::from_secs(30));
        assert_eq!(v["state"], "completed", "{v:#}");
    }
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn the_configured_queue_order_decides_what_runs_first_and_survives_a_restart() {
    let mut c = Cluster::up(Opts::default().cpus(1));
    let v = config(&c);
    assert_eq!(v["settings"]["order"], "priority", "{v}");
    assert_eq!(v["settings"]["version"], "1", "{v}");
    // No queueing on the agent, so the head's queue alone decides the order.
    c.rudel_ok(&["admin", "config", "set", "queue_depth=0"]);
    assert_eq!(run_order(&c, "priority"), "high\nlow\n", "priority order");

    c.rudel_ok(&["admin", "config", "set", "order=fifo"]);
    assert_eq!(run_order(&c, "fifo"), "low\nhigh\n", "fifo order");

    // Bad settings change nothing and say what is allowed.
    let bad = c.rudel(&["admin", "config", "set", "order=fifo", "order=lottery"]);
    assert_eq!(bad.code, Some(2), "{bad}");
    assert!(bad.stderr.contains("priority, fifo, sjf"), "{bad}");
    let newer = c.rudel(&["admin", "config", "set", "version=99"]);
    assert_eq!(newer.code, Some(2), "{newer}");
    assert!(newer.stderr.contains("upgrade every head"), "{newer}");
    // round_robin needs the turns version 2 numbers at submit.
    let early = c.rudel(&["admin", "config", "set", "order=round_robin"]);
    assert_eq!(early.code, Some(2), "{early}");
    assert!(early.stderr.contains("version=2"), "{early}");
    c.rudel_ok(&["admin", "config", "set", "version=2", "order=round_robin"]);
    c.rudel_ok(&["admin", "config", "set", "order=fifo"]);

    // A file, all or nothing.
    let file = c.work.join("sched.toml");
    std::fs::write(&file, "order = \"sjf\"\nshort_queue_depth = 3\n").unwrap();
    c.rudel_ok(&["admin", "config", "apply", &file.display().to_string()]);
    std::fs::write(&file, "order = \"fifo\"\nnope = 1\n").unwrap();
    let bad = c.rudel(&["admin", "config", "apply", &file.display().to_string()]);
    assert_eq!(bad.code, Some(2), "{bad}");
    assert!(bad.stderr.contains("unknown scheduling setting"), "{bad}");

    let port = c.port();
    let code = c.daemon("up").stop(libc::SIGTERM, Duration::from_secs(15));
    assert_eq!(code, Some(0), "{}", c.logs_tail());
    c.start_up(Some(port));
    let v = config(&c);
    assert_eq!(v["settings"]["order"], "sjf", "{v}");
    assert_eq!(v["settings"]["queue_depth"], "0", "{v}");
    assert_eq!(v["settings"]["short_queue_depth"], "3", "{v}");
}

/// `max_starts` (scheduling version 8) caps what one pass places; the leader then goes on
/// with a `Tick` at once. Long tasks send nothing while they run, so only those Ticks can
/// start the tasks beyond the cap: all four run together well before any ends.
#[test]
fn a_cap_on_starts_per_pass_goes_on_without_other_entries() {
    let c = Cluster::up(Opts::default().cpus(4));
    let o = c.rudel(&["admin", "config", "set", "max_starts=1"]);
    assert!(
        !o.ok() && o.stderr.contains("scheduling version 8 or later first"),
        "{o}"
    );
    c.rudel_ok(&["admin", "config", "set", "version=8", "max_starts=1", "queue_depth=0"]);
    let marks = c.work.join("started");
    std::fs::create_dir_all(&marks).unwrap();
    let script = format!("touch {}/$RUDEL_ARRAY_INDEX; sleep 60", marks.display());
    let job = c.submit(&["--array", "0-3", "--", "sh", "-c", &script]);
    let t0 = std::time::Instant::now();
    let started = || std::fs::read_dir(&marks).map(|d| d.count()).unwrap_or(0);
    while started() < 4 && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        started(),
        4,
        "tasks started (by their own marks) with one start per pass"
    );
    let v = c.show_json(job);
    assert_eq!(v["counts"]["running"], 4, "{v}");
    c.rudel_ok(&["cancel", &job.to_string()]);
}

/// Scheduling version 10: an ordinary entry runs a short pass that stops at the first job
/// that cannot start, and the leader proposes a `Tick` for the full pass once one is due
/// (`pass.full_interval_ms` after the last). Here only that Tick can start the short job:
/// it fits beside the running one only by backfill, and nothing else applies an entry
/// while the tasks run.
#[test]
fn the_leaders_full_pass_starts_what_an_ordinary_entry_left_behind_the_blocked_job() {
    let c = Cluster::up(Opts::default().cpus(2));
    let o = c.rudel(&["admin", "config", "set", "pass.full_interval_ms=2000"]);
    assert!(
        !o.ok() && o.stderr.contains("scheduling version 10 or later first"),
        "{o}"
    );
    // A file, with the dotted `pass.*` names as a table.
    let file = c.work.join("passes.toml");
    let text = "version = 10\nbackfill = \"easy\"\nqueue_depth = 0\nshort_queue_depth = 0\n\
                [pass]\nfull_interval_ms = 10000\n";
    std::fs::write(&file, text).unwrap();
    c.rudel_ok(&["admin", "config", "apply", &file.display().to_string()]);
    let v = config(&c);
    assert_eq!(v["settings"]["pass.full_interval_ms"], "10000", "{v}");
    assert_eq!(v["settings"]["pass.ordinary_starts"], "32", "{v}");
    let marks = c.work.join("started");
    std::fs::create_dir_all(&marks).unwrap();
    let task = |name: &str| format!("touch {}/{name}; sleep 60", marks.display());
    let holder = c.submit(&["-t", "10", "--", "sh", "-c", &task("holder")]);
    c.wait_state(holder, |v| v["state"] == "running", Duration::from_secs(20));
    let big = c.submit(&["--cpus", "2", "-t", "10", "--", "sh", "-c", &task("big")]);
    let short = c.submit(&["-t", "1", "--", "sh", "-c", &task("short")]);
    // Its own submit's pass stopped at `big`: the full pass is at most 10 s away.
    assert_eq!(c.show_json(short)["state"], "pending");
    let v = c.wait_state(short, |v| v["state"] == "running", Duration::from_secs(25));
    // Placed is not yet started: the agent spawns the task after the head placed it.
    let ran = eventually(Duration::from_secs(20), || marks.join("short").exists());
    assert!(ran, "the task ran: {v}");
    let b = c.show_json(big);
    assert_eq!(b["state"], "pending", "{b}");
    let holder_start = c.show_json(holder)["start_ms"].as_u64().unwrap();
    assert_eq!(
        b["expected_start_ms"].as_u64(),
        Some(holder_start + 600_000),
        "the full pass reserved the node for it: {b}"
    );
    c.rudel_ok(&["cancel", &holder.to_string(), &big.to_string(), &short.to_string()]);
}

/// Log time never goes back, so after a head whose clock ran ahead the log stays ahead of
/// the next leader's clock, here by 10 minutes. A full pass falls due
/// `pass.full_interval_ms` of log time after the last one: the leader must propose it
/// then, not wait until its own clock reaches the log's. Every start here waits for a full
/// pass: first in the queue is a job waiting for a license a running job holds, and an
/// ordinary pass looks at one job only.
#[test]
fn a_full_pass_falls_due_though_the_log_is_ahead_of_the_leaders_clock() {
    let mut c = Cluster::up(Opts {
        env: skewed_clock(600),
        ..Opts::default().cpus(2)
    });
    c.rudel_ok(&[
        "admin",
        "config",
        "set",
        "version=10",
        "pass.ordinary_jobs=1",
        "pass.full_interval_ms=300",
        "licenses=lic:1",
    ]);
    let marks = c.work.join("started");
    std::fs::create_dir_all(&marks).unwrap();
    let task = |name: &str, secs: u32| format!("touch {}/{name}; sleep {secs}", marks.display());
    let licensed = ["--requeue", "-L", "lic:1", "--priority"];
    let holder = c.submit(&[&licensed[..], &["20", "--", "sh", "-c", &task("holder", 1000)]].concat());
    c.wait_state(holder, |v| v["state"] == "running", Duration::from_secs(20));
    let blocked = c.submit(&[&licensed[..], &["10", "--", "sh", "-c", &task("blocked", 1000)]].concat());
    // The head and its clock 10 minutes ahead stop; it comes back with a true clock.
    let port = c.port();
    c.daemon("up").stop(libc::SIGTERM, Duration::from_secs(15));
    c.opts.env.clear();
    c.start_up(Some(port));
    c.wait_state(holder, |v| v["state"] == "running", Duration::from_secs(30));
    let short = c.submit(&["--", "sh", "-c", &task("short", 0)]);
    let ran = eventually(Duration::from_secs(20), || marks.join("short").exists());
    assert!(
        ran,
        "the job behind the blocked one did not start within 20 s: {}",
        c.show_json(short)
    );
    assert_eq!(c.show_json(blocked)["state"], "pending", "the license is still held");
    c.rudel_ok(&["cancel", &holder.to_string(), &blocked.to_string()]);
}
