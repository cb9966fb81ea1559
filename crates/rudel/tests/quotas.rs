//! Queue limits (`limits.*` in the replicated config): a user over the pending limit or a
//! submit over the queue bound is refused at once with the exact counts, and nothing is
//! queued. The head has no agent, so every accepted job stays pending (ground truth: the
//! jobs the test submitted).
mod common;

use common::{run_bounded, Cluster, Opts, Out};
use std::time::Duration;

/// The head decides who submits: the test's admin credentials submit on the user's behalf
/// (`--user`, admins only), which counts against that user's limits.
fn submit_as(c: &Cluster, user: &str, args: &[&str]) -> Out {
    let mut a = vec!["submit", "--json", "--user", user];
    a.extend_from_slice(args);
    let cmd = c.command_in(&c.work, &a);
    run_bounded(cmd, Duration::from_secs(30))
}

fn job_count(c: &Cluster) -> usize {
    c.jobs_all().len()
}

#[test]
fn pending_limits_refuse_with_exact_messages_and_change_nothing() {
    let c = Cluster::head_only(Opts::default());
    c.rudel_ok(&[
        "admin",
        "config",
        "set",
        "limits.max_pending_tasks_per_user=2",
        "limits.user.carol.max_pending_jobs=1",
        "limits.max_pending_tasks=6",
    ]);
    let shown = c.rudel_ok(&["admin", "config", "show"]);
    assert!(shown.stdout.contains("limits.max_pending_tasks_per_user"), "{shown}");
    assert!(shown.stdout.contains("limits.user.carol.max_pending_jobs"), "{shown}");

    let mut alice_jobs = Vec::new();
    for _ in 0..2 {
        let o = submit_as(&c, "alice", &["--", "true"]);
        assert!(o.ok(), "{o}");
        let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o}"));
        alice_jobs.push(v["id"].as_u64().unwrap_or_else(|| panic!("no id: {o}")));
    }
    let before = job_count(&c);
    let o = submit_as(&c, "alice", &["--", "true"]);
    assert!(!o.ok(), "{o}");
    assert!(o.stderr.contains("alice has 2 pending tasks (limit 2)"), "{o}");
    assert_eq!(job_count(&c), before, "a refused submit queues nothing");

    // Another user is not affected; carol's own override limits her jobs.
    assert!(submit_as(&c, "bob", &["--", "true"]).ok());
    assert!(submit_as(&c, "carol", &["--", "true"]).ok());
    let o = submit_as(&c, "carol", &["--", "true"]);
    assert!(o.stderr.contains("carol has 1 pending jobs (limit 1)"), "{o}");

    // The whole queue: 4 pending (alice 2, bob 1, carol 1), bound 6, an array of 3 crosses it.
    let before = job_count(&c);
    let o = submit_as(&c, "dave", &["--array", "1-3", "--", "true"]);
    assert!(!o.ok(), "{o}");
    assert!(
        o.stderr
            .contains("the queue holds 4 pending tasks (limit 6); this job adds 3"),
        "{o}"
    );
    assert_eq!(job_count(&c), before);

    // Cancelling frees the quota.
    c.rudel_ok(&["cancel", &alice_jobs[0].to_string()]);
    let o = submit_as(&c, "alice", &["--", "true"]);
    assert!(o.ok(), "{o}");
}

/// The `KEY start end` lines tasks appended to `file`, as (key, start ms, end ms).
fn spans(text: &str) -> Vec<(String, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?))
        })
        .collect()
}

