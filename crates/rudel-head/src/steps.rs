//! Job steps (`srun` inside an allocation), relayed by the head (docs/parallel-jobs.md).
//!
//! A process of a running job asks its agent through the job socket; the agent has
//! identified it (a live task of its own, the task's uid) and passes a `StepRequest` on.
//! The head checks against the replicated state that this attempt of the task runs on
//! that very node (an agent cannot ask for steps of a job it does not run), lays the
//! step's tasks out over the job's allocation ([`layout`]), answers the asking agent and
//! sends each node of the step its share. Output and ends of the step's tasks come back
//! through the head to the asking agent, which hands them to `srun`.
//!
//! Steps live only in the leader's memory: they belong to a running allocation, whose
//! batch script (and `srun`) dies with it. A step whose allocation is gone is killed
//! ([`Steps::reap`]).
use std::collections::HashMap;
use std::sync::Mutex;

use rudel_core::alloc::{Allocation, Slice};
use rudel_core::ids::TaskKey;
use rudel_core::State;
use rudel_proto::v1 as pb;

/// What srun asked for; 0 / empty = not given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    pub ntasks: u32,
    pub nodes: u32,
    pub ntasks_per_node: u32,
    pub cpus_per_task: u32,
    pub nodelist: Vec<String>,
}

/// One node's share of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePart {
    pub name: String,
    pub ranks: Vec<u32>,
    pub cores: Vec<u32>,
    pub mem_bytes: u64,
}

/// Slurm's words for a step that does not fit its allocation.
fn unfit(job: u64, why: &str) -> String {
    format!("Unable to create step for job {job}: {why}")
}

/// Lays `shape` out over the allocation: which nodes, which ranks on each (block
/// distribution: consecutive ranks on a node, nodes in allocation order), or why not.
pub fn layout(job: u64, alloc: &Allocation, shape: &Shape) -> Result<Vec<NodePart>, String> {
    let candidates = candidates(job, alloc, &shape.nodelist)?;
    let counts = task_counts(job, &candidates, shape)?;
    let cpt = shape.cpus_per_task.max(1);
    let mut parts = Vec::with_capacity(counts.len());
    let mut rank = 0;
    for (s, n) in candidates.iter().zip(counts) {
        if n == 0 {
            continue;
        }
        if n * cpt > s.cores.len() as u32 {
            return Err(unfit(
                job,
                &format!(
                    "More processors requested than permitted ({n} tasks x {cpt} cpus on {}, which holds {} for the job)",
                    s.name,
                    s.cores.len()
                ),
            ));
        }
        parts.push(NodePart {
            name: s.name.clone(),
            ranks: (rank..rank + n).collect(),
            cores: s.cores.clone(),
            mem_bytes: s.mem_bytes,
        });
        rank += n;
    }
    Ok(parts)
}

/// The allocation's slices the step may use: all, or those `--nodelist` names (each must
/// be part of the allocation: a step never reaches outside its job).
fn candidates<'a>(job: u64, alloc: &'a Allocation, nodelist: &[String]) -> Result<Vec<&'a Slice>, String> {
    if nodelist.is_empty() {
        return Ok(alloc.slices.iter().collect());
    }
    let mut wanted = Vec::new();
    for entry in nodelist {
        let names =
            rudel_core::hostlist::expand(entry).map_err(|e| unfit(job, &format!("bad --nodelist {entry}: {e}")))?;
        wanted.extend(names);
    }
    for w in &wanted {
        if !alloc.slices.iter().any(|s| &s.name == w) {
            return Err(unfit(
                job,
                &format!(
                    "Requested node configuration is not available (node {w} is not in the allocation {})",
                    alloc.nodelist()
                ),
            ));
        }
    }
    Ok(alloc.slices.iter().filter(|s| wanted.contains(&s.name)).collect())
}

