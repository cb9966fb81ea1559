//! The job-scoped key-value store behind `rudel kv` (docs/parallel-jobs.md): how the tasks
//! of one job find each other (a barrier, rank 0 publishing `host:port`).
//!
//! It lives in the leader's memory, like job steps: it serves processes of a running job,
//! is bounded per job, and is dropped when the job stops running ([`Kv::reap`]). A leader
//! change loses it; a waiting `rudel kv wait` then fails with the lost connection, never
//! hangs.
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use rudel_core::State;
use rudel_proto::v1 as pb;

/// Longest key.
pub const MAX_KEY: usize = 256;
/// Longest value.
pub const MAX_VALUE: usize = 64 * 1024;
/// Most bytes of keys and values one job may hold.
pub const MAX_JOB_BYTES: usize = 4 * 1024 * 1024;
/// Most callers one job may have waiting.
pub const MAX_WAITERS: usize = 10_000;

/// Who waits for a key: the agent's node and its request id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiter {
    pub node: String,
    pub id: u64,
}

#[derive(Debug, Default)]
struct JobKv {
    map: BTreeMap<String, String>,
    bytes: usize,
    waiters: BTreeMap<String, Vec<Waiter>>,
    nwaiters: usize,
}

/// Every running job's store.
#[derive(Debug, Default)]
pub struct Kv {
    jobs: Mutex<HashMap<u64, JobKv>>,
}

/// What a request leads to: a reply to the caller now, and replies to earlier waiters.
#[derive(Debug, Default)]
pub struct Outcome {
    /// None: the caller waits (answered later through `wake`).
    pub reply: Option<pb::KvReply>,
    pub wake: Vec<(Waiter, pb::KvReply)>,
}

fn err(id: u64, e: impl Into<String>) -> pb::KvReply {
    pb::KvReply {
        id,
        error: e.into(),
        ..Default::default()
    }
}

fn found(id: u64, value: &str) -> pb::KvReply {
    pb::KvReply {
        id,
        error: String::new(),
        found: true,
        value: value.to_string(),
    }
}

/// The job is running and `node` holds part of it (its task, or a slice of its allocation).
pub fn check(state: &State, node: &str, r: &pb::KvRequest) -> Result<(), String> {
    let job = state
        .jobs
        .get(&r.job)
        .filter(|j| !j.running.is_empty())
        .ok_or_else(|| format!("job {} is not running", r.job))?;
    let on_node = job.running.values().any(|rt| {
        let own = state.nodes.get(rt.node as usize).is_some_and(|n| n.name == node);
        own || rt
            .alloc
            .as_ref()
            .is_some_and(|a| a.slices.iter().any(|s| s.name == node))
    });
    if !on_node {
        return Err(format!("job {} has no task on node {node}", r.job));
    }
    Ok(())
}

impl Kv {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, JobKv>> {
        // A poisoned lock only means a holder panicked; the maps stay consistent.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves one request (already checked) from `node`'s agent.
    pub fn request(&self, node: &str, r: &pb::KvRequest) -> Outcome {
        if r.key.is_empty() || r.key.len() > MAX_KEY {
            return Outcome {
                reply: Some(err(r.id, format!("a key has 1 to {MAX_KEY} bytes"))),
                ..Default::default()
            };
        }
        let mut jobs = self.lock();
        let kv = jobs.entry(r.job).or_default();
        match r.op.as_str() {
            "get" => Outcome {
                reply: Some(match kv.map.get(&r.key) {
                    Some(v) => found(r.id, v),
                    None => pb::KvReply {
                        id: r.id,
                        ..Default::default()
                    },
                }),
                ..Default::default()
            },
            "wait" => match kv.map.get(&r.key) {
                Some(v) => Outcome {
                    reply: Some(found(r.id, v)),
                    ..Default::default()
                },
                None if kv.nwaiters >= MAX_WAITERS => Outcome {
                    reply: Some(err(
                        r.id,
                        format!("job {} has {MAX_WAITERS} waiting callers (limit)", r.job),
                    )),
                    ..Default::default()
                },
                None => {
                    kv.nwaiters += 1;
                    let w = Waiter {
                        node: node.to_string(),
                        id: r.id,
                    };
                    kv.waiters.entry(r.key.clone()).or_default().push(w);
                    Outcome::default()
                }
            },
            "put" => set(kv, r, r.value.clone()),
            "incr" => {
                let now = kv.map.get(&r.key).map_or(Ok(0), |v| v.parse::<i64>());
                match now {
                    Ok(n) => set(kv, r, n.saturating_add(1).to_string()),
                    Err(_) => Outcome {
                        reply: Some(err(r.id, format!("{} does not hold a number", r.key))),
                        ..Default::default()
                    },
                }
            }
            other => Outcome {
                reply: Some(err(r.id, format!("unknown kv operation {other:?}"))),
                ..Default::default()
            },
        }
    }

