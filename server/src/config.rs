//! Runtime configuration of one replica, independent of how it was parsed (flags, env, tests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::identity::{PeerDirectory, PodIdentity};
use crate::limits::Limits;

/// Raft timing. Defaults aim at a failover under 3 s on a LAN: a follower notices a dead leader
/// after 600–900 ms without heartbeats and an election takes a round trip or two.
#[derive(Clone, Debug)]
pub struct RaftTiming {
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
}

impl Default for RaftTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(150),
            election_timeout_min: Duration::from_millis(600),
            election_timeout_max: Duration::from_millis(900),
        }
    }
}

/// Everything a replica needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// StatefulSet identity (`kv-0`).
    pub identity: PodIdentity,
    /// How to reach the other members.
    pub peers: PeerDirectory,
    /// The data volume (`/data` in a pod).
    pub data_dir: PathBuf,
    /// Where the public KV / Cluster / health services listen.
    pub client_listen: SocketAddr,
    /// Where the internal Raft service listens.
    pub peer_listen: SocketAddr,
    /// Where `GET /metrics` (Prometheus) is served.
    pub metrics_listen: SocketAddr,
    /// An extra plain-text listener serving only `grpc.health.v1`, for Kubernetes gRPC probes
    /// (which cannot speak TLS) when the client port uses TLS. None: health on the client port only.
    pub health_listen: Option<SocketAddr>,
    /// Pinned cluster id: refuse a volume or peers of another cluster. None: accept what the
    /// volume or the cluster says.
    pub expected_cluster_id: Option<String>,
    /// Where the record that the cluster exists is kept, outside kv-0's volume (see
    /// [`crate::cluster_record`]).
    pub cluster_record: crate::cluster_record::RecordSpec,
    /// With a template directory, how many ordinals a joining member tries (0..n).
    pub join_probe_ordinals: u64,
    /// Forward writes that reach a follower to the leader (true) or refuse them with a hint.
    pub forward_writes: bool,
    /// Hand leadership back to ordinal 0 once it is caught up.
    pub prefer_ordinal_zero: bool,
    /// Take a snapshot (and compact the log) after this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so briefly lagging followers avoid a snapshot.
    pub keep_after_snapshot: u64,
    /// Readiness requires applied index within this many entries of the commit index.
    pub ready_max_lag: u64,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// Request size limits.
    pub limits: Limits,
    /// Raft timing.
    pub timing: RaftTiming,
    /// How long graceful shutdown may take before the process exits anyway.
    pub shutdown_grace: Duration,
    /// TLS on the client port: this member's certificate and key, and the CA client
    /// certificates must chain to (None: no client certificates required). None: plain text.
    pub client_tls: Option<crate::tls::TlsFiles>,
    /// With a client CA: whether every client must present a certificate, or may also come
    /// without one (anonymous, or with a bearer token; see [`crate::auth`]).
    pub client_certs: crate::tls::ClientCerts,
    /// The CA other members' client-port certificates chain to (for forwarding and joining).
    pub client_tls_ca: Option<std::path::PathBuf>,
    /// Mutual TLS on the peer port: certificate, key and the CA peers must chain to.
    pub peer_tls: Option<crate::tls::TlsFiles>,
    /// Deliberate faults (testing only; empty by default).
    pub faults: Vec<crate::faults::Fault>,
    /// The space quota in bytes (0: off); None: a share of the data directory's filesystem
    /// (see `node/quota.rs`).
    pub quota_bytes: Option<u64>,
    /// How often this member measures its store against the quota.
    pub quota_check_interval: Duration,
    /// Where the set's desired size comes from (see [`crate::replicas`]): members at or above it
    /// leave the cluster when they stop.
    pub replicas_from: crate::replicas::ReplicasFrom,
    /// Reach the Kubernetes API here instead of through the in-cluster endpoint (for
    /// `statefulset:` and `configmap:` sources; see [`crate::kube_api::KubeApi`]).
    pub kube_api: Option<crate::kube_api::KubeApi>,
    /// Serve and dial through this in-memory network instead of sockets (in-process test
    /// clusters; see [`crate::memnet`]). Plain text only. None: real sockets.
    pub memory_network: Option<crate::memnet::MemoryNetwork>,
    /// Automatic compaction of the revision history.
    pub auto_compaction: AutoCompaction,
    /// The most revisions one automatic compaction command forgets (the leader moves the
    /// compact revision forward in steps of this size; see `node::compactor`).
    pub auto_compaction_step: i64,
    /// Limits and timing of watches.
    pub watch: WatchSettings,
    /// The TTLs a lease may be granted with, in seconds: below `min` is raised to it, above
    /// `max` is refused.
    pub lease_ttl: LeaseTtl,
    /// Authorization (`--auth-policy`, see [`crate::auth`]). None: off, everyone may do
    /// everything.
    pub auth: Option<crate::auth::AuthSettings>,
}

