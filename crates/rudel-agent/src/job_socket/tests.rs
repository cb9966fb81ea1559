use super::*;
use std::collections::HashMap;

/// Live tasks: (job, index, attempt) -> uid.
struct Table(HashMap<(u64, u32, u32), u32>);

impl TaskTable for Table {
    fn task_uid(&self, key: TaskKey, attempt: u32) -> Option<u32> {
        self.0.get(&(key.job, key.index, attempt)).copied()
    }
}

fn table() -> Table {
    Table(HashMap::from([((7, 0, 1), 1000)]))
}

/// A fake /proc with one process whose environment is `env`.
fn fake_proc(pid: u32, env: &[&str]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(pid.to_string());
    std::fs::create_dir(&p).unwrap();
    let mut block = Vec::new();
    for v in env {
        block.extend_from_slice(v.as_bytes());
        block.push(0);
    }
    std::fs::write(p.join("environ"), block).unwrap();
    d
}

#[test]
fn markers_parse_only_for_this_agent() {
    let k = TaskKey { job: 7, index: 0 };
    assert_eq!(parse_marker("7.0.1@abc", "abc"), Some((k, 1)));
    assert_eq!(parse_marker("7.0.1@abc", "xyz"), None);
    assert_eq!(parse_marker("7.0.1", "abc"), None);
    assert_eq!(parse_marker("7.0@abc", "abc"), None);
    assert_eq!(parse_marker("7.0.1.2@abc", "abc"), None);
    assert_eq!(parse_marker("x.0.1@abc", "abc"), None);
}

#[test]
fn a_task_process_of_the_right_user_is_identified() {
    let d = fake_proc(42, &["PATH=/bin", "RUDEL_TASK=7.0.1@me", "X=1"]);
    let c = identify(42, 1000, "me", d.path(), &table()).unwrap();
    assert_eq!(
        c,
        Caller {
            pid: 42,
            uid: 1000,
            key: TaskKey { job: 7, index: 0 },
            attempt: 1,
            step_task: false,
        }
    );
}

#[test]
fn a_task_of_a_step_is_identified_as_its_job() {
    let live = LiveTasks::default();
    live.insert_step(3, 7, 1000);
    let marker = format!("RUDEL_TASK={}.3.1@me", crate::steps::STEP_JOB);
    let d = fake_proc(42, &[&marker]);
    let c = identify(42, 1000, "me", d.path(), &live).unwrap();
    assert_eq!((c.key.job, c.step_task), (7, true));
    assert!(matches!(
        identify(42, 1001, "me", d.path(), &live),
        Err(CallerError::WrongUser { .. })
    ));
    live.remove_step(3);
    assert!(matches!(
        identify(42, 1000, "me", d.path(), &live),
        Err(CallerError::NotRunning(_))
    ));
}

#[test]
fn callers_outside_live_tasks_are_refused() {
    let t = table();
    let none = fake_proc(42, &["PATH=/bin"]);
    assert_eq!(
        identify(42, 1000, "me", none.path(), &t),
        Err(CallerError::NotATask(42))
    );
    // A pid that vanished reads as no marker.
    assert_eq!(
        identify(43, 1000, "me", none.path(), &t),
        Err(CallerError::NotATask(43))
    );
    let other = fake_proc(42, &["RUDEL_TASK=7.0.1@them"]);
    assert!(matches!(
        identify(42, 1000, "me", other.path(), &t),
        Err(CallerError::OtherAgent { .. })
    ));
    let ended = fake_proc(42, &["RUDEL_TASK=7.0.2@me"]);
    assert!(matches!(
        identify(42, 1000, "me", ended.path(), &t),
        Err(CallerError::NotRunning(_))
    ));
}

#[test]
fn another_user_posing_with_a_marker_is_refused() {
    let d = fake_proc(42, &["RUDEL_TASK=7.0.1@me"]);
    let e = identify(42, 1001, "me", d.path(), &table()).unwrap_err();
    assert_eq!(
        e,
        CallerError::WrongUser {
            caller: 1001,
            task: "7.0 (attempt 1)".into(),
            owner: 1000
        }
    );
    assert!(e.to_string().contains("uid 1001 may not act for task 7.0"));
}

