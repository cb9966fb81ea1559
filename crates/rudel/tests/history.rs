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

/// `sacct -P -n` lines of `-j SEL` as fields.
fn sacct_lines(c: &Cluster, sel: &str, format: &str) -> Vec<Vec<String>> {
    let o = c.rudel_ok(&["sacct", "-X", "-P", "-n", &format!("--format={format}"), "-j", sel]);
    o.stdout
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

#[test]
fn sacct_shows_array_tasks_with_their_own_job_ids() {
    let mut c = Cluster::head_only(Opts::default());
    c.start_agent();
    // Ground truth: each task writes down the job id and index it was given.
    let array = c.submit(&[
        "--array",
        "1-3",
        "--",
        "sh",
        "-c",
        r#"echo "$SLURM_ARRAY_TASK_ID $SLURM_JOB_ID" > seen.$SLURM_ARRAY_TASK_ID; [ $SLURM_ARRAY_TASK_ID != 2 ]"#,
    ]);
    let _ = c.rudel(&["wait", "--timeout", "60s", &array.to_string()]); // task 2 fails on purpose
    let mut own_ids = std::collections::BTreeMap::new();
    for i in 1..=3u32 {
        let seen = std::fs::read_to_string(c.work.join(format!("seen.{i}"))).expect("task output");
        let mut f = seen.split_whitespace();
        assert_eq!(f.next(), Some(i.to_string().as_str()), "{seen}");
        own_ids.insert(i, f.next().expect("job id").to_string());
    }

    let all = sacct_lines(&c, &array.to_string(), "JobID,JobIDRaw,State,ExitCode");
    let expect: Vec<Vec<String>> = (1..=3u32)
        .map(|i| {
            let (state, code) = if i == 2 {
                ("FAILED", "1:0")
            } else {
                ("COMPLETED", "0:0")
            };
            vec![format!("{array}_{i}"), own_ids[&i].clone(), state.into(), code.into()]
        })
        .collect();
    assert_eq!(all, expect, "sacct -j {array}");
    assert_ne!(own_ids[&1], own_ids[&3], "tasks share a job id");

    // A task named by its own job id, or as ARRAYID_INDEX, shows that task alone.
    assert_eq!(
        sacct_lines(&c, &own_ids[&3], "JobID,JobIDRaw"),
        vec![expect[2][..2].to_vec()]
    );
    assert_eq!(
        sacct_lines(&c, &format!("{array}_2"), "JobID,State"),
        vec![vec![format!("{array}_2"), "FAILED".to_string()]]
    );
}

/// `51201K`, `50M`, `1G` -> KiB.
fn kib_of(s: &str) -> u64 {
    let (n, unit) = s.split_at(s.len() - 1);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("MaxRSS {s:?}"));
    n << (10 * "KMGT".find(unit).unwrap_or_else(|| panic!("MaxRSS unit {s:?}")))
}

#[test]
fn sacct_and_history_show_peak_rss_and_cpu_time() {
    let mut c = Cluster::head_only(Opts::default());
    c.start_agent();
    // Touches 50 MiB (a bytes literal is written, not just mapped) and burns a little CPU.
    let big = c.submit(&[
        "--",
        "/usr/bin/python3",
        "-c",
        "b = b'x' * (50 << 20)\nn = 0\nfor i in range(3_000_000): n += i",
    ]);
    let small = c.submit(&["--", "true"]);
    let o = c.rudel(&["wait", "--timeout", "60s", &big.to_string(), &small.to_string()]);
    assert!(o.ok(), "{o}");

    let lines = sacct_lines(&c, &format!("{big},{small}"), "JobID,MaxRSS,TotalCPU,UserCPU,SystemCPU");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let rss = kib_of(&lines[0][1]);
    assert!((40 << 10..=200 << 10).contains(&rss), "MaxRSS {rss} KiB: {lines:?}");
    // Per task, not one number for all: `true` stays far below (its floor is the agent's
    // own size at fork, kept across exec by the kernel).
    let small_rss = kib_of(&lines[1][1]);
    assert!(
        small_rss + (30 << 10) < rss,
        "`true` peaked at {small_rss} KiB: {lines:?}"
    );
    for f in &lines[0][2..] {
        assert!(is_mm_ss_mmm(f), "CPU time {f:?} is not MM:SS.mmm: {lines:?}");
    }
    assert_ne!(lines[0][2], "00:00.000", "the loop used no CPU: {lines:?}");

    let h = c.rudel_ok(&["history", "--json", "-j", &big.to_string()]);
    let v: Value = serde_json::from_str(h.stdout.trim()).expect("history --json");
    let kb = v[0]["max_rss_kb"].as_u64().unwrap_or(0);
    assert_eq!(kb, rss, "history and sacct disagree: {h}");
    let cpu = v[0]["user_cpu_us"].as_u64().unwrap_or(0) + v[0]["sys_cpu_us"].as_u64().unwrap_or(0);
    assert!(cpu > 10_000, "{h}");
}

/// `MM:SS.mmm`.
fn is_mm_ss_mmm(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 9
        && b[2] == b':'
        && b[5] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 2 || i == 5 || c.is_ascii_digit())
}
