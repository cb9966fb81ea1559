//! Committing a pass's preemption (see `sched/preempt.rs` for the choice): each victim is
//! marked, then killed like a cancel (the agent sends SIGTERM, SIGKILL after
//! `preempt.grace_s`). When its end is reported it goes back to pending (`preempt=requeue`
//! and a `--requeue` job: a requeue, as `rudel requeue` does) or ends `cancelled` with the
//! reason "preempted by job N". The record of who was stopped for whom lives while one of
//! them runs: the planner preempts nothing more for that job meanwhile.
use super::State;
use crate::events::Event;
use crate::sched::preempt::{tier_on, victims_ending, Preempting, Preemption};
use crate::sched::PreemptMode;

impl State {
    pub(crate) fn commit_preemption(&mut self, p: Option<&Preemption>) {
        let ended: Vec<_> = self
            .preempting
            .keys()
            .copied()
            .filter(|job| !victims_ending(self, *job))
            .collect();
        for job in ended {
            self.preempting.remove(&job);
        }
        let Some(p) = p else { return };
        if victims_ending(self, p.job) {
            return;
        }
        let requeue_mode = self.sched.preempt.mode == PreemptMode::Requeue;
        let Some(preemptor) = self.jobs.get(&p.job) else { return };
        let Some(node) = self.nodes.get(p.node as usize) else {
            return;
        };
        let tier = tier_on(self, preemptor, node);
        let mut taken = Vec::new();
        for &(key, attempt) in &p.victims {
            // Checked again as placements are: a planner bug must never stop a task of an
            // equal or higher tier.
            let Some(vjob) = self.jobs.get(&key.job) else { continue };
            let Some(rt) = vjob.running.get(&key.index) else {
                continue;
            };
            let Some(vnode) = self.nodes.get(rt.node as usize) else {
                continue;
            };
            if rt.attempt != attempt || rt.kill_requested || tier_on(self, vjob, vnode) >= tier {
                continue;
            }
            // A task queued behind a victim has not started: it waits again, whatever the
            // mode (only --requeue tasks are queued on agents).
            let requeue = (requeue_mode || rt.after.is_some()) && vjob.spec.requeue && !vjob.cancelled;
            let Some(rt) = self.running_mut(key) else { continue };
            rt.kill_requested = true;
            rt.requeue = requeue;
            rt.preempted_by = Some(p.job);
            let node = rt.node;
            self.touch_tail(key);
            self.emit(Event::Preempted {
                key,
                attempt,
                node,
                by: p.job,
                requeue,
            });
            self.emit(Event::KillRequested { key, attempt, node });
            taken.push((key, attempt));
        }
        if !taken.is_empty() {
            let node = p.node;
            self.preempting.insert(p.job, Preempting { node, victims: taken });
        }
    }
}
