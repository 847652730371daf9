//! The openraft type configuration shared by storage, network and node.
//!
//! Log entries carry [`kvset_proto::raft::LogCommand`] (the public request messages embedded
//! unchanged, like etcd's `InternalRaftRequest`), and applying one yields a
//! [`kvset_proto::raft::CommandResult`]. openraft wants serde for both; [`Proto`] bridges serde
//! to prost so that the protobuf encoding, with its evolution rules, is the only format of a
//! command anywhere (log, snapshot, dedup table).

use std::fmt;
use std::io::Cursor;
use std::marker::PhantomData;

use kvset_proto::raft::{CommandResult, LogCommand};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Raft node id. Equal to the member's StatefulSet ordinal.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// kvset's openraft type configuration.
    pub TypeConfig:
        D = Proto<LogCommand>,
        R = Proto<CommandResult>,
        NodeId = NodeId,
        Node = MemberNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// What the Raft membership records about each member: enough to reach it and to name it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    /// `<set>-<ordinal>`, e.g. `kv-2`.
    pub name: String,
    /// host:port of the public KV / Cluster services.
    pub client_addr: String,
    /// host:port of the internal Raft service.
    pub peer_addr: String,
}

impl fmt::Display for MemberNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(client={}, peer={})",
            self.name, self.client_addr, self.peer_addr
        )
    }
}

/// A prost message that serde (de)serializes as its protobuf bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Proto<M>(pub M);

impl<M: prost::Message> Serialize for Proto<M> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0.encode_to_vec())
    }
}

impl<'de, M: prost::Message + Default> Deserialize<'de> for Proto<M> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor<M>(PhantomData<M>);

        impl<M: prost::Message + Default> BytesVisitor<M> {
            fn decode<E: serde::de::Error>(bytes: &[u8]) -> Result<Proto<M>, E> {
                M::decode(bytes).map(Proto).map_err(E::custom)
            }
        }

        impl<'de, M: prost::Message + Default> serde::de::Visitor<'de> for BytesVisitor<M> {
            type Value = Proto<M>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("protobuf-encoded bytes")
            }

            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
                Self::decode(v)
            }

            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<Self::Value, E> {
                Self::decode(v)
            }

            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
                Self::decode(&v)
            }

            // Self-describing formats such as JSON hand bytes over as a sequence of numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(b) = seq.next_element::<u8>()? {
                    bytes.push(b);
                }
                Self::decode(&bytes)
            }
        }

        deserializer.deserialize_bytes(BytesVisitor(PhantomData))
    }
}

/// Convenience aliases over openraft's generic types.
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, MemberNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, MemberNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, MemberNode>;

#[cfg(test)]
mod tests {
    use super::*;
    use kvset_proto::v1::PutRequest;

    #[test]
    fn proto_round_trips_through_postcard_and_json() {
        let cmd = Proto(LogCommand {
            request_id: None,
            command: Some(kvset_proto::raft::log_command::Command::Put(PutRequest {
                key: b"k".to_vec(),
                value: vec![0, 255, 7],
                prev_kv: true,
                request_id: None,
                lease: 0,
                ignore_lease: Default::default(),
                ignore_value: Default::default(),
            })),
        });
        let bin = postcard::to_allocvec(&cmd).unwrap();
        assert_eq!(
            postcard::from_bytes::<Proto<LogCommand>>(&bin).unwrap(),
            cmd
        );
        let json = serde_json::to_string(&cmd).unwrap();
        assert_eq!(
            serde_json::from_str::<Proto<LogCommand>>(&json).unwrap(),
            cmd
        );
    }
}
