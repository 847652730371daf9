//! The desired size of the set: how many replicas the StatefulSet (or the launcher) wants.
//!
//! A StatefulSet says which of its pods are going away: when `spec.replicas` is N, a pod whose
//! ordinal is ≥ N is being scaled away, and any other pod that stops is restarting. kvset uses
//! exactly that fact and nothing else to decide whether a member that is told to stop leaves the
//! cluster for good (see `node::scale`). Guessing would be worse than doing nothing: removing a
//! member that is only restarting costs a full re-sync, and keeping a member that left costs a
//! voter that never answers. So the size is read from the one place that knows, and when that
//! place cannot be read the member falls back to manual membership (today's behaviour: nobody
//! leaves by themselves, `kvsetctl members remove` does it) and says so.
//!
//! Where the size comes from (`--replicas-from`):
//!
//! - `statefulset:NAME` — `spec.replicas` of the StatefulSet NAME in the pod's namespace, read
//!   through the Kubernetes API with the pod's service-account token and CA (the same small typed
//!   client as the cluster record, see [`crate::cluster_record`]). The Role the manifests ship
//!   grants `get` on that one StatefulSet and nothing else. The member polls it (every
//!   [`POLL_INTERVAL`]) and reads it again, fresh, when it receives SIGTERM: the StatefulSet
//!   controller lowers `spec.replicas` before it deletes the pods above it, so the read at
//!   SIGTERM sees the new size.
//! - `file:PATH` — a file holding the number, as `kvset-server local` keeps it in its data dir
//!   (`kvset-server local scale N` rewrites it).
//! - `manual` — no source: membership changes only by `kvsetctl members add/remove`.
//!
//! Default: in a pod (a service account is mounted and `KUBERNETES_SERVICE_HOST` is set)
//! `statefulset:<set>`, elsewhere `manual`.
//!
//! A source that cannot be read (no RBAC, API down, file missing or garbled) counts as manual
//! for as long as it cannot: the member logs it once when it happens (and once when it recovers)
//! and `Status` reports `membership_mode: manual`.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cluster_record::{api_call, is_object_name, InClusterApi, SERVICE_ACCOUNT_DIR};
use crate::kube_api::KubeApi;

/// How often a member re-reads its desired size.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait for one read of the Kubernetes API.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the desired size could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReplicasError {
    #[error("invalid --replicas-from {0:?}: expected manual, file:PATH or statefulset:NAME")]
    Spec(String),
    #[error("membership is manual (--replicas-from=manual)")]
    Manual,
    #[error("{place}: {reason}")]
    Unreadable { place: String, reason: String },
    #[error(
        "{place}: the Kubernetes API answered {status}: {body}. The pod needs `get` on this \
         StatefulSet (see k8s/base/statefulset-reader-rbac.yaml and the StatefulSet's \
         serviceAccountName)"
    )]
    Api {
        place: String,
        status: u16,
        body: String,
    },
}

/// The `--replicas-from` flag, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicasFrom {
    /// No source: membership is changed by hand.
    Manual,
    /// A file holding the number (the local launcher's).
    File(PathBuf),
    /// `spec.replicas` of this StatefulSet in the pod's namespace.
    StatefulSet(String),
}

impl FromStr for ReplicasFrom {
    type Err = ReplicasError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "manual" {
            return Ok(Self::Manual);
        }
        if let Some(path) = s.strip_prefix("file:").filter(|p| !p.is_empty()) {
            return Ok(Self::File(PathBuf::from(path)));
        }
        if let Some(name) = s.strip_prefix("statefulset:") {
            if is_object_name(name) {
                return Ok(Self::StatefulSet(name.to_string()));
            }
        }
        Err(ReplicasError::Spec(s.to_string()))
    }
}

impl std::fmt::Display for ReplicasFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Manual => write!(f, "manual"),
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::StatefulSet(n) => write!(f, "statefulset:{n}"),
        }
    }
}

impl ReplicasFrom {
    /// What to use when the flag was not given: in a pod the StatefulSet named like the set,
    /// elsewhere manual.
    pub fn default_for(set: &str) -> Self {
        let in_pod = Path::new(SERVICE_ACCOUNT_DIR).join("token").exists()
            && std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        if in_pod {
            Self::StatefulSet(set.to_string())
        } else {
            Self::Manual
        }
    }
}

/// A StatefulSet on a Kubernetes API server.
#[derive(Clone)]
pub struct StatefulSetApi {
    /// `https://host:port` in a pod; a test may use `http://`.
    pub api: String,
    pub namespace: String,
    pub name: String,
    /// The bearer token file (re-read on every call), if any.
    pub token_file: Option<PathBuf>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for StatefulSetApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.place())
    }
}

