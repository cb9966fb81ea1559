//! `rudel explain ID`: why a job waits, node by node. The one-line pending reason
//! (`query::pending_reason`) names the first obstacle; a user whose job waits for hours
//! needs the whole picture: which nodes could ever run it and what each one lacks now,
//! which job holds the nodes reserved, how many jobs are ahead in the queue.
//!
//! Pure and read-only: computed from the replicated state on the head that answers, so
//! it costs nothing when nobody asks, and one scan of the nodes when someone does.
use crate::constraint::Constraint;
use crate::ids::JobId;
use crate::job::Job;
use crate::node::Node;
use crate::sched::partition::PartitionState;
use crate::state::State;

/// What a node means for a waiting job.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// It would fit there now: the job waits for something other than this node.
    FitsNow,
    /// It could run there, but the node's resources are taken now.
    Busy,
    /// Free enough, but kept for the first job in the queue that fits nowhere.
    Reserved,
    /// Down, lost or drained.
    NotAccepting,
    /// Not in any partition the job may use.
    OtherPartition,
    /// Does not satisfy the job's `--constraint`.
    Constraint,
    /// Excluded by the job (`-x`), or not in its `-w` list.
    Excluded,
    /// Smaller than one task of the job: it can never run there.
    TooSmall,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::FitsNow => "fits_now",
            Verdict::Busy => "busy",
            Verdict::Reserved => "reserved",
            Verdict::NotAccepting => "not_accepting",
            Verdict::OtherPartition => "other_partition",
            Verdict::Constraint => "constraint",
            Verdict::Excluded => "excluded",
            Verdict::TooSmall => "too_small",
        }
    }
}

/// One node's verdict and what it is based on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeVerdict {
    pub node: String,
    pub verdict: Verdict,
    pub detail: String,
}

/// Everything `rudel explain` says about one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub job: JobId,
    /// The one-line reason squeue shows; empty when nothing of the job waits.
    pub reason: String,
    /// What one task (or one node's slice of an allocation) needs.
    pub needs: String,
    /// 1-based place among the jobs waiting in the queue, in the configured order.
    pub queue_position: Option<usize>,
    /// The first job in the queue that fits nowhere, when it is another job (its nodes are
    /// kept for it).
    pub reserved_for: Option<JobId>,
    /// Every node, best verdict first, then by name.
    pub nodes: Vec<NodeVerdict>,
    /// Under the `multifactor` order: the job's priority and its factors; else empty.
    pub priority: String,
    /// Under backfill: the reserved job's expected start (log time), if known.
    pub reserved_start_ms: Option<u64>,
    /// Under backfill: whether and why this job may start before the reserved one.
    pub backfill: String,
}

/// What one task (or one node's slice) of a job asks of a node.
struct Need<'j> {
    cpus: u32,
    mem: u64,
    constraint: Option<&'j Constraint>,
    job: &'j Job,
}

impl Need<'_> {
    fn of(job: &Job) -> Need<'_> {
        let (cpus, mem) = match job.spec.alloc.as_deref() {
            Some(a) => {
                let per_node = a.ntasks_per_node.unwrap_or(1).max(1) * job.spec.cpus.max(1);
                let mem = if a.mem_per_cpu > 0 {
                    a.mem_per_cpu.saturating_mul(u64::from(per_node))
                } else {
                    job.spec.mem_bytes
                };
                (per_node, mem)
            }
            None => (job.spec.cpus, job.spec.mem_bytes),
        };
        Need {
            cpus,
            mem,
            constraint: job.spec.constraint.as_ref(),
            job,
        }
    }

    fn text(&self) -> String {
        let mut parts = vec![format!("{} cpus", self.cpus)];
        if self.mem > 0 {
            parts.push(format!("{} MiB", self.mem >> 20));
        }
        for (pool, units) in &self.job.spec.gres {
            parts.push(format!("{pool}:{units}"));
        }
        if let Some(c) = self.constraint {
            parts.push(format!("constraint {c}"));
        }
        let per = if self.job.spec.alloc.is_some() {
            "per node of its allocation"
        } else {
            "per task"
        };
        format!("{} {per}", parts.join(", "))
    }
}

