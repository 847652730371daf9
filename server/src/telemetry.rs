//! Prometheus metrics, served as OpenMetrics text on `GET /metrics` of the metrics port.
//!
//! Two kinds: counters and histograms that the request handlers update as they go
//! ([`Telemetry::observe`]), and gauges that describe the member's state (Raft term, indexes,
//! membership, store size), which are set from a [`StateReading`] taken at scrape time so they
//! are never stale. A small watcher counts events the scrape could miss between two scrapes
//! (leader changes, snapshots). Every name and its meaning is listed in `docs/OPERATIONS.md`;
//! keep the two in step.
//!
//! This module only holds and encodes the metrics; it knows nothing of the node. The node takes
//! the reading (`node::observe`), and the `/metrics` endpoint that asks for one and serves the
//! text is part of the API layer (`api::metrics`). So everything here looks down, nothing up.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The gRPC method, e.g. `Put`.
    pub method: String,
    /// The gRPC status code name, e.g. `Ok`, `Unavailable`.
    pub code: String,
}

/// Labels naming a method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

/// Gauges refreshed at scrape time.
#[derive(Default)]
struct StateGauges {
    term: Gauge,
    is_leader: Gauge,
    leader_id: Gauge,
    last_log_index: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    snapshot_index: Gauge,
    log_entries: Gauge,
    voters: Gauge,
    learners: Gauge,
    revision: Gauge,
    keys: Gauge,
    disk_bytes: Gauge,
    usage_bytes: Gauge,
    quota_bytes: Gauge,
    ready: Gauge,
    /// 1 while an alarm of that kind is active (as applied here), by `alarm`.
    alarms: Family<AlarmLabels, Gauge>,
}

/// Labels naming an alarm kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlarmLabels {
    /// `nospace`.
    pub alarm: String,
}

/// Labels naming a permission (`read`, `write`, `admin`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PermissionLabels {
    pub permission: String,
}

