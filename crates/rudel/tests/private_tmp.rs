//! `rudel agent --private-tmp`: each task sees its own empty `/tmp` (mode 1777), none of the
//! node's or another job's files, and what it wrote there is gone when it ends. Ground
//! truth: what the tasks list and write, and the node's own `/tmp` and data directory.
//! Needs root (mount namespaces), as CI runs.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Cluster, Opts};

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Starts an agent with `--private-tmp` whose data directory is outside `/tmp` (in
/// `/var/tmp`); returns once it is idle.
fn start_agent(c: &mut Cluster, data: &Path) {
    let token = c.join_token();
    let i = c.spawn_agent("pt", data, &token, &["--private-tmp"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.nodes_json().iter().any(|n| n["name"] == "pt" && n["state"] == "idle") {
        if let Some(code) = c.daemons[i].exited() {
            panic!("agent exited with {code}:\n{}", c.daemons[i].log_text());
        }
        assert!(Instant::now() < deadline, "agent not idle:\n{}", c.logs_tail());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn each_task_has_its_own_tmp_and_it_is_removed_at_the_end() {
    assert!(is_root(), "this test needs root (mount namespaces); CI runs as root");
    let mut c = Cluster::head_only(Opts::default().cpus(2));
    // Outside /tmp whatever the checkout's path (CI may clone under /tmp).
    let data = tempfile::Builder::new()
        .prefix("rudel-private-tmp-agent")
        .tempdir_in("/var/tmp")
        .unwrap();
    let real = std::fs::canonicalize(data.path()).unwrap();
    assert!(
        !real.starts_with("/tmp"),
        "/var/tmp is /tmp on this machine: {}",
        real.display()
    );
    start_agent(&mut c, data.path());
    let node = c.nodes_json().into_iter().find(|n| n["name"] == "pt").unwrap();
    assert!(
        node["containment"].as_str().unwrap_or("").contains("private /tmp"),
        "{node}"
    );
    // `nobody` runs one of the jobs: it must enter the work directory (under the node's
    // /tmp, entered before /tmp is covered) and write its report there.
    for d in [c.tmp.path(), c.work.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let out = c.work.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = format!("rudel-private-{}", std::process::id());
    // Something every job would see in a shared /tmp.
    let host_file = Path::new("/tmp").join(format!("{marker}-host"));
    std::fs::write(&host_file, "node").unwrap();
    // A relative path: the work directory is under the node's /tmp, which the task's
    // absolute paths no longer reach (its cwd still does).
    let body = |tag: &str| {
        format!(
            "echo {tag} > /tmp/{marker}-{tag}; sleep 1; \
             {{ stat -c %a /tmp; pwd; ls -A /tmp; }} > out/{tag}.txt"
        )
    };
    let mut ids = Vec::new();
    for (user, tag) in [("root", "a"), ("nobody", "b")] {
        let o = c.rudel(&[
            "submit",
            "--json",
            "--user",
            user,
            "-o",
            "/dev/null",
            "--",
            "sh",
            "-c",
            &body(tag),
        ]);
        assert!(o.ok(), "{o}");
        let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
        ids.push(v["id"].as_u64().unwrap());
    }
    for id in &ids {
        let v = c.wait_finished(*id, Duration::from_secs(60));
        assert_eq!(v["state"], "completed", "{v:#}");
    }
    for tag in ["a", "b"] {
        let seen = std::fs::read_to_string(out.join(format!("{tag}.txt"))).unwrap();
        let lines: Vec<&str> = seen.lines().collect();
        assert_eq!(lines.first(), Some(&"1777"), "/tmp's mode: {seen}");
        assert_eq!(
            lines.get(1).copied(),
            Some(c.work.to_str().unwrap()),
            "started in its work directory: {seen}"
        );
        assert_eq!(
            lines[2..].to_vec(),
            vec![format!("{marker}-{tag}")],
            "only its own file in /tmp: {seen}"
        );
        assert!(
            !Path::new("/tmp").join(format!("{marker}-{tag}")).exists(),
            "the task's file reached the node's /tmp"
        );
    }
    std::fs::remove_file(&host_file).unwrap();
    let base = std::fs::canonicalize(data.path()).unwrap().join("job-tmp");
    let gone = common::eventually(Duration::from_secs(10), || {
        std::fs::read_dir(&base).map(|d| d.count() == 0).unwrap_or(false)
    });
    assert!(gone, "private /tmp directories left in {}", base.display());
}

#[test]
fn a_data_directory_under_tmp_is_refused_with_the_reason() {
    assert!(is_root(), "this test needs root (mount namespaces); CI runs as root");
    let mut c = Cluster::head_only(Opts::default());
    let data = c.tmp.path().join("agent-data");
    let token = c.join_token();
    let i = c.spawn_agent("pt", &data, &token, &["--private-tmp"]);
    let code = c.wait_exit(i, Duration::from_secs(30));
    assert_ne!(code, 0);
    let log = c.daemons[i].log_text();
    assert!(
        log.contains("--private-tmp needs a data directory outside /tmp"),
        "{log}"
    );
}
