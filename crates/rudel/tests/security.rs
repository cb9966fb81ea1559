//! Mutual TLS, join tokens and roles, seen from the CLI: who gets in, who is refused, what
//! they are told, and what the head logs.
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Cluster, Opts};
use serde_json::Value;

/// The log of the daemon with `role` (the whole file).
fn log_of(c: &mut Cluster, role: &str) -> String {
    c.daemon(role).log_text()
}

/// Runs the CLI with the given credentials directory instead of the admin one.
fn as_user(c: &Cluster, creds: &Path, args: &[&str]) -> common::Out {
    let mut cmd = c.command_in(&c.work, args);
    cmd.env("RUDEL_CREDENTIALS", creds);
    common::run_bounded(cmd, Duration::from_secs(30))
}

fn create_token(c: &Cluster, args: &[&str]) -> (u64, String) {
    let mut a = vec!["token", "create", "--json"];
    a.extend_from_slice(args);
    let o = c.rudel_ok(&a);
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o}"));
    (
        v["id"].as_u64().expect("token id"),
        v["token"].as_str().expect("token").to_string(),
    )
}

fn login(c: &Cluster, token: &str, dir: &Path) -> common::Out {
    let d = dir.display().to_string();
    c.rudel(&["login", "--token", token, "--save-to", &d, "--name", "alice"])
}

#[test]
fn users_join_with_tokens_and_roles_limit_them() {
    let mut c = Cluster::up(Opts::default());
    let home = tempfile::tempdir().unwrap();
    let alice = home.path().join("alice");

    // A client token gives a user certificate: submit and read, nothing of an admin's.
    let (id, token) = create_token(
        &c,
        &["--role", "client", "--user", "root", "--description", "alice laptop"],
    );
    let o = login(&c, &token, &alice);
    assert!(o.ok(), "{o}");
    assert!(o.stdout.contains("role client"), "{o}");
    let key_mode = std::fs::metadata(alice.join("key.pem")).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(key_mode.ok(), Some(0o600), "the private key must be private");
    let o = as_user(&c, &alice, &["submit", "--", "echo", "from-alice"]);
    assert!(o.ok(), "a client may submit: {o}");
    assert!(as_user(&c, &alice, &["jobs", "--all"]).stdout.contains("echo"));
    for admin_only in [
        vec!["drain", "n1"],
        vec!["exec", "--all", "--", "true"],
        vec!["token", "list"],
        vec!["token", "create"],
        vec!["node", "forget", "n1"],
    ] {
        let o = as_user(&c, &alice, &admin_only);
        assert_eq!(
            o.code,
            Some(1),
            "`{}` must be refused to a client: {o}",
            admin_only.join(" ")
        );
        // Draining is also an operator's (issue 12's role); the rest is admins' only.
        let want = if admin_only[0] == "drain" {
            "drain needs an operator or admin"
        } else {
            "needs an admin certificate"
        };
        assert!(o.stderr.contains(want), "{o}");
    }
    let log = log_of(&mut c, "up");
    assert!(
        log.contains("refused drain: operators and admins only"),
        "refusals are logged:\n{log}"
    );

    // The token list shows who holds certificates issued with it.
    let list: Value = serde_json::from_str(c.rudel_ok(&["token", "list", "--json"]).stdout.trim()).unwrap();
    let t = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .expect("token listed")
        .clone();
    assert_eq!(t["uses"], 1, "{t}");
    assert_eq!(t["holders"], serde_json::json!(["alice"]), "{t}");
    assert_eq!(t["role"], "client", "{t}");

    // An agent token does not make a user, and a wrong secret makes nothing.
    let agent_token = c.join_token();
    let o = login(&c, &agent_token, &home.path().join("x"));
    assert!(!o.ok() && o.stderr.contains("is for role agent"), "{o}");
    let forged = format!("{}0", &token[..token.len() - 1]);
    let forged = if forged == token {
        format!("{}1", &token[..token.len() - 1])
    } else {
        forged
    };
    let o = login(&c, &forged, &home.path().join("y"));
    assert!(!o.ok() && o.stderr.contains("invalid join token"), "{o}");
    assert!(!home.path().join("y").exists(), "nothing saved for a refused login");
    assert!(log_of(&mut c, "up").contains("refused join: invalid join token"));

    // Revoking the token revokes alice's certificate at once.
    let o = c.rudel_ok(&["token", "revoke", &id.to_string()]);
    assert!(o.stdout.contains("alice"), "{o}");
    let o = as_user(&c, &alice, &["jobs"]);
    assert!(!o.ok() && o.stderr.contains("revoked"), "{o}");
    let o = login(&c, &token, &home.path().join("z"));
    assert!(
        !o.ok() && o.stderr.contains("was revoked"),
        "a revoked token issues nothing: {o}"
    );
}

