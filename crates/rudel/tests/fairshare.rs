//! Fair-share and the `multifactor` order on one host with real processes: a user with
//! heavy past usage waits behind a light user's later job. Ground truth is what the
//! tasks themselves record (their start times, written by `date` inside the task); users
//! are root and `nobody`, submitted for by the test's admin credentials (`--user`).
mod common;

use common::{run_bounded, Cluster, Opts, CLI_TIMEOUT};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn submit_as(c: &Cluster, user: &str, script: &str) -> u64 {
    let o = run_bounded(
        c.command_in(
            &c.work,
            &[
                "submit",
                "--json",
                "--user",
                user,
                "-o",
                "/dev/null",
                "--",
                "sh",
                "-c",
                script,
            ],
        ),
        CLI_TIMEOUT,
    );
    assert!(o.ok(), "{o}");
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o}"));
    v["id"].as_u64().unwrap_or_else(|| panic!("no id: {o}"))
}

/// `rudel share --json` as (user → fair-share factor).
fn factors(c: &Cluster) -> serde_json::Value {
    serde_json::from_str(&c.rudel_ok(&["share", "--json"]).stdout).unwrap()
}

fn factor_of(share: &serde_json::Value, user: &str) -> Option<f64> {
    share["users"].as_array()?.iter().find(|u| u["user"] == user)?["fairshare"].as_f64()
}

/// A file every user's task may append to.
fn truth_file(c: &Cluster) -> std::path::PathBuf {
    for d in [c.tmp.path(), c.work.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let dir = c.work.join("truth");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let f = dir.join("starts.txt");
    std::fs::write(&f, "").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    f
}

/// `TAG start_ms` lines, as the tasks wrote them.
fn starts(f: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(f)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (tag, t) = l.split_once(' ')?;
            Some((tag.to_string(), t.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn a_heavy_user_waits_behind_a_light_users_later_job() {
    let c = Cluster::up(Opts::default().cpus(1));
    let truth = truth_file(&c);
    let body = |tag: &str, secs: u32| format!("echo \"{tag} $(date +%s%3N)\" >> {}; sleep {secs}", truth.display());
    // Before version 4 the order is refused with the version it needs.
    let early = c.rudel(&["admin", "config", "set", "order=multifactor"]);
    assert_eq!(early.code, Some(2), "{early}");
    assert!(early.stderr.contains("version=4"), "{early}");
    c.rudel_ok(&[
        "admin",
        "config",
        "set",
        "version=4",
        "order=multifactor",
        "fairshare.calc_period_s=1",
        "multifactor.weight_age=0",
        // No task waits on the agent behind a running one: such a task was handed its
        // slot when it was first in the queue, before a later job could outrank it.
        "queue_depth=0",
        "short_queue_depth=0",
    ]);
    // root's past: 3 cpu-seconds on the one cpu.
    let past = submit_as(&c, "root", &body("past", 3));
    assert_eq!(c.wait_finished(past, Duration::from_secs(60))["state"], "completed");
    // A Tick (every second here) computes the factors from the usage.
    let end = Instant::now() + Duration::from_secs(20);
    let share = loop {
        let s = factors(&c);
        if factor_of(&s, "root").is_some_and(|f| f < 0.9) {
            break s;
        }
        assert!(Instant::now() < end, "root's factor never dropped: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let root = share["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == "root")
        .unwrap()
        .clone();
    assert!(root["raw_usage"].as_f64().unwrap() >= 2.5, "{share:#}");
    assert_eq!(factor_of(&share, "nobody"), None, "no usage, no row: {share:#}");

    // The cpu is taken; root's job is submitted before nobody's, both wait.
    let blocker = submit_as(&c, "root", &body("blocker", 3));
    c.wait_state(blocker, |v| v["state"] == "running", Duration::from_secs(30));
    let heavy = submit_as(&c, "root", &body("heavy", 0));
    std::thread::sleep(Duration::from_millis(300));
    let light = submit_as(&c, "nobody", &body("light", 0));
    let explained = c.rudel_ok(&["explain", &heavy.to_string()]).stdout;
    assert!(
        explained.contains("priority:") && explained.contains("(user root)"),
        "{explained}"
    );
    let text = c.rudel_ok(&["share"]).stdout;
    assert!(text.contains("FAIRSHARE") && text.contains("root"), "{text}");

    for id in [blocker, heavy, light] {
        assert_eq!(c.wait_finished(id, Duration::from_secs(60))["state"], "completed");
    }
    let s = starts(&truth);
    let at = |tag: &str| {
        s.iter()
            .find(|(t, _)| t == tag)
            .map(|(_, ms)| *ms)
            .unwrap_or_else(|| panic!("{tag} never started: {s:?}"))
    };
    assert!(
        at("light") < at("heavy"),
        "the light user's later job started after the heavy user's: {s:?}"
    );
    assert!(at("blocker") < at("light"), "{s:?}");

    // Slurm's sshare from the same binary: Slurm's headers, one row per user.
    let bin = c.tmp.path().join("bin");
    c.rudel_ok(&["slurm", "install", &bin.display().to_string()]);
    let mut cmd = std::process::Command::new(bin.join("sshare"));
    cmd.args(["-a", "-P"])
        .env("RUDEL_HEAD", &c.addr)
        .env("RUDEL_CREDENTIALS", c.admin_credentials());
    let o = run_bounded(cmd, CLI_TIMEOUT);
    assert!(o.ok(), "{o}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("Account|User|RawShares|NormShares|RawUsage|EffectvUsage|FairShare"),
        "{o}"
    );
    assert!(lines.iter().any(|l| l.starts_with("|root|1|")), "{o}");
    assert!(lines.iter().any(|l| l.starts_with("|nobody|1|")), "{o}");
}
