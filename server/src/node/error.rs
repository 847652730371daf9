//! Why the node could not do what it was asked: one variant per situation a caller must tell
//! apart, each with a message meant for the person who reads it (what happened, what to change).
//!
//! The node knows nothing of gRPC codes; `api::error` maps each variant to its status (and
//! adds the leader hint and the outcome marker where a client needs them). The variants still
//! separate what a client must treat differently: `NotLeader` and `NoLeader` mean "not applied,
//! go elsewhere", `OutcomeUnknown` and `Timeout` mean "may have been applied", `NoSpace` means
//! "refused until the alarm is disarmed", `StorageFailed` means "this member is going away".

use tonic::Status;

use crate::raft::MemberNode;
use crate::store::StoreError;

/// Why the node could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// This member is not the leader and does not forward (or the forward failed).
    #[error("{member} is not the leader; the leader is {} at {}", leader.name, leader.client_addr)]
    NotLeader { member: String, leader: MemberNode },
    /// This member forwarded the write to the leader and lost the leader's answer: the write may
    /// or may not have been applied.
    #[error(
        "{member} forwarded the write to the leader {} at {}, but the leader's answer was lost \
         ({reason}); the write may or may not have been applied: retry it with the same request \
         id, or read the key to find out",
        leader.name,
        leader.client_addr
    )]
    OutcomeUnknown {
        member: String,
        leader: MemberNode,
        reason: String,
    },
    /// A joiner described itself in a way the membership rules refuse (see `membership`).
    /// Nothing changed.
    #[error("{0}")]
    InvalidMember(String),
    /// No leader is known right now.
    #[error(
        "{member} knows no leader right now (election in progress or no quorum); retry shortly"
    )]
    NoLeader { member: String },
    /// kv-0 lost its volume and waits for the cluster that lived on to re-admit it.
    #[error(
        "{member} started on an empty volume and waits for the existing cluster {cluster} to \
         re-admit it; it serves no data until then (start the other members; retry on another \
         member)"
    )]
    AwaitingReadmission { member: String, cluster: String },
    /// The member is shutting down.
    #[error("{0} is shutting down; retry on another member")]
    ShuttingDown(String),
    /// A cluster operation is not allowed in the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A cluster operation names something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The operation did not finish in time; a write may still be applied.
    #[error("{0}")]
    Timeout(String),
    /// Local storage failed. The member stops replicating; operators must look at its logs.
    #[error("storage error on {member}: {source}")]
    Storage { member: String, source: StoreError },
    /// This member's storage failed; it stopped serving and exits to restart from disk.
    #[error(
        "{member} stopped on a storage failure ({cause}); it exits and restarts from what is on \
         disk — retry on another member"
    )]
    StorageFailed { member: String, cause: String },
    /// The Raft core stopped (fatal storage error or shutdown).
    #[error("{member}: raft stopped: {reason}")]
    RaftStopped { member: String, reason: String },
    /// A bug inside the server: the request may or may not have taken effect.
    #[error("internal error: {0}")]
    Internal(String),
    /// A `NOSPACE` alarm is active and the request would grow the data (see `node/quota.rs`).
    /// Nothing was written.
    #[error("{0}")]
    NoSpace(String),
    /// A forwarded request failed at the leader: passed through unchanged.
    #[error("{}", .0.message())]
    Forwarded(Status),
}
