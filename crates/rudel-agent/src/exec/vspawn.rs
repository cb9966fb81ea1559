//! `vspawn`: the one primitive that starts every task. `clone(CLONE_VM | CLONE_VFORK)`
//! like glibc's `posix_spawn` (no page-table copy, so it stays fast for a large agent),
//! but the child runs our own setup, which `posix_spawn` cannot: join cgroups, set
//! `RLIMIT_AS`, switch to the job's user, and write its own pid into the
//! `SLURM_TASK_PID=` slot of the environment it is about to exec with.
//!
//! The child shares the parent's memory while the parent is suspended (until the child
//! execs or exits), so it may only make raw syscalls and async-signal-safe calls: no
//! allocation, no locks, no glibc `set*id` wrappers (they broadcast the change to every
//! thread of the *parent*, via signals, and would deadlock or change the agent's ids).
//! A failing step stores (step, errno) in shared memory and `_exit(127)`s; the parent
//! turns it into the task's failure message.
use std::ffi::CString;
use std::io;

/// Width reserved for the pid in the environment slot (`pid_max` is at most 2^22).
const PID_DIGITS: usize = 10;

/// The environment variables whose value the child fills with its own pid.
pub(crate) const PID_VARS: [&str; 2] = ["SLURM_TASK_PID", "RUDEL_TASK_PID"];

/// The user a task runs as (already resolved on this node by the parent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (`getgrouplist`), the primary group included.
    pub groups: Vec<libc::gid_t>,
}

/// The child's setup step that failed (reported with its errno).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Step {
    None = 0,
    Setsid,
    Cgroup,
    Rlimit,
    Setgroups,
    Setgid,
    Setuid,
    Dup,
    Chdir,
    Exec,
    /// `unshare(CLONE_NEWNS)` for a private `/tmp`.
    Namespace,
    /// Mounting the private `/tmp`.
    Mount,
}

impl Step {
    fn from_u32(v: u32) -> Step {
        const ALL: [Step; 12] = [
            Step::None,
            Step::Setsid,
            Step::Cgroup,
            Step::Rlimit,
            Step::Setgroups,
            Step::Setgid,
            Step::Setuid,
            Step::Dup,
            Step::Chdir,
            Step::Exec,
            Step::Namespace,
            Step::Mount,
        ];
        ALL.get(v as usize).copied().unwrap_or(Step::None)
    }
}

/// What went wrong in the child.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ChildError {
    pub(crate) step: Step,
    pub(crate) errno: i32,
}

/// Why `vspawn` failed.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// `clone` itself failed (EAGAIN, ENOMEM...).
    Clone(i32),
    /// The child could not exec; it has been reaped.
    Child(ChildError),
}

/// Everything the child needs, as C data prepared by the parent.
pub(crate) struct Plan {
    pub(crate) prog: CString,
    pub(crate) cwd: CString,
    _argv: Vec<CString>,
    envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// Indices in `envp` of the pid slots.
    pid_slots: Vec<usize>,
    /// dup2'ed onto 0, 1, 2.
    pub(crate) stdio: [libc::c_int; 3],
    /// `cgroup.procs` files to write "0" to (-1 = none).
    pub(crate) procs_fds: [libc::c_int; 2],
    /// `RLIMIT_AS` in bytes; 0 = none.
    pub(crate) rlimit_as: u64,
    pub(crate) creds: Option<Creds>,
    /// Bind-mounted on `/tmp` in a new mount namespace (see `private_tmp.rs`).
    pub(crate) private_tmp: Option<CString>,
}

/// A NUL byte in the command, an environment variable or a path.
#[derive(Debug)]
pub(crate) struct NulByte;

