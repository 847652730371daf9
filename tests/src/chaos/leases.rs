//! The lease keepers: one beside each lock client, exercising the two halves of a lease's
//! promise under faults and recording them into `leases.jsonl` for the lease check
//! ([`super::lease_check`]).
//!
//! * **Kept.** A lease (TTL [`KEPT_TTL_S`]) renewed every second (`KeepAliveOnce` on any
//!   member), with the key `lease/<keeper>/kept/<id>` attached. Whatever the faults do, the key
//!   must stay while its owner keeps renewing: a failover gives every lease a fresh TTL, so the
//!   key may only go once the owner has been unable to renew for a whole TTL. The keeper reads
//!   the key every second and once more at the end.
//! * **Short.** Every few seconds a lease of TTL [`SHORT_TTL_S`] with the key
//!   `lease/<keeper>/short/<id>`, never renewed: every other one is revoked at once, the rest
//!   left to expire. Once a revoke is acknowledged the key must be gone for every later read;
//!   at the end (after waiting out their TTLs) every short lease's key must be gone.
//!
//! Renewals carry on through the heal, until [`LeaseKeepers::finish`] has read the keys back;
//! new short leases stop with the load. Every loop is bounded by `stop`, the finish, or the
//! keeper's deadline; every RPC by its own timeout.

use std::time::{Duration, Instant};

use kvset_proto::v1::kv_client::KvClient;
use kvset_proto::v1::lease_client::LeaseClient;
use kvset_proto::v1::{
    Consistency, GetRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
    PutRequest,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::backend::MemberInfo;
use super::jsonl::JsonlLog;
use super::watchers::channel;

/// The kept leases' TTL, seconds.
pub const KEPT_TTL_S: i64 = 10;
/// The short leases' TTL, seconds.
pub const SHORT_TTL_S: i64 = 2;
/// Deadline of one RPC.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a short lease is made.
const SHORT_EVERY: Duration = Duration::from_secs(3);

/// One line of `leases.jsonl`. Times are `ms` since the log opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LeaseRecord {
    /// A lease granted and its key attached (`attached`: the put was acknowledged).
    Grant {
        /// The keeper.
        keeper: u64,
        /// The lease.
        lease: i64,
        /// `kept` or `short`.
        role: String,
        /// The TTL granted, seconds.
        ttl: i64,
        /// The attached key.
        key: String,
        /// Whether the put attaching the key was acknowledged.
        attached: bool,
        /// When the grant was sent.
        invoked_ms: f64,
        /// When the put attaching the key was answered.
        ms: f64,
    },
    /// A renewal acknowledged with a positive TTL.
    Renew {
        /// The lease.
        lease: i64,
        /// When it was sent.
        invoked_ms: f64,
        /// When it was answered.
        ms: f64,
    },
    /// A revoke and its outcome (`ok`, `info`).
    Revoke {
        /// The lease.
        lease: i64,
        /// `ok` or `info`.
        outcome: String,
        /// When it was answered (or given up).
        ms: f64,
    },
    /// A linearizable read of a lease's key.
    Read {
        /// The lease.
        lease: i64,
        /// The key.
        key: String,
        /// Whether it was there.
        present: bool,
        /// When it was sent.
        invoked_ms: f64,
        /// When it was answered.
        ms: f64,
        /// One of the reads after the run.
        #[serde(default)]
        at_end: bool,
    },
}

#[derive(Debug, Clone)]
struct Leased {
    lease: i64,
    key: String,
    granted_at: Instant,
}

/// The running lease keepers.
pub struct LeaseKeepers {
    log: JsonlLog,
    finish: watch::Sender<bool>,
    tasks: Vec<JoinHandle<(Option<Leased>, Vec<Leased>)>>,
    channels: Vec<Channel>,
}

impl LeaseKeepers {
    /// Starts `count` keepers; they make short leases until `stop`, and renew their kept lease
    /// until [`LeaseKeepers::finish`] (never past `lifetime`).
    pub fn start(
        members: &[MemberInfo],
        count: usize,
        log: JsonlLog,
        stop: watch::Receiver<bool>,
        lifetime: Duration,
    ) -> Result<LeaseKeepers, String> {
        let channels = members.iter().map(channel).collect::<Result<Vec<_>, _>>()?;
        let (finish, finish_rx) = watch::channel(false);
        let deadline = Instant::now() + lifetime;
        let tasks = (0..count)
            .map(|id| {
                let k = Keeper {
                    id: id as u64,
                    channels: channels.clone(),
                    member: id,
                    log: log.clone(),
                    stop: stop.clone(),
                    finish: finish_rx.clone(),
                    deadline,
                };
                tokio::spawn(k.run())
            })
            .collect();
        Ok(LeaseKeepers {
            log,
            finish,
            tasks,
            channels,
        })
    }

