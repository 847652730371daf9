//! `kvset-server`: run one replica (the default, what a StatefulSet pod runs), or `local` to run
//! a whole cluster on loopback for development.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kvset_server::config::{RaftTiming, ServerConfig};
use kvset_server::identity::{
    PeerDirectory, PodIdentity, DEFAULT_CLIENT_TEMPLATE, DEFAULT_PEER_TEMPLATE,
};
use kvset_server::launcher::{self, LocalClusterSpec};
use kvset_server::limits::Limits;
use kvset_server::server;
use kvset_server::tls::TlsFiles;

/// mimalloc instead of glibc malloc: a busy leader allocates per request and per sled update,
/// and glibc's allocator took a large share of its CPU under write load (measured in
/// docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// kvset replica: a Raft-replicated key-value store that takes its role from its StatefulSet
/// ordinal (kv-0 bootstraps the cluster, kv-1.. join in order).
///
/// Every flag can also be set through the environment variable shown with it.
#[derive(Parser, Debug)]
#[command(
    name = "kvset-server",
    version,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one replica (the default when no subcommand is given). A flag given twice takes
    /// the last value.
    #[command(args_override_self = true)]
    Serve(Box<ServeArgs>),
    /// Run a local cluster on loopback: kv-0..kv-(N-1) as child processes, one data dir each,
    /// started in ordinal order and restarted when they die, like a StatefulSet would.
    Local(LocalArgs),
    /// Seed the empty data dir of kv-0 of a NEW cluster from a backup (`kvsetctl snapshot save`).
    /// Takes the same flags as serving (they give kv-0's identity and addresses); then start kv-0
    /// normally on that data dir and let the other members join. See docs/OPERATIONS.md.
    Restore(Box<RestoreArgs>),
}

