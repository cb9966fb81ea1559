//! The Slurm commands answered by the rudel binary through links made by `rudel slurm
//! install`: what a Slurm user types and sees. Expected strings marked "Slurm 22.05" were
//! recorded from the real Slurm (sbatch/squeue/scancel/sinfo of slurm-client 22.05.8).
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_bounded, Cluster, Opts, Out, CLI_TIMEOUT};

/// A cluster with the Slurm command links in `bin/`.
struct Slurm {
    c: Cluster,
    bin: PathBuf,
}

impl Slurm {
    fn up() -> Slurm {
        let c = Cluster::up(Opts::default());
        let bin = c.tmp.path().join("bin");
        let o = c.rudel_ok(&["slurm", "install", &bin.display().to_string()]);
        for cmd in [
            "sbatch", "squeue", "scancel", "sinfo", "scontrol", "sacct", "srun", "salloc",
        ] {
            assert!(
                o.stdout.contains(&format!("created {}", bin.join(cmd).display())),
                "{o}"
            );
            assert!(bin.join(cmd).symlink_metadata().unwrap().file_type().is_symlink());
        }
        Slurm { c, bin }
    }

    fn cmd(&self, name: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.args(args)
            .current_dir(&self.c.work)
            .env("RUDEL_HEAD", &self.c.addr)
            .env("RUDEL_CREDENTIALS", self.c.admin_credentials())
            .env_remove("RUDEL_LOG");
        for (k, _) in std::env::vars() {
            if k.starts_with("SBATCH_") || k.starts_with("SQUEUE_") || k.starts_with("SINFO_") {
                cmd.env_remove(k);
            }
        }
        cmd
    }

    fn run(&self, name: &str, args: &[&str]) -> Out {
        let o = run_bounded(self.cmd(name, args), CLI_TIMEOUT);
        assert!(!o.timed_out, "{name} {args:?} timed out: {o}");
        o
    }

    fn ok(&self, name: &str, args: &[&str]) -> Out {
        let o = self.run(name, args);
        assert_eq!(o.code, Some(0), "{name} {args:?}: {o}");
        o
    }

