//! Generated protobuf and gRPC code for kvset.
//!
//! The `.proto` files under `proto/kvset/` are the single source of truth for the wire contract:
//! `kvset.v1` is the public API (the `KV` and `Cluster` services) and `kvset.raft.v1` is the
//! internal transport replicas use to carry openraft's messages, plus the log command format.
//! This crate only compiles them; the server and the client SDK add behaviour on top.

/// Module tree mirroring the protobuf packages (prost resolves cross-package references with
/// `super::`, so the nesting must match the package names).
#[allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
pub mod kvset {
    /// Package `kvset.v1`.
    pub mod v1 {
        tonic::include_proto!("kvset.v1");
    }
    /// Package `kvset.raft`.
    pub mod raft {
        /// Package `kvset.raft.v1`.
        pub mod v1 {
            tonic::include_proto!("kvset.raft.v1");
        }
    }
}

/// The public API: key-value operations and cluster administration.
pub mod backup;

pub use kvset::v1;

/// The internal Raft transport between replicas and the log command format. Not for clients.
pub use kvset::raft::v1 as raft;

/// gRPC metadata key a member that is not the leader sets on an `UNAVAILABLE` answer:
/// `<leader name>=<leader client address>`.
pub const LEADER_METADATA_KEY: &str = "kvset-leader";
