//! Job steps in accounting (issue 11): `sacct` shows a batch job's line, its `ID.batch`
//! line and one line per `srun` step (`ID.0`, `ID.1`, ...) with Slurm's names, states,
//! exit codes, task counts and nodes; `-X` hides the steps, `-j ID.N` selects one; the
//! records come through the replicated log, so they survive a restart of the head. Ground
//! truth: the step tasks record where they ran themselves.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Cluster, Opts};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

const FORMAT: &str = "JobID,JobName,State,ExitCode,NTasks,NodeList";

fn sacct(c: &Cluster, args: &[&str]) -> String {
    let mut all = vec!["sacct", "-P", "-n"];
    all.extend_from_slice(args);
    c.rudel_ok(&all).stdout
}

#[test]
fn sacct_shows_batch_and_srun_steps_and_they_survive_a_head_restart() {
    let mut c = Cluster::up(Opts::default().cpus(2));
    c.start_named_agent("n2");
    let bin = c.tmp.path().join("bin");
    c.rudel_ok(&["slurm", "install", &bin.display().to_string()]);
    let srun = bin.join("srun").display().to_string();
    let record = "echo \"$SLURM_STEP_ID $SLURMD_NODENAME\" >> ran.txt";
    // Step 0 two tasks that succeed, step 1 three that fail with 3 (allowed to fail in
    // the script), step 2 one named task on the second node; the script itself exits 0.
    let script = format!(
        "#!/bin/sh\n#SBATCH -N 2 --ntasks-per-node=2\n\
         {srun} -n 2 true\n\
         {srun} -n 3 sh -c '{record}; exit 3' 2> step1.err || echo \"step1=$?\" > step1.code\n\
         {srun} -J named -n 1 -w n2 sh -c '{record}'\n\
         exit 0\n"
    );
    std::fs::write(c.work.join("acct.sh"), script).unwrap();
    let id = c.submit(&["acct.sh"]);
    let v = c.wait_finished(id, WAIT);
    assert_eq!(v["state"], "completed", "{v}\n{}", c.logs_tail());
    assert_eq!(c.read_work("step1.code"), "step1=3\n", "srun's own exit code");

    // Where the step tasks ran, as they recorded it: step -> node -> tasks.
    let mut ran: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for line in c.read_work("ran.txt").lines() {
        let (step, node) = line.split_once(' ').expect("step node");
        *ran.entry(step.into()).or_default().entry(node.into()).or_default() += 1;
    }
    let nodes_of = |step: &str| ran[step].keys().cloned().collect::<Vec<_>>();
    assert_eq!(ran["1"].values().sum::<u32>(), 3, "{ran:?}");
    assert_eq!(nodes_of("1"), ["n1", "n2"], "three tasks over two nodes of two slots");
    assert_eq!(nodes_of("2"), ["n2"]);

    let sel = id.to_string();
    // Step records reach the log when a step ends, before the job's end: present now.
    let before = sacct(&c, &["-j", &sel, "--format", FORMAT]);
    let want = format!(
        "{id}|acct.sh|COMPLETED|0:0||n1,n2\n\
         {id}.batch|batch|COMPLETED|0:0|1|n1\n\
         {id}.0|true|COMPLETED|0:0|2|n1\n\
         {id}.1|sh|FAILED|3:0|3|n[1-2]\n\
         {id}.2|named|COMPLETED|0:0|1|n2\n"
    );
    assert_eq!(before, want, "sacct -j {id}");

    // -X: the allocation only; ID.N and ID.batch: that step only.
    assert_eq!(
        sacct(&c, &["-X", "-j", &sel, "-o", "JobID,State"]),
        format!("{id}|COMPLETED\n")
    );
    assert_eq!(
        sacct(&c, &["-j", &format!("{id}.1"), "-o", "JobID,State,ExitCode,AllocCPUS"]),
        format!("{id}.1|FAILED|3:0|3\n")
    );
    assert_eq!(
        sacct(&c, &["-j", &format!("{id}.batch"), "-o", "JobID,JobName"]),
        format!("{id}.batch|batch\n")
    );
    // Elapsed of each step lies within the job's.
    let raw: Vec<u64> = sacct(&c, &["-j", &sel, "-o", "ElapsedRaw"])
        .lines()
        .map(|l| l.parse().expect("ElapsedRaw"))
        .collect();
    assert_eq!(raw.len(), 5);
    assert!(raw[1..].iter().all(|e| *e <= raw[0]), "{raw:?}");

    // JSON: the steps inside the job, as Slurm nests them.
    let j: Value = serde_json::from_str(&c.rudel_ok(&["sacct", "--json", "-j", &sel]).stdout).expect("json");
    let steps: Vec<(String, String, i64)> = j["jobs"][0]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"]["id"].as_str().unwrap_or("").to_string(),
                s["state"].as_str().unwrap_or("").to_string(),
                s["exit_code"]["return_code"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (format!("{id}.batch"), "COMPLETED".to_string(), 0),
            (format!("{id}.0"), "COMPLETED".to_string(), 0),
            (format!("{id}.1"), "FAILED".to_string(), 3),
            (format!("{id}.2"), "COMPLETED".to_string(), 0),
        ]
    );
    // rudel show lists the srun steps.
    let show = c.show_json(id);
    let names: Vec<&str> = show["steps"]
        .as_array()
        .expect("show steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["true", "sh", "named"], "{show}");
    let text = c.rudel_ok(&["show", &sel]).stdout;
    assert!(text.contains(&format!("{id}.1")) && text.contains("3:0"), "{text}");

    // The records are in the replicated log: a restarted head still has them.
    let port = c.port();
    c.daemon("up").kill9();
    c.start_up(Some(port));
    assert_eq!(sacct(&c, &["-j", &sel, "--format", FORMAT]), want, "after the restart");

    // A new step of a new job after the restart numbers from 0; the old job's records stay.
    std::fs::write(
        c.work.join("again.sh"),
        format!("#!/bin/sh\n#SBATCH -n 2\n{srun} -n 2 true\n"),
    )
    .unwrap();
    let again = c.submit(&["again.sh"]);
    let v = c.wait_finished(again, WAIT);
    assert_eq!(v["state"], "completed", "{v}");
    let lines = sacct(&c, &["-j", &again.to_string(), "-o", "JobID,State,NTasks"]);
    assert_eq!(
        lines,
        format!("{again}|COMPLETED|\n{again}.batch|COMPLETED|1\n{again}.0|COMPLETED|2\n")
    );
}
