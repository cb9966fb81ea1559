//! Killing tasks: cancel, time limit, memory limit. Whole process trees must go, and the
//! agent must leave no zombies.
mod common;

use std::time::{Duration, Instant};

use common::{eventually, marker, proc_stat, procs_matching, wait_file, zombies_of, Cluster, Opts};

/// Waits (bounded) until no process has `needle` in its command line.
fn assert_tree_gone(c: &Cluster, needle: &str, timeout: Duration) {
    let gone = eventually(timeout, || procs_matching(needle).is_empty());
    assert!(
        gone,
        "processes left behind: {:?}\n{}",
        procs_matching(needle),
        c.logs_tail()
    );
}

/// Waits (bounded) until the daemon has no zombie children.
fn assert_no_zombies(c: &mut Cluster, role: &str) {
    let pid = c.daemon(role).pid();
    let ok = eventually(Duration::from_secs(5), || zombies_of(pid).is_empty());
    assert!(ok, "zombie children of rudel {role} ({pid}): {:?}", zombies_of(pid));
}

fn pid_gone(pid: i32) -> bool {
    proc_stat(pid).is_none()
}

#[test]
fn cancel_kills_the_whole_process_tree() {
    let mut c = Cluster::up(Opts::default().kill_grace("2s"));
    let m = marker(301);
    let script = format!("sleep {m} & sleep {m} & echo $$ > pidfile; wait");
    let id = c.submit(&["--", "sh", "-c", &script]);
    c.wait_state(id, |v| v["state"] == "running", Duration::from_secs(20));
    let pidfile = c.work.join("pidfile");
    let shell_pid: i32 = wait_file(&pidfile, Duration::from_secs(10))
        .trim()
        .parse()
        .expect("pid in pidfile");
    let ok = eventually(Duration::from_secs(10), || {
        procs_matching(&m)
            .iter()
            .filter(|(_, cmd)| cmd.starts_with("sleep"))
            .count()
            == 2
    });
    assert!(ok, "expected 2 sleeps running: {:?}", procs_matching(&m));

    let t0 = Instant::now();
    let o = c.rudel_ok(&["cancel", &id.to_string()]);
    assert!(o.stdout.contains(&format!("Cancelled job {id}")), "{o}");
    let v = c.wait_state(id, |v| v["state"] == "cancelled", Duration::from_secs(8));
    eprintln!("cancelled after {:?}", t0.elapsed());
    assert!(v["end_ms"].is_u64(), "{v:#}");

    assert_tree_gone(&c, &m, Duration::from_secs(5));
    assert!(
        eventually(Duration::from_secs(5), || pid_gone(shell_pid)),
        "the job's shell {shell_pid} is still there: {:?}",
        proc_stat(shell_pid)
    );
    assert_no_zombies(&mut c, "up");

    // Cancelling again is harmless and says so.
    let o = c.rudel_ok(&["cancel", &id.to_string()]);
    assert!(o.stdout.contains("already finished"), "{o}");
    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "10s"]);
    assert_eq!(w.code, Some(1), "wait on a cancelled job: {w}");

    // A pending job can be cancelled too.
    let m2 = marker(302);
    let big = c.submit(&["--cpus", "2", "--", "sleep", &m2]);
    let pending = c.submit(&["--cpus", "2", "--", "echo", "never"]);
    c.wait_state(big, |v| v["state"] == "running", Duration::from_secs(20));
    // Checked at the end, so that the cancel below is exercised either way.
    let blocked = c.show_json(pending);
    c.rudel_ok(&["cancel", &pending.to_string(), &big.to_string()]);
    c.wait_state(pending, |v| v["state"] == "cancelled", Duration::from_secs(8));
    c.wait_state(big, |v| v["state"] == "cancelled", Duration::from_secs(8));
    assert!(
        !c.work.join(format!("rudel-{pending}.out")).exists(),
        "a cancelled pending job must not run"
    );
    assert_tree_gone(&c, &m2, Duration::from_secs(5));
    assert_no_zombies(&mut c, "up");
    assert_eq!(
        blocked["state"], "pending",
        "a job that cannot fit next to a running one must be shown pending (not started): {blocked:#}"
    );
    assert!(
        blocked["start_ms"].is_null(),
        "a job that has not started has no start time: {blocked:#}"
    );
}

