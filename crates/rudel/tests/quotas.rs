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
