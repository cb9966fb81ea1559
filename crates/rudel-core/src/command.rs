//! Commands: every change to cluster state is one of these, appended to the replicated
//! log and applied in log order by [`crate::State::apply`].
use serde::{Deserialize, Serialize};

use crate::ids::{JobId, TaskKey};
use crate::job::JobSpec;

/// How a task ended, as its agent saw it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskOutcome {
    /// The process exited by itself (any code) or was killed by a signal it did not ask for.
    Exited,
    /// Killed at its time limit.
    Timeout,
    /// Killed because the head asked (cancel).
    Cancelled,
    /// The command could not be started (missing, not executable, bad directory).
    SpawnFailed,
    /// Killed by the memory limit.
    OutOfMemory,
    /// The agent lost the process (agent restarted while it ran).
    Lost,
}

impl TaskOutcome {
    /// Wire name used in the agent protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskOutcome::Exited => "exited",
            TaskOutcome::Timeout => "timeout",
            TaskOutcome::Cancelled => "cancelled",
            TaskOutcome::SpawnFailed => "spawn_failed",
            TaskOutcome::OutOfMemory => "oom",
            TaskOutcome::Lost => "lost",
        }
    }

    /// Parses a wire name; unknown names are `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "exited" => TaskOutcome::Exited,
            "timeout" => TaskOutcome::Timeout,
            "cancelled" => TaskOutcome::Cancelled,
            "spawn_failed" => TaskOutcome::SpawnFailed,
            "oom" => TaskOutcome::OutOfMemory,
            "lost" => TaskOutcome::Lost,
            _ => return None,
        })
    }
}

/// The result of one attempt of one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    pub key: TaskKey,
    pub attempt: u32,
    pub outcome: TaskOutcome,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Wall-clock milliseconds since the Unix epoch.
    pub start_ms: u64,
    pub end_ms: u64,
    /// Human-readable detail (why it could not start, why it was killed).
    pub message: String,
    /// Peak memory and CPU time (accounting only: never decides anything in the apply).
    #[serde(default)]
    pub usage: crate::TaskUsage,
}

/// What an agent says about itself when its session (re)starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub name: String,
    /// Persistent id of the agent's data directory.
    pub uid: String,
    /// Id of the agent process; changes when the agent restarts.
    pub boot_id: String,
    pub cpus: u32,
    pub mem_bytes: u64,
    pub mem_enforcement: String,
    /// How the agent contains tasks (`rudel nodes`); empty from older agents.
    #[serde(default)]
    pub containment: String,
    /// Whom the agent runs tasks as (`job-user`, `agent-user:NAME`); empty from older agents.
    #[serde(default)]
    pub run_as: String,
    pub version: String,
    pub arch: String,
    pub os: String,
    pub address: String,
    /// Labels for constraints (`gpu`, `rack=a`).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Tasks (with attempt) the agent is running now.
    pub running: Vec<(TaskKey, u32)>,
    /// The name stays bound to the machine (uid) that holds it: a registration under
    /// another uid is refused until an admin forgets the node. Entries written before names
    /// were bound lack it (false) and replay as they applied then: the name is re-bound and
    /// the old machine's tasks are lost.
    #[serde(default)]
    pub exclusive: bool,
    /// Generic resources the node offers (`gpu` → 4, `gpu:a100` → 2, `fpga` → 1).
    #[serde(default)]
    pub gres: std::collections::BTreeMap<String, u32>,
}

