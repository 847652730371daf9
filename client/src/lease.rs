//! Leases: keys that vanish when their owner stops renewing them.
//!
//! A lease is granted with a TTL in seconds ([`crate::Client::grant`]); keys put with it
//! ([`crate::WriteOptions::lease`], [`crate::TxnOp::put_with_lease`]) are deleted, in one
//! revision, when it is revoked ([`crate::Client::revoke`]) or expires. The leader alone
//! decides expiry; after a leader change the new leader gives every lease a fresh TTL, so a
//! failover never expires a lease whose owner kept renewing it.
//!
//! # Keeping a lease alive
//!
//! [`crate::Client::keep_alive`] starts a background task and returns its handle,
//! [`KeepAlive`]. The task holds a `Lease.KeepAlive` stream open to a member (the known leader
//! first; a follower forwards renewals) and renews the lease every third of its TTL, so two
//! renewals in a row may be lost before the lease is in danger. When the stream breaks it is
//! re-opened, through the same retry loop as every call, on any member that answers. The task
//! stops when the member says the lease is gone (TTL 0: expired or revoked), when a member
//! refuses the stream for good (e.g. `UNIMPLEMENTED`), or when the handle is dropped. Dropping
//! the handle does not revoke the lease: it then expires after its TTL
//! ([`crate::Client::revoke`] ends it at once).
//!
//! # What is retried
//!
//! Every lease call is retried like a read. That is exact for renewals and queries. For a grant
//! whose answer was lost, a retry grants a second lease and the first one expires unused after
//! its TTL (with an explicit id, the retry fails with [`Error::FailedPrecondition`] although the
//! lease was granted). A revoke whose answer was lost may be retried into [`Error::NotFound`]:
//! the lease is gone either way.

use std::time::Duration;

use futures::channel::mpsc;
use kvset_proto::v1 as pb;
use kvset_proto::v1::lease_client::LeaseClient;
use tokio::sync::watch;

use crate::client::{request, Client};
use crate::endpoint::Route;
use crate::error::{Error, Result};
use crate::retry::{self, Backoff, CallSpec, Safety};
use crate::types::{HasHeader, Header};

/// A granted lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseGrant {
    /// Who granted it.
    pub header: Header,
    /// The lease id, to pass to puts, renewals and revokes.
    pub id: i64,
    /// The TTL granted, in seconds (the server may raise a small one to its minimum).
    pub ttl: i64,
}

/// A lease's remaining time ([`crate::Client::time_to_live`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    /// Who answered (the leader, which alone knows the remaining time).
    pub header: Header,
    /// The lease.
    pub id: i64,
    /// Seconds left before it expires.
    pub ttl: i64,
    /// The TTL it was granted with, in seconds.
    pub granted_ttl: i64,
    /// The keys attached to it, when asked for.
    pub keys: Vec<Vec<u8>>,
}

/// One lease of [`crate::Client::leases`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The lease id.
    pub id: i64,
    /// The TTL it was granted with, in seconds.
    pub granted_ttl: i64,
    /// How many keys are attached to it.
    pub keys: i64,
}

/// The state of a keep-alive task ([`KeepAlive::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepAliveStatus {
    /// Not renewed yet (the first renewal is under way).
    Starting,
    /// Renewed: `ttl` is the TTL of the last renewal, `renewals` how many succeeded so far.
    Alive {
        /// Seconds granted by the last renewal.
        ttl: i64,
        /// Successful renewals so far.
        renewals: u64,
    },
    /// The member said the lease does not exist any more (it expired or was revoked). The
    /// task stopped.
    Expired,
    /// The task stopped on an error that retrying cannot fix (the message says which).
    Failed(String),
}

impl KeepAliveStatus {
    /// True once the task stopped ([`KeepAliveStatus::Expired`] or
    /// [`KeepAliveStatus::Failed`]).
    pub fn is_lost(&self) -> bool {
        matches!(self, KeepAliveStatus::Expired | KeepAliveStatus::Failed(_))
    }
}

