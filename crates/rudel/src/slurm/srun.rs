//! `srun` inside a batch job: one task on the job's own node and cores, which is what
//! workflow managers do in their job scripts (snakemake's Slurm executor runs every rule as
//! `srun -n1 --cpu-bind=q --cpus-per-task=N --nodes=1 CMD`). A rudel job is one task on one
//! node, so such a step is the command run in place: it keeps the job's cpuset, cgroup
//! (memory limit), time limit and output files, and its exit code is srun's, as Slurm's.
//!
//! Anything that would change what runs or where (more tasks or nodes, more cpus than the
//! job holds, GPUs, an allocation of its own outside a job) is refused, naming issue 11
//! (multi-node jobs and job steps), never dropped.
use std::ffi::OsString;

use super::{SlurmError, SlurmResult};

/// What the step asks for, from srun's options.
#[derive(Debug, Default, PartialEq, Eq)]
struct Step {
    cpus_per_task: Option<u32>,
    /// `-n 1` was given (a step of the whole allocation otherwise).
    one_task: bool,
    command: Vec<String>,
}

/// Options that take a value, long and short.
const VALUED: [(&str, Option<char>); 5] = [
    ("ntasks", Some('n')),
    ("nodes", Some('N')),
    ("cpus-per-task", Some('c')),
    ("cpu-bind", None),
    ("job-name", Some('J')),
];

fn unsupported(what: &str) -> SlurmError {
    SlurmError::msg(format!(
        "{what} is not supported yet: srun runs one task inside a batch job, on the job's own \
         node and cpus; multi-node jobs and job steps are issue 11. Nothing was run"
    ))
}

/// The count of a `-n`/`-N` value, which must be 1 (`1`, `1-1`).
fn must_be_one(opt: &str, v: &str) -> Result<(), SlurmError> {
    let one = v == "1" || v.split_once('-').is_some_and(|(a, b)| a == "1" && b == "1");
    if one {
        Ok(())
    } else {
        Err(unsupported(&format!("--{opt}={v}")))
    }
}

/// `--cpu-bind`: only the verbosity words; the task is already bound to the job's cores.
fn check_cpu_bind(v: &str) -> Result<(), SlurmError> {
    if v.split(',').all(|w| matches!(w, "q" | "quiet" | "v" | "verbose")) {
        Ok(())
    } else {
        Err(unsupported(&format!("--cpu-bind={v}")))
    }
}

fn apply(step: &mut Step, opt: &str, v: &str) -> Result<(), SlurmError> {
    match opt {
        "ntasks" => {
            must_be_one(opt, v)?;
            step.one_task = true;
            Ok(())
        }
        "nodes" => must_be_one(opt, v),
        "cpu-bind" => check_cpu_bind(v),
        "cpus-per-task" => {
            let n = v
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| SlurmError::msg(format!("Invalid --cpus-per-task argument: {v}")))?;
            step.cpus_per_task = Some(n);
            Ok(())
        }
        // A step's name shows only in step accounting, which rudel does not keep per step.
        "job-name" => Ok(()),
        _ => Err(unsupported(&format!("--{opt}"))),
    }
}

/// Parses srun's command line: options up to the first other word, which starts the command.
fn parse(args: &[String]) -> Result<Step, SlurmError> {
    let mut step = Step::default();
    let mut i = 0;
    while i < args.len() {
        let w = &args[i];
        i += 1;
        if w == "--" {
            step.command = args[i..].to_vec();
            break;
        }
        if !w.starts_with('-') || w == "-" {
            step.command = args[i - 1..].to_vec();
            break;
        }
        // Output is written as the program writes it: rudel does not buffer a step.
        if w == "-u" || w == "--unbuffered" {
            continue;
        }
        let (opt, inline) = match w.strip_prefix("--") {
            Some(long) => match long.split_once('=') {
                Some((o, v)) => (o.to_string(), Some(v.to_string())),
                None => (long.to_string(), None),
            },
            None => {
                let mut chars = w[1..].chars();
                let c = chars.next().unwrap_or('?');
                let rest: String = chars.collect();
                let long = VALUED.iter().find(|(_, s)| *s == Some(c)).map(|(l, _)| *l);
                match long {
                    Some(l) => (l.to_string(), (!rest.is_empty()).then_some(rest)),
                    None => return Err(unsupported(&format!("option {w}"))),
                }
            }
        };
        if !VALUED.iter().any(|(l, _)| *l == opt) {
            return Err(unsupported(&format!("--{opt}")));
        }
        let v = match inline {
            Some(v) => v,
            None => {
                let v = args
                    .get(i)
                    .cloned()
                    .ok_or_else(|| SlurmError::msg(format!("option '--{opt}' requires an argument")))?;
                i += 1;
                v
            }
        };
        apply(&mut step, &opt, &v)?;
    }
    if step.command.is_empty() {
        return Err(SlurmError::msg("No command given to execute."));
    }
    Ok(step)
}

