//! Everyday use of a one-node `rudel up` cluster: output, exit codes, environment,
//! scripts, arrays, idempotent submit, `wait --timeout`.
mod common;

use std::time::{Duration, Instant};

use common::{count, Cluster, Opts};

#[test]
fn echo_output_is_captured() {
    let c = Cluster::up(Opts::default());
    let id = c.submit(&["--", "echo", "hello"]);
    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "30s"]);
    assert_eq!(w.code, Some(0), "wait: {w}");

    let out = c.read_work(&format!("rudel-{id}.out"));
    assert_eq!(out, "hello\n", "output file rudel-{id}.out");

    let logs = c.rudel_ok(&["logs", &id.to_string()]);
    assert_eq!(logs.stdout.trim(), "hello", "logs: {logs}");

    let v = c.show_json(id);
    assert_eq!(v["state"], "completed", "{v:#}");
    assert_eq!(v["exit_code"], 0, "{v:#}");
    assert!(v["signal"].is_null(), "{v:#}");
    assert_eq!(v["nodes"], serde_json::json!(["n1"]), "{v:#}");
    assert_eq!(v["task_details"][0]["node"], "n1", "{v:#}");
    assert_eq!(v["command"], serde_json::json!(["echo", "hello"]), "{v:#}");

    // The human form says the same.
    let s = c.rudel_ok(&["show", &id.to_string()]);
    assert!(s.stdout.contains("State=completed"), "{s}");
    assert!(s.stdout.contains("ExitCode=0"), "{s}");
    let j = c.rudel_ok(&["jobs", "--all"]);
    assert!(
        j.stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&id.to_string()) && l.contains("completed")),
        "{j}"
    );
}

#[test]
fn non_zero_exit() {
    let c = Cluster::up(Opts::default());
    let id = c.submit(&["--", "sh", "-c", "exit 3"]);
    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "30s"]);
    assert_eq!(w.code, Some(1), "wait must exit 1 for a failed job: {w}");
    assert!(w.stdout.contains("failed"), "{w}");
    let v = c.show_json(id);
    assert_eq!(v["state"], "failed", "{v:#}");
    assert_eq!(v["exit_code"], 3, "{v:#}");

    let r = c.rudel(&["run", "--", "sh", "-c", "exit 3"]);
    assert_eq!(r.code, Some(3), "run must exit with the job's code: {r}");

    let r = c.rudel(&["run", "--", "echo", "hi"]);
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(r.stdout, "hi\n", "{r}");

    // A job killed by a signal: wait fails, run exits 128+signal.
    let r = c.rudel(&["run", "--", "sh", "-c", "kill -USR1 $$"]);
    assert_eq!(r.code, Some(128 + libc::SIGUSR1), "{r}");
}

#[test]
fn missing_command_fails_127_and_agent_keeps_working() {
    let c = Cluster::up(Opts::default());
    let id = c.submit(&["--", "/no/such/cmd", "arg"]);
    let v = c.wait_finished(id, Duration::from_secs(30));
    assert_eq!(v["state"], "failed", "{v:#}");
    assert_eq!(v["exit_code"], 127, "{v:#}");
    assert!(
        v["reason"].as_str().unwrap_or("").contains("/no/such/cmd"),
        "reason should name the command: {v:#}"
    );
    let out = c.read_work(&format!("rudel-{id}.out"));
    assert!(out.contains("/no/such/cmd"), "the error file should say why: {out:?}");

    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "10s"]);
    assert_eq!(w.code, Some(1), "{w}");

    // The agent keeps working.
    let id2 = c.submit(&["--", "echo", "still-alive"]);
    let w = c.rudel(&["wait", &id2.to_string(), "--timeout", "30s"]);
    assert_eq!(w.code, Some(0), "{w}");
    assert_eq!(c.read_work(&format!("rudel-{id2}.out")), "still-alive\n");
}

