//! The cluster and the work of the `scale` mode: nodes of mixed sizes in three pools, the
//! scheduling configuration (partitions, fair-share, multifactor, backfill), and job specs
//! of mixed shapes from 100 users, all drawn from a fixed seed.
use std::collections::BTreeMap;
use std::sync::Arc;

use rudel_core::array::{ArraySpec, IndexRange};
use rudel_core::{Command, JobSpec, NodeRegistration, TaskKey};

use crate::rng::{mix, Rng};

const GIB: u64 = 1 << 30;
const MIN: u64 = 60_000;

/// Node `i`, with 4 GiB per cpu: pool `a` (60%, 16 or 32 cpus), `b` (30%, 32 cpus), `c`
/// (10%, 64 cpus). Every pool has nodes of 32 cpus or more, so every job fits somewhere
/// in each of its partitions, at any cluster size from 10 nodes.
pub fn register(i: u32, now_ms: u64) -> Command {
    let (pool, cpus) = match i % 10 {
        0..=5 => ("a", [16, 32][i as usize % 2]),
        6..=8 => ("b", 32),
        _ => ("c", 64),
    };
    Command::RegisterNode {
        reg: NodeRegistration {
            name: format!("n{i}"),
            uid: format!("u{i}"),
            boot_id: "b".into(),
            cpus,
            mem_bytes: u64::from(cpus) * 4 * GIB,
            mem_enforcement: "rlimit".into(),
            version: "sim".into(),
            arch: "x86_64".into(),
            os: "linux".into(),
            labels: BTreeMap::from([("pool".to_string(), pool.to_string())]),
            ..NodeRegistration::default()
        },
        now_ms,
    }
}

/// The scheduling configuration: `multifactor` with fair-share over `users` users of 1–4
/// shares, EASY backfill, and three partitions (`batch` default on pools a+b, `short` on
/// every node at a higher tier, `big` on pool c; none unless `a.partitions`); then `extra`
/// settings (`--set`).
pub fn configure(a: &Amount, extra: &[(String, String)], now_ms: u64) -> Command {
    let mut settings: Vec<(String, String)> = [
        ("version", "5"),
        ("order", "multifactor"),
        ("backfill", "easy"),
        ("multifactor.weight_partition", "1000"),
        ("multifactor.weight_jobsize", "100"),
        (
            "partition.batch",
            "nodes=pool==a || pool==b;default=yes;default_time=10m;max_time=1h;factor=1",
        ),
        (
            "partition.short",
            "nodes=all;tier=1;default_time=5m;max_time=30m;factor=2",
        ),
        ("partition.big", "nodes=pool==c;default_time=30m;max_time=2h;factor=1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if !a.partitions {
        settings.retain(|(k, _)| !k.starts_with("partition."));
    }
    for u in 0..a.users {
        settings.push((format!("fairshare.user.{}", user(u)), (1 + u % 4).to_string()));
    }
    settings.extend(extra.iter().cloned());
    Command::Configure { settings, now_ms }
}

pub fn user(u: u32) -> String {
    format!("user{u:03}")
}

/// A user's environment as a shell would send it (~1.5 KB): identical for one user's
/// jobs, which the head shares (see `rudel_core::intern`).
fn env_of(user: &str) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = (0..20)
        .map(|i| (format!("SIM_VAR_{i:02}"), format!("value-{i}-{}", "x".repeat(40))))
        .collect();
    env.insert("USER".into(), user.into());
    env.insert("HOME".into(), format!("/home/{user}"));
    env.insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin:/opt/sim/bin".into());
    env
}

/// What one job asks for, before it is made a spec.
#[derive(Clone, Copy)]
struct Shape {
    cpus: u32,
    mem_per_cpu: u64,
    limit_ms: u64,
    partition: &'static str,
}

