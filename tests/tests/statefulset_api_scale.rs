//! The Kubernetes path of "membership follows the set's size", end to end, against a fake API
//! server: real member processes started with `--replicas-from=statefulset:kv`, pointed with
//! `--kube-api` at a small axum server in this test that serves the StatefulSet object the way
//! the API server does (`GET /apis/apps/v1/namespaces/ns/statefulsets/kv`).
//!
//! `kubectl scale statefulset kv --replicas=N` is played the way the StatefulSet controller
//! carries it out: `spec.replicas` changes first, then the pods above it are deleted (SIGTERM)
//! highest ordinal first, one at a time, or the new ones are created in ordinal order. A member
//! reads the size again when it receives SIGTERM, so nothing in the test waits for the members'
//! periodic poll before deleting a pod: a member that only polled would get it wrong here.
//!
//! The second test is the fallback: a service account without the Role (the API answers 403)
//! leaves membership manual — nobody leaves, nobody is removed, `kvsetctl status` says
//! `membership: manual` — until the API can be read again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvset_proto::v1::MembersRequest;
use kvset_tests::testkit::{run_kvsetctl, ProcessCluster, FAST_TIMING};

/// The StatefulSet `kv` as the fake API server holds it.
#[derive(Clone, Copy)]
struct FakeSet {
    replicas: u64,
    /// Answer 403 Forbidden, as for a pod whose service account lacks the Role.
    forbidden: bool,
}

