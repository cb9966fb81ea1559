//! The scheduling pass as a pure function: from a read-only state (and its scheduling
//! configuration) to a [`Plan`]; [`crate::State::commit`] then applies the plan and checks
//! every placement again. Deciding apart from applying keeps the policy testable on its
//! own and lets the same planner later run on the leader only.
//!
//! Jobs are considered in the configured queue order. A job with a task that fits nowhere
//! right now *reserves* every node it could ever use (big enough, matching its constraint)
//! for the rest of the pass: no job behind it may start there, so nothing later in the
//! order overtakes it on its nodes (no starvation of big jobs), while nodes it can never
//! use (say, without the GPU it asks for) stay open to the jobs behind it. Without
//! constraints and with equal nodes that is plain strict order. A job held back only by
//! its array limit (`%N`) reserves nothing.
use rustc_hash::FxHashMap as HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Excluded, Unbounded};

use crate::alloc::AllocSpec;
use crate::constraint::Constraint;
use crate::ids::{JobId, NodeId, TaskKey};
use crate::job::Job;
use crate::node::Node;
use crate::resources::{choose_pools, GresRequest};
use crate::sched::partition::{Partition, PartitionState};
use crate::sched::PassKind;
use crate::state::tails::Tail;
use crate::state::State;
use serde::{Deserialize, Serialize};

#[path = "gang.rs"]
mod gang;
pub use gang::GangSlice;

#[path = "backfill.rs"]
pub mod backfill;
#[path = "backfill_counted.rs"]
mod backfill_counted;
#[path = "backfill_profile.rs"]
mod backfill_profile;

#[path = "preempt.rs"]
pub mod preempt;

#[path = "pass_tails.rs"]
mod pass_tails;

#[path = "free_nodes.rs"]
mod free_nodes;
use free_nodes::FreeNodes;
use pass_tails::PassTails;

/// What one pass decided, in the order it must be committed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub start: Vec<Placement>,
    /// The first job in the queue order that could not place a task (its nodes are
    /// reserved for it).
    pub blocked: Option<JobId>,
    /// Jobs that wait for something other than nodes.
    pub waiting: BTreeMap<JobId, Wait>,
    /// The slices of each placed multi-node job, its placement's node first (see
    /// `gang.rs`).
    pub gangs: BTreeMap<TaskKey, Vec<GangSlice>>,
    /// Under backfill: the blocked job's expected start (see `backfill.rs`).
    pub reservation: Option<backfill::Reservation>,
    /// Under `backfill=conservative`: the reservations of further blocked jobs, in queue
    /// order (see `backfill_profile.rs`).
    pub later: Vec<backfill::Reservation>,
    /// Under `preempt`: running tasks to stop so the blocked job can start (see
    /// `preempt.rs`).
    pub preempt: Option<preempt::Preemption>,
    /// The pass stopped at `max_starts` placements: more may start in the next one.
    pub capped: bool,
    /// An ordinary pass stopped at a job it could not start, or at `pass.ordinary_jobs`:
    /// what lies past it waits for a full pass (see `passes.rs`).
    pub stopped: bool,
    /// The jobs an ordinary pass looked at, in order (empty for a full pass): what it
    /// found about them replaces what the last pass found.
    pub examined: Vec<JobId>,
}

/// Why a job waits, when it is not nodes or order.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wait {
    /// Its licenses are all held by running tasks. It reserves no nodes meanwhile: they
    /// are not what it waits for.
    Licenses,
    /// Every partition it may run in is down.
    PartitionDown,
    /// Its user runs as many tasks as `max_running_tasks` allows.
    UserRunningTasks,
    /// Its user's running tasks hold as many cpus as `max_running_cpus` allows.
    UserRunningCpus,
    /// Its user's running tasks hold as many GPUs as `max_running_gpus` allows.
    UserRunningGpus,
    /// Its account's running tasks are at `limits.account.NAME.max_running_tasks`.
    AccountRunningTasks,
    /// ... at the account's `max_running_cpus`.
    AccountRunningCpus,
    /// ... at the account's `max_running_gpus`.
    AccountRunningGpus,
}

/// One task placed: holding free resources of `node`, or queued on the node's agent
/// `behind` a task whose cores and memory it takes over when that one ends.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub key: TaskKey,
    pub attempt: u32,
    pub node: NodeId,
    pub behind: Option<TaskKey>,
    /// The task comes from the job's requeued set (else: the next array position).
    pub from_requeue: bool,
}