/// Tasks on each candidate node, in order (0 = node unused).
fn task_counts(job: u64, c: &[&Slice], shape: &Shape) -> Result<Vec<u32>, String> {
    let avail = c.len() as u32;
    if shape.nodes > avail {
        return Err(unfit(
            job,
            &format!(
                "Requested node configuration is not available ({} nodes asked, the step may use {avail})",
                shape.nodes
            ),
        ));
    }
    // Nodes given or implied by --nodelist; otherwise as many as the tasks need.
    let k = if shape.nodes > 0 {
        shape.nodes
    } else if !shape.nodelist.is_empty() {
        avail
    } else {
        0
    };
    let mut counts = vec![0u32; c.len()];
    match (shape.ntasks, shape.ntasks_per_node) {
        (0, 0) => {
            // The allocation's own layout on the step's nodes.
            let k = if k == 0 { avail } else { k };
            for (i, s) in c.iter().take(k as usize).enumerate() {
                counts[i] = s.tasks.max(1);
            }
        }
        (n, 0) if k == 0 => {
            // Pack: fill each node up to its share of the allocation before the next.
            let mut left = n;
            for (i, s) in c.iter().enumerate() {
                let take = left.min(s.tasks.max(1));
                counts[i] = take;
                left -= take;
            }
            spread_over(&mut counts, left);
        }
        (n, 0) => {
            // `-N` given: as even as possible, the first nodes one more.
            let k = k.min(n);
            for (i, slot) in counts.iter_mut().take(k as usize).enumerate() {
                *slot = n / k + u32::from((i as u32) < n % k);
            }
        }
        (n, tpn) => {
            let k = if k == 0 { avail } else { k };
            let total = if n == 0 { k * tpn } else { n };
            if total > k * tpn {
                return Err(unfit(
                    job,
                    &format!("{total} tasks do not fit {k} nodes at --ntasks-per-node={tpn}"),
                ));
            }
            let mut left = total;
            for slot in counts.iter_mut().take(k as usize) {
                *slot = left.min(tpn);
                left -= *slot;
            }
        }
    }
    Ok(counts)
}

/// More tasks than the allocation's layout holds: add them round robin (the per-node cpu
/// check then refuses what does not fit).
fn spread_over(counts: &mut [u32], mut left: u32) {
    let n = counts.len();
    let mut i = 0;
    while left > 0 && n > 0 {
        counts[i % n] += 1;
        left -= 1;
        i += 1;
    }
}

/// The allocation the asking task holds, after checking it runs on `node`.
fn allocation_of<'a>(
    state: &'a State,
    node: &str,
    task: &pb::TaskRef,
) -> Result<(&'a rudel_core::job::Job, Allocation), String> {
    let key = TaskKey {
        job: task.job_id,
        index: task.index,
    };
    let running_here = state
        .node_by_name
        .get(node)
        .and_then(|&id| state.nodes.get(id as usize))
        .is_some_and(|n| n.running.get(&key) == Some(&task.attempt));
    let job = state.jobs.get(&key.job).filter(|_| running_here).ok_or_else(|| {
        format!(
            "job {} task {} (attempt {}) is not running on node {node}",
            task.job_id, task.index, task.attempt
        )
    })?;
    let rt = job
        .running
        .get(&key.index)
        .ok_or_else(|| format!("job {} task {} is not running", key.job, key.index))?;
    // A job without an allocation of its own is one task on its node and cores.
    let alloc = rt.alloc.clone().unwrap_or_else(|| Allocation {
        slices: vec![Slice {
            node: rt.node,
            name: node.to_string(),
            tasks: 1,
            cores: rt.cores.clone(),
            mem_bytes: rt.mem_bytes,
        }],
    });
    Ok((job, alloc))
}

/// An accepted step: what to tell the asking agent and what to send each node.
#[derive(Debug)]
pub struct Planned {
    pub task: TaskKey,
    pub attempt: u32,
    pub user: String,
    pub parts: Vec<NodePart>,
    pub ntasks: u32,
    pub nodelist: String,
    /// `host:port` of srun's PMI server, if the step has one.
    pub pmi: Option<String>,
    /// Which tasks read srun's stdin.
    pub input: crate::step_stdin::Input,
}

/// Where the tasks of a step reach srun's PMI server: the asking node's address as the head
/// sees it (the address the node's agent connects from, which its peers can reach too).
fn pmi_addr(state: &State, node: &str, port: u32) -> Result<Option<String>, String> {
    if port == 0 {
        return Ok(None);
    }
    let port = u16::try_from(port).map_err(|_| format!("bad PMI port {port}"))?;
    let address = state.node(node).map(|n| n.address.as_str()).unwrap_or_default();
    let ip = address
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| address.parse::<std::net::IpAddr>())
        .map_err(|_| {
            format!(
                "the head does not know the address of node {node} ({address:?}), so the step's \
                 tasks could not reach srun's PMI server; run srun --mpi=none for programs that \
                 do not use MPI"
            )
        })?;
    Ok(Some(std::net::SocketAddr::new(ip, port).to_string()))
}