#[test]
fn environment_workdir_and_output_patterns() {
    let c = Cluster::up(Opts::default());
    let sub = c.work.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let sub = sub.canonicalize().unwrap();
    let script = r#"echo "id=$RUDEL_JOB_ID idx=$RUDEL_ARRAY_INDEX cpus=$RUDEL_CPUS node=$RUDEL_NODE foo=$FOO pwd=$(pwd)"; echo "err-$RUDEL_ARRAY_INDEX" >&2"#;
    let id = c.submit(&[
        "--cpus",
        "2",
        "--env",
        "FOO=bar",
        "--chdir",
        "sub",
        "--array",
        "3-4",
        "--output",
        "o-%j-%a.txt",
        "--error",
        "e-%j-%a.txt",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "30s"]);
    assert_eq!(w.code, Some(0), "{w}");
    for i in [3, 4] {
        // `%j` is the task's own job id, as in Slurm: the array's id plus the position.
        let task_job = id + (i - 3) as u64;
        let out = std::fs::read_to_string(sub.join(format!("o-{task_job}-{i}.txt"))).unwrap_or_default();
        assert_eq!(
            out.trim(),
            format!("id={id} idx={i} cpus=2 node=n1 foo=bar pwd={}", sub.display()),
            "output file of task {i}"
        );
        let err = std::fs::read_to_string(sub.join(format!("e-{task_job}-{i}.txt"))).unwrap_or_default();
        assert_eq!(err.trim(), format!("err-{i}"), "error file of task {i}");
    }
    let v = c.show_json(id);
    assert_eq!(v["tasks"], 2, "{v:#}");
    assert_eq!(count(&v, "completed"), 2, "{v:#}");

    // Not an array: no RUDEL_ARRAY_INDEX; default output in the submit directory.
    let id = c.submit(&[
        "--",
        "sh",
        "-c",
        "echo \"id=$RUDEL_JOB_ID idx=${RUDEL_ARRAY_INDEX-unset} cpus=$RUDEL_CPUS\"",
    ]);
    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "30s"]);
    assert_eq!(w.code, Some(0), "{w}");
    assert_eq!(
        c.read_work(&format!("rudel-{id}.out")).trim(),
        format!("id={id} idx=unset cpus=1")
    );

    // Default array output name: rudel-%A_%a.out.
    let id = c.submit(&["--array", "1-2", "--", "sh", "-c", "echo task-$RUDEL_ARRAY_INDEX"]);
    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "30s"]);
    assert_eq!(w.code, Some(0), "{w}");
    for i in [1, 2] {
        assert_eq!(c.read_work(&format!("rudel-{id}_{i}.out")), format!("task-{i}\n"));
    }
}

#[test]
fn script_with_sbatch_and_rudel_directives() {
    let c = Cluster::up(Opts::default());
    let script = "#!/bin/sh\n#SBATCH --job-name=scripted\n#SBATCH -o out-%j.txt\n#RUDEL --env X=1\n\necho \"name=$RUDEL_JOB_NAME x=$X\"\n";
    std::fs::write(c.work.join("script.sh"), script).unwrap();
    let o = c.rudel_ok(&["submit", "script.sh"]);
    let id: u64 = o
        .stdout
        .trim()
        .strip_prefix("Submitted job ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("expected `Submitted job ID`: {o}"));
    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "30s"]);
    assert_eq!(w.code, Some(0), "{w}");
    assert_eq!(c.read_work(&format!("out-{id}.txt")), "name=scripted x=1\n");
    assert!(
        !c.work.join(format!("rudel-{id}.out")).exists(),
        "-o from the script must replace the default output"
    );
    let v = c.show_json(id);
    assert_eq!(v["name"], "scripted", "{v:#}");
}

#[test]
fn idempotent_submit_with_request_id() {
    let c = Cluster::up(Opts::default());
    let a = c.submit(&["--request-id", "req-42", "--", "echo", "once"]);
    let o = c.rudel_ok(&["submit", "--json", "--request-id", "req-42", "--", "echo", "once"]);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(
        v["id"].as_u64(),
        Some(a),
        "same request id must return the same job: {o}"
    );
    assert_eq!(v["duplicate"], true, "{o}");
    let jobs = c.jobs_all();
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    // A different request id is a new job.
    let b = c.submit(&["--request-id", "req-43", "--", "echo", "twice"]);
    assert!(b > a);
    assert_eq!(c.jobs_all().len(), 2);
}

