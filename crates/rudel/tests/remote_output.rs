//! Task output without a shared filesystem (issue 10 §6): agents run in hosts whose `/tmp`
//! and work directory are private (their own tmpfs), and `rudel run` / `rudel logs [-f]`
//! from the test's host still show the output, streamed through the head from the agent.
//! Ground truth: the files as seen from inside the agent's host.
//!
//! Needs root (network and mount namespaces); run with `--test remote_output`.
mod common;
mod netns;

use std::path::Path;
use std::time::Duration;

use netns::{run_bounded, Cluster, ClusterOpts, Out};

fn cluster() -> Cluster {
    Cluster::start_private_fs(ClusterOpts {
        agents: 2,
        cpus: 2,
        node_timeout: Some("3s".into()),
    })
}

/// `argv` inside agent host `host`'s filesystem view (and network).
fn on_host(cl: &Cluster, host: usize, argv: &[&str]) -> Out {
    run_bounded(cl.net.host_command(host, argv), Duration::from_secs(20))
}

/// Contents of `path` as agent host `host` sees it (None: no such file there).
fn read_on_host(cl: &Cluster, host: usize, path: &Path) -> Option<String> {
    let o = on_host(cl, host, &["cat", &path.display().to_string()]);
    o.ok().then_some(o.stdout)
}

fn host_of(cl: &Cluster, id: u64) -> usize {
    let j = cl.show_ok(id);
    let node = j["nodes"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no node in {j}"))
        .to_string();
    (1..=2)
        .find(|i| Cluster::node_name(*i) == node)
        .unwrap_or_else(|| panic!("unknown node {node}"))
}

fn seq(n: u32) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

#[test]
fn run_streams_output_from_a_host_whose_tmp_the_client_cannot_see() {
    let cl = cluster();
    // Big enough for several 1 MiB chunks; stderr separately; a failing exit code.
    let o = run_bounded(
        cl.command(&[
            "run",
            "--",
            "sh",
            "-c",
            "seq 1 400000; echo to-stderr >&2; echo $RUDEL_JOB_ID > /tmp/ran-here; exit 3",
        ]),
        Duration::from_secs(60),
    );
    assert!(!o.timed_out, "rudel run hung: {o}");
    assert_eq!(o.code, Some(3), "run exits with the task's code: {o}");
    assert!(
        o.stdout == seq(400000),
        "stdout differs (len {} vs {})",
        o.stdout.len(),
        seq(400000).len()
    );
    assert!(o.stderr.contains("to-stderr"), "{o}");
    assert!(o.stderr.contains("exit code 3"), "the exit code is said on stderr: {o}");
    // Ground truth: the task ran on an agent host and wrote into that host's /tmp, which the
    // client (this process) does not see.
    let id: u64 = (1..=2)
        .find_map(|h| read_on_host(&cl, h, Path::new("/tmp/ran-here")))
        .expect("the task's marker on an agent host")
        .trim()
        .parse()
        .unwrap();
    assert!(
        !Path::new("/tmp/ran-here").exists()
            || std::fs::read_to_string("/tmp/ran-here").unwrap().trim() != id.to_string()
    );
    let host = host_of(&cl, id);
    // The output lived in the agent's data directory and was removed once delivered; never
    // in a predictable directory of the client's /tmp.
    let out_dir = cl.data_dir(host).join("output");
    let left = on_host(&cl, host, &["ls", "-A", &out_dir.display().to_string()]);
    assert!(left.ok(), "the agent's output dir exists on its host: {left}");
    assert_eq!(left.stdout.trim(), "", "delivered run output is deleted");
    assert!(!out_dir.exists(), "the agent's data dir is not visible to the client");
    let uid = unsafe { libc::getuid() };
    let old_style = std::env::temp_dir().join(format!("rudel-run-{uid}/{id}_0.out"));
    assert!(!old_style.exists(), "run wrote into the client's /tmp");

    // A signal is a reason, said on stderr.
    let o = run_bounded(
        cl.command(&["run", "--", "sh", "-c", "echo before; kill -9 $$"]),
        Duration::from_secs(60),
    );
    assert_eq!(o.code, Some(137), "{o}");
    assert_eq!(o.stdout, "before\n", "{o}");
    assert!(
        o.stderr.contains("SIGKILL (9)") || o.stderr.contains("signal 9"),
        "the signal is said: {o}"
    );
}

#[test]
fn logs_follow_a_remote_file_arrays_pending_and_none() {
    let mut cl = cluster();
    let work = cl.work.clone();
    // A batch job writes its output file on the node, in the (private) work directory.
    let id = cl.submit(&[
        "--output",
        "slow-%j.out",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done",
    ]);
    let o = cl.rudel(&["logs", "-f", &id.to_string()]);
    assert!(o.ok(), "{o}");
    let want: String = (1..=5).map(|i| format!("line {i}\n")).collect();
    assert_eq!(o.stdout, want, "{o}");
    let file = work.join(format!("slow-{id}.out"));
    assert!(!file.exists(), "the client cannot see the node's work directory");
    let host = host_of(&cl, id);
    assert_eq!(
        read_on_host(&cl, host, &file).as_deref(),
        Some(want.as_str()),
        "ground truth on the node"
    );
    // Without -f, after the end: the same bytes.
    assert_eq!(cl.rudel_ok(&["logs", &id.to_string()]).stdout, want);

    // An array spread over both hosts: every task followed, lines prefixed by the index.
    let arr = cl.submit(&[
        "--array",
        "0-5",
        "--output",
        "arr-%A_%a.out",
        "--",
        "sh",
        "-c",
        "sleep 0.5; echo hello $RUDEL_ARRAY_INDEX; echo bye $RUDEL_ARRAY_INDEX",
    ]);
    let o = cl.rudel(&["logs", "-f", &arr.to_string()]);
    assert!(o.ok(), "{o}");
    for i in 0..=5 {
        assert!(
            o.stdout.contains(&format!("[{i}] hello {i}\n[{i}] bye {i}\n")) || {
                let lines: Vec<&str> = o.stdout.lines().collect();
                lines.contains(&format!("[{i}] hello {i}").as_str())
                    && lines.contains(&format!("[{i}] bye {i}").as_str())
            },
            "task {i} missing: {o}"
        );
    }
    assert_eq!(o.stdout.lines().count(), 12, "{o}");
    let o = cl.rudel_ok(&["logs", &arr.to_string(), "--task", "4"]);
    assert_eq!(o.stdout, "hello 4\nbye 4\n");

    // Pending: said, exit 0.
    let held = cl.submit(&["--hold", "--", "echo", "never"]);
    let o = cl.rudel(&["logs", &held.to_string()]);
    assert!(o.ok() && o.stdout.is_empty() && o.stderr.contains("pending"), "{o}");

    // Output discarded: said, nothing printed.
    let none = cl.submit(&["--output", "none", "--", "echo", "gone"]);
    cl.wait_finished(none, Duration::from_secs(30));
    let o = cl.rudel(&["logs", &none.to_string()]);
    assert!(
        o.ok() && o.stdout.is_empty() && o.stderr.contains("discards its output"),
        "{o}"
    );

    // The node that holds the file is down: a clear error, in bounded time.
    cl.kill9_agent(host);
    let o = cl.rudel(&["logs", &id.to_string()]);
    assert!(!o.ok(), "{o}");
    assert!(
        o.stderr.contains("not connected") || o.stderr.contains("no answer"),
        "the error names the unreachable node: {o}"
    );
    assert!(o.elapsed < Duration::from_secs(30), "{o}");
}
