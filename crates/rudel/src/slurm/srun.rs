//! `srun` inside a batch job (docs/parallel-jobs.md).
//!
//! A step of one task on this node (what workflow managers run in their job scripts:
//! snakemake's Slurm executor runs every rule as `srun -n1 --cpu-bind=q --cpus-per-task=N
//! --nodes=1 CMD`) is the command run in place: it keeps the job's cpuset, cgroup, time
//! limit, output files and stdin, and its exit code is srun's, as Slurm's.
//!
//! Any other step (several tasks, other nodes) is started by rudel on the allocation's
//! nodes through the agents (`srun_step.rs`): asked for through the agent's job socket,
//! laid out and relayed by the head. Anything srun cannot honour is refused, never dropped.
use std::ffi::OsString;

use super::{SlurmError, SlurmResult};

/// What the step asks for, from srun's options (0 / empty = not given).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Step {
    pub job_name: Option<String>,
    pub cpus_per_task: Option<u32>,
    pub ntasks: u32,
    pub nodes: u32,
    pub ntasks_per_node: u32,
    pub nodelist: Vec<String>,
    pub label: bool,
    pub kill_on_bad_exit: bool,
    /// `--multi-prog`: the command's first word is a configuration file (`multi_prog.rs`).
    pub multi_prog: bool,
    pub mpi: Mpi,
    /// `--input`: which tasks read srun's stdin.
    pub input: super::srun_stdin::Input,
    pub command: Vec<String>,
    /// Variables the step's tasks get beyond srun's own environment: the allocation's,
    /// for an srun that allocated for itself (`srun_alloc.rs`).
    pub env: Vec<(String, String)>,
    /// Options that shape only an allocation (`-t`, `-p`, `-A`, `--mem`, `-C`, `-x`,
    /// `--exclusive`, `-L`), as `rudel submit` options (name, value; "" for a flag): for
    /// salloc and an srun outside a job. Inside an allocation they are refused.
    pub alloc_opts: Vec<(String, String)>,
}

/// The allocation-only options, as srun and salloc name them (and `rudel submit` too).
const ALLOC_ONLY: [&str; 8] = [
    "time",
    "partition",
    "account",
    "mem",
    "mem-per-cpu",
    "constraint",
    "exclude",
    "licenses",
];

/// `--mpi`: whether the step's tasks get a PMI server (srun's, PMI-1).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mpi {
    /// PMI-1, Slurm's always-present PMI: MPICH speaks it natively, Open MPI through
    /// rudel's library (docs/parallel-jobs.md).
    #[default]
    Pmi1,
    /// No PMI: Open MPI's own daemons (`orted`) are launched this way by mpirun.
    None,
}

impl Mpi {
    fn parse(v: &str) -> Result<Mpi, SlurmError> {
        match v {
            "none" => Ok(Mpi::None),
            "pmi1" | "pmi" => Ok(Mpi::Pmi1),
            other => Err(SlurmError::msg(format!(
                "--mpi={other} is not supported by rudel's srun: it serves PMI-1 (--mpi=pmi1, the \
                 default; Open MPI and MPICH programs started by srun use it) or nothing \
                 (--mpi=none). Nothing was run"
            ))),
        }
    }
}

/// Options that take a value, long and short.
const VALUED: [(&str, Option<char>); 17] = [
    ("time", Some('t')),
    ("partition", Some('p')),
    ("account", Some('A')),
    ("mem", None),
    ("mem-per-cpu", None),
    ("constraint", Some('C')),
    ("exclude", Some('x')),
    ("licenses", Some('L')),
    ("ntasks", Some('n')),
    ("nodes", Some('N')),
    ("cpus-per-task", Some('c')),
    ("cpu-bind", None),
    ("job-name", Some('J')),
    ("ntasks-per-node", None),
    ("nodelist", Some('w')),
    ("mpi", None),
    ("input", Some('i')),
];

fn unsupported(what: &str) -> SlurmError {
    SlurmError::msg(format!(
        "{what} is not supported yet by rudel's srun (docs/parallel-jobs.md lists what is). Nothing was run"
    ))
}