/// A ground-truth file every user's tasks may append to, in a work directory `nobody`
/// can reach.
fn shared_truth(c: &Cluster) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    for d in [c.tmp.path(), c.work.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let truth_dir = c.work.join("truth");
    std::fs::create_dir_all(&truth_dir).unwrap();
    std::fs::set_permissions(&truth_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let truth = truth_dir.join("spans.txt");
    std::fs::write(&truth, "").unwrap();
    std::fs::set_permissions(&truth, std::fs::Permissions::from_mode(0o666)).unwrap();
    truth
}

#[test]
fn a_running_limit_holds_a_users_tasks_back_while_another_user_runs() {
    let c = Cluster::up(Opts::default().cpus(4));
    let truth = shared_truth(&c);
    c.rudel_ok(&[
        "admin",
        "config",
        "set",
        "version=2",
        "limits.user.root.max_running_tasks=1",
    ]);
    let body = |tag: &str| {
        format!(
            "s=$(date +%s%3N); sleep 1; echo \"{tag} $s $(date +%s%3N)\" >> {}",
            truth.display()
        )
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        let o = submit_as(
            &c,
            "root",
            &["-o", "/dev/null", "--", "sh", "-c", &body(&format!("root{i}"))],
        );
        assert!(o.ok(), "{o}");
        ids.push(
            serde_json::from_str::<serde_json::Value>(o.stdout.trim()).unwrap()["id"]
                .as_u64()
                .unwrap(),
        );
    }
    let o = submit_as(&c, "nobody", &["-o", "/dev/null", "--", "sh", "-c", &body("nobody")]);
    assert!(o.ok(), "{o}");
    let other = serde_json::from_str::<serde_json::Value>(o.stdout.trim()).unwrap()["id"]
        .as_u64()
        .unwrap();

    let waiting = c.show_json(ids[2]);
    let reason = waiting["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.starts_with("QOSMaxJobsPerUserLimit: root runs 1 tasks (limit 1)"),
        "{waiting:#}"
    );
    let squeue = c.rudel_ok(&["jobs"]).stdout;
    assert!(squeue.contains("QOSMaxJobsPerUserLimit"), "{squeue}");
    // `rudel limits` shows the limit next to the usage (the test's admin asks for root).
    let l: serde_json::Value =
        serde_json::from_str(&c.rudel_ok(&["limits", "--user", "root", "--json"]).stdout).unwrap();
    assert_eq!(
        (l["max_running_tasks"].as_u64(), l["running_tasks"].as_u64()),
        (Some(1), Some(1)),
        "{l}"
    );
    assert_eq!(l["pending_tasks"], 2, "{l}");
    assert!(l["max_running_cpus"].is_null(), "unlimited: {l}");
    let text = c.rudel_ok(&["limits", "--user", "root"]).stdout;
    assert!(text.contains("running tasks"), "{text}");

    for id in ids.iter().chain([&other]) {
        let v = c.wait_finished(*id, Duration::from_secs(60));
        assert_eq!(v["state"], "completed", "{v:#}");
    }
    let spans = spans(&std::fs::read_to_string(&truth).unwrap());
    assert_eq!(spans.len(), 4, "{spans:?}");
    let roots: Vec<&(String, u64, u64)> = spans.iter().filter(|s| s.0.starts_with("root")).collect();
    for a in &roots {
        for b in &roots {
            assert!(
                a.0 == b.0 || a.2 <= b.1 || b.2 <= a.1,
                "root's tasks overlapped: {spans:?}"
            );
        }
    }
    let nobody = spans.iter().find(|s| s.0 == "nobody").unwrap();
    let first_root = roots.iter().map(|r| r.1).min().unwrap();
    assert!(
        nobody.1 < first_root + 1_000,
        "nobody's job waited for root's: {spans:?}"
    );
}

#[test]
fn the_submit_rate_per_user_refuses_at_once_with_the_wait() {
    let c = Cluster::head_only(Opts::default());
    let early = c.rudel(&["admin", "config", "set", "limits.submit_rate_per_user=2"]);
    assert_eq!(early.code, Some(2), "needs version 2: {early}");
    c.rudel_ok(&[
        "admin",
        "config",
        "set",
        "version=2",
        "limits.submit_rate_per_user=1",
        "limits.submit_burst_per_user=3",
    ]);
    // An array counts once: three submits fill the burst.
    for args in [
        &["--array", "1-100", "--", "true"][..],
        &["--", "true"],
        &["--", "true"],
    ] {
        let o = submit_as(&c, "alice", args);
        assert!(o.ok(), "{o}");
    }
    let before = job_count(&c);
    let o = submit_as(&c, "alice", &["--", "true"]);
    assert!(!o.ok(), "{o}");
    assert!(
        o.stderr
            .contains("alice is submitting faster than 1 jobs/s (limit); retry in 0."),
        "{o}"
    );
    assert_eq!(job_count(&c), before, "a refused submit queues nothing");
    // Another user has a bucket of their own.
    assert!(submit_as(&c, "bob", &["--", "true"]).ok());
    // sbatch says it as Slurm does, and fails.
    let bin = c.tmp.path().join("bin");
    c.rudel_ok(&["slurm", "install", &bin.display().to_string()]);
    std::fs::write(c.work.join("j.sh"), "#!/bin/sh\ntrue\n").unwrap();
    let sbatch = || {
        let mut s = std::process::Command::new(bin.join("sbatch"));
        s.arg("j.sh")
            .current_dir(&c.work)
            .env("RUDEL_HEAD", &c.addr)
            .env("RUDEL_CREDENTIALS", c.admin_credentials());
        run_bounded(s, Duration::from_secs(30))
    };
    // The admin's own bucket (burst 3): three pass, the fourth is refused.
    for _ in 0..3 {
        let o = sbatch();
        assert!(o.ok(), "{o}");
    }
    let o = sbatch();
    assert_eq!(o.code, Some(1), "{o}");
    assert!(o.stderr.contains("sbatch: error: Batch job submission failed: "), "{o}");
    assert!(o.stderr.contains("is submitting faster than 1 jobs/s"), "{o}");
}

#[test]
fn sbatch_uid_submits_for_a_user_by_name_or_number() {
    let c = Cluster::head_only(Opts::default());
    let bin = c.tmp.path().join("bin");
    c.rudel_ok(&["slurm", "install", &bin.display().to_string()]);
    std::fs::write(c.work.join("j.sh"), "#!/bin/sh\ntrue\n").unwrap();
    let mut users = Vec::new();
    for uid in ["--uid=nobody", "--uid=65534"] {
        let mut s = std::process::Command::new(bin.join("sbatch"));
        s.args(["--parsable", uid, "j.sh"])
            .current_dir(&c.work)
            .env("RUDEL_HEAD", &c.addr)
            .env("RUDEL_CREDENTIALS", c.admin_credentials());
        let o = run_bounded(s, Duration::from_secs(30));
        assert!(o.ok(), "{o}");
        let id: u64 = o.stdout.trim().parse().unwrap_or_else(|e| panic!("{e}: {o}"));
        users.push(c.show_json(id)["user"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(users, ["nobody", "nobody"]);
}

/// Accounts: `root` and `nobody` share `physics`, whose running limit holds for both
/// together; `daemon` is in no account, may not charge `physics`, and runs beside them.
/// Ground truth: the tasks' own start and end times.
#[test]
fn an_account_limit_holds_for_all_its_users_and_membership_is_checked() {
    let c = Cluster::up(Opts::default().cpus(4));
    let truth = shared_truth(&c);
    let early = c.rudel(&["admin", "config", "set", "account.physics=users=root,nobody"]);
    assert_eq!(early.code, Some(2), "accounts need version 3: {early}");
    assert!(early.stderr.contains("scheduling version 3"), "{early}");
    c.rudel_ok(&[
        "admin",
        "config",
        "set",
        "version=3",
        "account.physics=users=root,nobody",
        "limits.account.physics.max_running_tasks=1",
    ]);
    let body = |tag: &str| {
        format!(
            "s=$(date +%s%3N); sleep 1; echo \"{tag} $s $(date +%s%3N) $SLURM_JOB_ACCOUNT\" >> {}",
            truth.display()
        )
    };
    let id_of = |o: &Out| {
        assert!(o.ok(), "{o}");
        serde_json::from_str::<serde_json::Value>(o.stdout.trim()).unwrap()["id"]
            .as_u64()
            .unwrap()
    };
    let mut ids = Vec::new();
    for (user, tag) in [
        ("root", "root0"),
        ("nobody", "nobody0"),
        ("root", "root1"),
        ("nobody", "nobody1"),
    ] {
        let o = submit_as(&c, user, &["-o", "/dev/null", "--", "sh", "-c", &body(tag)]);
        ids.push(id_of(&o));
    }
    let o = submit_as(&c, "daemon", &["-A", "physics", "--", "true"]);
    assert!(!o.ok(), "{o}");
    assert!(
        o.stderr
            .contains("daemon may not charge account physics (not one of its users); daemon's accounts: none"),
        "{o}"
    );
    let outsider = id_of(&submit_as(
        &c,
        "daemon",
        &["-o", "/dev/null", "--", "sh", "-c", &body("daemon")],
    ));

    let waiting = c.show_json(ids[3]);
    assert_eq!(waiting["account"], "physics", "{waiting:#}");
    let reason = waiting["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.starts_with("AssocGrpJobsLimit: account physics runs 1 tasks (limit 1)"),
        "{waiting:#}"
    );
    let bin = c.tmp.path().join("bin");
    c.rudel_ok(&["slurm", "install", &bin.display().to_string()]);
    let mut cmd = std::process::Command::new(bin.join("squeue"));
    cmd.args(["-A", "physics", "-h", "-o", "%i %a %u"])
        .env("RUDEL_HEAD", &c.addr)
        .env("RUDEL_CREDENTIALS", c.admin_credentials());
    let squeue = run_bounded(cmd, Duration::from_secs(30));
    assert!(squeue.ok(), "{squeue}");
    let squeue = squeue.stdout;
    assert_eq!(squeue.lines().count(), 4, "{squeue}");
    assert!(squeue.lines().all(|l| l.contains(" physics ")), "{squeue}");
    let l: serde_json::Value =
        serde_json::from_str(&c.rudel_ok(&["limits", "--user", "nobody", "--json"]).stdout).unwrap();
    assert_eq!(l["accounts"][0]["name"], "physics", "{l}");
    assert_eq!(l["accounts"][0]["max_running_tasks"], 1, "{l}");

    for id in ids.iter().chain([&outsider]) {
        let v = c.wait_finished(*id, Duration::from_secs(60));
        assert_eq!(v["state"], "completed", "{v:#}");
    }
    let text = std::fs::read_to_string(&truth).unwrap();
    let spans = spans(&text);
    assert_eq!(spans.len(), 5, "{text}");
    let physics: Vec<&(String, u64, u64)> = spans.iter().filter(|s| s.0 != "daemon").collect();
    for a in &physics {
        for b in &physics {
            assert!(
                a.0 == b.0 || a.2 <= b.1 || b.2 <= a.1,
                "physics' tasks overlapped: {text}"
            );
        }
    }
    assert!(
        text.lines()
            .filter(|l| !l.starts_with("daemon"))
            .all(|l| l.ends_with(" physics")),
        "SLURM_JOB_ACCOUNT: {text}"
    );
    let daemon = spans.iter().find(|s| s.0 == "daemon").unwrap();
    let first = physics.iter().map(|r| r.1).min().unwrap();
    assert!(daemon.1 < first + 1_000, "daemon's job waited for physics': {text}");
    let sacct = c
        .rudel_ok(&[
            "sacct",
            "-a",
            "-X",
            "-A",
            "physics",
            "-n",
            "-P",
            "-o",
            "JobID,Account,User",
        ])
        .stdout;
    assert_eq!(sacct.lines().count(), 4, "{sacct}");
    assert!(sacct.lines().all(|l| l.contains("|physics|")), "{sacct}");
}