#[derive(Args, Debug)]
#[command(args_override_self = true)]
struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
struct ServeArgs {
    /// This pod's name, `<set>-<ordinal>` (e.g. kv-0). Default: the hostname, which is the pod
    /// name in a StatefulSet.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Data directory (the pod's PersistentVolume).
    #[arg(long, env = "KVSET_DATA_DIR", default_value = "/data")]
    data_dir: PathBuf,
    /// Address for clients (KV, Cluster and health services).
    #[arg(long, env = "KVSET_CLIENT_LISTEN", default_value = "0.0.0.0:7379")]
    client_listen: SocketAddr,
    /// Address for peers (internal Raft service).
    #[arg(long, env = "KVSET_PEER_LISTEN", default_value = "0.0.0.0:7479")]
    peer_listen: SocketAddr,
    /// Address for Prometheus metrics (`GET /metrics`).
    #[arg(long, env = "KVSET_METRICS_LISTEN", default_value = "0.0.0.0:7579")]
    metrics_listen: SocketAddr,
    /// Also serve the gRPC health service, alone and in plain text, on this address. Kubernetes
    /// gRPC probes cannot use TLS: point them here when the client port uses TLS.
    #[arg(long, env = "KVSET_HEALTH_LISTEN")]
    health_listen: Option<SocketAddr>,
    /// Headless Service name, for the address templates. Default: the set name.
    #[arg(long, env = "KVSET_SERVICE")]
    service: Option<String>,
    /// Kubernetes namespace, for the address templates.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Peer address template. Placeholders: {set} {ordinal} {service} {namespace} {peer_port}
    /// {client_port}; ports are those of --peer-listen / --client-listen.
    #[arg(long, env = "KVSET_PEER_TEMPLATE", default_value = DEFAULT_PEER_TEMPLATE)]
    peer_template: String,
    /// Client address template (same placeholders), used to forward writes and to join.
    #[arg(long, env = "KVSET_CLIENT_TEMPLATE", default_value = DEFAULT_CLIENT_TEMPLATE)]
    client_template: String,
    /// Explicit member list instead of templates (local runs):
    /// kv-0=127.0.0.1:7379/127.0.0.1:7479,kv-1=127.0.0.1:7380/127.0.0.1:7480,...
    #[arg(long, env = "KVSET_PEERS")]
    peers: Option<String>,
    /// Refuse volumes and peers of any other cluster id.
    #[arg(long, env = "KVSET_CLUSTER_ID")]
    cluster_id: Option<String>,
    /// Where to record that the cluster exists, outside kv-0's volume, so that a kv-0 that lost
    /// its volume waits to be re-admitted instead of starting a second cluster: `file:PATH` (a
    /// path that does not share kv-0's volume), `configmap:NAME` (a ConfigMap in the pod's
    /// namespace, through the Kubernetes API) or `none` (no protection). Default: in a pod,
    /// configmap:<set>-cluster; elsewhere none (with a warning).
    #[arg(long, env = "KVSET_CLUSTER_RECORD")]
    cluster_record: Option<kvset_server::cluster_record::RecordSpec>,
    /// Where the set's desired size comes from: `statefulset:NAME` (spec.replicas of that
    /// StatefulSet in the pod's namespace, through the Kubernetes API), `file:PATH` (a file
    /// holding the number; `kvset-server local` uses one) or `manual`. A member whose ordinal is
    /// at or above the size leaves the cluster when it stops (scale-down); any other member that
    /// stops is restarting and stays a member. If the source cannot be read, membership is
    /// manual (logged, and shown by `kvsetctl status`). Default: in a pod,
    /// statefulset:<set>; elsewhere manual. See docs/KUBERNETES.md.
    #[arg(long, env = "KVSET_REPLICAS_FROM")]
    replicas_from: Option<kvset_server::replicas::ReplicasFrom>,
    /// Reach the Kubernetes API at this http://HOST:PORT instead of the pod's in-cluster endpoint,
    /// for --replicas-from=statefulset:… and --cluster-record=configmap:… (objects in
    /// --namespace): a member outside a pod behind `kubectl proxy`, which adds the credentials.
    /// Leave unset in a pod.
    #[arg(long, env = "KVSET_KUBE_API")]
    kube_api: Option<String>,
    /// Forward writes that reach a follower to the leader; if false, refuse them with the leader
    /// in the `kvset-leader` metadata.
    #[arg(long, env = "KVSET_FORWARD_WRITES", default_value_t = true, action = clap::ArgAction::Set)]
    forward_writes: bool,
    /// Return leadership to kv-0 once it is back and caught up.
    #[arg(long, env = "KVSET_PREFER_ORDINAL_ZERO", default_value_t = true, action = clap::ArgAction::Set)]
    prefer_ordinal_zero: bool,
    /// Snapshot and compact the log every this many entries.
    #[arg(long, env = "KVSET_SNAPSHOT_EVERY", default_value_t = 10_000)]
    snapshot_every: u64,
    /// Log entries kept behind a snapshot (lets briefly lagging followers avoid a snapshot).
    #[arg(long, env = "KVSET_KEEP_AFTER_SNAPSHOT", default_value_t = 1_000)]
    keep_after_snapshot: u64,
    /// Readiness requires the applied index within this many entries of the log.
    #[arg(long, env = "KVSET_READY_MAX_LAG", default_value_t = 1_000)]
    ready_max_lag: u64,
    /// sled page cache size in MiB. Keep well below the container's memory limit.
    #[arg(long, env = "KVSET_CACHE_MB", default_value_t = 256)]
    cache_mb: u64,
    /// Largest key, in bytes.
    #[arg(long, env = "KVSET_MAX_KEY_BYTES", default_value_t = Limits::default().max_key_bytes)]
    max_key_bytes: usize,
    /// Largest value, in bytes.
    #[arg(long, env = "KVSET_MAX_VALUE_BYTES", default_value_t = Limits::default().max_value_bytes)]
    max_value_bytes: usize,
    /// Largest range page (and Range limit).
    #[arg(long, env = "KVSET_MAX_RANGE_LIMIT", default_value_t = Limits::default().max_range_limit)]
    max_range_limit: usize,
    /// Most operations in one Txn (both branches counted separately).
    #[arg(long, env = "KVSET_MAX_TXN_OPS", default_value_t = Limits::default().max_txn_ops)]
    max_txn_ops: usize,
    /// Raft heartbeat interval, ms.
    #[arg(long, env = "KVSET_HEARTBEAT_MS", default_value_t = 150)]
    heartbeat_ms: u64,
    /// Minimum election timeout, ms.
    #[arg(long, env = "KVSET_ELECTION_TIMEOUT_MIN_MS", default_value_t = 600)]
    election_timeout_min_ms: u64,
    /// Maximum election timeout, ms (also the leader lease a hand-off waits out).
    #[arg(long, env = "KVSET_ELECTION_TIMEOUT_MAX_MS", default_value_t = 900)]
    election_timeout_max_ms: u64,
    /// Upper bound on graceful shutdown, seconds. Keep below the pod's
    /// terminationGracePeriodSeconds.
    #[arg(long, env = "KVSET_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    shutdown_grace_secs: u64,
    /// How many ordinals a joining member asks when peers come from templates.
    #[arg(long, env = "KVSET_JOIN_PROBE_ORDINALS", default_value_t = 16)]
    join_probe_ordinals: u64,
    /// Log format.
    #[arg(long, env = "KVSET_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// TLS on the client port: this member's certificate chain (PEM). Needs --tls-key and
    /// --tls-ca. Files are re-read when they change.
    #[arg(long, env = "KVSET_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, env = "KVSET_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA bundle (PEM) that other members' client-port certificates chain to (used when this
    /// member forwards writes or joins).
    #[arg(long, env = "KVSET_TLS_CA", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Require client certificates on the client port, chaining to this CA bundle (PEM).
    #[arg(long, env = "KVSET_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: `required` (every client presents a certificate signed by it) or
    /// `optional` (a client may also connect without one, and is then identified by a bearer
    /// token or as `anonymous` under --auth-policy).
    #[arg(
        long,
        env = "KVSET_TLS_CLIENT_CERTS",
        default_value = "required",
        requires = "tls_client_ca"
    )]
    tls_client_certs: kvset_server::tls::ClientCerts,
    /// Mutual TLS between members: this member's certificate (PEM), used both to serve the peer
    /// port and to call other members. Needs --peer-tls-key and --peer-tls-ca.
    #[arg(long, env = "KVSET_PEER_TLS_CERT", requires_all = ["peer_tls_key", "peer_tls_ca"])]
    peer_tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --peer-tls-cert.
    #[arg(long, env = "KVSET_PEER_TLS_KEY", requires = "peer_tls_cert")]
    peer_tls_key: Option<PathBuf>,
    /// CA bundle (PEM) every member's peer certificate must chain to.
    #[arg(long, env = "KVSET_PEER_TLS_CA", requires = "peer_tls_cert")]
    peer_tls_ca: Option<PathBuf>,
    /// TESTING ONLY: inject a deliberate fault (repeatable): `stale-linearizable-reads`,
    /// `skip-log-fsync`, `ack-uncommitted-puts`, `drop-write-responses=N`, `stall-proposal=N`
    /// or `panic-raft-core-when=PATH`. Off by default; never use in production.
    #[arg(long = "fault", env = "KVSET_FAULTS", value_delimiter = ',')]
    faults: Vec<kvset_server::faults::Fault>,
    /// Space quota of this member's store, in bytes: live keys and values + Raft log +
    /// snapshot file. Past it, the member raises the replicated NOSPACE alarm and the cluster
    /// refuses puts, Txns with a put and new members (RESOURCE_EXHAUSTED) until
    /// `kvsetctl alarm disarm`; reads and deletes keep working. Default: 30% of the size of the
    /// filesystem holding --data-dir (so it follows the volume's size); 0 turns the quota off.
    /// See docs/OPERATIONS.md, "Space quota and the NOSPACE alarm".
    #[arg(long, env = "KVSET_QUOTA_BYTES")]
    quota_bytes: Option<u64>,
    /// How often the member measures its store against --quota-bytes, ms.
    #[arg(long, env = "KVSET_QUOTA_CHECK_MS", default_value_t = 5_000)]
    quota_check_ms: u64,
    /// How the leader compacts the revision history by itself: `revision` keeps the last
    /// --auto-compaction-retention revisions, `periodic` the revisions of the last
    /// --auto-compaction-retention period. Compaction is replicated: every member compacts at
    /// the same revision.
    #[arg(long, env = "KVSET_AUTO_COMPACTION_MODE", default_value = "revision")]
    auto_compaction_mode: String,
    /// What automatic compaction keeps: a number of revisions (mode revision), or a period such
    /// as 30m or 1h (mode periodic; a bare number is hours). 0 turns automatic compaction off.
    #[arg(long, env = "KVSET_AUTO_COMPACTION_RETENTION", default_value = "10000")]
    auto_compaction_retention: String,
    /// The most revisions one automatic compaction forgets in one log command: the leader
    /// compacts in steps of this size, so no apply pauses writes for a whole compaction.
    #[arg(long, env = "KVSET_AUTO_COMPACTION_STEP", default_value_t = kvset_server::config::DEFAULT_AUTO_COMPACTION_STEP, value_parser = clap::value_parser!(i64).range(1..))]
    auto_compaction_step: i64,
    /// Watchers one Watch stream may hold at once; a create beyond it is cancelled with a
    /// reason naming this flag.
    #[arg(long, env = "KVSET_MAX_WATCHERS_PER_STREAM", default_value_t = 1_000)]
    max_watchers_per_stream: usize,
    /// Watchers this member serves at once over all streams.
    #[arg(long, env = "KVSET_MAX_WATCHERS", default_value_t = 10_000)]
    max_watchers: usize,
    /// How often an idle watcher created with progress_notify gets a progress response, ms.
    #[arg(
        long,
        env = "KVSET_WATCH_PROGRESS_INTERVAL_MS",
        default_value_t = 60_000
    )]
    watch_progress_interval_ms: u64,
    /// Shortest lease TTL, seconds: shorter grants are raised to it.
    #[arg(long, env = "KVSET_MIN_LEASE_TTL", default_value_t = 2)]
    min_lease_ttl: i64,
    /// Longest lease TTL, seconds: longer grants are refused (INVALID_ARGUMENT).
    #[arg(long, env = "KVSET_MAX_LEASE_TTL", default_value_t = 9_000_000_000)]
    max_lease_ttl: i64,
    /// Authorization policy (YAML: roles with read/write key prefixes or ranges and admin, and
    /// bindings of identities to roles). Every RPC is then checked; a denied one is
    /// PERMISSION_DENIED. Re-read when it changes (a ConfigMap); an unusable new version is
    /// logged and ignored. Without it, authorization is off. See docs/OPERATIONS.md,
    /// "Who may do what".
    #[arg(long, env = "KVSET_AUTH_POLICY")]
    auth_policy: Option<PathBuf>,
    /// Bearer tokens clients may send (`authorization: Bearer TOKEN`): lines `NAME
    /// SHA256-HEX-OF-TOKEN`, identity `token:NAME`. Re-read when it changes (a Secret).
    #[arg(long, env = "KVSET_AUTH_TOKENS", requires = "auth_policy")]
    auth_tokens: Option<PathBuf>,
    /// Which name of a TLS client certificate identifies its holder: `cn` (subject common
    /// name, identity `cn:NAME`) or `san` (the first URI, else DNS, subject alternative name,
    /// identity `san:NAME`).
    #[arg(
        long,
        env = "KVSET_AUTH_CERT_IDENTITY",
        default_value = "cn",
        requires = "auth_policy"
    )]
    auth_cert_identity: kvset_server::auth::CertIdentity,
}

