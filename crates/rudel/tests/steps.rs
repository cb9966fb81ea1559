//! Job steps (issue 11): the agent's job socket and `srun` across an allocation's nodes.
//! A process inside a running task reaches its agent through `$RUDEL_AGENT_SOCKET` and is
//! told which task it belongs to (learnt from the kernel's peer credentials and the task's
//! marker, not from anything it says); a process outside every task is refused. `srun`
//! in a batch script starts its tasks on the allocation's nodes through the agents, with
//! Slurm's environment, output, exit codes and kills. Ground truth is what the tasks
//! record themselves.
mod common;

use std::time::Duration;

use common::{Cluster, Opts};

const WAIT: Duration = Duration::from_secs(60);

/// A python3 one-liner that sends `request` to the job socket and prints the reply line.
fn ask_cmd(request: &str) -> String {
    format!(
        "/usr/bin/python3 -c 'import os,socket,sys; s=socket.socket(socket.AF_UNIX); \
         s.connect(os.environ[\"RUDEL_AGENT_SOCKET\"]); s.sendall(sys.argv[1].encode()+b\"\\n\"); \
         print(s.makefile().readline().strip())' '{request}'"
    )
}

/// Sends `request` from this test process (outside every task) and returns the reply.
fn ask_from_outside(socket: &str, request: &str) -> String {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {socket}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(s).read_line(&mut line).unwrap();
    line
}

