//! The calling thread's CPU time: what the head spends applying, unlike wall time, which
//! on a machine shared with builds also counts the time other processes held the core.
use std::time::Duration;

/// CPU time this thread has used so far.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Times `f` in thread CPU time.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t0 = thread_cpu();
    let out = f();
    (out, thread_cpu().saturating_sub(t0))
}
