//! The async runtime a command runs on.
//!
//! One-shot client commands (`submit`, `jobs`, `whoami`, ...: one or two unary calls, then
//! exit) run on the calling thread. A worker thread costs such a process more than the call
//! itself: measured on a 2-core VM (issue 12), the thread's creation, stack and the futex
//! wake-ups between it and the main thread (about 20 context switches per `rudel submit`)
//! were 10-15% of the process's CPU time and a larger share of its latency on a busy
//! machine, where every hand-over waits for a CPU.
//!
//! Daemons, and the commands that hold a stream open while writing to the terminal (`run`,
//! `logs -f`, `wait`, `exec`, ...), keep worker threads: a blocked write to stdout must not
//! stop the connection's background task (its HTTP/2 pings and flow control).
use tokio::runtime::{Builder, Runtime};

/// How a command uses its runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A few unary calls: the calling thread only.
    OneShot,
    /// A daemon or a long-lived stream: worker threads ([`worker_threads`]).
    Workers,
}

/// The runtime for a command of this shape.
pub fn build(shape: Shape) -> std::io::Result<Runtime> {
    match shape {
        Shape::OneShot => Builder::new_current_thread().enable_all().build(),
        Shape::Workers => Builder::new_multi_thread()
            .worker_threads(worker_threads())
            .enable_all()
            .build(),
    }
}

/// Runtime worker threads: $RUDEL_WORKERS, else 1. Per-task work is short and the tasks
/// themselves need the cores; one worker avoids most cross-thread wake-ups (measured: they
/// were a quarter of the agent's CPU time with one worker per core).
fn worker_threads() -> usize {
    std::env::var("RUDEL_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_shot_runtime_runs_spawned_tasks_on_the_calling_thread() {
        let rt = build(Shape::OneShot).unwrap();
        let main = std::thread::current().id();
        let spawned = rt.block_on(async { tokio::spawn(async { std::thread::current().id() }).await.unwrap() });
        assert_eq!(spawned, main);
    }

    #[test]
    fn a_workers_runtime_runs_spawned_tasks_on_a_worker() {
        let rt = build(Shape::Workers).unwrap();
        let main = std::thread::current().id();
        let spawned = rt.block_on(async { tokio::spawn(async { std::thread::current().id() }).await.unwrap() });
        assert_ne!(spawned, main);
    }
}
