//! The cluster record: proof that a cluster exists, kept somewhere that outlives kv-0's volume.
//!
//! kv-0 on an empty volume must decide between "this is the very first start: mint a cluster"
//! and "my volume was lost while the cluster lived on: wait to be re-admitted". Asking the other
//! members cannot decide it: after a full restart under `OrderedReady` they do not exist yet
//! (Kubernetes creates kv-1 only once kv-0 is Ready), so nobody answers and kv-0 would mint a
//! second cluster that kv-1 and kv-2 then never join — two clusters behind one Service. The
//! volumes of the other members are not reachable either. So the fact "cluster X exists" is
//! written, at bootstrap, *before* Raft is initialized, to a place that does not share kv-0's
//! fate, and read back by every kv-0 that starts on an empty volume:
//!
//! - `file:PATH` — a small JSON file (`{"format":1,"cluster_id":"…"}`), written with a temp file
//!   of the writer's own, fsync, a hard link to the final name (which fails if the record exists,
//!   so of two kv-0s racing to bootstrap exactly one records its cluster and the other is refused
//!   with [`RecordError::Conflict`]) and directory fsync. `kvset-server local` keeps it in its
//!   base data dir, outside every replica's own data dir; a docker topology mounts a small shared
//!   volume.
//! - `configmap:NAME` — a Kubernetes ConfigMap in the pod's namespace, written through the API
//!   server with the pod's service-account token (re-read on every call: bound tokens rotate) and
//!   CA. A small typed HTTP/1.1 client over tokio-rustls does it, not the `kube` crate: we need
//!   three calls on one object, and `kube` with its TLS stack, `k8s-openapi` and their codegen
//!   would roughly double this crate's build on the 2-core machines we build on, for no gain in
//!   safety. The manifests pre-create the ConfigMap empty (so the Role can be limited to that one
//!   name: `get` and `update`); when it is missing the client creates it (`create` cannot be
//!   limited by name in RBAC, so the shipped Role does not grant it).
//! - `none` — no record: today's behaviour (probe the others for a second, mint if nobody
//!   answers). Only when chosen explicitly, or outside Kubernetes when nothing was chosen (with a
//!   warning at every start).
//!
//! Writing is idempotent and refuses to overwrite a different id ([`RecordError::Conflict`]): a
//! record that names another cluster means the operator deleted the data but not the record (see
//! docs/OPERATIONS.md: delete both to start over), and kv-0 must not silently pick a side.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where Kubernetes mounts a pod's service-account credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The key of the cluster id inside the ConfigMap's `data`.
pub const CONFIGMAP_KEY: &str = "cluster_id";
const FORMAT: u32 = 1;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("invalid --cluster-record {0:?}: expected none, file:PATH or configmap:NAME")]
    Spec(String),
    #[error("cluster record {place}: {source}")]
    Io {
        place: String,
        source: std::io::Error,
    },
    #[error("cluster record {place} is unreadable: {reason}")]
    Corrupt { place: String, reason: String },
    #[error(
        "cluster record {place} names cluster {recorded}, not {mine}: the record outlived the \
         data of an old cluster, or two clusters share one record. To start over, delete the old \
         data AND the record; otherwise point --cluster-record at this cluster's own record"
    )]
    Conflict {
        place: String,
        recorded: String,
        mine: String,
    },
    #[error(
        "cluster record {place}: the Kubernetes API answered {status}: {body}. The pod needs \
         get/update on this ConfigMap (see k8s/base/cluster-record-rbac.yaml and the StatefulSet's \
         serviceAccountName)"
    )]
    Api {
        place: String,
        status: u16,
        body: String,
    },
    #[error("cluster record {place}: {reason}")]
    Kubernetes { place: String, reason: String },
}

/// The `--cluster-record` flag, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordSpec {
    /// No record (today's behaviour).
    None,
    /// A JSON file.
    File(PathBuf),
    /// A ConfigMap of this name in the pod's namespace.
    ConfigMap(String),
}

/// Whether `name` can name a Kubernetes object (a DNS subdomain: at most 253 lowercase letters,
/// digits, `-` and `.`). Shared by the flags that name one (`--cluster-record configmap:NAME`,
/// `--replicas-from statefulset:NAME`).
pub(crate) fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

