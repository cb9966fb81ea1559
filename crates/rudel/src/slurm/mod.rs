//! Slurm-compatible commands.
pub mod sacct;
