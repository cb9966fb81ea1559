//! The login variables a task finds set even when its environment was not exported
//! (`--export=NONE` or a list of names): Slurm 22.05 then gives the job the user's login
//! environment (recorded in crates/rudel/tests/slurm_corpus: `HOME`, `SHELL`, `USER`), and
//! scripts that `cd $HOME` or source `~/.bashrc` would otherwise fail. Plus
//! `SLURM_JOB_UID`/`SLURM_JOB_GID`, which only the node knows: the ids the task runs as.
use std::sync::OnceLock;

/// The user tasks run as (the agent's own user until tasks run as their submitter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: String,
    pub shell: String,
}

/// This process's user, from the password database (once: it does not change).
pub fn current() -> Option<&'static Login> {
    static LOGIN: OnceLock<Option<Login>> = OnceLock::new();
    LOGIN.get_or_init(lookup).as_ref()
}

fn lookup() -> Option<Login> {
    // SAFETY: geteuid/getegid have no preconditions; getpwuid_r writes only into `pw` and
    // `buf`, which we own and size, and the strings are copied out before they go.
    unsafe {
        let uid = libc::geteuid();
        let gid = libc::getegid();
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) != 0 || out.is_null() {
            return None;
        }
        let text = |p: *const libc::c_char| {
            if p.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Some(Login {
            uid,
            gid,
            name: text(pw.pw_name),
            home: text(pw.pw_dir),
            shell: text(pw.pw_shell),
        })
    }
}

/// Adds the job's uid and gid and, when the environment was not exported (no `HOME`:
/// `--export=NONE` or a list without it) or `--export` was given at all
/// (`SLURM_GET_USER_ENV`, as sbatch sets it), the login variables it lacks. An environment
/// exported by default is left as it is: Slurm passes it unchanged (a shell without `USER`
/// gives a job without `USER`, recorded).
pub fn fill(env: &mut Vec<(String, String)>, login: &Login) {
    env.retain(|(k, _)| k != "SLURM_JOB_UID" && k != "SLURM_JOB_GID");
    env.push(("SLURM_JOB_UID".into(), login.uid.to_string()));
    env.push(("SLURM_JOB_GID".into(), login.gid.to_string()));
    let merge = env.iter().any(|(k, _)| k == "SLURM_GET_USER_ENV");
    if !merge && env.iter().any(|(k, _)| k == "HOME") {
        return;
    }
    let mut set_if_absent = |k: &str, v: &str| {
        if !v.is_empty() && !env.iter().any(|(n, _)| n == k) {
            env.push((k.to_string(), v.to_string()));
        }
    };
    set_if_absent("HOME", &login.home);
    set_if_absent("SHELL", &login.shell);
    set_if_absent("USER", &login.name);
    set_if_absent("LOGNAME", &login.name);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> Login {
        Login {
            uid: 1000,
            gid: 100,
            name: "ada".into(),
            home: "/home/ada".into(),
            shell: "/bin/bash".into(),
        }
    }

    #[test]
    fn an_empty_environment_gets_the_login_variables() {
        let mut env = Vec::new();
        fill(&mut env, &login());
        env.sort();
        let want: Vec<(String, String)> = [
            ("HOME", "/home/ada"),
            ("LOGNAME", "ada"),
            ("SHELL", "/bin/bash"),
            ("SLURM_JOB_GID", "100"),
            ("SLURM_JOB_UID", "1000"),
            ("USER", "ada"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        assert_eq!(env, want);
    }

    #[test]
    fn exported_values_win_but_not_over_the_uid() {
        let mut env = vec![
            ("HOME".to_string(), "/scratch/ada".to_string()),
            ("SLURM_JOB_UID".to_string(), "0".to_string()),
        ];
        fill(&mut env, &login());
        let get = |k: &str| {
            env.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("HOME"), ["/scratch/ada"]);
        assert_eq!(get("SLURM_JOB_UID"), ["1000"]);
    }

    #[test]
    fn any_export_merges_the_missing_login_variables() {
        let exported = |merge: bool| {
            let mut env = vec![("HOME".to_string(), "/scratch/ada".to_string())];
            if merge {
                env.push(("SLURM_GET_USER_ENV".to_string(), "1".to_string()));
            }
            fill(&mut env, &login());
            env.iter().any(|(k, v)| k == "USER" && v == "ada")
        };
        assert!(
            !exported(false),
            "the default export passes the shell's environment unchanged"
        );
        assert!(exported(true), "--export=ALL,X merges the login environment (Slurm)");
    }

    #[test]
    fn this_process_has_a_login() {
        let l = current().expect("the test runs as a user in the password database");
        assert!(!l.name.is_empty() && l.home.starts_with('/'), "{l:?}");
    }
}