/// One entry of the replicated log.
// A submit's spec makes that variant the largest by far. Commands live briefly, between
// decoding and apply, and the batches that hold many (`Batch`) are mostly submits, which
// would be that size boxed or not: boxing would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Queue a job; `request_id` makes a retried submit idempotent.
    Submit {
        request_id: String,
        spec: JobSpec,
        now_ms: u64,
    },
    /// Cancel jobs.
    Cancel { jobs: Vec<JobId>, now_ms: u64 },
    /// An agent (re)connected.
    RegisterNode { reg: NodeRegistration, now_ms: u64 },
    /// An agent's session ended (the node keeps its tasks until it is declared lost).
    NodeDisconnected { name: String, now_ms: u64 },
    /// A node missed its heartbeats for too long: its tasks are lost (requeued or
    /// `node_fail`). Applies only if the node has not registered again since `epoch`.
    NodeLost {
        name: String,
        epoch: u64,
        reason: String,
        now_ms: u64,
    },
    /// Stop placing work on these nodes (running work finishes).
    Drain {
        nodes: Vec<String>,
        reason: String,
        now_ms: u64,
    },
    /// Let these nodes take work again.
    Resume { nodes: Vec<String>, now_ms: u64 },
    /// Task results from one node.
    Reports {
        node: String,
        reports: Vec<TaskReport>,
        now_ms: u64,
    },
    /// Several commands in one log entry (batching keeps fsyncs per task low).
    Batch(Vec<Command>),
    /// Nothing but a scheduling pass at `now_ms`.
    Tick { now_ms: u64 },
    /// The cluster CA, created by the first head.
    InitCa { ca: crate::security::CaRecord },
    /// A new join token (its secret is known only to whoever asked for it).
    CreateToken {
        secret_hash: String,
        role: crate::security::Role,
        description: String,
        expires_ms: Option<u64>,
        cert_ttl_ms: u64,
        now_ms: u64,
        /// The Unix user its client certificates name ("" : none).
        #[serde(default)]
        user: String,
    },
    /// Revoke a token and every certificate issued with it.
    RevokeToken { id: u64, now_ms: u64 },
    /// Record a certificate the leader signed (for a join with a token, or for itself).
    GrantCert {
        grant: crate::security::CertGrant,
        now_ms: u64,
    },
    /// An admin forgets a node (`rudel node forget`): its tasks are lost (requeued or
    /// `node_fail`), its agent certificates are revoked and its name is unbound, so that
    /// another machine may join under it.
    ForgetNode { name: String, now_ms: u64 },
    /// Change scheduling settings (`rudel admin config set`), all or nothing: (name, value)
    /// pairs checked by [`crate::sched::SchedConfig::with`].
    Configure {
        settings: Vec<(String, String)>,
        now_ms: u64,
    },
    /// Hold jobs: their pending tasks do not start until released (`rudel hold`).
    Hold { jobs: Vec<JobId>, now_ms: u64 },
    /// Release held jobs (`rudel release`).
    Release { jobs: Vec<JobId>, now_ms: u64 },
    /// Change jobs that have not started (`rudel update`).
    Update {
        jobs: Vec<JobId>,
        update: JobUpdate,
        now_ms: u64,
    },
    /// The client holding an interactive allocation (`salloc`, `srun` outside a job) is
    /// done: its holder task is killed and ends as `exit_code` says; a job not running
    /// yet is cancelled. (A head built before this variant cannot decode the entry, so it
    /// refuses to take it and never applies it: it falls behind rather than diverge.)
    CompleteAllocation { job: JobId, exit_code: i32, now_ms: u64 },
    /// Cancel single tasks of arrays (`scancel 41_3`): running ones are killed, pending
    /// ones end at once; the rest of each array runs on.
    CancelTasks { tasks: Vec<TaskKey>, now_ms: u64 },
    /// Put jobs or array tasks back to pending (`rudel requeue`, `scontrol requeue`):
    /// running ones are killed first; `hold` also holds them (`scontrol requeuehold`).
    Requeue {
        jobs: Vec<crate::requeue::JobRef>,
        #[serde(default)]
        hold: bool,
        now_ms: u64,
    },
    /// A job step ended (appended by the leader that relayed it): recorded in accounting,
    /// at most [`crate::steps::MAX_STEPS_PER_JOB`] per job. `version` is
    /// [`crate::steps::STEP_RECORD_VERSION`] of the leader's build.
    StepEnded {
        version: u32,
        record: crate::steps::StepRecord,
        now_ms: u64,
    },
}

/// What `rudel update` may change on a job none of whose tasks has started (a started
/// task's agent already enforces its time limit).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUpdate {
    #[serde(default)]
    pub priority: Option<i32>,
    /// Milliseconds per task; 0 = unlimited (within the partition's maximum).
    #[serde(default)]
    pub time_limit_ms: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
}

/// What applying a command produced, returned to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Submitted {
        job: JobId,
        tasks: u64,
        duplicate: bool,
    },
    Rejected {
        reason: String,
    },
    Cancelled {
        cancelled: Vec<JobId>,
        already_finished: Vec<JobId>,
        unknown: Vec<JobId>,
    },
    Registered {
        node: u32,
        epoch: u64,
    },
    /// Drain/resume: nodes whose state changed; nothing changes if any name is unknown.
    NodesChanged {
        changed: Vec<String>,
        unknown: Vec<String>,
    },
    Ok,
    Batch(Vec<Response>),
    TokenCreated {
        id: u64,
    },
    /// Names of the certificates revoked with the token.
    TokenRevoked {
        certs: Vec<String>,
    },
    /// A node was forgotten: tasks given up (requeued or `node_fail`), certificates revoked.
    NodeForgotten {
        tasks: u64,
        revoked_certs: u64,
    },
    /// The scheduling settings after a change.
    Configured {
        settings: Vec<(String, String)>,
    },
    /// Hold/release/update: jobs changed, jobs left as they were (with why), unknown ids.
    JobsChanged {
        changed: Vec<JobId>,
        skipped: Vec<(JobId, String)>,
        unknown: Vec<JobId>,
    },
    /// CancelTasks: tasks cancelled (or being killed), already ended, unknown.
    TasksCancelled {
        cancelled: Vec<TaskKey>,
        already_finished: Vec<TaskKey>,
        unknown: Vec<TaskKey>,
    },
}