#[test]
fn time_limit_ends_in_timeout() {
    let mut c = Cluster::up(Opts::default().kill_grace("2s"));
    let m = marker(60);
    let id = c.submit(&["--time", "2s", "--", "sleep", &m]);
    // This one ignores SIGTERM (and so does its sleep): it needs the SIGKILL after the grace.
    let m2 = marker(61);
    let stubborn = c.submit(&[
        "--time",
        "2s",
        "--",
        "sh",
        "-c",
        &format!("trap '' TERM; sleep {m2}; echo survived"),
    ]);

    let v = c.wait_finished(id, Duration::from_secs(20));
    assert_eq!(v["state"], "timeout", "{v:#}");
    let ran = v["end_ms"].as_u64().unwrap() - v["start_ms"].as_u64().unwrap();
    assert!(
        (1900..8000).contains(&ran),
        "ran {ran} ms with --time 2s and a 2 s grace"
    );

    let v = c.wait_finished(stubborn, Duration::from_secs(20));
    assert_eq!(v["state"], "timeout", "{v:#}");
    let ran = v["end_ms"].as_u64().unwrap() - v["start_ms"].as_u64().unwrap();
    assert!(
        (3900..10000).contains(&ran),
        "a task ignoring SIGTERM ran {ran} ms: expected 2 s limit + 2 s grace"
    );
    assert_eq!(v["signal"], libc::SIGKILL, "{v:#}");
    assert!(!c.read_work(&format!("rudel-{stubborn}.out")).contains("survived"));

    assert_tree_gone(&c, &m, Duration::from_secs(5));
    assert_tree_gone(&c, &m2, Duration::from_secs(5));
    assert_no_zombies(&mut c, "up");

    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "10s"]);
    assert_eq!(w.code, Some(1), "{w}");
    assert!(w.stdout.contains("timeout"), "{w}");
}

#[test]
fn memory_limit_is_enforced() {
    let c = Cluster::up(Opts::default());
    let nodes = c.nodes_json();
    let mode = nodes[0]["mem_enforcement"].as_str().unwrap_or("").to_string();
    assert!(
        mode.starts_with("cgroup") || mode.contains("rlimit"),
        "nodes --json must say how memory is enforced, got {:?}",
        nodes[0]["mem_enforcement"]
    );
    let table = c.rudel_ok(&["nodes"]);
    assert!(
        table.stdout.contains(&mode),
        "`rudel nodes` should show {mode:?}: {table}"
    );

    let hog = "b = bytearray(400*1024*1024); import time; time.sleep(2)";
    let id = c.submit(&["--mem", "50M", "--", "python3", "-c", hog]);
    // The same program with room to spare completes: the limit, not python, killed the first.
    let ok = c.submit(&["--mem", "900M", "--", "python3", "-c", "b = bytearray(400*1024*1024)"]);

    let v = c.wait_finished(id, Duration::from_secs(30));
    assert_eq!(v["state"], "failed", "over its memory limit the job must fail: {v:#}");
    let reason = v["reason"].as_str().unwrap_or("").to_lowercase();
    let out = c.read_work(&format!("rudel-{id}.out"));
    if mode.starts_with("cgroup") {
        assert!(
            reason.contains("out of memory"),
            "reason should say out of memory ({mode}): {v:#}"
        );
        assert!(v["signal"] == libc::SIGKILL || v["exit_code"] != 0, "{v:#}");
        // Accounting names a memory kill as Slurm does, and `-s F` does not list it.
        let sacct = |args: &[&str]| {
            let mut all = vec!["sacct", "-X", "-P", "-n", "-o", "JobID,State", "-S", "now-1hour"];
            all.extend_from_slice(args);
            c.rudel_ok(&all).stdout
        };
        assert_eq!(sacct(&["-j", &id.to_string()]), format!("{id}|OUT_OF_MEMORY\n"));
        assert_eq!(sacct(&["-s", "OOM"]), format!("{id}|OUT_OF_MEMORY\n"));
        assert!(
            !sacct(&["-s", "F"]).contains(&id.to_string()),
            "a memory kill is not FAILED"
        );
    } else {
        assert!(
            reason.contains("memory") || out.contains("MemoryError"),
            "reason should mention the memory limit ({mode}): {v:#}\n{out}"
        );
    }
    let v = c.wait_finished(ok, Duration::from_secs(30));
    assert_eq!(
        v["state"],
        "completed",
        "400M under a 900M limit: {v:#}\n{}",
        c.read_work(&format!("rudel-{ok}.out"))
    );
    assert_eq!(nodes[0]["mem_bytes"].as_u64(), Some(2 << 30));
}

/// True where the tests run as root with a cgroup v1 `pids` hierarchy (as in CI): there
/// tasks must be in cgroups, so the containment tests do not pass in the fallback by
/// accident.
fn pids_cgroup_expected() -> bool {
    // SAFETY: plain syscall.
    let root = unsafe { libc::geteuid() } == 0;
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    root && mounts.lines().any(|l| {
        l.contains(" cgroup ")
            && l.split_whitespace()
                .nth(3)
                .is_some_and(|o| o.split(',').any(|x| x == "pids"))
    })
}

