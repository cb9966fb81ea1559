//! A local user on a follower head's machine needs no certificate either: the follower
//! passes socket calls on to the leader as the same user (its kernel-given identity,
//! vouched for by the follower's head certificate). Two heads on loopback, each with its
//! own data directory and socket; the user is `nobody`, the CLI run under `setpriv`.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, run_bounded, Cluster, Opts, Out, RUDEL};

/// `rudel ARGS` as `nobody` through the socket at `sock` (no credentials, no head).
fn as_nobody(sock: &Path, dir: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", RUDEL])
        .args(args)
        .current_dir(dir)
        .env("RUDEL_SOCKET", sock)
        .env_remove("RUDEL_CREDENTIALS")
        .env_remove("RUDEL_HEAD")
        .env_remove("RUDEL_LOG");
    run_bounded(cmd, Duration::from_secs(30))
}

#[test]
fn a_follower_forwards_socket_calls_to_the_leader_as_the_same_user() {
    let mut c = Cluster::head_only(Opts::default());
    for d in [c.tmp.path(), c.data.as_path(), c.work.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let t: serde_json::Value =
        serde_json::from_str(&c.rudel_ok(&["token", "create", "--role", "head", "--json"]).stdout).unwrap();
    let token = t["token"].as_str().unwrap().to_string();
    let data2 = c.data.join("head2");
    let addr2 = format!("127.0.0.1:{}", free_port());
    let leader = c.addr.clone();
    let args: Vec<String> = [
        "head",
        "--data",
        &data2.display().to_string(),
        "--listen",
        &addr2,
        "--join",
        &leader,
        "--token",
        &token,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let d = c.spawn_daemon("head", &args);
    c.daemons.push(d);
    let sock = data2.join("rudel.sock");
    let deadline = Instant::now() + Duration::from_secs(60);
    // The follower has joined once its socket answers and names the leader.
    loop {
        let o = as_nobody(&sock, &c.work, &["whoami", "--json"]);
        if o.ok() && o.stdout.contains("socket via a follower head") {
            let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
            assert_eq!(v["user"], "nobody", "{v}");
            assert_eq!(v["role"], "client", "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never forwarded: {o}\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // A write (the follower cannot propose) goes through as nobody.
    let o = as_nobody(&sock, &c.work, &["submit", "--json", "--hold", "--", "true"]);
    assert!(o.ok(), "{o}");
    let id = serde_json::from_str::<serde_json::Value>(o.stdout.trim()).unwrap()["id"]
        .as_u64()
        .unwrap();
    let v = c.show_json(id);
    assert_eq!(v["user"], "nobody", "the job is nobody's: {v:#}");
    // Claiming another user in the request changes nothing; nobody may not act on root's.
    let o = as_nobody(
        &sock,
        &c.work,
        &["submit", "--json", "--user", "root", "--hold", "--", "true"],
    );
    assert!(!o.ok(), "{o}");
    let root_job = c.submit(&["--hold", "--", "true"]);
    let o = as_nobody(&sock, &c.work, &["cancel", &root_job.to_string()]);
    assert!(!o.ok() && o.stderr.contains("belongs to root"), "{o}");
    // Its own job it may cancel, through the follower.
    let o = as_nobody(&sock, &c.work, &["cancel", &id.to_string()]);
    assert!(o.ok(), "{o}");
    assert_eq!(c.show_json(id)["state"], "cancelled");
}
