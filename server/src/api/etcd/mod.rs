//! etcd's v3 gRPC API (`etcdserverpb`), served on the client port beside kvset's own.
//!
//! Everything here is translation. Each etcd call is turned into the kvset call that means the
//! same, handed to kvset's own service in-process (`api/kv.rs`, `api/watch.rs`,
//! `api/lease.rs`, `api/cluster.rs`), and the answer is turned back. So an etcd client gets the
//! same node operations, the same leader forwarding (invisible to it), the same history,
//! watches and leases as a kvset client — there is no second implementation to drift, and a
//! fix to kvset's semantics fixes both front ends.
//!
//! What needs more than a field-for-field copy:
//!
//! - **Ids.** etcd's cluster and member ids are 64-bit numbers; kvset's cluster id is a string
//!   and its members are named by ordinal. [`cluster_id`] and [`member_id`] derive stable
//!   numbers from them (a hash), the same on every member.
//! - **Key ranges.** etcd's `range_end` conventions (empty: one key; `"\0"`: every key from
//!   `key` on) map onto kvset's ranges (`kv.rs`).
//! - **Range options kvset lacks** (sort, count_only, min/max revision filters) are applied to
//!   kvset's answer here, reading every page of the range at one pinned revision when they
//!   need the whole range.
//! - **Errors.** Client libraries match etcd's error messages (`etcdserver: mvcc: required
//!   revision has been compacted`, `etcdserver: requested lease not found`, …) and codes to
//!   decide what to retry; [`etcd_status`] rewrites kvset's statuses into them.

pub mod cluster;
pub mod kv;
pub mod lease;
pub mod watch;

use kvset_proto::etcd::etcdserverpb as pb;
use kvset_proto::v1;
use sha2::{Digest, Sha256};
use tonic::{Code, Status};

/// The etcd cluster id of the kvset cluster `cluster`.
pub fn cluster_id(cluster: &str) -> u64 {
    stable_id(&[cluster.as_bytes()])
}

/// The etcd member id of member `name` of cluster `cluster`.
pub fn member_id(cluster: &str, name: &str) -> u64 {
    stable_id(&[cluster.as_bytes(), b"/", name.as_bytes()])
}

/// A non-zero 64-bit id from the first bytes of a SHA-256 (etcd treats id 0 as "none").
fn stable_id(parts: &[&[u8]]) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let digest = h.finalize();
    let mut id = [0; 8];
    id.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(id).max(1)
}

/// etcd's header for kvset's.
pub fn header(h: Option<&v1::ResponseHeader>) -> Option<pb::ResponseHeader> {
    let h = h?;
    let name = h
        .member
        .as_ref()
        .map(|m| m.name.as_str())
        .unwrap_or_default();
    Some(pb::ResponseHeader {
        cluster_id: cluster_id(&h.cluster_id),
        member_id: member_id(&h.cluster_id, name),
        revision: h.revision,
        raft_term: h.raft_term,
    })
}

/// etcd's KeyValue for kvset's.
pub fn key_value(kv: v1::KeyValue) -> kvset_proto::etcd::mvccpb::KeyValue {
    kvset_proto::etcd::mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// etcd's error texts (what client libraries match on).
pub mod errors {
    /// A read or watch below the compact revision.
    pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
    /// A read above the current revision.
    pub const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
    /// A lease that does not exist.
    pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
    /// A lease id in use.
    pub const LEASE_EXIST: &str = "etcdserver: lease already exists";
    /// A TTL above the maximum.
    pub const LEASE_TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
    /// A request without its key.
    pub const EMPTY_KEY: &str = "etcdserver: key is not provided";
    /// ignore_value / ignore_lease on a missing key.
    pub const KEY_NOT_FOUND: &str = "etcdserver: key not found";
    /// Too many operations in one Txn.
    pub const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
    /// A request over the size limits.
    pub const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
    /// No leader to serve the request.
    pub const NO_LEADER: &str = "etcdserver: no leader";
    /// The space quota is exhausted.
    pub const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
    /// A request timed out.
    pub const TIMEOUT: &str = "etcdserver: request timed out";
}

/// Rewrites a kvset status into the one etcd would answer, where clients depend on it; kvset's
/// own message follows etcd's after " — " so nothing of it is lost.
pub fn etcd_status(s: Status) -> Status {
    let message = s.message();
    let lower = message.to_ascii_lowercase();
    let etcd = match s.code() {
        Code::OutOfRange if lower.contains("future") => {
            Some((Code::OutOfRange, errors::FUTURE_REV))
        }
        Code::OutOfRange if lower.contains("compact") => {
            Some((Code::OutOfRange, errors::COMPACTED))
        }
        Code::NotFound if lower.contains("lease") => {
            Some((Code::NotFound, errors::LEASE_NOT_FOUND))
        }
        Code::NotFound if lower.contains("ignore_value") => {
            Some((Code::InvalidArgument, errors::KEY_NOT_FOUND))
        }
        Code::FailedPrecondition if lower.contains("lease") && lower.contains("exists") => {
            Some((Code::FailedPrecondition, errors::LEASE_EXIST))
        }
        Code::InvalidArgument if lower.contains("ttl") && lower.contains("maximum") => {
            Some((Code::OutOfRange, errors::LEASE_TTL_TOO_LARGE))
        }
        Code::InvalidArgument if lower.contains("--max-txn-ops") => {
            Some((Code::InvalidArgument, errors::TOO_MANY_OPS))
        }
        Code::InvalidArgument if lower.contains("must not be empty") => {
            Some((Code::InvalidArgument, errors::EMPTY_KEY))
        }
        Code::InvalidArgument if lower.contains("bytes; the limit is") => {
            Some((Code::InvalidArgument, errors::REQUEST_TOO_LARGE))
        }
        Code::ResourceExhausted => Some((Code::ResourceExhausted, errors::NO_SPACE)),
        Code::DeadlineExceeded => Some((Code::Unavailable, errors::TIMEOUT)),
        Code::Unavailable if lower.contains("no leader") => {
            Some((Code::Unavailable, errors::NO_LEADER))
        }
        _ => None,
    };
    match etcd {
        Some((code, text)) => Status::new(code, format!("{text} — {message}")),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_non_zero() {
        assert_eq!(member_id("c1", "kv-0"), member_id("c1", "kv-0"));
        assert_ne!(member_id("c1", "kv-0"), member_id("c1", "kv-1"));
        assert_ne!(member_id("c1", "kv-0"), member_id("c2", "kv-0"));
        assert_ne!(cluster_id("c1"), 0);
    }

    #[test]
    fn statuses_carry_etcds_texts() {
        let compacted = etcd_status(Status::out_of_range(
            "revision 3 is compacted; the compact revision is 5",
        ));
        assert!(compacted.message().starts_with(errors::COMPACTED));
        assert!(compacted.message().contains("compact revision is 5"));
        let lease = etcd_status(Status::not_found("lease 7 does not exist"));
        assert!(lease.message().starts_with(errors::LEASE_NOT_FOUND));
        let other = etcd_status(Status::internal("disk on fire"));
        assert_eq!(other.message(), "disk on fire");
    }
}