impl FromStr for RecordSpec {
    type Err = RecordError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "none" {
            return Ok(Self::None);
        }
        if let Some(path) = s.strip_prefix("file:").filter(|p| !p.is_empty()) {
            return Ok(Self::File(PathBuf::from(path)));
        }
        if let Some(name) = s.strip_prefix("configmap:") {
            if is_object_name(name) {
                return Ok(Self::ConfigMap(name.to_string()));
            }
        }
        Err(RecordError::Spec(s.to_string()))
    }
}

impl std::fmt::Display for RecordSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => write!(f, "none"),
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::ConfigMap(n) => write!(f, "configmap:{n}"),
        }
    }
}

impl RecordSpec {
    /// What to use when the flag was not given: inside Kubernetes (a service account is
    /// mounted) the ConfigMap `<set>-cluster`, elsewhere none.
    pub fn default_for(set: &str) -> Self {
        if Path::new(SERVICE_ACCOUNT_DIR).join("token").exists() {
            Self::ConfigMap(format!("{set}-cluster"))
        } else {
            Self::None
        }
    }
}

/// A cluster record backend.
#[derive(Clone, Debug)]
pub enum ClusterRecord {
    None,
    File(PathBuf),
    ConfigMap(ConfigMapRecord),
}

#[derive(Serialize, Deserialize)]
struct FileRecord {
    format: u32,
    cluster_id: String,
}

impl ClusterRecord {
    /// Opens the backend a spec names (for a ConfigMap: `kube_api` if given, else the in-cluster
    /// API and credentials).
    pub fn open(
        spec: &RecordSpec,
        kube_api: Option<&crate::kube_api::KubeApi>,
    ) -> Result<Self, RecordError> {
        Ok(match spec {
            RecordSpec::None => Self::None,
            RecordSpec::File(p) => Self::File(p.clone()),
            RecordSpec::ConfigMap(name) if kube_api.is_some() => {
                let api = kube_api.expect("checked");
                Self::ConfigMap(ConfigMapRecord::new(&api.url, &api.namespace, name)?)
            }
            RecordSpec::ConfigMap(name) => Self::ConfigMap(ConfigMapRecord::in_cluster(
                name,
                Path::new(SERVICE_ACCOUNT_DIR),
            )?),
        })
    }

    /// True for `none`.
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }

    /// Where the record lives, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::None => "none".into(),
            Self::File(p) => format!("file:{}", p.display()),
            Self::ConfigMap(c) => format!("configmap:{}/{}", c.namespace, c.name),
        }
    }

    /// The recorded cluster id, if any.
    pub async fn read(&self) -> Result<Option<String>, RecordError> {
        match self {
            Self::None => Ok(None),
            Self::File(path) => read_file(path),
            Self::ConfigMap(c) => Ok(c.get().await?.and_then(|o| o.cluster_id)),
        }
    }

    /// Records `cluster_id`; a no-op when it is already recorded, an error when another id is.
    pub async fn write(&self, cluster_id: &str) -> Result<(), RecordError> {
        match self {
            Self::None => Ok(()),
            Self::File(path) => write_file(path, cluster_id),
            Self::ConfigMap(c) => c.write(cluster_id).await,
        }
    }
}

fn read_file(path: &Path) -> Result<Option<String>, RecordError> {
    let place = format!("file:{}", path.display());
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RecordError::Io { place, source }),
    };
    let record: FileRecord = serde_json::from_slice(&bytes).map_err(|e| RecordError::Corrupt {
        place: place.clone(),
        reason: e.to_string(),
    })?;
    if record.format > FORMAT || record.cluster_id.is_empty() {
        return Err(RecordError::Corrupt {
            place,
            reason: format!(
                "format {} with cluster id {:?}",
                record.format, record.cluster_id
            ),
        });
    }
    Ok(Some(record.cluster_id))
}