#[test]
fn escaped_background_process_dies_with_its_job() {
    let mut c = Cluster::up(Opts::default());
    let nodes = c.nodes_json();
    let contain = nodes[0]["containment"].as_str().unwrap_or("").to_string();
    eprintln!("containment: {contain}");
    assert!(
        contain.starts_with("cgroup-v") || contain.starts_with("process-tree ("),
        "nodes --json must say how tasks are contained: {:?}",
        nodes[0]
    );
    if pids_cgroup_expected() {
        assert!(
            contain.starts_with("cgroup-v") && contain.contains("pids.max 1024"),
            "{contain}"
        );
    }
    let table = c.rudel_ok(&["nodes"]);
    assert!(
        table.stdout.contains("CONTAINMENT") && table.stdout.contains(&contain),
        "{table}"
    );

    // The background sleep leaves the job's process group (setsid); the job ends after 1 s.
    let m = marker(311);
    let script = format!("setsid sleep {m} & echo $! > escapee.pid; sleep 1");
    let o = c.rudel_ok(&["run", "--", "sh", "-c", &script]);
    let pid: i32 = wait_file(&c.work.join("escapee.pid"), Duration::from_secs(5))
        .trim()
        .parse()
        .expect("pid in escapee.pid");
    // Killed before the end was reported: at most a zombie waiting for the agent's reaper.
    assert!(
        matches!(proc_stat(pid), None | Some(('Z', _))),
        "`rudel run` returned ({}) while the escaped sleep {pid} still runs: {:?}",
        o.stdout.trim(),
        proc_stat(pid)
    );
    assert!(eventually(Duration::from_secs(3), || pid_gone(pid)), "{pid} left");
    assert_tree_gone(&c, &m, Duration::from_secs(3));
    assert_no_zombies(&mut c, "up");

    // The limit is the agent's option.
    c.start_named_agent_with("small", &["--task-pids-max", "64"]);
    let small = c
        .nodes_json()
        .into_iter()
        .find(|n| n["name"] == "small")
        .expect("node small");
    let s = small["containment"].as_str().unwrap_or("");
    if s.starts_with("cgroup") {
        assert!(s.contains("pids.max 64"), "{s}");
    } else {
        assert!(s.starts_with("process-tree"), "{s}");
    }
    let bad = c.rudel(&["agent", "--head", "127.0.0.1:1", "--task-pids-max", "1"]);
    assert_eq!(bad.code, Some(2), "{bad}");
    assert!(bad.stderr.contains("--task-pids-max"), "{bad}");
}

#[test]
fn restarted_agent_removes_the_cgroups_of_its_killed_predecessor() {
    let mut c = Cluster::up(Opts::default());
    c.start_named_agent_with("b", &["--label", "crashy"]);
    let old_pid = c.daemon("agent").pid();
    let m = marker(312);
    let script = format!("setsid sleep {m} & sleep {m}");
    let id = c.submit(&["--no-requeue", "--constraint", "crashy", "--", "sh", "-c", &script]);
    c.wait_state(id, |v| v["state"] == "running", Duration::from_secs(20));
    let sleeps = || {
        procs_matching(&m)
            .into_iter()
            .filter(|(_, cmd)| cmd.starts_with("sleep"))
            .count()
    };
    assert!(
        eventually(Duration::from_secs(5), || sleeps() == 2),
        "{:?}",
        procs_matching(&m)
    );
    let contain = c
        .nodes_json()
        .into_iter()
        .find(|n| n["name"] == "b")
        .and_then(|n| n["containment"].as_str().map(String::from))
        .unwrap_or_default();
    if !contain.starts_with("cgroup-v1") {
        eprintln!("no v1 pids cgroup here ({contain}): nothing to clean up");
        return;
    }
    let pids_root = std::path::Path::new("/sys/fs/cgroup/pids");
    let own = pids_root.join(format!("rudel-{old_pid}"));
    assert!(own.is_dir(), "{} missing", own.display());
    c.daemon("agent").kill9();
    // The tasks of the killed agent keep running (orphans) until an agent starts on this
    // machine: any starting agent cleans up the cgroups of dead ones, so with the other
    // tests of this file starting agents in parallel, that may be another test's agent.
    c.start_named_agent_with("b", &["--label", "crashy"]);
    assert_tree_gone(&c, &m, Duration::from_secs(5));
    assert!(
        eventually(Duration::from_secs(5), || !own.exists()),
        "{} left behind",
        own.display()
    );
    let v = c.wait_finished(id, Duration::from_secs(20));
    assert_ne!(v["state"], "running", "{v:#}");
}