impl StatefulSetApi {
    /// The StatefulSet `name` on the API server at `api` (`http://` or, with credentials from
    /// [`StatefulSetApi::in_cluster`], `https://`).
    pub fn new(api: &str, namespace: &str, name: &str) -> Self {
        Self {
            api: api.trim_end_matches('/').to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            token_file: None,
            tls: None,
        }
    }

    /// The StatefulSet `name` in the pod's namespace, through the in-cluster API endpoint with
    /// the service account mounted at `sa_dir`.
    pub fn in_cluster(name: &str, sa_dir: &Path) -> Result<Self, ReplicasError> {
        let api = InClusterApi::from_service_account(sa_dir).map_err(|reason| {
            ReplicasError::Unreadable {
                place: format!("statefulset:{name}"),
                reason,
            }
        })?;
        let mut me = Self::new(&api.api, &api.namespace, name);
        me.token_file = Some(api.token_file);
        me.tls = Some(api.tls);
        Ok(me)
    }

    /// Sends this bearer token file's content with every call.
    pub fn with_token_file(mut self, path: PathBuf) -> Self {
        self.token_file = Some(path);
        self
    }

    fn place(&self) -> String {
        format!("statefulset:{}/{}", self.namespace, self.name)
    }

    fn path(&self) -> String {
        format!(
            "/apis/apps/v1/namespaces/{}/statefulsets/{}",
            self.namespace, self.name
        )
    }

    /// `spec.replicas` (Kubernetes' default, 1, when the field is absent).
    pub async fn replicas(&self) -> Result<u64, ReplicasError> {
        let unreadable = |reason: String| ReplicasError::Unreadable {
            place: self.place(),
            reason,
        };
        let path = self.path();
        let call = api_call(
            &self.api,
            self.token_file.as_deref(),
            self.tls.as_ref(),
            "GET",
            &path,
            None,
        );
        let (status, body) = tokio::time::timeout(API_TIMEOUT, call)
            .await
            .map_err(|_| unreadable(format!("no answer within {API_TIMEOUT:?}")))?
            .map_err(unreadable)?;
        if status != 200 {
            return Err(ReplicasError::Api {
                place: self.place(),
                status,
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            });
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| unreadable(format!("undecodable StatefulSet: {e}")))?;
        if v["kind"].as_str().is_some_and(|k| k != "StatefulSet") {
            return Err(unreadable(format!("the API returned a {}", v["kind"])));
        }
        match &v["spec"]["replicas"] {
            serde_json::Value::Null => Ok(1),
            n => n
                .as_u64()
                .ok_or_else(|| unreadable(format!("spec.replicas is {n}, not a count"))),
        }
    }
}

/// Where this member reads its desired size from, opened.
#[derive(Clone, Debug)]
pub enum ReplicasSource {
    /// Manual membership (chosen, or the source could not even be set up: the reason).
    Manual(Option<ReplicasError>),
    File(PathBuf),
    StatefulSet(StatefulSetApi),
}

impl ReplicasSource {
    /// Opens what `spec` names: a StatefulSet through `kube_api` if given, else through the
    /// in-cluster endpoint. A StatefulSet outside a pod without `kube_api` cannot be opened:
    /// manual, with why.
    pub fn open(spec: &ReplicasFrom, kube_api: Option<&KubeApi>) -> Self {
        match spec {
            ReplicasFrom::Manual => Self::Manual(None),
            ReplicasFrom::File(p) => Self::File(p.clone()),
            ReplicasFrom::StatefulSet(name) if kube_api.is_some() => {
                let api = kube_api.expect("checked");
                Self::StatefulSet(StatefulSetApi::new(&api.url, &api.namespace, name))
            }
            ReplicasFrom::StatefulSet(name) => {
                match StatefulSetApi::in_cluster(name, Path::new(SERVICE_ACCOUNT_DIR)) {
                    Ok(api) => Self::StatefulSet(api),
                    Err(e) => Self::Manual(Some(e)),
                }
            }
        }
    }

    /// `statefulset`, `file` or `manual`: what `membership_mode` says while the source reads.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Manual(_) => "manual",
            Self::File(_) => "file",
            Self::StatefulSet(_) => "statefulset",
        }
    }

    /// Reads the desired size now.
    pub async fn read(&self) -> Result<u64, ReplicasError> {
        match self {
            Self::Manual(None) => Err(ReplicasError::Manual),
            Self::Manual(Some(e)) => Err(e.clone()),
            Self::File(path) => read_file(path),
            Self::StatefulSet(api) => api.replicas().await,
        }
    }
}

