//! The environment a task sees: the job's exported environment, then the variables rudel
//! and Slurm batch jobs define (which win, as in Slurm). One place, so the head's dispatch,
//! and later job steps (`srun`) and multi-node allocations, agree on names and formats.
use std::collections::BTreeMap;

use crate::ids::TaskKey;
use crate::job::{Job, RunningTask};

/// The cluster name tasks see (`SLURM_CLUSTER_NAME`).
pub const CLUSTER_NAME: &str = "rudel";

/// Where a task runs, as the environment describes it.
pub struct Placement<'a> {
    pub key: TaskKey,
    pub attempt: u32,
    pub node: &'a str,
    pub task: &'a RunningTask,
    pub job_name: &'a str,
}

/// Every variable of the task's environment.
pub fn task_env(job: &Job, p: &Placement) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = job.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.extend(rudel_vars(job, p));
    env.extend(slurm_vars(job, p));
    if let Some(a) = &p.task.alloc {
        env.extend(crate::alloc::env_vars(job, a));
    }
    env.extend(crate::resources::gpu_env(&p.task.gres));
    env
}

fn rudel_vars(job: &Job, p: &Placement) -> Vec<(String, String)> {
    let mut v = vec![
        ("RUDEL_JOB_ID".to_string(), p.key.job.to_string()),
        ("RUDEL_CPUS".into(), p.task.cores.len().to_string()),
        ("RUDEL_NODE".into(), p.node.to_string()),
        ("RUDEL_JOB_NAME".into(), p.job_name.to_string()),
        ("RUDEL_ATTEMPT".into(), p.attempt.to_string()),
        ("RUDEL_RESTART_COUNT".into(), p.attempt.saturating_sub(1).to_string()),
        ("RUDEL_PARTITION".into(), first_partition(job).to_string()),
    ];
    if job.is_array() {
        v.push(("RUDEL_ARRAY_INDEX".into(), p.key.index.to_string()));
        v.push(("RUDEL_ARRAY_TASKS".into(), job.total.to_string()));
    }
    v
}

