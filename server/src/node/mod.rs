//! A running member: the Raft handle, its stores, and the decisions that depend on its identity.
//!
//! - [`bootstrap`] decides, from the ordinal and the volume, whether this start initializes the
//!   cluster (kv-0 on an empty volume), joins it (kv-N on an empty volume), or rejoins with the
//!   membership already stored (any member with data). It never re-initializes a volume with
//!   data: a cluster is initialized exactly once, by kv-0, on its first start.
//! - [`join`] is the joining member's side: learn the cluster id, ask to be added as a learner,
//!   catch up (by snapshot if the log was compacted), get promoted to voter.
//! - [`rejoin`] keeps a member that lost its volume out of every quorum until the leader has
//!   re-admitted it: no votes, no elections, no Raft traffic from terms before its re-admission —
//!   durably, in a marker file on the volume that only a confirmed re-admission removes.
//!
//! Invariants established here:
//! - A member takes no Raft traffic at all until its start plan is decided
//!   ([`Node::open_raft_traffic`]); a member that must (re-)join has written its re-join marker
//!   before that.
//! - While the marker exists the member's election timer is off, it grants no vote and refuses
//!   appends and snapshots from leaders below the fence term ([`rejoin::admits`]).
//! - kv-0 that started on an empty volume while the cluster record says the cluster exists serves
//!   no client data ([`Node::check_serving`] answers UNAVAILABLE) until it is a voter again.
//! - [`leadership`] steers elections: the hand-off that openraft 0.9 lacks, used to return
//!   leadership to kv-0 (the preferred primary) and to leave gracefully on SIGTERM.
//! - [`failstop`] turns a storage failure (the Raft core stopped on a full disk, an I/O error, a
//!   failed fsync) into a clean stop: probes and every RPC say so at once, and the process exits
//!   non-zero to restart from what is on disk. A member never lingers half-alive.
//! - [`group_commit`] turns the writes that queue up while a proposal is in flight into one log
//!   entry, and [`read_index`] lets the linearizable reads that wait at the same time share one
//!   quorum round: one fsync and one round trip for many requests.
//! - [`write_pause`] holds new writes while leadership is handed over.
//! - [`quota`] measures this member's store against its space quota and raises the replicated
//!   `NOSPACE` alarm; [`Node::write`] refuses writes that grow the data while one is active.
//! - [`membership`] holds the StatefulSet-shaped membership rules the leader applies (ids are
//!   ordinals, a re-joining voter is demoted first, highest ordinal removed first, never below a
//!   live quorum); the API's Cluster handlers only forward and answer.
//! - [`scale`] makes membership follow the set's size: a member whose ordinal is at or above it
//!   leaves the cluster when it stops, and the leader removes such members that are gone.
//! - [`error`]: the node's own errors ([`NodeError`]); the API layer maps them to gRPC codes.
//! - [`handles`] is what the layers above may see of the node's parts (its fields are private),
//!   and [`observe`] the reading of its state that the metrics show.
//! - [`Node`] (here) is what the API services share: how to write through Raft, how to make a read
//!   linearizable on any member (leader: `ensure_linearizable`; follower: ReadIndex from the leader,
//!   then wait until applied), how to fill response headers.
//!
//! Invariants of the write path:
//!
//! - **Every proposal is bounded by a deadline** ([`group_commit::PROPOSAL_DEADLINE`]). openraft
//!   0.9 answers a proposal only when its entry is applied or truncated; an entry purged by an
//!   installed snapshot is answered never. Past the deadline the writes of that proposal fail
//!   with `DEADLINE_EXCEEDED` ("may or may not be applied"; a retry with the same request id is
//!   safe) and the proposer takes the next batch, so one lost answer cannot hang the member.
//! - **"Not the leader" means "not applied".** A follower answers it only when the forward was
//!   provably not taken (no connection to the leader, or the leader refused); a forward whose
//!   answer is lost is `UNAVAILABLE` with `kvset-outcome: unknown` (see `api/kv.rs`).
//! - **Write pauses are counted**: overlapping hand-offs keep writes paused until the last one
//!   ends, and a pause never outlives the 10 s a write waits for it.
//! - **kv-0's reclaim attempts back off** after failures (2 s doubling to 60 s), since every
//!   attempt pauses the leader's writes.

