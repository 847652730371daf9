//! The SDK's data types, and their conversion from the wire types.
//!
//! These mirror the messages of `kvset.v1` but are plain Rust: `Option` instead of absent
//! sub-messages, an enum instead of an `i32` role, the leader's name as `Option<String>`. Every
//! field is public and every type implements `Default`, so tests (including golden tests of the
//! `kvsetctl` renderers) can build values with struct literals.

use std::fmt;

use kvset_proto::v1 as pb;

/// One key with its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty when the read asked for keys only).
    pub value: Vec<u8>,
    /// The revision at which the key was last created.
    pub create_revision: i64,
    /// The revision of the last write to the key.
    pub mod_revision: i64,
    /// Writes since the key was created: 1 after the first put.
    pub version: i64,
    /// The lease the key is attached to (0: none); the key is deleted when the lease ends.
    pub lease: i64,
}

impl KeyValue {
    /// The key as UTF-8, if it is.
    pub fn key_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.key).ok()
    }

    /// The value as UTF-8, if it is.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

impl From<pb::KeyValue> for KeyValue {
    fn from(kv: pb::KeyValue) -> KeyValue {
        KeyValue {
            key: kv.key,
            value: kv.value,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// The role a member plays in the Raft group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Role {
    /// Unknown: not reported, not started, or the member could not be reached.
    #[default]
    Unknown,
    /// The Raft leader: the primary that orders all writes.
    Leader,
    /// A voting follower: a secondary.
    Follower,
    /// A non-voting member catching up.
    Learner,
    /// A voter running an election.
    Candidate,
    /// Shut down or removed.
    Shutdown,
}

impl Role {
    /// Lowercase name as used in `kvsetctl` output: `leader`, `follower`, `learner`,
    /// `candidate`, `shutdown`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Learner => "learner",
            Role::Candidate => "candidate",
            Role::Shutdown => "shutdown",
        }
    }

    pub(crate) fn from_pb(role: i32) -> Role {
        match pb::Role::try_from(role) {
            Ok(pb::Role::Leader) => Role::Leader,
            Ok(pb::Role::Follower) => Role::Follower,
            Ok(pb::Role::Learner) => Role::Learner,
            Ok(pb::Role::Candidate) => Role::Candidate,
            Ok(pb::Role::Shutdown) => Role::Shutdown,
            Ok(pb::Role::Unspecified) | Err(_) => Role::Unknown,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which member served a response, in which term, at which revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// The cluster's id.
    pub cluster_id: String,
    /// The serving member's name (`kv-0`).
    pub member: String,
    /// The serving member's ordinal (its Raft node id).
    pub ordinal: u64,
    /// The serving member's role when it answered.
    pub role: Role,
    /// The Raft term it was in.
    pub term: u64,
    /// The store revision of the answer (for a write: the revision it produced).
    pub revision: i64,
}

impl Header {
    pub(crate) fn from_pb(h: Option<pb::ResponseHeader>) -> Header {
        let h = h.unwrap_or_default();
        let m = h.member.unwrap_or_default();
        Header {
            cluster_id: h.cluster_id,
            member: m.name,
            ordinal: m.ordinal,
            role: Role::from_pb(m.role),
            term: h.raft_term,
            revision: h.revision,
        }
    }
}

/// The result of a put.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// Who served it; `revision` is the revision the put produced.
    pub header: Header,
    /// The key before the put, when asked for and present.
    pub prev_kv: Option<KeyValue>,
}

/// The result of a get, with its header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetResponse {
    /// Who served it and at which revision.
    pub header: Header,
    /// The key, or `None` when it does not exist.
    pub kv: Option<KeyValue>,
}

/// The result of a delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteResponse {
    /// Who served it.
    pub header: Header,
    /// How many keys were deleted.
    pub deleted: i64,
    /// The deleted keys, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// A member as recorded in the Raft membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Member {
    /// Raft node id, equal to the StatefulSet ordinal.
    pub id: u64,
    /// `<set>-<ordinal>`.
    pub name: String,
    /// `host:port` for clients.
    pub client_addr: String,
    /// `host:port` for peers.
    pub peer_addr: String,
    /// Voter (true) or learner (false).
    pub voter: bool,
}

impl From<pb::Member> for Member {
    fn from(m: pb::Member) -> Member {
        Member {
            id: m.id,
            name: m.name,
            client_addr: m.client_addr,
            peer_addr: m.peer_addr,
            voter: m.voter,
        }
    }
}

impl From<Member> for pb::Member {
    fn from(m: Member) -> pb::Member {
        pb::Member {
            id: m.id,
            name: m.name,
            client_addr: m.client_addr,
            peer_addr: m.peer_addr,
            voter: m.voter,
        }
    }
}

/// A member's replication state as seen by the member that answered a status request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberStatus {
    /// The member.
    pub member: Member,
    /// Its role, when known.
    pub role: Role,
    /// Highest log index known replicated to it (leader only).
    pub matched_index: u64,
    /// Commit index minus matched index (leader only).
    pub lag: u64,
    /// On the leader: acknowledged replication recently. Elsewhere: true for self.
    pub healthy: bool,
}