/// How often a member measures its store against its space quota by default
/// (`--quota-check-ms`; see `node::quota`).
pub const DEFAULT_QUOTA_CHECK_INTERVAL: Duration = Duration::from_secs(5);

impl ServerConfig {
    /// A configuration with production defaults for `identity`.
    pub fn new(identity: PodIdentity, peers: PeerDirectory, data_dir: PathBuf) -> Self {
        let cluster_record = crate::cluster_record::RecordSpec::default_for(&identity.set);
        let replicas_from = crate::replicas::ReplicasFrom::default_for(&identity.set);
        Self {
            replicas_from,
            kube_api: None,
            cluster_record,
            identity,
            peers,
            data_dir,
            client_listen: "0.0.0.0:7379".parse().expect("valid default address"),
            peer_listen: "0.0.0.0:7479".parse().expect("valid default address"),
            metrics_listen: "0.0.0.0:7579".parse().expect("valid default address"),
            health_listen: None,
            expected_cluster_id: None,
            join_probe_ordinals: 16,
            forward_writes: true,
            prefer_ordinal_zero: true,
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
            ready_max_lag: 1_000,
            cache_bytes: 256 * 1024 * 1024,
            limits: Limits::default(),
            timing: RaftTiming::default(),
            shutdown_grace: Duration::from_secs(20),
            client_tls: None,
            client_tls_ca: None,
            client_certs: crate::tls::ClientCerts::Required,
            peer_tls: None,
            faults: Vec::new(),
            quota_bytes: None,
            quota_check_interval: DEFAULT_QUOTA_CHECK_INTERVAL,
            memory_network: None,
            auto_compaction: AutoCompaction::default(),
            auto_compaction_step: DEFAULT_AUTO_COMPACTION_STEP,
            watch: WatchSettings::default(),
            lease_ttl: LeaseTtl::default(),
            auth: None,
        }
    }

    /// The dialer for outbound calls to other members: mutual TLS to peer ports when peer TLS is
    /// on; TLS to client ports when client TLS is on (presenting the peer certificate, so that a
    /// client port that requires client certificates accepts other members).
    pub fn dialer(&self) -> std::sync::Arc<crate::tls::Dialer> {
        if let Some(net) = &self.memory_network {
            return crate::tls::Dialer::in_memory(net.clone(), self.client_listen.ip());
        }
        let client = self.client_tls.as_ref().map(|_| crate::tls::TlsFiles {
            cert: self
                .peer_tls
                .as_ref()
                .map(|p| p.cert.clone())
                .unwrap_or_default(),
            key: self
                .peer_tls
                .as_ref()
                .map(|p| p.key.clone())
                .unwrap_or_default(),
            ca: self.client_tls_ca.clone(),
        });
        crate::tls::Dialer::new(client, self.peer_tls.clone())
    }

    /// The openraft configuration derived from this one.
    pub fn raft_config(&self) -> openraft::Config {
        openraft::Config {
            cluster_name: self.identity.set.clone(),
            heartbeat_interval: self.timing.heartbeat.as_millis() as u64,
            election_timeout_min: self.timing.election_timeout_min.as_millis() as u64,
            election_timeout_max: self.timing.election_timeout_max.as_millis() as u64,
            install_snapshot_timeout: 10_000,
            max_payload_entries: 256,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            ..Default::default()
        }
    }
}

/// The default of [`ServerConfig::auto_compaction_step`]: a slice of history whose deletion a
/// write waits behind unnoticed (docs/BENCHMARKS.md compares step sizes).
pub const DEFAULT_AUTO_COMPACTION_STEP: i64 = 250;

