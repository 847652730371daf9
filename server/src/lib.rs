//! # kvset-server
//!
//! A replica of kvset: a key-value store replicated with Raft (openraft 0.9) and persisted in
//! sled, meant to run as one pod of a Kubernetes StatefulSet. Its ordinal hostname (`kv-0`,
//! `kv-1`, …) decides its Raft node id and its bootstrap role: `kv-0` initializes the cluster,
//! the others join in ordinal order.
//!
//! Module map:
//! - [`raft`]: openraft type configuration, peer transport and the internal Raft service.
//! - [`store`]: durable raft log and state machine on sled, and the KV semantics.

pub mod raft;
pub mod store;