/// One member's view of the cluster (the answer to `Status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The endpoint (`host:port`) that answered.
    pub endpoint: String,
    /// The response header (which member answered).
    pub header: Header,
    /// This member's role.
    pub role: Role,
    /// Current Raft term.
    pub term: u64,
    /// The leader's node id, when known.
    pub leader_id: Option<u64>,
    /// The leader's name, when known.
    pub leader_name: Option<String>,
    /// Highest log index durably stored here.
    pub last_log_index: u64,
    /// Highest log index known committed.
    pub commit_index: u64,
    /// Highest log index applied by this member's state machine.
    pub applied_index: u64,
    /// Store revision of the applied state.
    pub revision: i64,
    /// Every member of the current membership.
    pub members: Vec<MemberStatus>,
    /// Index of the last snapshot.
    pub snapshot_index: u64,
    /// First index still in the log.
    pub first_log_index: u64,
    /// Hash of the key-value state (equal on members at equal revisions).
    pub state_hash: String,
    /// Joined, knows a leader, and applied close to the commit index.
    pub ready: bool,
    /// The server's version string.
    pub version: String,
    /// The alarms active in the cluster, as this member applied them (empty: none).
    pub alarms: Vec<Alarm>,
    /// This member's store usage as its space quota counts it, bytes (0 before its first
    /// check, or from a server without quotas).
    pub store_usage_bytes: u64,
    /// This member's space quota, bytes; 0 when off.
    pub quota_bytes: u64,
    /// The compact revision: history at and below it is forgotten (0: nothing compacted).
    pub compact_revision: i64,
    /// Where the set's desired size comes from: `statefulset`, `file`, or `manual` (members
    /// that stop never leave by themselves); empty from servers that predate it.
    pub membership_mode: String,
    /// The set's desired size as the member last read it; 0 when manual.
    pub desired_replicas: u64,
    /// Authorization on the member: `off`, or `on (…)` naming its policy file; empty from
    /// servers that predate it.
    pub authorization: String,
}

/// The kind of an alarm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AlarmKind {
    /// A member's store passed its space quota: writes that grow the data are refused.
    #[default]
    NoSpace,
    /// A kind this SDK does not know (its proto number).
    Other(i32),
}

impl AlarmKind {
    /// `NOSPACE`, or `ALARM_<n>` for an unknown kind.
    pub fn name(self) -> String {
        match self {
            AlarmKind::NoSpace => "NOSPACE".to_string(),
            AlarmKind::Other(n) => format!("ALARM_{n}"),
        }
    }
}

/// One active alarm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alarm {
    /// The member that raised it (its id, = ordinal).
    pub member_id: u64,
    /// The member's name (`kv-1`).
    pub member_name: String,
    /// The kind.
    pub kind: AlarmKind,
    /// The member's store usage when it raised the alarm, bytes.
    pub usage_bytes: u64,
    /// The member's quota when it raised the alarm, bytes.
    pub quota_bytes: u64,
}

impl Alarm {
    pub(crate) fn from_pb(a: pb::AlarmMember) -> Alarm {
        Alarm {
            member_id: a.member_id,
            member_name: a.member_name,
            kind: if a.alarm == pb::AlarmType::Nospace as i32 {
                AlarmKind::NoSpace
            } else {
                AlarmKind::Other(a.alarm)
            },
            usage_bytes: a.usage_bytes,
            quota_bytes: a.quota_bytes,
        }
    }
}

impl Status {
    pub(crate) fn from_pb(endpoint: String, s: pb::StatusResponse) -> Status {
        Status {
            endpoint,
            header: Header::from_pb(s.header),
            role: Role::from_pb(s.role),
            term: s.term,
            leader_id: s.leader_id,
            leader_name: (!s.leader_name.is_empty()).then_some(s.leader_name),
            last_log_index: s.last_log_index,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            revision: s.revision,
            members: s
                .members
                .into_iter()
                .map(|m| MemberStatus {
                    member: m.member.unwrap_or_default().into(),
                    role: Role::from_pb(m.role),
                    matched_index: m.matched_index,
                    lag: m.lag,
                    healthy: m.healthy,
                })
                .collect(),
            snapshot_index: s.snapshot_index,
            first_log_index: s.first_log_index,
            state_hash: s.state_hash,
            ready: s.ready,
            version: s.version,
            alarms: s.alarms.into_iter().map(Alarm::from_pb).collect(),
            store_usage_bytes: s.store_usage_bytes,
            quota_bytes: s.quota_bytes,
            compact_revision: s.compact_revision,
            membership_mode: s.membership_mode,
            desired_replicas: s.desired_replicas,
            authorization: s.authorization,
        }
    }
}

/// Gives the retry loop access to the header of any response, for leader tracking.
pub(crate) trait HasHeader {
    fn header(&self) -> Option<&pb::ResponseHeader>;
}

macro_rules! has_header {
    ($($t:ty),* $(,)?) => {
        $(impl HasHeader for $t {
            fn header(&self) -> Option<&pb::ResponseHeader> {
                self.header.as_ref()
            }
        })*
    };
}

has_header!(
    pb::PutResponse,
    pb::WhoAmIResponse,
    pb::AuthCheckResponse,
    pb::GetResponse,
    pb::DeleteResponse,
    pb::RangeResponse,
    pb::TxnResponse,
    pb::StatusResponse,
    pb::MembersResponse,
    pb::AddLearnerResponse,
    pb::PromoteResponse,
    pb::RemoveResponse,
    pb::AlarmResponse,
    pb::CompactResponse,
    pb::LeaseGrantResponse,
    pb::LeaseRevokeResponse,
    pb::LeaseKeepAliveResponse,
    pb::LeaseTimeToLiveResponse,
    pb::LeaseLeasesResponse,
);
