//! rudel-core: the domain model, the scheduler and the replicated state machine.
//!
//! Everything here is pure and deterministic (no I/O, no clocks, no threads): the head
//! feeds it commands carrying the leader's timestamp, so every replica that applies the
//! same log reaches the same state, and the scheduler can be tested at any scale.

pub mod aftercorr;
pub mod alloc;
pub mod array;
pub mod begin;
pub mod command;
pub mod constraint;
pub mod deps;
pub mod events;
pub mod explain;
pub mod gates;
pub mod hostlist;
pub mod ids;
pub mod intern;
pub mod invariants;
pub mod job;
pub mod limits;
pub mod node;
pub mod parse;
pub mod pattern;
pub mod pending;
pub mod query;
pub mod requeue;
pub mod resources;
pub mod sbatch_options;
pub mod sched;
pub mod scheduler;
pub mod script;
pub mod security;
pub mod serde_pairs;
pub mod signal;
pub mod state;
pub mod steps;
pub mod task_env;
#[cfg(test)]
pub(crate) mod testkit;
pub mod usage;

pub use array::ArraySpec;
pub use command::{Command, NodeRegistration, Response, TaskOutcome, TaskReport};
pub use events::{ApplyOutput, Event};
pub use ids::{JobId, NodeId, TaskKey};
pub use job::{Job, JobSpec, TaskState};
pub use node::Node;
pub use state::State;
pub use usage::{TaskEnd, TaskUsage};
