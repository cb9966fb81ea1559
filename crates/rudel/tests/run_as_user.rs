//! Jobs run as their user (issue 12): an agent running as root starts each task as the
//! job's Unix user, with that user's groups and login variables, opens its output files
//! as that user, refuses root's jobs unless allowed, and names a user missing on the node.
//! The test creates its users (`useradd`; CI runs as root).
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const USER: &str = "rudel-spa";
const GROUP: &str = "rudel-spg";

/// (uid, gid, supplementary gid of GROUP), creating the user and group if needed.
fn ensure_user() -> (u32, u32, u32) {
    let run = |args: &[&str]| {
        let o = Command::new(args[0]).args(&args[1..]).output().expect("run user tool");
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    // groupadd -f: success if it exists; useradd exits 9 if the user exists.
    let (c, e) = run(&["groupadd", "-f", GROUP]);
    assert_eq!(c, Some(0), "groupadd: {e}");
    let (c, e) = run(&["useradd", "-M", "-s", "/bin/sh", USER]);
    assert!(c == Some(0) || c == Some(9), "useradd: {e}");
    let (c, e) = run(&["usermod", "-a", "-G", GROUP, USER]);
    assert_eq!(c, Some(0), "usermod: {e}");
    let id = |flag: &str, who: &str| -> u32 {
        let o = Command::new("id").args([flag, who]).output().expect("id");
        String::from_utf8_lossy(&o.stdout).trim().parse().expect("numeric id")
    };
    let sgid = {
        let o = Command::new("getent").args(["group", GROUP]).output().expect("getent");
        let line = String::from_utf8_lossy(&o.stdout).into_owned();
        line.split(':').nth(2).and_then(|g| g.parse().ok()).expect("group gid")
    };
    (id("-u", USER), id("-g", USER), sgid)
}

fn chown_r(p: &Path, uid: u32, gid: u32) {
    let st = Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}"), &p.display().to_string()])
        .status()
        .expect("chown");
    assert!(st.success());
}

/// A directory owned by the user (mode 0700), under a cluster directory the user may
/// traverse.
fn user_home(cl: &Cluster, uid: u32, gid: u32) -> PathBuf {
    for d in [cl.tmp.path(), cl.data.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    }
    let home = cl.tmp.path().join("spa");
    std::fs::create_dir_all(&home).expect("mkdir");
    chown_r(&home, uid, gid);
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    home
}

/// `rudel ARGS` run by the user (its uid, gid and $USER), in `dir`, through the head's
/// well-known Unix socket: the head knows the user from the kernel (SO_PEERCRED).
fn rudel_as(cl: &Cluster, uid: u32, gid: u32, dir: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new(RUDEL);
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", dir)
        .env("USER", USER)
        .env("RUDEL_HEAD", &cl.addr)
        .uid(uid)
        .gid(gid); // std drops root's supplementary groups when it changes the uid
    run_bounded(cmd, CLI_TIMEOUT)
}

fn submit_as(cl: &Cluster, uid: u32, gid: u32, dir: &Path, args: &[&str]) -> u64 {
    let mut a = vec!["submit", "--json"];
    a.extend_from_slice(args);
    let o = rudel_as(cl, uid, gid, dir, &a);
    assert!(o.ok(), "submit as {USER}: {o}");
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o}"));
    v["id"].as_u64().expect("id")
}

