//! Raft plumbing: the openraft type configuration, the gRPC transport between replicas, and the
//! internal `kvset.raft.v1.Raft` service that receives it.

pub mod types;

pub use types::*;
