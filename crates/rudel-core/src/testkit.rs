//! What the state machine's unit tests share: a one-node cluster, a plain job spec, a
//! submit that must succeed.
use crate::command::{Command, NodeRegistration, Response, TaskOutcome, TaskReport};
use crate::ids::{JobId, TaskKey};
use crate::job::JobSpec;
use crate::state::State;

/// A state with one node `n1` (uid `u1`) of `cpus` cpus and 1 GiB, registered at 1,000 ms.
pub fn one_node(cpus: u32) -> State {
    let mut s = State::new();
    s.apply(Command::RegisterNode {
        reg: NodeRegistration {
            name: "n1".into(),
            uid: "u1".into(),
            cpus,
            mem_bytes: 1 << 30,
            ..NodeRegistration::default()
        },
        now_ms: 1_000,
    });
    s
}

/// `true` on one cpu in `/`, user `u`.
pub fn spec() -> JobSpec {
    JobSpec {
        argv: vec!["true".into()],
        cpus: 1,
        chdir: "/".into(),
        user: "u".into(),
        ..JobSpec::default()
    }
}

/// Submits at the state's time; panics unless accepted.
pub fn submit(s: &mut State, spec: JobSpec) -> JobId {
    let now = s.now_ms;
    match s.apply(Command::Submit {
        request_id: String::new(),
        spec,
        now_ms: now,
    }) {
        Response::Submitted { job, .. } => job,
        other => panic!("{other:?}"),
    }
}

/// An agent's report that `key`'s `attempt` ended with `outcome` and exit `code`.
pub fn report(key: TaskKey, attempt: u32, outcome: TaskOutcome, code: i32, start_ms: u64, end_ms: u64) -> TaskReport {
    TaskReport {
        key,
        attempt,
        outcome,
        exit_code: Some(code),
        signal: None,
        start_ms,
        end_ms,
        message: String::new(),
        usage: Default::default(),
    }
}

/// Applies one `Configure` entry with these settings at the state's time.
pub fn configure(s: &mut State, settings: &[(&str, &str)]) -> Response {
    let now = s.now_ms;
    s.apply(Command::Configure {
        settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        now_ms: now,
    })
}
