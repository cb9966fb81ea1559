//! The replicated state machine: cluster state as the result of applying the log.
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{Command, NodeRegistration, Response, TaskOutcome, TaskReport};
use crate::events::{ApplyOutput, Event};
use crate::ids::{JobId, NodeId, TaskKey};
use crate::invariants::Violation;
use crate::job::{EndedTask, Job, JobSpec, RunningTask, TaskState, MAX_JOB_NODES};
use crate::node::{Liveness, Node};
use crate::sched::{ConfigError, SchedConfig};
use crate::scheduler;

mod cancel_tasks;
mod complete_alloc;
pub mod derived;
pub mod fairshare;
pub mod free_index;
mod gang;
mod preempt;
pub mod quota;
mod record_step;
pub mod releases;
pub mod running;
pub mod tails;
pub mod turns;

/// Request ids remembered for idempotent submit.
pub const MAX_REMEMBERED_REQUESTS: usize = 100_000;
pub use crate::sched::config::MAX_QUEUED_PER_SLOT;
/// Tasks that may wait on an agent behind one running task of a job whose tasks are not
/// short, by default (`queue_depth` of [`SchedConfig`]).
pub const QUEUED_PER_SLOT: u32 = 2;
/// Finished jobs kept in memory for `show`/`jobs --all`; older ones are dropped.
pub const MAX_FINISHED_JOBS: usize = 100_000;

/// Everything the heads agree on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The id the next job gets (ids start at 1).
    pub next_job_id: JobId,
    pub jobs: BTreeMap<JobId, Job>,
    /// Jobs with pending tasks in scheduling order: keys of `sched.order`. Kept up only by
    /// `enqueue`/`dequeue`, which compute the key from the job and the configuration.
    pub queue: BTreeSet<crate::sched::order::QueueKey>,
    pub nodes: Vec<Node>,
    pub node_by_name: BTreeMap<String, NodeId>,
    /// request id -> job id, for idempotent submit.
    pub requests: BTreeMap<String, JobId>,
    pub request_order: VecDeque<String>,
    /// Finished jobs, oldest first.
    pub finished: VecDeque<JobId>,
    /// Latest leader timestamp seen; time in the state never goes backwards.
    pub now_ms: u64,
    /// The job at the head of the queue that did not fit in the last scheduling pass.
    pub blocked_job: Option<JobId>,
    /// CA, join tokens and issued certificates.
    #[serde(default)]
    pub security: crate::security::Security,
    /// The scheduling configuration (policy, queue depths) and its behaviour version.
    #[serde(default)]
    pub sched: SchedConfig,
    /// Licenses held by running tasks, by name (never above `sched.licenses`).
    #[serde(default)]
    pub licenses_used: BTreeMap<String, u64>,
    /// Why jobs examined by the last scheduling pass wait, where it is not plain resources
    /// or order (those are `blocked_job` and the queue).
    #[serde(default)]
    pub waiting: BTreeMap<JobId, crate::sched::plan::Wait>,
    /// Shares identical job environments (a cache; not part of the replicated state).
    #[serde(skip)]
    pub envs: crate::intern::EnvInterner,
    /// Changes made by the entry being applied; empty between entries (see `apply_output`).
    #[serde(skip)]
    pub(crate) changes: Vec<Event>,
    /// Jobs waiting on a dependency, and who depends on whom (see `gates.rs`).
    #[serde(default)]
    pub deps: crate::deps::DepGraph,
    /// (log time, job): a gate of the job may open then (begin time, `after` delay).
    #[serde(default)]
    pub timers: BTreeSet<(u64, JobId)>,
    /// Unfinished jobs by user, for the queue limits (see `state/quota.rs`).
    #[serde(default)]
    pub usage: quota::Usage,
    /// Turn numbers for the `round_robin` order (see `state/turns.rs`).
    #[serde(default)]
    pub turns: turns::Turns,
    /// Running tasks and cpus per user, for the running limits (see `state/running.rs`).
    #[serde(default)]
    pub running_usage: running::RunningUsage,
    /// Decayed fair-share usage per user (see `state/fairshare.rs`).
    #[serde(default)]
    pub fairshare: fairshare::FairShare,
    /// Under `backfill=easy`: the last pass's reservation (see `sched/backfill.rs`).
    #[serde(default)]
    pub reservation: Option<crate::sched::Reservation>,
    /// Under `backfill=conservative`: the last pass's further reservations, in queue
    /// order (see `sched/backfill_profile.rs`).
    #[serde(default)]
    pub later_reservations: Vec<crate::sched::Reservation>,
    /// Under `preempt`: (task, attempt) of the tasks stopped for each pending job, kept
    /// while one of them still runs (see `sched/preempt.rs`, `state/preempt.rs`).
    #[serde(default)]
    pub preempting: BTreeMap<JobId, crate::sched::preempt::Preempting>,
    /// The last scheduling pass stopped at `max_starts`: the leader proposes a `Tick` at
    /// once to go on (see `next_wake_ms`).
    #[serde(default)]
    pub more_to_place: bool,
    /// From scheduling version 10: an ordinary entry's pass stopped at a job it could not
    /// start, and a full pass is due at this log time (see `sched/passes.rs`).
    #[serde(default)]
    pub full_pass_due_ms: Option<u64>,
    /// Log time of the last full pass (a `Tick`'s).
    #[serde(default)]
    pub last_full_pass_ms: u64,
    /// Running tasks a successor may queue behind (derived, not replicated: see
    /// `state/tails.rs`).
    #[serde(skip)]
    pub(crate) tails: tails::Tails,
    /// Nodes by free cpus (derived, not replicated: see `state/free_index.rs`).
    #[serde(skip)]
    pub(crate) free_nodes: free_index::FreeCache,
    /// What each node holds until when (derived, not replicated: see
    /// `state/releases.rs`).
    #[serde(skip)]
    pub(crate) releases: releases::ReleaseCache,
}

/// Why a submit cannot be accepted; the text goes to the user as is.
pub fn validate_spec(spec: &JobSpec) -> Result<(), String> {
    if spec.argv.is_empty() && spec.script.is_empty() {
        return Err("no command given: use `rudel submit -- CMD [ARGS]` or `rudel submit SCRIPT`".into());
    }
    if spec.argv.first().is_some_and(|a| a.is_empty()) {
        return Err("the command is an empty string".into());
    }
    if spec.cpus == 0 {
        return Err("--cpus must be at least 1".into());
    }
    if let Some(a) = &spec.array {
        if a.is_empty() {
            return Err("the array spec holds no index".into());
        }
        if a.limit == Some(0) {
            return Err("the array limit %N must be at least 1".into());
        }
    }
    if !spec.chdir.starts_with('/') {
        return Err(format!("the working directory must be absolute, got {:?}", spec.chdir));
    }
    gang::validate_alloc(spec)
}

impl State {
    /// An empty cluster.
    pub fn new() -> State {
        State {
            next_job_id: 1,
            ..State::default()
        }
    }

    /// Applies one log entry. Deterministic: the same commands in the same order give the
    /// same state on every head. Ends with a scheduling pass at the command's time.
    pub fn apply(&mut self, cmd: Command) -> Response {
        self.apply_output(cmd).response
    }

    /// Applies one log entry like [`State::apply`] and also returns what it changed, in
    /// order, the scheduling pass included.
    pub fn apply_output(&mut self, cmd: Command) -> ApplyOutput {
        self.changes.clear();
        let kind = self.pass_kind(&cmd);
        let response = self.apply_one(cmd);
        self.wake_due();
        let (seen, _) = self.settle_gates(0);
        let (_, mut violations) = scheduler::schedule(self, kind);
        // Placements may start jobs others wait for (`after`): give those their turn in
        // the same entry rather than the next.
        if let (_, true) = self.settle_gates(seen) {
            violations.extend(scheduler::schedule(self, kind).1);
        }
        // Settled here too, not only before a pass, so that between entries the index is
        // readable and checked (`invariants::tail_index_is_exact`).
        self.settle_tails();
        self.settle_free();
        self.settle_releases();
        ApplyOutput {
            response,
            events: std::mem::take(&mut self.changes),
            violations,
        }
    }

