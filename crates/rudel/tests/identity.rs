//! Identity the head vouches for, over its local Unix socket (SO_PEERCRED) and TLS with
//! user-bound certificates, and authorization of job actions. Three Unix users are
//! created (idempotently) and the CLI runs as each of them; the ground truth is the uid
//! the test gave each process.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Cluster, Opts, Out, RUDEL};
use serde_json::Value;

const ALICE: &str = "rudel-ida";
const BOB: &str = "rudel-idb";
const CAROL: &str = "rudel-idc";

/// (uid, gid) of `name`, creating the user if needed (CI runs as root).
fn ensure_user(name: &str) -> (u32, u32) {
    if id_of(name).is_none() {
        let o = Command::new("useradd").args(["-M", "-s", "/bin/sh", name]).output();
        let o = o.expect("useradd (package passwd) is needed by this test");
        // Another test process may have created it meanwhile: only its existence matters.
        assert!(
            o.status.success() || id_of(name).is_some(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    id_of(name).expect("user exists after useradd")
}

fn id_of(name: &str) -> Option<(u32, u32)> {
    let field = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, name]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    Some((field("-u")?, field("-g")?))
}

/// The CLI as Unix user `name` through the head's well-known socket (no credentials).
fn as_user(c: &Cluster, dir: &Path, name: &str, env: &[(&str, &str)], args: &[&str]) -> Out {
    let (uid, gid) = ensure_user(name);
    let mut cmd = Command::new(RUDEL);
    cmd.args(args)
        .current_dir(dir)
        .uid(uid)
        .gid(gid)
        .env("RUDEL_HEAD", &c.addr)
        .env("HOME", dir)
        .env("USER", name)
        .env_remove("RUDEL_CREDENTIALS")
        .env_remove("RUDEL_SOCKET")
        .env_remove("RUDEL_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::run_bounded(cmd, Duration::from_secs(30))
}

fn json(o: &Out) -> Value {
    assert!(o.ok(), "{o}");
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o}"))
}

fn shared_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

fn submit_as(c: &Cluster, dir: &Path, name: &str, env: &[(&str, &str)], args: &[&str]) -> u64 {
    let mut a = vec!["submit", "--json", "-o", "none", "-e", "none"];
    a.extend_from_slice(args);
    json(&as_user(c, dir, name, env, &a))["id"].as_u64().expect("job id")
}

fn job_user(c: &Cluster, id: u64) -> String {
    c.show_json(id)["user"].as_str().unwrap_or_default().to_string()
}

#[test]
fn the_socket_names_the_user_and_users_act_only_on_their_own_jobs() {
    let c = Cluster::up(Opts::default());
    let dir = shared_dir();
    let d = dir.path();
    let (alice_uid, _) = ensure_user(ALICE);
    ensure_user(BOB);
    ensure_user(CAROL);

    // whoami: the kernel's uid, mapped to a name on the head; a client on the socket.
    let w = json(&as_user(&c, d, ALICE, &[], &["whoami", "--json"]));
    assert_eq!(w["user"], ALICE, "{w}");
    assert_eq!(w["uid"], alice_uid, "{w}");
    assert_eq!(w["role"], "client", "{w}");
    assert_eq!(w["transport"], "socket", "{w}");

    // Root on the head's machine (socket, no credentials) is an admin.
    let sock = c.data.join("head/rudel.sock");
    let mut cmd = c.command_in(d, &["whoami", "--json"]);
    cmd.env_remove("RUDEL_CREDENTIALS").env("RUDEL_SOCKET", &sock);
    let w = json(&common::run_bounded(cmd, Duration::from_secs(30)));
    assert_eq!(
        (w["user"].as_str(), w["role"].as_str(), w["transport"].as_str()),
        (Some("root"), Some("admin"), Some("socket")),
        "{w}"
    );

    // Jobs carry the user the head identified, whatever the client claims ($USER forged).
    let a = submit_as(&c, d, ALICE, &[], &["--", "sleep", "300"]);
    assert_eq!(job_user(&c, a), ALICE);
    let forged = submit_as(&c, d, BOB, &[("USER", ALICE), ("LOGNAME", ALICE)], &["--", "true"]);
    assert_eq!(
        job_user(&c, forged),
        BOB,
        "a forged $USER must not make bob's job alice's"
    );
    let o = as_user(&c, d, BOB, &[], &["submit", "--user", ALICE, "--", "true"]);
    assert!(
        !o.ok() && o.stderr.contains("only admins may submit as another user"),
        "{o}"
    );

    // Anyone lists every job (as squeue), with its user.
    let listed = json(&as_user(&c, d, BOB, &[], &["jobs", "--all", "--json"]));
    let row = listed.as_array().unwrap().iter().find(|j| j["id"] == a).cloned();
    assert_eq!(row.map(|r| r["user"].clone()), Some(Value::from(ALICE)), "{listed}");

    // Bob may not see details of, read, cancel, hold or update alice's job.
    let why = format!("job {a} belongs to {ALICE}; you are {BOB}");
    let id = a.to_string();
    for (verb, args) in [
        ("cancel", vec!["cancel", &id]),
        ("show the details of", vec!["show", &id]),
        // `rudel logs` looks the job up first: refused there, with the same reason.
        ("show the details of", vec!["logs", &id]),
        ("hold", vec!["hold", &id]),
        ("update", vec!["update", &id, "--priority", "5"]),
    ] {
        let o = as_user(&c, d, BOB, &[], &args);
        assert!(!o.ok(), "bob must not {verb} alice's job: {o}");
        assert!(
            o.stderr.contains(&format!("cannot {verb} job {a}: {why}")),
            "{verb}: {o}"
        );
    }
    let logs = c.logs_tail();
    assert!(
        logs.contains("not the job's user") && logs.contains(BOB),
        "refusals are logged with the caller: {logs}"
    );
    assert!(
        !common::is_final(c.show_json(a)["state"].as_str().unwrap()),
        "bob's cancel changed nothing"
    );

    // Alice sees her own; an operator-only action is refused to her.
    assert!(as_user(&c, d, ALICE, &[], &["show", &id]).ok());
    let o = as_user(&c, d, ALICE, &[], &["drain", "n1"]);
    assert!(!o.ok() && o.stderr.contains("needs an operator or admin"), "{o}");

    // An admin may submit for someone and act on anyone's job.
    let for_carol = c.submit(&["--user", CAROL, "-o", "none", "--", "true"]);
    assert_eq!(job_user(&c, for_carol), CAROL);
    c.rudel_ok(&["cancel", &id]);
    let s = c.wait_finished(a, Duration::from_secs(20));
    assert_eq!(s["state"], "cancelled", "{s}");
}

#[test]
fn certificates_name_their_user_and_the_claim_in_the_request_is_ignored() {
    let c = Cluster::up(Opts::default());
    let dir = shared_dir();
    let d = dir.path();

    // Client and operator tokens must name a user.
    let o = c.rudel(&["token", "create", "--role", "client"]);
    assert!(!o.ok() && o.stderr.contains("must name the Unix user"), "{o}");

    let t = json(&c.rudel(&["token", "create", "--role", "client", "--user", ALICE, "--json"]));
    let creds = d.join("alice-creds");
    let cd = creds.display().to_string();
    let o = c.rudel(&[
        "login",
        "--token",
        t["token"].as_str().unwrap(),
        "--save-to",
        &cd,
        "--name",
        "laptop",
    ]);
    assert!(o.ok(), "{o}");

    // Over TLS with alice's certificate, a request claiming bob still submits as alice.
    let tls = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = c.command_in(d, args);
        cmd.env("RUDEL_CREDENTIALS", &creds);
        for (k, v) in env {
            cmd.env(k, v);
        }
        common::run_bounded(cmd, Duration::from_secs(30))
    };
    let w = json(&tls(&["whoami", "--json"], &[]));
    assert_eq!(
        (w["user"].as_str(), w["role"].as_str(), w["transport"].as_str()),
        (Some(ALICE), Some("client"), Some("tls")),
        "{w}"
    );
    assert_eq!(w["fingerprint"].as_str().map(str::len), Some(64), "{w}");
    let o = tls(&["submit", "--json", "-o", "none", "--", "true"], &[("USER", BOB)]);
    let id = json(&o)["id"].as_u64().unwrap();
    assert_eq!(job_user(&c, id), ALICE, "the certificate decides, not $USER");
    let o = tls(&["submit", "--user", BOB, "--", "true"], &[]);
    assert!(
        !o.ok() && o.stderr.contains("only admins may submit as another user"),
        "{o}"
    );

    // An operator token: drain and resume allowed, other users' jobs still not.
    let t = json(&c.rudel(&["token", "create", "--role", "operator", "--user", CAROL, "--json"]));
    let ocreds = d.join("op-creds");
    let od = ocreds.display().to_string();
    assert!(c
        .rudel(&["login", "--token", t["token"].as_str().unwrap(), "--save-to", &od])
        .ok());
    let op = |args: &[&str]| {
        let mut cmd = c.command_in(d, args);
        cmd.env("RUDEL_CREDENTIALS", &ocreds);
        common::run_bounded(cmd, Duration::from_secs(30))
    };
    let node = c.nodes_json()[0]["name"].as_str().unwrap().to_string();
    assert!(op(&["drain", &node]).ok());
    assert!(op(&["resume", &node]).ok());
    let o = op(&["show", &id.to_string()]);
    assert!(
        o.stderr
            .contains(&format!("job {id} belongs to {ALICE}; you are {CAROL}")),
        "{o}"
    );
}
