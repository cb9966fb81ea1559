//! The memory targets: heap bytes a state holds with many separate pending jobs, and with
//! one large array, counted by the global allocator (`alloc_count.rs`), with the RSS
//! change beside it. No nodes are registered, so everything stays pending.
use rudel_core::{Command, Response, State};

use crate::alloc_count;
use crate::workload::{self, Amount};

/// What building one state cost.
pub struct Footprint {
    /// Heap bytes the state holds (live after minus live before).
    pub held: usize,
    /// The most heap bytes live at once while building it (requests included).
    pub peak: usize,
    pub rss_delta: isize,
}

/// Builds a state the way `build` says and measures it; the state is dropped after.
fn measure(build: impl FnOnce() -> State) -> Footprint {
    let (live0, rss0) = (alloc_count::live(), alloc_count::rss());
    alloc_count::reset_peak();
    let s = build();
    let fp = Footprint {
        held: alloc_count::live().saturating_sub(live0),
        peak: alloc_count::peak().saturating_sub(live0),
        rss_delta: alloc_count::rss() as isize - rss0 as isize,
    };
    drop(s);
    fp
}

fn configured(a: &Amount) -> State {
    let mut s = State::new();
    warn_rejected(&s.apply(workload::configure(a, &[], 1)));
    s
}

/// `jobs` separate pending jobs of the scale workload's shapes, submitted `batch` per entry.
pub fn separate_jobs(jobs: u64, users: u32, batch: usize) -> Footprint {
    measure(|| {
        let amount = Amount {
            users,
            jobs,
            array_tasks: 0,
            array_size: 1,
            partitions: true,
        };
        let mut s = configured(&amount);
        let mut it = workload::submits(amount, 7).peekable();
        let mut now = 10;
        while it.peek().is_some() {
            now += 1;
            let cmds = it.by_ref().take(batch).map(|sp| workload::submit(sp, now)).collect();
            warn_rejected(&s.apply(Command::Batch(cmds)));
        }
        s
    })
}

/// One pending array of `tasks` tasks.
pub fn one_array(tasks: u32, users: u32) -> Footprint {
    measure(|| {
        let amount = Amount {
            users,
            jobs: 0,
            array_tasks: u64::from(tasks),
            array_size: tasks.max(1),
            partitions: true,
        };
        let mut s = configured(&amount);
        for sp in workload::submits(amount, 8) {
            warn_rejected(&s.apply(workload::submit(sp, 10)));
        }
        s
    })
}

/// Says so when a submit (or the configuration) was refused: the measurement would then not hold what it claims.
pub fn warn_rejected(r: &Response) {
    match r {
        Response::Batch(rs) => rs.iter().for_each(warn_rejected),
        Response::Rejected { reason } => eprintln!("rudel-sched-sim: an entry was rejected: {reason}"),
        _ => {}
    }
}