    /// The pass `cmd` runs: a `Tick` the full one, any other entry from scheduling version
    /// 10 on a short one (see `sched/passes.rs`).
    fn pass_kind(&self, cmd: &Command) -> crate::sched::PassKind {
        use crate::sched::PassKind;
        if matches!(cmd, Command::Tick { .. }) || self.sched.version < crate::sched::PASSES_VERSION {
            PassKind::Full
        } else {
            PassKind::Ordinary
        }
    }

    fn emit(&mut self, e: Event) {
        self.changes.push(e);
    }

    fn node_changed(&mut self, id: NodeId) {
        self.touch_free(id);
        self.emit(Event::NodeChanged { node: id });
    }

    fn apply_one(&mut self, cmd: Command) -> Response {
        match cmd {
            Command::Submit {
                request_id,
                spec,
                now_ms,
            } => {
                self.advance(now_ms);
                self.submit(request_id, spec)
            }
            Command::Cancel { jobs, now_ms } => {
                self.advance(now_ms);
                self.cancel(&jobs)
            }
            Command::CompleteAllocation { job, exit_code, now_ms } => {
                self.advance(now_ms);
                self.complete_allocation(job, exit_code)
            }
            Command::CancelTasks { tasks, now_ms } => {
                self.advance(now_ms);
                self.cancel_tasks(&tasks)
            }
            Command::RegisterNode { reg, now_ms } => {
                self.advance(now_ms);
                self.register(reg)
            }
            Command::NodeDisconnected { name, now_ms } => {
                self.advance(now_ms);
                if let Some(&id) = self.node_by_name.get(&name) {
                    if let Some(n) = self.nodes.get_mut(id as usize) {
                        n.liveness = Liveness::Disconnected;
                        n.last_seen_ms = self.now_ms;
                        self.node_changed(id);
                    }
                }
                Response::Ok
            }
            Command::NodeLost {
                name,
                epoch,
                reason,
                now_ms,
            } => {
                self.advance(now_ms);
                self.node_lost(&name, epoch, &reason);
                Response::Ok
            }
            Command::Drain { nodes, reason, now_ms } => {
                self.advance(now_ms);
                self.set_drain(&nodes, Some(reason))
            }
            Command::Resume { nodes, now_ms } => {
                self.advance(now_ms);
                self.set_drain(&nodes, None)
            }
            Command::Reports { node, reports, now_ms } => {
                self.advance(now_ms);
                if let Some(&id) = self.node_by_name.get(&node) {
                    if let Some(n) = self.nodes.get_mut(id as usize) {
                        n.last_seen_ms = self.now_ms;
                    }
                    for r in reports {
                        self.finish_task(id, &r);
                    }
                }
                Response::Ok
            }
            Command::Batch(cmds) => Response::Batch(cmds.into_iter().map(|c| self.apply_one(c)).collect()),
            Command::Tick { now_ms } => {
                self.advance(now_ms);
                self.fair_tick();
                Response::Ok
            }
            Command::InitCa { ca } => match self.security.init_ca(ca) {
                Ok(()) => Response::Ok,
                Err(reason) => Response::Rejected { reason },
            },
            Command::CreateToken {
                secret_hash,
                role,
                description,
                expires_ms,
                cert_ttl_ms,
                now_ms,
                user,
            } => {
                self.advance(now_ms);
                let id =
                    self.security
                        .create_token(secret_hash, role, description, expires_ms, cert_ttl_ms, self.now_ms);
                self.security.bind_token_user(id, user);
                Response::TokenCreated { id }
            }
            Command::RevokeToken { id, now_ms } => {
                self.advance(now_ms);
                match self.security.revoke_token(id, self.now_ms) {
                    Some(certs) => Response::TokenRevoked { certs },
                    None => Response::Rejected {
                        reason: format!("no join token {id} (`rudel token list` shows them)"),
                    },
                }
            }
            Command::GrantCert { grant, now_ms } => {
                self.advance(now_ms);
                self.grant_cert(grant)
            }
            Command::ForgetNode { name, now_ms } => {
                self.advance(now_ms);
                self.forget_node(&name)
            }
            Command::Configure { settings, now_ms } => {
                self.advance(now_ms);
                // Partitions may change, and with them the tail index's groups.
                self.tails_reset();
                self.free_reset();
                self.configure(&settings)
            }
            Command::Hold { jobs, now_ms } => {
                self.advance(now_ms);
                self.hold(&jobs).into()
            }
            Command::Release { jobs, now_ms } => {
                self.advance(now_ms);
                self.release(&jobs).into()
            }
            Command::Update { jobs, update, now_ms } => {
                self.advance(now_ms);
                self.update(&jobs, &update).into()
            }
            Command::Requeue { jobs, hold, now_ms } => {
                self.advance(now_ms);
                self.requeue(&jobs, hold).into()
            }
            Command::StepEnded { record, now_ms, .. } => {
                self.advance(now_ms);
                self.record_step(record)
            }
        }
    }

    /// Refuses an entry this build cannot apply as its peers would: one that raises the
    /// scheduling behaviour above [`crate::sched::SCHED_VERSION`], or any entry once the
    /// state runs such a version. The head stops rather than apply it (a head that went on
    /// would silently reach another state than its peers).
    pub fn precheck(&self, cmd: &Command) -> Result<(), ConfigError> {
        self.sched.check_supported()?;
        match cmd {
            Command::Configure { settings, .. } => {
                for (k, v) in settings {
                    if k == "version" {
                        if let Ok(wanted) = v.parse::<u32>() {
                            SchedConfig {
                                version: wanted,
                                ..SchedConfig::default()
                            }
                            .check_supported()?;
                        }
                    }
                }
                Ok(())
            }
            Command::Batch(cmds) => cmds.iter().try_for_each(|c| self.precheck(c)),
            Command::StepEnded { version, .. } if *version > crate::steps::STEP_RECORD_VERSION => {
                Err(ConfigError::NewerStepRecord {
                    wanted: *version,
                    ours: crate::steps::STEP_RECORD_VERSION,
                })
            }
            _ => Ok(()),
        }
    }

    /// Changes scheduling settings, all or nothing. A new order re-sorts the queue.
    fn configure(&mut self, settings: &[(String, String)]) -> Response {
        let next = match self
            .sched
            .with_all(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            Ok(c) => c,
            Err(e) => return Response::Rejected { reason: e.to_string() },
        };
        for (name, used) in &self.licenses_used {
            let total = next.licenses.get(name).copied().unwrap_or(0);
            if *used > total {
                return Response::Rejected {
                    reason: format!(
                        "running tasks hold {used} {name} licenses: the count cannot go below that until they end"
                    ),
                };
            }
        }
        if let Some(reason) = self.partitions_in_use(&next) {
            return Response::Rejected { reason };
        }
        let reorder = next.order != self.sched.order
            || next.partitions != self.sched.partitions
            || (next.order == crate::sched::Order::Multifactor && next.fair != self.sched.fair);
        let enable_fair = !self.fair_on() && next.version >= crate::sched::fair::FAIR_VERSION;
        self.sched = next;
        if enable_fair {
            self.fair_enable();
        }
        if self.fair_on() {
            // New shares count from this entry on, not from the next Tick.
            self.fairshare.refresh(&self.sched.fair);
        }
        if reorder {
            let waiting: Vec<JobId> = self.queue.iter().map(|&(_, _, id)| id).collect();
            self.queue.clear();
            for id in waiting {
                self.enqueue(id);
            }
        }
        Response::Configured {
            settings: self.sched.all_settings(),
        }
    }