fn write_file(path: &Path, cluster_id: &str) -> Result<(), RecordError> {
    let place = format!("file:{}", path.display());
    match read_file(path)? {
        Some(have) if have == cluster_id => return Ok(()),
        Some(have) => {
            return Err(RecordError::Conflict {
                place,
                recorded: have,
                mine: cluster_id.to_string(),
            })
        }
        None => {}
    }
    let io = |source| RecordError::Io {
        place: place.clone(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let json = serde_json::to_vec(&FileRecord {
        format: FORMAT,
        cluster_id: cluster_id.to_string(),
    })
    .expect("the record always serializes");
    if create_exclusively(path, &json, cluster_id).map_err(io)? {
        return Ok(());
    }
    // Another writer got there between the read above and now (two kv-0s racing to bootstrap,
    // e.g. replicas of a Deployment that all call themselves kv-0): its id stands.
    match read_file(path)? {
        Some(have) if have == cluster_id => Ok(()),
        Some(have) => Err(RecordError::Conflict {
            place,
            recorded: have,
            mine: cluster_id.to_string(),
        }),
        None => Err(RecordError::Corrupt {
            place,
            reason: "the record vanished while it was being written".into(),
        }),
    }
}

/// Creates `path` holding `bytes`, durably, only if it does not exist yet: true when this call
/// created it, false when it was already there (left untouched). The bytes go to a temp file of
/// this writer's own (named after `unique`) that is fsynced and then hard-linked to `path`; the
/// link fails when `path` exists, so of two writers racing exactly one wins, which a rename
/// (always replacing) cannot give. On a filesystem without hard links the write falls back to
/// the rename (atomic, not exclusive).
fn create_exclusively(path: &Path, bytes: &[u8], unique: &str) -> std::io::Result<bool> {
    use std::io::Write as _;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tag: String = unique
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    let tmp = path.with_file_name(format!(".{name}.{tag}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    let linked = std::fs::hard_link(&tmp, path);
    let created = match linked {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::Unsupported | std::io::ErrorKind::PermissionDenied
            ) || e.raw_os_error() == Some(libc::ENOSYS) =>
        {
            std::fs::rename(&tmp, path)?;
            crate::volume::sync_dir(path)?;
            return Ok(true);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::remove_file(&tmp)?;
    crate::volume::sync_dir(path)?;
    Ok(created)
}

/// A ConfigMap on a Kubernetes API server.
#[derive(Clone)]
pub struct ConfigMapRecord {
    /// `https://host:port` in a pod; a test may use `http://`.
    pub api: String,
    pub namespace: String,
    pub name: String,
    /// The file holding the bearer token (re-read on every call), if any.
    pub token_file: Option<PathBuf>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for ConfigMapRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ConfigMap {}/{} at {}",
            self.namespace, self.name, self.api
        )
    }
}

/// What the ConfigMap holds, as far as we care.
pub struct ConfigMapState {
    pub cluster_id: Option<String>,
    /// Needed for an update (optimistic concurrency).
    pub resource_version: String,
}

impl ConfigMapRecord {
    /// The ConfigMap `name` in the pod's namespace, through the in-cluster API endpoint
    /// (`KUBERNETES_SERVICE_HOST`/`_PORT`) with the service account mounted at `sa_dir`.
    pub fn in_cluster(name: &str, sa_dir: &Path) -> Result<Self, RecordError> {
        let place = format!("configmap:{name}");
        let k8s = |reason: String| RecordError::Kubernetes {
            place: place.clone(),
            reason,
        };
        let api = InClusterApi::from_service_account(sa_dir).map_err(k8s)?;
        let mut record = Self::new(&api.api, &api.namespace, name)?;
        record.token_file = Some(api.token_file);
        record.tls = Some(api.tls);
        Ok(record)
    }

    /// A ConfigMap on the API server at `api` (`http://host:port` or `https://…`, the latter
    /// then needing [`ConfigMapRecord::with_ca`]).
    pub fn new(api: &str, namespace: &str, name: &str) -> Result<Self, RecordError> {
        Ok(Self {
            api: api.trim_end_matches('/').to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            token_file: None,
            tls: None,
        })
    }

    /// Trusts the CA bundle `pem` for an `https://` API.
    pub fn with_ca(mut self, pem: &[u8]) -> Result<Self, RecordError> {
        self.tls = Some(tls_config(pem).map_err(|reason| self.error(reason))?);
        Ok(self)
    }

    /// Sends this bearer token file's content with every call.
    pub fn with_token_file(mut self, path: PathBuf) -> Self {
        self.token_file = Some(path);
        self
    }

    fn place(&self) -> String {
        format!("configmap:{}/{}", self.namespace, self.name)
    }

    fn error(&self, reason: String) -> RecordError {
        RecordError::Kubernetes {
            place: self.place(),
            reason,
        }
    }

    fn collection(&self) -> String {
        format!("/api/v1/namespaces/{}/configmaps", self.namespace)
    }

    fn object(&self) -> String {
        format!("{}/{}", self.collection(), self.name)
    }

    /// Reads the ConfigMap; None when it does not exist.
    pub async fn get(&self) -> Result<Option<ConfigMapState>, RecordError> {
        let (status, body) = self.call("GET", &self.object(), None).await?;
        match status {
            200 => {
                let v: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| self.error(format!("undecodable ConfigMap: {e}")))?;
                let cluster_id = v["data"][CONFIGMAP_KEY]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                let resource_version = v["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                Ok(Some(ConfigMapState {
                    cluster_id,
                    resource_version,
                }))
            }
            404 => Ok(None),
            _ => Err(self.api_error(status, &body)),
        }
    }

    fn api_error(&self, status: u16, body: &[u8]) -> RecordError {
        let body = String::from_utf8_lossy(body);
        RecordError::Api {
            place: self.place(),
            status,
            body: body.chars().take(300).collect(),
        }
    }

    fn body(&self, cluster_id: &str, resource_version: Option<&str>) -> serde_json::Value {
        let mut metadata = serde_json::json!({
            "name": self.name,
            "labels": { "app.kubernetes.io/component": "cluster-record" },
        });
        if let Some(rv) = resource_version {
            metadata["resourceVersion"] = rv.into();
        }
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata,
            "data": { CONFIGMAP_KEY: cluster_id },
        })
    }

    /// Records `cluster_id`: creates the ConfigMap, or fills in the empty one, or confirms the
    /// id already there; refuses a different one. Retries a lost race a few times.
    pub async fn write(&self, cluster_id: &str) -> Result<(), RecordError> {
        for _ in 0..5 {
            let (status, body) = match self.get().await? {
                Some(ConfigMapState {
                    cluster_id: Some(have),
                    ..
                }) if have == cluster_id => return Ok(()),
                Some(ConfigMapState {
                    cluster_id: Some(have),
                    ..
                }) => {
                    return Err(RecordError::Conflict {
                        place: self.place(),
                        recorded: have,
                        mine: cluster_id.to_string(),
                    })
                }
                Some(state) => {
                    let body = self.body(cluster_id, Some(&state.resource_version));
                    self.call("PUT", &self.object(), Some(&body)).await?
                }
                None => {
                    let body = self.body(cluster_id, None);
                    self.call("POST", &self.collection(), Some(&body)).await?
                }
            };
            match status {
                200 | 201 => return Ok(()),
                // Someone else created or updated it meanwhile: look again.
                409 => continue,
                _ => return Err(self.api_error(status, &body)),
            }
        }
        Err(self.error("kept losing races with other writers".into()))
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Vec<u8>), RecordError> {
        tokio::time::timeout(CALL_TIMEOUT, self.call_inner(method, path, body))
            .await
            .map_err(|_| {
                self.error(format!(
                    "{method} {path}: no answer within {CALL_TIMEOUT:?}"
                ))
            })?
    }

    async fn call_inner(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, Vec<u8>), RecordError> {
        api_call(
            &self.api,
            self.token_file.as_deref(),
            self.tls.as_ref(),
            method,
            path,
            body,
        )
        .await
        .map_err(|e| self.error(e))
    }
}