    /// Reads every lease key back (the kept ones at once, the short ones once their TTL is
    /// surely over), then stops the keepers and revokes the kept leases. Returns harness
    /// errors.
    pub async fn finish(self, timeout: Duration) -> Vec<String> {
        let mut errors = Vec::new();
        let _ = self.finish.send(true);
        let mut kept = Vec::new();
        let mut short = Vec::new();
        for (i, task) in self.tasks.into_iter().enumerate() {
            match tokio::time::timeout(RPC_TIMEOUT * 3, task).await {
                Ok(Ok((k, s))) => {
                    kept.extend(k);
                    short.extend(s);
                }
                _ => errors.push(format!("lease keeper {i} did not stop in time")),
            }
        }
        let reader = Reader {
            channels: self.channels.clone(),
            log: self.log.clone(),
        };
        // The kept leases were renewed until a moment ago.
        for k in &kept {
            if reader.read_at_end(k, timeout, false).await.is_none() {
                errors.push(format!("the kept key {} could not be read back", k.key));
            }
        }
        // The short ones: the leader may take a moment past the TTL to expire them.
        let ttl = Duration::from_secs(SHORT_TTL_S as u64 + 2);
        if let Some(last) = short.iter().map(|s| s.granted_at).max() {
            tokio::time::sleep_until((last + ttl).into()).await;
        }
        for s in &short {
            if reader.read_at_end(s, timeout, true).await.is_none() {
                errors.push(format!(
                    "the short-lease key {} could not be read back",
                    s.key
                ));
            }
        }
        for k in &kept {
            let mut lc = LeaseClient::new(self.channels[0].clone());
            let _ =
                tokio::time::timeout(RPC_TIMEOUT, lc.revoke(LeaseRevokeRequest { id: k.lease }))
                    .await;
        }
        if let Err(e) = self.log.flush() {
            errors.push(format!("writing leases.jsonl: {e}"));
        }
        errors
    }
}

struct Reader {
    channels: Vec<Channel>,
    log: JsonlLog,
}

