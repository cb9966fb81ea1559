//! Generated gRPC code for the `rudel.v1` API, plus the small mapping of shared wire
//! messages to rudel-core types (`convert`).

pub mod convert;

/// The versioned API package `rudel.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("rudel.v1");
}
