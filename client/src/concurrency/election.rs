//! [`Election`]: leader election (etcd's `concurrency.Election`); see the
//! [module docs](crate::concurrency) for the algorithm. The leader is the contender whose key
//! under `<name>/` has the lowest create revision; its value is what it proclaims.

use futures::{Stream, StreamExt, TryStreamExt};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::lease::KeepAliveStatus;
use crate::range::{KeyRange, RangeOptions};
use crate::txn::{Compare, Txn, TxnOp};
use crate::types::KeyValue;
use crate::watch::{EventType, WatchOptions, WatchStream};

use super::{create_key, key_of, prefix_of, wait_for_predecessors, OwnedLease, DEFAULT_TTL};

/// A named election.
#[derive(Debug, Clone)]
pub struct Election {
    client: Client,
    prefix: Vec<u8>,
    ttl: i64,
}

impl Election {
    /// The election `name`: candidates' keys live under `<name>/`.
    pub fn new(client: &Client, name: impl AsRef<[u8]>) -> Election {
        Election {
            client: client.clone(),
            prefix: prefix_of(name.as_ref()),
            ttl: DEFAULT_TTL,
        }
    }

    /// The TTL of the lease behind a campaign, in seconds (default [`DEFAULT_TTL`]).
    pub fn ttl(mut self, seconds: i64) -> Election {
        self.ttl = seconds;
        self
    }

    /// Campaigns with `value` and returns once this candidate leads. Candidates are served in
    /// the order they started campaigning. Dropping the future withdraws the candidacy.
    pub async fn campaign(&self, value: impl AsRef<[u8]>) -> Result<Leadership> {
        if self.prefix == b"/" {
            return Err(Error::InvalidArgument(
                "the election name is empty; name the election (its keys live under <name>/)"
                    .into(),
            ));
        }
        let lease = OwnedLease::grant(&self.client, self.ttl).await?;
        let key = key_of(&self.prefix, lease.id());
        let revision = create_key(&self.client, &key, value.as_ref(), lease.id()).await?;
        tokio::select! {
            waited = wait_for_predecessors(&self.client, &self.prefix, revision) => { waited?; }
            lost = lease.lost() => return Err(lost_leadership(&key, &lost)),
        }
        if self.client.get(&key).await?.is_none() {
            return Err(lost_leadership(&key, &lease.status()));
        }
        Ok(Leadership {
            client: self.client.clone(),
            key,
            revision,
            lease,
        })
    }

    /// The current leader's key and value (`None`: no candidate).
    pub async fn leader(&self) -> Result<Option<KeyValue>> {
        Ok(leader_at(&self.client, &self.prefix).await?.0)
    }

    /// A stream of the leader: the current one first (once there is one), then every value a
    /// leader proclaims and every new leader, in order. It follows the cluster across failovers
    /// like any watch, and ends only on an error.
    pub fn observe(&self) -> impl Stream<Item = Result<KeyValue>> + Send + 'static {
        struct State {
            client: Client,
            prefix: Vec<u8>,
            /// The leader's key and a watch on it, once known.
            current: Option<(Vec<u8>, WatchStream)>,
            failed: bool,
        }
        let state = State {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            current: None,
            failed: false,
        };
        futures::stream::unfold(state, |mut st| async move {
            if st.failed {
                return None;
            }
            loop {
                let result = match st.current.as_mut() {
                    None => find_leader(&st.client, &st.prefix)
                        .await
                        .map(|(kv, watch)| {
                            st.current = Some((kv.key.clone(), watch));
                            Some(kv)
                        }),
                    Some((key, watch)) => match watch.next().await {
                        Some(Ok(batch)) => {
                            let mut latest = None;
                            for event in batch.events.into_iter().filter(|e| &e.kv.key == key) {
                                match event.kind {
                                    EventType::Put => latest = Some(event.kv),
                                    EventType::Delete => {
                                        latest = None;
                                        st.current = None;
                                        break;
                                    }
                                }
                            }
                            Ok(latest)
                        }
                        // The leader's history is gone: look again from now.
                        Some(Err(Error::Compacted { .. })) | None => {
                            st.current = None;
                            Ok(None)
                        }
                        Some(Err(e)) => Err(e),
                    },
                };
                match result {
                    Ok(Some(kv)) => return Some((Ok(kv), st)),
                    Ok(None) => {}
                    Err(e) => {
                        st.failed = true;
                        return Some((Err(e), st));
                    }
                }
            }
        })
    }
}

