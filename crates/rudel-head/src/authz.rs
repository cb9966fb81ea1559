//! Who may act on which job. Anyone may list jobs (as Slurm's squeue shows all); details
//! (env, script, command), output, cancel, hold, release, update and requeue are for the
//! job's own user and admins. Each refusal names the owner and the caller and is logged
//! on the head, so a user learns why and an admin can see who tried. The table of every
//! RPC is in docs/authorization.md.
use rudel_core::state::State;
use tonic::Status;

use crate::auth::Caller;

/// The user a submit creates its job as: the caller's own, or for an admin the one it
/// names explicitly (`rudel submit --user U`). Whatever the spec claims is ignored.
pub fn submit_user(caller: &Caller, as_user: &str) -> Result<String, Status> {
    if !as_user.is_empty() && as_user != caller.user {
        if !caller.is_admin() {
            tracing::warn!(caller = %caller.name, user = %caller.user, as_user, "refused submit on behalf of another user");
            return Err(Status::permission_denied(format!(
                "only admins may submit as another user; you are {} ({}), not an admin",
                caller.user, caller.role
            )));
        }
        rudel_core::limits::check_name(as_user).map_err(|e| Status::invalid_argument(e.to_string()))?;
        return Ok(as_user.to_string());
    }
    if caller.user.is_empty() {
        tracing::warn!(caller = %caller.name, "refused submit: certificate names no user");
        return Err(crate::identity::no_user(&caller.name, caller.role, "submitting"));
    }
    Ok(caller.user.clone())
}

/// Refuses `verb` unless `caller` may act on a job owned by `owner`.
pub fn check_owner(caller: &Caller, job: u64, owner: &str, verb: &str) -> Result<(), Status> {
    if caller.is_admin() || (!caller.user.is_empty() && caller.user == owner) {
        return Ok(());
    }
    let you = if caller.user.is_empty() {
        format!("{} (a certificate bound to no user)", caller.name)
    } else {
        caller.user.clone()
    };
    tracing::warn!(caller = %caller.name, user = %caller.user, job, owner, "refused {verb}: not the job's user");
    Err(Status::permission_denied(format!(
        "cannot {verb} job {job}: job {job} belongs to {owner}; you are {you}"
    )))
}

/// Checks `caller` owns every live job named by `ids` (a job id or an array task's own
/// id); ids the state does not know are left to the command to report.
pub fn check_jobs(
    state: &State,
    caller: &Caller,
    ids: impl IntoIterator<Item = u64>,
    verb: &str,
) -> Result<(), Status> {
    if caller.is_admin() {
        return Ok(());
    }
    for id in ids {
        if let Some((j, _)) = state.job_of(id) {
            check_owner(caller, id, &j.spec.user, verb)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Transport;
    use rudel_core::security::Role;

    fn caller(user: &str, role: Role) -> Caller {
        Caller {
            role,
            name: format!("{user}@socket"),
            fingerprint: String::new(),
            node_uid: String::new(),
            user: user.into(),
            uid: Some(1000),
            transport: Transport::Socket,
        }
    }

    #[test]
    fn the_head_decides_the_submit_user() {
        assert_eq!(submit_user(&caller("bob", Role::Client), "").unwrap(), "bob");
        assert_eq!(submit_user(&caller("bob", Role::Client), "bob").unwrap(), "bob");
        let e = submit_user(&caller("bob", Role::Client), "alice").unwrap_err();
        assert!(e.message().contains("only admins may submit as another user"), "{e:?}");
        assert_eq!(submit_user(&caller("root", Role::Admin), "alice").unwrap(), "alice");
        let e = submit_user(&caller("", Role::Client), "").unwrap_err();
        assert!(e.message().contains("rudel token create --role client --user"), "{e:?}");
    }

    #[test]
    fn only_owner_and_admins_act_on_a_job() {
        assert!(check_owner(&caller("alice", Role::Client), 41, "alice", "cancel").is_ok());
        assert!(check_owner(&caller("root", Role::Admin), 41, "alice", "cancel").is_ok());
        let e = check_owner(&caller("bob", Role::Client), 41, "alice", "cancel").unwrap_err();
        assert_eq!(
            e.message(),
            "cannot cancel job 41: job 41 belongs to alice; you are bob"
        );
        assert!(check_owner(&caller("bob", Role::Operator), 41, "alice", "cancel").is_err());
        assert!(check_owner(&caller("", Role::Client), 41, "", "cancel").is_err());
    }
}
