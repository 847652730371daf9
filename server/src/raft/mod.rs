//! Raft plumbing: the openraft type configuration, the gRPC transport between replicas
//! ([`network`], outbound), and the internal `kvset.raft.v1.Raft` service ([`service`], inbound).

pub mod append_budget;
pub mod network;
pub mod service;
pub mod types;

pub use types::*;
