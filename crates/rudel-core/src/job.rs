//! Jobs and their tasks, stored compactly: pending array tasks are a cursor, and only
//! tasks that are running or ended other than `completed` have a record of their own.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::array::ArraySpec;
use crate::ids::{JobId, NodeId};

/// What the user asked for; immutable once submitted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Command and arguments; empty for script jobs.
    pub argv: Vec<String>,
    /// Script text (`rudel submit SCRIPT`); empty for command jobs.
    pub script: String,
    pub name: String,
    pub cpus: u32,
    /// Bytes per task; 0 = no reservation, no limit.
    pub mem_bytes: u64,
    /// Milliseconds per task; 0 = unlimited.
    pub time_limit_ms: u64,
    pub priority: i32,
    pub array: Option<ArraySpec>,
    /// Output path pattern; empty = default; "none" = discard.
    pub output: String,
    /// Error path pattern; empty = into the output file; "none" = discard.
    pub error: String,
    /// Working directory (absolute).
    pub chdir: String,
    /// Environment of the tasks. Shared between jobs with identical environments (see
    /// [`crate::state::State`]): 100k jobs submitted from one shell hold one copy.
    pub env: Arc<BTreeMap<String, String>>,
    /// Rerun when its node is lost (true) or end `node_fail` (false).
    pub requeue: bool,
    /// Only nodes matching this expression run the job's tasks.
    #[serde(default)]
    pub constraint: Option<crate::constraint::Constraint>,
    pub user: String,
    /// Generic resources per task (`--gres gpu:2`, `--gpus 2`): pool name → units.
    #[serde(default)]
    pub gres: crate::resources::GresRequest,
    /// Cluster licenses per task (`-L matlab:2`): name → count.
    #[serde(default)]
    pub licenses: BTreeMap<String, u32>,
    /// Partitions the job may run in, comma-separated, first preferred; resolved at
    /// submit (empty asks for the default partition).
    #[serde(default)]
    pub partition: String,
    /// Directory and host the job was submitted from (`SLURM_SUBMIT_DIR`/`_HOST`).
    #[serde(default)]
    pub submit_dir: String,
    #[serde(default)]
    pub submit_host: String,
    /// `--dependency`, as the user wrote it (parsed): the job waits until it holds.
    #[serde(default)]
    pub dependency: Option<crate::deps::DepSpec>,
    /// Cancel the job when its dependency can never hold (`--kill-on-invalid-dep=yes`);
    /// otherwise it stays pending with reason `DependencyNeverSatisfied`, as in Slurm.
    #[serde(default)]
    pub kill_on_invalid_dep: bool,
    /// Submitted held (`--hold`): waits until released.
    #[serde(default)]
    pub hold: bool,
    /// Log time (ms) before which no task starts (`--begin`); 0 = none.
    #[serde(default)]
    pub begin_ms: u64,
    /// `--signal=B:SIG@TIME`: warn the script before its time limit.
    #[serde(default)]
    pub signal: Option<crate::signal::WarnSignal>,
    /// `--open-mode=append`: output files are appended to, not truncated.
    #[serde(default)]
    pub open_append: bool,
    /// A multi-node allocation (`-N`, `-n`, ...; see `alloc.rs`); `None`: one task on
    /// one node.
    #[serde(default)]
    pub alloc: Option<Box<crate::alloc::AllocSpec>>,
    /// `--mem-per-cpu` in bytes when memory was asked per cpu (`mem_bytes` is then this
    /// times `cpus`); 0 otherwise. Only decides which of Slurm's variables the task sees
    /// (`SLURM_MEM_PER_CPU` instead of `SLURM_MEM_PER_NODE`): scripts that size their
    /// work from it would otherwise read a per-node total as a per-cpu share.
    #[serde(default)]
    pub mem_per_cpu: u64,
    /// The account the job is charged to (`-A/--account`; resolved at submit, see
    /// `sched/account.rs`); empty: none.
    #[serde(default)]
    pub account: String,
    /// Held by a client outside the cluster (`salloc`, `srun` outside a job): the leader
    /// cancels it once that client is gone for the allocation lease (rudel-head's
    /// `allocation_leases.rs`).
    #[serde(default)]
    pub interactive: bool,
}

/// State of a task, and (aggregated) of a job.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    NodeFail,
}

