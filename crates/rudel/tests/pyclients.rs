//! Real clients from PyPI, unchanged, against rudel's Slurm commands: snakemake with its
//! Slurm executor plugin (a 53-job DAG with fan-ins) and submitit (a 50-task job array and
//! a job that depends on it). Versions are pinned in tests/pyclients/requirements.txt; the
//! venv is made by `.ci/run` (see README, "Real PyPI clients"). Ground truth is what the
//! jobs wrote: their results and when they ran.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{run_bounded, Cluster, Opts};

/// The venv with the pinned clients; a missing one fails the test with the command to
/// make it (never a silent skip).
fn venv() -> PathBuf {
    let dir = std::env::var_os("RUDEL_PYCLIENTS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyclients-venv"));
    assert!(
        dir.join("bin/python").exists(),
        "no venv with the PyPI clients at {}; make it with:\n  python3 -m venv target/pyclients-venv && \
         target/pyclients-venv/bin/pip install -r crates/rudel/tests/pyclients/requirements.txt\n\
         (.ci/run does this)",
        dir.display()
    );
    dir
}

/// A cluster with the Slurm links first on PATH, and a command running in its work dir.
struct Site {
    c: Cluster,
    path: String,
}

impl Site {
    fn up() -> Site {
        let c = Cluster::up(Opts::default().cpus(4));
        let bin = c.tmp.path().join("bin");
        c.rudel_ok(&["slurm", "install", &bin.display().to_string()]);
        let venv = venv();
        let path = format!(
            "{}:{}:{}",
            bin.display(),
            venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Site { c, path }
    }

    fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .current_dir(&self.c.work)
            .env("PATH", &self.path)
            .env("RUDEL_HEAD", &self.c.addr)
            .env("RUDEL_CREDENTIALS", self.c.admin_credentials())
            .env_remove("RUDEL_LOG");
        cmd
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pyclients").join(name)
}

/// (value, start, end) of a result file `v start end jobid`.
fn result(path: &Path) -> (u64, f64, f64) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f.len(), 4, "{}: {text:?}", path.display());
    (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap())
}

#[test]
fn snakemake_runs_a_53_job_dag_through_sbatch_and_sacct() {
    let s = Site::up();
    std::fs::copy(fixture("Snakefile"), s.c.work.join("Snakefile")).unwrap();
    let snakemake = venv().join("bin/snakemake");
    let cmd = s.cmd(
        &snakemake.display().to_string(),
        &[
            "--executor",
            "slurm",
            "--slurm-no-account",
            "--jobs",
            "60",
            "--slurm-init-seconds-before-status-checks",
            "1",
            "--seconds-between-status-checks",
            "1",
            "--latency-wait",
            "5",
        ],
    );
    let o = run_bounded(cmd, Duration::from_secs(600));
    assert_eq!(o.code, Some(0), "snakemake failed: {o}");
    let w = &s.c.work;
    let mut aggregates = Vec::new();
    for g in 0..4u64 {
        let (sum, start, _) = result(&w.join(format!("agg/{g}.txt")));
        let want: u64 = (g * 12..(g + 1) * 12).map(|i| i * i).sum();
        assert_eq!(sum, want, "aggregate {g}");
        for i in g * 12..(g + 1) * 12 {
            let (v, _, end) = result(&w.join(format!("steps/{i}.txt")));
            assert_eq!(v, i * i, "step {i}");
            assert!(end <= start, "aggregate {g} started before step {i} ended");
        }
        aggregates.push(result(&w.join(format!("agg/{g}.txt"))));
    }
    let (fin, start, _) = result(&w.join("final.txt"));
    assert_eq!(fin, (0..48u64).map(|i| i * i).sum::<u64>());
    assert!(
        aggregates.iter().all(|a| a.2 <= start),
        "final ran before an aggregate ended"
    );
    // Every rule ran as its own rudel job.
    let jobs = s.c.rudel_ok(&["jobs", "--all", "--json"]).stdout;
    let v: serde_json::Value = serde_json::from_str(&jobs).unwrap();
    let n = v.as_array().map_or(0, Vec::len);
    assert!(n >= 53, "{n} jobs: {jobs}");
}

#[test]
fn submitit_runs_a_50_task_array_and_a_dependent_job() {
    let s = Site::up();
    let python = venv().join("bin/python");
    let folder = s.c.work.join("submitit");
    let cmd = s.cmd(
        &python.display().to_string(),
        &[
            &fixture("submitit_flow.py").display().to_string(),
            &folder.display().to_string(),
            "50",
        ],
    );
    let o = run_bounded(cmd, Duration::from_secs(300));
    assert_eq!(o.code, Some(0), "submitit failed: {o}");
    let last = o.stdout.lines().last().unwrap_or_default();
    let want: u64 = (0..50u64).map(|i| i * i).sum();
    assert!(last.starts_with(&format!("{want} ")), "sum of squares: {o}");
    // The dependent job started after the array's last task ended (afterok).
    let (sum_line, fin) = last.split_once(' ').unwrap();
    assert_eq!(sum_line, want.to_string());
    let start = fin
        .split("'start': ")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|x| x.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no start in {fin}"));
    let ends = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("ends "))
        .unwrap_or_else(|| panic!("{o}"));
    let last_end = ends
        .split(',')
        .filter_map(|x| x.trim().parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(
        last_end > 0.0 && start >= last_end,
        "dependent job started at {start}, array ended at {last_end}"
    );
}