/// The handle of a keep-alive task: renews the lease until it is dropped. See the
/// [module docs](crate::lease).
#[derive(Debug)]
pub struct KeepAlive {
    id: i64,
    status: watch::Receiver<KeepAliveStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAlive {
    /// The lease this task renews.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The task's state now.
    pub fn status(&self) -> KeepAliveStatus {
        self.status.borrow().clone()
    }

    /// Waits for the next change of state and returns it (a renewal, or the end).
    pub async fn changed(&mut self) -> KeepAliveStatus {
        if self.status.changed().await.is_err() {
            // The task ended without a final state: it was aborted (cannot happen while the
            // handle lives) or panicked.
            let now = self.status();
            if !now.is_lost() {
                return KeepAliveStatus::Failed("the keep-alive task ended".into());
            }
            return now;
        }
        self.status()
    }

    /// Waits until the task stopped (the lease expired or renewing failed for good) and
    /// returns why.
    pub async fn lost(&self) -> KeepAliveStatus {
        let mut rx = self.status.clone();
        let waited = rx
            .wait_for(KeepAliveStatus::is_lost)
            .await
            .map(|status| status.clone());
        match waited {
            Ok(status) => status,
            Err(_) => {
                let now = rx.borrow().clone();
                if now.is_lost() {
                    now
                } else {
                    KeepAliveStatus::Failed("the keep-alive task ended".into())
                }
            }
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The renewal period for a TTL: a third of it, at least 100 ms.
pub(crate) fn renew_every(ttl_seconds: i64) -> Duration {
    let ms = u64::try_from(ttl_seconds.max(0))
        .unwrap_or(0)
        .saturating_mul(1000)
        / 3;
    Duration::from_millis(ms).max(Duration::from_millis(100))
}

impl Client {
    fn lease_spec(&self, op: &'static str) -> CallSpec {
        CallSpec {
            op,
            safety: Safety::Read,
            route: Route::Leader,
            timeout: self.config().retry_deadline,
            max_attempts: 0,
        }
    }

    /// Grants a lease with a TTL in seconds (positive, at most the server's `--max-lease-ttl`;
    /// below its `--min-lease-ttl` it is raised to it).
    pub async fn grant(&self, ttl_seconds: i64) -> Result<LeaseGrant> {
        self.grant_with_id(ttl_seconds, 0).await
    }

    /// Grants a lease with a chosen id (0: the cluster picks one). An id in use fails with
    /// [`Error::FailedPrecondition`].
    pub async fn grant_with_id(&self, ttl_seconds: i64, id: i64) -> Result<LeaseGrant> {
        if ttl_seconds <= 0 {
            return Err(Error::InvalidArgument(format!(
                "lease TTL {ttl_seconds} must be positive: give the time to live in seconds"
            )));
        }
        if id < 0 {
            return Err(Error::InvalidArgument(format!(
                "lease id {id} is negative; give a positive id, or 0 to let the cluster pick"
            )));
        }
        let message = pb::LeaseGrantRequest {
            ttl: ttl_seconds,
            id,
        };
        let (resp, _) = retry::run(
            self.registry(),
            self.config(),
            self.lease_spec("lease grant"),
            |ch, t| async move { LeaseClient::new(ch).grant(request(message, t)).await },
        )
        .await?;
        Ok(LeaseGrant {
            header: Header::from_pb(resp.header),
            id: resp.id,
            ttl: resp.ttl,
        })
    }

    /// Revokes a lease: deletes it and, in one revision, every key attached to it. Returns the
    /// header of the answer (its revision is the one that deleted the keys). An unknown lease
    /// is [`Error::NotFound`].
    pub async fn revoke(&self, id: i64) -> Result<Header> {
        let (resp, _) = retry::run(
            self.registry(),
            self.config(),
            self.lease_spec("lease revoke"),
            |ch, t| async move {
                LeaseClient::new(ch)
                    .revoke(request(pb::LeaseRevokeRequest { id }, t))
                    .await
            },
        )
        .await?;
        Ok(Header::from_pb(resp.header))
    }

    /// Renews a lease once, to its full TTL; returns the TTL granted. A lease that does not
    /// exist (any more) is [`Error::NotFound`].
    pub async fn keep_alive_once(&self, id: i64) -> Result<i64> {
        let (resp, _) = retry::run(
            self.registry(),
            self.config(),
            self.lease_spec("lease keep-alive"),
            |ch, t| async move {
                LeaseClient::new(ch)
                    .keep_alive_once(request(pb::LeaseKeepAliveRequest { id }, t))
                    .await
            },
        )
        .await?;
        if resp.ttl <= 0 {
            return Err(lease_gone(id));
        }
        Ok(resp.ttl)
    }

    /// A lease's remaining and granted TTL, and its keys when `keys` is true. A lease that does
    /// not exist is [`Error::NotFound`].
    pub async fn time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLive> {
        let (resp, _) = retry::run(
            self.registry(),
            self.config(),
            self.lease_spec("lease ttl"),
            |ch, t| async move {
                LeaseClient::new(ch)
                    .time_to_live(request(pb::LeaseTimeToLiveRequest { id, keys }, t))
                    .await
            },
        )
        .await?;
        if resp.ttl < 0 {
            return Err(lease_gone(id));
        }
        Ok(LeaseTimeToLive {
            header: Header::from_pb(resp.header),
            id: resp.id,
            ttl: resp.ttl,
            granted_ttl: resp.granted_ttl,
            keys: resp.keys,
        })
    }

    /// Every lease, by id.
    pub async fn leases(&self) -> Result<Vec<LeaseStatus>> {
        let (resp, _) = retry::run(
            self.registry(),
            self.config(),
            self.lease_spec("lease list"),
            |ch, t| async move {
                LeaseClient::new(ch)
                    .leases(request(pb::LeaseLeasesRequest {}, t))
                    .await
            },
        )
        .await?;
        Ok(resp
            .leases
            .into_iter()
            .map(|l| LeaseStatus {
                id: l.id,
                granted_ttl: l.granted_ttl,
                keys: l.keys,
            })
            .collect())
    }

    /// Starts renewing lease `id` in the background until the returned handle is dropped; see
    /// the [module docs](crate::lease). Returns at once: [`KeepAlive::status`] tells whether
    /// the renewals succeed, [`KeepAlive::lost`] waits for the end.
    pub fn keep_alive(&self, id: i64) -> KeepAlive {
        let (tx, rx) = watch::channel(KeepAliveStatus::Starting);
        let task = tokio::spawn(renew(self.clone(), id, tx));
        KeepAlive {
            id,
            status: rx,
            task,
        }
    }
}

fn lease_gone(id: i64) -> Error {
    Error::NotFound(format!(
        "lease {id} (hex {id:x}) does not exist: it expired or was revoked; grant a new one"
    ))
}

/// An open `Lease.KeepAlive` stream and the answer to its first renewal.
struct Opened {
    header: Option<pb::ResponseHeader>,
    ttl: i64,
    responses: tonic::Streaming<pb::LeaseKeepAliveResponse>,
    requests: mpsc::UnboundedSender<pb::LeaseKeepAliveRequest>,
}

impl HasHeader for Opened {
    fn header(&self) -> Option<&pb::ResponseHeader> {
        self.header.as_ref()
    }
}

/// One attempt: opens the stream and renews once.
async fn open_stream(
    ch: crate::endpoint::Transport,
    id: i64,
) -> std::result::Result<tonic::Response<Opened>, tonic::Status> {
    let (requests, rx) = mpsc::unbounded();
    requests
        .unbounded_send(pb::LeaseKeepAliveRequest { id })
        .expect("the receiver is alive");
    // No gRPC deadline on the stream; the retry loop bounds this attempt.
    let mut responses = LeaseClient::new(ch).keep_alive(rx).await?.into_inner();
    let first = responses.message().await?.ok_or_else(|| {
        tonic::Status::unavailable("the keep-alive stream closed before the first renewal")
    })?;
    Ok(tonic::Response::new(Opened {
        header: first.header,
        ttl: first.ttl,
        responses,
        requests,
    }))
}

/// The keep-alive task: renews `id` every third of its TTL until the lease is gone, renewing
/// fails for good, or the task is aborted (its handle dropped).
async fn renew(client: Client, id: i64, status: watch::Sender<KeepAliveStatus>) {
    let config = client.config().clone();
    let mut renewals = 0u64;
    let mut backoff = Backoff::new(config.backoff_base, config.backoff_max);
    loop {
        let spec = CallSpec {
            op: "lease keep-alive",
            safety: Safety::Read,
            route: Route::Leader,
            timeout: config.retry_deadline,
            max_attempts: 0,
        };
        let opened = retry::run(client.registry(), &config, spec, |ch, _t| {
            open_stream(ch, id)
        })
        .await;
        let (mut stream, endpoint) = match opened {
            Ok(pair) => pair,
            Err(e) if e.is_unavailable() => {
                tracing::debug!(lease = id, error = %e, "keep-alive: no member answered yet; still trying");
                tokio::time::sleep(backoff.next_pause()).await;
                continue;
            }
            Err(e) => {
                let _ = status.send(KeepAliveStatus::Failed(e.to_string()));
                return;
            }
        };
        let mut ttl = stream.ttl;
        loop {
            if ttl <= 0 {
                let _ = status.send(KeepAliveStatus::Expired);
                return;
            }
            renewals += 1;
            let _ = status.send(KeepAliveStatus::Alive { ttl, renewals });
            backoff = Backoff::new(config.backoff_base, config.backoff_max);
            tokio::time::sleep(renew_every(ttl)).await;
            if stream
                .requests
                .unbounded_send(pb::LeaseKeepAliveRequest { id })
                .is_err()
            {
                break;
            }
            match tokio::time::timeout(config.request_timeout, stream.responses.message()).await {
                Ok(Ok(Some(resp))) => ttl = resp.ttl,
                Ok(Ok(None)) => {
                    tracing::debug!(lease = id, endpoint = %endpoint, "keep-alive stream ended; re-opening");
                    break;
                }
                Ok(Err(e)) => {
                    tracing::debug!(lease = id, endpoint = %endpoint, error = %e, "keep-alive stream broke; re-opening");
                    break;
                }
                Err(_) => {
                    tracing::debug!(lease = id, endpoint = %endpoint, "keep-alive: no answer in time; re-opening");
                    break;
                }
            }
        }
        client.registry().on_stream_broken(&endpoint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_come_every_third_of_the_ttl() {
        assert_eq!(renew_every(9), Duration::from_secs(3));
        assert_eq!(renew_every(1), Duration::from_millis(333));
        assert_eq!(renew_every(0), Duration::from_millis(100));
        assert_eq!(renew_every(-5), Duration::from_millis(100));
        assert!(KeepAliveStatus::Expired.is_lost());
        assert!(!KeepAliveStatus::Alive {
            ttl: 5,
            renewals: 1
        }
        .is_lost());
    }
}
