//! The spawner thread's filesystem identity, borrowed from the job's user while it opens
//! the task's output files: `setfsuid`/`setfsgid` and `setgroups` as raw syscalls act on
//! the calling thread only (glibc's wrappers would change every thread of the agent), so
//! the rest of the agent keeps root's rights while the open is checked as the user's.
use std::io;

use super::vspawn::Creds;

/// Restores the thread's filesystem ids and groups when dropped.
pub(crate) struct FsId {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
}

/// `setfsuid`/`setfsgid` return the previous id and cannot report failure directly:
/// calling again with -1 (invalid) returns the current one, which tells us.
fn set_fsuid(uid: u32) -> io::Result<u32> {
    // SAFETY: plain per-thread syscalls.
    unsafe {
        let old = libc::syscall(libc::SYS_setfsuid, uid) as u32;
        let now = libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32;
        if now != uid {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(old)
    }
}

fn set_fsgid(gid: u32) -> io::Result<u32> {
    // SAFETY: plain per-thread syscalls.
    unsafe {
        let old = libc::syscall(libc::SYS_setfsgid, gid) as u32;
        let now = libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32;
        if now != gid {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(old)
    }
}

fn set_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the pointer and length describe a live slice; per-thread syscall.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_groups() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: first call asks for the count, the second fills a buffer of that size.
    unsafe {
        let n = libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<libc::gid_t>());
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut v = vec![0 as libc::gid_t; n as usize];
        let n = libc::syscall(libc::SYS_getgroups, v.len(), v.as_mut_ptr());
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        v.truncate(n as usize);
        Ok(v)
    }
}

impl FsId {
    /// Takes `c` as this thread's filesystem identity (groups first: after dropping
    /// the fs uid the thread may no longer change them).
    pub(crate) fn assume(c: &Creds) -> io::Result<FsId> {
        let groups = get_groups()?;
        set_groups(&c.groups)?;
        let gid = match set_fsgid(c.gid) {
            Ok(g) => g,
            Err(e) => {
                let _ = set_groups(&groups);
                return Err(e);
            }
        };
        let uid = match set_fsuid(c.uid) {
            Ok(u) => u,
            Err(e) => {
                let _ = set_fsgid(gid);
                let _ = set_groups(&groups);
                return Err(e);
            }
        };
        Ok(FsId { uid, gid, groups })
    }
}

impl Drop for FsId {
    fn drop(&mut self) {
        // uid first: it gives back the capabilities needed to restore the rest.
        let r = set_fsuid(self.uid)
            .and_then(|_| set_fsgid(self.gid))
            .and_then(|_| set_groups(&self.groups));
        if let Err(e) = r {
            // The next task's files would be opened with the wrong rights: better stop.
            tracing::error!(error = %e, "cannot restore the spawner thread's identity");
            std::process::abort();
        }
    }
}