#[test]
fn wait_timeout_exits_124() {
    let c = Cluster::up(Opts::default());
    let id = c.submit(&["--", "sleep", "30"]);
    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "1s"]);
    assert_eq!(w.code, Some(124), "{w}");
    assert!(
        w.elapsed < Duration::from_secs(5),
        "wait --timeout 1s took {:?}",
        w.elapsed
    );
    assert!(w.stderr.contains("timed out"), "{w}");
    c.rudel_ok(&["cancel", &id.to_string()]);
}

#[test]
fn array_of_1000_tasks_completes() {
    let c = Cluster::up(Opts::default());
    let t0 = Instant::now();
    let id = c.submit(&["--array", "1-1000", "--output", "none", "--", "/bin/true"]);
    let w = c.rudel(&["wait", &id.to_string(), "--timeout", "120s"]);
    assert_eq!(w.code, Some(0), "{w}");
    let v = c.show_json(id);
    assert_eq!(v["state"], "completed", "{v:#}");
    assert_eq!(v["tasks"], 1000);
    assert_eq!(count(&v, "completed"), 1000, "{}", v["counts"]);
    eprintln!("1000 tasks of /bin/true: {:?}", t0.elapsed());
    // --output none leaves no files behind.
    let files: Vec<_> = std::fs::read_dir(&c.work)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(files.is_empty(), "{files:?}");
}

#[test]
fn array_concurrency_limit_is_respected() {
    // A node with room for 4 at once, so that %2 (not the cpus) is the limit.
    let c = Cluster::up(Opts::default().cpus(4));
    let id = c.submit(&["--array", "1-20%2", "--output", "none", "--", "sleep", "0.2"]);
    let mut max_running = 0;
    let mut samples = 0;
    let v = c.wait_state(
        id,
        |v| {
            max_running = max_running.max(count(v, "running"));
            samples += 1;
            common::is_final(v["state"].as_str().unwrap_or(""))
        },
        Duration::from_secs(60),
    );
    assert_eq!(v["state"], "completed", "{v:#}");
    assert_eq!(count(&v, "completed"), 20, "{v:#}");
    assert!(max_running <= 2, "array 1-20%2 ran {max_running} tasks at once");
    assert!(
        max_running >= 1 && samples >= 5,
        "too few samples to judge: {samples} samples, max running {max_running}"
    );
}

#[test]
fn a_job_cancelled_before_it_started_has_no_exit_code_and_no_node() {
    let c = Cluster::up(Opts::default()); // 2 cpus
    let m = common::marker(404);
    let running = c.submit(&["--cpus", "2", "--", "sleep", &m]);
    c.wait_state(running, |v| v["state"] == "running", Duration::from_secs(20));
    // Queued on the node behind the running task (--requeue), and waiting in the queue.
    let queued = c.submit(&["--cpus", "2", "--", "true"]);
    let pending = c.submit(&["--cpus", "2", "--no-requeue", "--", "true"]);
    c.rudel_ok(&["cancel", &queued.to_string(), &pending.to_string()]);
    for id in [queued, pending] {
        let v = c.wait_finished(id, Duration::from_secs(20));
        assert_eq!(v["state"], "cancelled", "{v:#}");
        assert!(
            v["exit_code"].is_null(),
            "job {id} never ran, yet has an exit code: {v:#}"
        );
        assert_eq!(
            v["nodes"],
            serde_json::json!([]),
            "job {id} never ran, yet has a node: {v:#}"
        );
        for t in v["task_details"].as_array().unwrap() {
            assert_eq!(t["node"], "", "{v:#}");
            assert!(t["exit_code"].is_null(), "{v:#}");
        }
        let text = c.rudel_ok(&["show", &id.to_string()]).stdout;
        assert!(!text.contains("ExitCode="), "{text}");
        assert!(text.contains("Nodes=-"), "{text}");
        let listed = c.jobs_all();
        let j = listed.iter().find(|j| j["id"] == id).unwrap();
        assert!(j["exit_code"].is_null() && j["nodes"] == serde_json::json!([]), "{j:#}");
    }
    // A task killed while running keeps its node.
    c.rudel_ok(&["cancel", &running.to_string()]);
    let v = c.wait_finished(running, Duration::from_secs(20));
    assert_eq!(v["nodes"], serde_json::json!(["n1"]), "{v:#}");
}
