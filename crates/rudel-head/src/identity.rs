//! Who a caller is, as the head decides it: the kernel's peer credentials on the local
//! socket (uid → user name through NSS on the head), the user a client certificate was
//! issued for on TLS. The client never claims it: a `JobSpec.user` sent by a client is
//! overwritten with the caller's user, so nobody can pose as another user.
use rudel_core::security::Role;
use tonic::Status;

/// How the caller reached the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The Unix domain socket (identity from SO_PEERCRED).
    Socket,
    /// Mutual TLS (identity from the client certificate).
    Tls,
    /// A follower head's socket, passed on by that head (identity from its peer
    /// credentials, vouched for by the head's certificate; see `socket_forward`).
    Forwarded,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Socket => "socket",
            Transport::Tls => "tls",
            Transport::Forwarded => "socket via a follower head",
        }
    }
}

/// The name of Unix user `uid` on this machine (getpwuid_r), if NSS knows it.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: `pw` and `buf` are owned here and outlive the call; getpwuid_r writes only
    // into them and sets `out` to `&mut pw` or null.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) != 0 || out.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(pw.pw_name).to_string_lossy().into_owned();
        (!name.is_empty()).then_some(name)
    }
}

/// The Unix user this head runs as: the owner of the cluster-bootstrap admin credentials
/// (an admin certificate that names no user acts as this user).
pub fn head_user() -> String {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    user_name(uid).unwrap_or_else(|| uid.to_string())
}

/// The role of a socket caller: root, and the user the head runs as (who holds the
/// bootstrap admin credentials anyway), are admins; everyone else is a client.
pub fn socket_role(uid: u32) -> Role {
    // SAFETY: geteuid has no preconditions.
    if uid == 0 || uid == unsafe { libc::geteuid() } {
        Role::Admin
    } else {
        Role::Client
    }
}

/// The user a TLS caller acts as: the one its certificate was issued for; admin and head
/// certificates without one act as the head's own user (the bootstrap admin).
pub fn tls_user(role: Role, bound: &str) -> String {
    if !bound.is_empty() {
        return bound.to_string();
    }
    match role {
        Role::Admin | Role::Head => head_user(),
        _ => String::new(),
    }
}

/// Refusal for a caller with no user (a client certificate from before users were bound).
pub fn no_user(name: &str, role: Role, what: &str) -> Status {
    Status::permission_denied(format!(
        "{what} needs a user: {name} holds a {role} certificate that names no Unix user (made before \
         certificates were bound to users). Ask an admin for a new token with \
         `rudel token create --role client --user YOU` and run `rudel login` with it"
    ))
}

/// Client and operator tokens must name the Unix user their certificates act as (a
/// certificate without one could submit nothing); agent and head tokens name none.
pub fn check_token_user(role: Role, user: &str) -> Result<(), Status> {
    match role {
        Role::Client | Role::Operator if user.is_empty() => Err(Status::invalid_argument(format!(
            "a {role} token must name the Unix user its holders act as: add --user NAME"
        ))),
        Role::Agent | Role::Head if !user.is_empty() => Err(Status::invalid_argument(format!(
            "--user is for client, operator and admin tokens, not {role} tokens"
        ))),
        _ => rudel_core::limits::check_name(user)
            .or_else(|e| if user.is_empty() { Ok(()) } else { Err(e) })
            .map_err(|e| Status::invalid_argument(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_root_and_admin() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(socket_role(0), Role::Admin);
    }

    #[test]
    fn bound_user_wins_and_unbound_clients_have_none() {
        assert_eq!(tls_user(Role::Client, "alice"), "alice");
        assert_eq!(tls_user(Role::Admin, "alice"), "alice");
        assert_eq!(tls_user(Role::Client, ""), "");
        assert_eq!(tls_user(Role::Admin, ""), head_user());
    }
}