impl Plan {
    /// `env` must not contain the [`PID_VARS`]: they are added here as slots.
    pub(crate) fn new(prog: &[u8], cwd: &[u8], argv: &[String], env: &[(String, String)]) -> Result<Plan, NulByte> {
        let c = |b: &[u8]| CString::new(b).map_err(|_| NulByte);
        let argv = argv.iter().map(|a| c(a.as_bytes())).collect::<Result<Vec<_>, _>>()?;
        let mut envp = Vec::with_capacity(env.len() + PID_VARS.len());
        for (k, v) in env.iter().filter(|(k, _)| !PID_VARS.contains(&k.as_str())) {
            let mut kv = Vec::with_capacity(k.len() + v.len() + 1);
            kv.extend_from_slice(k.as_bytes());
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.push(c(&kv)?);
        }
        let mut pid_slots = Vec::new();
        for name in PID_VARS {
            let mut kv = Vec::with_capacity(name.len() + 1 + PID_DIGITS);
            kv.extend_from_slice(name.as_bytes());
            kv.push(b'=');
            kv.extend_from_slice(&[b'0'; PID_DIGITS]);
            pid_slots.push(envp.len());
            envp.push(c(&kv)?);
        }
        let mut argv_ptrs: Vec<_> = argv.iter().map(|s| s.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<_> = envp.iter().map(|s| s.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        Ok(Plan {
            prog: c(prog)?,
            cwd: c(cwd)?,
            _argv: argv,
            envp,
            argv_ptrs,
            envp_ptrs,
            pid_slots,
            stdio: [0, 1, 2],
            procs_fds: [-1, -1],
            rlimit_as: 0,
            creds: None,
            private_tmp: None,
        })
    }

    /// The slot addresses (start of the digits) and the argument number.
    fn slot_ptrs(&self) -> [*mut u8; 2] {
        let mut out = [std::ptr::null_mut(); 2];
        for (o, &i) in out.iter_mut().zip(&self.pid_slots) {
            let name_len = self.envp[i].as_bytes().len() - PID_DIGITS;
            // SAFETY: the CString holds name_len + PID_DIGITS bytes plus the NUL.
            *o = unsafe { self.envp[i].as_ptr().add(name_len) as *mut u8 };
        }
        out
    }
}

/// The child's stack: mapped once per spawner thread, with a guard page below it so an
/// overflow faults instead of silently writing into the agent's heap.
pub(crate) struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

const STACK_LEN: usize = 256 * 1024;

impl Stack {
    pub(crate) fn new() -> io::Result<Stack> {
        // SAFETY: anonymous private mapping; the guard page is inside it.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                STACK_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
            if libc::mprotect(base, page, libc::PROT_NONE) != 0 {
                let e = io::Error::last_os_error();
                libc::munmap(base, STACK_LEN);
                return Err(e);
            }
            Ok(Stack { base, len: STACK_LEN })
        }
    }

    fn top(&self) -> *mut libc::c_void {
        // 16-byte aligned (the mapping is page-aligned and the length a page multiple).
        // SAFETY: one past the end of our own mapping.
        unsafe { (self.base as *mut u8).add(self.len) as *mut libc::c_void }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Shared between parent and child (the child writes, the parent reads after the
/// vfork-suspension ends).
#[repr(C)]
struct Shared {
    prog: *const libc::c_char,
    cwd: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    slots: [*mut u8; 2],
    stdio: [libc::c_int; 3],
    procs_fds: [libc::c_int; 2],
    rlimit_as: u64,
    switch: bool,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: *const libc::gid_t,
    ngroups: usize,
    /// The private `/tmp` source directory; null = none.
    tmp: *const libc::c_char,
    step: u32,
    errno: i32,
}

/// Starts the plan's program; returns its pid once it has exec'ed. The caller holds
/// whatever lock keeps the reaper from reaping an unregistered child: on a failed exec
/// this function reaps the child itself (`waitpid` on its pid).
///
/// Must be called from a thread whose signals the caller does not need during the call:
/// all signals are blocked around the clone so that no handler of the agent runs in the
/// child (on the shared memory) before it has reset the dispositions.
pub(crate) fn vspawn(plan: &Plan, stack: &Stack) -> Result<u32, SpawnError> {
    let mut sh = Shared {
        prog: plan.prog.as_ptr(),
        cwd: plan.cwd.as_ptr(),
        argv: plan.argv_ptrs.as_ptr(),
        envp: plan.envp_ptrs.as_ptr(),
        slots: plan.slot_ptrs(),
        stdio: plan.stdio,
        procs_fds: plan.procs_fds,
        rlimit_as: plan.rlimit_as,
        switch: plan.creds.is_some(),
        uid: plan.creds.as_ref().map_or(0, |c| c.uid),
        gid: plan.creds.as_ref().map_or(0, |c| c.gid),
        groups: plan.creds.as_ref().map_or(std::ptr::null(), |c| c.groups.as_ptr()),
        ngroups: plan.creds.as_ref().map_or(0, |c| c.groups.len()),
        tmp: plan.private_tmp.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
        step: Step::None as u32,
        errno: 0,
    };
    // SAFETY: every pointer in `sh` refers to `plan` or `sh`, alive until clone returns;
    // with CLONE_VFORK clone returns only after the child exec'ed or exited, so the child
    // never outlives them. Signal masks are restored before returning.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &mut sh as *mut Shared as *mut libc::c_void,
        );
        let clone_errno = io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid == -1 {
            return Err(SpawnError::Clone(clone_errno));
        }
        pid
    };
    // Volatile: the compiler cannot see that the child wrote these.
    // SAFETY: reads of our own stack struct.
    let (step, errno) = unsafe { (std::ptr::read_volatile(&sh.step), std::ptr::read_volatile(&sh.errno)) };
    if step != Step::None as u32 {
        let mut status = 0;
        // SAFETY: our own child, exited (vfork returned); reaped here so it is not
        // mistaken for a task by the reaper.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(SpawnError::Child(ChildError {
            step: Step::from_u32(step),
            errno,
        }));
    }
    Ok(pid as u32)
}