/// Checks a step request and lays it out.
pub fn plan(state: &State, node: &str, r: &pb::StepRequest) -> Result<Planned, String> {
    let task = r.task.as_ref().ok_or("step request without a task")?;
    if r.argv.is_empty() {
        return Err("a step needs a command".into());
    }
    let (job, alloc) = allocation_of(state, node, task)?;
    let shape = Shape {
        ntasks: r.ntasks,
        nodes: r.nodes,
        ntasks_per_node: r.ntasks_per_node,
        cpus_per_task: r.cpus_per_task,
        nodelist: r.nodelist.clone(),
    };
    let parts = layout(job.id, &alloc, &shape)?;
    let names: Vec<String> = parts.iter().map(|p| p.name.clone()).collect();
    let ntasks = parts.iter().map(|p| p.ranks.len() as u32).sum();
    let input = crate::step_stdin::Input::parse(&r.input, ntasks).map_err(|e| unfit(job.id, &e))?;
    Ok(Planned {
        task: TaskKey {
            job: task.job_id,
            index: task.index,
        },
        attempt: task.attempt,
        user: job.spec.user.clone(),
        ntasks,
        nodelist: rudel_core::hostlist::compress(&names),
        parts,
        pmi: pmi_addr(state, node, r.pmi_port)?,
        input,
    })
}

/// The environment every task of the step gets on node `i` of `parts` (srun's own plus
/// the step's Slurm variables); the agent adds SLURM_PROCID and SLURM_LOCALID per task.
pub fn node_env(
    base: &HashMap<String, String>,
    p: &Planned,
    step: u32,
    i: usize,
    cpus_per_task: u32,
) -> HashMap<String, String> {
    let mut env = base.clone();
    let part = &p.parts[i];
    let tpn = rudel_core::alloc::repeat_counts(p.parts.iter().map(|p| p.ranks.len() as u32));
    let gtids: Vec<String> = part.ranks.iter().map(u32::to_string).collect();
    let nnodes = p.parts.len().to_string();
    let ntasks = p.ntasks.to_string();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    for k in ["SLURM_STEP_ID", "SLURM_STEPID", "RUDEL_STEP_ID"] {
        set(k, step.to_string());
    }
    for k in ["SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"] {
        set(k, ntasks.clone());
    }
    for k in ["SLURM_STEP_NUM_NODES", "SLURM_NNODES"] {
        set(k, nnodes.clone());
    }
    for k in ["SLURM_STEP_NODELIST", "SLURM_NODELIST"] {
        set(k, p.nodelist.clone());
    }
    for k in ["SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"] {
        set(k, tpn.clone());
    }
    set("SLURM_NODEID", i.to_string());
    set("SLURM_GTIDS", gtids.join(","));
    set("SLURMD_NODENAME", part.name.clone());
    set("SLURM_TOPOLOGY_ADDR", part.name.clone());
    set("RUDEL_NODE", part.name.clone());
    if cpus_per_task > 0 {
        set("SLURM_CPUS_PER_TASK", cpus_per_task.to_string());
    }
    if let Some(addr) = &p.pmi {
        // PMI-1 in "port" mode (MPICH's client, and rudel's libpmi for Open MPI); the
        // agent adds PMI_ID/PMI_RANK per task and the library path. FLUX_JOB_ID selects
        // Open MPI's PMI-1 component; it must be a number, unique per step of the job.
        set("PMI_PORT", addr.clone());
        set("PMI_SIZE", ntasks);
        set(
            "FLUX_JOB_ID",
            (p.task.job.wrapping_mul(1024).wrapping_add(u64::from(step)) % (1 << 31)).to_string(),
        );
    }
    env
}