/// What a Slurm batch job's script sees, with Slurm's names and formats.
fn slurm_vars(job: &Job, p: &Placement) -> Vec<(String, String)> {
    let spec = &job.spec;
    let task_job = job.task_job_id(p.key.index).to_string();
    let cpus = p.task.cores.len().to_string();
    let mut v: Vec<(&str, String)> = vec![
        ("SLURM_JOB_ID", task_job.clone()),
        ("SLURM_JOBID", task_job),
        ("SLURM_JOB_NAME", p.job_name.to_string()),
        ("SLURM_JOB_USER", spec.user.clone()),
        ("SLURM_SUBMIT_DIR", non_empty(&spec.submit_dir, &spec.chdir)),
        ("SLURM_SUBMIT_HOST", spec.submit_host.clone()),
        ("SLURM_CLUSTER_NAME", CLUSTER_NAME.to_string()),
        ("SLURM_JOB_PARTITION", first_partition(job).to_string()),
        ("SLURM_CPUS_ON_NODE", cpus.clone()),
        ("SLURM_JOB_CPUS_PER_NODE", cpus),
        ("SLURM_NNODES", "1".into()),
        ("SLURM_JOB_NUM_NODES", "1".into()),
        ("SLURM_JOB_NODELIST", p.node.to_string()),
        ("SLURM_NODELIST", p.node.to_string()),
        ("SLURMD_NODENAME", p.node.to_string()),
        ("SLURM_TASKS_PER_NODE", "1".into()),
        ("SLURM_PROCID", "0".into()),
        ("SLURM_LOCALID", "0".into()),
        ("SLURM_NODEID", "0".into()),
        ("SLURM_GTIDS", "0".into()),
        // What `[ "$ENVIRONMENT" = BATCH ]` tests in scripts that also run interactively.
        ("ENVIRONMENT", "BATCH".into()),
    ];
    // Slurm 22.05 sets these only when they say something (recorded in
    // tests/slurm_corpus): a restart count after a requeue, the mode when appending,
    // the dependency as written. SLURM_NTASKS/SLURM_NPROCS only come with --ntasks,
    // which rudel does not keep (every job is one task), so they are not set.
    if p.attempt > 1 {
        v.push(("SLURM_RESTART_COUNT", (p.attempt - 1).to_string()));
    }
    if spec.open_append {
        v.push(("SLURM_OPEN_MODE", "a".into()));
    }
    if !spec.account.is_empty() {
        v.push(("SLURM_JOB_ACCOUNT", spec.account.clone()));
    }
    if let Some(d) = &spec.dependency {
        v.push(("SLURM_JOB_DEPENDENCY", d.to_string()));
    }
    // Slurm sets it only when --cpus-per-task was given; more than one cpu says so.
    if spec.cpus > 1 {
        v.push(("SLURM_CPUS_PER_TASK", spec.cpus.to_string()));
    }
    if spec.mem_per_cpu > 0 {
        v.push(("SLURM_MEM_PER_CPU", (spec.mem_per_cpu >> 20).to_string()));
    } else if spec.mem_bytes > 0 {
        v.push(("SLURM_MEM_PER_NODE", (spec.mem_bytes >> 20).to_string()));
    }
    if let Some(a) = &spec.array {
        let indices = a.ranges.iter().filter(|r| !r.is_empty());
        let min = indices.clone().map(|r| r.start).min().unwrap_or(0);
        let max = indices
            .clone()
            .map(|r| r.start + (r.len().saturating_sub(1) as u32) * r.step)
            .max()
            .unwrap_or(0);
        let step = match a.ranges.as_slice() {
            [one] => one.step,
            _ => 1,
        };
        v.extend([
            ("SLURM_ARRAY_JOB_ID", job.id.to_string()),
            ("SLURM_ARRAY_TASK_ID", p.key.index.to_string()),
            ("SLURM_ARRAY_TASK_COUNT", job.total.to_string()),
            ("SLURM_ARRAY_TASK_MIN", min.to_string()),
            ("SLURM_ARRAY_TASK_MAX", max.to_string()),
            ("SLURM_ARRAY_TASK_STEP", step.to_string()),
        ]);
    }
    v.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn first_partition(job: &Job) -> &str {
    let p = job.spec.partition.split(',').next().unwrap_or_default();
    if p.is_empty() {
        crate::sched::DEFAULT_PARTITION
    } else {
        p
    }
}

fn non_empty(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        a.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobSpec;

    fn job(array: Option<&str>) -> Job {
        let spec = JobSpec {
            argv: vec!["true".into()],
            cpus: 2,
            mem_bytes: 1 << 30,
            chdir: "/work".into(),
            submit_dir: "/home/ada".into(),
            submit_host: "login1".into(),
            user: "ada".into(),
            partition: "gpu,batch".into(),
            env: std::sync::Arc::new([("SLURM_JOB_ID".to_string(), "stale".to_string())].into()),
            array: array.map(|a| crate::parse::parse_array(a).unwrap()),
            ..JobSpec::default()
        };
        Job::new(41, spec, 0)
    }

    fn env_of(job: &Job, index: u32) -> BTreeMap<String, String> {
        let rt = RunningTask::new(0, 2, vec![0, 1], 1 << 30, 0, None);
        let p = Placement {
            key: TaskKey { job: job.id, index },
            attempt: 2,
            node: "n1",
            task: &rt,
            job_name: "train",
        };
        task_env(job, &p)
    }

    #[test]
    fn a_batch_job_sees_slurms_variables() {
        let e = env_of(&job(None), 0);
        for (k, v) in [
            ("SLURM_JOB_ID", "41"),
            ("SLURM_JOBID", "41"),
            ("SLURM_JOB_NAME", "train"),
            ("SLURM_SUBMIT_DIR", "/home/ada"),
            ("SLURM_SUBMIT_HOST", "login1"),
            ("SLURM_CPUS_PER_TASK", "2"),
            ("SLURM_CPUS_ON_NODE", "2"),
            ("SLURM_MEM_PER_NODE", "1024"),
            ("ENVIRONMENT", "BATCH"),
            ("SLURM_JOB_NODELIST", "n1"),
            ("SLURMD_NODENAME", "n1"),
            ("SLURM_PROCID", "0"),
            ("SLURM_RESTART_COUNT", "1"),
            ("SLURM_JOB_PARTITION", "gpu"),
            ("SLURM_CLUSTER_NAME", "rudel"),
            ("RUDEL_JOB_ID", "41"),
        ] {
            assert_eq!(e.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(!e.contains_key("SLURM_ARRAY_TASK_ID"));
        for absent in [
            "SLURM_NTASKS",
            "SLURM_NPROCS",
            "SLURM_OPEN_MODE",
            "SLURM_JOB_DEPENDENCY",
        ] {
            assert!(!e.contains_key(absent), "{absent}: Slurm sets it only when given");
        }
    }

    #[test]
    fn restart_count_open_mode_and_dependency_only_when_they_say_something() {
        let mut j = job(None);
        j.spec.open_append = true;
        j.spec.dependency = Some(crate::deps::parse("afterok:7").unwrap());
        let rt = RunningTask::new(0, 2, vec![0, 1], 1 << 30, 0, None);
        let p = Placement {
            key: TaskKey { job: j.id, index: 0 },
            attempt: 1,
            node: "n1",
            task: &rt,
            job_name: "train",
        };
        let e = task_env(&j, &p);
        assert!(!e.contains_key("SLURM_RESTART_COUNT"), "first attempt: {e:?}");
        assert_eq!(e.get("SLURM_OPEN_MODE").map(String::as_str), Some("a"));
        assert_eq!(e.get("SLURM_JOB_DEPENDENCY").map(String::as_str), Some("afterok:7"));
    }

    #[test]
    fn memory_asked_per_cpu_is_said_per_cpu_as_slurm_does() {
        let mut j = job(None);
        j.spec.mem_per_cpu = 512 << 20;
        let e = env_of(&j, 0);
        assert_eq!(e.get("SLURM_MEM_PER_CPU").map(String::as_str), Some("512"));
        assert!(!e.contains_key("SLURM_MEM_PER_NODE"), "{e:?}");
    }

    #[test]
    fn an_array_task_has_its_own_job_id_and_the_arrays() {
        let j = job(Some("1-9:2"));
        let e = env_of(&j, 5);
        for (k, v) in [
            ("SLURM_JOB_ID", "43"),
            ("SLURM_ARRAY_JOB_ID", "41"),
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "5"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "9"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("RUDEL_ARRAY_INDEX", "5"),
        ] {
            assert_eq!(e.get(k).map(String::as_str), Some(v), "{k}");
        }
    }
}
