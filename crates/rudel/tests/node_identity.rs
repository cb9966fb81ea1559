//! A node name is bound to one machine (its agent data directory's uid): a second machine
//! joining under a name in use is refused, on both sides, until an admin forgets the node;
//! the initial join token expires.
mod common;

use std::time::Duration;

use common::{Cluster, Opts};
use serde_json::Value;

/// The uid (node id) an agent keeps in its data directory.
fn uid_of(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("uid"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn node(c: &Cluster, name: &str) -> Value {
    c.nodes_json()
        .into_iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in `rudel nodes`"))
}

#[test]
fn a_second_machine_cannot_take_a_node_name_in_use() {
    let mut c = Cluster::head_only(Opts::default().cpus(2));
    c.start_named_agent("n1");
    let holder_dir = c.data.join("agent-n1");
    let holder_addr = node(&c, "n1")["address"].as_str().unwrap_or_default().to_string();
    assert!(!holder_addr.is_empty(), "the node record has the session's address");
    let job = c.submit(&["--no-requeue", "--", "sleep", "5"]);
    c.wait_state(job, |v| v["state"] == "running", Duration::from_secs(10));

    // Another machine (data directory) under the same name, with the initial token.
    let impostor_dir = c.data.join("impostor");
    let token = c.join_token();
    let i = c.spawn_agent("n1", &impostor_dir, &token, &["--cpus", "1"]);
    let code = c.wait_exit(i, Duration::from_secs(20));
    assert_ne!(code, 0, "a refused agent exits with an error");
    let log = c.daemons[i].log_text();
    for want in [
        "node name n1 is held by another machine",
        &holder_addr,
        "--name",
        "rudel node forget n1",
    ] {
        assert!(log.contains(want), "the agent's error should say {want:?}:\n{log}");
    }
    assert!(
        !impostor_dir.join("tls/cert.pem").exists(),
        "no certificate was issued to the second machine"
    );

    // The head logged the refusal with both machines' ids.
    let head_log = c.daemon("head").log_text();
    let refusal = head_log
        .lines()
        .find(|l| l.contains("refused join") && l.contains("held by another machine"))
        .unwrap_or_else(|| panic!("the head should log the refusal:\n{head_log}"));
    assert!(refusal.contains("WARN"), "{refusal}");
    assert!(refusal.contains(&uid_of(&holder_dir)), "holder's id: {refusal}");
    assert!(
        refusal.contains(&uid_of(&impostor_dir)),
        "refused machine's id: {refusal}"
    );

    // The holder was never disturbed: its job completes, its size is unchanged.
    let v = c.wait_finished(job, Duration::from_secs(20));
    assert_eq!(v["state"], "completed", "{v:#}");
    let n1 = node(&c, "n1");
    assert_eq!(n1["cpus"], 2, "{n1}");
    assert_eq!(n1["state"], "idle", "{n1}");
    assert!(
        !head_log.contains("came back as a different machine"),
        "no task was failed for a new machine"
    );
}

#[test]
fn forgetting_a_node_lets_a_new_machine_take_its_name() {
    let mut c = Cluster::head_only(Opts::default().cpus(2));
    let first = c.start_named_agent("n1");
    let first_dir = c.data.join("agent-n1");
    assert_eq!(c.daemons[first].stop(libc::SIGTERM, Duration::from_secs(10)), Some(0));

    // Only an admin's word frees the name.
    let o = c.rudel_ok(&["node", "forget", "n1", "--json"]);
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o}"));
    assert_eq!(v["name"], "n1", "{v}");
    assert_eq!(v["tasks"], 0, "{v}");
    assert_eq!(v["revoked_certs"], 1, "{v}");
    let n1 = node(&c, "n1");
    assert_eq!(n1["state"], "down", "{n1}");
    assert!(n1["reason"].as_str().unwrap_or("").contains("forgotten"), "{n1}");
    let o = c.rudel(&["node", "forget", "nosuch"]);
    assert!(!o.ok() && o.stderr.contains("no node nosuch"), "{o}");

    // The new machine joins under the name, with its own size.
    let token = c.join_token();
    let new_dir = c.data.join("replacement");
    c.spawn_agent("n1", &new_dir, &token, &["--cpus", "1"]);
    let ok = common::eventually(Duration::from_secs(20), || {
        c.nodes_json()
            .iter()
            .any(|n| n["name"] == "n1" && n["state"] == "idle" && n["cpus"] == 1)
    });
    assert!(ok, "the replacement should register as n1:\n{}", c.logs_tail());
    let job = c.submit(&["--", "true"]);
    assert_eq!(c.wait_finished(job, Duration::from_secs(20))["state"], "completed");

    // The old machine cannot come back under the name: its certificate was revoked.
    let old = c.spawn_agent("n1", &first_dir, &token, &[]);
    assert_ne!(c.wait_exit(old, Duration::from_secs(20)), 0);
    let log = c.daemons[old].log_text();
    assert!(
        log.contains("revoked") || log.contains("held by another machine"),
        "{log}"
    );
    assert_eq!(node(&c, "n1")["cpus"], 1, "the replacement keeps the name");
}

#[test]
fn the_initial_join_token_expires_and_expired_tokens_join_nothing() {
    let mut c = Cluster::head_only(Opts::default());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let o = c.rudel_ok(&["token", "list", "--json"]);
    let tokens: Value = serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o}"));
    let initial = tokens
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|t| t["description"].as_str().unwrap_or("").contains("initial"))
        })
        .unwrap_or_else(|| panic!("initial token listed: {tokens}"))
        .clone();
    let expires = initial["expires_unix_ms"].as_u64().unwrap_or(0);
    let day = 24 * 3600 * 1000;
    assert!(
        expires > now + day - 600_000 && expires <= now + day + 60_000,
        "the initial token expires in 24 h by default: {initial}"
    );

    // A token made with a short TTL is refused once it has expired.
    let o = c.rudel_ok(&["token", "create", "--ttl", "1s", "--json"]);
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o}"));
    let token = v["token"].as_str().expect("token").to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let dir = c.data.join("late");
    let i = c.spawn_agent("late", &dir, &token, &[]);
    assert_ne!(c.wait_exit(i, Duration::from_secs(20)), 0);
    let log = c.daemons[i].log_text();
    assert!(log.contains("has expired"), "{log}");
    let list = c.rudel_ok(&["token", "list"]).stdout;
    assert!(
        list.lines().any(|l| l.contains("expired")),
        "`token list` shows it expired:\n{list}"
    );
}