/// Plans a full scheduling pass over `state` (its `sched` configuration decides the order
/// and how deep tasks queue on agents).
pub fn plan(state: &State) -> Plan {
    plan_pass(state, PassKind::Full)
}

/// Plans a pass of the given kind (an ordinary one only from scheduling version 10 on;
/// see `passes.rs`).
pub fn plan_pass(state: &State, kind: PassKind) -> Plan {
    let mut p = Planner::new(state, kind);
    // Walk the queue by key rather than collecting it: a pass usually stops early, and the
    // queue may hold 100k jobs.
    let mut cursor = None;
    loop {
        let next = match cursor {
            None => state.queue.iter().next(),
            Some(c) => state.queue.range((Excluded(c), Unbounded)).next(),
        };
        let Some(&entry) = next else { break };
        cursor = Some(entry);
        let Some(job) = state.jobs.get(&entry.2) else { continue };
        if p.ordinary {
            if p.plan.examined.len() >= state.sched.pass.ordinary_jobs as usize {
                p.plan.stopped = true;
                break;
            }
            p.plan.examined.push(job.id);
        }
        if !p.plan_job(job) || p.backfill_exhausted() || p.plan.capped {
            break;
        }
    }
    p.plan
}

/// What a task of a job needs from a node.
struct Shape<'j> {
    job: JobId,
    cpus: u32,
    mem: u64,
    gres: &'j GresRequest,
    constraint: Option<&'j Constraint>,
    /// The partitions it may start in (`None`: no partitions configured).
    parts: Option<Vec<&'j Partition>>,
    /// Log time a task started now ends by its limit (`None`: no limit); see `backfill.rs`.
    end: Option<u64>,
}

impl Shape<'_> {
    fn in_partitions(&self, n: &Node) -> bool {
        self.parts.as_ref().is_none_or(|ps| ps.iter().any(|p| p.contains(n)))
    }
}

/// (cpus, mem, partitions as addresses, depth cap): what a request for a predecessor asks.
type Request = (u32, u64, Vec<usize>, u32);

/// Which pending tasks of a job the plan has taken so far.
#[derive(Clone, Copy, Default)]
struct Taken {
    /// The last requeued index taken (requeued tasks go first, in index order).
    last_requeued: Option<u32>,
    /// Fresh positions taken after `Job::next_position`.
    positions: u64,
    /// Tasks placed in this plan.
    placed: u64,
}

/// What one planning pass learns as it goes, so that each placement does not scan the
/// whole cluster again (a scan per placement made the head's cost per task grow with the
/// number of nodes: 350 µs per task at 1,000 nodes, `bench/sched-sim`). A pass only ever
/// takes resources, never frees them, which is what makes these caches valid within it.
struct Planner<'a> {
    state: &'a State,
    plan: Plan,
    /// An ordinary pass: it stops at the first job it cannot start (see `passes.rs`).
    ordinary: bool,
    /// Cpus and memory this plan took per node (the state is read-only).
    used: HashMap<NodeId, (u32, u64)>,
    /// Units of generic resources this plan took, by (node, pool).
    gres_used: HashMap<(NodeId, String), u32>,
    /// Licenses this plan took.
    licenses_used: BTreeMap<String, u64>,
    taken: HashMap<JobId, Taken>,
    /// Nodes kept for a job that could not be placed (see the module docs).
    reserved: Vec<bool>,
    /// (cpus, mem, end) of unconstrained requests that fit on no node in this pass: a
    /// request at least as large, ending no earlier, cannot fit either, until the next
    /// pass (the end matters once a backfill window exists; before, it is 0).
    /// Partitions are part of the key (as their addresses): the same partitions mean the
    /// same nodes, and leaving such requests out made every failed placement scan the
    /// free nodes again (45% of a pass at 10,000 nodes, `bench/sched-sim scale`).
    no_fit: Vec<(u32, u64, u64, Vec<usize>)>,
    /// Tasks a successor could queue behind, by shape; taken on first use.
    tails: Option<PassTails<'a>>,
    /// (cpus, mem, partitions, depth cap) of unconstrained requests no tail took in this
    /// pass, with how many tails the pass had made then: later only tails made since can
    /// take the same request (`PassTails::first_since`). Without it every blocked job
    /// scanned the tails of its shape again (60% of a pass at 1,000 nodes), and clearing
    /// it on every placement still cost 63% at 10,000 (`bench/sched-sim scale`).
    no_pred: Vec<(Request, usize)>,
    /// Nodes with free cpus, most free first (ties: lowest id): the state's kept-up
    /// index with this pass's placements over it, made on the pass's first pick.
    free: Option<FreeNodes<'a>>,
    /// Running limits per user: what this pass gave each user (see `running_limit.rs`).
    users: super::running_limit::UserTaken,
    /// Under backfill: each reserved job's expected start and what its nodes have spare
    /// (the first is the first blocked job's; more under `backfill=conservative`).
    windows: Vec<backfill::Window>,
    /// Generic resource units this plan gave tasks, per node: (end by limit, pool, units).
    gres_ends: Vec<(NodeId, backfill_counted::GresRelease)>,
    /// Partition membership per node found so far in this pass (see `in_parts`): by
    /// partition (its address in the state), 0 unknown, 1 no, 2 yes per node.
    members: std::cell::RefCell<HashMap<usize, Vec<u8>>>,
    /// Under conservative backfill: every node's free resources and releases, built on
    /// first use (see `backfill_profile.rs`).
    bases: Option<HashMap<NodeId, backfill_profile::NodeBase>>,
    /// Jobs considered since the reservation was made (bounded by `backfill.max_jobs`).
    backfill_seen: u32,
    /// Tasks this pass preempts (see `preempt.rs`).
    preempted: BTreeSet<TaskKey>,
    /// Nodes where tasks were preempted for a job that has not started there yet: kept
    /// for that job alone (see `preempt.rs`).
    kept: BTreeMap<NodeId, (JobId, i32)>,
}