/// Reads a replica count file (a decimal number, surrounding white space ignored).
pub fn read_file(path: &Path) -> Result<u64, ReplicasError> {
    let unreadable = |reason: String| ReplicasError::Unreadable {
        place: format!("file:{}", path.display()),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    text.trim()
        .parse::<u64>()
        .map_err(|_| unreadable(format!("holds {:?}, not a replica count", text.trim())))
}

/// What a member knows of its desired size, kept fresh by [`DesiredReplicas::follow`].
#[derive(Clone)]
pub struct DesiredReplicas {
    source: Arc<ReplicasSource>,
    /// The last read: the size, or why there is none.
    last: Arc<Mutex<Result<u64, ReplicasError>>>,
}

impl std::fmt::Debug for DesiredReplicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DesiredReplicas({:?})", self.source)
    }
}

impl DesiredReplicas {
    /// Starts from `source`; nothing is known until the first read.
    pub fn new(source: ReplicasSource) -> Self {
        Self {
            source: Arc::new(source),
            last: Arc::new(Mutex::new(Err(ReplicasError::Unreadable {
                place: "desired size".into(),
                reason: "not read yet".into(),
            }))),
        }
    }

    /// Manual membership.
    pub fn manual() -> Self {
        Self::new(ReplicasSource::Manual(None))
    }

    /// The size from the last read, None while it could not be read (membership is manual then).
    pub fn current(&self) -> Option<u64> {
        self.last
            .lock()
            .expect("replicas lock")
            .as_ref()
            .ok()
            .copied()
    }

    /// `statefulset` or `file` while the source reads, otherwise `manual`.
    pub fn mode(&self) -> &'static str {
        if self.current().is_some() {
            self.source.kind()
        } else {
            "manual"
        }
    }

    /// Reads the source now and remembers the answer; logs (once) when the member falls back
    /// to manual membership or leaves it.
    pub async fn refresh(&self) -> Option<u64> {
        let now = self.source.read().await;
        let before = std::mem::replace(&mut *self.last.lock().expect("replicas lock"), now.clone());
        match (&before, &now) {
            (Err(_), Ok(n)) => tracing::info!(
                replicas = n,
                source = self.source.kind(),
                "membership follows the set's size: members with an ordinal at or above it leave \
                 the cluster when they stop"
            ),
            (Ok(a), Ok(b)) if a != b => {
                tracing::info!(from = a, to = b, "the set's desired size changed")
            }
            (Ok(_), Err(e)) => tracing::warn!(
                error = %e,
                "cannot read the set's desired size: membership is manual until it can (members \
                 that stop do not leave; remove them with `kvsetctl members remove`)"
            ),
            (Err(old), Err(e)) if is_first_read(old) => match e {
                ReplicasError::Manual => {
                    tracing::info!("membership is manual (--replicas-from=manual)")
                }
                e => tracing::warn!(
                    error = %e,
                    "cannot read the set's desired size: membership is manual until it can \
                     (members that stop do not leave; remove them with `kvsetctl members remove`)"
                ),
            },
            _ => {}
        }
        now.ok()
    }

    /// Re-reads the source every `interval`, forever.
    pub async fn follow(self, interval: Duration) {
        if matches!(*self.source, ReplicasSource::Manual(_)) {
            self.refresh().await;
            return;
        }
        loop {
            self.refresh().await;
            tokio::time::sleep(interval).await;
        }
    }
}

