//! `srun` outside a job: an allocation of its own, one step in it, handed back at the end
//! (`srun -N2 hostname`), as Slurm's srun does. The allocation is held from here
//! (`allocation.rs`); the step is started through the head's `Step` RPC, as in a `salloc`
//! shell, so srun's stdin, signals and output work as inside a job. The job then ends
//! as the step did (`completed`, or `failed` with the step's exit code).
use super::allocation::Allocation;
use super::srun::Step;
use super::SlurmResult;

/// The job's name: `-J`, else the command's file name, as Slurm names srun's job.
fn job_name(step: &Step) -> String {
    step.job_name.clone().unwrap_or_else(|| {
        let c = &step.command[0];
        c.rsplit('/').next().filter(|b| !b.is_empty()).unwrap_or(c).to_string()
    })
}

/// Allocates, runs `step` in the allocation, hands it back; the step's exit code.
pub async fn run(mut step: Step, head: &str) -> SlurmResult {
    let name = job_name(&step);
    let (alloc, nodes) = Allocation::obtain(&step, &name, head, "srun", false).await?;
    let id = alloc.id;
    step.env = super::allocation::env(id, &name, &nodes, &step);
    let outcome = super::srun_step::run(&id.to_string(), step, head).await;
    // A step that could not run at all (refused, head unreachable) ends the job failed.
    alloc.complete(outcome.as_ref().map_or(1, |c| i32::from(*c))).await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_is_named_for_the_commands_file() {
        let s = super::super::srun::parse(&["/bin/echo".into(), "x".into()]).unwrap();
        assert_eq!(job_name(&s), "echo");
        let s = super::super::srun::parse(&["-J".into(), "mine".into(), "true".into()]).unwrap();
        assert_eq!(job_name(&s), "mine");
    }
}