#[derive(Subcommand, Debug)]
enum LocalCommand {
    /// Change the number of replicas of the local cluster running on --data-dir, as
    /// `kubectl scale statefulset` does: the launcher stops the highest ordinals one at a time
    /// (each leaves the cluster before it exits) or starts new ones in ordinal order. Exits 0
    /// once the cluster's membership is kv-0 … kv-(N-1); non-zero, saying why, if it is not
    /// within --timeout-secs.
    Scale(ScaleArgs),
}

#[derive(Args, Debug)]
struct ScaleArgs {
    /// The new number of replicas (1..=99).
    replicas: u64,
    /// The data directory of the running `kvset-server local`.
    #[arg(long, env = "KVSET_DATA_DIR", default_value = "./kvset-data")]
    data_dir: PathBuf,
    /// Give up (exit non-zero) when the membership does not match after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct LocalArgs {
    #[command(subcommand)]
    command: Option<LocalCommand>,
    /// How many replicas (kv-0 .. kv-(N-1)).
    #[arg(long, env = "KVSET_REPLICAS", default_value_t = 3)]
    replicas: u64,
    /// Parent data directory; replica kv-N uses <data-dir>/kv-N. Reused across restarts.
    #[arg(long, env = "KVSET_DATA_DIR", default_value = "./kvset-data")]
    data_dir: PathBuf,
    /// kv-N serves clients on 127.0.0.1:<base-port + N>, peers on <base-port + 100 + N> and
    /// metrics on <base-port + 200 + N>.
    #[arg(long, env = "KVSET_BASE_PORT", default_value_t = 7379)]
    base_port: u16,
    /// Loopback address to bind.
    #[arg(long, env = "KVSET_BIND_IP", default_value = "127.0.0.1")]
    bind_ip: std::net::IpAddr,
    /// StatefulSet name.
    #[arg(long, default_value = "kv")]
    set: String,
    /// Extra flags passed to every replica (repeatable), e.g. --server-arg=--snapshot-every=100.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Log format of the launcher and the replicas.
    #[arg(long, env = "KVSET_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Test harnesses: run kv-N in the existing network namespace <PREFIX><N> (see
    /// --netns-first-ip). The harness creates and removes the namespaces.
    #[arg(long, hide = true, requires = "netns_first_ip")]
    netns_prefix: Option<String>,
    /// Test harnesses: kv-N binds this address + N inside its namespace (instead of --bind-ip).
    #[arg(long, hide = true, requires = "netns_prefix")]
    netns_first_ip: Option<std::net::Ipv4Addr>,
    /// The longest wait, in ms, before restarting a replica that exited again within 30 s of
    /// its start (the wait starts at 500 ms and doubles, as a kubelet's CrashLoopBackOff).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    restart_backoff_max_ms: u64,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    // Colours only on a terminal: `docker logs` and log collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

fn hostname() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .context("cannot determine the hostname; set --pod-name / POD_NAME")?;
    Ok(name.trim().to_string())
}

