//! Concurrent local submits (issue 12's fast path): many `rudel submit` processes at once
//! through the head's Unix socket, which commits the submits that arrive together in one
//! log entry. Each client must get back the id of its own job. Ground truth: every job
//! is named by the client that submitted it, and the head's job list must give each
//! printed id that name.
mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{run_bounded, Cluster, Opts, Out, RUDEL};
use serde_json::Value;

const CLIENTS: usize = 20;
const SUBMITS_EACH: usize = 5;

/// `rudel ARGS` through the head's socket (no credentials).
fn via_socket(c: &Cluster, args: &[&str]) -> Out {
    let mut cmd = Command::new(RUDEL);
    cmd.args(args)
        .current_dir(&c.work)
        .env("RUDEL_SOCKET", c.data.join("head/rudel.sock"))
        .env("RUDEL_HEAD", &c.addr)
        .env_remove("RUDEL_CREDENTIALS")
        .env_remove("RUDEL_LOG");
    run_bounded(cmd, Duration::from_secs(60))
}

/// `rudel submit --json --hold -J NAME -- true` through the socket: the printed job id.
fn submit_named(c: &Cluster, name: &str) -> u64 {
    let o = via_socket(c, &["submit", "--json", "--hold", "-J", name, "--", "true"]);
    assert!(o.ok(), "submit {name} failed: {o}");
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o}"));
    v["id"].as_u64().unwrap_or_else(|| panic!("no id: {o}"))
}

#[test]
fn concurrent_socket_submits_each_get_their_own_job() {
    let c = Cluster::up(Opts::default());
    let who = via_socket(&c, &["whoami", "--json"]);
    assert!(
        who.ok() && who.stdout.replace(' ', "").contains(r#""transport":"socket""#),
        "{who}"
    );
    let printed: BTreeMap<u64, String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let c = &c;
                s.spawn(move || {
                    (0..SUBMITS_EACH)
                        .map(|k| {
                            let name = format!("c{i}-s{k}");
                            (submit_named(c, &name), name)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        printed.len(),
        CLIENTS * SUBMITS_EACH,
        "two clients were given the same id: {printed:?}"
    );
    let listed: BTreeMap<u64, String> = c
        .jobs_all()
        .iter()
        .map(|j| (j["id"].as_u64().unwrap(), j["name"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        listed, printed,
        "the head's jobs differ from what the clients were told"
    );
}