    /// A partition unfinished jobs name must still exist under `next` (the implicit
    /// default partition exists while none is configured): their jobs would wait forever.
    fn partitions_in_use(&self, next: &SchedConfig) -> Option<String> {
        let exists = |name: &str| {
            if next.partitions.is_empty() {
                name == crate::sched::DEFAULT_PARTITION
            } else {
                next.partitions.contains_key(name)
            }
        };
        let mut missing: BTreeMap<&str, u64> = BTreeMap::new();
        for j in self.jobs.values().filter(|j| !j.is_finished()) {
            for p in j.spec.partition.split(',').filter(|p| !p.is_empty() && !exists(p)) {
                *missing.entry(p).or_default() += 1;
            }
        }
        let (name, jobs) = missing.into_iter().next()?;
        Some(format!(
            "partition {name} still has {jobs} unfinished jobs: keep it (state=drain stops new ones) \
             until they end, or cancel them"
        ))
    }

    /// Puts a job with pending tasks into the queue at its place in the configured order.
    /// A gated job (held, waiting on a dependency or its begin time) stays out.
    pub(crate) fn enqueue(&mut self, id: JobId) {
        let multifactor = self.sched.order == crate::sched::Order::Multifactor;
        if multifactor && self.jobs.get(&id).is_some_and(|j| self.eligible(j)) && !self.fair_prepare_enqueue(id) {
            return;
        }
        if let Some(job) = self.jobs.get(&id) {
            if self.eligible(job) {
                self.queue.insert(self.sched.queue_key(job));
            }
        }
    }

    /// Takes a job out of the queue.
    pub(crate) fn dequeue(&mut self, id: JobId) {
        if let Some(job) = self.jobs.get(&id) {
            self.queue.remove(&self.sched.queue_key(job));
        }
    }

    /// Records an issued certificate; an agent's that binds its name is refused while
    /// another machine holds the name (two machines under one name would take it from each
    /// other in turn, each time failing the other's tasks).
    fn grant_cert(&mut self, grant: crate::security::CertGrant) -> Response {
        if grant.bind_name && grant.role == crate::security::Role::Agent {
            // The token first: a caller without a valid one learns nothing about the name.
            if let Some((id, hash)) = &grant.token {
                if let Err(reason) = self.security.check_token(*id, hash, self.now_ms) {
                    return Response::Rejected { reason };
                }
            }
            if let Some(held) = self.name_held(&grant.name, &grant.node_uid) {
                return Response::Rejected {
                    reason: held.to_string(),
                };
            }
        }
        match self.security.grant(grant, self.now_ms) {
            Ok(()) => Response::Ok,
            Err(reason) => Response::Rejected { reason },
        }
    }

    /// Who holds node name `name` if a machine other than `uid` does: the registered node
    /// record, else a valid agent certificate issued for the name (joined, not registered).
    pub fn name_held(&self, name: &str, uid: &str) -> Option<crate::security::NameHeld> {
        self.node_held(name, uid).or_else(|| {
            let holder = self.security.agent_cert_holder(name, uid, self.now_ms)?;
            Some(crate::security::NameHeld {
                name: name.to_string(),
                holder_uid: holder.to_string(),
                holder_address: String::new(),
                uid: uid.to_string(),
            })
        })
    }

    /// The registered node `name` if it is bound to another uid than `uid`.
    fn node_held(&self, name: &str, uid: &str) -> Option<crate::security::NameHeld> {
        let n = self.node(name)?;
        (!n.uid.is_empty() && n.uid != uid).then(|| crate::security::NameHeld {
            name: name.to_string(),
            holder_uid: n.uid.clone(),
            holder_address: n.address.clone(),
            uid: uid.to_string(),
        })
    }

    /// Forgets a node on an admin's word: its tasks are lost (`--requeue` ones run again,
    /// the others end `node_fail`), its agent certificates are revoked so the old machine
    /// cannot come back under the name, and the name is unbound so a new machine may join.
    /// The record stays (task history refers to nodes by id), down, until one registers.
    fn forget_node(&mut self, name: &str) -> Response {
        let revoked_certs = self.security.revoke_node_certs(name, self.now_ms);
        let Some(&id) = self.node_by_name.get(name) else {
            if revoked_certs > 0 {
                return Response::NodeForgotten {
                    tasks: 0,
                    revoked_certs,
                };
            }
            return Response::Rejected {
                reason: format!("no node {name} (`rudel nodes` lists them)"),
            };
        };
        let Some(n) = self.nodes.get_mut(id as usize) else {
            return Response::Rejected {
                reason: format!("no node {name}"),
            };
        };
        // A late "node lost" or session end of the old machine must not touch the record
        // once a new machine registers: bump the epoch that fences them.
        n.epoch += 1;
        n.liveness = Liveness::Down;
        n.down_reason = "forgotten by an admin (`rudel node forget`); a new machine may join under this name".into();
        n.uid.clear();
        n.boot_id.clear();
        self.node_changed(id);
        let Some(n) = self.nodes.get(id as usize) else {
            return Response::Rejected {
                reason: format!("no node {name}"),
            };
        };
        let running: Vec<(TaskKey, u32)> = n.running.iter().map(|(k, a)| (*k, *a)).collect();
        let now = self.now_ms;
        for &(key, attempt) in &running {
            let why = format!("node {name} was forgotten by an admin");
            self.finish_task(id, &lost_report(key, attempt, now, &why));
        }
        Response::NodeForgotten {
            tasks: running.len() as u64,
            revoked_certs,
        }
    }

