//! The write path every service that writes shares: validate, propose through Raft or forward
//! to the leader, and answer from the state machine's result.
//!
//! `KV` (Put, Delete, Txn, Compact) and `Lease` (Grant, Revoke) write the same way, so the
//! template lives here once: a rejected request writes nothing; on a follower the original
//! request is forwarded to the leader (marked so it is never forwarded twice); a forward whose
//! answer is lost is "outcome unknown", never "not the leader" (see [`Writer::forward_failed`]);
//! a command the state machine refused (an unknown lease, a compacted revision) becomes the
//! gRPC status its refusal names. Reads share the ReadIndex barrier and the rule that a
//! non-deterministic storage error fail-stops the member.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kvset_proto::raft::{command_refusal, command_result, log_command, CommandResult, LogCommand};
use kvset_proto::v1::{
    CompactResponse, Consistency, DeleteResponse, LeaseGrantResponse, LeaseRevokeResponse,
    PutResponse, ResponseHeader, TxnResponse,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::node::NodeError;
use crate::node::{Node, WriteOutcome, FORWARDED_KEY};
use crate::raft::MemberNode;

/// How long a linearizable read may wait for the barrier.
pub(crate) const READ_BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a write came to on this member.
enum WriteAnswer<Resp> {
    /// Applied here (this member leads): the state machine's result, to be answered.
    Applied(CommandResult),
    /// Forwarded to the leader: the leader's answer (or why forwarding failed), passed on.
    Forwarded(Result<Response<Resp>, Status>),
}

/// A write's response: its header is filled in by [`KvService::serve_write`].
pub(crate) trait WriteResponse {
    fn set_header(&mut self, header: ResponseHeader);
}

macro_rules! write_response {
    ($($t:ty),*) => {$(
        impl WriteResponse for $t {
            fn set_header(&mut self, header: ResponseHeader) {
                self.header = Some(header);
            }
        }
    )*};
}
write_response!(
    PutResponse,
    DeleteResponse,
    TxnResponse,
    CompactResponse,
    LeaseGrantResponse,
    LeaseRevokeResponse
);

/// The write path of one member; see the module docs.
#[derive(Clone)]
pub(crate) struct Writer {
    node: Arc<Node>,
}

impl Writer {
    pub(crate) fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// A storage error met while reading: a non-deterministic one (I/O, corruption) means this
    /// member's storage failed, so it fail-stops (see `node::failstop`).
    pub(crate) fn storage_error(&self, source: crate::store::StoreError) -> Status {
        if !source.is_deterministic() {
            self.node.fail_stop(format!("reading the store: {source}"));
        }
        NodeError::Storage {
            member: self.node.name(),
            source,
        }
        .into()
    }

    /// Proposes `command`; on a follower forwards the original request with `forward`.
    async fn write<Req, Resp, F, Fut>(
        &self,
        request: Request<Req>,
        command: LogCommand,
        forward: F,
    ) -> Result<WriteAnswer<Resp>, Status>
    where
        F: FnOnce(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let forwarded = request.metadata().contains_key(FORWARDED_KEY);
        match self.node.write(command).await? {
            WriteOutcome::Applied(_) if self.node.faults().drop_this_write_response() => {
                tracing::warn!("injected fault: dropping the response of an applied write");
                Err(Status::unavailable("injected fault drop-write-responses: the write was applied but its response is dropped"))
            }
            WriteOutcome::Applied(result) => Ok(WriteAnswer::Applied(result)),
            WriteOutcome::NotLeader(leader) => {
                if !self.node.config().forward_writes || forwarded {
                    return Err(NodeError::NotLeader {
                        member: self.node.name(),
                        leader,
                    }
                    .into());
                }
                Ok(WriteAnswer::Forwarded(
                    self.forward(leader, request, forward).await,
                ))
            }
        }
    }

    /// The template of every write: validate first (a rejected request writes nothing), wrap it
    /// into a log command with its exactly-once token, write or forward, then answer with the
    /// result the state machine produced (`pick` takes the expected variant out of it) under a
    /// header at the write's revision.
    pub(crate) async fn serve_write<Req, Resp, F, Fut>(
        &self,
        request: Request<Req>,
        request_id: Option<kvset_proto::v1::RequestId>,
        command: log_command::Command,
        forward: F,
        pick: impl FnOnce(command_result::Result) -> Option<Resp>,
    ) -> Result<Response<Resp>, Status>
    where
        Resp: WriteResponse,
        F: FnOnce(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let command = LogCommand {
            request_id,
            command: Some(command),
        };
        let result = match self.write(request, command, forward).await? {
            WriteAnswer::Applied(result) => result,
            WriteAnswer::Forwarded(answer) => return answer,
        };
        let (revision, mut resp) = expect_result(result, pick)?;
        resp.set_header(self.node.header(revision));
        Ok(Response::new(resp))
    }

    async fn forward<Req, Resp, F, Fut>(
        &self,
        leader: MemberNode,
        request: Request<Req>,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(Channel, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let channel = self.node.member_channel(&leader)?;
        let mut forwarded = Request::new(());
        crate::auth::carry_identity(&request, &mut forwarded);
        let mut forwarded = forwarded.map(|()| request.into_inner());
        forwarded.metadata_mut().insert(
            FORWARDED_KEY,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        forwarded.set_timeout(Duration::from_secs(30));
        tracing::debug!(leader = %leader.name, "forwarding write to the leader");
        let method = std::any::type_name::<Req>()
            .rsplit("::")
            .next()
            .unwrap_or("Write");
        self.node
            .telemetry()
            .forwarded(method.trim_end_matches("Request"));
        call(channel, forwarded)
            .await
            .map_err(|status| self.forward_failed(leader, status))
    }

    /// What to answer when forwarding a write to `leader` failed with `status`.
    ///
    /// "Not the leader" tells a client the write was not applied, so it is answered only when
    /// that is certain: the connection to the leader could not be made (nothing was sent), or
    /// the leader itself refused and named another leader. A lost answer (the leader's
    /// `UNAVAILABLE` without a hint, `UNKNOWN`, a connection that broke mid-call) may follow an
    /// applied write: it becomes [`NodeError::OutcomeUnknown`]. Every other status (limits,
    /// deadlines, which already say "may still be applied") passes through unchanged.
    fn forward_failed(&self, leader: MemberNode, status: Status) -> Status {
        use kvset_proto::{LEADER_METADATA_KEY, OUTCOME_METADATA_KEY};
        let member = self.node.name();
        if never_sent(&status) {
            return NodeError::NotLeader { member, leader }.into();
        }
        let outcome_unknown = status.metadata().contains_key(OUTCOME_METADATA_KEY);
        let leader_refused = status.metadata().contains_key(LEADER_METADATA_KEY);
        match status.code() {
            tonic::Code::Unavailable if outcome_unknown || leader_refused => status,
            tonic::Code::Unavailable | tonic::Code::Unknown => NodeError::OutcomeUnknown {
                member,
                leader,
                reason: status.message().to_string(),
            }
            .into(),
            _ => status,
        }
    }

    pub(crate) async fn read_barrier(&self, consistency: i32) -> Result<(), Status> {
        self.node.check_serving()?;
        if consistency == Consistency::Stale as i32 {
            return Ok(());
        }
        if consistency != Consistency::Linearizable as i32 {
            return Err(Status::invalid_argument(format!(
                "unknown consistency {consistency}: use 0 (LINEARIZABLE) or 1 (STALE)"
            )));
        }
        self.node
            .linearizable_barrier(READ_BARRIER_TIMEOUT)
            .await
            .map_err(Status::from)
    }
}

/// True when a failed call provably never reached the peer: the connection could not be made.
fn never_sent(status: &Status) -> bool {
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Takes the expected variant out of a command result.
fn expect_result<T>(
    result: CommandResult,
    pick: impl FnOnce(command_result::Result) -> Option<T>,
) -> Result<(i64, T), Status> {
    let revision = result.revision;
    if let Some(command_result::Result::Refused(refusal)) = &result.result {
        return Err(refusal_status(refusal));
    }
    match result.result.and_then(pick) {
        Some(r) => Ok((revision, r)),
        None => Err(Status::failed_precondition(
            "this request id (client_id, sequence) was already used by an earlier write whose result \
             is no longer remembered, or by a different kind of write; use a new sequence number",
        )),
    }
}

/// The status a refused command is answered with.
fn refusal_status(refusal: &kvset_proto::raft::CommandRefusal) -> Status {
    use command_refusal::Kind;
    let message = refusal.message.clone();
    match Kind::try_from(refusal.kind) {
        Ok(Kind::NotFound) => Status::not_found(message),
        Ok(Kind::AlreadyExists) => Status::failed_precondition(message),
        Ok(Kind::OutOfRange) => Status::out_of_range(message),
        Err(_) => Status::internal(format!("refused: {message}")),
    }
}
