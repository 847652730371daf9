//! [`Lock`]: a distributed mutex (etcd's `concurrency.Mutex`); see the
//! [module docs](crate::concurrency) for the algorithm.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::lease::KeepAliveStatus;
use crate::txn::Compare;

use super::{create_key, key_of, prefix_of, wait_for_predecessors, OwnedLease, DEFAULT_TTL};

/// A named lock. Cheap; [`Lock::lock`] does the work.
///
/// ```no_run
/// # async fn demo(client: kvset_client::Client) -> kvset_client::Result<()> {
/// use kvset_client::{Compare, Lock, Txn, TxnOp};
/// let guard = Lock::new(&client, "jobs/nightly").lock().await?;
/// // Write only while still holding the lock (a fenced write):
/// let txn = Txn::new().when([guard.fence()]).and_then([TxnOp::put("jobs/last", "ok")]);
/// assert!(client.txn(txn).await?.succeeded);
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Lock {
    client: Client,
    prefix: Vec<u8>,
    ttl: i64,
}

impl Lock {
    /// The lock `name`: contenders' keys live under `<name>/`.
    pub fn new(client: &Client, name: impl AsRef<[u8]>) -> Lock {
        Lock {
            client: client.clone(),
            prefix: prefix_of(name.as_ref()),
            ttl: DEFAULT_TTL,
        }
    }

    /// The TTL of the lease behind the lock, in seconds (default [`DEFAULT_TTL`]): how long
    /// the lock outlives a holder that died without unlocking.
    pub fn ttl(mut self, seconds: i64) -> Lock {
        self.ttl = seconds;
        self
    }

    /// Waits until the lock is held and returns the guard. Waiting is fair (first come, first
    /// served). Cancelling the wait (dropping the future) withdraws from the queue: the lease
    /// is revoked in the background.
    pub async fn lock(&self) -> Result<LockGuard> {
        if self.prefix == b"/" {
            return Err(Error::InvalidArgument(
                "the lock name is empty; name the lock (its keys live under <name>/)".into(),
            ));
        }
        let lease = OwnedLease::grant(&self.client, self.ttl).await?;
        let key = key_of(&self.prefix, lease.id());
        let revision = create_key(&self.client, &key, b"", lease.id()).await?;
        tokio::select! {
            waited = wait_for_predecessors(&self.client, &self.prefix, revision) => { waited?; }
            lost = lease.lost() => return Err(lease_lost(&key, &lost)),
        }
        // The lease may have expired while waiting, taking the key with it.
        if self.client.get(&key).await?.is_none() {
            return Err(lease_lost(&key, &lease.status()));
        }
        Ok(LockGuard {
            client: self.client.clone(),
            key,
            revision,
            lease,
        })
    }
}

fn lease_lost(key: &[u8], status: &KeepAliveStatus) -> Error {
    Error::FailedPrecondition(format!(
        "lost the lease behind lock key {:?} ({status:?}); its key is gone, lock again",
        String::from_utf8_lossy(key)
    ))
}

/// A held lock. [`LockGuard::unlock`] releases it; dropping the guard releases it too, in the
/// background (the lease is revoked, which deletes the key).
#[derive(Debug)]
pub struct LockGuard {
    client: Client,
    key: Vec<u8>,
    revision: i64,
    lease: OwnedLease,
}

impl LockGuard {
    /// The lock key, `<name>/<lease id in hex>`.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The create revision of the lock key: the holder's place in the queue, and what
    /// [`LockGuard::fence`] compares.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The lease the lock key is attached to.
    pub fn lease_id(&self) -> i64 {
        self.lease.id()
    }

    /// A compare that holds only while this guard still holds the lock (its key exists with
    /// the same create revision): put it in the `when` of a [`crate::Txn`] to fence a write.
    pub fn fence(&self) -> Compare {
        Compare::create_revision(&self.key).equal(self.revision)
    }

    /// The state of the lease's keep-alive task: [`KeepAliveStatus::is_lost`] means the lock
    /// may be gone.
    pub fn lease_status(&self) -> KeepAliveStatus {
        self.lease.status()
    }

    /// Waits until the lease behind the lock is lost (expired, or renewing failed for good).
    pub async fn lost(&self) -> KeepAliveStatus {
        self.lease.lost().await
    }

    /// Releases the lock: deletes the key and revokes the lease.
    pub async fn unlock(self) -> Result<()> {
        let LockGuard {
            client, key, lease, ..
        } = self;
        client.delete(&key).await?;
        lease.release().await
    }
}