/// How the leader compacts the revision history by itself (`--auto-compaction-mode`,
/// `--auto-compaction-retention`). The compaction is a log command, so every member compacts
/// at the same revision; only the leader decides when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Never: history grows until `kvsetctl compact` (or the quota) stops it.
    Off,
    /// Keep the last N revisions.
    Revisions(i64),
    /// Keep the revisions written within this period.
    Period(Duration),
}

impl Default for AutoCompaction {
    /// Keep the last 10,000 revisions: enough for watchers to resume across failovers and
    /// reconnects, bounded under any write load.
    fn default() -> Self {
        Self::Revisions(10_000)
    }
}

impl AutoCompaction {
    /// Parses the two flags: mode `revision` takes a count of revisions, mode `periodic` a
    /// period (`90s`, `30m`, `1h`, or a bare number of hours, as etcd reads it); retention `0`
    /// in either mode turns automatic compaction off.
    pub fn parse(mode: &str, retention: &str) -> Result<Self, String> {
        let retention = retention.trim();
        match mode {
            "revision" => match retention.parse::<i64>() {
                Ok(0) => Ok(Self::Off),
                Ok(n) if n > 0 => Ok(Self::Revisions(n)),
                _ => Err(format!(
                    "--auto-compaction-retention {retention:?}: with mode revision, give a \
                     number of revisions (0 turns it off)"
                )),
            },
            "periodic" => {
                let (number, unit) = match retention.find(|c: char| c.is_ascii_alphabetic()) {
                    Some(at) => retention.split_at(at),
                    None => (retention, "h"),
                };
                let scale = match unit {
                    "s" => 1,
                    "m" | "min" => 60,
                    "h" => 3600,
                    _ => 0,
                };
                match number.trim().parse::<u64>() {
                    Ok(0) if scale > 0 => Ok(Self::Off),
                    Ok(n) if scale > 0 => Ok(Self::Period(Duration::from_secs(n * scale))),
                    _ => Err(format!(
                        "--auto-compaction-retention {retention:?}: with mode periodic, give a \
                         period such as 90s, 30m or 1h (0 turns it off)"
                    )),
                }
            }
            other => Err(format!(
                "--auto-compaction-mode {other:?}: use revision or periodic"
            )),
        }
    }
}

/// Watch limits and timing (`--max-watchers-per-stream`, `--max-watchers`,
/// `--watch-progress-interval-ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchSettings {
    /// Watchers one Watch stream may hold at once.
    pub max_per_stream: usize,
    /// Watchers this member serves at once, over all streams.
    pub max_per_member: usize,
    /// How often an idle watcher that asked for progress notifications gets one.
    pub progress_interval: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            max_per_stream: 1_000,
            max_per_member: 10_000,
            progress_interval: Duration::from_secs(60),
        }
    }
}

/// The TTLs a lease may have, in seconds (`--min-lease-ttl`, `--max-lease-ttl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTtl {
    /// Shorter TTLs are raised to this: a lease must outlive an election, or a failover could
    /// expire it before its owner's next keep-alive reaches the new leader.
    pub min: i64,
    /// Longer TTLs are refused.
    pub max: i64,
}

impl Default for LeaseTtl {
    fn default() -> Self {
        Self {
            min: 2,
            max: 9_000_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_compaction_flags() {
        assert_eq!(
            AutoCompaction::parse("revision", "500"),
            Ok(AutoCompaction::Revisions(500))
        );
        assert_eq!(
            AutoCompaction::parse("revision", "0"),
            Ok(AutoCompaction::Off)
        );
        assert!(AutoCompaction::parse("revision", "1h").is_err());
        assert_eq!(
            AutoCompaction::parse("periodic", "30m"),
            Ok(AutoCompaction::Period(Duration::from_secs(1800)))
        );
        assert_eq!(
            AutoCompaction::parse("periodic", "2"),
            Ok(AutoCompaction::Period(Duration::from_secs(7200)))
        );
        assert!(AutoCompaction::parse("periodic", "5d").is_err());
        assert!(AutoCompaction::parse("sometimes", "5").is_err());
    }
}
