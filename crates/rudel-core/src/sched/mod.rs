//! Scheduling policy: the replicated, versioned configuration and the queue orders it
//! selects. The pass itself is in [`crate::scheduler`].
pub mod account;
pub mod backfill_explain;
pub mod config;
pub mod fair;
pub mod fixed;
pub mod multifactor;
pub mod order;
pub mod partition;
pub mod passes;
pub mod plan;
pub mod quota;
pub mod running_limit;
pub mod will_run;

pub use config::{ConfigError, SchedConfig, SCHED_VERSION};
pub use order::Order;
pub use partition::{Partition, PartitionState, DEFAULT_PARTITION};
pub use passes::{PassConfig, PassKind, PASSES_VERSION};
pub use plan::backfill::{self, BackfillConfig, BackfillMode, Reservation};
pub use plan::preempt::{self, PreemptConfig, PreemptMode, PREEMPT_VERSION};