fn count(opt: &str, v: &str) -> Result<u32, SlurmError> {
    // `-N 2-2` style ranges: a step takes exactly its minimum.
    let first = v.split_once('-').map_or(v, |(a, _)| a);
    first
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| SlurmError::msg(format!("Invalid --{opt} argument: {v}")))
}

/// `--cpu-bind`: the verbosity words and `none`; each task already runs on the
/// allocation's cores of its node.
fn check_cpu_bind(v: &str) -> Result<(), SlurmError> {
    if v.split(',')
        .all(|w| matches!(w, "q" | "quiet" | "v" | "verbose" | "none" | "no"))
    {
        Ok(())
    } else {
        Err(unsupported(&format!("--cpu-bind={v}")))
    }
}

fn apply(step: &mut Step, opt: &str, v: &str) -> Result<(), SlurmError> {
    match opt {
        "ntasks" => step.ntasks = count(opt, v)?,
        "nodes" => step.nodes = count(opt, v)?,
        "ntasks-per-node" => step.ntasks_per_node = count(opt, v)?,
        "cpus-per-task" => step.cpus_per_task = Some(count(opt, v)?),
        "nodelist" => step.nodelist.push(v.to_string()),
        "cpu-bind" => check_cpu_bind(v)?,
        "mpi" => step.mpi = Mpi::parse(v)?,
        "input" => step.input = super::srun_stdin::Input::parse(v)?,
        // A step's name shows only in step accounting, which rudel does not keep per step;
        // outside a job it names the allocation's job.
        "job-name" => step.job_name = Some(v.to_string()),
        o if ALLOC_ONLY.contains(&o) => step.alloc_opts.push((o.to_string(), v.to_string())),
        _ => return Err(unsupported(&format!("--{opt}"))),
    }
    Ok(())
}

/// Flags without a value; true if `w` was one.
fn flag(step: &mut Step, w: &str) -> Result<bool, SlurmError> {
    match w {
        // Output is passed on as the tasks write it (line by line per task).
        "-u" | "--unbuffered" => {}
        "-l" | "--label" => step.label = true,
        "-K" | "--kill-on-bad-exit" | "--kill-on-bad-exit=1" => step.kill_on_bad_exit = true,
        "--kill-on-bad-exit=0" => step.kill_on_bad_exit = false,
        "--multi-prog" => step.multi_prog = true,
        "--exclusive" => step.alloc_opts.push(("exclusive".into(), String::new())),
        _ => return Ok(false),
    }
    Ok(true)
}

