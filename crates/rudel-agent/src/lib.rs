//! rudel-agent: runs on every compute node. Holds a session with the head, runs the
//! tasks it is given as real processes, and keeps their results until acknowledged.
pub mod exec;
pub mod hostfile;
pub mod identity;
pub mod job_socket;
pub mod journal;
pub mod launch;
pub mod login_env;
pub mod output;
pub mod pmi;
pub mod remote_output;
pub mod session;
pub mod step_stdin;
pub mod steps;
pub mod tree;
pub mod tree_forward;
pub mod tree_server;
pub mod users;

pub use exec::DEFAULT_TASK_PIDS_MAX;
pub use session::{run, AgentConfig, AgentError};