/// What [`Steps::reap`] found: steps whose allocation ended.
#[derive(Debug, Default)]
pub struct Reaped {
    /// (node, job, step) for each node of each such step.
    pub kill: Vec<(String, u64, u32)>,
    /// Their accounting records, cut short with their allocation.
    pub records: Vec<rudel_core::steps::StepRecord>,
    /// (origin, job, step): whose srun waited for each.
    pub origins: Vec<(String, u64, u32)>,
}

/// A step being run: where its srun is, which nodes run it, how many tasks have not ended.
#[derive(Debug)]
struct LiveStep {
    origin: String,
    nodes: Vec<String>,
    /// The nodes with a task that reads srun's stdin.
    stdin_nodes: Vec<String>,
    remaining: u32,
    /// For its accounting record when it ends (see `step_acct.rs`).
    acct: crate::step_acct::StepAcct,
}

/// The steps of one running allocation (one attempt of one task).
#[derive(Debug, Default)]
struct AllocSteps {
    attempt: u32,
    live: HashMap<u32, LiveStep>,
}

/// Every step the leader relays, by the task that holds the allocation, and the next
/// step id of each job.
///
/// Step ids count per job, across its attempts and array tasks, never per allocation:
/// messages name a step by (job, step) only, and a requeued job's first step numbered 0
/// again was taken for the dead attempt's step 0 — the old `srun`'s kill (sent as its
/// script was killed) killed the new attempt's step, and the old tasks' ends were counted
/// as the new step's (`tests/step_node_loss.rs`, a host cut off under a step).
#[derive(Debug, Default)]
struct Table {
    allocs: HashMap<TaskKey, AllocSteps>,
    next: HashMap<u64, u32>,
}

#[derive(Debug, Default)]
pub struct Steps {
    inner: Mutex<Table>,
}

impl Table {
    /// Step `step` of job `job`, in whichever of the job's allocations runs it.
    fn step(&self, job: u64, step: u32) -> Option<&LiveStep> {
        self.allocs
            .iter()
            .filter(|(k, _)| k.job == job)
            .find_map(|(_, a)| a.live.get(&step))
    }
}