/// Parses srun's command line: options up to the first other word, which starts the command.
pub(super) fn parse(args: &[String]) -> Result<Step, SlurmError> {
    let mut step = Step::default();
    // Slurm's srun reads the default of --mpi from SLURM_MPI_TYPE.
    if let Ok(v) = std::env::var("SLURM_MPI_TYPE") {
        step.mpi = Mpi::parse(&v)?;
    }
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
        if flag(&mut step, w)? {
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

/// True if the step is one task on this very node, which runs in place: only from a
/// task of the job (an srun in a `salloc` shell is not on any node of the allocation).
fn in_place(step: &Step) -> bool {
    if std::env::var_os("RUDEL_TASK").is_none() {
        return false;
    }
    let here = std::env::var("SLURMD_NODENAME").unwrap_or_default();
    let job_tasks = std::env::var("SLURM_NTASKS").ok().and_then(|v| v.parse::<u32>().ok());
    let one_task = step.ntasks == 1 || (step.ntasks == 0 && job_tasks.is_none_or(|n| n <= 1));
    let only_here = step.nodelist.is_empty() || step.nodelist.iter().all(|n| *n == here);
    one_task && step.nodes <= 1 && step.ntasks_per_node <= 1 && only_here && !step.label
}

/// `srun`: runs the step in place or across the allocation; outside a job, first gets an
/// allocation of its own (`super::srun_alloc`).
pub async fn srun(args: Vec<String>, head: &str) -> SlurmResult {
    let mut step = parse(&args)?;
    let job = std::env::var("SLURM_JOB_ID").ok();
    if step.multi_prog {
        // Read here, on srun's node; without -n the allocation's task count is the step's.
        let ntasks = Some(step.ntasks)
            .filter(|n| *n > 0)
            .or_else(|| std::env::var("SLURM_NTASKS").ok().and_then(|v| v.parse().ok()));
        step.command = super::multi_prog::command(&step.command[0], ntasks)?;
    }
    let Some(job) = job else {
        return super::srun_alloc::run(step, head).await;
    };
    if let Some((opt, _)) = step.alloc_opts.first() {
        // They would size a step inside the allocation in Slurm (a step's own time limit,
        // memory, exclusive cpus); rudel's steps take the allocation as it is.
        return Err(SlurmError::msg(format!(
            "srun --{opt} inside an allocation (job {job}) is not supported yet: rudel's srun \
             uses it only to size an allocation of its own (outside a job, or with salloc). \
             Nothing was run"
        )));
    }
    if in_place(&step) {
        if let (Some(want), Some(have)) = (step.cpus_per_task, allowed_cpus()) {
            if want > have {
                return Err(SlurmError::msg(format!(
                    "Unable to create step for job {job}: More processors requested than permitted \
                     (--cpus-per-task={want}, the job holds {have})"
                )));
            }
        }
        if let super::srun_stdin::Input::Rank(r @ 1..) = step.input {
            return Err(SlurmError::msg(format!(
                "--input={r}: the step has one task (task 0). Nothing was run"
            )));
        }
        return exec(&step);
    }
    super::srun_step::run(&job, step, head).await
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
    // Run in place, the task has srun's own stdin unless told to read none.
    if step.input == super::srun_stdin::Input::None {
        cmd.stdin(std::process::Stdio::null());
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
        assert_eq!((s.ntasks, s.nodes), (1, 1));
        let s = parse(&words("-u -N 1 -c 1 -J step -- sh -s")).unwrap();
        assert_eq!(s.command, words("sh -s"));
        assert_eq!(s.ntasks, 0, "no -n: a step of the whole allocation");
    }

    #[test]
    fn open_mpis_daemon_line_parses() {
        let s = parse(&words(
            "--ntasks-per-node=1 --kill-on-bad-exit --mpi=none --cpu-bind=none --nodes=2 --nodelist=n2,n3 --ntasks=2 orted -mca x y",
        ))
        .unwrap();
        assert_eq!((s.ntasks, s.nodes, s.ntasks_per_node), (2, 2, 1));
        assert_eq!(s.nodelist, vec!["n2,n3".to_string()]);
        assert!(s.kill_on_bad_exit);
        assert_eq!(s.mpi, Mpi::None, "mpirun's daemons get no PMI");
        assert_eq!(s.command, words("orted -mca x y"));
        let s = parse(&words("-l -K -w n1 -n 3 hostname")).unwrap();
        assert!(s.label && s.kill_on_bad_exit);
    }

    #[test]
    fn what_srun_cannot_honour_is_refused() {
        for bad in ["--cpu-bind=cores true", "--gpus=1 true", "--gres=gpu:1 true"] {
            let e = parse(&words(bad)).unwrap_err();
            assert!(e.lines[0].contains("not supported yet"), "{bad}: {e:?}");
        }
        let e = parse(&words("--mpi=pmix true")).unwrap_err();
        assert!(
            e.lines[0].contains("--mpi=pmix is not supported") && e.lines[0].contains("PMI-1"),
            "{e:?}"
        );
        assert_eq!(parse(&words("--mpi=pmi1 true")).unwrap().mpi, Mpi::Pmi1);
        assert!(parse(&words("-n1")).unwrap_err().lines[0].contains("No command"));
        assert!(parse(&words("-c 0 true")).unwrap_err().lines[0].contains("--cpus-per-task"));
        assert!(parse(&words("-n x true")).unwrap_err().lines[0].contains("--ntasks"));
    }
}
