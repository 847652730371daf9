//! The node's errors as gRPC statuses: one code per [`NodeError`] variant, so a client can tell
//! "not applied" from "may have been applied" by the code alone.
//!
//! `NotLeader` additionally sets the `kvset-leader` metadata so a client can go to the leader
//! directly. `OutcomeUnknown` (a forwarded write whose answer from the leader was lost) is
//! `UNAVAILABLE` too, with the leader hint and `kvset-outcome: unknown`, so that a client never
//! takes it for a refusal: a refusal means "not applied", this means "may have been applied".
//! A request that breaks a limit ([`LimitError`]) is `INVALID_ARGUMENT`: nothing was written.

use kvset_proto::{LEADER_METADATA_KEY, OUTCOME_METADATA_KEY, OUTCOME_UNKNOWN};
use tonic::Status;

use crate::limits::LimitError;
use crate::node::NodeError;
use crate::raft::MemberNode;

impl From<LimitError> for Status {
    fn from(e: LimitError) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        let message = e.to_string();
        match e {
            NodeError::InvalidMember(_) => Status::invalid_argument(message),
            NodeError::NotLeader { leader, .. } => {
                with_leader_hint(Status::unavailable(message), &leader)
            }
            NodeError::OutcomeUnknown { leader, .. } => {
                let mut status = with_leader_hint(Status::unavailable(message), &leader);
                status.metadata_mut().insert(
                    OUTCOME_METADATA_KEY,
                    tonic::metadata::MetadataValue::from_static(OUTCOME_UNKNOWN),
                );
                status
            }
            NodeError::NoLeader { .. }
            | NodeError::ShuttingDown(_)
            | NodeError::StorageFailed { .. }
            | NodeError::AwaitingReadmission { .. }
            | NodeError::RaftStopped { .. } => Status::unavailable(message),
            NodeError::FailedPrecondition(_) => Status::failed_precondition(message),
            NodeError::NotFound(_) => Status::not_found(message),
            NodeError::NoSpace(_) => Status::resource_exhausted(message),
            NodeError::Timeout(_) => Status::deadline_exceeded(message),
            NodeError::Storage { .. } | NodeError::Internal(_) => Status::internal(message),
            NodeError::Forwarded(status) => status,
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