/// The Kubernetes API as a pod sees it: the in-cluster endpoint, its namespace, and the
/// service account's token file and CA.
pub(crate) struct InClusterApi {
    /// `https://host:port`.
    pub api: String,
    pub namespace: String,
    pub token_file: PathBuf,
    pub tls: Arc<rustls::ClientConfig>,
}

impl InClusterApi {
    /// From `KUBERNETES_SERVICE_HOST`/`_PORT` and the service account mounted at `sa_dir`.
    pub fn from_service_account(sa_dir: &Path) -> Result<Self, String> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            "KUBERNETES_SERVICE_HOST is not set: not running in a pod? Use --cluster-record=file:PATH outside Kubernetes".to_string()
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let namespace = std::fs::read_to_string(sa_dir.join("namespace"))
            .map_err(|e| format!("{}/namespace: {e}", sa_dir.display()))?
            .trim()
            .to_string();
        let ca = std::fs::read(sa_dir.join("ca.crt"))
            .map_err(|e| format!("{}/ca.crt: {e}", sa_dir.display()))?;
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(Self {
            api: format!("https://{host}:{port}"),
            namespace,
            token_file: sa_dir.join("token"),
            tls: tls_config(&ca)?,
        })
    }
}

/// One call to a Kubernetes API server at `api` (`https://…` needs `tls`; `http://` is for
/// tests): the bearer token is re-read from `token_file` on every call (bound tokens rotate).
/// Returns the status and the (de-chunked) body; the error says what failed, for messages.
pub(crate) async fn api_call(
    api: &str,
    token_file: Option<&Path>,
    tls: Option<&Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, Vec<u8>), String> {
    let (https, authority) = match api.split_once("://") {
        Some(("https", a)) => (true, a),
        Some(("http", a)) => (false, a),
        _ => return Err(format!("API address {api:?} is not http(s)://")),
    };
    let token = match token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("{}: {e}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let body = body.map(|b| serde_json::to_vec(b).expect("JSON serializes"));
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: kvset-server\r\n"
    );
    if let Some(t) = &token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = &body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body.as_deref().unwrap_or_default());

    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connecting to {authority}: {e}"))?;
    let response = if https {
        let tls = tls.cloned().ok_or("https API without a CA")?;
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("API host {host:?}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {authority}: {e}"))?;
        exchange(stream, &bytes).await
    } else {
        exchange(tcp, &bytes).await
    }
    .map_err(|e| format!("{method} {path}: {e}"))?;
    parse_response(&response).map_err(|e| format!("{method} {path}: {e}"))
}

