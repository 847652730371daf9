//! One member's lifecycle: claim the volume, open the store, start Raft and the gRPC servers,
//! carry out the start plan (initialize / join / rejoin), serve, and leave gracefully.
//!
//! Order matters for safety: the volume's ownership is checked before the store is opened (a
//! foreign volume is left untouched); the listeners are bound before Raft can be asked to do
//! anything (a port clash fails fast, before the member is in any membership); the cluster id is
//! recorded durably before it is used (so a crash cannot lead to a second, different id), and in
//! the cluster record before Raft is initialized (so no cluster exists that a kv-0 on an empty
//! volume could fail to find, see [`crate::node::bootstrap`]); Raft traffic is refused until the
//! start plan is decided and, for a member that must (re-)join, its re-join marker is on the
//! volume (see [`crate::node::rejoin`]).
//!
//! Graceful shutdown (SIGTERM, Kubernetes' pod deletion): stop taking requests and turn readiness
//! off, hand leadership to a caught-up voter if this member leads, leave the cluster for good if
//! the set's size says this member is scaled away (see [`crate::node::scale`]), then stop the
//! servers and Raft and let the store flush, all within `shutdown_grace`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvset_proto::raft::raft_server::RaftServer;
use kvset_proto::v1::cluster_server::ClusterServer;
use kvset_proto::v1::kv_server::KvServer;
use openraft::error::{InitializeError, RaftError};
use openraft::ServerState;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;

use crate::api::cluster::ClusterService;
use crate::api::health::report_health;
use crate::api::kv::KvService;
use crate::api::peer::PeerService;
use crate::cluster_record::ClusterRecord;
use crate::config::ServerConfig;
use crate::node::bootstrap::{mint_cluster_id, must_join, plan, StartPlan, VolumeState};
use crate::node::join::{check_still_member, join, probe_cluster_id, JoinError};
use crate::node::leadership::{hand_off, reclaim_preferred_leadership};
use crate::node::read_index::RestartFloor;
use crate::node::rejoin::RejoinMarker;
use crate::node::scale::{leave_cluster, scaled_away, DepartedMarker};
use crate::node::Node;
use crate::raft::network::{ClusterIdCell, PeerNetwork, MAX_PEER_MESSAGE_BYTES};
use crate::raft::{NodeId, Raft};
use crate::store::Store;
use crate::tls::ServerTls;
use crate::volume::{Volume, VolumeError};

