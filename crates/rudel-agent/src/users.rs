//! Whom a task runs as. An agent running as root starts each task as the job's user,
//! looked up on this node (`getpwnam_r` + `getgrouplist`, cached briefly so a burst of
//! tasks costs one lookup); any other agent runs everything as itself (single-user mode).
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::exec::Creds;
use crate::login_env::Login;

/// How long a lookup is reused: short, so a user added or removed on the node is seen
/// within seconds, long enough that a 10,000-task array looks its user up a handful of times.
const CACHE_TTL: Duration = Duration::from_secs(10);

/// Why a task cannot run as its job's user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user {user} does not exist on node {node}")]
    Unknown { user: String, node: String },
    #[error("jobs as root are refused on node {node} (start the agent with --allow-root-jobs to allow them)")]
    RootRefused { node: String },
    #[error("the job has no user")]
    NoUser,
    #[error("cannot look up user {user}: {reason}")]
    Lookup { user: String, reason: String },
}

/// A resolved user: passwd entry and groups.
#[derive(Debug, Clone)]
pub struct User {
    pub login: Login,
    pub creds: Creds,
}

/// The agent's mode: who tasks run as.
#[derive(Debug)]
pub enum RunAs {
    /// Running as root: each task as its job's user.
    JobUser {
        allow_root: bool,
        cache: Mutex<HashMap<String, (Instant, Option<User>)>>,
    },
    /// Not root: every task as the agent's own user.
    AgentUser { name: String },
}

impl RunAs {
    /// From the agent's effective uid.
    pub fn detect(allow_root: bool) -> RunAs {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            RunAs::JobUser {
                allow_root,
                cache: Mutex::default(),
            }
        } else {
            RunAs::AgentUser {
                name: crate::login_env::current().map_or_else(|| "?".into(), |l| l.name.clone()),
            }
        }
    }

    /// What `rudel nodes` shows: `job-user` or `agent-user:NAME`.
    pub fn describe(&self) -> String {
        match self {
            RunAs::JobUser { .. } => "job-user".into(),
            RunAs::AgentUser { name } => format!("agent-user:{name}"),
        }
    }

    /// The user a task of `job_user` runs as on node `node`; `None` = the agent's own
    /// user (single-user mode, and launches from heads that do not send the user).
    pub fn resolve(&self, job_user: &str, node: &str) -> Result<Option<User>, UserError> {
        let RunAs::JobUser { allow_root, cache } = self else {
            return Ok(None);
        };
        if job_user.is_empty() {
            return Err(UserError::NoUser);
        }
        let found = {
            let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
            match c.get(job_user) {
                Some((at, u)) if at.elapsed() < CACHE_TTL => u.clone(),
                _ => {
                    let u = lookup(job_user)?;
                    c.insert(job_user.to_string(), (Instant::now(), u.clone()));
                    u
                }
            }
        };
        let user = found.ok_or_else(|| UserError::Unknown {
            user: job_user.to_string(),
            node: node.to_string(),
        })?;
        if user.creds.uid == 0 && !allow_root {
            return Err(UserError::RootRefused { node: node.to_string() });
        }
        Ok(Some(user))
    }
}

fn text(p: *const libc::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: a NUL-terminated string inside the passwd buffer, copied out at once.
        unsafe { CStr::from_ptr(p).to_string_lossy().into_owned() }
    }
}

/// The passwd entry and groups of `name`; `Ok(None)` if there is no such user.
pub fn lookup(name: &str) -> Result<Option<User>, UserError> {
    let err = |reason: String| UserError::Lookup {
        user: name.to_string(),
        reason,
    };
    let cname = CString::new(name).map_err(|_| err("the name contains a NUL byte".into()))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getpwnam_r writes only into `pw` and `buf`, which outlive the copies made.
    let login = unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let r = libc::getpwnam_r(cname.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out);
        if r != 0 {
            return Err(err(crate::exec::errno_text(r)));
        }
        if out.is_null() {
            return Ok(None);
        }
        Login {
            uid: pw.pw_uid,
            gid: pw.pw_gid,
            name: text(pw.pw_name),
            home: text(pw.pw_dir),
            shell: text(pw.pw_shell),
        }
    };
    let groups = group_list(&cname, login.gid);
    Ok(Some(User {
        creds: Creds {
            uid: login.uid,
            gid: login.gid,
            groups,
        },
        login,
    }))
}

/// `getgrouplist`: the user's groups, the primary one included.
fn group_list(name: &CStr, gid: u32) -> Vec<libc::gid_t> {
    let mut n: libc::c_int = 32;
    loop {
        let mut v = vec![0 as libc::gid_t; n as usize];
        let mut got = n;
        // SAFETY: `v` holds `got` entries; getgrouplist updates `got`.
        let r = unsafe { libc::getgrouplist(name.as_ptr(), gid, v.as_mut_ptr(), &mut got) };
        if r >= 0 {
            v.truncate(got.max(0) as usize);
            return v;
        }
        if got <= n || n > 65536 {
            // Cannot grow further: the primary group alone.
            return vec![gid];
        }
        n = got;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_exists_and_unknown_users_do_not() {
        let root = lookup("root").expect("lookup").expect("root exists");
        assert_eq!((root.creds.uid, root.creds.gid), (0, 0));
        assert!(root.creds.groups.contains(&0));
        assert!(lookup("rudel-no-such-user-x").expect("lookup").is_none());
    }

    #[test]
    fn job_user_mode_refuses_root_unless_allowed_and_names_the_node() {
        let strict = RunAs::JobUser {
            allow_root: false,
            cache: Mutex::default(),
        };
        assert_eq!(
            strict.resolve("root", "n1").unwrap_err(),
            UserError::RootRefused { node: "n1".into() }
        );
        assert_eq!(
            strict.resolve("rudel-no-such-user-x", "n1").unwrap_err().to_string(),
            "user rudel-no-such-user-x does not exist on node n1"
        );
        let lax = RunAs::JobUser {
            allow_root: true,
            cache: Mutex::default(),
        };
        assert_eq!(
            lax.resolve("root", "n1").expect("allowed").expect("a user").creds.uid,
            0
        );
        let single = RunAs::AgentUser { name: "ada".into() };
        assert!(single.resolve("anyone", "n1").expect("single-user").is_none());
        assert_eq!(single.describe(), "agent-user:ada");
    }
}