impl TaskState {
    /// All states, in display order.
    pub const ALL: [TaskState; 7] = [
        TaskState::Pending,
        TaskState::Running,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::Timeout,
        TaskState::NodeFail,
    ];

    /// The name users see (`pending`, `node_fail`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Timeout => "timeout",
            TaskState::NodeFail => "node_fail",
        }
    }

    /// True for states a task never leaves.
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskState::Pending | TaskState::Running)
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// A task placed on a node: it holds resources there, or (`after` set) it is queued on the
/// agent to take over the resources of the task `after` the moment that one ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningTask {
    pub node: NodeId,
    pub attempt: u32,
    pub cores: Vec<u32>,
    pub mem_bytes: u64,
    pub start_ms: u64,
    /// Cancel was requested; the agent is killing it.
    pub kill_requested: bool,
    /// Waits on the agent for this task's cores and memory (a successor: see the scheduler).
    #[serde(default)]
    pub after: Option<crate::ids::TaskKey>,
    /// The task queued to take over this one's resources.
    #[serde(default)]
    pub successor: Option<crate::ids::TaskKey>,
    /// Units of generic resources held (tasks holding any never get successors).
    #[serde(default)]
    pub gres: crate::resources::GresGrant,
    /// Requeue was asked while it ran (`rudel requeue`): once the kill ends it, the task
    /// goes back to pending instead of ending `cancelled` (see `requeue.rs`).
    #[serde(default)]
    pub requeue: bool,
    /// Every node's slice of a multi-node allocation (the first is this task's own).
    #[serde(default)]
    pub alloc: Option<crate::alloc::Allocation>,
    /// A node of its allocation other than its own was lost: the task is being killed
    /// and then ends `node_fail` (or is requeued) with this reason, not `cancelled`.
    #[serde(default)]
    pub lost_node: Option<String>,
    /// Its client released the allocation (`Command::CompleteAllocation`) with this exit
    /// code: the kill ends it `completed` (0) or `failed`, not `cancelled`.
    #[serde(default)]
    pub released_with: Option<i32>,
    /// Preempted for this pending job (`preempt`): being killed, then requeued (with
    /// `requeue` set) or cancelled with the reason "preempted by job N".
    #[serde(default)]
    pub preempted_by: Option<crate::ids::JobId>,
}

impl RunningTask {
    /// A task just placed on `node`: holding `cores`/`mem`, or queued `after` another task.
    pub fn new(
        node: NodeId,
        attempt: u32,
        cores: Vec<u32>,
        mem_bytes: u64,
        now: u64,
        after: Option<crate::ids::TaskKey>,
    ) -> Self {
        RunningTask {
            node,
            attempt,
            cores,
            mem_bytes,
            start_ms: now,
            kill_requested: false,
            after,
            successor: None,
            gres: Vec::new(),
            requeue: false,
            alloc: None,
            lost_node: None,
            released_with: None,
            preempted_by: None,
        }
    }
}

/// A task that ended other than `completed`, or the only task of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedTask {
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub node: Option<NodeId>,
    pub attempt: u32,
    pub start_ms: u64,
    pub end_ms: u64,
    pub reason: String,
    /// Killed for going over its memory limit (Slurm's `OUT_OF_MEMORY`; its state is
    /// `failed`).
    #[serde(default)]
    pub oom: bool,
}

impl EndedTask {
    /// The state accounting records: `out_of_memory` for a memory kill (a failure that
    /// `sacct -s F` does not list, as in Slurm), else the task state.
    pub fn recorded_state(&self) -> &'static str {
        if self.oom && self.state == TaskState::Failed {
            "out_of_memory"
        } else {
            self.state.as_str()
        }
    }
}