    /// Forgets the stores of jobs that no longer run; their waiters are answered.
    pub fn reap(&self, state: &State) -> Vec<(Waiter, pb::KvReply)> {
        let mut jobs = self.lock();
        if jobs.is_empty() {
            return Vec::new();
        }
        let mut wake = Vec::new();
        jobs.retain(|id, kv| {
            let running = state.jobs.get(id).is_some_and(|j| !j.running.is_empty());
            if !running {
                for w in std::mem::take(&mut kv.waiters).into_values().flatten() {
                    let reply = err(w.id, format!("job {id} ended"));
                    wake.push((w, reply));
                }
            }
            running
        });
        wake
    }
}

/// Stores `value` under the request's key (bounded) and wakes the key's waiters.
fn set(kv: &mut JobKv, r: &pb::KvRequest, value: String) -> Outcome {
    if value.len() > MAX_VALUE {
        return Outcome {
            reply: Some(err(r.id, format!("a value has at most {MAX_VALUE} bytes"))),
            ..Default::default()
        };
    }
    let old = kv.map.get(&r.key).map_or(0, |v| r.key.len() + v.len());
    let bytes = kv.bytes - old + r.key.len() + value.len();
    if bytes > MAX_JOB_BYTES {
        return Outcome {
            reply: Some(err(
                r.id,
                format!(
                    "job {} would hold {bytes} bytes of keys and values (limit {MAX_JOB_BYTES})",
                    r.job
                ),
            )),
            ..Default::default()
        };
    }
    kv.bytes = bytes;
    let waiters = kv.waiters.remove(&r.key).unwrap_or_default();
    kv.nwaiters -= waiters.len();
    let wake = waiters
        .into_iter()
        .map(|w| {
            let reply = found(w.id, &value);
            (w, reply)
        })
        .collect();
    let reply = found(r.id, &value);
    kv.map.insert(r.key.clone(), value);
    Outcome {
        reply: Some(reply),
        wake,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: u64, op: &str, key: &str, value: &str) -> pb::KvRequest {
        pb::KvRequest {
            id,
            job: 5,
            op: op.into(),
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_waiter_is_woken_by_the_put_of_its_key() {
        let kv = Kv::default();
        let o = kv.request("n2", &req(1, "wait", "addr", ""));
        assert!(o.reply.is_none() && o.wake.is_empty());
        let o = kv.request("n1", &req(2, "put", "addr", "10.0.0.1:29500"));
        assert_eq!(o.reply.unwrap().value, "10.0.0.1:29500");
        assert_eq!(o.wake.len(), 1);
        assert_eq!(
            o.wake[0].0,
            Waiter {
                node: "n2".into(),
                id: 1
            }
        );
        assert!(o.wake[0].1.found);
        let g = kv.request("n3", &req(3, "get", "addr", "")).reply.unwrap();
        assert!(g.found && g.value == "10.0.0.1:29500");
        let g = kv.request("n3", &req(4, "get", "none", "")).reply.unwrap();
        assert!(!g.found && g.error.is_empty());
    }

    #[test]
    fn incr_counts_atomically_and_refuses_non_numbers() {
        let kv = Kv::default();
        for want in 1..=3 {
            assert_eq!(
                kv.request("n1", &req(want, "incr", "c", "")).reply.unwrap().value,
                want.to_string()
            );
        }
        kv.request("n1", &req(9, "put", "s", "x"));
        assert!(kv
            .request("n1", &req(10, "incr", "s", ""))
            .reply
            .unwrap()
            .error
            .contains("number"));
    }

    #[test]
    fn sizes_are_bounded() {
        let kv = Kv::default();
        let big = "x".repeat(MAX_VALUE + 1);
        assert!(kv
            .request("n1", &req(1, "put", "k", &big))
            .reply
            .unwrap()
            .error
            .contains("at most"));
        assert!(kv
            .request("n1", &req(2, "put", "", "v"))
            .reply
            .unwrap()
            .error
            .contains("1 to"));
        let v = "y".repeat(MAX_VALUE);
        let mut refused = false;
        for i in 0..100 {
            let r = kv.request("n1", &req(3, "put", &format!("k{i}"), &v)).reply.unwrap();
            if !r.error.is_empty() {
                assert!(r.error.contains("limit"), "{}", r.error);
                refused = true;
                break;
            }
        }
        assert!(refused, "the per-job bound must refuse");
    }
}
