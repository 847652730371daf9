//! # kvset-client
//!
//! The Rust SDK for kvset, a Raft-replicated key-value store run as a Kubernetes StatefulSet.
//! The `kvsetctl` command-line tool is built on it in its own crate (`ctl/`), so the SDK's
//! dependency tree carries no command-line parser, no log subscriber and no `anyhow`.
//!
//! ```no_run
//! # async fn demo() -> kvset_client::Result<()> {
//! use kvset_client::{Client, ReadOptions};
//! let client = Client::connect(["127.0.0.1:7379", "127.0.0.1:7380", "127.0.0.1:7381"]).await?;
//! client.put("greeting", "hello").await?;
//! let kv = client.get("greeting").await?;                       // linearizable
//! let stale = client.get_with("greeting", &ReadOptions::stale().on_member("kv-1")).await?;
//! let swapped = client.cas("greeting", Some(b"hello"), "hi").await?;
//! # Ok(()) }
//! ```
//!
//! ## What the client does for you
//!
//! - **Finds and follows the primary.** Any member accepts any request, but writes and
//!   linearizable reads are cheapest at the leader. The client remembers the leader from
//!   response headers and from the `kvset-leader` hint a member attaches when it refuses, goes
//!   there directly, and after a failover tries the hint, then every other endpoint, with
//!   jittered exponential backoff until the call's deadline ([`retry`] module docs).
//! - **Retries only what is safe.** Reads always. Writes (`put`, `delete`, `txn`) carry a
//!   `RequestId` that every retry reuses, so the state machine applies each write at most once
//!   and answers a repeat with the stored result ([`session`] module docs explain how
//!   concurrent writes keep that guarantee). Membership changes are retried only when an
//!   attempt provably did nothing.
//! - **Explains failures.** One [`Error`] enum, one variant per thing a caller can act on, with
//!   messages that say what to do.
//! - **Keeps watches going.** [`Client::watch`] returns a `Stream` that re-creates its watcher on
//!   another member when its stream breaks, from the revision after the last one it delivered:
//!   no event lost, none repeated ([`watch`] module docs). It ends only with
//!   [`Error::Compacted`] when the history it needs is gone, or on a final error.
//! - **Keeps leases alive.** [`Client::keep_alive`] renews a lease in the background until its
//!   handle is dropped ([`lease`] module docs); [`Lock`] and [`Election`] build etcd's mutex and
//!   leader election on leases ([`concurrency`] module docs).
//!
//! ## Module map
//!
//! - [`Client`] (`client.rs`): the operations.
//! - [`ClientBuilder`], [`Config`], [`ReadOptions`], [`WriteOptions`] (`config.rs`): settings.
//! - `endpoint.rs`: endpoint parsing, lazily connected channels, leader tracking.
//! - [`retry`]: the retry loop and its safety rules.
//! - [`session`]: the pool of exactly-once client ids.
//! - [`Error`] (`error.rs`): typed errors and the classification of gRPC failures.
//! - [`Txn`], [`Compare`], [`TxnOp`] (`txn.rs`): transactions.
//! - [`KeyRange`], [`RangeOptions`], [`RangePage`] (`range.rs`): ranges and pagination.
//! - [`ClusterStatus`] (`cluster.rs`): status of every member.
//! - [`EndpointHealth`] (`health.rs`): the standard gRPC health check of each member.
//! - [`tls`]: [`TlsOptions`], the CA bundle and optional client certificate for TLS.
//! - [`snapshot`]: backups, [`Client::snapshot`] / [`Client::save_snapshot`] and the backup
//!   file ([`Snapshot`]).
//! - [`duration`]: the duration syntax (`500ms`, `5s`, `2m`) every kvset command line reads.
//! - [`watch`]: [`WatchOptions`], [`WatchStream`], [`WatchBatch`], [`WatchEvent`]: watches
//!   that resume across failovers.
//! - [`lease`]: [`LeaseGrant`], [`KeepAlive`] and the other lease calls.
//! - [`concurrency`]: the [`Lock`] and [`Election`] recipes.
//!
//! ## What it leaves out
//!
//! Authentication beyond TLS client certificates (the server has none), several watchers
//! multiplexed on one gRPC stream (each [`WatchStream`] has a stream of its own, which keeps
//! resuming one watcher independent of the others), progress requests, and client-side load
//! balancing beyond "stale reads prefer a follower".

mod auth;
mod client;
mod cluster;
pub mod concurrency;
mod config;
pub mod duration;
mod endpoint;
mod error;
mod health;
pub mod lease;
mod range;
pub mod retry;
pub mod session;
pub mod snapshot;
pub mod tls;
mod txn;
mod types;
pub mod watch;

pub use auth::{AuthCheck, WhoAmI};
pub use client::Client;
pub use cluster::{ClusterStatus, MemberHealth, Probe};
pub use concurrency::{Election, Leadership, Lock, LockGuard};
pub use config::{ClientBuilder, Config, Consistency, ReadOptions, WriteOptions};
pub use endpoint::{
    parse_endpoint_list, EndpointAddr, LeaderHint, LeaderInfo, DEFAULT_ENDPOINTS, DEFAULT_PORT,
};
pub use error::{Cause, CauseKind, Error, Result};
pub use health::{EndpointHealth, HealthStatus, LIVENESS, READINESS};
pub use lease::{KeepAlive, KeepAliveStatus, LeaseGrant, LeaseStatus, LeaseTimeToLive};
pub use range::{KeyRange, KvStream, PageStream, RangeOptions, RangePage, DEFAULT_PAGE_SIZE};
pub use snapshot::{Snapshot, SnapshotInfo};
pub use tls::{Pem, TlsIdentity, TlsOptions};
pub use txn::{
    Compare, CompareOp, CompareOperand, NumberCompare, Txn, TxnOp, TxnOpResponse, TxnResponse,
    ValueCompare,
};
pub use types::{
    Alarm, AlarmKind, DeleteResponse, GetResponse, Header, KeyValue, Member, MemberStatus,
    PutResponse, Role, Status,
};
pub use watch::{EventType, WatchBatch, WatchEvent, WatchOptions, WatchStream};

/// The generated protobuf and gRPC types, for what the SDK does not wrap.
pub use kvset_proto as proto;