impl Steps {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A poisoned lock only means a holder panicked; the table stays consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new step of the allocation and returns its id (0, 1, ... per job, never
    /// below `floor`: the job's next step id in the replicated state, so that a new leader
    /// does not reuse the id of a step already in accounting).
    pub fn begin(&self, p: &Planned, origin: &str, acct: crate::step_acct::StepAcct, floor: u32) -> u32 {
        let mut t = self.lock();
        let next = t.next.entry(p.task.job).or_default();
        *next = (*next).max(floor);
        let step = *next;
        *next = next.wrapping_add(1);
        let a = t.allocs.entry(p.task).or_default();
        if a.attempt != p.attempt {
            *a = AllocSteps {
                attempt: p.attempt,
                ..Default::default()
            };
        }
        a.live.insert(
            step,
            LiveStep {
                origin: origin.to_string(),
                nodes: p.parts.iter().map(|p| p.name.clone()).collect(),
                stdin_nodes: p.input.nodes(&p.parts),
                remaining: p.ntasks,
                acct,
            },
        );
        step
    }

    /// The step is being killed on request (srun's Ctrl-C or `-K`, srun gone).
    pub fn kill_requested(&self, job: u64, step: u32) {
        let mut t = self.lock();
        if let Some(s) = t
            .allocs
            .iter_mut()
            .filter(|(k, _)| k.job == job)
            .find_map(|(_, a)| a.live.get_mut(&step))
        {
            s.acct.kill_requested();
        }
    }

    /// The node whose srun waits for step `step` of job `job`'s allocation.
    pub fn origin(&self, job: u64, step: u32) -> Option<String> {
        let t = self.lock();
        t.step(job, step).map(|s| s.origin.clone())
    }

    /// One task of the step ended: its srun's node, and the step's accounting record
    /// after its last task (the step is then forgotten).
    pub fn task_ended(
        &self,
        e: &pb::StepTaskEnd,
        now_ms: u64,
    ) -> Option<(String, Option<rudel_core::steps::StepRecord>)> {
        let mut t = self.lock();
        let a = t
            .allocs
            .iter_mut()
            .find(|(k, a)| k.job == e.job && a.live.contains_key(&e.step))
            .map(|(_, a)| a)?;
        let s = a.live.get_mut(&e.step)?;
        let origin = s.origin.clone();
        s.acct.task_ended(e);
        s.remaining = s.remaining.saturating_sub(1);
        let mut record = None;
        if s.remaining == 0 {
            record = Some(s.acct.record(e.job, e.step, now_ms, None));
            a.live.remove(&e.step);
        }
        Some((origin, record))
    }

    /// Where chunks of srun's stdin for the step go, if `from` is the node of its srun
    /// (None: not a step of `from`'s, so nothing is forwarded).
    pub fn stdin_nodes(&self, job: u64, step: u32, from: &str) -> Option<Vec<String>> {
        let t = self.lock();
        t.step(job, step)
            .filter(|s| s.origin == from)
            .map(|s| s.stdin_nodes.clone())
    }

    /// The nodes running step `step` of job `job`.
    pub fn nodes(&self, job: u64, step: u32) -> Vec<String> {
        let t = self.lock();
        t.step(job, step).map(|s| s.nodes.clone()).unwrap_or_default()
    }

    /// Forgets the steps of allocations that no longer run and returns what to kill:
    /// (node, job, step) for each node of each such step; and the accounting records of
    /// those steps (cut short with their allocation); and each such step's origin.
    pub fn reap(&self, state: &State, now_ms: u64) -> Reaped {
        let mut t = self.lock();
        // A job's step ids are kept while it may run again (pending, running, requeued).
        t.next
            .retain(|job, _| state.jobs.get(job).is_some_and(|j| !j.is_finished()));
        let mut out = Reaped::default();
        if t.allocs.is_empty() {
            return out;
        }
        let Reaped { kill, records, origins } = &mut out;
        t.allocs.retain(|key, a| {
            let alive = state
                .jobs
                .get(&key.job)
                .and_then(|j| j.running.get(&key.index))
                .is_some_and(|rt| rt.attempt == a.attempt && !rt.kill_requested);
            if !alive {
                let ended_as = state
                    .jobs
                    .get(&key.job)
                    .and_then(|j| j.ended.get(&key.index))
                    .filter(|t| t.attempt == a.attempt)
                    .map(|t| t.state);
                for (step, s) in &a.live {
                    kill.extend(s.nodes.iter().map(|n| (n.clone(), key.job, *step)));
                    records.push(s.acct.record(key.job, *step, now_ms, Some(ended_as)));
                    origins.push((s.origin.clone(), key.job, *step));
                }
            }
            alive
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(spec: &[(&str, u32, u32)]) -> Allocation {
        Allocation {
            slices: spec
                .iter()
                .enumerate()
                .map(|(i, (name, tasks, cpus))| Slice {
                    node: i as u32,
                    name: name.to_string(),
                    tasks: *tasks,
                    cores: (0..*cpus).collect(),
                    mem_bytes: 0,
                })
                .collect(),
        }
    }

    fn ranks(parts: &[NodePart]) -> Vec<(String, Vec<u32>)> {
        parts.iter().map(|p| (p.name.clone(), p.ranks.clone())).collect()
    }

    fn r(name: &str, v: &[u32]) -> (String, Vec<u32>) {
        (name.to_string(), v.to_vec())
    }

    fn planned(job: u64, index: u32, attempt: u32, node: &str) -> Planned {
        Planned {
            task: TaskKey { job, index },
            attempt,
            user: "u".into(),
            parts: vec![NodePart {
                name: node.into(),
                ranks: vec![0],
                cores: vec![0],
                mem_bytes: 0,
            }],
            ntasks: 1,
            nodelist: node.into(),
            pmi: None,
            input: crate::step_stdin::Input::None,
        }
    }

    fn begin(steps: &Steps, p: &Planned, origin: &str, floor: u32) -> u32 {
        let acct = crate::step_acct::StepAcct::new("x".into(), origin.into(), 1, 1, 0);
        steps.begin(p, origin, acct, floor)
    }

    #[test]
    fn step_ids_are_never_reused_within_a_job() {
        let steps = Steps::default();
        assert_eq!(begin(&steps, &planned(7, 0, 1, "n1"), "n1", 0), 0);
        assert_eq!(begin(&steps, &planned(7, 0, 1, "n1"), "n1", 0), 1);
        // The requeued attempt and another array task of the job go on counting: a stale
        // message about attempt 1's step 0 can never name one of theirs.
        assert_eq!(begin(&steps, &planned(7, 0, 2, "n2"), "n2", 0), 2);
        assert_eq!(begin(&steps, &planned(7, 1, 1, "n3"), "n3", 0), 3);
        assert_eq!(begin(&steps, &planned(8, 0, 1, "n1"), "n1", 0), 0);
        // A new leader starts from the replicated floor (ids already in accounting).
        assert_eq!(begin(&steps, &planned(9, 0, 1, "n1"), "n1", 5), 5);
        assert_eq!(steps.nodes(7, 2), vec!["n2".to_string()]);
        assert_eq!(steps.nodes(7, 3), vec!["n3".to_string()]);
        assert_eq!(steps.origin(7, 3).as_deref(), Some("n3"));
        let end = pb::StepTaskEnd {
            job: 7,
            step: 3,
            exit_code: Some(0),
            node: "n3".into(),
            ..Default::default()
        };
        let (origin, record) = steps.task_ended(&end, 1).unwrap();
        assert_eq!(origin, "n3");
        assert!(record.is_some(), "its only task ended: the step's record");
        assert!(steps.nodes(7, 3).is_empty(), "its only task ended");
    }

    #[test]
    fn without_options_the_allocation_layout_is_used() {
        let a = alloc(&[("n1", 2, 2), ("n2", 2, 2), ("n3", 1, 2)]);
        let p = layout(1, &a, &Shape::default()).unwrap();
        assert_eq!(ranks(&p), vec![r("n1", &[0, 1]), r("n2", &[2, 3]), r("n3", &[4])]);
    }

    #[test]
    fn ntasks_alone_packs_nodes_in_order() {
        let a = alloc(&[("n1", 2, 2), ("n2", 2, 2)]);
        let s = Shape {
            ntasks: 3,
            ..Default::default()
        };
        assert_eq!(
            ranks(&layout(1, &a, &s).unwrap()),
            vec![r("n1", &[0, 1]), r("n2", &[2])]
        );
    }

    #[test]
    fn nodes_and_ntasks_spread_evenly() {
        let a = alloc(&[("n1", 2, 4), ("n2", 2, 4), ("n3", 2, 4)]);
        let s = Shape {
            ntasks: 4,
            nodes: 3,
            ..Default::default()
        };
        assert_eq!(
            ranks(&layout(1, &a, &s).unwrap()),
            vec![r("n1", &[0, 1]), r("n2", &[2]), r("n3", &[3])]
        );
    }

    #[test]
    fn open_mpis_daemon_launch_line_is_one_task_on_each_listed_node() {
        // plm/slurm: srun --ntasks-per-node=1 --nodes=2 --nodelist=n2,n3 --ntasks=2 orted
        let a = alloc(&[("n1", 1, 1), ("n2", 1, 1), ("n3", 1, 1)]);
        let s = Shape {
            ntasks: 2,
            nodes: 2,
            ntasks_per_node: 1,
            nodelist: vec!["n2,n3".into()],
            ..Default::default()
        };
        assert_eq!(ranks(&layout(1, &a, &s).unwrap()), vec![r("n2", &[0]), r("n3", &[1])]);
    }

    #[test]
    fn what_does_not_fit_is_refused_with_slurms_words() {
        let a = alloc(&[("n1", 1, 1), ("n2", 1, 1)]);
        let too_many = Shape {
            ntasks: 3,
            ..Default::default()
        };
        let e = layout(7, &a, &too_many).unwrap_err();
        assert!(e.starts_with("Unable to create step for job 7: More processors"), "{e}");
        let outside = Shape {
            nodelist: vec!["n9".into()],
            ..Default::default()
        };
        assert!(layout(7, &a, &outside)
            .unwrap_err()
            .contains("n9 is not in the allocation"));
        let nodes = Shape {
            nodes: 3,
            ..Default::default()
        };
        assert!(layout(7, &a, &nodes).unwrap_err().contains("3 nodes asked"));
        let cpus = Shape {
            cpus_per_task: 2,
            ..Default::default()
        };
        assert!(layout(7, &a, &cpus).unwrap_err().contains("More processors"));
    }
}
