//! TLS for client traffic and mutual TLS between members, from PEM files that are reloaded when
//! they change (a Kubernetes Secret mount is updated in place when the Secret rotates).
//!
//! Inbound: [`ServerTls`] accepts TCP connections and completes the TLS handshake itself with
//! tokio-rustls, using whatever configuration is current, then hands the encrypted stream to
//! tonic. A watcher re-reads the files every few seconds when their modification time changes;
//! a broken new set is logged and ignored (the previous configuration stays), so a half-written
//! rotation cannot take a member down. With a client CA, the peer must present a certificate
//! signed by it, or the handshake fails before any request is read.
//!
//! Outbound: [`Dialer`] owns every channel a member opens to another member (Raft on the peer
//! port; forwarding, joining and probes on the client port), each with the TLS settings for that
//! port. Channels are cached per address; when the files change the cache is dropped so new
//! connections use the new certificates.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Errors loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("TLS configuration rejected: {0}")]
    Config(String),
}

/// PEM files for one side of TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain presented by this member.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// CA bundle: inbound, the CA client certificates must chain to (None: no client certs);
    /// outbound, the CA the server's certificate must chain to.
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut p = vec![self.cert.as_path(), self.key.as_path()];
        p.extend(self.ca.as_deref());
        p
    }

    /// Latest modification time among the files, for change detection.
    fn stamp(&self) -> Option<SystemTime> {
        self.paths()
            .iter()
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .max()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether a server that has a client CA demands a client certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientCerts {
    /// Every client must present a certificate signed by the client CA (the handshake fails
    /// otherwise).
    #[default]
    Required,
    /// A client may present one (it is then verified, and names the client's identity for
    /// authorization) or none (it is then `anonymous`, or identified by a bearer token).
    Optional,
}

impl std::str::FromStr for ClientCerts {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "required" => Ok(ClientCerts::Required),
            "optional" => Ok(ClientCerts::Optional),
            other => Err(format!("{other:?}: use required or optional")),
        }
    }
}

/// Builds the rustls server configuration from `files`.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    server_config_with(files, ClientCerts::Required)
}

/// Builds the rustls server configuration from `files`, asking for client certificates as
/// `client_certs` says (when `files` has a CA).
pub fn server_config_with(
    files: &TlsFiles,
    client_certs: ClientCerts,
) -> Result<ServerConfig, TlsError> {
    let chain = certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|e| TlsError::Read {
        path: files.key.display().to_string(),
        reason: e.to_string(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            if client_certs == ClientCerts::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Inbound TLS with hot reload.
pub struct ServerTls {
    files: TlsFiles,
    client_certs: ClientCerts,
    current: RwLock<(Option<SystemTime>, TlsAcceptor)>,
}

impl ServerTls {
    /// Loads `files`; fails if they are unusable now.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        Self::load_with(files, ClientCerts::Required)
    }

    /// Loads `files`, asking for client certificates as `client_certs` says.
    pub fn load_with(files: TlsFiles, client_certs: ClientCerts) -> Result<Arc<Self>, TlsError> {
        let config = server_config_with(&files, client_certs)?;
        let stamp = files.stamp();
        Ok(Arc::new(Self {
            client_certs,
            files,
            current: RwLock::new((stamp, TlsAcceptor::from(Arc::new(config)))),
        }))
    }

    fn acceptor(&self) -> TlsAcceptor {
        self.current.read().expect("tls lock").1.clone()
    }

    /// Re-reads the files if they changed; keeps the old configuration if the new one is bad.
    pub fn reload_if_changed(&self) -> bool {
        let stamp = self.files.stamp();
        if stamp == self.current.read().expect("tls lock").0 {
            return false;
        }
        match server_config_with(&self.files, self.client_certs) {
            Ok(config) => {
                *self.current.write().expect("tls lock") =
                    (stamp, TlsAcceptor::from(Arc::new(config)));
                tracing::info!(cert = %self.files.cert.display(), "reloaded TLS certificates");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "new TLS files are unusable; keeping the previous ones");
                false
            }
        }
    }

    /// Accepts connections on `listener`, completing handshakes concurrently; failed handshakes
    /// (no or wrong client certificate, plain-text clients) are logged and dropped.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> impl tokio_stream::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                if tx.is_closed() {
                    return;
                }
                let acceptor = self.acceptor();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(e)) => tracing::warn!(%peer, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// Which port of a member a channel goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Port {
    /// The client port (KV, Cluster, health).
    Client,
    /// The peer port (Raft).
    Peer,
}