/// A job and the state of its tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub submit_ms: u64,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    /// Number of tasks.
    pub total: u64,
    /// Tasks at positions below this have been dispatched at least once.
    pub next_position: u64,
    /// Array indices that are pending again (requeued), with their next attempt number.
    pub requeued: BTreeMap<u32, u32>,
    /// Tasks holding resources, by array index.
    pub running: BTreeMap<u32, RunningTask>,
    /// Tasks that ended other than `completed` (and the task of a single-task job).
    pub ended: BTreeMap<u32, EndedTask>,
    /// Task count per state, indexed by `TaskState as usize`.
    pub counts: [u64; 7],
    /// Cancel was requested.
    pub cancelled: bool,
    /// Names of nodes that ran tasks of this job (first few).
    pub nodes: Vec<String>,
    /// Tasks that ran to their end (exited), and their summed run time: how long this
    /// job's tasks take, which decides how deep they may be queued on agents.
    #[serde(default)]
    pub exited_runs: u64,
    #[serde(default)]
    pub exited_run_ms: u64,
    /// Held by a user or admin (`--hold`, `rudel hold`): its pending tasks do not start.
    #[serde(default)]
    pub held: bool,
    /// Where its dependency stands (`Satisfied` also when it has none).
    #[serde(default)]
    pub dep: DepStatus,
    /// Array indices cancelled before their first dispatch, at positions after
    /// `next_position` (which never rests on one of them).
    #[serde(default)]
    pub skipped: BTreeSet<u32>,
    /// Its turn in the `round_robin` order (see `state/turns.rs`); 0 before scheduling
    /// version 2.
    #[serde(default)]
    pub turn: u64,
    /// Its `multifactor` priority as the queue holds it (see `sched/multifactor.rs`): set
    /// when it enters the queue and at re-keying Ticks.
    #[serde(default)]
    pub mf_priority: i64,
    /// The highest attempt number any task of this job was placed with (0 in states
    /// written before it was kept): a requeued task runs as a higher one, so that a stale
    /// report of an earlier attempt can never end the new one.
    #[serde(default)]
    pub max_attempt: u32,
    /// Tasks held back by `aftercorr` until their counterparts complete (see aftercorr.rs).
    #[serde(default)]
    pub corr: Option<Box<crate::aftercorr::CorrGate>>,
    /// Step records accepted for this job (at most `steps::MAX_STEPS_PER_JOB`), ends
    /// past the cap, and the id after the highest recorded step (a new leader numbers on
    /// from it: step ids are never reused within a job). See `steps.rs`.
    #[serde(default)]
    pub steps_recorded: u32,
    #[serde(default)]
    pub steps_dropped: u64,
    #[serde(default)]
    pub next_step: u32,
}

/// Where a job's dependency stands.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DepStatus {
    #[default]
    Satisfied,
    Waiting,
    /// Can never hold (e.g. `afterok` on a failed job): pending, reason
    /// `DependencyNeverSatisfied`, until cancelled.
    Never,
}

/// Tasks of a job whose tasks run shorter than this on average are "short".
pub const SHORT_TASK_MS: u64 = 1_000;
/// Exited tasks a job needs before it can count as short.
pub const SHORT_TASK_SAMPLES: u64 = 4;

/// Most node names kept per job for display.
pub const MAX_JOB_NODES: usize = 16;

impl Job {
    /// A new job with every task pending.
    pub fn new(id: JobId, spec: JobSpec, now_ms: u64) -> Job {
        let total = spec.array.as_ref().map_or(1, ArraySpec::len);
        let mut counts = [0u64; 7];
        counts[TaskState::Pending.slot()] = total;
        Job {
            id,
            spec,
            submit_ms: now_ms,
            start_ms: None,
            end_ms: None,
            total,
            next_position: 0,
            requeued: BTreeMap::new(),
            running: BTreeMap::new(),
            ended: BTreeMap::new(),
            counts,
            cancelled: false,
            nodes: Vec::new(),
            exited_runs: 0,
            exited_run_ms: 0,
            held: false,
            dep: DepStatus::Satisfied,
            skipped: BTreeSet::new(),
            turn: 0,
            mf_priority: 0,
            max_attempt: 0,
            corr: None,
            steps_recorded: 0,
            steps_dropped: 0,
            next_step: 0,
        }
    }

    /// How many of this job's tasks may wait on an agent behind one running task. Short
    /// tasks end before a result can go through the log and a new task come back, so they
    /// are queued deeper (a few milliseconds of work each); other tasks barely, so that a
    /// node that frees up elsewhere is not passed over for long.
    pub fn queue_depth(&self, cfg: &crate::sched::SchedConfig) -> u32 {
        let short = self.exited_runs >= SHORT_TASK_SAMPLES && self.exited_run_ms < SHORT_TASK_MS * self.exited_runs;
        if short {
            cfg.short_queue_depth
        } else {
            cfg.queue_depth
        }
    }

    /// True when the job's tasks hold something a successor could not take over (generic
    /// resources, licenses): they are never queued on agents, nor queued behind.
    pub fn holds_counted_resources(&self) -> bool {
        // A multi-node job's slices on other nodes cannot pass to a successor either.
        !self.spec.gres.is_empty() || !self.spec.licenses.is_empty() || self.spec.alloc.is_some()
    }