impl<'a> Planner<'a> {
    fn new(state: &'a State, kind: PassKind) -> Planner<'a> {
        Planner {
            state,
            plan: Plan::default(),
            ordinary: kind == PassKind::Ordinary && state.sched.version >= super::PASSES_VERSION,
            used: HashMap::default(),
            gres_used: HashMap::default(),
            licenses_used: BTreeMap::new(),
            taken: HashMap::default(),
            reserved: vec![false; state.nodes.len()],
            no_fit: Vec::new(),
            tails: None,
            no_pred: Vec::new(),
            free: None,
            users: super::running_limit::UserTaken::new(state),
            windows: Vec::new(),
            gres_ends: Vec::new(),
            bases: None,
            members: std::cell::RefCell::new(HashMap::default()),
            backfill_seen: 0,
            preempted: BTreeSet::new(),
            kept: preempt::kept_nodes(state),
        }
    }

    /// Places as many tasks of `job` as fit. False when every node is reserved: nothing
    /// later in the order can start, so the pass ends.
    fn plan_job(&mut self, job: &Job) -> bool {
        let (cpus, mem) = (job.spec.cpus, job.spec.mem_bytes);
        // Only --requeue tasks are queued on agents: if a node is lost, a queued task may or
        // may not have started, and a --no-requeue task must then end node_fail although it
        // perhaps never ran. Nor are tasks holding counted resources: a successor takes over
        // cores and memory only.
        // Under backfill the reserved job waits for free resources: queued behind a task
        // it would start when that chain ends, perhaps long after its expected start.
        let queueable = job.spec.requeue && !job.holds_counted_resources() && !self.holds_reservation(job.id);
        let parts = self.partitions_of(job);
        if parts.as_ref().is_some_and(Vec::is_empty) {
            self.plan.waiting.insert(job.id, Wait::PartitionDown);
            return true;
        }
        let shape = Shape {
            job: job.id,
            cpus,
            mem,
            gres: &job.spec.gres,
            constraint: job.spec.constraint.as_ref(),
            parts,
            end: self.end_of(job),
        };
        if self.at_cap() {
            return false;
        }
        if let Some(a) = job.spec.alloc.as_ref() {
            if let Some(w) = self.users.blocks(self.state, job) {
                self.plan.waiting.insert(job.id, w);
                return true;
            }
            let before = self.plan.start.len();
            let more = self.plan_gang(job, a, &shape);
            if self.plan.start.len() > before {
                self.users.took(job);
            }
            return more;
        }
        let limit = job
            .spec
            .array
            .as_ref()
            .and_then(|a| a.limit)
            .map_or(u64::MAX, u64::from);
        loop {
            let taken = self.taken.get(&job.id).copied().unwrap_or_default();
            if job.running.len() as u64 + taken.placed >= limit {
                return true;
            }
            if self.at_cap() {
                return false;
            }
            let Some((index, attempt, from_requeue, skips)) = next_pending(job, &taken) else {
                return true;
            };
            let key = TaskKey { job: job.id, index };
            if let Some(w) = self.users.blocks(self.state, job) {
                self.plan.waiting.insert(job.id, w);
                return true;
            }
            if !self.licenses_free(job) || !self.window_licenses_allow(job, shape.end) {
                self.plan.waiting.insert(job.id, Wait::Licenses);
                return self.licenses_block(job, &shape, None);
            }
            let placed = match self.pick_node(&shape) {
                Some(node) => {
                    self.hold(key, attempt, node, job, from_requeue, queueable);
                    true
                }
                None if !queueable => false,
                None => match self.pick_predecessor(job.id, &shape) {
                    Some((depth, pred)) => {
                        self.queue_behind(key, attempt, pred, depth, cpus, mem, from_requeue);
                        true
                    }
                    None => false,
                },
            };
            if !placed {
                if self.ordinary {
                    return self.stop_at(job.id);
                }
                if self.plan.blocked.is_none() {
                    self.plan.preempt = self.plan_preemption(job, &shape);
                    // Nothing later in this pass may queue behind a victim: it would take
                    // over the cores the preemption frees.
                    let victims = self.plan.preempt.iter().flat_map(|p| p.victims.iter().map(|v| v.0));
                    self.preempted.extend(victims);
                }
                self.plan.blocked.get_or_insert(job.id);
                if self.backfill_on() {
                    if self.plan.reservation.is_some() && !self.conservative() {
                        // EASY protects the first blocked job only: nothing to compute
                        // (an O(nodes) mask per blocked job was 15% of a pass at 1,000
                        // nodes, `bench/sched-sim scale`).
                        return true;
                    }
                    // The last pass's reservation for this job, when it still holds,
                    // needs no mask of every node (O(nodes) on every pass).
                    if self.plan.reservation.is_none() {
                        if let Some(done) = self.reuse_reservation(job, &shape, None) {
                            return done;
                        }
                    }
                    let could_use: Vec<bool> = (self.state.nodes.iter().enumerate())
                        .map(|(i, n)| self.could_use_node(i, n, &shape))
                        .collect();
                    return self.backfill_block(job, &shape, None, &could_use);
                }
                for (i, n) in self.state.nodes.iter().enumerate() {
                    if self.could_use_node(i, n, &shape) {
                        self.reserved[i] = true;
                    }
                }
                return !self.reserved.iter().all(|r| *r);
            }
            self.users.took(job);
            let t = self.taken.entry(job.id).or_default();
            t.placed += 1;
            if from_requeue {
                t.last_requeued = Some(index);
            } else {
                t.positions += 1 + skips;
            }
        }
    }

    /// True (and the plan marked capped) once the pass placed `max_starts` tasks, or an
    /// ordinary pass `pass.ordinary_starts`. Only from the version that has the cap: an
    /// older head would go on placing.
    fn at_cap(&mut self) -> bool {
        let cfg = &self.state.sched;
        let mut cap = usize::MAX;
        if cfg.version >= super::config::MAX_STARTS_VERSION && cfg.max_starts > 0 {
            cap = cfg.max_starts as usize;
        }
        if self.ordinary && cfg.pass.ordinary_starts > 0 {
            cap = cap.min(cfg.pass.ordinary_starts as usize);
        }
        if self.plan.start.len() < cap {
            return false;
        }
        self.plan.capped = true;
        true
    }

    /// Ends an ordinary pass at `job`, which cannot start: nothing behind it may start in
    /// this pass (it reserves nothing, computes no expected start and plans no
    /// preemption; the full pass does).
    fn stop_at(&mut self, job: JobId) -> bool {
        self.plan.blocked.get_or_insert(job);
        self.plan.stopped = true;
        false
    }

    /// A job whose licenses are taken (or kept for a reservation). From version 6, under
    /// backfill, it gets a reservation like a job waiting for nodes: its expected start
    /// is when the licenses are back, so later jobs cannot take them over and over.
    fn licenses_block(&mut self, job: &Job, shape: &Shape, alloc: Option<&AllocSpec>) -> bool {
        if !self.backfill_on() || !self.counts_reserved() {
            return true;
        }
        if self.ordinary {
            // The full pass may reserve the licenses for it: nothing behind it takes
            // them meanwhile.
            self.plan.stopped = true;
            return false;
        }
        let could_use: Vec<bool> = (self.state.nodes.iter().enumerate())
            .map(|(i, n)| match alloc {
                Some(a) => self.could_ever_serve(n, job, a, shape),
                None => self.could_use_node(i, n, shape),
            })
            .collect();
        let more = self.backfill_block(job, shape, alloc, &could_use);
        if self.plan.reservation.as_ref().is_some_and(|r| r.job == job.id) {
            self.plan.blocked.get_or_insert(job.id);
        }
        more
    }

    /// A node a task of `shape` could ever run on and may wait for. A node kept for
    /// another job's preemption that this one may not take is not one it waits for
    /// (reserving it would block that job).
    fn could_use_node(&self, i: usize, n: &Node, shape: &Shape) -> bool {
        n.could_ever_fit(shape.cpus, shape.mem)
            && n.matches(shape.constraint)
            && n.could_ever_serve(shape.gres)
            && shape.in_partitions(n)
            && self.open_to(i as NodeId, n, shape)
    }

    /// `Shape::in_partitions`, remembered per partition and node for the pass: matching a
    /// partition's node expression on every fit check was 38% of a pass at 10,000 nodes
    /// (`bench/sched-sim scale`).
    fn in_parts(&self, t: &Shape, id: NodeId, n: &Node) -> bool {
        let Some(parts) = &t.parts else { return true };
        let mut memo = self.members.borrow_mut();
        parts.iter().any(|p| {
            let key = std::ptr::from_ref::<Partition>(p) as usize;
            let known = memo.entry(key).or_insert_with(|| vec![0; self.state.nodes.len()]);
            match known.get(id as usize).copied() {
                Some(1) => false,
                Some(2) => true,
                _ => {
                    let is = p.contains(n);
                    if let Some(k) = known.get_mut(id as usize) {
                        *k = if is { 2 } else { 1 };
                    }
                    is
                }
            }
        })
    }

    /// Cpus and memory of `node` not held in the state nor taken by this plan.
    fn free_on(&self, id: NodeId, n: &Node) -> (u32, u64) {
        let (c, m) = self.used.get(&id).copied().unwrap_or_default();
        (n.cpus_free().saturating_sub(c), n.mem_free().saturating_sub(m))
    }

    fn fits(&self, id: NodeId, t: &Shape) -> bool {
        let Some(n) = self.state.nodes.get(id as usize) else {
            return false;
        };
        let (fc, fm) = self.free_on(id, n);
        !self.reserved[id as usize]
            && self.open_to(id, n, t)
            && n.takes_work()
            && fc >= t.cpus
            && fm >= t.mem
            && n.matches(t.constraint)
            && self.in_parts(t, id, n)
            && (t.gres.is_empty() || (self.gres_choice(id, n, t.gres).is_some() && self.window_gres_allows(id, t.end)))
            && self
                .window_cap(id, t.end)
                .is_none_or(|(c, m)| c >= t.cpus && m >= t.mem)
    }

    /// The pools of `n` that would serve `req` after what this plan took.
    fn gres_choice(&self, id: NodeId, n: &Node, req: &GresRequest) -> Option<Vec<(String, u32)>> {
        choose_pools(&n.gres, req, |pool| {
            self.gres_used.get(&(id, pool.to_string())).copied().unwrap_or(0)
        })
    }

    /// The partitions (not down) a job may start in; `None` when the cluster has none
    /// configured (every node is in the implicit default partition).
    fn partitions_of(&self, job: &Job) -> Option<Vec<&'a Partition>> {
        let parts = &self.state.sched.partitions;
        if parts.is_empty() {
            return None;
        }
        Some(
            job.spec
                .partition
                .split(',')
                .filter_map(|p| parts.get(p))
                .filter(|p| p.state != PartitionState::Down)
                .collect(),
        )
    }

