//! `rudel requeue` and `scontrol requeue|requeuehold`: a job goes back to pending under
//! its job id and runs again as a higher attempt. Ground truth: each run appends
//! "ATTEMPT RESTART_COUNT" (and what it saw of the previous run) to a file itself. As in
//! Slurm, SLURM_RESTART_COUNT is unset until the job was requeued.
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_bounded, Cluster, Opts, CLI_TIMEOUT};

const WAIT: Duration = Duration::from_secs(60);

/// Lines of a file in the work dir, once it has at least `n` of them.
fn lines_when(c: &Cluster, name: &str, n: usize) -> Vec<String> {
    let end = Instant::now() + WAIT;
    loop {
        let lines: Vec<String> = c.read_work(name).lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < end,
            "{name} never had {n} lines: {lines:?}\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A task that records "ATTEMPT RESTART_COUNT" in `file`.
fn recorder(file: &str) -> String {
    format!("echo \"$RUDEL_ATTEMPT $SLURM_RESTART_COUNT\" >> {file}")
}

#[test]
fn a_job_runs_again_after_it_completed_and_while_it_runs() {
    let c = Cluster::up(Opts::default().cpus(2));
    // Completed, then requeued: it runs again as attempt 2, restart count 1.
    let a = c.submit(&["--", "sh", "-c", &recorder("runs-a")]);
    c.wait_finished(a, WAIT);
    let o = c.rudel_ok(&["requeue", &a.to_string()]);
    assert_eq!(o.stdout.trim(), format!("Requeued job {a}"), "{o}");
    assert_eq!(lines_when(&c, "runs-a", 2), vec!["1 ", "2 1"]);
    let v = c.wait_finished(a, WAIT);
    assert_eq!(v["state"], "completed", "{v}");

    // Requeued while it runs: killed first (its first run would sleep a minute), and the
    // rerun never overlaps it: the first run's shell is gone when the second starts.
    let body = "echo \"$RUDEL_ATTEMPT $SLURM_RESTART_COUNT\" >> runs-b; \
                if [ -e pid-b ] && kill -0 \"$(cat pid-b)\" 2>/dev/null; then echo overlap >> runs-b; fi; \
                echo $$ > pid-b; \
                if [ -z \"$SLURM_RESTART_COUNT\" ]; then sleep 60; fi";
    let b = c.submit(&["--", "sh", "-c", body]);
    lines_when(&c, "runs-b", 1);
    let t0 = Instant::now();
    c.rudel_ok(&["requeue", &b.to_string()]);
    let v = c.wait_finished(b, WAIT);
    assert!(
        t0.elapsed() < Duration::from_secs(40),
        "the running attempt was not killed"
    );
    assert_eq!(v["state"], "completed", "{v}");
    assert_eq!(c.read_work("runs-b").lines().collect::<Vec<_>>(), vec!["1 ", "2 1"]);

    // `--hold`: pending and held until released, then attempt 3.
    c.rudel_ok(&["requeue", "--hold", &a.to_string()]);
    let v = c.show_json(a);
    assert_eq!(
        (v["state"].as_str(), v["held"].as_bool()),
        (Some("pending"), Some(true)),
        "{v}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.read_work("runs-a").lines().count(), 2, "a held job does not run");
    c.rudel_ok(&["release", &a.to_string()]);
    assert_eq!(lines_when(&c, "runs-a", 3)[2], "3 2");
    c.wait_finished(a, WAIT);

    // --no-requeue: refused, nothing changes.
    let n = c.submit(&["--no-requeue", "--", "sh", "-c", &recorder("runs-n")]);
    c.wait_finished(n, WAIT);
    let o = c.rudel(&["requeue", &n.to_string()]);
    assert_eq!(o.code, Some(1), "{o}");
    assert!(
        o.stderr.contains("presently disabled") && o.stderr.contains("--no-requeue"),
        "{o}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.read_work("runs-n").lines().count(), 1);
    let o = c.rudel(&["requeue", "99999"]);
    assert_eq!(o.code, Some(1), "{o}");
    assert!(o.stderr.contains("no such job"), "{o}");
}

#[test]
fn one_array_task_or_the_whole_array_runs_again() {
    let c = Cluster::up(Opts::default().cpus(2));
    let body = "echo \"$SLURM_ARRAY_TASK_ID $RUDEL_ATTEMPT $SLURM_JOB_ID\" >> runs-arr";
    let arr = c.submit(&["--array", "1-3", "--", "sh", "-c", body]);
    c.wait_finished(arr, WAIT);
    assert_eq!(lines_when(&c, "runs-arr", 3).len(), 3);
    let o = c.rudel_ok(&["requeue", &format!("{arr}_2")]);
    // Task 2 is at position 1: its own job id is the array's plus one.
    assert_eq!(o.stdout.trim(), format!("Requeued job {}", arr + 1), "{o}");
    let lines = lines_when(&c, "runs-arr", 4);
    assert_eq!(lines[3], format!("2 2 {}", arr + 1), "{lines:?}");
    c.wait_finished(arr, WAIT);
    c.rudel_ok(&["requeue", &arr.to_string()]);
    let mut rerun: Vec<String> = lines_when(&c, "runs-arr", 7)[4..].to_vec();
    rerun.sort();
    assert_eq!(
        rerun,
        vec![
            format!("1 3 {arr}"),
            format!("2 3 {}", arr + 1),
            format!("3 3 {}", arr + 2)
        ]
    );
    let v = c.wait_finished(arr, WAIT);
    assert_eq!(v["state"], "completed", "{v}");
}

#[test]
fn scontrol_requeue_and_requeuehold_through_the_slurm_link() {
    let c = Cluster::up(Opts::default().cpus(2));
    let bin: PathBuf = c.tmp.path().join("bin");
    c.rudel_ok(&["slurm", "install", &bin.display().to_string()]);
    let scontrol = |args: &[&str]| {
        let mut cmd = Command::new(bin.join("scontrol"));
        cmd.args(args)
            .current_dir(&c.work)
            .env("RUDEL_HEAD", &c.addr)
            .env("RUDEL_CREDENTIALS", c.admin_credentials())
            .env_remove("RUDEL_LOG");
        run_bounded(cmd, CLI_TIMEOUT)
    };
    let a = c.submit(&["--", "sh", "-c", &recorder("runs-s")]);
    c.wait_finished(a, WAIT);
    let o = scontrol(&["requeue", &a.to_string()]);
    assert_eq!((o.code, o.stdout.as_str(), o.stderr.as_str()), (Some(0), "", ""), "{o}");
    assert_eq!(lines_when(&c, "runs-s", 2), vec!["1 ", "2 1"]);
    c.wait_finished(a, WAIT);
    let o = scontrol(&["requeuehold", &a.to_string()]);
    assert_eq!(o.code, Some(0), "{o}");
    let v = c.show_json(a);
    assert_eq!(v["held"], true, "{v}");
    assert!(
        v["reason"].as_str().is_some_and(|r| r.starts_with("JobHeldUser")),
        "{v}"
    );
    let n = c.submit(&["--no-requeue", "--", "true"]);
    c.wait_finished(n, WAIT);
    let o = scontrol(&["requeue", &n.to_string()]);
    assert_eq!(o.code, Some(1), "{o}");
    assert!(o.stderr.contains("Requested operation is presently disabled"), "{o}");
    let o = scontrol(&["requeue", "99999"]);
    assert_eq!(o.code, Some(1), "{o}");
    assert!(o.stderr.contains("Invalid job id specified"), "{o}");
}
