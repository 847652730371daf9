//! The `configmap:` cluster record against a fake Kubernetes API server (GET, POST and PUT of one
//! ConfigMap, bearer-token checks, optimistic concurrency on resourceVersion).

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use kvset_server::cluster_record::{ClusterRecord, ConfigMapRecord, RecordError};
use serde_json::{json, Value};

#[derive(Default)]
struct Api {
    token: String,
    /// The stored ConfigMap (with metadata.resourceVersion) by name.
    objects: Vec<Value>,
    version: u64,
    calls: Vec<String>,
    /// Answer every call with this status instead (e.g. 403 without RBAC).
    forbid: bool,
}

type Shared = Arc<Mutex<Api>>;

fn authorized(api: &Api, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", api.token))
}

async fn get_one(
    State(api): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let mut api = api.lock().unwrap();
    api.calls.push(format!("GET {ns}/{name}"));
    if api.forbid {
        return (StatusCode::FORBIDDEN, "configmaps is forbidden".into());
    }
    if !authorized(&api, &headers) {
        return (StatusCode::UNAUTHORIZED, "no token".into());
    }
    match api.objects.iter().find(|o| o["metadata"]["name"] == name) {
        Some(o) => (StatusCode::OK, o.to_string()),
        None => (
            StatusCode::NOT_FOUND,
            json!({"reason": "NotFound"}).to_string(),
        ),
    }
}

async fn create(
    State(api): State<Shared>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let mut api = api.lock().unwrap();
    api.calls.push(format!("POST {ns}"));
    if !authorized(&api, &headers) {
        return (StatusCode::UNAUTHORIZED, "no token".into());
    }
    let mut obj: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(obj["kind"], "ConfigMap");
    let name = obj["metadata"]["name"].clone();
    if api.objects.iter().any(|o| o["metadata"]["name"] == name) {
        return (
            StatusCode::CONFLICT,
            json!({"reason": "AlreadyExists"}).to_string(),
        );
    }
    api.version += 1;
    obj["metadata"]["resourceVersion"] = api.version.to_string().into();
    api.objects.push(obj.clone());
    (StatusCode::CREATED, obj.to_string())
}

async fn replace(
    State(api): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let mut api = api.lock().unwrap();
    api.calls.push(format!("PUT {ns}/{name}"));
    if !authorized(&api, &headers) {
        return (StatusCode::UNAUTHORIZED, "no token".into());
    }
    let mut obj: Value = serde_json::from_str(&body).unwrap();
    api.version += 1;
    let version = api.version.to_string();
    let Some(slot) = api
        .objects
        .iter_mut()
        .find(|o| o["metadata"]["name"] == name)
    else {
        return (StatusCode::NOT_FOUND, "{}".into());
    };
    if slot["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"] {
        return (
            StatusCode::CONFLICT,
            json!({"reason": "Conflict"}).to_string(),
        );
    }
    obj["metadata"]["resourceVersion"] = version.into();
    *slot = obj.clone();
    (StatusCode::OK, obj.to_string())
}

async fn fake_api(token: &str) -> (String, Shared) {
    let api: Shared = Arc::new(Mutex::new(Api {
        token: token.into(),
        ..Api::default()
    }));
    let app = Router::new()
        .route("/api/v1/namespaces/{ns}/configmaps", post(create))
        .route(
            "/api/v1/namespaces/{ns}/configmaps/{name}",
            get(get_one).put(replace),
        )
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), api)
}

fn record(api: &str, token_file: &std::path::Path) -> ClusterRecord {
    ClusterRecord::ConfigMap(
        ConfigMapRecord::new(api, "db", "kv-cluster")
            .unwrap()
            .with_token_file(token_file.to_path_buf()),
    )
}

#[tokio::test]
async fn bootstrap_creates_the_configmap_and_a_second_cluster_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0k3n\n").unwrap();
    let (url, api) = fake_api("t0k3n").await;
    let r = record(&url, &token);

    assert_eq!(r.read().await.unwrap(), None, "no record before bootstrap");
    r.write("c1").await.unwrap();
    assert_eq!(r.read().await.unwrap().as_deref(), Some("c1"));
    r.write("c1").await.unwrap();
    let err = r.write("c2").await.unwrap_err();
    assert!(matches!(err, RecordError::Conflict { .. }), "{err}");
    assert_eq!(r.read().await.unwrap().as_deref(), Some("c1"));
    let calls = api.lock().unwrap().calls.clone();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("POST")).count(),
        1,
        "created once: {calls:?}"
    );
    assert!(calls.iter().all(|c| c.contains("db")), "{calls:?}");
}

#[tokio::test]
async fn an_empty_configmap_from_the_manifests_is_filled_in_with_the_rotated_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "old").unwrap();
    let (url, api) = fake_api("old").await;
    api.lock().unwrap().objects.push(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kv-cluster", "resourceVersion": "7"},
    }));
    api.lock().unwrap().version = 7;
    let r = record(&url, &token);
    assert_eq!(
        r.read().await.unwrap(),
        None,
        "an empty ConfigMap records nothing"
    );

    // Kubernetes rotates bound service-account tokens: every call reads the file again.
    api.lock().unwrap().token = "new".into();
    std::fs::write(&token, "new").unwrap();
    r.write("c1").await.unwrap();
    assert_eq!(r.read().await.unwrap().as_deref(), Some("c1"));
    let calls = api.lock().unwrap().calls.clone();
    assert!(calls.iter().any(|c| c.starts_with("PUT")), "{calls:?}");
    assert!(!calls.iter().any(|c| c.starts_with("POST")), "{calls:?}");
}

#[tokio::test]
async fn missing_rbac_is_an_error_that_says_what_to_grant() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let (url, api) = fake_api("t").await;
    api.lock().unwrap().forbid = true;
    let err = record(&url, &token).read().await.unwrap_err();
    assert!(matches!(err, RecordError::Api { status: 403, .. }), "{err}");
    assert!(err.to_string().contains("get/update"), "{err}");
    // Unreachable API: an error, never "no record" (which would let kv-0 mint).
    let err = record("http://127.0.0.1:1", &token)
        .read()
        .await
        .unwrap_err();
    assert!(matches!(err, RecordError::Kubernetes { .. }), "{err}");
}
