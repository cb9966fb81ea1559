//! The state machine's invariants, one function each, and the typed violation they
//! report. The scheduler's commit re-checks capacity with the same types; the property
//! tests call [`check_all`] after every applied command.
use std::collections::BTreeSet;

use crate::ids::{JobId, NodeId, TaskKey};
use crate::job::TaskState;
use crate::state::State;

/// A broken invariant: a bug, never an expected outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("node {node} would run {cpus} cpus of {capacity} or hold {mem} bytes of {mem_capacity} (task {key})")]
    OverCommit {
        node: NodeId,
        key: TaskKey,
        cpus: u32,
        capacity: u32,
        mem: u64,
        mem_capacity: u64,
    },
    #[error("core {core} of node {node} is given to two tasks")]
    CoreTwice { node: NodeId, core: u32 },
    #[error("task {key} was planned but is not the job's next pending task")]
    NotPending { key: TaskKey },
    #[error("task {key} cannot queue behind {pred}: {why}")]
    BadSuccessor {
        key: TaskKey,
        pred: TaskKey,
        why: &'static str,
    },
    #[error("node {node} lists task {key}, which the job does not hold there")]
    NodeTaskMismatch { node: NodeId, key: TaskKey },
    #[error("job {job}: task counts {counts:?} do not add up to {total} or disagree with its running tasks")]
    Counts { job: JobId, counts: [u64; 7], total: u64 },
    #[error("task {key} would take license {license} to {used} of {total}")]
    LicenseOverGrant {
        key: TaskKey,
        license: String,
        used: u64,
        total: u64,
    },
    #[error("unit {unit} of {pool} on node {node} is given twice or is free while held")]
    GresTwice { node: NodeId, pool: String, unit: u32 },
    #[error("licenses in use {used:?} disagree with the running tasks ({held:?}) or exceed {total:?}")]
    Licenses {
        used: std::collections::BTreeMap<String, u64>,
        held: std::collections::BTreeMap<String, u64>,
        total: std::collections::BTreeMap<String, u64>,
    },
    #[error("job {job} is in the queue or started while gated: {why}")]
    GateBroken { job: JobId, why: &'static str },
    #[error("job {job} runs {running} tasks, above its array limit {limit}")]
    ArrayLimit { job: JobId, running: u64, limit: u32 },
    #[error("allocation of task {key} is not whole: {why}")]
    PartialAllocation { key: TaskKey, why: &'static str },
    #[error("running usage of {user} is {indexed:?} in the index but {counted:?} counted")]
    RunningUsage {
        user: String,
        indexed: crate::state::running::Running,
        counted: crate::state::running::Running,
    },
    #[error("job {job} holds {recorded} step records, above the cap {cap}")]
    StepCap { job: JobId, recorded: u32, cap: u32 },
    #[error("the index of tasks a successor may queue behind holds {indexed} tasks where a fresh build holds {built}, or files them differently")]
    TailIndex { indexed: usize, built: usize },
    #[error("the index of nodes by free cpus files node {node} differently from a fresh build")]
    FreeIndex { node: u32 },
    #[error("the kept-up release times of node {node} differ from ones computed from its tasks")]
    ReleaseIndex { node: u32 },
}

/// Every invariant, in a fixed order; the first violation found.
pub fn check_all(s: &State) -> Result<(), Violation> {
    no_overcommit(s)?;
    nodes_and_jobs_agree(s)?;
    allocations_are_whole(s)?;
    counts_add_up(s)?;
    pending_tasks_are_accounted(s)?;
    array_limits_hold(s)?;
    gres_not_over_granted(s)?;
    licenses_never_over_granted(s)?;
    running_usage_is_counted(s)?;
    steps_within_cap(s)?;
    tail_index_is_exact(s)?;
    free_index_is_exact(s)?;
    release_index_is_exact(s)?;
    gated_jobs_wait(s)
}

/// The kept-up index of tasks a successor may queue behind (`state/tails.rs`), when it is
/// settled, equals one built from every running task: a stale entry would queue a task
/// behind one being killed or already followed, a missing one would idle a slot.
pub fn tail_index_is_exact(s: &State) -> Result<(), Violation> {
    let Some(indexed) = s.tail_index() else { return Ok(()) };
    let built = s.fresh_tails();
    if *indexed == built {
        return Ok(());
    }
    Err(Violation::TailIndex {
        indexed: indexed.len(),
        built: built.len(),
    })
}

/// The kept-up index of nodes by free cpus (`state/free_index.rs`), when it is settled,
/// equals one built from every node: a stale entry would place a task where it does not
/// fit (the commit refuses it) or pass over a node that has room.
pub fn free_index_is_exact(s: &State) -> Result<(), Violation> {
    let Some(indexed) = s.free_index() else { return Ok(()) };
    let built = s.fresh_free();
    if *indexed == built {
        return Ok(());
    }
    let node = (0..s.nodes.len() as u32)
        .find(|&id| indexed.bits_of(id) != built.bits_of(id) || indexed.free_of(id) != built.free_of(id))
        .unwrap_or(u32::MAX);
    Err(Violation::FreeIndex { node })
}

/// The kept-up release times of each node (`state/releases.rs`), when settled, equal
/// those computed from its running tasks: a stale one would let backfill start a job that
/// delays the reserved one, or hold back one that would not.
pub fn release_index_is_exact(s: &State) -> Result<(), Violation> {
    for id in 0..s.nodes.len() as u32 {
        let Some(kept) = s.kept_holds(id) else { return Ok(()) };
        if !kept.eq(s.holder_holds(id).iter()) {
            return Err(Violation::ReleaseIndex { node: id });
        }
    }
    Ok(())
}

/// No job holds more step records than `steps::MAX_STEPS_PER_JOB`: a job running steps
/// without end must not grow accounting (and every head's store) without bound.
pub fn steps_within_cap(s: &State) -> Result<(), Violation> {
    let cap = crate::steps::MAX_STEPS_PER_JOB;
    match s.jobs.values().find(|j| j.steps_recorded > cap) {
        Some(j) => Err(Violation::StepCap {
            job: j.id,
            recorded: j.steps_recorded,
            cap,
        }),
        None => Ok(()),
    }
}

/// The per-user running index (read by the running limits) equals a recount of the jobs'
/// running tasks: a drift would block a user wrongly or let one run past a limit.
pub fn running_usage_is_counted(s: &State) -> Result<(), Violation> {
    let counted = s.running_recount();
    let users: BTreeSet<&String> = counted.all().keys().chain(s.running_usage.all().keys()).collect();
    for user in users {
        let (indexed, counted) = (s.running_usage.of(user), counted.of(user));
        if indexed != counted {
            return Err(Violation::RunningUsage {
                user: format!("user {user}"),
                indexed,
                counted,
            });
        }
    }
    let accounts: BTreeSet<&String> = counted
        .all_accounts()
        .keys()
        .chain(s.running_usage.all_accounts().keys())
        .collect();
    for account in accounts {
        let (indexed, counted) = (s.running_usage.of_account(account), counted.of_account(account));
        if indexed != counted {
            return Err(Violation::RunningUsage {
                user: format!("account {account}"),
                indexed,
                counted,
            });
        }
    }
    Ok(())
}

/// A held job, one waiting on its dependency or before its begin time is out of the
/// queue; one whose dependency or begin time never opened has never started a task (a
/// dependency, once satisfied, stays so); and a job waiting on a dependency is known to
/// the dependency index.
pub fn gated_jobs_wait(s: &State) -> Result<(), Violation> {
    for &(_, _, id) in &s.queue {
        if let Some(job) = s.jobs.get(&id) {
            if !s.eligible(job) {
                return Err(Violation::GateBroken {
                    job: id,
                    why: "in the queue",
                });
            }
        }
    }
    for job in s.jobs.values() {
        let waits = job.dep != crate::job::DepStatus::Satisfied || job.spec.begin_ms > s.now_ms;
        if waits && (job.start_ms.is_some() || !job.running.is_empty()) {
            return Err(Violation::GateBroken {
                job: job.id,
                why: "a task started",
            });
        }
        if job.dep == crate::job::DepStatus::Waiting && !job.is_finished() && s.deps.spec(job.id).is_none() {
            return Err(Violation::GateBroken {
                job: job.id,
                why: "waiting on a dependency the index does not hold",
            });
        }
    }
    Ok(())
}

/// Each unit of a generic resource is held by at most one task, and marked taken.
pub fn gres_not_over_granted(s: &State) -> Result<(), Violation> {
    for (id, n) in s.nodes.iter().enumerate() {
        let mut seen = BTreeSet::new();
        for key in n.running.keys() {
            let Some(rt) = s.running_task(*key) else { continue };
            for (pool, units) in &rt.gres {
                for &unit in units {
                    let free = n.gres.get(pool).and_then(|p| p.free.get(unit as usize)).copied();
                    if !seen.insert((pool.clone(), unit)) || free != Some(false) {
                        return Err(Violation::GresTwice {
                            node: id as NodeId,
                            pool: pool.clone(),
                            unit,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Licenses in use are exactly those of tasks holding resources, and never above the
/// configured counts.
pub fn licenses_never_over_granted(s: &State) -> Result<(), Violation> {
    let mut held = std::collections::BTreeMap::<String, u64>::new();
    for j in s.jobs.values() {
        let holders = j.running.values().filter(|rt| rt.after.is_none()).count() as u64;
        for (name, n) in &j.spec.licenses {
            *held.entry(name.clone()).or_default() += u64::from(*n) * holders;
        }
    }
    held.retain(|_, v| *v > 0);
    let over = held
        .iter()
        .any(|(k, v)| *v > s.sched.licenses.get(k).copied().unwrap_or(0));
    if held != s.licenses_used || over {
        return Err(Violation::Licenses {
            used: s.licenses_used.clone(),
            held,
            total: s.sched.licenses.clone(),
        });
    }
    Ok(())
}

/// No node runs more cpus or memory than it has, and no core is given twice. Successors
/// share their predecessor's cores and are not counted.
pub fn no_overcommit(s: &State) -> Result<(), Violation> {
    for (id, n) in s.nodes.iter().enumerate() {
        let node = id as NodeId;
        let (mut cpus, mut mem, mut cores) = (0u32, 0u64, BTreeSet::new());
        // A node's holders: its own tasks, and slices of multi-node jobs running elsewhere.
        let own = n.running.keys().filter_map(|key| {
            let rt = s.running_task(*key).filter(|rt| rt.after.is_none())?;
            Some((key, &rt.cores, rt.mem_bytes))
        });
        let slices = n.slices.keys().filter_map(|key| {
            let a = s.running_task(*key)?.alloc.as_ref()?;
            let sl = a.slices.iter().skip(1).find(|sl| sl.node == node)?;
            Some((key, &sl.cores, sl.mem_bytes))
        });
        for (key, held, held_mem) in own.chain(slices) {
            for &core in held {
                if !cores.insert(core) {
                    return Err(Violation::CoreTwice { node, core });
                }
            }
            cpus += held.len() as u32;
            mem += held_mem;
            if cpus > n.cpus || mem > n.mem_bytes {
                return Err(Violation::OverCommit {
                    node,
                    key: *key,
                    cpus,
                    capacity: n.cpus,
                    mem,
                    mem_capacity: n.mem_bytes,
                });
            }
        }
    }
    Ok(())
}

/// A multi-node job holds every slice its allocation lists, and nothing else: its first
/// slice is its task's own cores on its node, each other slice is listed by its node with
/// the task's attempt, and every slice a node lists belongs to a running allocation.
pub fn allocations_are_whole(s: &State) -> Result<(), Violation> {
    for j in s.jobs.values() {
        for (&index, rt) in &j.running {
            let key = TaskKey { job: j.id, index };
            let bad = |why| Err(Violation::PartialAllocation { key, why });
            let Some(a) = &rt.alloc else {
                if j.spec.alloc.is_some() && rt.after.is_none() {
                    return bad("a multi-node job runs without its allocation");
                }
                continue;
            };
            let first_ok = a
                .slices
                .first()
                .is_some_and(|f| f.node == rt.node && f.cores == rt.cores && f.mem_bytes == rt.mem_bytes);
            if !first_ok {
                return bad("its first slice is not the task's own");
            }
            let nodes: BTreeSet<NodeId> = a.slices.iter().map(|sl| sl.node).collect();
            if nodes.len() != a.slices.len() {
                return bad("a node holds two slices");
            }
            let whole = j.spec.alloc.as_ref().is_some_and(|want| {
                let k = a.slices.len() as u32;
                rt.lost_node.is_some() || (k >= want.nodes_min && k <= want.nodes_max)
            });
            if !whole {
                return bad("it holds fewer or more nodes than it asked for");
            }
            for sl in a.slices.iter().skip(1) {
                let listed = s.nodes.get(sl.node as usize).and_then(|n| n.slices.get(&key));
                if listed != Some(&rt.attempt) {
                    return bad("a node does not list its slice");
                }
            }
        }
    }
    for n in &s.nodes {
        for (key, attempt) in &n.slices {
            let held = s.running_task(*key).is_some_and(|rt| {
                rt.attempt == *attempt
                    && rt
                        .alloc
                        .as_ref()
                        .is_some_and(|a| a.slices.iter().skip(1).any(|sl| sl.name == n.name))
            });
            if !held {
                return Err(Violation::PartialAllocation {
                    key: *key,
                    why: "a node lists a slice no running allocation holds",
                });
            }
        }
    }
    Ok(())
}

/// Every task a node lists is held by its job on that node with the same attempt.
pub fn nodes_and_jobs_agree(s: &State) -> Result<(), Violation> {
    for (id, n) in s.nodes.iter().enumerate() {
        for (key, attempt) in &n.running {
            let ok = s
                .running_task(*key)
                .is_some_and(|rt| rt.node as usize == id && rt.attempt == *attempt);
            if !ok {
                return Err(Violation::NodeTaskMismatch {
                    node: id as NodeId,
                    key: *key,
                });
            }
        }
    }
    Ok(())
}

/// A job's task counts add up to its size, and its running count is its running records.
pub fn counts_add_up(s: &State) -> Result<(), Violation> {
    for j in s.jobs.values() {
        let sum: u64 = TaskState::ALL.iter().map(|st| j.count(*st)).sum();
        if sum != j.total || j.count(TaskState::Running) != j.running.len() as u64 {
            return Err(Violation::Counts {
                job: j.id,
                counts: j.counts,
                total: j.total,
            });
        }
    }
    Ok(())
}

/// A job's pending count is exactly what it can still dispatch: positions after the
/// cursor not cancelled before dispatch, plus requeued tasks, plus tasks behind an
/// `aftercorr` gate (a task cancelled alone must neither run nor be lost from the counts).
pub fn pending_tasks_are_accounted(s: &State) -> Result<(), Violation> {
    for j in s.jobs.values() {
        let fresh = j.total - j.next_position.min(j.total) - j.skipped.len() as u64;
        let cursor_ok = j.next_position >= j.total || !j.skipped.contains(&j.index_at(j.next_position));
        let held = j.corr.as_deref().map_or(0, crate::aftercorr::CorrGate::held);
        if j.count(TaskState::Pending) != fresh + j.requeued.len() as u64 + held || !cursor_ok {
            return Err(Violation::Counts {
                job: j.id,
                counts: j.counts,
                total: j.total,
            });
        }
    }
    Ok(())
}

/// No array runs more tasks at once than its `%N` limit.
pub fn array_limits_hold(s: &State) -> Result<(), Violation> {
    for j in s.jobs.values() {
        if let Some(limit) = j.spec.array.as_ref().and_then(|a| a.limit) {
            if j.running.len() as u64 > u64::from(limit) {
                return Err(Violation::ArrayLimit {
                    job: j.id,
                    running: j.running.len() as u64,
                    limit,
                });
            }
        }
    }
    Ok(())
}
