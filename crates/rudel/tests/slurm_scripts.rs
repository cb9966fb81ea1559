//! Slurm batch scripts under `rudel submit`: the `SLURM_*` environment with Slurm's values,
//! per-task job ids and output names, `--export` semantics, and options that would change
//! the job refused rather than dropped. Ground truth is what the tasks write.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Cluster, Opts};

fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn an_array_script_sees_slurms_environment_and_writes_one_file_per_task() {
    let c = Cluster::up(Opts::default());
    let script = c.work.join("sweep.sh");
    std::fs::write(
        &script,
        "#!/bin/bash\n\
         #SBATCH --job-name=sweep\n\
         #SBATCH --array=1-5:2\n\
         #SBATCH -o out-%j.txt\n\
         #SBATCH --mem-per-cpu=64M\n\
         #SBATCH -c 2\n\
         #SBATCH --export=ALL,SWEEP_MODE=fast\n\
         #SBATCH --mail-type=END\n\
         cd \"$SLURM_SUBMIT_DIR\"\n\
         env | grep -E '^(SLURM_|SLURMD_|SWEEP_MODE|HOME=|ENVIRONMENT=)' | sort > env-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}.txt\n",
    )
    .unwrap();
    let o = c.rudel_ok(&["submit", "--json", &script.display().to_string()]);
    assert!(o.stderr.contains("ignoring #SBATCH --mail-type END"), "warned: {o}");
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    let id = v["id"].as_u64().unwrap();
    let done = c.wait_finished(id, Duration::from_secs(60));
    assert_eq!(done["state"], "completed", "{done:#}");
    assert_eq!(done["mem_bytes"], 128 << 20, "--mem-per-cpu times -c: {done:#}");
    for (position, index) in [(0u64, 1u32), (1, 3), (2, 5)] {
        let e = env_file(&c.read_work(&format!("env-{id}_{index}.txt")));
        let task_job = (id + position).to_string();
        let want = [
            ("SLURM_JOB_ID", task_job.as_str()),
            ("SLURM_JOBID", task_job.as_str()),
            ("SLURM_ARRAY_JOB_ID", &id.to_string()),
            ("SLURM_ARRAY_TASK_ID", &index.to_string()),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "5"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_JOB_NAME", "sweep"),
            ("SLURM_SUBMIT_DIR", &c.work.display().to_string()),
            ("SLURM_CPUS_PER_TASK", "2"),
            ("SLURM_CPUS_ON_NODE", "2"),
            ("SLURM_MEM_PER_CPU", "64"),
            ("SLURM_NNODES", "1"),
            ("SLURM_JOB_NODELIST", "n1"),
            ("SLURMD_NODENAME", "n1"),
            ("SLURM_PROCID", "0"),
            ("ENVIRONMENT", "BATCH"),
            ("SLURM_JOB_PARTITION", "batch"),
            ("SWEEP_MODE", "fast"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        for (k, v) in want {
            assert_eq!(e.get(&k), Some(&v), "{k} of task {index}: {e:#?}");
        }
        assert!(e.contains_key("HOME"), "ALL exports the environment too: {e:#?}");
        // As Slurm 22.05 (tests/slurm_corpus): no --ntasks, no requeue, no variables for them.
        for absent in ["SLURM_NTASKS", "SLURM_RESTART_COUNT", "SLURM_MEM_PER_NODE"] {
            assert!(!e.contains_key(absent), "{absent}: {e:#?}");
        }
        // `-o out-%j.txt`: one file per task, named by the task's own job id.
        assert!(
            c.work.join(format!("out-{}.txt", id + position)).exists(),
            "out-%j of task {index}"
        );
    }
    // A task's own job id and ARRAY_INDEX both name the task.
    for (asked, index, job_id) in [((id + 1).to_string(), 3, id + 1), (format!("{id}_5"), 5, id + 2)] {
        let o = c.rudel_ok(&["show", &asked, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["id"], id, "{asked}: {v:#}");
        assert_eq!(
            v["task"],
            serde_json::json!({"index": index, "job_id": job_id}),
            "{asked}"
        );
    }
    let human = c.rudel_ok(&["show", &format!("{id}_3")]);
    assert!(
        human.stdout.starts_with(&format!("Task {id}_3 (job id {})", id + 1)),
        "{human}"
    );
    assert_eq!(
        c.rudel(&["show", &format!("{id}_4")]).code,
        Some(2),
        "no task 4 in 1-5:2"
    );
    // Cancelling one ended task by either name touches only that task.
    for asked in [(id + 1).to_string(), format!("{id}_3")] {
        let o = c.rudel_ok(&["cancel", &asked]);
        assert_eq!(o.stdout, format!("Task {id}_3 had already finished\n"), "{asked}: {o}");
    }
}

/// This user's home directory in the password database.
fn login_home() -> String {
    let o = std::process::Command::new("sh")
        .args(["-c", "getent passwd \"$(id -u)\" | cut -d: -f6"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn export_none_and_lists_pass_only_what_they_name() {
    let c = Cluster::up(Opts::default());
    let run = |export: &str| {
        let o = c.rudel_ok(&[
            "run",
            "--export",
            export,
            "--",
            "sh",
            "-c",
            "echo \"home=${HOME:-unset} a=${EXPORT_A:-unset} b=${EXPORT_B:-unset}\"",
        ]);
        o.stdout.trim().to_string()
    };
    std::env::set_var("EXPORT_A", "from-shell");
    // HOME comes from the login environment, as in Slurm 22.05 (tests/slurm_corpus 08, 10).
    let home = login_home();
    assert_eq!(run("NONE"), format!("home={home} a=unset b=unset"));
    assert_eq!(run("EXPORT_A"), format!("home={home} a=from-shell b=unset"));
    assert_eq!(
        run("EXPORT_A,EXPORT_B=given"),
        format!("home={home} a=from-shell b=given")
    );
    let all = run("ALL,EXPORT_B=given");
    assert!(
        all.starts_with("home=/") && all.ends_with("a=from-shell b=given"),
        "{all}"
    );
    std::env::remove_var("EXPORT_A");
}

#[test]
fn scripts_slurm_would_refuse_or_rudel_cannot_honour_are_refused_with_the_line() {
    let c = Cluster::up(Opts::default());
    let cases: [(&str, &str); 5] = [
        ("#!/bin/sh\r\necho hi\r\n", "DOS line breaks"),
        ("echo no shebang\n", "first line must start with #!"),
        (
            "#!/bin/sh\n#SBATCH -N 2\necho\n",
            // Multi-node jobs exist now; this one-node cluster cannot hold two nodes.
            "the job asks for 2 nodes; this cluster has 1",
        ),
        (
            "#!/bin/sh\n#SBATCH --deadline=now+1hour\necho\n",
            "line 2: #SBATCH --deadline=now+1hour",
        ),
        ("#!/bin/sh\n#SBATCH --frobnicate\necho\n", "unknown #SBATCH option"),
    ];
    for (i, (text, why)) in cases.iter().enumerate() {
        let path = c.work.join(format!("bad{i}.sh"));
        std::fs::write(&path, text).unwrap();
        let o = c.rudel(&["submit", &path.display().to_string()]);
        assert_eq!(o.code, Some(2), "{text:?}: {o}");
        assert!(o.stderr.contains(why), "{text:?} should say {why:?}: {o}");
    }
    assert!(c.jobs_all().is_empty(), "nothing was submitted");
}

/// `--signal=B:USR1@2` reaches the script's trap 2 s before its 4 s limit (the script
/// records when), and `--open-mode=append` keeps what the output file held.
#[test]
fn signal_before_the_time_limit_reaches_the_scripts_trap_and_append_keeps_output() {
    let c = Cluster::up(Opts::default());
    let out = c.work.join("out.txt");
    std::fs::write(&out, "previous\n").unwrap();
    let script = c.work.join("ckpt.sh");
    std::fs::write(
        &script,
        "#!/bin/bash\n#SBATCH --signal=B:USR1@2\n#SBATCH -t 0:04\n#SBATCH --open-mode=append\n#SBATCH -o out.txt\n\
         trap 'echo \"$(date +%s%3N)\" > sig.txt; echo checkpointed; exit 0' USR1\n\
         date +%s%3N > start.txt\necho hello\nwhile true; do sleep 0.1; done\n",
    )
    .unwrap();
    let id = c.submit(&[&script.display().to_string()]);
    let v = c.wait_finished(id, Duration::from_secs(30));
    assert_eq!(v["state"], "completed", "the trap exited 0 before the limit: {v:#}");
    let ms = |f: &str| -> u64 { c.read_work(f).trim().parse().unwrap_or_else(|_| panic!("{f}: {v:#}")) };
    let after = ms("sig.txt") - ms("start.txt");
    assert!(
        (1_500..3_500).contains(&after),
        "USR1 came {after} ms after the start (expected ~2,000)"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "previous\nhello\ncheckpointed\n"
    );
    // Forms rudel cannot honour are refused, naming the option.
    let o = c.rudel(&["submit", "--signal", "USR1@20", "--", "true"]);
    assert_eq!(o.code, Some(2), "{o}");
    assert!(o.stderr.contains("use B:USR1@20"), "{o}");
}
