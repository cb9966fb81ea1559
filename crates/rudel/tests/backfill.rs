//! EASY backfill on a real cluster (`backfill=easy`, scheduling version 5): a job that
//! does not fit gets an expected start from the running tasks' time limits; a short job
//! behind it starts at once on the free cpu, a long one and one without a limit wait.
//! Ground truth is what the tasks record themselves (their own start and end times).
mod common;

use std::time::Duration;

use common::{run_bounded, Cluster, Opts, CLI_TIMEOUT};

const WAIT: Duration = Duration::from_secs(60);

/// Seconds since the epoch written by a task (`date +%s.%N`).
fn stamp(c: &Cluster, name: &str) -> f64 {
    let t = c.read_work(name);
    t.trim().parse().unwrap_or_else(|e| panic!("{name}: {e}: {t:?}"))
}

/// A command that records its start, sleeps, then records its end.
fn recorded(name: &str, secs: u32) -> String {
    format!("date +%s.%N > {name}.start; sleep {secs}; date +%s.%N > {name}.end")
}

/// `squeue --start` through the link `rudel slurm install` makes.
fn squeue_start(c: &Cluster) -> String {
    let bin = c.tmp.path().join("bin");
    c.rudel_ok(&["slurm", "install", &bin.display().to_string()]);
    let mut cmd = std::process::Command::new(bin.join("squeue"));
    cmd.arg("--start")
        .current_dir(&c.work)
        .env("RUDEL_HEAD", &c.addr)
        .env("RUDEL_CREDENTIALS", c.admin_credentials())
        .env_remove("SQUEUE_FORMAT");
    let o = run_bounded(cmd, CLI_TIMEOUT);
    assert_eq!(o.code, Some(0), "{o}");
    o.stdout
}

#[test]
fn a_short_job_backfills_while_a_long_one_waits_for_the_reserved_job() {
    let c = Cluster::up(Opts::default().cpus(2));
    // No successor queueing: tasks wait in the queue, where backfill decides.
    c.rudel_ok(&[
        "admin",
        "config",
        "set",
        "version=5",
        "backfill=easy",
        "queue_depth=0",
        "short_queue_depth=0",
    ]);
    let holder = c.submit(&["-t", "1", "--", "sh", "-c", &recorded("holder", 8)]);
    c.wait_state(holder, |v| v["state"] == "running", WAIT);
    let big = c.submit(&["--cpus", "2", "-t", "1", "--", "sh", "-c", &recorded("big", 0)]);
    let long = c.submit(&["-t", "5", "--", "sh", "-c", &recorded("long", 0)]);
    let unlimited = c.submit(&["--", "sh", "-c", &recorded("unlimited", 0)]);
    let short = c.submit(&["-t", "0:20", "--", "sh", "-c", &recorded("short", 1)]);

    // The reserved job's expected start is the holder's start plus its 1 minute limit.
    let v = c.show_json(big);
    assert_eq!(v["state"], "pending", "{v}");
    let expected = v["expected_start_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no expected start: {v}"));
    assert_eq!(v["sched_nodes"], serde_json::json!(["n1"]), "{v}");
    let holder_start = c.show_json(holder)["start_ms"].as_u64().unwrap();
    assert_eq!(expected, holder_start + 60_000, "{v}");
    let text = c.rudel_ok(&["show", &big.to_string()]).stdout;
    assert!(
        text.contains("ExpectedStart=") && text.contains("SchedNodes=n1"),
        "{text}"
    );

    // squeue --start: Slurm's columns, the reserved job with a time, the others N/A.
    let sq = squeue_start(&c);
    let header = sq.lines().next().unwrap_or_default();
    for col in [
        "JOBID",
        "PARTITION",
        "NAME",
        "USER",
        "ST",
        "START_TIME",
        "NODES",
        "SCHEDNODES",
        "NODELIST(REASON)",
    ] {
        assert!(header.contains(col), "{sq}");
    }
    let line_of = |id: u64| {
        sq.lines()
            .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
            .unwrap_or_else(|| panic!("no line for {id}:\n{sq}"))
            .to_string()
    };
    let big_line = line_of(big);
    assert!(!big_line.contains("N/A") && big_line.contains(" n1 "), "{sq}");
    assert!(line_of(long).contains("N/A"), "{sq}");
    let listed = |id: u64| sq.lines().any(|l| l.split_whitespace().next() == Some(&id.to_string()));
    assert!(!listed(holder) && !listed(short), "running jobs are not listed: {sq}");

    // explain names the reservation and why the long job cannot backfill.
    let e = c.rudel_ok(&["explain", &long.to_string()]).stdout;
    assert!(e.contains(&format!("reserved: for job {big}, expected start ")), "{e}");
    assert!(
        e.contains(&format!("its time limit 05:00 ends after job {big}'s expected start")),
        "{e}"
    );
    let e = c.rudel_ok(&["explain", &unlimited.to_string()]).stdout;
    assert!(e.contains("it has no time limit, so it cannot backfill"), "{e}");

    // Ground truth from the tasks: the short job ran while the holder ran; the reserved
    // job started before the long and the unlimited ones, after the holder ended.
    for id in [holder, big, long, unlimited, short] {
        let v = c.wait_finished(id, WAIT);
        assert_eq!(v["state"], "completed", "{v}");
    }
    let (h0, h1) = (stamp(&c, "holder.start"), stamp(&c, "holder.end"));
    let s0 = stamp(&c, "short.start");
    assert!(h0 <= s0 && s0 < h1, "short {s0} ran while the holder ran {h0}..{h1}");
    let b0 = stamp(&c, "big.start");
    assert!(b0 >= h1, "the 2-cpu job {b0} waited for the holder's end {h1}");
    for other in ["long", "unlimited"] {
        let t = stamp(&c, &format!("{other}.start"));
        assert!(t >= b0, "{other} {t} did not pass the reserved job {b0}");
    }
}