fn task_reason(v: &Value) -> String {
    v["task_details"][0]["reason"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_job_runs_as_its_user_with_groups_files_and_login() {
    let (uid, gid, sgid) = ensure_user();
    let cl = Cluster::up(Opts::default());
    let home = user_home(&cl, uid, gid);
    assert_eq!(
        cl.nodes_json()[0]["run_as"],
        "job-user",
        "an agent running as root says so"
    );
    let out = home.join("out.txt");
    let bg = home.join("bg.pid");
    let script = format!(
        "id -u; id -G; echo \"$HOME $USER\"; echo \"$SLURM_TASK_PID $$\"; \
         setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > {}",
        bg.display()
    );
    let o = out.display().to_string();
    let id = submit_as(
        &cl,
        uid,
        gid,
        &home,
        &["--export=NONE", "-o", &o, "--", "sh", "-c", &script],
    );
    let v = cl.wait_finished(id, Duration::from_secs(60));
    assert_eq!(v["state"], "completed", "{v:#}\n{}", cl.logs_tail());
    let text = std::fs::read_to_string(&out).expect("output file");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], uid.to_string(), "{text}");
    let groups: Vec<u32> = lines[1].split_whitespace().filter_map(|g| g.parse().ok()).collect();
    assert!(
        groups.contains(&gid) && groups.contains(&sgid),
        "groups {groups:?} ({text})"
    );
    assert!(!groups.contains(&0), "root's group leaked: {groups:?}");
    assert_eq!(
        lines[2],
        format!("/home/{USER} {USER}"),
        "login env from the passwd entry: {text}"
    );
    let pids: Vec<&str> = lines[3].split(' ').collect();
    assert_eq!(pids[0], pids[1], "SLURM_TASK_PID is the task's pid: {text}");
    let meta = std::fs::metadata(&out).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), (uid, gid), "output file created by the user");
    // The daemonized process died with the job.
    let pid: i32 = std::fs::read_to_string(&bg)
        .expect("bg pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(
        eventually(Duration::from_secs(10), || proc_stat(pid).is_none_or(|(s, _)| s == 'Z')),
        "setsid sleep {pid} outlived the job"
    );
}

#[test]
fn rudel_run_by_a_user_streams_its_output_from_the_agents_directory() {
    // `rudel run` output goes to a file in the agent's own directory, where the user may
    // not create files: the agent creates it and hands it over (it failed with
    // "Permission denied" before).
    let (uid, gid, _) = ensure_user();
    let cl = Cluster::up(Opts::default());
    let home = user_home(&cl, uid, gid);
    let o = rudel_as(
        &cl,
        uid,
        gid,
        &home,
        &["run", "--", "sh", "-c", "id -un; echo to-err >&2; exit 3"],
    );
    assert_eq!(o.code, Some(3), "{o}");
    assert_eq!(o.stdout.trim(), USER, "{o}");
    assert!(o.stderr.contains("to-err"), "{o}");
}

#[test]
fn output_where_the_user_cannot_write_fails_cleanly() {
    let (uid, gid, _) = ensure_user();
    let cl = Cluster::up(Opts::default());
    let home = user_home(&cl, uid, gid);
    let id = submit_as(&cl, uid, gid, &home, &["-o", "/root/rudel-spa-x", "--", "true"]);
    let v = cl.wait_finished(id, Duration::from_secs(60));
    assert_eq!(v["state"], "failed", "{v:#}");
    let reason = task_reason(&v);
    assert!(
        reason.contains("cannot open output file '/root/rudel-spa-x'") && reason.contains("Permission denied"),
        "{v:#}"
    );
    assert!(!Path::new("/root/rudel-spa-x").exists());
}

#[test]
fn root_jobs_are_refused_without_allow_root_jobs_and_unknown_users_named() {
    let mut cl = Cluster::head_only(Opts {
        root_jobs: false,
        ..Opts::default()
    });
    cl.start_agent();
    let id = cl.submit(&["--", "true"]);
    let v = cl.wait_finished(id, Duration::from_secs(60));
    assert_eq!(v["state"], "failed", "{v:#}");
    assert!(task_reason(&v).contains("jobs as root are refused on node n1"), "{v:#}");
    // A user the node does not know (an admin submits on its behalf).
    let cmd = cl.command_in(
        &cl.work,
        &["submit", "--json", "--user", "rudel-nosuch-user", "--", "true"],
    );
    let o = run_bounded(cmd, CLI_TIMEOUT);
    assert!(o.ok(), "{o}");
    let v: Value = serde_json::from_str(o.stdout.trim()).expect("json");
    let v = cl.wait_finished(v["id"].as_u64().expect("id"), Duration::from_secs(60));
    assert_eq!(v["state"], "failed", "{v:#}");
    assert!(
        task_reason(&v).contains("user rudel-nosuch-user does not exist on node n1"),
        "{v:#}"
    );
}