fn is_first_read(e: &ReplicasError) -> bool {
    matches!(e, ReplicasError::Unreadable { reason, .. } if reason == "not read yet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kube_api_reaches_the_statefulset_directly() {
        let api = KubeApi::new("http://127.0.0.1:8001/", "ns").unwrap();
        let source = ReplicasSource::open(&ReplicasFrom::StatefulSet("kv".into()), Some(&api));
        assert_eq!(source.kind(), "statefulset");
        match source {
            ReplicasSource::StatefulSet(sts) => {
                assert_eq!(sts.path(), "/apis/apps/v1/namespaces/ns/statefulsets/kv");
                assert_eq!(sts.api, "http://127.0.0.1:8001");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn specs_parse_and_print() {
        for s in ["manual", "file:/tmp/x", "statefulset:kv"] {
            assert_eq!(s.parse::<ReplicasFrom>().unwrap().to_string(), s);
        }
        for bad in ["", "file:", "statefulset:", "statefulset:KV", "auto"] {
            assert!(bad.parse::<ReplicasFrom>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_file_source_follows_its_file_and_falls_back_to_manual() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replicas");
        let desired = DesiredReplicas::new(ReplicasSource::File(path.clone()));
        assert_eq!(desired.refresh().await, None);
        assert_eq!(desired.mode(), "manual");
        std::fs::write(&path, "3\n").unwrap();
        assert_eq!(desired.refresh().await, Some(3));
        assert_eq!(desired.mode(), "file");
        std::fs::write(&path, "three").unwrap();
        assert_eq!(desired.refresh().await, None);
        assert_eq!(desired.current(), None);
        assert_eq!(desired.mode(), "manual");
        assert_eq!(DesiredReplicas::manual().refresh().await, None);
    }

    /// A fake Kubernetes API server: the StatefulSet `kv` in namespace `ns`, readable with the
    /// token `good` only (any other token is refused as a pod without RBAC is), with the
    /// replica count in `replicas` (None: the field is absent).
    async fn fake_api(replicas: Arc<Mutex<Option<u64>>>) -> (String, tokio::task::JoinHandle<()>) {
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::get;
        let app = axum::Router::new().route(
            "/apis/apps/v1/namespaces/ns/statefulsets/kv",
            get(move |headers: HeaderMap| {
                let replicas = replicas.clone();
                async move {
                    let token = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    if token != "Bearer good" {
                        let body = serde_json::json!({"kind": "Status", "status": "Failure",
                            "message": "statefulsets.apps \"kv\" is forbidden: User \"system:serviceaccount:ns:default\" cannot get resource \"statefulsets\"",
                            "reason": "Forbidden", "code": 403});
                        return (StatusCode::FORBIDDEN, body.to_string());
                    }
                    let mut spec = serde_json::json!({"serviceName": "kv"});
                    if let Some(n) = *replicas.lock().unwrap() {
                        spec["replicas"] = n.into();
                    }
                    let body = serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                        "metadata": {"name": "kv", "namespace": "ns", "resourceVersion": "7"},
                        "spec": spec, "status": {"replicas": 3}});
                    (StatusCode::OK, body.to_string())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (format!("http://{addr}"), server)
    }

    #[tokio::test]
    async fn the_statefulset_size_is_read_through_the_api_and_followed() {
        let replicas = Arc::new(Mutex::new(Some(3)));
        let (api, server) = fake_api(replicas.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "good\n").unwrap();
        let sts = StatefulSetApi::new(&api, "ns", "kv").with_token_file(token.clone());
        let desired = DesiredReplicas::new(ReplicasSource::StatefulSet(sts));
        assert_eq!(desired.refresh().await, Some(3));
        assert_eq!(desired.mode(), "statefulset");
        // `kubectl scale statefulset kv --replicas=1`
        *replicas.lock().unwrap() = Some(1);
        assert_eq!(desired.refresh().await, Some(1));
        // Kubernetes' default when the field is absent.
        *replicas.lock().unwrap() = None;
        assert_eq!(desired.refresh().await, Some(1));
        *replicas.lock().unwrap() = Some(5);
        // follow() keeps it fresh.
        let follower = tokio::spawn(desired.clone().follow(Duration::from_millis(20)));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(desired.current(), Some(5));
        follower.abort();

        // The token rotates to one without RBAC: manual, and the error says what is missing.
        std::fs::write(&token, "other\n").unwrap();
        assert_eq!(desired.refresh().await, None);
        assert_eq!(desired.mode(), "manual");
        let sts = StatefulSetApi::new(&api, "ns", "kv").with_token_file(token.clone());
        let err = sts.replicas().await.unwrap_err();
        assert!(
            matches!(&err, ReplicasError::Api { status: 403, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("needs `get` on this StatefulSet"),
            "{err}"
        );

        // Another StatefulSet (not found) and an API that is down: manual too, never a guess.
        let other = StatefulSetApi::new(&api, "ns", "other").with_token_file(token);
        assert!(other.replicas().await.is_err());
        server.abort();
        let _ = server.await;
        assert_eq!(desired.refresh().await, None);
        assert_eq!(desired.mode(), "manual");
    }

    #[test]
    fn a_statefulset_source_outside_a_pod_is_manual_with_the_reason() {
        let source = ReplicasSource::open(&ReplicasFrom::StatefulSet("kv".into()), None);
        if std::path::Path::new(SERVICE_ACCOUNT_DIR).exists() {
            return; // running in a pod: the in-cluster API may well be readable
        }
        assert_eq!(source.kind(), "manual");
        assert!(matches!(source, ReplicasSource::Manual(Some(_))));
    }
}