#[test]
fn clients_without_a_valid_certificate_are_refused() {
    let mut c = Cluster::up(Opts::default());
    let tmp = tempfile::tempdir().unwrap();

    // The cluster's CA but no certificate: TLS works, every call is refused.
    let ca_only = tmp.path().join("ca-only");
    std::fs::create_dir_all(&ca_only).unwrap();
    std::fs::copy(c.admin_credentials().join("ca.pem"), ca_only.join("ca.pem")).unwrap();
    let o = as_user(&c, &ca_only, &["jobs"]);
    assert_eq!(o.code, Some(1), "{o}");
    assert!(o.stderr.contains("no client certificate"), "{o}");
    assert!(o.stderr.contains("rudel login"), "the message says what to do: {o}");
    assert!(log_of(&mut c, "up").contains("refused request: no client certificate"));

    // No credentials at all: the CLI says where it looked and how to get some.
    let o = as_user(&c, &tmp.path().join("missing"), &["jobs"]);
    assert!(!o.ok() && o.stderr.contains("no rudel credentials found"), "{o}");

    // Credentials of another cluster: the head is not trusted (and would not trust us).
    let other = Cluster::up(Opts::default());
    let o = as_user(&c, &other.admin_credentials(), &["jobs"]);
    assert!(!o.ok(), "{o}");
    assert!(o.stderr.contains("not from our cluster CA"), "{o}");

    // Another cluster's certificate with this cluster's CA file: the head refuses it.
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(c.admin_credentials().join("ca.pem"), mixed.join("ca.pem")).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(other.admin_credentials().join(f), mixed.join(f)).unwrap();
    }
    let o = as_user(&c, &mixed, &["jobs"]);
    assert!(!o.ok(), "{o}");
    assert!(o.stderr.contains("not issued by this cluster"), "{o}");
    assert!(
        log_of(&mut c, "up").contains("refused request: certificate not issued by this cluster"),
        "the head logs the refusal"
    );

    // Short-lived certificates expire, with a message saying so.
    let (_, token) = create_token(&c, &["--role", "client", "--user", "root", "--cert-ttl", "2s"]);
    let brief = tmp.path().join("brief");
    assert!(login(&c, &token, &brief).ok());
    assert!(as_user(&c, &brief, &["jobs"]).ok());
    std::thread::sleep(Duration::from_millis(2500));
    let o = as_user(&c, &brief, &["jobs"]);
    assert!(!o.ok() && o.stderr.contains("expired"), "{o}");
}

#[test]
fn revoking_a_token_disconnects_its_nodes() {
    let mut c = Cluster::head_only(Opts::default());
    c.start_named_agent("n1");
    let (id, token) = create_token(&c, &["--role", "agent", "--description", "rack b"]);
    c.start_named_agent_with("n2", &["--token", &token]);

    // A job pinned to n2 runs, then n2's token is revoked mid-run.
    let job = c.submit(&["--requeue", "--constraint", "name==n2", "--", "sleep", "30"]);
    c.wait_state(job, |v| v["state"] == "running", Duration::from_secs(10));
    let t0 = Instant::now();
    let o = c.rudel_ok(&["token", "revoke", &id.to_string()]);
    assert!(o.stdout.contains("n2"), "{o}");
    loop {
        let n2 = c.nodes_json().into_iter().find(|n| n["name"] == "n2");
        if n2.as_ref().is_some_and(|n| n["state"] == "down") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "n2 should be down at once after revocation: {n2:?}\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // n1 is untouched, and the agent was told why.
    let n1 = c.nodes_json().into_iter().find(|n| n["name"] == "n1").unwrap();
    assert_eq!(n1["state"], "idle", "{n1}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = log_of(&mut c, "agent");
        if log.contains("was revoked") {
            break;
        }
        assert!(Instant::now() < deadline, "the agent should log the revocation:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The revoked agent kills its tasks (the cluster gave them up) and leaves.
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(code) = c.daemon("agent").exited() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "a revoked agent should exit:\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(code, 0, "leaving because of revocation is an error exit");
    assert!(log_of(&mut c, "agent").contains("leaving the cluster"));
    // The job's task was given up (requeued; nothing else matches its constraint).
    let v = c.show_json(job);
    assert_ne!(v["state"], "running", "{v}");
    let _ = c.rudel(&["cancel", &job.to_string()]);
}
