//! Raft plumbing: the openraft type configuration and the gRPC transport between replicas
//! ([`network`], outbound). The inbound side, the internal `kvset.raft.v1.Raft` service, is
//! `api::peer`: it decides what to admit from the member's state (start plan, re-join fence,
//! joining), so it sits above `node`, beside the public services.

pub mod append_budget;
pub mod network;
pub mod types;

pub use types::*;