#[test]
fn job_processes_are_identified_by_the_agent_and_others_refused() {
    let mut c = Cluster::up(Opts::default());
    let _n2 = c.start_named_agent("n2");
    let whoami = ask_cmd(r#"{"op":"whoami"}"#);
    let step = ask_cmd(r#"{"op":"run","argv":["true"],"nodelist":["n9"]}"#);
    let script = format!(
        "#!/bin/sh\n#SBATCH -N 2\n\
         echo \"$RUDEL_AGENT_SOCKET\" > sock.txt\n\
         {whoami} > whoami.txt\n\
         sh -c '{whoami_esc}' > whoami-child.txt\n\
         {step} > step.txt\n\
         while [ ! -e release ]; do sleep 0.1; done\n",
        whoami_esc = whoami.replace('\'', "'\\''"),
    );
    std::fs::write(c.work.join("probe.sh"), script).unwrap();
    let id = c.submit(&["probe.sh"]);
    let step_file = c.work.join("step.txt");
    assert!(common::eventually(WAIT, || std::fs::read_to_string(&step_file)
        .is_ok_and(|s| s.ends_with('\n'))));

    let want = format!("{{\"job\":{id},\"index\":0,\"attempt\":");
    for f in ["whoami.txt", "whoami-child.txt"] {
        let r = c.read_work(f);
        assert!(r.starts_with(&want) && !r.contains("error"), "{f}: {r}");
    }
    let r = c.read_work("step.txt");
    // Forwarded to the head, which found the task running on n1 and refused a node
    // outside its allocation.
    assert!(
        r.contains("\"event\":\"refused\"") && r.contains("n9 is not in the allocation"),
        "{r}"
    );

    // The test process is no task: refused, with the reason.
    let sock = c.read_work("sock.txt").trim().to_string();
    assert!(!sock.is_empty(), "tasks are given RUDEL_AGENT_SOCKET");
    let r = ask_from_outside(&sock, r#"{"op":"whoami"}"#);
    assert!(r.contains("is not part of a rudel task on this node"), "{r}");

    std::fs::write(c.work.join("release"), b"").unwrap();
    let v = c.wait_finished(id, WAIT);
    assert_eq!(v["state"], "completed", "{v}");
    // Once the task has ended its marker no longer opens the socket (a leftover process
    // holding it would be refused): checked in the agent's unit tests (NotRunning).
}

/// Three agents on this host (n1 from `rudel up`, n2, n3), the Slurm commands installed.
fn three_nodes() -> (Cluster, std::path::PathBuf) {
    let mut c = Cluster::up(Opts::default().up_args(&["--node-timeout", "3s", "--allocation-lease", "2s"]));
    c.start_named_agent("n2");
    c.start_named_agent("n3");
    let bin = c.tmp.path().join("bin");
    c.rudel_ok(&["slurm", "install", &bin.display().to_string()]);
    (c, bin)
}

#[test]
fn srun_runs_a_step_on_every_node_of_the_allocation() {
    let (c, bin) = three_nodes();
    let srun = bin.join("srun").display().to_string();
    // Each task records its own view; srun's output, exit codes and refusals are kept.
    let script = format!(
        "#!/bin/sh\n#SBATCH -N 3 -n 6\n\
         {srun} -l sh -c 'echo \"$SLURM_PROCID $SLURM_LOCALID $SLURM_NODEID $SLURMD_NODENAME $SLURM_STEP_ID $SLURM_NTASKS $SLURM_STEP_NODELIST $SLURM_STEP_TASKS_PER_NODE\" > task-$SLURM_PROCID.txt; echo out-$SLURM_PROCID; echo err-$SLURM_PROCID >&2' > step0.out 2> step0.err; echo \"exit=$?\" > step0.code\n\
         {srun} -n 3 -N 3 sh -c 'exit $SLURM_PROCID' 2> step1.err; echo \"exit=$?\" > step1.code\n\
         {srun} -w n9 true 2> step2.err; echo \"exit=$?\" > step2.code\n\
         {srun} --ntasks-per-node=1 --nodes=2 --nodelist=n2,n3 --ntasks=2 --kill-on-bad-exit --mpi=none --cpu-bind=none sh -c 'echo $SLURMD_NODENAME:$SLURM_NODEID' > step3.out; echo \"exit=$?\" > step3.code\n\
         {srun} -l --multi-prog multi.conf > step4.out 2> step4.err; echo \"exit=$?\" > step4.code\n\
         {srun} -n 6 --multi-prog partial.conf 2> step5.err; echo \"exit=$?\" > step5.code\n\
         {srun} -N 3 --mem=1G sh -c 'touch ran-$SLURM_PROCID' 2> step6.err; echo \"exit=$?\" > step6.code\n"
    );
    // Slurm's MULTIPLE PROGRAM CONFIGURATION: a program per rank, %t rank, %o offset.
    std::fs::write(
        c.work.join("multi.conf"),
        "# a comment\n4-5 sh -c 'echo \"last %t on $SLURMD_NODENAME\"'\n0,2-3 echo first offset:%o\n* echo other:%t\n",
    )
    .unwrap();
    std::fs::write(c.work.join("partial.conf"), "0-4 true\n").unwrap();
    std::fs::write(c.work.join("steps.sh"), script).unwrap();
    let id = c.submit(&["steps.sh"]);
    let v = c.wait_finished(id, WAIT);
    assert_eq!(v["state"], "completed", "{v}");

    // Ranks 0-5 in blocks of two per node, each with Slurm's step variables.
    for rank in 0..6u32 {
        let got = c.read_work(&format!("task-{rank}.txt"));
        let node = rank / 2;
        let want = format!("{rank} {} {node} n{} 0 6 n[1-3] 2(x3)\n", rank % 2, node + 1);
        assert_eq!(got, want, "task {rank}");
    }
    let mut out: Vec<String> = c.read_work("step0.out").lines().map(String::from).collect();
    out.sort();
    assert_eq!(
        out,
        (0..6).map(|r| format!("{r}: out-{r}")).collect::<Vec<_>>(),
        "--label"
    );
    let mut err: Vec<String> = c.read_work("step0.err").lines().map(String::from).collect();
    err.sort();
    assert_eq!(err, (0..6).map(|r| format!("{r}: err-{r}")).collect::<Vec<_>>());
    assert_eq!(c.read_work("step0.code"), "exit=0\n");

    // The highest task exit code is srun's; failing tasks are named as Slurm names them.
    assert_eq!(c.read_work("step1.code"), "exit=2\n");
    let e = c.read_work("step1.err");
    assert!(e.contains("srun: error: n2: task 1: Exited with exit code 1"), "{e}");
    assert!(e.contains("srun: error: n3: task 2: Exited with exit code 2"), "{e}");

    // A node outside the allocation: refused, nothing run.
    assert_eq!(c.read_work("step2.code"), "exit=1\n");
    let e = c.read_work("step2.err");
    assert!(
        e.contains("Unable to create step for job") && e.contains("n9 is not in the allocation"),
        "{e}"
    );

    // Open MPI's daemon launch line: one task on each listed node, node ids 0 and 1.
    let mut out: Vec<String> = c.read_work("step3.out").lines().map(String::from).collect();
    out.sort();
    assert_eq!(out, vec!["n2:0", "n3:1"], "{out:?}");
    assert_eq!(c.read_work("step3.code"), "exit=0\n");

    // --multi-prog over the allocation's 6 tasks: each rank ran its line, on its node.
    let mut out: Vec<String> = c.read_work("step4.out").lines().map(String::from).collect();
    out.sort();
    let want = [
        "0: first offset:0",
        "1: other:1",
        "2: first offset:1",
        "3: first offset:2",
        "4: last 4 on n3",
        "5: last 5 on n3",
    ];
    assert_eq!(out, want, "{}", c.read_work("step4.err"));
    assert_eq!(c.read_work("step4.code"), "exit=0\n");
    // A file that leaves a task without a program: refused before anything runs.
    assert_eq!(c.read_work("step5.code"), "exit=1\n");
    let e = c.read_work("step5.err");
    assert!(e.contains("partial.conf invalid: no program for task 5 of 6"), "{e}");
    // An option that would size a step (its own memory) is refused inside an allocation,
    // not dropped: nothing ran.
    assert_eq!(c.read_work("step6.code"), "exit=1\n");
    let e = c.read_work("step6.err");
    assert!(
        e.contains("srun --mem inside an allocation") && e.contains("Nothing was run"),
        "{e}"
    );
    assert!(!c.work.join("ran-0").exists());
}

#[test]
fn srun_forwards_its_stdin_to_every_task_or_the_one_asked_with_flow_control() {
    let (c, bin) = three_nodes();
    let srun = bin.join("srun").display().to_string();
    // 3 MB is three times srun's window of unacknowledged bytes: it gets through only if
    // the nodes' acknowledgements move the window.
    let script = format!(
        "#!/bin/sh\n#SBATCH -N 3 -n 6\n\
         head -c 3000000 /dev/urandom > big.bin; sha256sum < big.bin | cut -d' ' -f1 > big.sum\n\
         printf 'l1\\nl2\\n' | {srun} -l cat > all.out; echo \"exit=$?\" > all.code\n\
         printf 'only\\n' | {srun} -l --input=4 sh -c 'cat; echo end' > one.out; echo \"exit=$?\" > one.code\n\
         {srun} sh -c 'sha256sum | cut -d\" \" -f1' < big.bin > big.out; echo \"exit=$?\" > big.code\n\
         head -c 5000000 /dev/zero | {srun} -n 2 true; echo \"exit=$?\" > noread.code\n\
         printf 'x\\n' | {srun} -n 2 --input=none cat > none.out; echo \"exit=$?\" > none.code\n\
         {srun} -n 2 -i 7 true 2> range.err; echo \"exit=$?\" > range.code\n\
         {srun} --input=in.txt true 2> file.err; echo \"exit=$?\" > file.code\n"
    );
    std::fs::write(c.work.join("stdin.sh"), script).unwrap();
    let id = c.submit(&["stdin.sh"]);
    let v = c.wait_finished(id, WAIT);
    assert_eq!(v["state"], "completed", "{v}");

    // Slurm's default: every task reads all of srun's stdin.
    let mut out: Vec<String> = c.read_work("all.out").lines().map(String::from).collect();
    out.sort();
    let want: Vec<String> = (0..6).flat_map(|r| [format!("{r}: l1"), format!("{r}: l2")]).collect();
    assert_eq!(out, want);
    assert_eq!(c.read_work("all.code"), "exit=0\n");
    // --input=4: task 4 alone reads it; the others read end of file at once.
    let mut out: Vec<String> = c.read_work("one.out").lines().map(String::from).collect();
    out.sort();
    let mut want: Vec<String> = (0..6).map(|r| format!("{r}: end")).collect();
    want.push("4: only".into());
    want.sort();
    assert_eq!(out, want);
    // Every task on every node got the 3 MB intact.
    let sum = c.read_work("big.sum");
    assert_eq!(sum.len(), 65, "{sum}");
    assert_eq!(
        c.read_work("big.out"),
        sum.repeat(6),
        "exit: {}",
        c.read_work("big.code")
    );
    // Tasks that never read do not hold srun up; --input=none reads nothing.
    assert_eq!(c.read_work("noread.code"), "exit=0\n");
    assert_eq!(c.read_work("none.out"), "");
    assert_eq!(c.read_work("none.code"), "exit=0\n");
    // A task id outside the step and a file name are refused, nothing run.
    assert_eq!(c.read_work("range.code"), "exit=1\n");
    let e = c.read_work("range.err");
    assert!(e.contains("--input=7: the step has 2 task(s)"), "{e}");
    assert_eq!(c.read_work("file.code"), "exit=1\n");
    let e = c.read_work("file.err");
    assert!(e.contains("--input=in.txt") && e.contains("not supported"), "{e}");
}

#[test]
fn a_failing_task_ends_the_step_with_kill_on_bad_exit_and_cancel_kills_every_node() {
    let (c, bin) = three_nodes();
    let srun = bin.join("srun").display().to_string();
    let tag = common::marker(7100);
    // Rank 1 fails at once; the others would sleep for long: -K must end them.
    let script = format!(
        "#!/bin/sh\n#SBATCH -N 3 -n 3\n\
         date +%s.%N > k.start\n\
         {srun} -K sh -c 'if [ $SLURM_PROCID = 1 ]; then exit 3; fi; sleep 60; : {tag}-k' 2> k.err; echo \"exit=$?\" > k.code\n\
         date +%s.%N > k.end\n\
         {srun} sh -c 'echo $$ > pid-$SLURM_PROCID.txt; sleep 600; : {tag}-c'\n"
    );
    std::fs::write(c.work.join("k.sh"), script).unwrap();
    let id = c.submit(&["k.sh"]);
    let code = common::wait_file(&c.work.join("k.code"), WAIT);
    // The script writes k.end just after k.code: wait for it too (read at once it was
    // once still empty).
    let end = common::wait_file(&c.work.join("k.end"), WAIT);
    let took: f64 = end.trim().parse::<f64>().unwrap() - c.read_work("k.start").trim().parse::<f64>().unwrap();
    assert!(took < 20.0, "-K ended the step after {took:.1} s");
    assert_ne!(code, "exit=0\n", "{code}");
    let e = c.read_work("k.err");
    assert!(
        e.contains("n2: task 1: Exited with exit code 3") && e.contains("Terminating StepId="),
        "{e}"
    );
    assert!(
        common::eventually(Duration::from_secs(10), || common::procs_matching(&format!("{tag}-k"))
            .is_empty()),
        "-K left tasks running"
    );

    // The second step runs on all three nodes; cancelling the job ends all of it.
    for r in 0..3 {
        common::wait_file(&c.work.join(format!("pid-{r}.txt")), WAIT);
    }
    let tasks = |t: &str| -> Vec<(i32, String)> {
        common::procs_matching(t)
            .into_iter()
            .filter(|(_, cmd)| cmd.starts_with("sh -c"))
            .collect()
    };
    // Three tasks (srun's own command line names the tag too, and is not one). Eventually:
    // a task's shell forks `sleep` and the child shows the same command line until it
    // execs, so an instant count can see 4 or 5 (a CI run did).
    assert!(
        common::eventually(Duration::from_secs(10), || tasks(&format!("{tag}-c")).len() == 3),
        "{:?}",
        common::procs_matching(&format!("{tag}-c"))
    );
    c.rudel_ok(&["cancel", &id.to_string()]);
    let v = c.wait_finished(id, WAIT);
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(
        common::eventually(WAIT, || common::procs_matching(&format!("{tag}-c")).is_empty()),
        "step tasks outlived the job: {:?}",
        common::procs_matching(&format!("{tag}-c"))
    );
}

#[test]
fn rudel_kv_makes_a_barrier_of_64_tasks_and_a_rendezvous() {
    let mut c = Cluster::up(Opts::default().cpus(16).up_args(&["--node-timeout", "3s"]));
    for n in ["n2", "n3", "n4"] {
        c.start_named_agent(n);
    }
    let bin = c.tmp.path().join("bin");
    c.rudel_ok(&["slurm", "install", &bin.display().to_string()]);
    let srun = bin.join("srun").display().to_string();
    let rudel = env!("CARGO_BIN_EXE_rudel");
    // Every task records when it arrived and when it passed the barrier (its own clock
    // readings), the count it drew, and the address rank 0 published.
    let task = format!(
        "date +%s%N > arrive-$SLURM_PROCID; n=$({rudel} kv incr arrived) || exit 9; \
         if [ \"$n\" = 64 ]; then {rudel} kv put go yes; fi; \
         {rudel} kv wait go > /dev/null || exit 8; date +%s%N > pass-$SLURM_PROCID; echo $n > n-$SLURM_PROCID; \
         if [ $SLURM_PROCID = 0 ]; then {rudel} kv put addr $SLURMD_NODENAME:29500; fi; \
         {rudel} kv wait addr > addr-$SLURM_PROCID"
    );
    let script = format!("#!/bin/sh\n#SBATCH -N 4 -n 64\n{srun} sh -c '{task}'; echo \"exit=$?\" > kv.code\n");
    std::fs::write(c.work.join("kv.sh"), script).unwrap();
    let id = c.submit(&["kv.sh"]);
    let v = c.wait_finished(id, Duration::from_secs(120));
    assert_eq!(v["state"], "completed", "{v}");
    assert_eq!(c.read_work("kv.code"), "exit=0\n");
    let num = |f: String| -> u128 { c.read_work(&f).trim().parse().unwrap() };
    let mut drawn: Vec<u32> = (0..64).map(|r| num(format!("n-{r}")) as u32).collect();
    drawn.sort();
    assert_eq!(drawn, (1..=64).collect::<Vec<_>>(), "incr hands out 1..64 exactly once");
    let last_arrival = (0..64).map(|r| num(format!("arrive-{r}"))).max().unwrap();
    let first_pass = (0..64).map(|r| num(format!("pass-{r}"))).min().unwrap();
    assert!(
        first_pass >= last_arrival,
        "a task passed the barrier before the last one arrived"
    );
    for r in 0..64 {
        assert_eq!(c.read_work(&format!("addr-{r}")), "n1:29500\n", "rank {r}");
    }

    // The store belonged to that job: another job sees none of it; outside a job, refused.
    let probe = format!("#!/bin/sh\n{rudel} kv get go > probe.out 2>&1; echo \"exit=$?\" >> probe.out\n");
    std::fs::write(c.work.join("probe.sh"), probe).unwrap();
    let id = c.submit(&["probe.sh"]);
    c.wait_finished(id, WAIT);
    let p = c.read_work("probe.out");
    assert!(p.contains("no such key") && p.contains("exit=1"), "{p}");
    let out = c.rudel(&["kv", "get", "go"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("inside a running job"), "{}", out.stderr);
}

#[test]
fn srun_outside_a_job_allocates_runs_one_step_and_releases() {
    let (c, bin) = three_nodes();
    let srun = bin.join("srun").display().to_string();
    // Like `srun -N3 -l hostname`, from the user's shell: no job yet.
    let o = common::run_bounded(
        {
            let mut k = std::process::Command::new(&srun);
            k.args([
                "-N",
                "3",
                "-l",
                "sh",
                "-c",
                "echo $SLURMD_NODENAME $SLURM_NTASKS; exit $SLURM_NODEID",
            ])
            .current_dir(&c.work)
            .env("RUDEL_HEAD", &c.addr)
            .env("RUDEL_CREDENTIALS", c.admin_credentials())
            .env_remove("SLURM_JOB_ID");
            k
        },
        WAIT,
    );
    let mut lines: Vec<&str> = o.stdout.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["0: n1 3", "1: n2 3", "2: n3 3"], "{o:?}");
    assert_eq!(o.code, Some(2), "the highest task exit code: {o:?}");
    // Allocation options size srun's own allocation: `-t 5` is the job's time limit.
    let o = common::run_bounded(
        {
            let mut k = std::process::Command::new(&srun);
            k.args(["-t", "5", "-J", "limited", "true"])
                .current_dir(&c.work)
                .env("RUDEL_HEAD", &c.addr)
                .env("RUDEL_CREDENTIALS", c.admin_credentials())
                .env_remove("SLURM_JOB_ID");
            k
        },
        WAIT,
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    let limited = c
        .jobs_all()
        .into_iter()
        .find(|j| j["name"] == "limited")
        .expect("job limited");
    let v = c.show_json(limited["id"].as_u64().unwrap());
    assert_eq!(v["state"], "completed", "{v}");
    assert_eq!(v["time_limit_ms"], 300_000, "{v}");
    // Its job ends as the step did, as in Slurm (FAILED, ExitCode=2): not cancelled.
    let job = c
        .jobs_all()
        .into_iter()
        .find(|j| j["name"] == "sh")
        .unwrap_or_else(|| panic!("no job named sh: {:?}", c.jobs_all()));
    let v = c.wait_finished(job["id"].as_u64().unwrap(), WAIT);
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v.to_string().contains("exit code 2"), "{v}");

    // salloc runs its command once, here (as Slurm's), with the allocation around it; its
    // srun starts steps through the head.
    let salloc = bin.join("salloc").display().to_string();
    let o = common::run_bounded(
        {
            let mut k = std::process::Command::new(&salloc);
            k.args([
                "-N",
                "2",
                "sh",
                "-c",
                &format!("echo $SLURM_JOB_NODELIST; {srun} hostname | wc -l"),
            ])
            .current_dir(&c.work)
            .env("RUDEL_HEAD", &c.addr)
            .env("RUDEL_CREDENTIALS", c.admin_credentials())
            .env_remove("SLURM_JOB_ID");
            k
        },
        WAIT,
    );
    assert_eq!(
        o.stdout.split_whitespace().collect::<Vec<_>>(),
        vec!["n[1-2]", "2"],
        "{o:?}"
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    // Without a command, salloc runs the user's shell here; what it reads (a terminal, or
    // here a script on its stdin) runs in the allocation, srun's stdin forwarded too.
    std::fs::write(
        c.work.join("session.txt"),
        format!(
            "echo job=$SLURM_JOB_ID nodes=$SLURM_JOB_NODELIST\n\
             printf 'in\\n' | {srun} -l -n 2 sh -c 'cat; echo $SLURMD_NODENAME' | sort\n\
             exit 3\n"
        ),
    )
    .unwrap();
    let o = common::run_bounded(
        {
            let mut k = std::process::Command::new("sh");
            k.args(["-c", &format!("{salloc} -N 2 < session.txt")])
                .current_dir(&c.work)
                .env("SHELL", "/bin/sh")
                .env("RUDEL_HEAD", &c.addr)
                .env("RUDEL_CREDENTIALS", c.admin_credentials())
                .env_remove("SLURM_JOB_ID");
            k
        },
        WAIT,
    );
    let out: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(o.code, Some(3), "the shell's exit code: {o:?}");
    let job = out[0]
        .strip_prefix("job=")
        .and_then(|l| l.split_once(' '))
        .map(|(j, _)| j.to_string());
    let job = job.unwrap_or_else(|| panic!("{o:?}"));
    assert_eq!(out[0], format!("job={job} nodes=n[1-2]"), "{o:?}");
    assert_eq!(out[1..5], ["0: in", "0: n1", "1: in", "1: n2"], "{o:?}");
    assert!(
        o.stderr.contains(&format!("salloc: Granted job allocation {job}")),
        "{o:?}"
    );
    assert!(
        o.stderr
            .contains(&format!("salloc: Relinquishing job allocation {job}")),
        "{o:?}"
    );
    let v = c.wait_finished(job.parse().unwrap(), WAIT);
    assert_eq!(v["name"], "interactive", "{v}");
    assert_eq!(v["state"], "failed", "the shell's exit 3 is the job's: {v}");
    // srun's stdin reaches the step's tasks from outside an allocation too (all of them
    // by default, as Slurm's); --input=none gives them none.
    let piped = |input: &str| {
        let mut k = std::process::Command::new("sh");
        k.args(["-c", &format!("printf 'x\\n' | {srun} {input} -N 2 -l cat | sort")])
            .current_dir(&c.work)
            .env("RUDEL_HEAD", &c.addr)
            .env("RUDEL_CREDENTIALS", c.admin_credentials())
            .env_remove("SLURM_JOB_ID");
        common::run_bounded(k, WAIT)
    };
    let o = piped("");
    assert_eq!((o.code, o.stdout.as_str()), (Some(0), "0: x\n1: x\n"), "{o:?}");
    let o = piped("--input=1");
    assert_eq!((o.code, o.stdout.as_str()), (Some(0), "1: x\n"), "{o:?}");
    let o = piped("--input=none");
    assert_eq!((o.code, o.stdout.as_str()), (Some(0), ""), "{o:?}");
    // Its job cancelled under it (scancel), srun says so and ends, not waiting forever
    // for task ends that no longer come.
    let mut k = std::process::Command::new(&srun);
    k.args(["-N", "2", "sleep", "600"])
        .current_dir(&c.work)
        .env("RUDEL_HEAD", &c.addr)
        .env("RUDEL_CREDENTIALS", c.admin_credentials())
        .env_remove("SLURM_JOB_ID")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut waiting = k.spawn().unwrap();
    let mut running = None;
    assert!(common::eventually(WAIT, || {
        running = c
            .jobs_all()
            .into_iter()
            .find(|j| j["name"] == "sleep" && j["state"] == "running");
        running.is_some()
    }));
    let id = running.unwrap()["id"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.rudel_ok(&["cancel", &id.to_string()]);
    assert!(
        common::eventually(WAIT, || matches!(waiting.try_wait(), Ok(Some(_)))),
        "srun still waits after its job was cancelled"
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut waiting.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains(&format!("job {id}'s allocation ended")), "{err}");
    assert_eq!(waiting.wait().unwrap().code(), Some(1));
    // The allocation was a job, and it is over: every node is free again.
    assert!(common::eventually(WAIT, || c
        .nodes_json()
        .iter()
        .all(|n| n["state"] == "idle")));
}

#[test]
fn an_allocation_whose_client_is_killed_is_cancelled_after_its_lease() {
    let (c, bin) = three_nodes();
    let salloc = bin.join("salloc").display().to_string();
    // salloc holds a two-node allocation around a command that records its pid.
    let mut k = std::process::Command::new(&salloc);
    k.args(["-N", "2", "sh", "-c", "echo $$ > held.pid; exec sleep 600"])
        .current_dir(&c.work)
        .env("RUDEL_HEAD", &c.addr)
        .env("RUDEL_CREDENTIALS", c.admin_credentials())
        .env_remove("SLURM_JOB_ID")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut client = k.spawn().unwrap();
    assert!(common::eventually(WAIT, || !c.read_work("held.pid").trim().is_empty()));
    let held: i32 = c.read_work("held.pid").trim().parse().unwrap();
    let job = c
        .jobs_all()
        .into_iter()
        .find(|j| j["name"] == "interactive" && j["state"] == "running")
        .unwrap_or_else(|| panic!("no running interactive job: {:?}", c.jobs_all()));
    let id = job["id"].as_u64().unwrap();
    // SIGKILL: no hand-back. The leader notices the stream gone and cancels after the
    // 2 s lease (plus its 1 s sweep), not before.
    let killed = std::time::Instant::now();
    // SAFETY: plain kill of our own child and of the command it started (pid recorded by it).
    unsafe {
        libc::kill(client.id() as i32, libc::SIGKILL);
        libc::kill(held, libc::SIGKILL);
    }
    let _ = client.wait();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(c.show_json(id)["state"], "running", "cancelled within the lease");
    let v = c.wait_finished(id, WAIT);
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "took {:?}",
        killed.elapsed()
    );
    assert!(common::eventually(WAIT, || c
        .nodes_json()
        .iter()
        .all(|n| n["state"] == "idle")));
    let log = c.logs_tail();
    assert!(log.contains("client (salloc, srun) is gone"), "{log}");
}