    fn advance(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    fn submit(&mut self, request_id: String, spec: JobSpec) -> Response {
        if !request_id.is_empty() {
            if let Some(&job) = self.requests.get(&request_id) {
                let tasks = self.jobs.get(&job).map_or(0, |j| j.total);
                return Response::Submitted {
                    job,
                    tasks,
                    duplicate: true,
                };
            }
        }
        if let Err(reason) = validate_spec(&spec) {
            return Response::Rejected { reason };
        }
        let spec = match self.place_in_partitions(spec).and_then(|s| self.charge_account(s)) {
            Ok(s) => s,
            Err(reason) => return Response::Rejected { reason },
        };
        if let Err(reason) = self.check_fits_somewhere(&spec) {
            return Response::Rejected { reason };
        }
        let dep = match self.resolve_dependency(&spec) {
            Ok(d) => d,
            Err(reason) => return Response::Rejected { reason },
        };
        let new_tasks = spec.array.as_ref().map_or(1, crate::array::ArraySpec::len).max(1);
        if let Err(reason) = self.check_queue_limits(&spec, new_tasks) {
            return Response::Rejected { reason };
        }
        let id = self.next_job_id.max(1);
        // One id per task: array task i is job `id + position` (Slurm's per-task job
        // ids, `%j`, `SLURM_JOB_ID`), so no later job may take those.
        let tasks = spec.array.as_ref().map_or(1, crate::array::ArraySpec::len).max(1);
        self.next_job_id = id.saturating_add(tasks);
        let mut spec = spec;
        spec.env = self.envs.intern(spec.env);
        let (spec_user, account) = (spec.user.clone(), spec.account.clone());
        let mut job = Job::new(id, spec, self.now_ms);
        if self.sched.version >= 2 {
            job.turn = self.turns.assign(&spec_user);
        }
        let tasks = job.total;
        self.emit(Event::JobSubmitted { job: id });
        self.usage.add(&spec_user, &account, id, tasks);
        self.jobs.insert(id, job);
        self.gate_new(id, dep);
        self.enqueue(id);
        if !request_id.is_empty() {
            self.requests.insert(request_id.clone(), id);
            self.request_order.push_back(request_id);
            while self.request_order.len() > MAX_REMEMBERED_REQUESTS {
                if let Some(old) = self.request_order.pop_front() {
                    self.requests.remove(&old);
                }
            }
        }
        Response::Submitted {
            job: id,
            tasks,
            duplicate: false,
        }
    }

    /// Resolves the partitions a job asked for and gives it their defaults: the time limit
    /// (the first partition's default, else its maximum) and the memory per cpu. A
    /// partition whose maximum time the job exceeds is dropped from its list; none left is
    /// an error.
    fn place_in_partitions(&self, mut spec: JobSpec) -> Result<JobSpec, String> {
        let names = self.sched.resolve_partitions(&spec.partition)?;
        if let Some(first) = names.first().and_then(|n| self.sched.partitions.get(n)) {
            if spec.time_limit_ms == 0 {
                spec.time_limit_ms = if first.default_time_ms > 0 {
                    first.default_time_ms
                } else {
                    first.max_time_ms
                };
            }
            if spec.mem_bytes == 0 {
                spec.mem_bytes = first.default_mem_per_cpu.saturating_mul(u64::from(spec.cpus));
            }
        }
        let t = spec.time_limit_ms;
        let fits_time = |n: &String| {
            self.sched
                .partitions
                .get(n)
                .is_none_or(|p| p.max_time_ms == 0 || (t > 0 && t <= p.max_time_ms))
        };
        let kept: Vec<String> = names.iter().filter(|n| fits_time(n)).cloned().collect();
        if kept.is_empty() {
            let limits: Vec<String> = names
                .iter()
                .filter_map(|n| self.sched.partitions.get(n).map(|p| (n, p.max_time_ms)))
                .map(|(n, m)| format!("{n}: {}", crate::parse::format_duration(m)))
                .collect();
            return Err(format!(
                "the time limit {} is longer than the partition allows ({}); ask for less with --time",
                if t == 0 {
                    "unlimited".to_string()
                } else {
                    crate::parse::format_duration(t)
                },
                limits.join(", ")
            ));
        }
        spec.partition = kept.join(",");
        Ok(spec)
    }

    /// Resolves the account the job is charged to (from scheduling version 3 on: an
    /// older head keeps what was asked, and declared accounts need version 3).
    fn charge_account(&self, mut spec: JobSpec) -> Result<JobSpec, String> {
        if self.sched.version >= crate::sched::config::ACCOUNTS_VERSION {
            spec.account = crate::sched::account::resolve(&self.sched.accounts, &spec.user, &spec.account)?;
        }
        Ok(spec)
    }

    /// True when `n` is in one of the partitions of `spec` (resolved at submit).
    pub fn in_partitions(&self, spec: &JobSpec, n: &Node) -> bool {
        self.sched.partitions.is_empty()
            || spec
                .partition
                .split(',')
                .filter_map(|p| self.sched.partitions.get(p))
                .any(|p| p.contains(n))
    }

    /// With nodes known, a request no node could ever hold is refused at submit.
    fn check_fits_somewhere(&self, spec: &JobSpec) -> Result<(), String> {
        for (name, n) in &spec.licenses {
            let total = self.sched.licenses.get(name).copied().unwrap_or(0);
            if total == 0 {
                let known = self
                    .sched
                    .settings()
                    .into_iter()
                    .find(|(k, _)| *k == "licenses")
                    .map(|(_, v)| v);
                return Err(format!(
                    "no license {name:?} in this cluster (licenses: {}; an admin declares them with \
                     `rudel admin config set licenses=NAME:COUNT,...`)",
                    known.filter(|v| !v.is_empty()).unwrap_or_else(|| "none".into())
                ));
            }
            if u64::from(*n) > total {
                return Err(format!(
                    "the job asks for {n} {name} licenses per task; the cluster has {total}"
                ));
            }
        }
        if self.nodes.is_empty() {
            return Ok(());
        }
        if !self.nodes.iter().any(|n| self.in_partitions(spec, n)) {
            return Err(format!("partition {} has no nodes (yet)", spec.partition));
        }
        if !spec.gres.is_empty() && !self.nodes.iter().any(|n| n.could_ever_serve(&spec.gres)) {
            let offered: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| !n.gres.is_empty())
                .take(20)
                .map(|n| {
                    let pools: Vec<String> = n.gres.iter().map(|(k, p)| format!("{k}:{}", p.total())).collect();
                    format!("{} [{}]", n.name, pools.join(","))
                })
                .collect();
            let want: Vec<String> = spec.gres.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            return Err(format!(
                "no node has the resources {} per task; nodes with resources: {}",
                want.join(","),
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(" ")
                }
            ));
        }
        if let Some(a) = &spec.alloc {
            return self.check_gang_fits(spec, a);
        }
        let c = spec.constraint.as_ref();
        if self.nodes.iter().any(|n| {
            n.could_ever_fit(spec.cpus, spec.mem_bytes)
                && n.matches(c)
                && n.could_ever_serve(&spec.gres)
                && self.in_partitions(spec, n)
        }) {
            return Ok(());
        }
        if let Some(c) = c {
            if !self.nodes.iter().any(|n| n.matches(Some(c))) {
                let known: Vec<String> = self
                    .nodes
                    .iter()
                    .take(20)
                    .map(|n| {
                        let l: Vec<String> = n
                            .labels
                            .iter()
                            .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") })
                            .collect();
                        format!("{} [{}]", n.name, l.join(","))
                    })
                    .collect();
                return Err(format!(
                    "no node matches the constraint {c}; nodes and their labels: {}",
                    known.join(" ")
                ));
            }
        }
        let max_cpus = self.nodes.iter().map(|n| n.cpus).max().unwrap_or(0);
        let max_mem = self.nodes.iter().map(|n| n.mem_bytes).max().unwrap_or(0);
        Err(format!(
            "no node can ever run this job: it asks for {} cpus and {} memory per task, \
             the largest node has {} cpus and the most memory is {}",
            spec.cpus,
            crate::parse::format_size(spec.mem_bytes),
            max_cpus,
            crate::parse::format_size(max_mem)
        ))
    }

    pub(crate) fn cancel(&mut self, ids: &[JobId]) -> Response {
        let (mut cancelled, mut already_finished, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
        for &id in ids {
            let Some(job) = self.jobs.get_mut(&id) else {
                unknown.push(id);
                continue;
            };
            if job.is_finished() {
                already_finished.push(id);
                continue;
            }
            job.cancelled = true;
            let pending = job.count(TaskState::Pending);
            job.move_counts(TaskState::Pending, TaskState::Cancelled, pending);
            job.next_position = job.total;
            job.requeued.clear();
            job.skipped.clear();
            if let Some(g) = job.corr.as_deref_mut() {
                g.waiting.clear();
                g.never.clear();
            }
            let key = self.sched.queue_key(job);
            self.queue.remove(&key);
            let mut kills = Vec::new();
            for (&index, rt) in job.running.iter_mut() {
                if !rt.kill_requested {
                    rt.kill_requested = true;
                    kills.push(Event::KillRequested {
                        key: TaskKey { job: id, index },
                        attempt: rt.attempt,
                        node: rt.node,
                    });
                }
            }
            if pending > 0 {
                self.emit(Event::PendingCancelled {
                    job: id,
                    tasks: pending,
                });
            }
            self.touch_killed(&kills);
            self.changes.extend(kills);
            cancelled.push(id);
            self.maybe_finished(id);
        }
        Response::Cancelled {
            cancelled,
            already_finished,
            unknown,
        }
    }

    fn register(&mut self, reg: NodeRegistration) -> Response {
        if reg.exclusive {
            if let Some(held) = self.node_held(&reg.name, &reg.uid) {
                return Response::Rejected {
                    reason: held.to_string(),
                };
            }
        }
        let id = match self.node_by_name.get(&reg.name) {
            Some(&id) => id,
            None => {
                let id = self.nodes.len() as NodeId;
                self.nodes.push(Node::new(reg.name.clone(), reg.cpus, reg.mem_bytes));
                self.node_by_name.insert(reg.name.clone(), id);
                id
            }
        };
        let lost_everything = self
            .nodes
            .get(id as usize)
            .is_some_and(|n| !n.uid.is_empty() && n.uid != reg.uid);
        if lost_everything {
            // Only entries written before names were bound get here (see
            // `NodeRegistration::exclusive`): a different machine (or a wiped data
            // directory) under the same name, and the tasks the old one ran are gone.
            let running: Vec<(TaskKey, u32)> = self.nodes[id as usize].running.iter().map(|(k, a)| (*k, *a)).collect();
            for (key, attempt) in running {
                let report = lost_report(key, attempt, self.now_ms, "the node came back as a different machine");
                self.finish_task(id, &report);
            }
        }
        let mut epoch = 0;
        if let Some(n) = self.nodes.get_mut(id as usize) {
            n.epoch += 1;
            epoch = n.epoch;
            n.down_reason.clear();
            n.uid = reg.uid;
            n.boot_id = reg.boot_id;
            n.resize(reg.cpus, reg.mem_bytes);
            n.mem_enforcement = reg.mem_enforcement;
            n.containment = reg.containment;
            n.run_as = reg.run_as;
            n.version = reg.version;
            n.arch = reg.arch;
            n.os = reg.os;
            n.labels = reg.labels;
            n.set_gres(&reg.gres);
            n.address = reg.address;
            n.liveness = Liveness::Up;
            n.last_seen_ms = self.now_ms;
        }
        self.node_changed(id);
        self.tails_node_changed(id);
        Response::Registered { node: id, epoch }
    }

    /// Drains (`Some(reason)`) or resumes (`None`) nodes; all or nothing.
    fn set_drain(&mut self, names: &[String], drain: Option<String>) -> Response {
        let unknown: Vec<String> = names
            .iter()
            .filter(|n| !self.node_by_name.contains_key(*n))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Response::NodesChanged {
                changed: Vec::new(),
                unknown,
            };
        }
        let mut changed = Vec::new();
        for name in names {
            let Some(&id) = self.node_by_name.get(name) else {
                continue;
            };
            let Some(n) = self.nodes.get_mut(id as usize) else {
                continue;
            };
            if n.drain.is_some() != drain.is_some() || (drain.is_some() && n.drain != drain) {
                n.drain = drain.clone();
                changed.push(name.clone());
                self.changes.push(Event::NodeChanged { node: id });
            }
        }
        Response::NodesChanged { changed, unknown }
    }

    /// Declares a node lost unless it registered again after `epoch`: every task placed on
    /// it ends (`--requeue` tasks go back to pending, the others end `node_fail`).
    fn node_lost(&mut self, name: &str, epoch: u64, reason: &str) {
        let Some(&id) = self.node_by_name.get(name) else { return };
        let Some(n) = self.nodes.get_mut(id as usize) else {
            return;
        };
        if n.epoch != epoch {
            return;
        }
        n.liveness = Liveness::Down;
        n.down_reason = reason.to_string();
        let running: Vec<(TaskKey, u32)> = n.running.iter().map(|(k, a)| (*k, *a)).collect();
        let slices: Vec<(TaskKey, u32)> = n.slices.iter().map(|(k, a)| (*k, *a)).collect();
        self.node_changed(id);
        for (key, attempt) in slices {
            self.slice_lost(key, attempt, format!("node {name} of its allocation lost: {reason}"));
        }
        let now = self.now_ms;
        for (key, attempt) in running {
            let why = format!("node {name} lost: {reason}");
            self.finish_task(id, &lost_report(key, attempt, now, &why));
        }
    }

    /// Ends one attempt of a task, if it is the current attempt on that node (stale
    /// reports are ignored: fencing by attempt number).
    fn finish_task(&mut self, node: NodeId, r: &TaskReport) {
        let Some(job) = self.jobs.get_mut(&r.key.job) else {
            return;
        };
        match job.running.get(&r.key.index) {
            Some(rt) if rt.attempt == r.attempt && rt.node == node => {}
            _ => return,
        }
        let Some(rt) = job.running.remove(&r.key.index) else {
            return;
        };
        let (cpus, gpus) = (running::task_cpus(&rt, job.spec.cpus), running::task_gpus(&rt));
        let (user, account) = (job.spec.user.clone(), job.spec.account.clone());
        self.running_usage.remove(&user, &account, cpus, gpus);
        for k in [Some(r.key), rt.after, rt.successor].into_iter().flatten() {
            self.touch_tail(k);
        }
        if rt.after.is_none() {
            self.fair_charge(r.key.job, cpus, gpus, false);
        }
        // Killed because a node of its allocation was lost: it ends as lost with that node.
        let as_lost;
        let r = match &rt.lost_node {
            Some(why) => {
                as_lost = lost_report(r.key, r.attempt, r.end_ms, why);
                &as_lost
            }
            None => r,
        };
        // Killed because its client released the allocation: it ends as the client's
        // command did (salloc's shell, srun's step), not `cancelled`.
        let as_released;
        let r = match rt.released_with {
            Some(code) if rt.lost_node.is_none() => {
                as_released = released_report(r, code);
                &as_released
            }
            _ => r,
        };
        self.unhold(node, r.key, &rt, r.end_ms);
        let Some(job) = self.jobs.get_mut(&r.key.job) else {
            return;
        };
        if r.outcome == TaskOutcome::Exited {
            job.exited_runs += 1;
            job.exited_run_ms += r.end_ms.saturating_sub(rt.start_ms);
        }
        if rt.requeue {
            // Above every attempt of the job (a requeue numbers attempts per job).
            let attempt = (r.attempt + 1).max(job.max_attempt + 1);
            self.back_to_pending(node, r, &rt, attempt);
            return;
        }
        let (state, reason) = if rt.kill_requested && rt.lost_node.is_none() && rt.released_with.is_none() {
            let reason = match rt.preempted_by {
                Some(by) => format!("preempted by job {by}"),
                None => "cancelled".to_string(),
            };
            (TaskState::Cancelled, reason)
        } else {
            match r.outcome {
                TaskOutcome::Exited if r.exit_code == Some(0) => (TaskState::Completed, String::new()),
                TaskOutcome::Exited => (TaskState::Failed, r.message.clone()),
                TaskOutcome::Timeout => (TaskState::Timeout, "time limit reached".into()),
                TaskOutcome::Cancelled => (TaskState::Cancelled, "cancelled".into()),
                TaskOutcome::SpawnFailed => (TaskState::Failed, r.message.clone()),
                TaskOutcome::OutOfMemory => (TaskState::Failed, non_empty(&r.message, "out of memory")),
                TaskOutcome::Lost if job.spec.requeue && !job.cancelled => {
                    let attempt = r.attempt + 1;
                    self.back_to_pending(node, r, &rt, attempt);
                    return;
                }
                TaskOutcome::Lost => (TaskState::NodeFail, non_empty(&r.message, "node lost")),
            }
        };
        job.move_count(TaskState::Running, state);
        if state != TaskState::Completed || job.total == 1 {
            job.ended.insert(
                r.key.index,
                EndedTask {
                    state,
                    exit_code: r.exit_code,
                    signal: r.signal,
                    node: Some(node),
                    attempt: r.attempt,
                    start_ms: rt.start_ms,
                    end_ms: r.end_ms.max(rt.start_ms),
                    reason,
                    oom: !rt.kill_requested && r.outcome == TaskOutcome::OutOfMemory,
                },
            );
        }
        let id = job.id;
        self.emit(Event::TaskEnded {
            key: r.key,
            attempt: r.attempt,
            node,
            state,
            end: task_end(r, rt.start_ms),
        });
        self.maybe_finished(id);
    }

    /// An attempt ended and its task runs again (lost with its node, or requeued while it
    /// ran), as `attempt`.
    fn back_to_pending(&mut self, node: NodeId, r: &TaskReport, rt: &RunningTask, attempt: u32) {
        let Some(job) = self.jobs.get_mut(&r.key.job) else {
            return;
        };
        job.requeued.insert(r.key.index, attempt);
        job.move_count(TaskState::Running, TaskState::Pending);
        let id = job.id;
        self.enqueue(id);
        self.emit(Event::TaskEnded {
            key: r.key,
            attempt: r.attempt,
            node,
            state: TaskState::Pending,
            end: task_end(r, rt.start_ms),
        });
    }

    pub(crate) fn maybe_finished(&mut self, id: JobId) {
        let now = self.now_ms;
        let Some(job) = self.jobs.get_mut(&id) else { return };
        if !job.is_finished() || job.end_ms.is_some() {
            return;
        }
        job.end_ms = Some(now);
        let state = job.state();
        let (user, account, total) = (job.spec.user.clone(), job.spec.account.clone(), job.total);
        self.usage.remove(&user, &account, id, total);
        self.emit(Event::JobEnded { job: id, state });
        self.finished.push_back(id);
        while self.finished.len() > MAX_FINISHED_JOBS {
            if let Some(old) = self.finished.pop_front() {
                self.jobs.remove(&old);
            }
        }
    }

    /// Bookkeeping shared by both ways of placing a task.
    fn mark_placed(&mut self, job_id: JobId, node_id: NodeId, index: u32, from_requeue: bool, rt: RunningTask) {
        let starts_now = rt.after.is_none();
        self.emit(Event::TaskPlaced {
            key: TaskKey { job: job_id, index },
            attempt: rt.attempt,
            node: node_id,
        });
        let now = self.now_ms;
        let node_names = match &rt.alloc {
            Some(a) => a.names(),
            None => self
                .nodes
                .get(node_id as usize)
                .map(|n| n.name.clone())
                .into_iter()
                .collect(),
        };
        let Some(job) = self.jobs.get_mut(&job_id) else { return };
        if from_requeue {
            job.requeued.remove(&index);
        } else {
            job.next_position += 1;
            if !job.skipped.is_empty() {
                job.skip_cancelled();
            }
        }
        job.max_attempt = job.max_attempt.max(rt.attempt);
        let (cpus, gpus) = (running::task_cpus(&rt, job.spec.cpus), running::task_gpus(&rt));
        self.running_usage.add(&job.spec.user, &job.spec.account, cpus, gpus);
        let pred = rt.after;
        job.running.insert(index, rt);
        job.move_count(TaskState::Pending, TaskState::Running);
        if starts_now {
            job.start_ms.get_or_insert(now);
        }
        for node_name in node_names {
            if job.nodes.len() < MAX_JOB_NODES && !job.nodes.contains(&node_name) {
                job.nodes.push(node_name);
            }
        }
        let done = !job.has_pending();
        if starts_now {
            self.fair_charge(job_id, cpus, gpus, true);
        }
        if done {
            self.dequeue(job_id);
        }
        let key = TaskKey { job: job_id, index };
        for k in [Some(key), pred].into_iter().flatten() {
            self.touch_tail(k);
        }
    }

    /// Applies a scheduling plan in order, checking each placement again against the state
    /// (capacity, the task still pending, the predecessor free to take a successor). A
    /// placement that fails a check is skipped and reported: a planner bug must never
    /// over-commit a node.
    pub fn commit(&mut self, plan: &crate::sched::plan::Plan) -> Vec<Violation> {
        self.more_to_place = plan.capped;
        if plan.stopped && !plan.capped {
            let due = self.last_full_pass_ms.saturating_add(self.sched.pass.full_interval_ms);
            self.full_pass_due_ms.get_or_insert(due);
        }
        if plan.stopped || plan.capped && plan.blocked.is_none() {
            // The pass did not look at the whole queue: what the last full pass found
            // (who waits, the reservation, reused while it still holds) stays for the jobs
            // it did not reach, or every capped pass would drop the reservation and the
            // next recompute it.
            for j in &plan.examined {
                self.waiting.remove(j);
            }
            for p in &plan.start {
                self.waiting.remove(&p.key.job);
                if self.blocked_job == Some(p.key.job) {
                    self.blocked_job = None;
                }
                if self.reservation.as_ref().is_some_and(|r| r.job == p.key.job) {
                    self.reservation = None;
                }
                self.later_reservations.retain(|r| r.job != p.key.job);
            }
            // After the placements: a job may start tasks and then wait (a running limit).
            self.waiting.extend(plan.waiting.iter().map(|(j, w)| (*j, *w)));
            // After the placements: a job may start tasks and then block.
            if plan.blocked.is_some() {
                self.blocked_job = plan.blocked;
            }
        } else {
            self.blocked_job = plan.blocked;
            self.waiting.clone_from(&plan.waiting);
            self.reservation.clone_from(&plan.reservation);
            self.later_reservations.clone_from(&plan.later);
        }
        let violations = plan
            .start
            .iter()
            .filter_map(|p| {
                let done = self.commit_one(p, plan.gangs.get(&p.key));
                if done.is_ok() && self.sched.version >= 2 {
                    let turn = self.jobs.get(&p.key.job).map_or(0, |j| j.turn);
                    self.turns.started(turn);
                }
                done.err()
            })
            .collect();
        // After the placements: the victims include tasks this pass queued behind them.
        self.commit_preemption(plan.preempt.as_ref());
        violations
    }

    fn commit_one(
        &mut self,
        p: &crate::sched::plan::Placement,
        gang: Option<&Vec<crate::sched::plan::GangSlice>>,
    ) -> Result<(), Violation> {
        let key = p.key;
        let not_pending = Violation::NotPending { key };
        let job = self.jobs.get(&key.job).ok_or(not_pending.clone())?;
        let pending = if p.from_requeue {
            job.requeued.get(&key.index) == Some(&p.attempt)
        } else {
            p.attempt == 1 && job.next_position < job.total && job.index_at(job.next_position) == key.index
        };
        if !pending {
            return Err(not_pending);
        }
        let (cpus, mem) = (job.spec.cpus, job.spec.mem_bytes);
        let gres = job.spec.gres.clone();
        let licenses = job.spec.licenses.clone();
        let now = self.now_ms;
        if job.spec.alloc.is_some() != gang.is_some() {
            return Err(Violation::PartialAllocation {
                key,
                why: "a multi-node job placed without its slices, or slices for a plain job",
            });
        }
        let rt = match (p.behind, gang) {
            (None, Some(slices)) => self.hold_gang(p, slices)?,
            (Some(_), Some(_)) => {
                return Err(Violation::PartialAllocation {
                    key,
                    why: "a multi-node job cannot queue behind another task",
                })
            }
            (None, None) => {
                self.check_licenses(key, &licenses)?;
                let node = self.nodes.get_mut(p.node as usize).ok_or(not_pending)?;
                let Some((cores, grant)) = node.allocate_with_gres(key, p.attempt, cpus, mem, &gres) else {
                    return Err(Violation::OverCommit {
                        node: p.node,
                        key,
                        cpus: node.cpus_used + cpus,
                        capacity: node.cpus,
                        mem: node.mem_used + mem,
                        mem_capacity: node.mem_bytes,
                    });
                };
                self.touch_free(p.node);
                for (name, n) in &licenses {
                    *self.licenses_used.entry(name.clone()).or_default() += u64::from(*n);
                }
                let mut rt = RunningTask::new(p.node, p.attempt, cores, mem, now, None);
                rt.gres = grant;
                rt
            }
            (Some(pred), None) => {
                let (cores, pmem) = self.check_successor(key, pred, p.node)?;
                if let Some(n) = self.nodes.get_mut(p.node as usize) {
                    n.add_successor(key, p.attempt);
                }
                if let Some(pr) = self.running_mut(pred) {
                    pr.successor = Some(key);
                }
                RunningTask::new(p.node, p.attempt, cores, pmem, now, Some(pred))
            }
        };
        self.mark_placed(key.job, p.node, key.index, p.from_requeue, rt);
        Ok(())
    }

    /// Would granting `want` exceed a license's count?
    fn check_licenses(&self, key: TaskKey, want: &BTreeMap<String, u32>) -> Result<(), Violation> {
        for (name, n) in want {
            let used = self.licenses_used.get(name).copied().unwrap_or(0);
            let total = self.sched.licenses.get(name).copied().unwrap_or(0);
            if used + u64::from(*n) > total {
                return Err(Violation::LicenseOverGrant {
                    key,
                    license: name.clone(),
                    used: used + u64::from(*n),
                    total,
                });
            }
        }
        Ok(())
    }

    /// Returns the licenses a task of `job` held.
    fn release_licenses(&mut self, job: JobId) {
        let Some(want) = self.jobs.get(&job).map(|j| j.spec.licenses.clone()) else {
            return;
        };
        for (name, n) in want {
            if let Some(used) = self.licenses_used.get_mut(&name) {
                *used = used.saturating_sub(u64::from(n));
                if *used == 0 {
                    self.licenses_used.remove(&name);
                }
            }
        }
    }

    /// May `key` queue behind `pred` on `node`? The successor never runs alongside its
    /// predecessor (it takes over the predecessor's cores and memory when that one ends),
    /// so the node is never over-committed, and the agent starts it without waiting for a
    /// round trip through the log. Returns the cores and memory it will take over.
    fn check_successor(&self, key: TaskKey, pred: TaskKey, node: NodeId) -> Result<(Vec<u32>, u64), Violation> {
        let bad = |why| Violation::BadSuccessor { key, pred, why };
        let p = self.running_task(pred).ok_or(bad("the predecessor is not running"))?;
        if p.node != node {
            return Err(bad("the predecessor runs on another node"));
        }
        if p.successor.is_some() {
            return Err(bad("the predecessor has a successor already"));
        }
        if p.kill_requested {
            return Err(bad("the predecessor is being killed"));
        }
        if !p.gres.is_empty() || self.jobs.get(&pred.job).is_some_and(Job::holds_counted_resources) {
            return Err(bad("the predecessor holds resources a successor cannot take over"));
        }
        if self.chain_depth(pred) >= self.queue_limit(key.job, pred) {
            return Err(bad("the chain is as deep as the queue depth allows"));
        }
        let job = self.jobs.get(&key.job).ok_or(bad("no such job"))?;
        if job.holds_counted_resources() {
            return Err(bad("the task needs resources a predecessor cannot hand over"));
        }
        if !self
            .nodes
            .get(node as usize)
            .is_some_and(|n| self.in_partitions(&job.spec, n))
        {
            return Err(bad("the node is not in the task's partitions"));
        }
        if (job.spec.cpus as usize, job.spec.mem_bytes) != (p.cores.len(), p.mem_bytes) {
            return Err(bad("the predecessor has another shape"));
        }
        Ok((p.cores.clone(), p.mem_bytes))
    }

    /// How deep a task of `job_id` may be queued behind `pred`: both jobs' tasks must be
    /// short for the deep queue.
    pub fn queue_limit(&self, job_id: JobId, pred: TaskKey) -> u32 {
        let depth = |id: JobId| {
            self.jobs
                .get(&id)
                .map_or(self.sched.queue_depth, |j| j.queue_depth(&self.sched))
        };
        depth(job_id).min(depth(pred.job))
    }

    /// How many tasks a task is queued behind (0 for a task holding its resources).
    pub fn chain_depth(&self, key: TaskKey) -> u32 {
        self.depth_behind(self.running_task(key).and_then(|r| r.after))
    }

    /// The chain depth of a task queued behind `after` (0 for none).
    pub(crate) fn depth_behind(&self, after: Option<TaskKey>) -> u32 {
        let mut depth = 0;
        let mut cur = after;
        while let Some(p) = cur {
            depth += 1;
            if depth > MAX_QUEUED_PER_SLOT {
                break;
            }
            cur = self.running_task(p).and_then(|r| r.after);
        }
        depth
    }

    /// Gives up a task's hold on its node: its resources are freed, passed on to its
    /// successor, or (for a successor that never started) stay with its predecessor.
    fn unhold(&mut self, node: NodeId, key: TaskKey, rt: &RunningTask, end_ms: u64) {
        if let Some(pred) = rt.after {
            // Never started: close the gap in the chain.
            if let Some(p) = self.running_mut(pred) {
                if p.successor == Some(key) {
                    p.successor = rt.successor;
                }
            }
            if let Some(succ) = rt.successor {
                if let Some(s) = self.running_mut(succ) {
                    if s.after == Some(key) {
                        s.after = Some(pred);
                    }
                }
            }
            if let Some(n) = self.nodes.get_mut(node as usize) {
                n.forget(key);
            }
            return;
        }
        if let Some(succ) = rt.successor {
            if let Some(s) = self.running_mut(succ) {
                if s.after == Some(key) {
                    s.after = None;
                    s.start_ms = s.start_ms.max(end_ms);
                    let start = s.start_ms;
                    let took_over = Event::TaskTookOver {
                        key: succ,
                        attempt: s.attempt,
                        node,
                    };
                    self.emit(took_over);
                    self.fair_charge_task(succ, true);
                    if let Some(j) = self.jobs.get_mut(&succ.job) {
                        j.start_ms.get_or_insert(start);
                    }
                    if let Some(n) = self.nodes.get_mut(node as usize) {
                        n.forget(key);
                    }
                    return;
                }
            }
        }
        if let Some(n) = self.nodes.get_mut(node as usize) {
            n.release(key, &rt.cores, rt.mem_bytes);
            n.release_gres(&rt.gres);
        }
        self.touch_free(node);
        self.release_slices(key, rt);
        self.release_licenses(key.job);
    }

    /// Re-shares identical environments after the state was loaded from a snapshot (which
    /// stores each job's copy).
    pub fn reintern(&mut self) {
        for job in self.jobs.values_mut() {
            let env = std::mem::take(&mut job.spec.env);
            job.spec.env = self.envs.intern(env);
        }
        // A snapshot from before the index existed carries none: count it once here.
        self.running_usage = self.running_recount();
    }

    fn running_mut(&mut self, key: TaskKey) -> Option<&mut RunningTask> {
        self.jobs.get_mut(&key.job).and_then(|j| j.running.get_mut(&key.index))
    }

    /// Task (with attempt) currently held on a node, for dispatch.
    pub fn running_task(&self, key: TaskKey) -> Option<&RunningTask> {
        self.jobs.get(&key.job).and_then(|j| j.running.get(&key.index))
    }

    /// The job a job id names: a job, or one task of an array (array tasks have job ids of
    /// their own: the array's id plus their position), with its array index.
    pub fn job_of(&self, id: JobId) -> Option<(&Job, Option<u32>)> {
        if let Some(j) = self.jobs.get(&id) {
            return Some((j, None));
        }
        let (_, j) = self.jobs.range(..id).next_back()?;
        let position = id - j.id;
        (j.is_array() && position < j.total).then(|| (j, Some(j.index_at(position))))
    }

    /// Node by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.node_by_name.get(name).and_then(|&id| self.nodes.get(id as usize))
    }
}