    /// True when the job's licenses for one more task are free.
    fn licenses_free(&self, job: &Job) -> bool {
        job.spec.licenses.iter().all(|(name, n)| {
            let used = self.state.licenses_used.get(name).copied().unwrap_or(0)
                + self.licenses_used.get(name).copied().unwrap_or(0);
            let total = self.state.sched.licenses.get(name).copied().unwrap_or(0);
            used + u64::from(*n) <= total
        })
    }

    fn pick_node(&mut self, t: &Shape) -> Option<NodeId> {
        let (cpus, mem) = (t.cpus, t.mem);
        // The no-fit cache holds only plain requests: a constraint or a generic resource
        // makes a request fit fewer nodes, not more.
        let plain = t.constraint.is_none() && t.gres.is_empty();
        let parts: Vec<usize> = (t.parts.iter().flatten())
            .map(|p| std::ptr::from_ref::<Partition>(p) as usize)
            .collect();
        let end = match (self.windows.is_empty(), t.end) {
            (true, _) => 0,
            (false, e) => e.unwrap_or(u64::MAX),
        };
        if plain
            && self
                .no_fit
                .iter()
                .any(|(nc, nm, ne, np)| cpus >= *nc && mem >= *nm && end >= *ne && parts == *np)
        {
            return None;
        }
        if self.free.is_none() {
            self.free = Some(self.free_nodes());
        }
        // The node with the most free cpus that fits the task now (ties: lowest id),
        // spreading work over the cluster.
        let found =
            (self.free.as_ref()).and_then(|free| free.first_fit(cpus, self.partition_bits(t), |id| self.fits(id, t)));
        if found.is_none() && plain {
            self.no_fit.push((cpus, mem, end, parts));
        }
        found
    }