fn tls_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("CA bundle: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the CA bundle holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut out = Vec::new();
    // `Connection: close`: the answer ends where the stream does. Bounded: a ConfigMap is small.
    (&mut stream)
        .take(4 * 1024 * 1024)
        .read_to_end(&mut out)
        .await?;
    Ok(out)
}

/// Splits an HTTP/1.1 response into status and body (de-chunking when needed).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("truncated HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("bad HTTP status line")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        assert_eq!("none".parse::<RecordSpec>().unwrap(), RecordSpec::None);
        assert_eq!(
            "file:/x/rec.json".parse::<RecordSpec>().unwrap(),
            RecordSpec::File("/x/rec.json".into())
        );
        assert_eq!(
            "configmap:kv-cluster".parse::<RecordSpec>().unwrap(),
            RecordSpec::ConfigMap("kv-cluster".into())
        );
        for bad in ["", "file:", "configmap:", "configmap:Bad_Name", "s3:bucket"] {
            assert!(bad.parse::<RecordSpec>().is_err(), "{bad:?}");
        }
        assert_eq!(
            RecordSpec::File("/a".into()).to_string(),
            "file:/a".to_string()
        );
    }

    #[test]
    fn racing_file_writers_record_exactly_one_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster-record.json");
        // Every writer has read "no record" already: they all go for the write at once.
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let outcomes: Vec<Result<(), RecordError>> = (0..8)
            .map(|i| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    write_file(&path, &format!("c-{i}"))
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let winners: Vec<usize> = (0..8).filter(|&i| outcomes[i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "{outcomes:?}");
        let recorded = read_file(&path).unwrap().unwrap();
        assert_eq!(recorded, format!("c-{}", winners[0]));
        for (i, outcome) in outcomes.iter().enumerate() {
            if let Err(e) = outcome {
                assert!(
                    matches!(e, RecordError::Conflict { recorded: r, mine, .. }
                        if *r == recorded && *mine == format!("c-{i}")),
                    "{e:?}"
                );
            }
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temp files left behind: {left:?}");
    }

    #[tokio::test]
    async fn a_file_record_is_written_once_and_never_overwritten_with_another_id() {
        let dir = tempfile::tempdir().unwrap();
        let record = ClusterRecord::File(dir.path().join("sub").join("cluster-record.json"));
        assert_eq!(record.read().await.unwrap(), None);
        record.write("c1").await.unwrap();
        record.write("c1").await.unwrap();
        assert_eq!(record.read().await.unwrap().as_deref(), Some("c1"));
        let err = record.write("c2").await.unwrap_err();
        assert!(matches!(err, RecordError::Conflict { .. }), "{err}");
        assert!(err
            .to_string()
            .contains("delete the old data AND the record"));
        assert_eq!(record.read().await.unwrap().as_deref(), Some("c1"));
    }

    #[test]
    fn chunked_and_plain_responses_parse() {
        let plain = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (404, b"{}".to_vec()));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, b"abcde".to_vec()));
        assert!(parse_response(b"HTTP/1.1 200").is_err());
    }
}