#[test]
fn requests_round_trip_as_json_lines() {
    let r: Request = serde_json::from_str(r#"{"op":"whoami"}"#).unwrap();
    assert_eq!(r, Request::Whoami);
    let r: Request = serde_json::from_str(r#"{"op":"run","argv":["true"],"ntasks":2}"#).unwrap();
    assert_eq!(
        r,
        Request::Run(RunStep {
            argv: vec!["true".into()],
            ntasks: 2,
            ..Default::default()
        })
    );
    let c: Control = serde_json::from_str(r#"{"op":"kill"}"#).unwrap();
    assert_eq!(c, Control::Kill);
    assert!(serde_json::from_str::<Request>(r#"{"op":"rm_rf"}"#).is_err());
}

/// Over a real socket, against a fake /proc holding this test process's pid: who connects
/// is learnt from SO_PEERCRED, not from anything the client says.
async fn ask(env: &[&str], table: Table, request: &str) -> serde_json::Value {
    let me = std::process::id();
    let proc_root = fake_proc(me, env);
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(dir.path());
    let listener = bind(&path).unwrap();
    let root = proc_root.path().to_path_buf();
    // A stand-in head that refuses every step, naming the task it was asked for.
    let (to_head, mut from_agent) = tokio::sync::mpsc::unbounded_channel::<Forward>();
    tokio::spawn(async move {
        while let Some(f) = from_agent.recv().await {
            if let Forward::Run { caller, step, events } = f {
                let error = format!("head: no step {:?} for job {}", step.argv, caller.key.job);
                let _ = events.send(StepEvent::Refused { error });
            }
        }
    });
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        handle(s, "me", &table, &root, &to_head).await.unwrap();
    });
    let mut c = UnixStream::connect(&path).await.unwrap();
    c.write_all(request.as_bytes()).await.unwrap();
    // Half-close: a request without its newline must be refused at EOF, not by the timeout.
    c.shutdown().await.unwrap();
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).await.unwrap();
    server.await.unwrap();
    serde_json::from_str(line.trim_end()).unwrap()
}

#[tokio::test]
async fn whoami_over_the_socket_names_the_callers_task() {
    // SAFETY: plain syscall.
    let uid = unsafe { libc::getuid() };
    let t = Table(HashMap::from([((9, 2, 0), uid)]));
    let r = ask(&["RUDEL_TASK=9.2.0@me"], t, "{\"op\":\"whoami\"}\n").await;
    assert_eq!(r, serde_json::json!({"job": 9, "index": 2, "attempt": 0}));
}

#[tokio::test]
async fn refusals_over_the_socket_say_why() {
    // SAFETY: plain syscall.
    let uid = unsafe { libc::getuid() };
    let err = |r: serde_json::Value| r["error"].as_str().unwrap_or_default().to_string();
    let r = ask(&["PATH=/bin"], Table(HashMap::new()), "{\"op\":\"whoami\"}\n").await;
    assert!(err(r).contains("not part of a rudel task"));
    let t = || Table(HashMap::from([((9, 2, 0), uid)]));
    let r = ask(&["RUDEL_TASK=9.2.0@me"], t(), "{\"op\":\"run\",\"argv\":[\"true\"]}\n").await;
    assert_eq!(r["event"], "refused");
    assert_eq!(err(r), "head: no step [\"true\"] for job 9");
    let r = ask(&["RUDEL_TASK=9.2.0@me"], t(), "garbage\n").await;
    assert!(err(r).starts_with("bad request"));
    let r = ask(&["RUDEL_TASK=9.2.0@me"], t(), "{\"op\":\"whoami\"}").await;
    assert!(err(r).contains("single line"));
}

#[test]
fn the_socket_is_connectable_by_everyone() {
    use std::os::unix::fs::PermissionsExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(dir.path());
    std::fs::write(&path, b"stale").unwrap();
    let _l = rt.block_on(async { bind(&path) }).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o666);
}