    /// Nodes with a free cpu, most free first: the state's kept-up index (a fresh one
    /// when it is not settled, as for a copy of the state) with what this pass placed.
    fn free_nodes(&self) -> FreeNodes<'a> {
        let state: &'a State = self.state;
        let mut free = FreeNodes::new(state.free_nodes.settled_or(|| state.fresh_free()));
        for (&id, &(cpus, _)) in &self.used {
            if let Some(n) = state.nodes.get(id as usize) {
                let before = n.cpus_free();
                free.update(id, before, before.saturating_sub(cpus));
            }
        }
        free
    }

    /// Places a task on free resources of `node`; the new holder is a tail of depth 0 if
    /// a successor may queue behind it.
    fn hold(&mut self, key: TaskKey, attempt: u32, node: NodeId, job: &Job, from_requeue: bool, queueable: bool) {
        let (cpus, mem) = (job.spec.cpus, job.spec.mem_bytes);
        let end = self.end_of(job);
        if let Some(n) = self.state.nodes.get(node as usize) {
            let chosen = self.gres_choice(node, n, &job.spec.gres).unwrap_or_default();
            self.gres_took(node, &chosen, end);
            for (pool, units) in chosen {
                *self.gres_used.entry((node, pool)).or_default() += units;
            }
        }
        for (name, n) in &job.spec.licenses {
            *self.licenses_used.entry(name.clone()).or_default() += u64::from(*n);
        }
        self.window_took_licenses(job, end);
        let before = self
            .state
            .nodes
            .get(node as usize)
            .map_or(0, |n| self.free_on(node, n).0);
        let u = self.used.entry(node).or_default();
        u.0 += cpus;
        u.1 += mem;
        if let Some(free) = self.free.as_mut() {
            free.update(node, before, before.saturating_sub(cpus));
        }
        self.window_took(node, cpus, mem, end);
        if let Some(tails) = self.tails.as_mut().filter(|_| queueable) {
            tails.add((cpus, mem), (0, node, key));
        }
        self.plan.start.push(Placement {
            key,
            attempt,
            node,
            behind: None,
            from_requeue,
        });
    }

    /// Queues a task behind `pred`, which stops being a tail; the new task is one, a step
    /// deeper.
    #[allow(clippy::too_many_arguments)]
    fn queue_behind(
        &mut self,
        key: TaskKey,
        attempt: u32,
        (node, pred): (NodeId, TaskKey),
        depth: u32,
        cpus: u32,
        mem: u64,
        from_requeue: bool,
    ) {
        self.base_never(node);
        if let Some(tails) = self.tails.as_mut() {
            tails.take((cpus, mem), (depth, node, pred));
            tails.add((cpus, mem), (depth + 1, node, key));
        }
        self.plan.start.push(Placement {
            key,
            attempt,
            node,
            behind: Some(pred),
            from_requeue,
        });
    }

    /// A running task of the given shape on an up node that has no successor yet and is not
    /// queued too deep for a task of `job_id` to wait behind it: the one with the shortest
    /// chain, so queued work spreads over the slots. Taking the first tail found instead
    /// chained two requeued tasks (low indices sort first) behind one running task while
    /// the other core ran out of work and idled. Returns (depth, (node, task)).
    fn pick_predecessor(&mut self, job_id: JobId, t: &Shape) -> Option<(u32, (NodeId, TaskKey))> {
        let shape = (t.cpus, t.mem);
        let state = self.state;
        let depth_cap = state.jobs.get(&job_id).map_or(0, |j| j.queue_depth(&state.sched));
        if depth_cap == 0 {
            // Nothing may queue behind anything for this job (depth < 0 never holds):
            // building the tails index for it cost a whole pass of lookups per entry.
            return None;
        }
        // A node kept for a preemption is open to one job only: then a failure says
        // nothing about the next job.
        let cacheable = t.constraint.is_none() && self.kept.is_empty();
        let parts: Vec<usize> = (t.parts.iter().flatten())
            .map(|p| std::ptr::from_ref::<Partition>(p) as usize)
            .collect();
        let seen = (shape.0, shape.1, parts, depth_cap);
        let cached = (self.no_pred.iter()).position(|(s, _)| cacheable && *s == seen);
        if self.tails.is_none() {
            self.tails = Some(self.tails_now());
        }
        let tails = self.tails.as_ref()?;
        let (reserved, windows, preempted) = (&self.reserved, &self.windows, &self.preempted);
        // Out for every request, for the rest of the pass: a pass only ever reserves,
        // preempts and opens windows, never undoes one.
        let out = |&(_, node, key): &Tail| {
            reserved[node as usize]
                || preempted.contains(&key)
                || windows.iter().any(|w| w.spare.contains_key(&node))
                || state.nodes.get(node as usize).is_none_or(|n| !n.takes_work())
        };
        let ok = |&(depth, node, key): &Tail| {
            let Some(n) = state.nodes.get(node as usize) else {
                return false;
            };
            self.open_to(node, n, t)
                && n.matches(t.constraint)
                && self.in_parts(t, node, n)
                && depth < state.queue_limit(job_id, key)
        };
        let bits = self.partition_bits(t);
        let found = match cached {
            Some(i) => {
                let since = self.no_pred[i].1;
                let (found, qualified) = tails.first_since(since, shape, bits, depth_cap, out, ok);
                // The one found is taken now; with two or more, the rest stay candidates.
                if qualified <= 1 {
                    self.no_pred[i].1 = tails.made();
                }
                found
            }
            None => {
                // Tails come shallowest first, so the scan stops at the job's own depth
                // (the queue limit is the smaller of both jobs' depths).
                let found = tails.first(shape, bits, depth_cap, out, ok);
                if found.is_none() && cacheable {
                    self.no_pred.push((seen, tails.made()));
                }
                found
            }
        };
        found.map(|(depth, node, key)| (depth, (node, key)))
    }
}

