//! The errors the public API returns, one-to-one with gRPC status codes.
//!
//! Every variant carries a message meant for the person reading it: what happened and what to
//! change. `NotLeader` additionally sets the `kvset-leader` metadata so a client can go to the
//! leader directly. `OutcomeUnknown` (a forwarded write whose answer from the leader was lost)
//! is `UNAVAILABLE` too, with the leader hint and `kvset-outcome: unknown`, so that a client never
//! takes it for a refusal: a refusal means "not applied", this means "may have been applied".

use kvset_proto::{LEADER_METADATA_KEY, OUTCOME_METADATA_KEY, OUTCOME_UNKNOWN};
use tonic::Status;

use crate::limits::LimitError;
use crate::raft::MemberNode;
use crate::store::StoreError;

/// An error answered by the KV or Cluster service.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request breaks a limit or is malformed. Nothing was written.
    #[error("{0}")]
    InvalidArgument(String),
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

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        ApiError::InvalidArgument(e.to_string())
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let message = e.to_string();
        match e {
            ApiError::InvalidArgument(_) => Status::invalid_argument(message),
            ApiError::NotLeader { leader, .. } => {
                with_leader_hint(Status::unavailable(message), &leader)
            }
            ApiError::OutcomeUnknown { leader, .. } => {
                let mut status = with_leader_hint(Status::unavailable(message), &leader);
                status.metadata_mut().insert(
                    OUTCOME_METADATA_KEY,
                    tonic::metadata::MetadataValue::from_static(OUTCOME_UNKNOWN),
                );
                status
            }
            ApiError::NoLeader { .. }
            | ApiError::ShuttingDown(_)
            | ApiError::StorageFailed { .. }
            | ApiError::AwaitingReadmission { .. }
            | ApiError::RaftStopped { .. } => Status::unavailable(message),
            ApiError::FailedPrecondition(_) => Status::failed_precondition(message),
            ApiError::NotFound(_) => Status::not_found(message),
            ApiError::NoSpace(_) => Status::resource_exhausted(message),
            ApiError::Timeout(_) => Status::deadline_exceeded(message),
            ApiError::Storage { .. } | ApiError::Internal(_) => Status::internal(message),
            ApiError::Forwarded(status) => status,
        }
    }
}

/// Adds the `kvset-leader` hint naming `leader`.
fn with_leader_hint(mut status: Status, leader: &MemberNode) -> Status {
    if let Ok(v) = format!("{}={}", leader.name, leader.client_addr).parse() {
        status.metadata_mut().insert(LEADER_METADATA_KEY, v);
    }
    status
}