fn non_empty(s: &str, default: &str) -> String {
    if s.is_empty() {
        default.to_string()
    } else {
        s.to_string()
    }
}

/// What the accounting store records of an ended attempt: the report's fields, copied
/// (the start as the head recorded it when placing the task).
fn task_end(r: &TaskReport, start_ms: u64) -> crate::TaskEnd {
    crate::TaskEnd {
        exit_code: r.exit_code,
        signal: r.signal,
        start_ms,
        end_ms: r.end_ms.max(start_ms),
        usage: r.usage,
    }
}

/// The report the head makes up for a task whose node lost it.
/// A released allocation's holder task, killed, reported as having exited with `code`.
fn released_report(r: &TaskReport, code: i32) -> TaskReport {
    TaskReport {
        outcome: TaskOutcome::Exited,
        exit_code: Some(code),
        signal: None,
        message: if code == 0 {
            String::new()
        } else {
            format!("exit code {code}")
        },
        ..r.clone()
    }
}

pub fn lost_report(key: TaskKey, attempt: u32, now_ms: u64, why: &str) -> TaskReport {
    TaskReport {
        key,
        attempt,
        outcome: TaskOutcome::Lost,
        exit_code: None,
        signal: None,
        start_ms: now_ms,
        end_ms: now_ms,
        message: why.to_string(),
        usage: Default::default(),
    }
}