/// Why a member could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Volume(#[from] VolumeError),
    #[error("opening the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Identity(#[from] crate::identity::IdentityError),
    #[error("invalid Raft configuration: {0}")]
    RaftConfig(String),
    #[error("starting Raft: {0}")]
    RaftStart(String),
    #[error("stopped on a storage failure: {0}")]
    StorageFailed(String),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Join(#[from] JoinError),
    #[error("initializing the cluster: {0}")]
    Initialize(String),
    #[error("gRPC server failed: {0}")]
    Serve(String),
    #[error("restore: {0}")]
    Restore(String),
    #[error("authorization: {0}")]
    Auth(#[from] crate::auth::AuthError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    ClusterRecord(#[from] crate::cluster_record::RecordError),
    #[error("re-join marker: {0}")]
    Rejoin(#[from] crate::node::rejoin::RejoinError),
    #[error("{0}")]
    Departed(#[from] crate::node::scale::DepartedError),
}

/// A started member. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    pub node: Arc<Node>,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    store: Store,
    stop_servers: tokio::sync::watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// Accepted connections with TCP_NODELAY. (tonic's `tcp_nodelay` setting is ignored by
/// `serve_with_incoming*`, and with Nagle's algorithm on, a small response written behind another
/// unacknowledged one waits for the peer's delayed ACK: up to 40 ms on Linux. The TLS acceptor
/// sets the option itself.)
fn nodelay(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Starts a member and returns once it serves (joining continues in the background).
///
/// Three steps, in this order (see the module docs for why): open the member (volume, store,
/// Raft, node; Raft traffic stays closed), bind the listeners and start the services on them,
/// then decide and carry out the start plan, which opens Raft traffic.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let member = open_member(&config).await?;
    // Bind before anything can reach Raft.
    let listeners = Listeners::bind(&config).await?;
    let (client_addr, peer_addr, metrics_addr) = (
        listeners.client_addr,
        listeners.peer_addr,
        listeners.metrics_addr,
    );
    let mut services = start_services(&config, &member, listeners)?;
    carry_out_start_plan(&config, &member, &mut services.background).await?;
    tracing::info!(
        member = %config.identity,
        client = %client_addr,
        peer = %peer_addr,
        metrics = %crate::api::metrics::describe(metrics_addr),
        "serving"
    );
    Ok(RunningServer {
        node: member.node,
        store: member.store,
        client_addr,
        peer_addr,
        stop_servers: services.stop_servers,
        servers: services.servers,
        background: services.background,
    })
}

/// A member whose store and Raft core are open, not yet reachable.
struct OpenMember {
    my_node: crate::raft::MemberNode,
    volume: Arc<Mutex<Volume>>,
    store: Store,
    record: ClusterRecord,
    /// The re-join state found on the volume, if the member was re-joining when it stopped.
    rejoin_pending: Option<crate::node::rejoin::RejoinState>,
    cluster_id: ClusterIdCell,
    raft: Raft,
    node: Arc<Node>,
    dialer: Arc<crate::tls::Dialer>,
    client_tls: Option<Arc<ServerTls>>,
    peer_tls: Option<Arc<ServerTls>>,
}

/// Claims the volume (a foreign one is left untouched), opens the store, starts the Raft core
/// and builds the node. Raft traffic stays closed until the start plan is carried out.
async fn open_member(config: &ServerConfig) -> Result<OpenMember, ServerError> {
    let me = &config.identity;
    let my_node = config.peers.member(me)?;
    let volume = Volume::claim(&config.data_dir, me, config.expected_cluster_id.as_deref())?;
    ensure_room_to_open(&config.data_dir)?;
    let departed = DepartedMarker::new(&config.data_dir);
    if departed.exists() {
        tracing::warn!(
            "{me} left the cluster on a scale-down (its volume says so): its old data is \
             discarded and it joins as a new member"
        );
        departed.clear_departed_volume(&volume.store_dir())?;
    }
    let store = Store::open_with_cache(&volume.store_dir(), config.cache_bytes)?;
    let record = ClusterRecord::open(&config.cluster_record, config.kube_api.as_ref())?;
    if record.is_none() {
        tracing::warn!(
            "no cluster record (--cluster-record=none): if kv-0 loses its volume while the other \
             members are down, it starts a second cluster. Use file:PATH or configmap:NAME"
        );
    }
    let rejoin_pending = RejoinMarker::new(&config.data_dir).load()?;

    let cluster_id: ClusterIdCell = Arc::new(std::sync::OnceLock::new());
    if let Some(id) = volume.cluster_id() {
        let _ = cluster_id.set(id.to_string());
    }
    let raft_config = config
        .raft_config()
        .validate()
        .map_err(|e| ServerError::RaftConfig(e.to_string()))?;
    let client_tls = config
        .client_tls
        .clone()
        .map(|files| ServerTls::load_with(files, config.client_certs))
        .transpose()?;
    let peer_tls = config.peer_tls.clone().map(ServerTls::load).transpose()?;
    let authorizer = crate::auth::Authorizer::load(config.auth.clone())?;
    tracing::info!(authorization = %authorizer.describe(), "authorization");
    if authorizer.is_on() && config.peer_tls.is_none() {
        tracing::warn!(
            "authorization is on but the peer port is plain text: anyone who can reach it can \
             pass as a member and act as any identity; turn on mutual TLS between members \
             (--peer-tls-cert, --peer-tls-key, --peer-tls-ca)"
        );
    }
    let dialer = config.dialer();
    dialer.refresh();
    let restart_floor = restart_floor(&store).await?;
    let network = PeerNetwork::new(me.ordinal, cluster_id.clone(), dialer.clone());
    let raft = Raft::new(
        me.ordinal,
        Arc::new(raft_config),
        network.clone(),
        store.log_store(),
        store.state_machine(),
    )
    .await
    .map_err(|e| ServerError::RaftStart(e.to_string()))?;
    let node = Node::new(
        config.clone(),
        raft.clone(),
        &store,
        cluster_id.clone(),
        network,
        restart_floor,
        authorizer,
    );
    if let Some(state) = rejoin_pending.clone() {
        // Before the election timer can fire: a member that was re-joining when it stopped still
        // is, whatever its stored membership says.
        node.resume_rejoin(state);
    }
    Ok(OpenMember {
        my_node,
        volume: Arc::new(Mutex::new(volume)),
        store,
        record,
        rejoin_pending,
        cluster_id,
        raft,
        node,
        dialer,
        client_tls,
        peer_tls,
    })
}

/// Free space a member needs on its data volume to open its store.
///
/// Opening writes (sled's recovery, the log's next segment). On a volume that is full, or
/// nearly, those writes fail half done, and sled was seen to leave its files unreadable
/// ("Read corrupted data") on every start after: a member restarted too early after its disk
/// filled would never come back. So a member that finds less room than this does not open its
/// store at all: it stops as on any storage failure (exit 74) and is restarted, by the launcher,
/// Docker or the kubelet, until space returns.
pub const MIN_FREE_BYTES_TO_OPEN: u64 = 4 * 1024 * 1024;

/// Refuses to open the store on a volume without [`MIN_FREE_BYTES_TO_OPEN`] free.
fn ensure_room_to_open(data_dir: &std::path::Path) -> Result<(), ServerError> {
    let space = match crate::volume::filesystem_space(data_dir) {
        Ok(space) => space,
        Err(e) => {
            tracing::warn!(error = %e, dir = %data_dir.display(), "cannot read the free space of the data volume");
            return Ok(());
        }
    };
    if space.available >= MIN_FREE_BYTES_TO_OPEN {
        return Ok(());
    }
    let human = crate::node::quota::human_bytes;
    Err(ServerError::StorageFailed(format!(
        "the data volume {} has {} free of {}; opening the store needs at least {} (writes made \
         on a full disk can leave it unreadable). Free space on the volume or grow it; this \
         member starts once there is room",
        data_dir.display(),
        human(space.available),
        human(space.total),
        human(MIN_FREE_BYTES_TO_OPEN)
    )))
}

/// The term and last log entry on the volume, before Raft starts: linearizable reads in that
/// term wait for that entry (see `node::read_index`, "After a restart").
async fn restart_floor(store: &Store) -> Result<Option<RestartFloor>, ServerError> {
    use openraft::storage::RaftLogStorage;
    let mut log = store.log_store();
    let failed = |e: crate::raft::StorageError| ServerError::RaftStart(e.to_string());
    let last_log = log.get_log_state().await.map_err(failed)?.last_log_id;
    let term = log
        .read_vote()
        .await
        .map_err(failed)?
        .map(|v| v.leader_id().term);
    Ok(match (term, last_log) {
        (Some(term), Some(last_log)) => Some(RestartFloor { term, last_log }),
        _ => None,
    })
}

/// The member's bound sockets: bound before anything can reach Raft, so a port clash fails
/// fast, before the member is in any membership.
struct Listeners {
    client: Accept,
    peer: Accept,
    metrics: TcpListener,
    /// The plain-text health port, when configured.
    health: Option<TcpListener>,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    metrics_addr: SocketAddr,
}

/// Where a gRPC server takes its connections from.
enum Accept {
    Tcp(TcpListener),
    /// An in-memory network's listener (in-process test clusters; see [`crate::memnet`]).
    Memory(
        std::pin::Pin<
            Box<
                dyn tokio_stream::Stream<Item = std::io::Result<crate::memnet::MemoryStream>>
                    + Send,
            >,
        >,
    ),
}

impl Listeners {
    async fn bind(config: &ServerConfig) -> Result<Self, ServerError> {
        let (client, client_addr, peer, peer_addr) = match &config.memory_network {
            Some(net) => (
                Accept::Memory(Box::pin(net.listen(config.client_listen))),
                config.client_listen,
                Accept::Memory(Box::pin(net.listen(config.peer_listen))),
                config.peer_listen,
            ),
            None => {
                let (client, client_addr) = bind(config.client_listen, "client").await?;
                let (peer, peer_addr) = bind(config.peer_listen, "peer").await?;
                (
                    Accept::Tcp(client),
                    client_addr,
                    Accept::Tcp(peer),
                    peer_addr,
                )
            }
        };
        let (metrics, metrics_addr) = bind(config.metrics_listen, "metrics").await?;
        let health = match config.health_listen {
            Some(addr) => Some(bind(addr, "health").await?.0),
            None => None,
        };
        Ok(Self {
            client,
            peer,
            metrics,
            health,
            client_addr,
            peer_addr,
            metrics_addr,
        })
    }
}

/// Binds `addr` for `what`; returns the listener and the address it got (port 0 picks one).
async fn bind(
    addr: SocketAddr,
    what: &'static str,
) -> Result<(TcpListener, SocketAddr), ServerError> {
    let error = |source| ServerError::Bind { addr, what, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let local = listener.local_addr().map_err(error)?;
    Ok((listener, local))
}

/// Serves `router` on `accept` (through TLS when `tls` is set) until `stop` resolves.
fn serve(
    router: tonic::transport::server::Router,
    accept: Accept,
    tls: Option<&Arc<ServerTls>>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    match (accept, tls) {
        (Accept::Tcp(listener), Some(tls)) => {
            tokio::spawn(router.serve_with_incoming_shutdown(tls.clone().incoming(listener), stop))
        }
        (Accept::Tcp(listener), None) => {
            tokio::spawn(router.serve_with_incoming_shutdown(nodelay(listener), stop))
        }
        (Accept::Memory(incoming), _) => {
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop))
        }
    }
}

/// The servers and background tasks of a started member.
struct Services {
    stop_servers: tokio::sync::watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// Serves the peer, client, health and metrics ports, and starts the member's background tasks
/// (storage-failure watch, health reports, event counters, certificate reloads).
fn start_services(
    config: &ServerConfig,
    member: &OpenMember,
    listeners: Listeners,
) -> Result<Services, ServerError> {
    let node = &member.node;
    let (stop_servers, stop_rx) = tokio::sync::watch::channel(false);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let peer_service = PeerService::new(node.clone());
    // The worst case of the limits is huge (two branches of maximal puts); cap what one request
    // may make the server buffer.
    let max_request = config.limits.max_request_bytes().min(64 * 1024 * 1024);
    let kv = KvService::new(node.clone());
    let cluster = ClusterService::new(node.clone());
    let watch = crate::api::watch::WatchService::new(node.clone());
    let lease = crate::api::lease::LeaseService::new(node.clone());
    let auth = crate::api::auth::AuthService::new(node.clone());
    // The client services on the peer port too, for requests members send each other with
    // authorization on: forwarded writes carrying their client's identity, joins, leaves (see
    // `crate::auth`, `Node::member_channel`).
    let peer_port = crate::auth::peer_port;
    let peer_router = tonic::transport::Server::builder()
        .add_service(
            RaftServer::new(peer_service)
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
        )
        .add_service(InterceptedService::new(
            KvServer::new(kv.clone()).max_decoding_message_size(max_request),
            peer_port(),
        ))
        .add_service(InterceptedService::new(
            ClusterServer::new(cluster.clone()),
            peer_port(),
        ))
        .add_service(InterceptedService::new(
            kvset_proto::v1::lease_server::LeaseServer::new(lease.clone()),
            peer_port(),
        ));
    let peer_server = serve(
        peer_router,
        listeners.peer,
        member.peer_tls.as_ref(),
        stopped(stop_rx.clone()),
    );
    // Every client service behind the client port's identity check (`crate::auth`).
    let identified = crate::auth::client_port(node.authorizer().clone());
    let client_router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(InterceptedService::new(
            KvServer::new(kv.clone()).max_decoding_message_size(max_request),
            identified.clone(),
        ))
        .add_service(InterceptedService::new(
            ClusterServer::new(cluster.clone()),
            identified.clone(),
        ))
        .add_service(InterceptedService::new(
            kvset_proto::v1::watch_server::WatchServer::new(watch.clone()),
            identified.clone(),
        ))
        .add_service(InterceptedService::new(
            kvset_proto::v1::lease_server::LeaseServer::new(lease.clone()),
            identified.clone(),
        ))
        .add_service(InterceptedService::new(
            kvset_proto::v1::auth_server::AuthServer::new(auth),
            identified.clone(),
        ));
    // etcd's v3 API on the same port, translated onto the services above (`api/etcd`).
    let client_router = {
        use crate::api::etcd;
        use kvset_proto::etcd::etcdserverpb as pb;
        let etcd_cluster = etcd::cluster::EtcdCluster::new(cluster, config.client_tls.is_some());
        client_router
            .add_service(InterceptedService::new(
                pb::kv_server::KvServer::new(etcd::kv::EtcdKv::new(kv))
                    .max_decoding_message_size(max_request),
                identified.clone(),
            ))
            .add_service(InterceptedService::new(
                pb::watch_server::WatchServer::new(etcd::watch::EtcdWatch::new(watch)),
                identified.clone(),
            ))
            .add_service(InterceptedService::new(
                pb::lease_server::LeaseServer::new(etcd::lease::EtcdLease::new(lease)),
                identified.clone(),
            ))
            .add_service(InterceptedService::new(
                pb::cluster_server::ClusterServer::new(etcd_cluster.clone()),
                identified.clone(),
            ))
            .add_service(InterceptedService::new(
                pb::maintenance_server::MaintenanceServer::new(etcd_cluster),
                identified,
            ))
    };
    let client_server = serve(
        client_router,
        listeners.client,
        member.client_tls.as_ref(),
        stopped(stop_rx.clone()),
    );
    let mut servers = vec![peer_server, client_server];
    if let Some(listener) = listeners.health {
        let service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health_reporter.clone()),
        );
        let router = tonic::transport::Server::builder().add_service(service);
        servers.push(tokio::spawn(router.serve_with_incoming_shutdown(
            nodelay(listener),
            stopped(stop_rx.clone()),
        )));
    }
    let mut background = vec![
        tokio::spawn({
            let node = node.clone();
            async move { node.watch_for_storage_failure().await }
        }),
        tokio::spawn(report_health(node.clone(), health_reporter)),
        tokio::spawn(node.clone().count_raft_events()),
        tokio::spawn(node.clone().run_lessor()),
        tokio::spawn(node.clone().run_auto_compaction()),
        tokio::spawn(node.authorizer().clone().watch()),
        tokio::spawn(crate::tls::watch(
            member
                .client_tls
                .clone()
                .into_iter()
                .chain(member.peer_tls.clone())
                .collect(),
            member.dialer.clone(),
        )),
    ];
    {
        let (node, stop) = (node.clone(), stopped(stop_rx.clone()));
        let listener = listeners.metrics;
        background.push(tokio::spawn(async move {
            if let Err(e) = crate::api::metrics::serve_metrics(node, listener, stop).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        }));
    }
    Ok(Services {
        stop_servers,
        servers,
        background,
    })
}

/// Whether the set's size, read now, includes this member: membership follows a readable size
/// and this member's ordinal is below it. Without a readable size, never guess (false).
async fn wanted_by_the_set(node: &Node) -> bool {
    let desired = node.desired_replicas().refresh().await;
    desired.is_some_and(|n| n >= 1) && !scaled_away(node.id(), desired)
}

/// Decides how this start goes (initialize, join, re-join, wait for re-admission; see
/// `node::bootstrap`) from the volume, the Raft state and the cluster record, carries it out,
/// and opens Raft traffic. Joining and the member's long-running duties (kv-0 reclaiming
/// leadership, the quota check) continue in `background`.
async fn carry_out_start_plan(
    config: &ServerConfig,
    member: &OpenMember,
    background: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<(), ServerError> {
    let me = &config.identity;
    let (node, raft, record) = (&member.node, &member.raft, &member.record);
    let has_raft_state = raft
        .is_initialized()
        .await
        .map_err(|e| ServerError::RaftStart(e.to_string()))?;
    let candidates = config.peers.join_candidates(me, config.join_probe_ordinals);
    let (volume_cluster_id, minted_here) = {
        let volume = member.volume.lock().expect("volume lock");
        (
            volume.cluster_id().map(str::to_string),
            volume.cluster_id_minted(),
        )
    };
    let empty_kv0 =
        me.ordinal == 0 && !has_raft_state && !(volume_cluster_id.is_some() && minted_here);
    let recorded_cluster = if empty_kv0 {
        record.read().await?
    } else {
        None
    };
    let existing_cluster = if empty_kv0 && recorded_cluster.is_none() {
        probe_cluster_id(node.dialer(), &candidates, Duration::from_secs(1))
            .await
            .map(|(id, _)| id)
    } else {
        None
    };
    let volume_state = VolumeState {
        cluster_id: volume_cluster_id,
        has_raft_state,
        minted_here,
        existing_cluster,
        recorded_cluster,
    };
    let start_plan = plan(me.ordinal, &volume_state, mint_cluster_id);
    tracing::info!(member = %me, plan = ?start_plan, record = %record.describe(), "starting");
    for fault in &config.faults {
        tracing::warn!(%fault, "DELIBERATE FAULT ENABLED: this member misbehaves on purpose (testing only)");
    }
    let volume = member.volume.clone();
    let rejoin_pending = member.rejoin_pending.is_some();
    let voter_locally = || {
        node.metrics()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == me.ordinal)
    };
    let needs_join = match &start_plan {
        StartPlan::Initialize { cluster_id: id } => {
            volume
                .lock()
                .expect("volume lock")
                .set_cluster_id(id, true)?;
            // The record first: once Raft is initialized the cluster exists, and a kv-0 that then
            // loses its volume must find the record.
            record.write(id).await?;
            let _ = member.cluster_id.set(id.clone());
            node.open_raft_traffic();
            match raft
                .initialize(BTreeMap::from([(me.ordinal, member.my_node.clone())]))
                .await
            {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(ServerError::Initialize(e.to_string())),
            }
            false
        }
        StartPlan::Readmit { cluster_id: id } => {
            volume
                .lock()
                .expect("volume lock")
                .set_cluster_id(id, false)?;
            let _ = member.cluster_id.set(id.clone());
            node.set_awaiting_readmission(id);
            tracing::warn!(
                cluster_id = %id,
                record = %record.describe(),
                "{me} started on an empty volume, but cluster {id} exists: it waits for the existing \
                 cluster to re-admit it (the other members hold the data; once two of them run they \
                 elect a leader and re-admit {me}). Meanwhile it reports ready, so that the \
                 StatefulSet creates them, and answers client requests UNAVAILABLE"
            );
            true
        }
        StartPlan::Join => true,
        StartPlan::Rejoin => {
            match check_still_member(node, &candidates).await {
                Err(JoinError::Removed {
                    me,
                    cluster,
                    members,
                }) if wanted_by_the_set(node).await => {
                    // Removed by the leader while scaled away, and wanted again: the removal is
                    // the effective membership of a live member, so every committed entry is on
                    // the members that remain (see `node::scale`): this volume's data is of no
                    // further use. Mark it departed; the next start discards it and joins anew.
                    DepartedMarker::new(&config.data_dir).store(&cluster, &me)?;
                    return Err(JoinError::RemovedWhileScaledAway {
                        me,
                        cluster,
                        members,
                    }
                    .into());
                }
                checked => checked?,
            }
            if let Some(id) = node.cluster_id() {
                // Clusters created before the record existed get one now (best effort: the
                // record only matters if kv-0 later loses its volume).
                let record = record.clone();
                background.push(tokio::spawn(async move {
                    if let Err(e) = record.write(&id).await {
                        tracing::warn!(error = %e, "could not write the cluster record");
                    }
                }));
            }
            must_join(&start_plan, rejoin_pending, voter_locally())
        }
    };
    if needs_join {
        if rejoin_pending {
            tracing::warn!("this member was re-joining when it stopped: it asks to be re-admitted again and casts no vote until then");
        }
        // Durable before any Raft traffic is let in (see node::rejoin).
        node.begin_rejoin()?;
    }
    node.open_raft_traffic();
    if needs_join {
        node.set_joining(true);
        let join_node = node.clone();
        background.push(tokio::spawn(async move {
            let record = |id: &str| {
                volume
                    .lock()
                    .expect("volume lock")
                    .set_cluster_id(id, false)
            };
            match join(join_node.clone(), candidates, record).await {
                Ok(()) => join_node.set_joining(false),
                Err(e) => tracing::error!(error = %e, "joining the cluster failed"),
            }
        }));
    }
    if me.ordinal == 0 && config.prefer_ordinal_zero {
        background.push(tokio::spawn(reclaim_preferred_leadership(node.clone())));
    }
    background.push(tokio::spawn(crate::node::quota::run(
        node.clone(),
        config.quota_check_interval,
    )));
    background.push(tokio::spawn(
        node.desired_replicas()
            .clone()
            .follow(crate::replicas::POLL_INTERVAL),
    ));
    background.push(tokio::spawn(crate::node::scale::reconcile(node.clone())));
    Ok(())
}

impl RunningServer {
    /// Leaves gracefully: refuse new requests, hand leadership off if leading, leave the cluster
    /// if scaled away (ordinal ≥ the set's size, see `node::scale`), stop serving, stop Raft
    /// (which flushes the store). Bounded by the configured grace period.
    pub async fn shutdown(self) {
        let grace = self.node.config().shutdown_grace;
        let node = self.node.clone();
        // Stop taking requests at once (readiness off), whatever comes next.
        node.begin_shutdown();
        // Scaled away (ordinal ≥ the set's size, read fresh now) or restarting? See node::scale.
        let desired = tokio::time::timeout(grace / 8, node.desired_replicas().refresh())
            .await
            .ok()
            .flatten();
        let leaving = node.failure().is_none() && scaled_away(node.id(), desired);
        if leaving {
            tracing::info!(
                desired = desired.unwrap_or(0),
                "this member's ordinal is at or above the set's size: it leaves the cluster"
            );
        }
        let leave_budget = if leaving { grace * 3 / 4 } else { grace / 2 };
        let leave_deadline = tokio::time::Instant::now() + leave_budget;
        let leave = async {
            // A member whose storage failed has no working Raft core to hand anything off with.
            if node.failure().is_none() && node.metrics().state == ServerState::Leader {
                // Writes are refused from here on, but the last ones may still be on their way
                // to the followers: give them up to an election timeout to arrive.
                let wait = node.config().timing.election_timeout_max;
                if let Some(target) = wait_for_hand_off_target(&node, wait).await {
                    tracing::info!(target, "leaving as leader: handing leadership off");
                    match hand_off(&node, target, true).await {
                        Ok(()) => tracing::info!(target, "leadership handed off"),
                        Err(e) => {
                            tracing::warn!(error = %e, "leadership hand-off failed; followers will elect")
                        }
                    }
                }
            }
            if leaving && leave_cluster(&node, leave_deadline).await {
                let cluster = node.cluster_id().unwrap_or_default();
                if let Err(e) =
                    DepartedMarker::new(&node.config().data_dir).store(&cluster, &node.name())
                {
                    tracing::error!(error = %e, "could not mark the volume as departed");
                }
            }
        };
        if tokio::time::timeout(leave_budget, leave).await.is_err() {
            tracing::warn!("hand-off took too long; stopping anyway");
        }
        let _ = self.stop_servers.send(true);
        for task in &self.background {
            task.abort();
        }
        let remaining = grace.saturating_sub(leave_budget).max(grace / 4);
        let stop = async {
            node.shutdown_raft().await;
            for server in self.servers {
                let _ = server.await;
            }
        };
        if tokio::time::timeout(remaining, stop).await.is_err() {
            tracing::warn!("servers did not stop within the grace period");
        }
        // Everything acknowledged is already durable; this makes the applied state durable too,
        // so the next start does not have to re-apply the log tail.
        if let Err(e) = self.store.sync() {
            tracing::error!(error = %e, "final store sync failed");
        }
        tracing::info!(member = %node.name(), "stopped");
    }
}

impl RunningServer {
    /// Stops a member whose storage failed: close the listeners and stop Raft, each bounded by a
    /// second, and leave the store as it is on disk — no hand-off (the Raft core is gone) and no
    /// final sync (nothing more written to a failed store is trusted; see `node::failstop`).
    async fn abandon(self) {
        let _ = self.stop_servers.send(true);
        for task in &self.background {
            task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.node.shutdown_raft()).await;
        for server in &self.servers {
            server.abort();
        }
        tracing::info!(member = %self.node.name(), "stopped after a storage failure");
    }

    /// Stops at once, as a crash would: no hand-off, no leave, no final sync; what is on disk
    /// stays as it is. For in-process tests that kill a member.
    pub async fn kill(self) {
        self.abandon().await;
    }
}

/// [`hand_off_target`], waiting up to `wait` for one: the leader has just stopped taking
/// writes, and the entries still in flight reach a follower within a round trip or so. (Asking
/// once, right away, found no target most of the time under a steady stream of writes, and the
/// leader left without a hand-off.)
async fn wait_for_hand_off_target(node: &Node, wait: Duration) -> Option<NodeId> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(target) = hand_off_target(node) {
            return Some(target);
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("no voter caught up; leaving without a hand-off (followers will elect)");
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The caught-up voter to hand leadership to: fully replicated, lowest ordinal first (so kv-0,
/// the preferred primary, wins when it qualifies).
fn hand_off_target(node: &Node) -> Option<NodeId> {
    let m = node.metrics();
    let last = m.last_log_index?;
    let replication = m.replication.as_ref()?;
    let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
    voters.into_iter().filter(|v| *v != node.id()).find(|v| {
        replication
            .get(v)
            .copied()
            .flatten()
            .is_some_and(|l| l.index >= last)
    })
}

/// Runs a member until `shutdown` resolves, then leaves gracefully.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let server = start(config).await?;
    let node = server.node.clone();
    tokio::select! {
        _ = shutdown => {
            tracing::info!("shutdown requested");
            if let Some(cause) = node.failure() {
                // Stopped already: nothing to hand off or flush, so do not wait out the grace.
                let cause = cause.to_string();
                server.abandon().await;
                return Err(ServerError::StorageFailed(cause));
            }
            server.shutdown().await;
            Ok(())
        }
        _ = node.failed() => {
            // Let the probes and connected clients see UNAVAILABLE with the cause, then go: the
            // supervisor restarts the member from what is on disk (see `node::failstop`).
            tokio::time::sleep(FAIL_STOP_DRAIN.min(node.config().shutdown_grace)).await;
            server.abandon().await;
            Err(ServerError::StorageFailed(
                node.failure().unwrap_or("unknown").to_string(),
            ))
        }
    }
}

/// The process exit code of a member that stopped on a storage failure (`EX_IOERR`).
pub const EXIT_STORAGE_FAILED: i32 = 74;

/// How long a member whose storage failed keeps answering (NOT_SERVING / UNAVAILABLE) before it
/// exits: a few probe periods and client retries.
const FAIL_STOP_DRAIN: Duration = Duration::from_secs(2);

/// Resolves on SIGTERM or Ctrl-C.
pub async fn termination_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Seeds kv-0's empty data dir for a new cluster from a backup file; returns a summary line.
pub async fn restore(config: &ServerConfig, file: &std::path::Path) -> Result<String, ServerError> {
    let me = &config.identity;
    if me.ordinal != 0 {
        return Err(ServerError::Restore(format!(
            "restore seeds kv-0 of a new cluster, but this is {me}; restore into {}-0's data dir and let the others join",
            me.set
        )));
    }
    let reader = std::fs::File::open(file)
        .map_err(|e| ServerError::Restore(format!("{}: {e}", file.display())))?;
    let (info, data) = kvset_proto::backup::read(std::io::BufReader::new(reader))
        .map_err(|e| ServerError::Restore(format!("{}: {e}", file.display())))?;
    let mut volume = Volume::claim(&config.data_dir, me, None)?;
    if volume.cluster_id().is_some() {
        return Err(ServerError::Restore(format!(
            "{} already belongs to a cluster; restore needs an empty data dir",
            config.data_dir.display()
        )));
    }
    let store = Store::open(&volume.store_dir())?;
    let meta = store
        .seed_from_backup(&data, me.ordinal, config.peers.member(me)?)
        .await?;
    let cluster_id = mint_cluster_id();
    volume.set_cluster_id(&cluster_id, true)?;
    Ok(format!(
        "restored {} keys at revision {} (log index {}) into {} as {me} of new cluster {cluster_id}; \
         start kv-0 on this data dir, then the other members with empty volumes",
        info.keys,
        info.revision,
        meta.last_log_id.map(|l| l.index).unwrap_or(0),
        config.data_dir.display(),
    ))
}
