//! Coordination recipes built on leases, transactions and watches: [`Lock`] (a mutex) and
//! [`Election`] (leader election), the algorithms of etcd's `concurrency` package.
//!
//! Both rest on the same three facts:
//!
//! 1. **Ownership is a key attached to a lease.** A contender grants a lease, keeps it alive
//!    in the background ([`crate::KeepAlive`]), and creates the key `<name>/<lease id in hex>`
//!    with a transaction that only succeeds if the key does not exist yet. If the contender
//!    dies, its keep-alives stop, the lease expires, and the key is deleted: nobody holds a
//!    lock forever.
//! 2. **The queue is the create revision.** Every key under `<name>/` has the revision that
//!    created it; the contender with the lowest one owns the lock (or leads). This is a fair
//!    FIFO queue that needs no extra state.
//! 3. **Waiting is watching one key.** A contender waits for the deletion of the key just below
//!    its own (the highest create revision lower than its own), not the owner's: each delete
//!    wakes exactly one waiter, and a waiter whose predecessor died (lease expired) re-checks
//!    and watches the next one down.
//!
//! A lock cannot stop a holder that was paused (GC, partition) past its lease's TTL from
//! writing after someone else took the lock. The holder's key and its create revision are
//! exposed ([`LockGuard::fence`], [`Leadership::fence`]) so that writes can be made conditional
//! on still holding it, with a [`crate::Txn`] compare: a *fencing* check evaluated by the
//! state machine at the moment of the write.

mod election;
mod lock;

pub use election::{Election, Leadership};
pub use lock::{Lock, LockGuard};

use crate::client::Client;
use crate::error::Result;
use crate::lease::{KeepAlive, KeepAliveStatus};

/// Default TTL of the lease behind a lock or a campaign, in seconds.
pub const DEFAULT_TTL: i64 = 10;

/// A lease granted for one lock or campaign, kept alive while this value lives. Dropping it
/// stops the renewals and revokes the lease in the background (best effort: if the revoke
/// fails, the lease expires after its TTL), so the key it holds goes away.
#[derive(Debug)]
pub(crate) struct OwnedLease {
    client: Client,
    id: i64,
    keep_alive: Option<KeepAlive>,
    released: bool,
}

impl OwnedLease {
    pub(crate) async fn grant(client: &Client, ttl: i64) -> Result<OwnedLease> {
        let grant = client.grant(ttl).await?;
        Ok(OwnedLease {
            keep_alive: Some(client.keep_alive(grant.id)),
            client: client.clone(),
            id: grant.id,
            released: false,
        })
    }

    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    pub(crate) fn status(&self) -> KeepAliveStatus {
        self.keep_alive
            .as_ref()
            .map_or(KeepAliveStatus::Expired, KeepAlive::status)
    }

    pub(crate) async fn lost(&self) -> KeepAliveStatus {
        match &self.keep_alive {
            Some(k) => k.lost().await,
            None => KeepAliveStatus::Expired,
        }
    }

    /// Stops the renewals and revokes the lease (deleting its keys). A lease that is already
    /// gone is not an error.
    pub(crate) async fn release(mut self) -> Result<()> {
        self.released = true;
        self.keep_alive = None;
        match self.client.revoke(self.id).await {
            Ok(_) | Err(crate::Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for OwnedLease {
    fn drop(&mut self) {
        self.keep_alive = None;
        if self.released {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let id = self.id;
            runtime.spawn(async move {
                if let Err(e) = client.revoke(id).await {
                    tracing::debug!(lease = id, error = %e, "revoking a dropped lock's lease failed; it expires after its TTL");
                }
            });
        }
    }
}

/// `<name>/`: the prefix every contender's key lives under.
pub(crate) fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    if !prefix.ends_with(b"/") {
        prefix.push(b'/');
    }
    prefix
}

/// `<prefix><lease id in lowercase hex>`.
pub(crate) fn key_of(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// Creates `key = value` attached to `lease` unless it exists, in one transaction; returns
/// its create revision (that of the existing key otherwise).
pub(crate) async fn create_key(
    client: &Client,
    key: &[u8],
    value: &[u8],
    lease: i64,
) -> Result<i64> {
    use crate::txn::{Compare, Txn, TxnOp, TxnOpResponse};
    let txn = Txn::new()
        .when([Compare::create_revision(key).equal(0)])
        .and_then([TxnOp::put_with_lease(key, value, lease)])
        .or_else([TxnOp::get(key)]);
    let resp = client.txn(txn).await?;
    if resp.succeeded {
        return Ok(resp.header.revision);
    }
    match resp.responses.first() {
        Some(TxnOpResponse::Range { kvs, .. }) if !kvs.is_empty() => Ok(kvs[0].create_revision),
        _ => Err(crate::Error::Protocol {
            endpoint: resp.header.member.clone(),
            message: "a transaction whose create_revision compare failed did not return the key"
                .into(),
        }),
    }
}

/// Waits until no key under `prefix` has a create revision below `below`: finds the highest
/// one below it, waits for its deletion, and repeats. Returns the revision at which the last
/// check found none.
pub(crate) async fn wait_for_predecessors(
    client: &Client,
    prefix: &[u8],
    below: i64,
) -> Result<i64> {
    use futures::{StreamExt, TryStreamExt};

    use crate::range::{KeyRange, RangeOptions};
    use crate::watch::{EventType, WatchOptions};

    loop {
        let pages: Vec<crate::RangePage> = client
            .pages(KeyRange::prefix(prefix), RangeOptions::new().keys_only())
            .try_collect()
            .await?;
        let read_at = pages.first().map_or(0, |p| p.header.revision);
        let predecessor = pages
            .iter()
            .flat_map(|p| p.kvs.iter())
            .filter(|kv| kv.create_revision < below)
            .max_by_key(|kv| kv.create_revision);
        let Some(predecessor) = predecessor else {
            return Ok(read_at);
        };
        let opts = WatchOptions::key(&predecessor.key).start_revision(read_at + 1);
        let mut events = match client.watch(opts).await {
            Ok(stream) => stream,
            // The history since the read is gone: read again.
            Err(crate::Error::Compacted { .. }) => continue,
            Err(e) => return Err(e),
        };
        loop {
            match events.next().await {
                Some(Ok(batch)) => {
                    if batch.events.iter().any(|e| e.kind == EventType::Delete) {
                        break;
                    }
                }
                Some(Err(crate::Error::Compacted { .. })) => break,
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefix_and_lease_hex() {
        assert_eq!(prefix_of(b"jobs"), b"jobs/");
        assert_eq!(prefix_of(b"jobs/"), b"jobs/");
        assert_eq!(key_of(b"jobs/", 0x1f2e), b"jobs/1f2e");
    }
}