pub mod bootstrap;
pub mod compactor;
pub mod error;
pub mod failstop;
pub mod group_commit;
pub mod handles;
pub mod join;
pub mod leadership;
pub mod lessor;
pub mod membership;
pub mod observe;
pub mod quota;
pub mod read_index;
pub mod rejoin;
pub mod scale;
pub mod write_pause;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvset_proto::raft::{command_result, log_command, CommandResult, LogCommand};
use kvset_proto::v1::cluster_client::ClusterClient;
use kvset_proto::v1::{AlarmRequest, AlarmResponse, MemberRef, ResponseHeader, Role};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::ServerState;
use tonic::transport::Channel;

use crate::config::ServerConfig;
use crate::raft::network::{ClusterIdCell, PeerNetwork, PeerRpc};
use crate::raft::{LogId, MemberNode, NodeId, Raft, RaftMetrics};
use crate::store::{StateMachineStore, Store};
use crate::tls::Port;
pub use error::NodeError;
use group_commit::{GroupCommit, GroupCommitError};
pub use handles::{BackupSnapshot, RaftInbox};
use leadership::ElectionSteering;
use read_index::ReadIndexCoalescer;
use rejoin::{RejoinMarker, RejoinState};
use write_pause::WriteGate;
pub use write_pause::WritePause;

/// Metadata key marking a request forwarded by a member to the leader: a forwarded request is
/// never forwarded again (no loops while leadership moves).
pub const FORWARDED_KEY: &str = "kvset-forwarded";

/// What a write turned into.
pub enum WriteOutcome {
    /// Committed by a majority and applied here.
    Applied(CommandResult),
    /// This member is not the leader; forward to (or point the client at) this one.
    NotLeader(MemberNode),
}

/// Shared state of a running member.
pub struct Node {
    config: ServerConfig,
    raft: Raft,
    state_machine: StateMachineStore,
    /// The whole store (log and state machine), for what concerns both, such as disk usage.
    store: Store,
    cluster_id: ClusterIdCell,
    network: PeerNetwork,
    steering: Arc<ElectionSteering>,
    faults: crate::faults::Faults,
    telemetry: crate::telemetry::Telemetry,
    shutting_down: AtomicBool,
    /// Set once this process has seen any leader; see [`Node::is_ready`].
    seen_leader: AtomicBool,
    /// Set while a join is in progress; see `api::peer` (no votes while joining).
    joining: AtomicBool,
    /// Holds new writes while a leadership transfer is in progress on this leader.
    write_gate: WriteGate,
    /// False until the start plan is decided: no Raft traffic is taken before.
    raft_traffic_open: AtomicBool,
    /// The durable re-join marker and its state (Some while re-joining); see [`rejoin`].
    rejoin_marker: RejoinMarker,
    rejoin: Mutex<Option<RejoinState>>,
    /// While re-joining: the index of the membership entry in which the leader made this member
    /// a voter again (its answer to Promote); see [`rejoin::readmitted`].
    promoted_at: Mutex<Option<u64>>,
    /// kv-0 on an empty volume waiting to be re-admitted into this cluster (id).
    awaiting_readmission: Mutex<Option<String>>,
    /// Proposes client writes, batching those that wait at the same time.
    group_commit: GroupCommit,
    /// Shares ReadIndex rounds between concurrent linearizable reads.
    read_index: Arc<ReadIndexCoalescer>,
    /// Set for good once storage failed; see [`failstop`].
    fail_stop: failstop::FailStop,
    /// The space quota and the last measured usage; see [`quota`].
    quota: quota::Quota,
    /// The term and last log entry at start-up: reads in that term wait for it (see
    /// [`read_index`], "After a restart").
    restart_floor: Option<read_index::RestartFloor>,
    /// The leader's lease deadlines; see [`lessor`].
    lessor: lessor::Lessor,
    /// The set's desired size, as last read (see [`scale`]).
    desired_replicas: crate::replicas::DesiredReplicas,
    /// Who may do what (see [`crate::auth`]).
    authorizer: Arc<crate::auth::Authorizer>,
}

