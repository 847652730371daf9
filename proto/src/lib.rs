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

/// etcd's v3 API (packages `etcdserverpb` and `mvccpb`), which kvset also serves on its client
/// port so that etcd's tools and client libraries work against it unchanged.
#[allow(
    clippy::large_enum_variant,
    clippy::doc_lazy_continuation,
    non_snake_case,
    clippy::enum_variant_names
)]
pub mod etcd {
    /// Package `mvccpb`: KeyValue and Event.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// Package `etcdserverpb`: the KV, Watch, Lease, Cluster and Maintenance services.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
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

/// gRPC metadata key a member sets on an `UNAVAILABLE` answer to a write whose outcome it does
/// not know (it forwarded the write to the leader and lost the leader's answer). Its value is
/// [`OUTCOME_UNKNOWN`]. The write may or may not have been applied; a retry with the same
/// request id is safe. Such an answer may also carry [`LEADER_METADATA_KEY`].
pub const OUTCOME_METADATA_KEY: &str = "kvset-outcome";

/// The value of [`OUTCOME_METADATA_KEY`]: the write may or may not have been applied.
pub const OUTCOME_UNKNOWN: &str = "unknown";