fn server_config(args: ServeArgs) -> anyhow::Result<ServerConfig> {
    let pod_name = match args.pod_name {
        Some(name) => name,
        None => hostname()?,
    };
    let identity = PodIdentity::parse(&pod_name)?;
    let peers = match &args.peers {
        Some(list) => PeerDirectory::parse_static(list, &identity.set)?,
        None => PeerDirectory::template(
            &args.client_template,
            &args.peer_template,
            args.service.as_deref().unwrap_or(&identity.set),
            &args.namespace,
            args.client_listen.port(),
            args.peer_listen.port(),
        )?,
    };
    let mut config = ServerConfig::new(identity, peers, args.data_dir);
    config.client_listen = args.client_listen;
    config.peer_listen = args.peer_listen;
    config.metrics_listen = args.metrics_listen;
    config.health_listen = args.health_listen;
    config.expected_cluster_id = args.cluster_id;
    if let Some(record) = args.cluster_record {
        config.cluster_record = record;
    }
    if let Some(from) = args.replicas_from {
        config.replicas_from = from;
    }
    if let Some(url) = &args.kube_api {
        config.kube_api = Some(kvset_server::kube_api::KubeApi::new(url, &args.namespace)?);
    }
    config.join_probe_ordinals = args.join_probe_ordinals;
    config.forward_writes = args.forward_writes;
    config.prefer_ordinal_zero = args.prefer_ordinal_zero;
    config.snapshot_every = args.snapshot_every;
    config.keep_after_snapshot = args.keep_after_snapshot;
    config.ready_max_lag = args.ready_max_lag;
    config.cache_bytes = args.cache_mb * 1024 * 1024;
    config.limits = Limits {
        max_key_bytes: args.max_key_bytes,
        max_value_bytes: args.max_value_bytes,
        max_range_limit: args.max_range_limit,
        max_txn_ops: args.max_txn_ops,
    };
    config.timing = RaftTiming {
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        election_timeout_min: Duration::from_millis(args.election_timeout_min_ms),
        election_timeout_max: Duration::from_millis(args.election_timeout_max_ms),
    };
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace_secs);
    config.faults = args.faults;
    config.quota_bytes = args.quota_bytes;
    config.quota_check_interval = Duration::from_millis(args.quota_check_ms.max(100));
    config.auto_compaction = kvset_server::config::AutoCompaction::parse(
        &args.auto_compaction_mode,
        &args.auto_compaction_retention,
    )
    .map_err(anyhow::Error::msg)?;
    config.auto_compaction_step = args.auto_compaction_step;
    config.watch = kvset_server::config::WatchSettings {
        max_per_stream: args.max_watchers_per_stream.max(1),
        max_per_member: args.max_watchers.max(1),
        progress_interval: Duration::from_millis(args.watch_progress_interval_ms.max(10)),
    };
    if args.min_lease_ttl < 1 || args.max_lease_ttl < args.min_lease_ttl {
        anyhow::bail!(
            "--min-lease-ttl {} / --max-lease-ttl {}: both positive, min at most max",
            args.min_lease_ttl,
            args.max_lease_ttl
        );
    }
    config.lease_ttl = kvset_server::config::LeaseTtl {
        min: args.min_lease_ttl,
        max: args.max_lease_ttl,
    };
    config.auth = args
        .auth_policy
        .map(|policy| kvset_server::auth::AuthSettings {
            policy,
            tokens: args.auth_tokens,
            cert_identity: args.auth_cert_identity,
        });
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.client_tls = Some(TlsFiles {
            cert,
            key,
            ca: args.tls_client_ca,
        });
        config.client_tls_ca = args.tls_ca;
        config.client_certs = args.tls_client_certs;
    }
    if let (Some(cert), Some(key), Some(ca)) =
        (args.peer_tls_cert, args.peer_tls_key, args.peer_tls_ca)
    {
        config.peer_tls = Some(TlsFiles {
            cert,
            key,
            ca: Some(ca),
        });
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Local(LocalArgs {
            command: Some(LocalCommand::Scale(scale)),
            ..
        })) => {
            let summary = launcher::scale(
                &scale.data_dir,
                scale.replicas,
                Duration::from_secs(scale.timeout_secs),
            )
            .await?;
            println!("{summary}");
            Ok(())
        }
        Some(Command::Local(args)) => {
            init_logging(args.log_format);
            let spec = LocalClusterSpec {
                replicas: args.replicas,
                data_dir: args.data_dir,
                base_port: args.base_port,
                bind_ip: args.bind_ip,
                set: args.set,
                server_args: args.server_args,
                json_logs: matches!(args.log_format, LogFormat::Json),
                netns: args
                    .netns_prefix
                    .zip(args.netns_first_ip)
                    .map(|(prefix, first_ip)| launcher::LocalNetns { prefix, first_ip }),
                restart_backoff_max: std::time::Duration::from_millis(args.restart_backoff_max_ms),
            };
            launcher::run(spec, server::termination_signal()).await?;
            Ok(())
        }
        Some(Command::Serve(args)) => serve(*args).await,
        Some(Command::Restore(args)) => restore(*args).await,
        None => serve(cli.serve).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let config = server_config(args)?;
    match server::run(config, server::termination_signal()).await {
        Err(server::ServerError::StorageFailed(cause)) => {
            // Exit at once, without running destructors: sled would try to flush a store whose
            // disk just failed, and the runtime would wait for blocking tasks stuck in it. What
            // the next start trusts is what is on disk now (see `node::failstop`).
            eprintln!("kvset-server: stopped on a storage failure: {cause}");
            std::process::exit(server::EXIT_STORAGE_FAILED);
        }
        result => Ok(result?),
    }
}

async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    init_logging(args.serve.log_format);
    let config = server_config(args.serve)?;
    let summary = kvset_server::server::restore(&config, &args.file).await?;
    println!("{summary}");
    Ok(())
}
