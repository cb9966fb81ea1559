//! Turning a `Launch` from the head into an [`ExecSpec`]: script files, environment,
//! output targets.
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rudel_core::TaskKey;
use rudel_proto::v1 as pb;

use crate::exec::{Creds, ExecSpec, StderrTarget};
use crate::users::RunAs;

/// PATH given to tasks whose environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Why a launch could not be prepared (the task is then reported as failed to start).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("launch without a task reference")]
    NoTask,
    #[error("launch of {0} has neither a command nor a script")]
    NoCommand(TaskKey),
    #[error("cannot write {path}: {source}")]
    Script { path: String, source: std::io::Error },
    #[error(transparent)]
    Output(#[from] crate::output::BadAgentPath),
    #[error(transparent)]
    User(#[from] crate::users::UserError),
    #[error(transparent)]
    Hostfile(#[from] crate::hostfile::HostfileError),
}

/// Moves output paths under [`crate::output::AGENT_DIR_PREFIX`] into the agent's data
/// directory (`rudel run`); other paths stay where the job asked.
pub fn place_outputs(spec: &mut ExecSpec, data_dir: &Path) -> Result<(), LaunchError> {
    if let Some(p) = spec.stdout.take() {
        let placed = crate::output::place(p.clone(), data_dir)?;
        if placed != p {
            give_to_user(&placed, spec.run_as.as_ref())?;
        }
        spec.stdout = Some(placed);
    }
    if let StderrTarget::File(p) = &mut spec.stderr {
        let placed = crate::output::place(p.clone(), data_dir)?;
        if placed != *p {
            give_to_user(&placed, spec.run_as.as_ref())?;
        }
        *p = placed;
    }
    Ok(())
}

/// A `rudel run` output file in the agent's directory, which the job's user cannot create
/// files in: made here (0600) and handed to the user, who then opens it as usual.
pub fn give_to_user(path: &Path, owner: Option<&Creds>) -> Result<(), LaunchError> {
    let Some(c) = owner else {
        return Ok(());
    };
    let err = |source| LaunchError::Script {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    std::os::unix::fs::fchown(&f, Some(c.uid), Some(c.gid)).map_err(err)
}

/// Remembers where a task's output goes, so a remote follower can read it by task key.
pub fn register_outputs(spec: &ExecSpec, files: &crate::output::OutputFiles) {
    use crate::output::Stream;
    let abs = |p: &PathBuf| spec.cwd.join(p);
    if let Some(p) = &spec.stdout {
        files.register(spec.key, Stream::Stdout, abs(p));
    }
    if let StderrTarget::File(p) = &spec.stderr {
        files.register(spec.key, Stream::Stderr, abs(p));
    }
}

/// Writes a job's script once into `scripts_dir` (a copy taken at submit time, like
/// sbatch) and returns the argv that runs it. A task run as its user gets a copy only
/// that user can read (0700, owned by the user): other users' jobs may hold secrets.
fn script_argv(scripts_dir: &Path, job: u64, script: &str, owner: Option<&Creds>) -> Result<Vec<String>, LaunchError> {
    let path = scripts_dir.join(format!("job-{job}.sh"));
    let err = |source| LaunchError::Script {
        path: path.display().to_string(),
        source,
    };
    if !path.exists() {
        std::fs::create_dir_all(scripts_dir).map_err(err)?;
        if owner.is_some() {
            // Users must reach their own script, but not list the others.
            std::fs::set_permissions(scripts_dir, std::fs::Permissions::from_mode(0o711)).map_err(err)?;
        }
        let tmp = scripts_dir.join(format!(".job-{job}.sh.{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if owner.is_some() { 0o700 } else { 0o755 })
            .open(&tmp)
            .map_err(err)?;
        if let Some(c) = owner {
            std::os::unix::fs::fchown(&f, Some(c.uid), Some(c.gid)).map_err(err)?;
        }
        f.write_all(script.as_bytes()).map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(err)?;
    }
    let p = path.display().to_string();
    Ok(if script.starts_with("#!") {
        vec![p]
    } else {
        vec!["/bin/sh".into(), p]
    })
}

/// Builds what the executor needs from one launched task, run as the user `run_as`
/// decides on node `node`.
pub fn exec_spec(t: pb::LaunchTask, scripts_dir: &Path, run_as: &RunAs, node: &str) -> Result<ExecSpec, LaunchError> {
    let r = t.task.ok_or(LaunchError::NoTask)?;
    let key = TaskKey {
        job: r.job_id,
        index: r.index,
    };
    let user = run_as.resolve(&t.user, node)?;
    let creds = user.as_ref().map(|u| &u.creds);
    let argv = if !t.script.is_empty() {
        // For script jobs, argv holds the script's arguments.
        let mut a = script_argv(scripts_dir, key.job, &t.script, creds)?;
        a.extend(t.argv);
        a
    } else if !t.argv.is_empty() {
        t.argv
    } else {
        return Err(LaunchError::NoCommand(key));
    };
    let mut env: Vec<(String, String)> = t.env.into_iter().collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    crate::hostfile::prepare(scripts_dir, key.job, &mut env)?;
    match &user {
        Some(u) => crate::login_env::fill(&mut env, &u.login),
        None => {
            if let Some(login) = crate::login_env::current() {
                crate::login_env::fill(&mut env, login);
            }
        }
    }
    env.sort();
    let stdout = (!t.stdout_path.is_empty()).then(|| PathBuf::from(&t.stdout_path));
    let stderr = if t.stderr_discard {
        StderrTarget::Discard
    } else if t.stderr_path.is_empty() {
        StderrTarget::SameAsStdout
    } else {
        StderrTarget::File(PathBuf::from(&t.stderr_path))
    };
    Ok(ExecSpec {
        key,
        attempt: r.attempt,
        argv,
        cwd: PathBuf::from(if t.chdir.is_empty() { "/" } else { t.chdir.as_str() }),
        env,
        stdout,
        stderr,
        cores: t.cores,
        mem_bytes: t.mem_bytes,
        time_limit: (t.time_limit_ms > 0).then(|| Duration::from_millis(t.time_limit_ms)),
        warn: (t.warn_signal > 0).then(|| (t.warn_signal, Duration::from_millis(t.warn_before_ms))),
        append_output: t.append_output,
        stdin: None,
        run_as: user.map(|u| u.creds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single() -> RunAs {
        RunAs::AgentUser { name: "ada".into() }
    }

    #[test]
    fn script_is_written_once_and_run_by_its_interpreter() {
        let d = tempfile::tempdir().unwrap();
        let t = pb::LaunchTask {
            task: Some(pb::TaskRef {
                job_id: 7,
                index: 0,
                attempt: 1,
            }),
            script: "#!/bin/bash\necho hi\n".into(),
            stdout_path: "/tmp/x.out".into(),
            ..Default::default()
        };
        let spec = exec_spec(t.clone(), d.path(), &single(), "n1").unwrap();
        assert_eq!(spec.argv, vec![d.path().join("job-7.sh").display().to_string()]);
        assert_eq!(
            std::fs::read_to_string(d.path().join("job-7.sh")).unwrap(),
            "#!/bin/bash\necho hi\n"
        );
        assert!(matches!(spec.stderr, StderrTarget::SameAsStdout));
        assert!(spec.env.iter().any(|(k, _)| k == "PATH"));
        let plain = pb::LaunchTask {
            script: "echo no shebang\n".into(),
            task: Some(pb::TaskRef {
                job_id: 8,
                index: 0,
                attempt: 1,
            }),
            ..Default::default()
        };
        assert_eq!(exec_spec(plain, d.path(), &single(), "n1").unwrap().argv[0], "/bin/sh");
    }

    #[test]
    fn launch_without_command_is_an_error() {
        let t = pb::LaunchTask {
            task: Some(pb::TaskRef {
                job_id: 1,
                index: 0,
                attempt: 1,
            }),
            ..Default::default()
        };
        assert!(matches!(
            exec_spec(t, Path::new("/tmp"), &single(), "n1"),
            Err(LaunchError::NoCommand(_))
        ));
    }
}