impl Reader {
    /// Reads `l`'s key on the members in turn until one answers (and, with `until_gone`, until
    /// it is gone) or `timeout`; records every answer. `Some(present)` of the last answer.
    async fn read_at_end(&self, l: &Leased, timeout: Duration, until_gone: bool) -> Option<bool> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        let mut member = 0;
        while Instant::now() < deadline {
            let mut kv = KvClient::new(self.channels[member % self.channels.len()].clone());
            match read_key(&mut kv, &self.log, l, true).await {
                Some(present) => {
                    last = Some(present);
                    if !(until_gone && present) {
                        return last;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                None => member += 1,
            }
        }
        last
    }
}

/// A recorded linearizable read of `l`'s key; `Some(present)` when answered.
async fn read_key(
    kv: &mut KvClient<Channel>,
    log: &JsonlLog,
    l: &Leased,
    at_end: bool,
) -> Option<bool> {
    let invoked_ms = log.ms();
    let get = GetRequest {
        key: l.key.clone().into_bytes(),
        consistency: Consistency::Linearizable as i32,
        revision: 0,
    };
    let resp = tokio::time::timeout(RPC_TIMEOUT, kv.get(get))
        .await
        .ok()?
        .ok()?;
    let present = resp.into_inner().kv.is_some();
    log.append(&LeaseRecord::Read {
        lease: l.lease,
        key: l.key.clone(),
        present,
        invoked_ms,
        ms: log.ms(),
        at_end,
    });
    Some(present)
}

struct Keeper {
    id: u64,
    channels: Vec<Channel>,
    member: usize,
    log: JsonlLog,
    stop: watch::Receiver<bool>,
    finish: watch::Receiver<bool>,
    deadline: Instant,
}

impl Keeper {
    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channels[self.member % self.channels.len()].clone())
    }

    fn leases(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channels[self.member % self.channels.len()].clone())
    }

    fn next_member(&mut self) {
        self.member = (self.member + 1) % self.channels.len();
    }

    /// Runs until finish; returns the kept lease of the moment and every short lease made.
    async fn run(mut self) -> (Option<Leased>, Vec<Leased>) {
        let mut kept: Option<Leased> = None;
        let mut short: Vec<Leased> = Vec::new();
        let mut last_short: Option<Instant> = None;
        while !*self.finish.borrow() && Instant::now() < self.deadline {
            let round = Instant::now();
            match &kept {
                None => kept = self.grant("kept", KEPT_TTL_S).await,
                Some(k) => {
                    let k = k.clone();
                    if !self.renew(&k).await {
                        kept = None;
                    } else {
                        let mut kv = self.kv();
                        if read_key(&mut kv, &self.log, &k, false).await.is_none() {
                            self.next_member();
                        }
                    }
                }
            }
            let due = last_short.is_none_or(|t| t.elapsed() >= SHORT_EVERY);
            if due && !*self.stop.borrow() {
                last_short = Some(Instant::now());
                if let Some(s) = self.grant("short", SHORT_TTL_S).await {
                    if short.len().is_multiple_of(2) {
                        self.revoke(&s).await;
                    }
                    short.push(s);
                }
            }
            let rest = Duration::from_secs(1).saturating_sub(round.elapsed());
            let mut finish = self.finish.clone();
            tokio::select! {
                _ = tokio::time::sleep(rest) => {}
                _ = finish.changed() => {}
            }
        }
        (kept, short)
    }

    /// Grants a lease and attaches a key; `None` when the grant failed. A lease whose key could
    /// not be attached is recorded (`attached: false`) and, if kept, given up.
    async fn grant(&mut self, role: &str, ttl: i64) -> Option<Leased> {
        let invoked_ms = self.log.ms();
        let granted_at = Instant::now();
        let mut leases = self.leases();
        let grant = leases.grant(LeaseGrantRequest { ttl, id: 0 });
        let g = match tokio::time::timeout(RPC_TIMEOUT, grant).await {
            Ok(Ok(g)) => g.into_inner(),
            _ => {
                self.next_member();
                return None;
            }
        };
        let key = format!("lease/{}/{role}/{:x}", self.id, g.id);
        let put = PutRequest {
            key: key.clone().into_bytes(),
            value: b"leased".to_vec(),
            lease: g.id,
            ..Default::default()
        };
        let attached = matches!(
            tokio::time::timeout(RPC_TIMEOUT, self.kv().put(put)).await,
            Ok(Ok(_))
        );
        self.log.append(&LeaseRecord::Grant {
            keeper: self.id,
            lease: g.id,
            role: role.into(),
            ttl: g.ttl,
            key: key.clone(),
            attached,
            invoked_ms,
            ms: self.log.ms(),
        });
        if !attached {
            self.next_member();
            if role == "kept" {
                let l = Leased {
                    lease: g.id,
                    key,
                    granted_at,
                };
                self.revoke(&l).await;
                return None;
            }
        }
        Some(Leased {
            lease: g.id,
            key,
            granted_at,
        })
    }

    /// One renewal; false when the lease is gone.
    async fn renew(&mut self, l: &Leased) -> bool {
        let invoked_ms = self.log.ms();
        let mut leases = self.leases();
        let once = leases.keep_alive_once(LeaseKeepAliveRequest { id: l.lease });
        match tokio::time::timeout(RPC_TIMEOUT, once).await {
            Ok(Ok(r)) if r.get_ref().ttl > 0 => {
                self.log.append(&LeaseRecord::Renew {
                    lease: l.lease,
                    invoked_ms,
                    ms: self.log.ms(),
                });
                true
            }
            Ok(Ok(_)) => false,
            Ok(Err(s)) if s.code() == tonic::Code::NotFound => false,
            _ => {
                self.next_member();
                true
            }
        }
    }

    async fn revoke(&mut self, l: &Leased) {
        let mut leases = self.leases();
        let revoke = leases.revoke(LeaseRevokeRequest { id: l.lease });
        let outcome = match tokio::time::timeout(RPC_TIMEOUT, revoke).await {
            Ok(Ok(_)) => "ok",
            _ => {
                self.next_member();
                "info"
            }
        };
        self.log.append(&LeaseRecord::Revoke {
            lease: l.lease,
            outcome: outcome.into(),
            ms: self.log.ms(),
        });
    }
}
