//! # kvset-server
//!
//! A replica of kvset: a key-value store replicated with Raft (openraft 0.9) and persisted in
//! sled, meant to run as one pod of a Kubernetes StatefulSet. Its ordinal hostname (`kv-0`,
//! `kv-1`, …) decides its Raft node id and its bootstrap role: `kv-0` initializes the cluster,
//! the others join in ordinal order.
//!
//! Module map, from the outside in:
//! - [`server`]: one member's lifecycle (volume → store → Raft → gRPC → start plan → shutdown);
//!   [`launcher`]: `kvset-server local`, a StatefulSet of child processes on loopback.
//! - [`api`]: the public gRPC services (KV, Cluster, health) and their error mapping.
//! - [`node`]: what a running member decides: start plan, joining, leadership hand-off, writes
//!   and linearizable reads through Raft.
//! - [`raft`]: openraft type configuration, peer transport and the internal Raft service.
//! - [`store`]: durable raft log and state machine on sled, and the KV semantics.
//! - [`auth`]: who may do what (identities, the policy file, the check every RPC makes).
//! - [`identity`], [`volume`], [`config`], [`limits`]: who this member is, which volume it
//!   owns, how it is configured, what requests may contain; [`cluster_record`]: the record that
//!   the cluster exists, kept outside kv-0's volume so a kv-0 that lost it never mints a second
//!   cluster; [`kube_api`]: where to reach the Kubernetes API when told (`--kube-api`); [`replicas`]: the set's desired size (StatefulSet `spec.replicas` or the
//!   launcher's), which decides who leaves on scale-down; [`faults`]: deliberate bugs for
//!   proving the tests bite (off by default); [`telemetry`]: Prometheus metrics; [`tls`]: TLS
//!   and mutual TLS from reloadable PEM files; [`memnet`]: an in-memory network for in-process
//!   test clusters in simulated time.

pub mod api;
pub mod auth;
pub mod cluster_record;
pub mod config;
pub mod faults;
/// Entry points for the fuzz targets (`fuzz/`); only with the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
pub use store::fuzzing;
pub mod identity;
pub mod kube_api;
pub mod launcher;
pub mod limits;
pub mod memnet;
pub mod node;
pub mod raft;
pub mod replicas;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod volume;