impl Node {
    pub fn new(
        config: ServerConfig,
        raft: Raft,
        store: &Store,
        cluster_id: ClusterIdCell,
        network: PeerNetwork,
        restart_floor: Option<read_index::RestartFloor>,
        authorizer: Arc<crate::auth::Authorizer>,
    ) -> Arc<Self> {
        let steering = Arc::new(ElectionSteering::new(raft.clone()));
        let faults = crate::faults::Faults::new(config.faults.clone());
        let telemetry = crate::telemetry::Telemetry::new();
        let group_commit = GroupCommit::start(
            group_commit::RaftProposer::new(raft.clone(), &faults),
            telemetry.write_batch_sizes(),
            group_commit::PROPOSAL_DEADLINE,
        );
        let read_index = ReadIndexCoalescer::new(raft.clone(), telemetry.read_index_rounds());
        let rejoin_marker = RejoinMarker::new(&config.data_dir);
        let quota = quota::Quota::resolve(config.quota_bytes, &config.data_dir);
        let desired_replicas = crate::replicas::DesiredReplicas::new(
            crate::replicas::ReplicasSource::open(&config.replicas_from, config.kube_api.as_ref()),
        );
        Arc::new(Self {
            authorizer,
            desired_replicas,
            restart_floor,
            quota,
            faults,
            telemetry,
            group_commit,
            read_index,
            config,
            raft,
            state_machine: store.state_machine(),
            store: store.clone(),
            cluster_id,
            network,
            steering,
            shutting_down: AtomicBool::new(false),
            seen_leader: AtomicBool::new(false),
            joining: AtomicBool::new(false),
            write_gate: WriteGate::default(),
            fail_stop: failstop::FailStop::default(),
            raft_traffic_open: AtomicBool::new(false),
            rejoin_marker,
            rejoin: Mutex::new(None),
            promoted_at: Mutex::new(None),
            awaiting_readmission: Mutex::new(None),
            lessor: lessor::Lessor::default(),
        })
    }

    /// Who may do what on this member (off unless a policy is configured).
    pub fn authorizer(&self) -> &Arc<crate::auth::Authorizer> {
        &self.authorizer
    }

    /// A channel for a call to another member's services (forwarding a client's request,
    /// joining, leaving, raising an alarm). With authorization on it goes to the member's peer
    /// port, where members trust each other (mutual TLS) and a forwarded request carries the
    /// identity this member established (see [`crate::auth`]); otherwise to its client port,
    /// as before authorization existed.
    pub fn member_channel(&self, member: &MemberNode) -> Result<Channel, NodeError> {
        let (port, addr) = if self.authorizer.is_on() {
            (Port::Peer, &member.peer_addr)
        } else {
            (Port::Client, &member.client_addr)
        };
        self.network.dialer().channel(port, addr).map_err(|e| {
            NodeError::FailedPrecondition(format!(
                "cannot reach member {} at {addr:?}: {e}",
                member.name
            ))
        })
    }

    /// The set's desired size, as this member last read it (see [`scale`]).
    pub fn desired_replicas(&self) -> &crate::replicas::DesiredReplicas {
        &self.desired_replicas
    }

    /// `kv-N`.
    pub fn name(&self) -> String {
        self.config.identity.to_string()
    }

    /// This member's node id (= ordinal).
    pub fn id(&self) -> NodeId {
        self.config.identity.ordinal
    }