#[cfg(test)]
mod identity_tests {
    use super::*;
    use crate::security::{CertGrant, Role};

    fn reg(name: &str, uid: &str, cpus: u32, exclusive: bool) -> Command {
        Command::RegisterNode {
            reg: NodeRegistration {
                name: name.into(),
                uid: uid.into(),
                boot_id: "b".into(),
                cpus,
                mem_bytes: 1 << 30,
                mem_enforcement: "rlimit".into(),
                version: "t".into(),
                arch: "x86_64".into(),
                os: "linux".into(),
                address: format!("10.0.0.{cpus}:4000"),
                labels: BTreeMap::new(),
                running: Vec::new(),
                exclusive,
                ..NodeRegistration::default()
            },
            now_ms: 10,
        }
    }

    fn submit(s: &mut State, requeue: bool) -> JobId {
        let spec = JobSpec {
            argv: vec!["sleep".into(), "9".into()],
            cpus: 1,
            chdir: "/".into(),
            requeue,
            ..JobSpec::default()
        };
        match s.apply(Command::Submit {
            request_id: String::new(),
            spec,
            now_ms: 20,
        }) {
            Response::Submitted { job, .. } => job,
            other => panic!("{other:?}"),
        }
    }

    fn agent_grant(fp: &str, name: &str, uid: &str) -> Command {
        Command::GrantCert {
            grant: CertGrant {
                fingerprint: fp.into(),
                role: Role::Agent,
                name: name.into(),
                node_uid: uid.into(),
                expires_ms: 1_000_000,
                token: None,
                bind_name: true,
            },
            now_ms: 30,
        }
    }