/// The member's metrics.
pub struct Telemetry {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
    forwarded: Family<MethodLabels, Counter>,
    auth_denied: Family<PermissionLabels, Counter>,
    leader_changes: Counter,
    snapshots: Counter,
    auto_compaction_steps: Counter,
    write_batch_sizes: Histogram,
    read_index_rounds: Counter,
    state: StateGauges,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kvset_requests",
            "Requests served, by method and gRPC status code",
            requests.clone(),
        );
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            // 0.1 ms .. ~3.3 s
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register_with_unit(
            "kvset_request_duration",
            "Time to serve a request, by method",
            Unit::Seconds,
            latency.clone(),
        );
        let forwarded = Family::<MethodLabels, Counter>::default();
        registry.register(
            "kvset_forwarded_requests",
            "Writes this member forwarded to the leader",
            forwarded.clone(),
        );
        let auth_denied = Family::<PermissionLabels, Counter>::default();
        registry.register(
            "kvset_auth_denied",
            "Requests refused by the authorization policy, by the permission missing",
            auth_denied.clone(),
        );
        let leader_changes = Counter::default();
        registry.register(
            "kvset_raft_leader_changes",
            "Times this member saw the leader change",
            leader_changes.clone(),
        );
        let snapshots = Counter::default();
        registry.register(
            "kvset_snapshots",
            "Snapshots this member built or installed",
            snapshots.clone(),
        );
        let auto_compaction_steps = Counter::default();
        registry.register(
            "kvset_auto_compaction_steps",
            "Automatic compaction commands this member proposed as leader and saw applied",
            auto_compaction_steps.clone(),
        );

        // 1 .. 1024 writes per proposal (group commit caps a batch at 512)
        let write_batch_sizes = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "kvset_write_batch_size",
            "Client writes per log entry this leader proposed (group commit)",
            write_batch_sizes.clone(),
        );
        let read_index_rounds = Counter::default();
        registry.register(
            "kvset_read_index_rounds",
            "Quorum rounds run for linearizable reads (concurrent reads share one)",
            read_index_rounds.clone(),
        );

        let state = StateGauges::default();
        let gauges: [(&str, &str, &Gauge); 16] = [
            ("kvset_raft_term", "Current Raft term", &state.term),
            (
                "kvset_raft_is_leader",
                "1 when this member is the leader",
                &state.is_leader,
            ),
            (
                "kvset_raft_leader_id",
                "Node id (ordinal) of the known leader, -1 when none",
                &state.leader_id,
            ),
            (
                "kvset_raft_last_log_index",
                "Highest log index stored here",
                &state.last_log_index,
            ),
            (
                "kvset_raft_commit_index",
                "Highest log index known committed",
                &state.commit_index,
            ),
            (
                "kvset_raft_applied_index",
                "Highest log index applied to the state machine",
                &state.applied_index,
            ),
            (
                "kvset_raft_snapshot_index",
                "Log index of the current snapshot, 0 if none",
                &state.snapshot_index,
            ),
            (
                "kvset_raft_log_entries",
                "Entries in the log (last index - purged index)",
                &state.log_entries,
            ),
            (
                "kvset_membership_voters",
                "Voters in the current membership",
                &state.voters,
            ),
            (
                "kvset_membership_learners",
                "Learners in the current membership",
                &state.learners,
            ),
            (
                "kvset_store_revision",
                "Global store revision applied here",
                &state.revision,
            ),
            ("kvset_store_keys", "Keys in the store", &state.keys),
            (
                "kvset_store_disk_bytes",
                "Bytes the store occupies on disk (raft log + sled + snapshot)",
                &state.disk_bytes,
            ),
            (
                "kvset_store_usage_bytes",
                "Store usage as the space quota counts it (live keys and values + raft log + \
                 snapshot file), as of the last quota check; 0 when the quota is off",
                &state.usage_bytes,
            ),
            (
                "kvset_quota_bytes",
                "This member's space quota (--quota-bytes); 0 when off",
                &state.quota_bytes,
            ),
            (
                "kvset_ready",
                "1 when the readiness check passes",
                &state.ready,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "kvset_alarm_active",
            "1 while an alarm of this kind is active in the cluster (as applied here)",
            state.alarms.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            forwarded,
            auth_denied,
            leader_changes,
            snapshots,
            auto_compaction_steps,
            write_batch_sizes,
            read_index_rounds,
            state,
        }
    }

    /// The histogram of writes per proposal, for the group committer.
    pub fn write_batch_sizes(&self) -> Histogram {
        self.write_batch_sizes.clone()
    }

    /// The counter of ReadIndex rounds, for the read coalescer.
    pub fn read_index_rounds(&self) -> Counter {
        self.read_index_rounds.clone()
    }

    /// Records a finished request.
    pub fn observe<T>(&self, method: &str, started: Instant, result: &Result<T, tonic::Status>) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        let code = format!("{code:?}");
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                code,
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts a request the authorization policy refused, by the permission it lacked.
    pub fn auth_denied(&self, permission: &str) {
        self.auth_denied
            .get_or_create(&PermissionLabels {
                permission: permission.to_string(),
            })
            .inc();
    }

    /// Counts a write forwarded to the leader.
    pub fn forwarded(&self, method: &str) {
        self.forwarded
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .inc();
    }

    /// Counts a change of leader seen by this member.
    pub fn leader_changed(&self) {
        self.leader_changes.inc();
    }

    /// Counts a snapshot built or installed by this member.
    pub fn snapshot_taken(&self) {
        self.snapshots.inc();
    }

    /// Counts an automatic compaction step this member proposed and saw applied.
    pub fn auto_compaction_step(&self) {
        self.auto_compaction_steps.inc();
    }

    /// Sets the state gauges from `reading` and renders everything as OpenMetrics text.
    pub fn render(&self, reading: &StateReading) -> String {
        let r = reading;
        let s = &self.state;
        s.term.set(r.term as i64);
        s.is_leader.set(i64::from(r.is_leader));
        s.leader_id.set(r.leader_id.map(|l| l as i64).unwrap_or(-1));
        s.last_log_index.set(r.last_log_index as i64);
        s.commit_index.set(r.commit_index as i64);
        s.applied_index.set(r.applied_index as i64);
        s.snapshot_index.set(r.snapshot_index as i64);
        s.log_entries.set(r.log_entries as i64);
        s.voters.set(r.voters as i64);
        s.learners.set(r.learners as i64);
        s.revision.set(r.revision);
        s.keys.set(r.keys as i64);
        s.disk_bytes
            .set(r.disk_bytes.map(|b| b as i64).unwrap_or(-1));
        s.usage_bytes.set(r.usage_bytes as i64);
        s.quota_bytes.set(r.quota_bytes as i64);
        s.alarms
            .get_or_create(&AlarmLabels {
                alarm: "nospace".into(),
            })
            .set(i64::from(r.nospace));
        s.ready.set(i64::from(r.ready));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The member's state at one moment, as the state gauges show it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateReading {
    pub term: u64,
    pub is_leader: bool,
    /// The known leader's node id.
    pub leader_id: Option<u64>,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    /// Entries in the log: last index - purged index.
    pub log_entries: u64,
    pub voters: usize,
    pub learners: usize,
    pub revision: i64,
    pub keys: u64,
    /// Bytes on disk; None when they could not be measured (shown as -1).
    pub disk_bytes: Option<u64>,
    pub usage_bytes: u64,
    pub quota_bytes: u64,
    /// A `NOSPACE` alarm is active.
    pub nospace: bool,
    pub ready: bool,
}