/// Explains job `id`, or `None` when the state does not hold it.
pub fn explain(state: &State, id: JobId) -> Option<Explanation> {
    let job = state.jobs.get(&id)?;
    let need = Need::of(job);
    let reserved_for = state.blocked_job.filter(|b| *b != id);
    let reserving = reserved_for.and_then(|b| state.jobs.get(&b)).map(Need::of);
    let backfill = crate::sched::backfill_explain::note(state, job);
    let mut nodes: Vec<NodeVerdict> = state
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            // Under backfill the reservation keeps only the nodes it needs, and those
            // only from jobs that would still run at its expected start.
            let kept = crate::sched::backfill_explain::keeps_node(state, i as crate::ids::NodeId, job);
            let reserving = reserving.as_ref().filter(|_| kept != Some(false));
            let (verdict, detail) = judge(state, n, &need, reserving);
            NodeVerdict {
                node: n.name.clone(),
                verdict,
                detail,
            }
        })
        .collect();
    nodes.sort_by(|a, b| (a.verdict, &a.node).cmp(&(b.verdict, &b.node)));
    Some(Explanation {
        job: id,
        reason: reason(state, job),
        needs: need.text(),
        queue_position: queue_position(state, job),
        reserved_for,
        nodes,
        priority: crate::sched::multifactor::explain(state, job),
        reserved_start_ms: backfill.0,
        backfill: backfill.1,
    })
}

/// squeue's reason, or for tasks already handed to a node to start behind a running
/// task (successor queueing: they show as pending, but no longer wait in the queue) where
/// they wait.
fn reason(state: &State, job: &Job) -> String {
    let r = crate::query::pending_reason(state, job);
    if !r.is_empty() {
        return r;
    }
    let mut queued = job
        .running
        .iter()
        .filter_map(|(i, rt)| rt.after.map(|a| (*i, rt.node, a)));
    let Some((index, node, after)) = queued.next() else {
        return r;
    };
    let node = state.nodes.get(node as usize).map_or("?", |n| n.name.as_str());
    format!(
        "Queued: {} task(s) wait on their node to start behind a running task (index {index} on \
         {node} behind task {after}); each starts when the one ahead ends",
        1 + queued.count()
    )
}

/// The job's 1-based place in the pending queue (`None`: not queued).
fn queue_position(state: &State, job: &Job) -> Option<usize> {
    let key = state.sched.queue_key(job);
    state.queue.contains(&key).then(|| state.queue.range(..key).count() + 1)
}

fn judge(state: &State, n: &Node, need: &Need, reserving: Option<&Need>) -> (Verdict, String) {
    if let Some(why) = excluded(n, need.job) {
        return (Verdict::Excluded, why);
    }
    if !in_partitions(state, n, need.job) {
        return (
            Verdict::OtherPartition,
            format!("not in partition {}", need.job.spec.partition),
        );
    }
    if !n.matches(need.constraint) {
        return (Verdict::Constraint, "does not match the constraint".into());
    }
    if !n.could_ever_fit(need.cpus, need.mem) || !n.could_ever_serve(&need.job.spec.gres) {
        return (
            Verdict::TooSmall,
            format!("has {} cpus, {} MiB in all", n.cpus, n.mem_bytes >> 20),
        );
    }
    if !n.takes_work() {
        return (Verdict::NotAccepting, format!("node is {}", n.display_state()));
    }
    let free = format!(
        "{} of {} cpus, {} of {} MiB free",
        n.cpus_free(),
        n.cpus,
        n.mem_free() >> 20,
        n.mem_bytes >> 20
    );
    if !n.fits_now(need.cpus, need.mem) || !gres_free(n, need.job) {
        return (Verdict::Busy, free);
    }
    if reserving.is_some_and(|r| could_serve(state, n, r)) {
        return (Verdict::Reserved, free);
    }
    (Verdict::FitsNow, free)
}

/// `-x` names the node, or a `-w` list leaves it out.
fn excluded(n: &Node, job: &Job) -> Option<String> {
    let a = job.spec.alloc.as_deref()?;
    if a.exclude.contains(&n.name) {
        return Some("excluded by the job (-x)".into());
    }
    (!a.nodelist.is_empty() && !a.nodelist.contains(&n.name)).then(|| "not in the job's node list (-w)".into())
}

fn in_partitions(state: &State, n: &Node, job: &Job) -> bool {
    let parts = &state.sched.partitions;
    parts.is_empty()
        || job
            .spec
            .partition
            .split(',')
            .filter_map(|p| parts.get(p))
            .any(|p| p.state != PartitionState::Down && p.contains(n))
}