    #[test]
    fn a_bound_name_refuses_another_machine_and_keeps_its_tasks() {
        let mut s = State::new();
        assert!(matches!(s.apply(reg("n1", "A", 4, true)), Response::Registered { .. }));
        let job = submit(&mut s, false);
        assert_eq!(s.jobs[&job].count(TaskState::Running), 1);
        let Response::Rejected { reason } = s.apply(reg("n1", "B", 1, true)) else {
            panic!("another uid must be refused")
        };
        assert!(
            reason.contains("n1") && reason.contains("held by another machine"),
            "{reason}"
        );
        assert!(
            reason.contains("10.0.0.4:4000") && reason.contains("rudel node forget n1"),
            "{reason}"
        );
        let n = s.node("n1").unwrap();
        assert_eq!((n.uid.as_str(), n.cpus), ("A", 4), "the holder's record is untouched");
        assert_eq!(s.jobs[&job].count(TaskState::Running), 1, "its task keeps running");
        // The holder itself may register again (a restart).
        assert!(matches!(s.apply(reg("n1", "A", 4, true)), Response::Registered { .. }));
        // Nor is a certificate issued for the name to another machine.
        let Response::Rejected { reason } = s.apply(agent_grant("f", "n1", "B")) else {
            panic!("grant must be refused")
        };
        assert!(reason.contains("held by another machine"), "{reason}");
        assert!(!s.security.certs.contains_key("f"));
        assert_eq!(s.apply(agent_grant("g", "n1", "A")), Response::Ok);
    }