    /// The job id of one task, as Slurm gives each array task its own: the array's id
    /// plus the task's position (a submit reserves one id per task). The job's own id
    /// for a job that is not an array.
    pub fn task_job_id(&self, index: u32) -> JobId {
        let position = self.spec.array.as_ref().and_then(|a| a.position_of(index)).unwrap_or(0);
        self.id + position
    }

    /// True when the job is an array.
    pub fn is_array(&self) -> bool {
        self.spec.array.is_some()
    }

    /// Count of tasks in `state`.
    pub fn count(&self, state: TaskState) -> u64 {
        self.counts[state.slot()]
    }

    /// Moves one task's count from one state to another.
    pub fn move_count(&mut self, from: TaskState, to: TaskState) {
        self.counts[from.slot()] = self.counts[from.slot()].saturating_sub(1);
        self.counts[to.slot()] += 1;
    }

    /// Moves `n` tasks' counts from one state to another.
    pub fn move_counts(&mut self, from: TaskState, to: TaskState, n: u64) {
        let n = n.min(self.counts[from.slot()]);
        self.counts[from.slot()] -= n;
        self.counts[to.slot()] += n;
    }

    /// Tasks not yet in a terminal state.
    pub fn unfinished(&self) -> u64 {
        self.count(TaskState::Pending) + self.count(TaskState::Running)
    }

    /// True when every task is terminal.
    pub fn is_finished(&self) -> bool {
        self.unfinished() == 0
    }

    /// True when some task waits to be placed.
    pub fn has_pending(&self) -> bool {
        !self.requeued.is_empty() || self.next_position < self.total
    }

    /// Tasks placed on a node but queued there behind another task (not started).
    pub fn queued_on_nodes(&self) -> u64 {
        self.running.values().filter(|r| r.after.is_some()).count() as u64
    }

    /// Task counts as users see them: tasks queued on a node count as pending until they
    /// take over their predecessor's resources.
    pub fn display_counts(&self) -> [u64; 7] {
        let mut c = self.counts;
        let q = self.queued_on_nodes().min(c[TaskState::Running.slot()]);
        c[TaskState::Running.slot()] -= q;
        c[TaskState::Pending.slot()] += q;
        c
    }

    /// The aggregated state users see: running while anything runs, pending while
    /// anything waits; once finished, the worst outcome among the tasks.
    pub fn state(&self) -> TaskState {
        let c = self.display_counts();
        if c[TaskState::Running.slot()] > 0 {
            return TaskState::Running;
        }
        if c[TaskState::Pending.slot()] > 0 {
            // Some tasks ran already while others wait: still "running" from the user's view.
            if self.start_ms.is_some() && self.is_array() {
                return TaskState::Running;
            }
            return TaskState::Pending;
        }
        for s in [
            TaskState::NodeFail,
            TaskState::Timeout,
            TaskState::Failed,
            TaskState::Cancelled,
        ] {
            if self.count(s) > 0 {
                return s;
            }
        }
        TaskState::Completed
    }

    /// The dispatch position of an array index (0 for the task of a single-task job).
    pub fn position_of(&self, index: u32) -> Option<u64> {
        match &self.spec.array {
            Some(a) => a.position_of(index),
            None => (index == 0).then_some(0),
        }
    }

    /// Moves the dispatch cursor past indices cancelled before their dispatch, so that
    /// the planner, which hands out tasks by position, never sees them.
    pub fn skip_cancelled(&mut self) {
        while self.next_position < self.total && self.skipped.remove(&self.index_at(self.next_position)) {
            self.next_position += 1;
        }
    }

    /// The state accounting records for the job: `out_of_memory` when it failed and every
    /// failed task was a memory kill, else [`Job::state`].
    pub fn recorded_state(&self) -> &'static str {
        let state = self.state();
        let mut failed = self.ended.values().filter(|t| t.state == TaskState::Failed).peekable();
        if state == TaskState::Failed && failed.peek().is_some() && failed.all(|t| t.oom) {
            "out_of_memory"
        } else {
            state.as_str()
        }
    }

    /// Array index at a dispatch position.
    pub fn index_at(&self, position: u64) -> u32 {
        match &self.spec.array {
            Some(a) => a.index_at(position).unwrap_or(0),
            None => 0,
        }
    }
}
