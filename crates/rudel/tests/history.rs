//! Accounting history (issue 10 §5): `rudel history`, `sacct`, and their survival across a
//! head restart.
mod common;

use std::time::Duration;

use common::Cluster;
use common::Opts;
use serde_json::Value;

#[test]
fn history_and_sacct_show_finished_jobs_and_survive_a_head_restart() {
    let mut c = Cluster::head_only(Opts::default());
    c.start_agent();
    let ok = c.submit(&["--", "true"]);
    let failed = c.submit(&["--", "sh", "-c", "exit 3"]);
    let timeout = c.submit(&["--time", "1s", "--", "sleep", "30"]);
    let cancelled = c.submit(&["--", "sleep", "30"]);
    std::thread::sleep(Duration::from_millis(800));
    c.rudel_ok(&["cancel", &cancelled.to_string()]);
    let ids: Vec<String> = [ok, failed, timeout, cancelled].iter().map(u64::to_string).collect();
    let mut w = vec!["wait", "--timeout", "60s"];
    w.extend(ids.iter().map(String::as_str));
    let _ = c.rudel(&w); // exits non-zero: some jobs fail on purpose

    let h = c.rudel_ok(&["history", "--json"]);
    let v: Value = serde_json::from_str(h.stdout.trim()).expect("history --json");
    let state_of = |id: u64| {
        v.as_array()
            .and_then(|a| a.iter().find(|j| j["id"].as_u64() == Some(id)))
            .map(|j| (j["state"].as_str().unwrap_or("").to_string(), j["exit_code"].clone()))
    };
    assert_eq!(state_of(ok), Some(("completed".into(), Value::from(0))), "{h}");
    assert_eq!(state_of(failed), Some(("failed".into(), Value::from(3))), "{h}");
    assert_eq!(state_of(timeout).map(|s| s.0), Some("timeout".into()), "{h}");
    assert_eq!(state_of(cancelled).map(|s| s.0), Some("cancelled".into()), "{h}");

    let sacct = |c: &Cluster| {
        let joined = ids.join(",");
        c.rudel_ok(&[
            "sacct",
            "-X",
            "-P",
            "-n",
            "--format=JobID,State,ExitCode,ElapsedRaw",
            "-j",
            &joined,
        ])
        .stdout
    };
    let before = sacct(&c);
    let lines: Vec<&str> = before.lines().collect();
    assert_eq!(lines.len(), 4, "{before}");
    assert!(lines[0].starts_with(&format!("{ok}|COMPLETED|0:0|")), "{before}");
    assert!(lines[1].starts_with(&format!("{failed}|FAILED|3:0|")), "{before}");
    assert!(lines[2].starts_with(&format!("{timeout}|TIMEOUT|")), "{before}");
    assert!(lines[3].starts_with(&format!("{cancelled}|CANCELLED by ")), "{before}");
    let elapsed: u64 = lines[2].rsplit('|').next().and_then(|s| s.parse().ok()).unwrap_or(99);
    assert!((1..=5).contains(&elapsed), "a 1 s limit ran {elapsed} s: {before}");

    let port = c.port();
    c.daemon("head").kill9();
    c.start_head(Some(port));
    let after = sacct(&c);
    assert_eq!(after, before, "history changed across the head restart");
}