#[test]
fn backfill_needs_scheduling_version_5_and_conservative_6() {
    let c = Cluster::up(Opts::default());
    let o = c.rudel(&["admin", "config", "set", "backfill=easy"]);
    assert!(!o.ok(), "{o}");
    assert!(o.stderr.contains("scheduling version 5 or later first"), "{o}");
    let o = c.rudel(&["admin", "config", "set", "version=5", "backfill=conservative"]);
    assert!(
        !o.ok() && o.stderr.contains("scheduling version 6 or later first"),
        "{o}"
    );
    c.rudel_ok(&["admin", "config", "set", "version=6", "backfill=conservative"]);
}

/// Conservative backfill (version 6): the second blocked job gets a reservation too, so a
/// long job that EASY would start in the first one's spare cpu (delaying the second)
/// waits, while a short one still backfills.
#[test]
fn conservative_backfill_keeps_the_second_reserved_job_from_being_delayed() {
    let c = Cluster::up(Opts::default().cpus(3));
    c.rudel_ok(&[
        "admin",
        "config",
        "set",
        "version=6",
        "backfill=conservative",
        "queue_depth=0",
        "short_queue_depth=0",
    ]);
    let holder = c.submit(&["--cpus", "2", "-t", "1", "--", "sh", "-c", &recorded("holder", 6)]);
    c.wait_state(holder, |v| v["state"] == "running", WAIT);
    // big: 2 cpus at the holder's limit (1 cpu spare then); wide: all 3 once big is done.
    let big = c.submit(&["--cpus", "2", "-t", "1", "--", "sh", "-c", &recorded("big", 0)]);
    let wide = c.submit(&["--cpus", "3", "-t", "1", "--", "sh", "-c", &recorded("wide", 0)]);
    // long would fit in big's spare cpu but run past wide's expected start.
    let long = c.submit(&["-t", "3", "--", "sh", "-c", &recorded("long", 0)]);
    let short = c.submit(&["-t", "0:20", "--", "sh", "-c", &recorded("short", 1)]);

    let holder_start = c.show_json(holder)["start_ms"].as_u64().unwrap();
    let v = c.show_json(wide);
    assert_eq!(v["state"], "pending", "{v}");
    assert_eq!(v["expected_start_ms"].as_u64(), Some(holder_start + 120_000), "{v}");
    assert_eq!(c.show_json(long)["state"], "pending");
    let sq = squeue_start(&c);
    let wide_line = sq
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&wide.to_string()))
        .unwrap_or_else(|| panic!("no line for {wide}:\n{sq}"));
    assert!(!wide_line.contains("N/A"), "{sq}");
    let e = c.rudel_ok(&["explain", &wide.to_string()]).stdout;
    assert!(e.contains("conservative backfill"), "{e}");

    for id in [holder, big, wide, long, short] {
        let v = c.wait_finished(id, WAIT);
        assert_eq!(v["state"], "completed", "{v}");
    }
    let (h0, h1) = (stamp(&c, "holder.start"), stamp(&c, "holder.end"));
    let s0 = stamp(&c, "short.start");
    assert!(
        h0 <= s0 && s0 < h1,
        "short {s0} backfilled while the holder ran {h0}..{h1}"
    );
    let (b0, w0, l0) = (stamp(&c, "big.start"), stamp(&c, "wide.start"), stamp(&c, "long.start"));
    assert!(
        b0 >= h1 && w0 >= b0,
        "big {b0} after the holder {h1}, wide {w0} after big"
    );
    assert!(l0 >= w0, "long {l0} did not pass the second reserved job {w0}");
}