/// The child: raw syscalls and async-signal-safe calls only (see the module comment).
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Shared`, alive while the parent is suspended.
    unsafe {
        let sh = &mut *(arg as *mut Shared);
        let pid = libc::syscall(libc::SYS_getpid) as u64;
        for slot in sh.slots {
            if !slot.is_null() {
                write_pid(slot, pid);
            }
        }
        if libc::syscall(libc::SYS_setsid) == -1 {
            fail(sh, Step::Setsid);
        }
        // The kernel's `struct sigaction` (handler, flags, restorer, mask), all zero =
        // SIG_DFL. Raw: glibc's wrapper refuses its reserved signals 32 and 33, which
        // would stay ignored in the task.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
        for fd in sh.procs_fds {
            if fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(sh, Step::Cgroup);
            }
        }
        if sh.rlimit_as > 0 {
            let rl = libc::rlimit {
                rlim_cur: sh.rlimit_as,
                rlim_max: sh.rlimit_as,
            };
            if libc::syscall(libc::SYS_setrlimit, libc::RLIMIT_AS, &rl as *const libc::rlimit) != 0 {
                fail(sh, Step::Rlimit);
            }
        }
        // Before the user switch: mounting needs the agent's privileges.
        let in_cwd = !sh.tmp.is_null();
        if in_cwd {
            private_tmp(sh);
        }
        if sh.switch {
            if libc::syscall(libc::SYS_setgroups, sh.ngroups, sh.groups) != 0 {
                fail(sh, Step::Setgroups);
            }
            if libc::syscall(libc::SYS_setresgid, sh.gid, sh.gid, sh.gid) != 0 {
                fail(sh, Step::Setgid);
            }
            if libc::syscall(libc::SYS_setresuid, sh.uid, sh.uid, sh.uid) != 0 {
                fail(sh, Step::Setuid);
            }
        }
        for (target, fd) in sh.stdio.into_iter().enumerate() {
            if libc::syscall(libc::SYS_dup2, fd, target as libc::c_int) == -1 {
                fail(sh, Step::Dup);
            }
            if fd == target as libc::c_int {
                // dup2 onto itself keeps close-on-exec: clear it.
                libc::syscall(libc::SYS_fcntl, fd, libc::F_SETFD, 0);
            }
        }
        // After the user switch: the directory must be one the user may enter. With a
        // private /tmp it was entered before /tmp was covered (see `private_tmp`).
        if !in_cwd && libc::syscall(libc::SYS_chdir, sh.cwd) != 0 {
            fail(sh, Step::Chdir);
        }
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::syscall(libc::SYS_execve, sh.prog, sh.argv, sh.envp);
        fail(sh, Step::Exec)
    }
}

/// Gives the child its own mount namespace with `sh.tmp` on `/tmp`, and enters the
/// working directory first. Mounts below `/` are made slaves: the bind mount must not
/// propagate back into the node's namespace (on systemd machines `/` is shared), while
/// mounts the node makes still reach the task.
///
/// The working directory is entered before `/tmp` is covered, so a job submitted from a
/// directory under `/tmp` still starts there (its cwd keeps the real directory). The
/// check is the user's: file-system ids switched for the `chdir` (they are per task, not
/// shared with the parent) and back to root for the mount.
///
/// # Safety
/// Only in the child; `sh` is the parent's `Shared` with a non-null `tmp`.
unsafe fn private_tmp(sh: &mut Shared) {
    if libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS) != 0 {
        fail(sh, Step::Namespace);
    }
    let none = std::ptr::null::<libc::c_char>();
    let root = c"/".as_ptr();
    let tmp = c"/tmp".as_ptr();
    let slave = libc::MS_REC | libc::MS_SLAVE;
    if libc::syscall(libc::SYS_mount, none, root, none, slave, none) != 0 {
        fail(sh, Step::Mount);
    }
    if sh.switch {
        if libc::syscall(libc::SYS_setgroups, sh.ngroups, sh.groups) != 0 {
            fail(sh, Step::Setgroups);
        }
        libc::syscall(libc::SYS_setfsgid, sh.gid);
        libc::syscall(libc::SYS_setfsuid, sh.uid);
    }
    let entered = libc::syscall(libc::SYS_chdir, sh.cwd) == 0;
    if sh.switch {
        libc::syscall(libc::SYS_setfsuid, 0);
        libc::syscall(libc::SYS_setfsgid, 0);
    }
    if !entered {
        fail(sh, Step::Chdir);
    }
    if libc::syscall(libc::SYS_mount, sh.tmp, tmp, none, libc::MS_BIND, none) != 0 {
        fail(sh, Step::Mount);
    }
}

/// Records the failed step and the current errno for the parent, and exits.
///
/// # Safety
/// Only in the child; `sh` is the parent's `Shared`.
unsafe fn fail(sh: &mut Shared, step: Step) -> ! {
    std::ptr::write_volatile(&mut sh.errno, *libc::__errno_location());
    std::ptr::write_volatile(&mut sh.step, step as u32);
    libc::_exit(127)
}

/// Writes `pid` in decimal at `slot` followed by a NUL (the slot is [`PID_DIGITS`]
/// wide and followed by the string's own NUL, so a shorter number just ends earlier).
///
/// # Safety
/// `slot` must point to at least `PID_DIGITS + 1` writable bytes.
unsafe fn write_pid(slot: *mut u8, pid: u64) {
    let mut digits = [0u8; PID_DIGITS];
    let mut n = pid;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if n == 0 || len == PID_DIGITS {
            break;
        }
    }
    for i in 0..len {
        *slot.add(i) = digits[len - 1 - i];
    }
    *slot.add(len) = 0;
}