    /// Polls `squeue ARGS` until its output satisfies `pred`.
    fn squeue_until(&self, args: &[&str], pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let o = self.ok("squeue", args);
            if pred(&o.stdout) {
                return o.stdout;
            }
            assert!(Instant::now() < end, "squeue {args:?} never matched; last:\n{o}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(String::from).collect();
    v.sort();
    v
}

#[test]
fn sbatch_squeue_scancel_sinfo_scontrol_as_a_slurm_user_sees_them() {
    let s = Slurm::up();
    let work = s.c.work.clone();
    assert_eq!(s.ok("sinfo", &["-h", "-o", "%P %D %t"]).stdout, "batch* 1 idle\n");

    // --parsable --wrap: the id alone; Slurm's default output file.
    let o = s.ok("sbatch", &["--parsable", "--wrap", "echo wrapped"]);
    let wrap_id: u64 = o.stdout.trim().parse().unwrap_or_else(|_| panic!("{o}"));
    s.squeue_until(&["-h", "-t", "all", "-j", &wrap_id.to_string(), "-o", "%T"], |t| {
        t == "COMPLETED\n"
    });
    assert_eq!(
        std::fs::read_to_string(work.join(format!("slurm-{wrap_id}.out"))).unwrap(),
        "wrapped\n"
    );

    // A script with #SBATCH lines: an array whose tasks wait for a file.
    let script = write(
        &work,
        "sweep.sh",
        "#!/bin/sh\n\
         #SBATCH --job-name=sweep\n\
         #SBATCH -a 1-3%2\n\
         #SBATCH -o %A_%a.out\n\
         #SBATCH --export=ALL,X=1\n\
         echo \"task $SLURM_ARRAY_TASK_ID x=$X\"\n\
         while [ ! -e go ]; do sleep 0.1; done\n",
    );
    let o = s.ok("sbatch", &[&script]);
    let id: u64 = o
        .stdout
        .strip_prefix("Submitted batch job ")
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("Slurm's line: {o}"));
    let running = s.squeue_until(&["-h", "-o", "%i %T %j"], |t| t.matches("RUNNING").count() == 2);
    assert_eq!(
        sorted_lines(&running),
        [
            format!("{id}_1 RUNNING sweep"),
            format!("{id}_2 RUNNING sweep"),
            format!("{id}_[3%2] PENDING sweep"),
        ],
        "{running}"
    );
    // One line per task with -r; the header and widths of Slurm's default format.
    let r = s.ok("squeue", &["-r", "-o", "%.18i %.9P %.8j %.2t"]).stdout;
    assert_eq!(
        r.lines().next(),
        Some("             JOBID PARTITION     NAME ST"),
        "{r}"
    );
    assert!(
        r.contains(&format!("{:>18}     batch    sweep PD", format!("{id}_3"))),
        "{r}"
    );
    assert_eq!(s.ok("sinfo", &["-h", "-o", "%P %D %t"]).stdout, "batch* 1 alloc\n");
    let job = s.ok("scontrol", &["show", "job", &format!("{id}_1")]).stdout;
    for key in [
        format!("JobId={id} ArrayJobId={id} ArrayTaskId=1 JobName=sweep"),
        "JobState=RUNNING Reason=None".into(),
        "NodeList=n1".into(),
        "Partition=batch".into(),
        format!("StdOut={}", work.join(format!("{id}_1.out")).display()),
    ] {
        assert!(job.contains(&key), "{key} in:\n{job}");
    }
    let job2 = s.ok("scontrol", &["show", "job", &(id + 1).to_string()]).stdout;
    for key in [
        format!("JobId={} ArrayJobId={id} ArrayTaskId=2 ", id + 1),
        format!("StdOut={}", work.join(format!("{id}_2.out")).display()),
    ] {
        assert!(job2.contains(&key), "{key} in:\n{job2}");
    }
    // A running task and a pending one, cancelled in one call (so that the slot the first
    // frees cannot go to the second); the rest of the array runs on.
    s.ok("scancel", &[&format!("{id}_[2-3]")]);
    let state_of = |t: String| {
        let text = s.ok("scontrol", &["show", "job", &t]).stdout;
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("JobState="))
            .unwrap_or_default()
            .to_string()
    };
    let deadline = std::time::Instant::now() + CLI_TIMEOUT;
    while state_of(format!("{id}_2")) != "CANCELLED" {
        assert!(std::time::Instant::now() < deadline, "task 2 was not cancelled");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(state_of(format!("{id}_3")), "CANCELLED");
    assert_eq!(state_of(format!("{id}_1")), "RUNNING");
    std::fs::write(work.join("go"), "").unwrap();
    let st = s.squeue_until(&["-h", "-t", "all", "-j", &id.to_string(), "-o", "%T"], |t| {
        t == "CANCELLED\n"
    });
    assert_eq!(st, "CANCELLED\n", "the array ends with its worst task state");
    assert_eq!(state_of(format!("{id}_1")), "COMPLETED");
    assert_eq!(s.ok("squeue", &["-h"]).stdout, "", "nothing left in the queue");
    // Ground truth from the tasks: %A_%a names, --export=ALL,X=1.
    for i in [1, 2] {
        let out = std::fs::read_to_string(work.join(format!("{id}_{i}.out"))).unwrap();
        assert_eq!(out, format!("task {i} x=1\n"));
    }
    assert!(!work.join(format!("{id}_3.out")).exists(), "task 3 never ran");
}

#[test]
fn wait_env_and_refusals_with_slurms_messages_and_exit_codes() {
    let s = Slurm::up();
    let work = s.c.work.clone();
    // SBATCH_* input variables, below the command line; --wait exits with the job's code.
    let mut cmd = s.cmd("sbatch", &["--parsable", "-W", "-t", "5", "--wrap", "exit 3"]);
    cmd.env("SBATCH_JOB_NAME", "from-env").env("SBATCH_TIMELIMIT", "abc");
    let o = run_bounded(cmd, CLI_TIMEOUT);
    assert_eq!(o.code, Some(3), "{o}");
    let id = o.stdout.trim().to_string();
    let line = s.ok("squeue", &["-h", "-t", "all", "-j", &id, "-o", "%j %T %l"]).stdout;
    assert_eq!(line, "from-env FAILED 5:00\n");

    let refusals: [(&str, &[&str], i32, String); 7] = [
        // Slurm 22.05 (its getopt says `/usr/bin/sbatch:` when called by full path).
        (
            "sbatch",
            &["--frobnicate", "x.sh"],
            255,
            "sbatch: unrecognized option '--frobnicate'\nTry \"sbatch --help\" for more information\n".into(),
        ),
        (
            "sbatch",
            &["nosuch.sh"],
            1,
            "sbatch: error: Unable to open file nosuch.sh\n".into(),
        ),
        (
            "sbatch",
            &["-t", "abc", "--wrap", "true"],
            255,
            "sbatch: error: Invalid --time specification\n".into(),
        ),
        (
            "sbatch",
            &[&write(&work, "plain.sh", "echo hi\n")],
            1,
            "sbatch: error: This does not look like a batch script.  The first\n\
             sbatch: error: line must start with #! followed by the path to an interpreter.\n\
             sbatch: error: For instance: #!/bin/sh\n"
                .into(),
        ),
        (
            "sbatch",
            &[&write(&work, "dos.sh", "#!/bin/sh\r\necho hi\r\n")],
            1,
            "sbatch: error: Batch script contains DOS line breaks (\\r\\n)\n\
             sbatch: error: instead of expected UNIX line breaks (\\n).\n"
                .into(),
        ),
        ("sbatch", &[], 1, "sbatch: error: Batch script is empty!\n".into()),
        (
            "squeue",
            &["-j", "99999"],
            1,
            "slurm_load_jobs error: Invalid job id specified\n".into(),
        ),
    ];
    for (name, args, code, stderr) in refusals {
        let o = s.run(name, args);
        assert_eq!(
            (o.code, o.stderr.as_str()),
            (Some(code), stderr.as_str()),
            "{name} {args:?}: {o}"
        );
        assert_eq!(o.stdout, "", "{name} {args:?}");
    }
    // Slurm 22.05: an unknown job id is no failure for scancel (exit 0); rudel still says so.
    let o = s.run("scancel", &["99999"]);
    assert_eq!(o.code, Some(0), "{o}");
    assert_eq!(
        o.stderr,
        "scancel: error: Kill job error on job id 99999: Invalid job id specified\n"
    );
    assert_eq!(s.run("scancel", &["-q", "99999"]).stderr, "");
    let o = s.run("scancel", &[]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (Some(1), "scancel: error: No job identification provided\n")
    );
    let o = s.run("squeue", &["-t", "XX"]);
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.starts_with("squeue: error: Invalid job state specified: XX\n"),
        "{o}"
    );
    // scontrol's changing verbs are not here yet.
    let o = s.run("scontrol", &["suspend", "1"]);
    assert_eq!(o.code, Some(1), "scontrol: {o}");
    assert!(
        o.stderr.starts_with("scontrol: error: ") && o.stderr.contains("scontrol suspend is not supported yet"),
        "{o}"
    );
    // Nothing above was submitted.
    assert_eq!(
        s.ok("squeue", &["-h", "-t", "all", "-o", "%i"]).stdout,
        format!("{id}\n")
    );
    // salloc without a command runs the user's shell here (tests/steps.rs feeds it a
    // script); with stdin at end of file that shell exits at once, and so does salloc,
    // releasing its allocation.
    let o = s.run("salloc", &["-N", "1"]);
    assert_eq!(o.code, Some(0), "salloc: {o}");
    assert!(
        o.stderr.contains("salloc: Granted job allocation")
            && o.stderr.contains("salloc: Relinquishing job allocation"),
        "{o}"
    );
    // sacct answers through its link too (the accounting store's own tests are history.rs).
    let acct = s.ok("sacct", &["-X", "-P", "-n", "--format=JobID", "-j", &id.to_string()]);
    assert_eq!(acct.stdout, format!("{id}\n"), "{acct}");
    // Held at submit (-H, from the #SBATCH table), released by scontrol: silent, exit 0.
    let o = s.ok("sbatch", &["--parsable", "-H", "--wrap", "echo released"]);
    let held = o.stdout.trim().to_string();
    let st = s.ok("squeue", &["-h", "-j", &held, "-o", "%T %r"]).stdout;
    assert_eq!(st, "PENDING JobHeldUser\n");
    assert_eq!(
        s.ok("scontrol", &["hold", &held]).stderr,
        "",
        "holding a held job again is no error"
    );
    let o = s.ok("scontrol", &["release", &held]);
    assert_eq!((o.stdout.as_str(), o.stderr.as_str()), ("", ""));
    s.squeue_until(&["-h", "-t", "all", "-j", &held, "-o", "%T"], |t| t == "COMPLETED\n");
    assert_eq!(
        std::fs::read_to_string(work.join(format!("slurm-{held}.out"))).unwrap(),
        "released\n"
    );
    // scontrol update through rudel's Update call: a pending (held) job's limit and name.
    let o = s.ok("sbatch", &["--parsable", "-H", "-J", "before", "--wrap", "true"]);
    let up = o.stdout.trim().to_string();
    let o = s.ok(
        "scontrol",
        &["update", &format!("JobId={up}"), "TimeLimit=1:30:00", "JobName=after"],
    );
    assert_eq!(o.stderr, "");
    let line = s.ok("squeue", &["-h", "-j", &up, "-o", "%j %l %T"]).stdout;
    assert_eq!(line, "after 1:30:00 PENDING\n");
    let o = s.run("scontrol", &["update", &format!("JobId={up}"), "Nice=5"]);
    assert_eq!(o.code, Some(1), "{o}");
    assert!(o.stderr.contains("Update of Nice is not supported yet"), "{o}");
    s.ok("scancel", &[&up]);
    let o = s.run("scontrol", &["release", "99999"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (Some(1), "scontrol: error: Invalid job id specified\n")
    );
}

#[test]
fn install_refuses_to_replace_real_commands_without_force() {
    let c = Cluster::up(Opts::default());
    let bin = c.tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("sbatch"), "#!/bin/sh\necho real slurm\n").unwrap();
    let dir = bin.display().to_string();
    let o = c.rudel(&["slurm", "install", &dir]);
    assert_eq!(o.code, Some(2), "{o}");
    assert!(o.stderr.contains("not links") && o.stderr.contains("--force"), "{o}");
    assert!(!bin.join("squeue").exists(), "a refusal changes nothing");
    let o = c.rudel_ok(&["slurm", "install", &dir, "--force", "--json"]);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    let outcome = |cmd: &str| {
        v["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["command"] == cmd)
            .map(|l| l["outcome"].as_str().unwrap().to_string())
    };
    assert_eq!(outcome("sbatch").as_deref(), Some("replaced"));
    assert_eq!(outcome("squeue").as_deref(), Some("created"));
    let o = c.rudel_ok(&["slurm", "install", &dir]);
    assert!(o.stdout.starts_with("unchanged "), "{o}");
    assert!(bin.join("sbatch").symlink_metadata().unwrap().file_type().is_symlink());
}

#[test]
fn sbatch_test_only_estimates_the_start_and_submits_nothing() {
    let s = Slurm::up();
    let jobs = |s: &Slurm| s.ok("squeue", &["-h", "-t", "all", "-o", "%i"]).stdout.lines().count();
    // An idle node: now, on that node, in the default partition.
    let o = s.run("sbatch", &["--test-only", "--wrap", "true"]);
    assert_eq!(o.code, Some(0), "{o}");
    let line = o.stderr.trim().to_string();
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words[..2], ["sbatch:", "Job"], "{line}");
    assert_eq!(words[3..6], ["to", "start", "at"], "{line}");
    assert!(
        line.ends_with("using 1 processors on nodes n1 in partition batch"),
        "{line}"
    );
    assert_eq!(jobs(&s), 0, "nothing submitted");
    // The node held whole by a job with a 10-minute limit: the estimate is that limit's
    // end (within the minute it was asked), not now.
    let busy = s.ok(
        "sbatch",
        &["--parsable", "--exclusive", "-t", "10", "--wrap", "sleep 600"],
    );
    let busy = busy.stdout.trim().to_string();
    s.squeue_until(&["-h", "-j", &busy, "-o", "%T"], |l| l.trim() == "RUNNING");
    let o = s.run("sbatch", &["--test-only", "-t", "1", "--wrap", "true"]);
    assert_eq!(o.code, Some(0), "{o}");
    let at = o
        .stderr
        .split(" to start at ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or("");
    let now = s.ok("squeue", &["-h", "-j", &busy, "-o", "%S"]).stdout;
    let mins = |t: &str| -> i64 {
        // HH:MM of an ISO timestamp, as minutes of the day.
        let hm = t.trim().split('T').nth(1).unwrap_or("");
        let p: Vec<i64> = hm.split(':').filter_map(|x| x.parse().ok()).collect();
        p.first().copied().unwrap_or(-1) * 60 + p.get(1).copied().unwrap_or(0)
    };
    let gap = (mins(at) - mins(&now)).rem_euclid(24 * 60);
    assert!((9..=11).contains(&gap), "start {at} vs the busy job's start {now}: {o}");
    assert_eq!(jobs(&s), 1, "still only the busy job");
    // A job no node can run: refused, as Slurm's test says it.
    let o = s.run("sbatch", &["--test-only", "-c", "999", "--wrap", "true"]);
    assert_eq!(o.code, Some(1), "{o}");
    assert!(
        o.stderr.contains("allocation failure") && o.stderr.contains("no node can ever run"),
        "{o}"
    );
    s.ok("scancel", &[&busy]);
}