#[test]
fn rudel_up_restarts_after_its_join_token_expired_even_with_a_wiped_agent_directory() {
    let mut c = Cluster::up(Opts::default().up_args(&["--join-token-ttl", "2s"]));
    let port = c.port();
    let job = c.submit(&["--", "true"]);
    assert_eq!(c.wait_finished(job, Duration::from_secs(20))["state"], "completed");
    let first_log = c.daemon("up").log_text();
    assert!(first_log.contains("this token can be used until"), "{first_log}");

    // Restart once the initial token has expired: the local agent has its certificate.
    c.daemon("up").stop(libc::SIGTERM, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(2500));
    c.start_up(Some(port));
    let log = c.daemon("up").log_text();
    assert!(log.contains("the initial one has expired"), "{log}");
    let job = c.submit(&["--", "true"]);
    assert_eq!(c.wait_finished(job, Duration::from_secs(20))["state"], "completed");

    // Its data directory wiped: `rudel up` rebinds its own node name (nobody else could,
    // with the head down) and joins with a token made for it.
    c.daemon("up").stop(libc::SIGTERM, Duration::from_secs(15));
    std::fs::remove_dir_all(c.data.join("agent")).unwrap();
    c.start_up(Some(port));
    let log = c.daemon("up").log_text();
    assert!(log.contains("forgot the node it replaces"), "{log}");
    let job = c.submit(&["--", "true"]);
    assert_eq!(c.wait_finished(job, Duration::from_secs(20))["state"], "completed");
}
