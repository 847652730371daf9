//! The gRPC surface of a member: the public `kvset.v1.KV`, `Watch`, `Lease` and `Cluster`
//! services (the writing ones share the write path in [`write`]), the standard
//! `grpc.health.v1.Health` service that Kubernetes probes call, and the internal
//! `kvset.raft.v1.Raft` service ([`peer`]) that the other members call.
//!
//! This layer only translates: it validates requests, calls the node (`crate::node`), and maps
//! the node's errors to gRPC statuses ([`error`]). Every client RPC is authorized first
//! ([`authz`], under the member's policy; see [`crate::auth`]). Decisions about the cluster live below it.

pub mod auth;
pub(crate) mod authz;
pub mod cluster;
pub mod error;
pub mod etcd;
pub mod health;
pub mod kv;
pub mod lease;
pub mod metrics;
pub mod peer;
pub mod watch;
pub mod write;