/// Outbound channels to other members, cached, with per-port TLS.
pub struct Dialer {
    client_tls: Option<TlsFiles>,
    peer_tls: Option<TlsFiles>,
    stamp: Mutex<Option<SystemTime>>,
    generation: AtomicU64,
    channels: Mutex<HashMap<(Port, String), Channel>>,
    /// Dial through an in-memory network from this host instead of sockets (plain text).
    memory: Option<(crate::memnet::MemoryNetwork, std::net::IpAddr)>,
}

impl Dialer {
    /// `client_tls`: CA (and optional identity) for calls to members' client ports;
    /// `peer_tls`: identity and CA for mutual TLS on peer ports. None: plain text.
    pub fn new(client_tls: Option<TlsFiles>, peer_tls: Option<TlsFiles>) -> Arc<Self> {
        Arc::new(Self {
            client_tls,
            peer_tls,
            stamp: Mutex::new(None),
            generation: AtomicU64::new(0),
            channels: Mutex::default(),
            memory: None,
        })
    }

    /// A plain-text dialer that connects through `net` from host `from` (in-process clusters).
    pub fn in_memory(net: crate::memnet::MemoryNetwork, from: std::net::IpAddr) -> Arc<Self> {
        Arc::new(Self {
            client_tls: None,
            peer_tls: None,
            stamp: Mutex::new(None),
            generation: AtomicU64::new(0),
            channels: Mutex::default(),
            memory: Some((net, from)),
        })
    }

    /// A plain-text dialer (no TLS anywhere).
    pub fn plain() -> Arc<Self> {
        Self::new(None, None)
    }

    fn files(&self, port: Port) -> Option<&TlsFiles> {
        match port {
            Port::Client => self.client_tls.as_ref(),
            Port::Peer => self.peer_tls.as_ref(),
        }
    }

    /// Drops cached channels when any TLS file changed.
    pub fn refresh(&self) {
        let stamp = [self.client_tls.as_ref(), self.peer_tls.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(TlsFiles::stamp)
            .max();
        let mut last = self.stamp.lock().expect("dialer lock");
        if *last != stamp {
            if last.is_some() {
                tracing::info!(
                    "TLS files changed; reconnecting to members with the new certificates"
                );
            }
            *last = stamp;
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.channels.lock().expect("dialer lock").clear();
        }
    }

    /// The cached channel to `addr` on `port`.
    pub fn channel(&self, port: Port, addr: &str) -> Result<Channel, TlsError> {
        let key = (port, addr.to_string());
        if let Some(ch) = self.channels.lock().expect("dialer lock").get(&key) {
            return Ok(ch.clone());
        }
        let ch = self.connect_lazy(port, addr, Duration::from_secs(2))?;
        self.channels
            .lock()
            .expect("dialer lock")
            .insert(key, ch.clone());
        Ok(ch)
    }

    /// A new lazily connecting channel (not cached).
    pub fn connect_lazy(
        &self,
        port: Port,
        addr: &str,
        connect_timeout: Duration,
    ) -> Result<Channel, TlsError> {
        let files = self.files(port);
        let scheme = if files.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| TlsError::Config(format!("bad address {addr:?}: {e}")))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some((net, from)) = &self.memory {
            return Ok(endpoint.connect_with_connector_lazy(net.connector(*from)));
        }
        if let Some(files) = files {
            endpoint = endpoint
                .tls_config(client_tls_config(files)?)
                .map_err(|e| TlsError::Config(e.to_string()))?;
        }
        Ok(endpoint.connect_lazy())
    }
}

/// tonic client TLS settings from `files` (identity when cert and key exist, CA when given).
pub fn client_tls_config(files: &TlsFiles) -> Result<ClientTlsConfig, TlsError> {
    let mut config = ClientTlsConfig::new();
    if let Some(ca) = &files.ca {
        config = config.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if !files.cert.as_os_str().is_empty() && !files.key.as_os_str().is_empty() {
        config = config.identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
    }
    Ok(config)
}

/// Polls for certificate changes until the process ends.
pub async fn watch(servers: Vec<Arc<ServerTls>>, dialer: Arc<Dialer>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        for s in &servers {
            s.reload_if_changed();
        }
        dialer.refresh();
    }
}