fn gres_free(n: &Node, job: &Job) -> bool {
    job.spec.gres.iter().all(|(want, units)| {
        n.gres
            .iter()
            .filter(|(pool, _)| crate::resources::serves(pool, want))
            .map(|(_, p)| p.available())
            .sum::<u32>()
            >= *units
    })
}

/// Could the reserving job ever run on `n` (then the planner keeps `n` for it)?
fn could_serve(state: &State, n: &Node, r: &Need) -> bool {
    excluded(n, r.job).is_none()
        && in_partitions(state, n, r.job)
        && n.matches(r.constraint)
        && n.could_ever_fit(r.cpus, r.mem)
        && n.could_ever_serve(&r.job.spec.gres)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, NodeRegistration};
    use crate::testkit::{spec, submit};

    fn register(s: &mut State, name: &str, cpus: u32) {
        s.apply(Command::RegisterNode {
            reg: NodeRegistration {
                name: name.into(),
                uid: format!("uid-{name}"),
                cpus,
                mem_bytes: 8 << 30,
                ..NodeRegistration::default()
            },
            now_ms: 1_000,
        });
    }

    fn cpus(n: u32) -> crate::job::JobSpec {
        crate::job::JobSpec { cpus: n, ..spec() }
    }

    fn verdicts(e: &Explanation) -> Vec<(&str, Verdict)> {
        e.nodes.iter().map(|v| (v.node.as_str(), v.verdict)).collect()
    }

    #[test]
    fn every_node_says_what_it_lacks() {
        let mut s = State::new();
        register(&mut s, "big", 4);
        register(&mut s, "small", 1);
        let hog = submit(&mut s, cpus(4));
        assert!(!s.jobs[&hog].running.is_empty());
        let waiting = submit(&mut s, cpus(2));
        let e = explain(&s, waiting).unwrap();
        assert_eq!(e.needs, "2 cpus per task");
        assert_eq!(e.queue_position, Some(1));
        assert_eq!(verdicts(&e), [("big", Verdict::Busy), ("small", Verdict::TooSmall)]);
        assert_eq!(e.nodes[0].detail, "0 of 4 cpus, 8192 of 8192 MiB free");
        assert_eq!(e.nodes[1].detail, "has 1 cpus, 8192 MiB in all");
        assert!(e.reason.starts_with("Resources"), "{}", e.reason);
    }

    #[test]
    fn a_free_node_kept_for_the_job_ahead_says_for_which() {
        let mut s = State::new();
        register(&mut s, "a", 2);
        register(&mut s, "b", 2);
        submit(&mut s, cpus(1));
        submit(&mut s, cpus(1));
        // One cpu free on each node: a 2-cpu job fits nowhere and keeps both nodes; the
        // 1-cpu job behind it would fit on either.
        let big = submit(&mut s, cpus(2));
        let small = submit(&mut s, cpus(1));
        assert_eq!(s.blocked_job, Some(big));
        let e = explain(&s, small).unwrap();
        assert_eq!(e.reserved_for, Some(big));
        assert_eq!(e.queue_position, Some(2));
        assert_eq!(verdicts(&e), [("a", Verdict::Reserved), ("b", Verdict::Reserved)]);
        s.apply(Command::Drain {
            nodes: vec!["a".into()],
            reason: "maintenance".into(),
            now_ms: 2_000,
        });
        let e = explain(&s, big).unwrap();
        assert_eq!(e.reserved_for, None, "its own reservation is not another's");
        assert_eq!(verdicts(&e), [("b", Verdict::Busy), ("a", Verdict::NotAccepting)]);
    }

    #[test]
    fn a_task_queued_on_its_node_says_behind_which() {
        let mut s = State::new();
        register(&mut s, "a", 1);
        let requeue = crate::job::JobSpec {
            requeue: true,
            ..spec()
        };
        submit(&mut s, requeue.clone());
        let next = submit(&mut s, requeue);
        let e = explain(&s, next).unwrap();
        assert!(e.reason.starts_with("Queued: 1 task(s)"), "{e:?}");
        assert!(e.reason.contains("on a behind task"), "{e:?}");
        assert_eq!(e.queue_position, None);
    }

    #[test]
    fn an_unknown_job_has_no_explanation() {
        assert!(explain(&State::new(), 9).is_none());
    }
}
