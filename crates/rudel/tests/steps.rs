//! Job steps (issue 11), first part: the agent's job socket. A process inside a running
//! task reaches its agent through `$RUDEL_AGENT_SOCKET` and is told which task it belongs
//! to (learnt from the kernel's peer credentials and the task's marker, not from anything
//! it says); a process outside every task is refused, and so is a step request, which the
//! head cannot serve yet. Ground truth is what the tasks record themselves.
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
    let step = ask_cmd(r#"{"op":"step","argv":["true"]}"#);
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
    // Forwarded to the head, which found the task running on n1 and still refused it.
    assert!(
        r.contains("is running on node n1, but job steps") && r.contains("not supported yet"),
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