impl<'a> Planner<'a> {
    /// Tails in the state plus the tasks this plan placed so far (all holders: nothing
    /// is queued behind a task before the tails exist).
    fn tails_now(&self) -> PassTails<'a> {
        let state: &'a State = self.state;
        // Not settled (a plan outside `schedule`): built afresh, as before the index.
        let mut tails = PassTails::new(state.tails.settled_or(|| state.fresh_tails()));
        for p in &self.plan.start {
            let Some(job) = state.jobs.get(&p.key.job) else {
                continue;
            };
            if job.holds_counted_resources() {
                continue;
            }
            let shape = (job.spec.cpus, job.spec.mem_bytes);
            tails.add(shape, (0, p.node, p.key));
        }
        tails
    }

    /// The partition bits (`state/tails.rs`) of the partitions a job of shape `t` may
    /// start in; `None` when it may start anywhere or has a partition without a bit.
    fn partition_bits(&self, t: &Shape) -> Option<u64> {
        let parts = t.parts.as_ref()?;
        let all = &self.state.sched.partitions;
        let mut bits = 0u64;
        for p in parts {
            let i = all.values().position(|q| std::ptr::eq(q, *p))?;
            bits |= 1u64.checked_shl(i as u32).filter(|_| i < 64)?;
        }
        Some(bits)
    }
}