fn draw_shape(r: &mut Rng, array: bool) -> Shape {
    let partition = r.pick(&[(60, ""), (30, "short"), (10, "big")]);
    let cpus = if array {
        r.pick(&[(80, 1), (20, 2)])
    } else {
        r.pick(&[(50, 1), (20, 2), (15, 4), (10, 8), (4, 16), (1, 32)])
    };
    let mem_per_cpu = r.pick(&[(70, 0), (20, GIB), (10, 3 * GIB)]);
    // Half the jobs set no limit and get their partition's default (what backfill uses).
    let limit_ms = match partition {
        "short" => r.pick(&[(50, 0), (25, 2 * MIN), (25, 10 * MIN)]),
        "big" => r.pick(&[(50, 0), (25, 20 * MIN), (25, 60 * MIN)]),
        _ => r.pick(&[(50, 0), (20, 5 * MIN), (20, 20 * MIN), (10, 30 * MIN)]),
    };
    Shape {
        cpus,
        mem_per_cpu,
        limit_ms,
        partition,
    }
}

/// The `n`-th job's spec (a separate job, or an array of `tasks` tasks).
fn spec(n: u64, a: &Amount, array_tasks: u32, r: &mut Rng) -> JobSpec {
    let u = user((n % u64::from(a.users.max(1))) as u32);
    let mut shape = draw_shape(r, array_tasks > 0);
    if !a.partitions {
        // The same jobs in one queue: the limit they would get from their partition.
        if shape.limit_ms == 0 {
            shape.limit_ms = default_time_ms(shape.partition);
        }
        shape.partition = "";
    }
    JobSpec {
        argv: vec![
            format!("/home/{u}/bin/simulate"),
            "--input".into(),
            format!("data/{n}.csv"),
        ],
        name: format!("job-{n}"),
        cpus: shape.cpus,
        mem_bytes: shape.mem_per_cpu * u64::from(shape.cpus),
        time_limit_ms: shape.limit_ms,
        chdir: format!("/home/{u}/project"),
        // A fresh map per submit, as decoding a client's request gives.
        env: Arc::new(env_of(&u)),
        requeue: true,
        partition: shape.partition.into(),
        array: (array_tasks > 0).then(|| ArraySpec {
            ranges: vec![IndexRange {
                start: 0,
                end: array_tasks - 1,
                step: 1,
            }],
            limit: None,
        }),
        user: u,
        ..JobSpec::default()
    }
}

/// The `default_time` of each partition in [`configure`].
fn default_time_ms(partition: &str) -> u64 {
    match partition {
        "short" => 5 * MIN,
        "big" => 30 * MIN,
        _ => 10 * MIN,
    }
}

/// How much work to submit.
#[derive(Clone, Copy, Debug)]
pub struct Amount {
    pub users: u32,
    /// Separate single-task jobs.
    pub jobs: u64,
    /// Tasks in arrays, in arrays of at most `array_size`.
    pub array_tasks: u64,
    pub array_size: u32,
    /// Jobs ask for partitions (false: no partitions configured, one queue over all nodes).
    pub partitions: bool,
}

/// The submits of a workload, arrays spread evenly among the separate jobs, made one by one
/// as they are taken (so that a memory measurement does not count them all at once).
pub fn submits(a: Amount, seed: u64) -> impl Iterator<Item = JobSpec> {
    let mut r = Rng::new(seed);
    let size = u64::from(a.array_size.max(1));
    let arrays = a.array_tasks.div_ceil(size);
    let total = a.jobs + arrays;
    let mut left = a.array_tasks;
    (0..total).map(move |n| {
        // Job n is an array when it crosses the next multiple of total/arrays.
        let is_array = arrays > 0 && (n * arrays) / total != ((n + 1) * arrays) / total;
        let tasks = if is_array { left.min(size) } else { 0 };
        left -= tasks;
        spec(n, &a, tasks as u32, &mut r)
    })
}

/// How long task `key` runs: 10–90% of its limit (its partition's default when it set
/// none), so that backfill's estimates are upper bounds as in real clusters.
pub fn runtime_ms(key: TaskKey, limit_ms: u64) -> u64 {
    let h = mix(key.job ^ (u64::from(key.index) << 40));
    let pct = 10 + h % 81;
    (limit_ms * pct / 100).max(1_000)
}

/// A one-job submit entry.
pub fn submit(spec: JobSpec, now_ms: u64) -> Command {
    Command::Submit {
        request_id: String::new(),
        spec,
        now_ms,
    }
}
