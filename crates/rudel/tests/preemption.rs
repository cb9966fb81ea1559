//! Preemption by partition tier on a real cluster (`preempt=requeue|cancel`, scheduling
//! version 7): one 1-cpu node in two partitions, `low` (tier 0) and `high` (tier 1). A
//! long `low` job runs; a `high` job needs the node: the low job gets SIGTERM (it traps
//! it and records it), then is requeued and runs again after the high job, or ends
//! cancelled, "preempted by job N". Ground truth is what the tasks record themselves.
mod common;

use std::time::Duration;

use common::{Cluster, Opts};

const WAIT: Duration = Duration::from_secs(30);

/// A low job: appends its run (and restart count) to `low.runs`; a first run waits for
/// SIGTERM, records it in `low.term` and exits; a rerun ends at once.
const LOW: &str = "echo \"run ${SLURM_RESTART_COUNT:-0} $(date +%s.%N)\" >> low.runs; \
    [ -n \"$SLURM_RESTART_COUNT\" ] && exit 0; \
    trap 'echo \"term $(date +%s.%N)\" >> low.term; exit 143' TERM; \
    sleep 60 & wait";

/// A low job that records SIGTERM but runs on: only the SIGKILL after the grace ends it.
const STUBBORN: &str = "echo \"run 0 $(date +%s.%N)\" >> low.runs; \
    trap 'echo \"term $(date +%s.%N)\" >> low.term' TERM; \
    while :; do sleep 0.2; done";

/// The high job records when it ran.
const HIGH: &str = "date +%s.%N > high.ran";

fn cluster(mode: &str) -> Cluster {
    // The agent's own kill grace (for cancels) is far longer than `preempt.grace_s`: a
    // preempted task must get the latter.
    let c = Cluster::up(Opts::default().cpus(1).kill_grace("20s"));
    c.rudel_ok(&[
        "admin",
        "config",
        "set",
        "version=7",
        "partition.low=default=yes",
        "partition.high=tier=1",
        &format!("preempt={mode}"),
        "preempt.grace_s=3",
        // No successor queueing: the requeued job waits in the queue, visibly.
        "queue_depth=0",
        "short_queue_depth=0",
    ]);
    let shown = c.rudel_ok(&["admin", "config", "show"]).stdout;
    assert!(shown.contains("preempt") && shown.contains(mode), "{shown}");
    c
}

/// Submits a low job and waits until its trap is set (its first line is written).
fn start_low(c: &Cluster, script: &str) -> u64 {
    let low = c.submit(&["-p", "low", "--", "sh", "-c", script]);
    c.wait_state(low, |v| v["state"] == "running", WAIT);
    common::wait_file(&c.work.join("low.runs"), WAIT);
    low
}

fn secs(line: &str) -> f64 {
    let t = line.split_whitespace().last().unwrap_or_default();
    t.parse().unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn a_requeued_low_job_gets_sigterm_yields_and_runs_again_after_the_high_one() {
    let c = cluster("requeue");
    let low = start_low(&c, LOW);
    let high = c.submit(&["-p", "high", "--", "sh", "-c", HIGH]);
    let v = c.wait_finished(high, WAIT);
    assert_eq!(v["state"], "completed", "{v}");
    let v = c.wait_finished(low, WAIT);
    assert_eq!(v["state"], "completed", "{v}");
    // SIGTERM came first (the trap ran), then the high job, then the low job's rerun as
    // a requeue (restart count 1).
    let term = c.read_work("low.term");
    let runs = c.read_work("low.runs");
    let runs: Vec<&str> = runs.lines().collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs[0].starts_with("run 0 ") && runs[1].starts_with("run 1 "),
        "{runs:?}"
    );
    let high_ran: f64 = c.read_work("high.ran").trim().parse().unwrap_or(0.0);
    assert!(
        secs(&term) <= high_ran && high_ran <= secs(runs[1]),
        "{term} {high_ran} {runs:?}"
    );
}

#[test]
fn a_cancelled_low_job_ends_preempted_by_the_high_one() {
    let c = cluster("cancel");
    let low = start_low(&c, STUBBORN);
    let high = c.submit(&["-p", "high", "--", "sh", "-c", HIGH]);
    // While the victim ends (3 s of grace), the high job says what it waits for.
    let waits = common::eventually(Duration::from_secs(5), || {
        let e = c.rudel_ok(&["explain", &high.to_string()]).stdout;
        e.contains("Preempting: waiting for 1 preempted task(s)")
    });
    assert!(waits, "{}", c.rudel_ok(&["explain", &high.to_string()]).stdout);
    let v = c.wait_finished(high, WAIT);
    assert_eq!(v["state"], "completed", "{v}");
    let v = c.wait_finished(low, WAIT);
    assert_eq!(v["state"], "cancelled", "{v}");
    let reason = v["task_details"][0]["reason"].as_str().unwrap_or_default().to_string();
    assert_eq!(reason, format!("preempted by job {high}"), "{v:#}");
    let term = c.read_work("low.term");
    assert!(term.starts_with("term "), "the task got SIGTERM first: {term:?}");
    assert_eq!(c.read_work("low.runs").lines().count(), 1, "it never ran again");
    // It ignored SIGTERM: the SIGKILL came `preempt.grace_s` (3 s) later, not after the
    // agent's 20 s, and only then did the high job start.
    let high_ran: f64 = c.read_work("high.ran").trim().parse().unwrap_or(0.0);
    let waited = high_ran - secs(&term);
    assert!((2.5..15.0).contains(&waited), "high ran {waited} s after the SIGTERM");
}

#[test]
fn preempt_needs_scheduling_version_7() {
    let c = Cluster::up(Opts::default());
    let o = c.rudel(&["admin", "config", "set", "preempt=requeue"]);
    assert!(!o.ok(), "{o}");
    assert!(o.stderr.contains("scheduling version 7 or later first"), "{o}");
}