    /// A copy of the latest Raft metrics.
    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// The role to report for a server state.
    pub fn role_of(state: ServerState) -> Role {
        match state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Learner => Role::Learner,
            ServerState::Candidate => Role::Candidate,
            ServerState::Shutdown => Role::Shutdown,
        }
    }

    /// The response header for an answer at `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        let m = self.raft.metrics();
        let m = m.borrow();
        ResponseHeader {
            cluster_id: self.cluster_id.get().cloned().unwrap_or_default(),
            member: Some(MemberRef {
                name: self.name(),
                ordinal: self.id(),
                role: Self::role_of(m.state) as i32,
            }),
            raft_term: m.current_term,
            revision,
        }
    }

    /// The current leader, if known, with its addresses.
    pub fn leader(&self) -> Option<(NodeId, MemberNode)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// Refuses new requests once storage failed or shutdown began, and while kv-0 waits to be
    /// re-admitted.
    pub fn check_serving(&self) -> Result<(), NodeError> {
        self.check_not_failed()?;
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(NodeError::ShuttingDown(self.name()));
        }
        if let Some(cluster) = self.awaiting_readmission() {
            return Err(NodeError::AwaitingReadmission {
                member: self.name(),
                cluster,
            });
        }
        Ok(())
    }

    /// `UNAVAILABLE` with the cause once storage failed ([`failstop`]); answers that are still
    /// given while shutting down (`Status`) check only this.
    pub fn check_not_failed(&self) -> Result<(), NodeError> {
        match self.fail_stop.cause() {
            Some(cause) => Err(NodeError::StorageFailed {
                member: self.name(),
                cause: cause.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Records a storage failure: the member stops serving and exits ([`failstop`]).
    pub fn fail_stop(&self, cause: impl Into<String>) {
        self.fail_stop.trip(&self.name(), cause);
    }

    /// The storage failure this member stopped on, if any.
    pub fn failure(&self) -> Option<&str> {
        self.fail_stop.cause()
    }

    /// Resolves once storage failed.
    pub async fn failed(&self) {
        self.fail_stop.tripped().await
    }

    /// Runs until the Raft core stops; trips the fail-stop latch if it stopped on an error.
    pub async fn watch_for_storage_failure(&self) {
        self.fail_stop
            .watch_raft(&self.name(), self.raft.clone())
            .await
    }

    /// Lets Raft traffic in (the start plan is decided; a re-join marker, if needed, is written).
    pub fn open_raft_traffic(&self) {
        self.raft_traffic_open.store(true, Ordering::SeqCst);
    }

    /// True once Raft traffic is let in.
    pub fn raft_traffic_open(&self) -> bool {
        self.raft_traffic_open.load(Ordering::SeqCst)
    }

    /// Adopts a re-join state found on the volume at start-up: elections off at once.
    pub fn resume_rejoin(&self, state: RejoinState) {
        self.raft.runtime_config().elect(false);
        *self.rejoin.lock().expect("rejoin lock") = Some(state);
    }

    /// Enters the re-joining state durably (keeping a fence already recorded): elections off,
    /// no votes, the marker on the volume.
    pub fn begin_rejoin(&self) -> Result<(), rejoin::RejoinError> {
        self.raft.runtime_config().elect(false);
        let mut state = self.rejoin.lock().expect("rejoin lock");
        let fence = state.as_ref().map_or(0, |s| s.fence_term);
        self.rejoin_marker.store(fence)?;
        *state = Some(RejoinState::new(fence));
        Ok(())
    }

    /// Raises the fence to `term` (a term learned from the cluster while asking to be
    /// re-admitted), durably, before it is relied on.
    pub fn raise_fence(&self, term: u64) -> Result<(), rejoin::RejoinError> {
        let mut state = self.rejoin.lock().expect("rejoin lock");
        if let Some(s) = state.as_mut() {
            if term > s.fence_term {
                self.rejoin_marker.store(term)?;
                s.fence_term = term;
                tracing::info!(
                    fence_term = term,
                    "re-joining: refusing Raft traffic from older terms"
                );
            }
        }
        Ok(())
    }

    /// Records the leader's answer to this member's promotion: the index of the membership entry
    /// in which it is a voter again (see [`rejoin::readmitted`]).
    pub fn set_promoted_at(&self, membership_index: u64) {
        *self.promoted_at.lock().expect("promotion lock") = Some(membership_index);
    }

    /// Leaves the re-joining state once re-admission is confirmed (see [`rejoin::readmitted`]):
    /// the leader promoted this member in an entry its own log has reached and applied, it is a
    /// voter there, under a leader whose term is at least the fence. Returns whether it did.
    pub fn finish_rejoin_if_readmitted(&self) -> Result<bool, rejoin::RejoinError> {
        let m = self.metrics();
        let promoted_at = *self.promoted_at.lock().expect("promotion lock");
        let mut state = self.rejoin.lock().expect("rejoin lock");
        let Some(s) = state.as_ref() else {
            return Ok(true);
        };
        let view = rejoin::LocalView {
            is_voter: m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == self.id()),
            membership_index: m.membership_config.log_id().map_or(0, |l| l.index),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            leader_known: m.current_leader.is_some(),
            term: m.current_term,
        };
        if !rejoin::readmitted(s, promoted_at, &view) {
            return Ok(false);
        }
        self.rejoin_marker.clear()?;
        *state = None;
        drop(state);
        *self.awaiting_readmission.lock().expect("readmission lock") = None;
        self.raft.runtime_config().elect(true);
        tracing::info!(
            term = m.current_term,
            "re-admitted as a voter; elections and votes back on"
        );
        Ok(true)
    }

    /// The re-join state, while re-joining.
    pub fn rejoin_state(&self) -> Option<RejoinState> {
        self.rejoin.lock().expect("rejoin lock").clone()
    }

    /// True while this member is re-joining (see [`rejoin`]).
    pub fn is_rejoining(&self) -> bool {
        self.rejoin.lock().expect("rejoin lock").is_some()
    }

    /// Marks kv-0 as waiting to be re-admitted into `cluster` (it lost its volume).
    pub fn set_awaiting_readmission(&self, cluster: &str) {
        *self.awaiting_readmission.lock().expect("readmission lock") = Some(cluster.to_string());
    }

    /// The cluster kv-0 waits to be re-admitted into, if it does.
    pub fn awaiting_readmission(&self) -> Option<String> {
        self.awaiting_readmission
            .lock()
            .expect("readmission lock")
            .clone()
    }

    /// Marks the member as leaving: new requests are refused.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Marks whether a join is in progress.
    pub fn set_joining(&self, joining: bool) {
        self.joining.store(joining, Ordering::SeqCst);
    }

    /// True while a join is in progress.
    pub fn is_joining(&self) -> bool {
        self.joining.load(Ordering::SeqCst)
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Readiness for Kubernetes (`grpc.health.v1` service "readiness").
    ///
    /// Ready when the member is a voter (joined and promoted), knows a leader and has applied within
    /// `ready_max_lag` entries of what it has stored. One exception keeps `OrderedReady` from
    /// deadlocking after a full restart: kv-0 comes back first, with a membership of three, and
    /// can elect no leader until kv-1 exists, which Kubernetes creates only once kv-0 is Ready. So
    /// until this process has seen its first leader, a voter that restarted with data counts as
    /// ready ("waiting for quorum"); clients then get UNAVAILABLE and retry. Once a leader was
    /// seen, readiness strictly requires one.
    ///
    /// The same holds for kv-0 waiting to be re-admitted after losing its volume
    /// ([`Node::awaiting_readmission`]): until it knows a leader it counts as ready, so that
    /// Kubernetes creates kv-1 and kv-2, which hold the data and re-admit it; it serves no client
    /// data meanwhile ([`Node::check_serving`]).
    pub fn is_ready(&self) -> bool {
        if self.is_shutting_down() || self.failure().is_some() {
            return false;
        }
        let m = self.metrics();
        if self.awaiting_readmission().is_some() && m.current_leader.is_none() {
            return true;
        }
        // A learner (still joining) is not ready: under OrderedReady the next ordinal must only
        // start once this one counts towards the quorum.
        let is_voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id());
        if !is_voter || self.is_joining() || self.is_rejoining() {
            return false;
        }
        if m.current_leader.is_some() {
            self.seen_leader.store(true, Ordering::SeqCst);
            let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
            let last = m.last_log_index.unwrap_or(0);
            return last.saturating_sub(applied) <= self.config.ready_max_lag;
        }
        !self.seen_leader.load(Ordering::SeqCst)
    }

    /// Holds new writes until [`WritePause`] is dropped (leadership transfer).
    pub fn pause_writes(&self) -> WritePause<'_> {
        self.write_gate.pause()
    }

    /// Proposes a command. On a follower, returns the leader to forward to.
    pub async fn write(&self, command: LogCommand) -> Result<WriteOutcome, NodeError> {
        self.check_serving()?;
        if quota::grows_data(&command) {
            self.check_space("write")?;
        }
        // During a leadership transfer writes wait (briefly) rather than fail: afterwards they
        // go to the new leader through the usual forwarding.
        self.write_gate.wait_open(Duration::from_secs(10)).await;
        let error = match self.group_commit.write(command).await {
            Ok(result) => return Ok(WriteOutcome::Applied(result)),
            Err(GroupCommitError::Raft(e)) => *e,
            Err(e @ GroupCommitError::Stopped) => {
                return Err(NodeError::RaftStopped {
                    member: self.name(),
                    reason: e.to_string(),
                })
            }
            Err(e @ GroupCommitError::MalformedBatchResult { .. }) => {
                return Err(NodeError::Internal(format!("{}: {e}", self.name())))
            }
            Err(e @ GroupCommitError::Deadline { .. }) => {
                return Err(NodeError::Timeout(format!("{}: {e}", self.name())))
            }
        };
        match error {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_node {
                Some(node) if f.leader_id != Some(self.id()) => Ok(WriteOutcome::NotLeader(node)),
                _ => Err(NodeError::NoLeader {
                    member: self.name(),
                }),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                Err(NodeError::FailedPrecondition(e.to_string()))
            }
            RaftError::Fatal(e) => Err(NodeError::RaftStopped {
                member: self.name(),
                reason: e.to_string(),
            }),
        }
    }

    /// Refuses `what` (a request that grows the data) while a `NOSPACE` alarm is active, with
    /// RESOURCE_EXHAUSTED; see [`quota`].
    pub fn check_space(&self, what: &str) -> Result<(), NodeError> {
        quota::check_writable(&self.state_machine.alarms(), what)
    }

    /// Raises or clears an alarm through the Raft log: proposed here when leading, else sent to
    /// the leader's `Cluster.Alarm` (unless this request was itself forwarded). Returns the alarm
    /// table after the command.
    pub async fn propose_alarm(
        &self,
        request: AlarmRequest,
        forwarded: bool,
    ) -> Result<AlarmResponse, NodeError> {
        let command = LogCommand {
            request_id: None,
            command: Some(log_command::Command::Alarm(request.clone())),
        };
        match self.write(command).await? {
            WriteOutcome::Applied(result) => match result.result {
                Some(command_result::Result::Alarm(mut answer)) => {
                    answer.header = Some(self.header(result.revision));
                    Ok(answer)
                }
                _ => Err(NodeError::Internal(format!(
                    "{}: an alarm command returned no alarm table",
                    self.name()
                ))),
            },
            WriteOutcome::NotLeader(leader) if forwarded => Err(NodeError::NotLeader {
                member: self.name(),
                leader,
            }),
            WriteOutcome::NotLeader(leader) => {
                let channel = self.member_channel(&leader)?;
                let mut call = tonic::Request::new(request);
                call.metadata_mut().insert(
                    FORWARDED_KEY,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                call.set_timeout(Duration::from_secs(30));
                ClusterClient::new(channel)
                    .alarm(call)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(NodeError::Forwarded)
            }
        }
    }

    /// The read index for a linearizable read that begins now, if this member leads: a quorum
    /// round shared with the other reads waiting for one (see [`read_index`]).
    pub async fn read_index(&self) -> read_index::ReadIndexResult {
        let read = self.read_index.read_log_id().await?;
        let term = self.raft.metrics().borrow().current_term;
        Ok(read_index::RestartFloor::apply(
            self.restart_floor.as_ref(),
            term,
            read,
        ))
    }

    /// Waits until a read on this member is linearizable: the leader confirms its leadership
    /// with a quorum (ReadIndex), and this member has applied at least up to that index.
    pub async fn linearizable_barrier(&self, timeout: Duration) -> Result<(), NodeError> {
        self.check_serving()?;
        if self.faults.stale_linearizable_reads() {
            return Ok(());
        }
        let read_log_id: Option<LogId> = match self.read_index().await {
            Ok(read_log_id) => read_log_id,
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                let (leader_id, leader) = match (f.leader_id, f.leader_node) {
                    (Some(id), Some(node)) if id != self.id() => (id, node),
                    _ => {
                        return Err(NodeError::NoLeader {
                            member: self.name(),
                        })
                    }
                };
                let mut peer = self.network.client_for(leader_id, &leader);
                let reply: Result<
                    Option<LogId>,
                    RaftError<NodeId, CheckIsLeaderError<NodeId, MemberNode>>,
                > = peer
                    .call(PeerRpc::ReadIndex, &(), timeout)
                    .await
                    .map_err(|_| NodeError::NotLeader {
                        member: self.name(),
                        leader: leader.clone(),
                    })?;
                reply.map_err(|_| NodeError::NotLeader {
                    member: self.name(),
                    leader,
                })?
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                return Err(NodeError::NoLeader {
                    member: format!("{} ({e})", self.name()),
                })
            }
            Err(RaftError::Fatal(e)) => {
                return Err(NodeError::RaftStopped {
                    member: self.name(),
                    reason: e.to_string(),
                })
            }
        };
        if let Some(log_id) = read_log_id {
            self.raft
                .wait(Some(timeout))
                .applied_index_at_least(Some(log_id.index), "linearizable read")
                .await
                .map_err(|e| {
                    NodeError::Timeout(format!(
                        "{} did not catch up for a linearizable read: {e}",
                        self.name()
                    ))
                })?;
        }
        Ok(())
    }

    /// A channel to another member's client port (forwarding, probes).
    pub fn client_channel(&self, addr: &str) -> Result<Channel, NodeError> {
        self.network
            .dialer()
            .channel(Port::Client, addr)
            .map_err(|e| {
                NodeError::FailedPrecondition(format!("cannot reach member at {addr:?}: {e}"))
            })
    }
}