    #[test]
    fn a_joined_but_unregistered_name_is_held_by_its_certificate() {
        let mut s = State::new();
        assert_eq!(s.apply(agent_grant("a", "n2", "A")), Response::Ok);
        let Response::Rejected { reason } = s.apply(agent_grant("b", "n2", "B")) else {
            panic!("second machine must be refused")
        };
        assert!(reason.contains("not registered yet"), "{reason}");
    }

    #[test]
    fn forgetting_a_node_loses_its_tasks_revokes_it_and_frees_the_name() {
        let mut s = State::new();
        s.apply(agent_grant("a", "n1", "A"));
        s.apply(reg("n1", "A", 2, true));
        let keep = submit(&mut s, false);
        let rerun = submit(&mut s, true);
        assert_eq!(s.node("n1").unwrap().running.len(), 2);
        assert_eq!(
            s.apply(Command::ForgetNode {
                name: "n1".into(),
                now_ms: 40
            }),
            Response::NodeForgotten {
                tasks: 2,
                revoked_certs: 1
            }
        );
        assert_eq!(
            s.jobs[&keep].count(TaskState::NodeFail),
            1,
            "--no-requeue ends node_fail"
        );
        assert_eq!(s.jobs[&rerun].count(TaskState::Pending), 1, "--requeue runs again");
        assert!(
            s.security.authorize("a", 50).is_err(),
            "the old machine's certificate is revoked"
        );
        let n = s.node("n1").unwrap();
        assert_eq!(n.liveness, Liveness::Down);
        assert!(n.running.is_empty() && n.uid.is_empty());
        // A new machine joins and registers under the name, with its own size.
        assert_eq!(s.apply(agent_grant("b", "n1", "B")), Response::Ok);
        assert!(matches!(s.apply(reg("n1", "B", 1, true)), Response::Registered { .. }));
        assert_eq!(s.node("n1").unwrap().cpus, 1);
        let unknown = s.apply(Command::ForgetNode {
            name: "nope".into(),
            now_ms: 60,
        });
        assert!(matches!(unknown, Response::Rejected { .. }), "{unknown:?}");
    }

    #[test]
    fn old_entries_replay_as_they_applied() {
        // Written before names were bound: a new uid re-binds the name and loses the tasks.
        let mut s = State::new();
        s.apply(reg("n1", "A", 2, false));
        let job = submit(&mut s, false);
        assert!(matches!(s.apply(reg("n1", "B", 1, false)), Response::Registered { .. }));
        assert_eq!(s.node("n1").unwrap().uid, "B");
        assert_eq!(s.jobs[&job].count(TaskState::NodeFail), 1);
        // An entry without the field decodes as such.
        let mut v = serde_json::to_value(reg("n1", "C", 1, true)).unwrap();
        v["RegisterNode"]["reg"].as_object_mut().unwrap().remove("exclusive");
        let Command::RegisterNode { reg, .. } = serde_json::from_value::<Command>(v).unwrap() else {
            panic!()
        };
        assert!(!reg.exclusive);
    }
}