/// Serves the StatefulSet `kv` of namespace `ns` from `set`; returns the API's base URL.
async fn fake_api(set: Arc<Mutex<FakeSet>>) -> String {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/apis/apps/v1/namespaces/ns/statefulsets/kv",
        get(move || {
            let set = *set.lock().unwrap();
            async move {
                if set.forbidden {
                    let body = serde_json::json!({"kind": "Status", "apiVersion": "v1",
                        "status": "Failure", "reason": "Forbidden", "code": 403,
                        "message": "statefulsets.apps \"kv\" is forbidden: User \
                            \"system:serviceaccount:ns:default\" cannot get resource \
                            \"statefulsets\" in API group \"apps\" in the namespace \"ns\""});
                    return (StatusCode::FORBIDDEN, body.to_string());
                }
                let body = serde_json::json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "metadata": {"name": "kv", "namespace": "ns"},
                    "spec": {"replicas": set.replicas, "serviceName": "kv",
                             "podManagementPolicy": "OrderedReady"}});
                (StatusCode::OK, body.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn cluster_on(api: &str, size: u64) -> ProcessCluster {
    let kube_api = format!("--kube-api={api}");
    let mut args: Vec<&str> = FAST_TIMING.to_vec();
    args.extend([
        "--replicas-from=statefulset:kv",
        "--namespace=ns",
        kube_api.as_str(),
    ]);
    let mut c = ProcessCluster::new(size, &args);
    c.start_all_ordered().await;
    c
}

async fn member_ids(c: &ProcessCluster, via: usize) -> Vec<u64> {
    let Ok(resp) = c.cluster(via).members(MembersRequest {}).await else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = resp.into_inner().members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    ids
}

async fn wait_ids(c: &ProcessCluster, via: usize, want: &[u64], timeout: Duration) -> Vec<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let ids = member_ids(c, via).await;
        if ids == want || Instant::now() >= deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_mode(c: &ProcessCluster, i: usize, want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let mode = c
            .status(i)
            .await
            .map(|s| s.membership_mode)
            .unwrap_or_default();
        if mode == want || Instant::now() >= deadline {
            return mode;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writers of unique keys; the acknowledged ones are remembered.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(endpoints: Vec<String>, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let mut writers = Vec::new();
        for w in 0..clients {
            let client = kvset_client::Client::connect(endpoints.clone())
                .await
                .expect("client");
            let (stop, acked) = (stop.clone(), acked.clone());
            writers.push(tokio::spawn(async move {
                // Bounded besides the stop flag.
                for seq in 0..20_000u64 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let (key, value) = (format!("w{w}/{seq:06}"), format!("v{seq}"));
                    match client.put(&key, &value).await {
                        Ok(_) => {
                            acked.lock().unwrap().insert(key, value);
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
        Self {
            stop,
            acked,
            writers,
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `more` further writes were acknowledged; false if that took over 20 s.
    async fn progresses(&self, more: usize) -> bool {
        let want = self.count() + more;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.count() < want {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    async fn finish(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.writers {
            w.await.expect("writer");
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

fn left(c: &ProcessCluster, i: usize) -> usize {
    c.log(i)
        .matches("left the cluster (scale-down): removal committed")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_scale_takes_a_writing_cluster_3_1_3_through_the_api() {
    let set = Arc::new(Mutex::new(FakeSet {
        replicas: 3,
        forbidden: false,
    }));
    let api = fake_api(set.clone()).await;
    let mut c = cluster_on(&api, 3).await;
    assert_eq!(
        wait_mode(&c, 0, "statefulset", Duration::from_secs(10)).await,
        "statefulset",
        "{}",
        c.log(0)
    );
    let load = Load::start(c.endpoints(), 2).await;
    assert!(load.progresses(20).await, "no writes at the start");

    // `kubectl scale statefulset kv --replicas=1`: spec first, then kv-2, then kv-1.
    set.lock().unwrap().replicas = 1;
    for i in [2usize, 1] {
        let took = c.terminate(i, Duration::from_secs(40));
        assert!(took < Duration::from_secs(35), "kv-{i} took {took:?}");
        assert_eq!(left(&c, i), 1, "kv-{i} did not leave:\n{}", c.log(i));
    }
    assert_eq!(
        wait_ids(&c, 0, &[0], Duration::from_secs(10)).await,
        [0],
        "{}",
        c.log(0)
    );
    assert!(load.progresses(20).await, "writes stalled at size 1");

    // `kubectl scale statefulset kv --replicas=3`: spec first, then kv-1 and kv-2 in order, on
    // the volumes kv-1 and kv-2 left behind (they come back as new members).
    set.lock().unwrap().replicas = 3;
    for i in [1usize, 2] {
        c.start(i);
        c.wait_ready(i, Duration::from_secs(60)).await;
    }
    assert_eq!(
        wait_ids(&c, 0, &[0, 1, 2], Duration::from_secs(30)).await,
        [0, 1, 2],
        "{}",
        c.log(0)
    );
    assert!(load.progresses(20).await, "writes stalled at size 3");

    // A member below the size that is deleted (`kubectl delete pod kv-1`) restarts: it does not
    // leave, and it is still a member afterwards.
    c.terminate(1, Duration::from_secs(40));
    assert_eq!(left(&c, 1), 1, "kv-1 left on a restart:\n{}", c.log(1));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(member_ids(&c, 0).await, [0, 1, 2], "{}", c.log(0));
    c.start(1);
    c.wait_ready(1, Duration::from_secs(60)).await;

    let acked = load.finish().await;
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    let client = kvset_client::Client::connect(c.endpoints())
        .await
        .expect("client");
    let mut lost = Vec::new();
    for (key, value) in &acked {
        let got = client.get(key).await.expect("read back");
        if got.map(|kv| kv.value) != Some(value.as_bytes().to_vec()) {
            lost.push(key.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(member_ids(&c, 0).await, [0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rbac_membership_is_manual_until_the_api_can_be_read() {
    // The size says kv-2 is scaled away, but the pods' service account may not read it.
    let set = Arc::new(Mutex::new(FakeSet {
        replicas: 2,
        forbidden: true,
    }));
    let api = fake_api(set.clone()).await;
    let mut c = cluster_on(&api, 3).await;
    assert_eq!(
        wait_mode(&c, 2, "manual", Duration::from_secs(10)).await,
        "manual"
    );
    let log = c.log(0);
    assert!(
        log.contains("cannot read the set's desired size: membership is manual")
            && log.contains("the Kubernetes API answered 403")
            && log.contains("k8s/base/statefulset-reader-rbac.yaml"),
        "the fallback was not explained in the log:\n{log}"
    );
    let (code, out, err) = run_kvsetctl(
        &c.endpoints().join(","),
        &["status"],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("membership: manual"), "{out}");

    // Never guess: kv-2 stopping is not a scale-down, and the leader removes nobody.
    c.terminate(2, Duration::from_secs(40));
    assert_eq!(left(&c, 2), 0, "{}", c.log(2));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(member_ids(&c, 0).await, [0, 1, 2], "{}", c.log(0));

    // The Role is granted: the members follow the size again, and the leader removes kv-2,
    // which is gone and at or above the size.
    set.lock().unwrap().forbidden = false;
    assert_eq!(
        wait_mode(&c, 0, "statefulset", Duration::from_secs(10)).await,
        "statefulset"
    );
    assert!(
        c.log(0)
            .contains("membership follows the set's size: members with an ordinal at or above it"),
        "{}",
        c.log(0)
    );
    assert_eq!(
        wait_ids(&c, 0, &[0, 1], Duration::from_secs(30)).await,
        [0, 1],
        "{}",
        c.log(0)
    );
}