/// The key with the lowest create revision under `prefix`, and the revision of the read.
async fn leader_at(client: &Client, prefix: &[u8]) -> Result<(Option<KeyValue>, i64)> {
    let pages: Vec<crate::RangePage> = client
        .pages(KeyRange::prefix(prefix), RangeOptions::new())
        .try_collect()
        .await?;
    let read_at = pages.first().map_or(0, |p| p.header.revision);
    let leader = pages
        .into_iter()
        .flat_map(|p| p.kvs)
        .min_by_key(|kv| kv.create_revision);
    Ok((leader, read_at))
}

/// Waits for a leader and returns it with a watch on its key from right after it was seen.
async fn find_leader(client: &Client, prefix: &[u8]) -> Result<(KeyValue, WatchStream)> {
    loop {
        let (leader, read_at) = leader_at(client, prefix).await?;
        if let Some(kv) = leader {
            let watch = client
                .watch(WatchOptions::key(&kv.key).start_revision(read_at + 1))
                .await;
            match watch {
                Ok(w) => return Ok((kv, w)),
                Err(Error::Compacted { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        // No candidate: the first key created under the prefix is the next leader.
        let mut keys = match client
            .watch(WatchOptions::prefix(prefix).start_revision(read_at + 1))
            .await
        {
            Ok(w) => w,
            Err(Error::Compacted { .. }) => continue,
            Err(e) => return Err(e),
        };
        while let Some(batch) = keys.next().await {
            let batch = match batch {
                Ok(b) => b,
                Err(Error::Compacted { .. }) => break,
                Err(e) => return Err(e),
            };
            let first = batch
                .events
                .into_iter()
                .find(|e| e.kind == EventType::Put && e.kv.create_revision == e.kv.mod_revision);
            if let Some(event) = first {
                let from = event.kv.mod_revision + 1;
                let w = client
                    .watch(WatchOptions::key(&event.kv.key).start_revision(from))
                    .await;
                match w {
                    Ok(w) => return Ok((event.kv, w)),
                    Err(Error::Compacted { .. }) => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

fn lost_leadership(key: &[u8], status: &KeepAliveStatus) -> Error {
    Error::FailedPrecondition(format!(
        "lost the lease behind election key {:?} ({status:?}); campaign again",
        String::from_utf8_lossy(key)
    ))
}

/// Leadership won by [`Election::campaign`]. Dropping it resigns in the background (the lease
/// is revoked, deleting the key).
#[derive(Debug)]
pub struct Leadership {
    client: Client,
    key: Vec<u8>,
    revision: i64,
    lease: OwnedLease,
}

impl Leadership {
    /// The leader's key, `<name>/<lease id in hex>`.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The create revision of the leader's key.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The lease behind the leadership.
    pub fn lease_id(&self) -> i64 {
        self.lease.id()
    }

    /// A compare that holds only while this leadership lasts: fence writes with it.
    pub fn fence(&self) -> Compare {
        Compare::create_revision(&self.key).equal(self.revision)
    }

    /// Waits until the lease behind the leadership is lost.
    pub async fn lost(&self) -> KeepAliveStatus {
        self.lease.lost().await
    }

    /// Sets the leader's value (what observers see), if this is still the leader;
    /// [`Error::FailedPrecondition`] otherwise.
    pub async fn proclaim(&self, value: impl AsRef<[u8]>) -> Result<()> {
        let txn = Txn::new()
            .when([self.fence()])
            .and_then([TxnOp::put_with_lease(&self.key, value, self.lease.id())]);
        if self.client.txn(txn).await?.succeeded {
            Ok(())
        } else {
            Err(Error::FailedPrecondition(format!(
                "not the leader any more: election key {:?} is gone (its lease expired?)",
                String::from_utf8_lossy(&self.key)
            )))
        }
    }

    /// Gives up the leadership: deletes the key (the next candidate takes over) and revokes
    /// the lease.
    pub async fn resign(self) -> Result<()> {
        let Leadership {
            client, key, lease, ..
        } = self;
        client.delete(&key).await?;
        lease.release().await
    }
}