/// The next pending task of a job after what the plan took: (array index, attempt, from
/// the requeue set, fresh positions stepped over because their tasks were cancelled
/// before dispatch). Requeued tasks go first, in index order.
fn next_pending(job: &Job, taken: &Taken) -> Option<(u32, u32, bool, u64)> {
    let requeued = match taken.last_requeued {
        None => job.requeued.iter().next(),
        Some(last) => job.requeued.range((Excluded(last), Unbounded)).next(),
    };
    if let Some((&i, &a)) = requeued {
        return Some((i, a, true, 0));
    }
    let first = job.next_position + taken.positions;
    (first..job.total)
        .map(|p| (p, job.index_at(p)))
        .find(|(_, i)| !job.skipped.contains(i))
        .map(|(p, i)| (i, 1, false, p - first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, NodeRegistration, Response};
    use crate::invariants::Violation;
    use crate::job::JobSpec;

    fn cluster(cpus: u32) -> State {
        let mut s = State::new();
        let reg = NodeRegistration {
            name: "n".into(),
            uid: "u".into(),
            cpus,
            mem_bytes: 1 << 30,
            ..NodeRegistration::default()
        };
        s.apply(Command::RegisterNode { reg, now_ms: 1 });
        s
    }

    fn submit(s: &mut State, tasks: u32) -> JobId {
        let spec = JobSpec {
            argv: vec!["true".into()],
            cpus: 1,
            chdir: "/".into(),
            requeue: true,
            array: (tasks > 1).then(|| crate::parse::parse_array(&format!("1-{tasks}")).unwrap()),
            ..JobSpec::default()
        };
        match s.apply(Command::Submit {
            request_id: String::new(),
            spec,
            now_ms: 2,
        }) {
            Response::Submitted { job, .. } => job,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn planning_reads_only_and_commit_applies_exactly_the_plan() {
        let mut s = cluster(2);
        // Fill the node and its agent queue; then take the node down so the queue waits.
        let job = submit(&mut s, 20);
        let before = s.clone();
        let p = plan(&s);
        assert_eq!(s, before, "planning changes nothing");
        assert!(p.start.is_empty(), "everything that fits is placed already: {p:?}");
        assert_eq!(p.blocked, Some(job));
        assert_eq!(plan(&s), p, "the same state plans the same");
    }

    #[test]
    fn commit_refuses_a_plan_that_over_commits_or_places_a_task_twice() {
        let mut s = cluster(1);
        let holder = submit(&mut s, 1);
        assert_eq!(s.jobs[&holder].running.len(), 1);
        // A no-requeue job waits: the node is full.
        let spec = JobSpec {
            argv: vec!["true".into()],
            cpus: 1,
            chdir: "/".into(),
            requeue: false,
            ..JobSpec::default()
        };
        let Response::Submitted { job: waiting, .. } = s.apply(Command::Submit {
            request_id: String::new(),
            spec,
            now_ms: 3,
        }) else {
            panic!()
        };
        let before = s.clone();
        let key = TaskKey { job: waiting, index: 0 };
        let over = Plan {
            start: vec![Placement {
                key,
                attempt: 1,
                node: 0,
                behind: None,
                from_requeue: false,
            }],
            ..Plan::default()
        };
        let v = s.commit(&over);
        assert!(matches!(v.as_slice(), [Violation::OverCommit { .. }]), "{v:?}");
        assert_eq!(s.jobs, before.jobs, "a refused placement changes nothing");
        assert_eq!(s.nodes, before.nodes);
        // The holder is not pending: placing it again is refused.
        let twice = Plan {
            start: vec![Placement {
                key: TaskKey { job: holder, index: 0 },
                attempt: 1,
                node: 0,
                behind: None,
                from_requeue: false,
            }],
            ..Plan::default()
        };
        let v = s.commit(&twice);
        assert!(matches!(v.as_slice(), [Violation::NotPending { .. }]), "{v:?}");
        // A --no-requeue task of another shape may not queue behind the holder either.
        let behind = Plan {
            start: vec![Placement {
                key,
                attempt: 1,
                node: 0,
                behind: Some(TaskKey { job: 999, index: 0 }),
                from_requeue: false,
            }],
            ..Plan::default()
        };
        let v = s.commit(&behind);
        assert!(matches!(v.as_slice(), [Violation::BadSuccessor { .. }]), "{v:?}");
        assert_eq!(crate::invariants::check_all(&s), Ok(()));
    }
}
