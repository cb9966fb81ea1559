//! rudel's PMI-1 library: what an MPI program started by `srun` (without mpirun) uses to
//! learn its rank and exchange its address with the other ranks.
//!
//! `librudel_pmi.so` is the client, loaded into every rank: Open MPI loads it through its
//! `pmix/flux` component (the agent sets `FLUX_JOB_ID` and `FLUX_PMI_LIBRARY_PATH` for
//! the step's tasks). It talks PMI-1's wire protocol ("simple PMI") to the server in the
//! step's `srun`, the same protocol MPICH's built-in client speaks, so MPICH needs no
//! library at all. docs/parallel-jobs.md says why PMI-1 and not PMIx.
pub mod capi;
pub mod client;
pub mod wire;