/// The cpus this process may run on (the job's cpuset).
fn allowed_cpus() -> Option<u32> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it for pid 0
    // (this process) and we only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        u32::try_from(libc::CPU_COUNT(&set)).ok()
    }
}

/// `srun`: checks the step fits the job, then becomes the command.
pub fn srun(args: Vec<String>) -> SlurmResult {
    let step = parse(&args)?;
    if std::env::var_os("SLURM_JOB_ID").is_none() {
        return Err(unsupported("srun outside a batch job (an allocation of its own)"));
    }
    // In a multi-task allocation a step without -n runs SLURM_NTASKS tasks over every
    // node; running one here would look done but not be.
    let tasks = std::env::var("SLURM_NTASKS").ok().and_then(|v| v.parse::<u32>().ok());
    if let Some(n) = tasks.filter(|n| *n > 1 && !step.one_task) {
        return Err(unsupported(&format!(
            "a step of all {n} tasks of this allocation (srun without -n 1)"
        )));
    }
    if let (Some(want), Some(have)) = (step.cpus_per_task, allowed_cpus()) {
        if want > have {
            return Err(SlurmError::msg(format!(
                "Unable to create step for job {}: More processors requested than permitted \
                 (--cpus-per-task={want}, the job holds {have})",
                std::env::var("SLURM_JOB_ID").unwrap_or_default()
            )));
        }
    }
    exec(&step)
}

/// Replaces this process with the step's command, with the step's Slurm variables.
fn exec(step: &Step) -> SlurmResult {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(&step.command[0]);
    cmd.args(&step.command[1..]);
    let vars: [(&str, OsString); 5] = [
        ("SLURM_PROCID", "0".into()),
        ("SLURM_LOCALID", "0".into()),
        ("SLURM_NODEID", "0".into()),
        ("SLURM_NTASKS", "1".into()),
        ("SLURM_NNODES", "1".into()),
    ];
    cmd.envs(vars);
    if let Some(n) = step.cpus_per_task {
        cmd.env("SLURM_CPUS_PER_TASK", n.to_string());
    }
    let e = cmd.exec();
    // exec returns only on failure; Slurm's srun exits 2 when it cannot run the command.
    Err(SlurmError {
        code: 2,
        ..SlurmError::msg(format!("execve(): {}: {e}", step.command[0]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn snakemakes_step_line_parses() {
        let s = parse(&words("-n1 --cpu-bind=q --cpus-per-task=2 --nodes=1 python -m x -n 5")).unwrap();
        assert_eq!(s.cpus_per_task, Some(2));
        assert_eq!(s.command, words("python -m x -n 5"));
        let s = parse(&words("-u -N 1 -c 1 -J step -- sh -s")).unwrap();
        assert_eq!(s.command, words("sh -s"));
        assert!(!s.one_task, "no -n: a step of the whole allocation");
        assert!(parse(&words("-n 1 true")).unwrap().one_task);
    }

    #[test]
    fn what_would_change_the_step_is_refused() {
        for bad in [
            "-n2 true",
            "--ntasks=4 true",
            "-N 2 true",
            "--cpu-bind=cores true",
            "--gpus=1 true",
            "--mem=1G true",
            "-w n2 true",
        ] {
            let e = parse(&words(bad)).unwrap_err();
            assert!(e.lines[0].contains("not supported yet"), "{bad}: {e:?}");
        }
        assert!(parse(&words("-n1")).unwrap_err().lines[0].contains("No command"));
        assert!(parse(&words("-c 0 true")).unwrap_err().lines[0].contains("--cpus-per-task"));
    }
}
