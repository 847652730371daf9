//! The SDK's watch, leases and recipes, and kvsetctl's `watch` and `lease` commands, against a
//! real three-member cluster of `kvset-server` processes:
//!
//! - a watch that follows the cluster across a leader failover under a stream of writes sees
//!   every write exactly once, in revision order;
//! - a key attached to a lease its owner keeps alive survives, one whose lease is not renewed
//!   is deleted when the lease expires, and dropping the keep-alive handle lets the lease go;
//! - [`Lock`] gives mutual exclusion to two clients incrementing one counter with fenced
//!   writes, and [`kvset_client::Election`] hands over in order while an observer follows;
//! - `kvsetctl watch -o json` prints one object per event in the documented shape, and
//!   `kvsetctl lease grant` the lease id alone.
//!
//! Needs the server and kvsetctl binaries (`cargo build --bins`). Every cluster runs on its own
//! 127.0.0.x address and temporary directory ([`ProcessCluster`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kvset_client::{Client, EventType, Lock, ReadOptions, Txn, TxnOp, WatchOptions, WriteOptions};
use kvset_tests::testkit::{run_kvsetctl, ProcessCluster, FAST_TIMING};
use serde_json::{json, Value};

fn client_of(c: &ProcessCluster, members: &[usize]) -> Client {
    Client::builder()
        .endpoints(members.iter().map(|&i| c.endpoint(i)))
        .retry_deadline(Duration::from_secs(30))
        .build()
        .expect("valid endpoints")
}

async fn revision(client: &Client) -> i64 {
    client
        .get_response("__revision_probe__", &ReadOptions::new())
        .await
        .expect("linearizable read")
        .header
        .revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_leader_failover_without_losing_or_repeating_an_event() {
    const WRITES: usize = 150;
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    let client = client_of(&c, &[0, 1, 2]);
    revision(&client).await;
    // The watch goes to the leader first: killing the leader breaks its stream.
    let mut events = client
        .watch(WatchOptions::prefix("fo/"))
        .await
        .expect("watch created");
    let progress = Arc::new(AtomicUsize::new(0));
    let writer = {
        let client = client.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..WRITES {
                let (key, value) = (format!("fo/{n:04}"), format!("v{n}"));
                let resp = client
                    .put(&key, &value)
                    .await
                    .unwrap_or_else(|e| panic!("write {key}: {e}"));
                acked.push((key, value, resp.header.revision));
                progress.fetch_add(1, Ordering::SeqCst);
            }
            acked
        })
    };
    let started = Instant::now();
    while progress.load(Ordering::SeqCst) < WRITES / 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the writer is stuck"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    c.kill(leader);
    let acked = tokio::time::timeout(Duration::from_secs(120), writer)
        .await
        .expect("the writer finished within 2 minutes")
        .expect("the writer did not panic");

    let mut delivered = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while delivered.len() < WRITES {
        let batch = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {WRITES} events within a minute; logs in {}",
                    delivered.len(),
                    c.dir.path().display()
                )
            })
            .expect("the watch stream ended")
            .expect("the watch stream failed");
        delivered.extend(batch.events);
    }
    // Nothing more than the writes: a repeat would show up here.
    let extra = tokio::time::timeout(Duration::from_millis(500), events.next()).await;
    assert!(extra.is_err(), "an event beyond the writes: {extra:?}");
    for pair in delivered.windows(2) {
        assert!(
            pair[1].revision() > pair[0].revision(),
            "revisions not strictly increasing: {} then {}",
            pair[0].revision(),
            pair[1].revision()
        );
    }
    let got: Vec<(String, String, i64)> = delivered
        .iter()
        .map(|e| {
            assert_eq!(e.kind, EventType::Put);
            (
                e.kv.key_str().unwrap().to_string(),
                e.kv.value_str().unwrap().to_string(),
                e.revision(),
            )
        })
        .collect();
    assert_eq!(
        got, acked,
        "every acknowledged write exactly once, as acknowledged"
    );
    assert!(
        events.reconnects() >= 1,
        "the watch was on the killed leader, so it must have been re-created"
    );
    println!(
        "METRIC watch_failover_events={} reconnects={} killed=kv-{leader}",
        got.len(),
        events.reconnects()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_kept_alive_hold_their_keys_and_expired_ones_delete_them() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    let client = client_of(&c, &[0, 1, 2]);
    let kept = client.grant(2).await.expect("grant");
    let left = client.grant(2).await.expect("grant");
    assert_eq!((kept.ttl, left.ttl), (2, 2));
    client
        .put_with("svc/kept", "1", &WriteOptions::new().lease(kept.id))
        .await
        .unwrap();
    client
        .put_with("svc/left", "1", &WriteOptions::new().lease(left.id))
        .await
        .unwrap();
    let keep_alive = client.keep_alive(kept.id);
    // Wait until the unrenewed lease expired (bounded), well past both TTLs.
    let started = Instant::now();
    while client.get("svc/left").await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the unrenewed lease's key is still there after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = client.get("svc/kept").await.unwrap().expect("kept alive");
    assert_eq!(held.lease, kept.id);
    assert!(!keep_alive.status().is_lost(), "{:?}", keep_alive.status());
    let ttl = client.time_to_live(kept.id, true).await.unwrap();
    assert_eq!(ttl.keys, vec![b"svc/kept".to_vec()]);
    assert!(matches!(
        client.time_to_live(left.id, false).await,
        Err(kvset_client::Error::NotFound(_))
    ));
    // Dropping the handle stops the renewals: the lease and its key go.
    drop(keep_alive);
    let started = Instant::now();
    while client.get("svc/kept").await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the key outlived its dropped keep-alive by 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_excludes_a_second_client_and_fenced_increments_all_count() {
    const ROUNDS: usize = 8;
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    // Two independent clients, each preferring other members.
    let clients = [client_of(&c, &[0, 1, 2]), client_of(&c, &[2, 1, 0])];
    clients[0].put("counter", "0").await.unwrap();
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for client in &clients {
        let client = client.clone();
        let (inside, overlaps) = (inside.clone(), overlaps.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let guard = Lock::new(&client, "locks/counter").lock().await.unwrap();
                if inside.swap(true, Ordering::SeqCst) {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                let kv = client.get("counter").await.unwrap().unwrap();
                let n: u64 = kv.value_str().unwrap().parse().unwrap();
                // Give the other client every chance to barge in.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let txn = Txn::new()
                    .when([guard.fence()])
                    .and_then([TxnOp::put("counter", (n + 1).to_string())]);
                assert!(
                    client.txn(txn).await.unwrap().succeeded,
                    "fenced write refused"
                );
                inside.store(false, Ordering::SeqCst);
                guard.unlock().await.unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("both lockers finished within 2 minutes")
            .expect("no panic");
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders at once");
    let counter = clients[0].get("counter").await.unwrap().unwrap();
    assert_eq!(counter.value_str(), Some((2 * ROUNDS).to_string().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvsetctl_watch_json_lines_and_lease_grant_output() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    let endpoints = c.endpoints().join(",");
    let limit = Duration::from_secs(30);

    // `lease grant` prints the id alone; with -o json {"id","ttl"}.
    let (code, out, err) = run_kvsetctl(&endpoints, &["lease", "grant", "30"], limit).await;
    assert_eq!(code, 0, "{err}");
    let id: i64 = out
        .strip_suffix('\n')
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an id alone: {out:?}"));
    assert!(id > 0);
    let (code, out, err) =
        run_kvsetctl(&endpoints, &["-o", "json", "lease", "grant", "40"], limit).await;
    assert_eq!(code, 0, "{err}");
    let grant: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(grant["ttl"], json!(40));
    assert!(
        grant["id"].as_i64().is_some_and(|i| i > 0 && i != id),
        "{grant}"
    );
    assert_eq!(grant.as_object().unwrap().len(), 2, "{grant}");

    // Watch from the next revision, so the writes below cannot race its creation.
    let client = client_of(&c, &[0, 1, 2]);
    let from = revision(&client).await + 1;
    let watch = {
        let endpoints = endpoints.clone();
        let from = from.to_string();
        tokio::spawn(async move {
            run_kvsetctl(
                &endpoints,
                &[
                    "-o", "json", "watch", "app/", "--prefix", "--rev", &from, "--count", "3",
                ],
                Duration::from_secs(60),
            )
            .await
        })
    };
    let lease = id.to_string();
    let (code, _, err) =
        run_kvsetctl(&endpoints, &["put", "app/a", "1", "--lease", &lease], limit).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_kvsetctl(&endpoints, &["put", "app/a", "2"], limit).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_kvsetctl(&endpoints, &["del", "app/a"], limit).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = watch.await.unwrap();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(
        lines,
        vec![
            json!({"type": "PUT", "key": "app/a", "value": "1", "mod_revision": from,
                   "create_revision": from, "version": 1, "lease": id}),
            json!({"type": "PUT", "key": "app/a", "value": "2", "mod_revision": from + 1,
                   "create_revision": from, "version": 2, "lease": 0}),
            json!({"type": "DELETE", "key": "app/a", "value": "", "mod_revision": from + 2,
                   "create_revision": 0, "version": 0, "lease": 0}),
        ],
        "{out}"
    );

    // `lease ttl --keys`, `lease list`, `lease revoke`, then the lease is gone (exit 1).
    let (code, out, err) =
        run_kvsetctl(&endpoints, &["put", "app/b", "x", "--lease", &lease], limit).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_kvsetctl(
        &endpoints,
        &["-o", "json", "lease", "ttl", &lease, "--keys"],
        limit,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let ttl: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (ttl["granted_ttl"].clone(), ttl["keys"].clone()),
        (json!(30), json!(["app/b"]))
    );
    let (code, out, _) = run_kvsetctl(&endpoints, &["lease", "list"], limit).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("ID  GRANTED_TTL  KEYS\n") || out.starts_with("ID "),
        "{out}"
    );
    assert!(out.contains(&lease), "{out}");
    let (code, out, err) = run_kvsetctl(&endpoints, &["lease", "revoke", &lease], limit).await;
    assert_eq!(
        (code, out.as_str()),
        (0, format!("lease {id} revoked\n").as_str()),
        "{err}"
    );
    let (code, _, _) = run_kvsetctl(&endpoints, &["get", "app/b"], limit).await;
    assert_eq!(code, 1, "revoking deleted the key");
    let (code, _, err) = run_kvsetctl(&endpoints, &["lease", "revoke", &lease], limit).await;
    assert_eq!(code, 1, "{err}");

    // compact, then a read below it exits 6.
    let now = revision(&client).await;
    let (code, out, err) = run_kvsetctl(
        &endpoints,
        &["-o", "json", "compact", &now.to_string()],
        limit,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"compact_revision": now})
    );
    let (code, _, err) = run_kvsetctl(
        &endpoints,
        &["get", "app/a", "--rev", &(now - 1).to_string()],
        limit,
    )
    .await;
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains(&format!("below revision {now} is compacted")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_hands_over_and_observers_follow() {
    use kvset_client::Election;
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    let (a, b, watcher) = (
        client_of(&c, &[0, 1, 2]),
        client_of(&c, &[1, 2, 0]),
        client_of(&c, &[2, 0, 1]),
    );
    let observed = Election::new(&watcher, "elections/svc");
    let mut leaders = Box::pin(observed.observe());
    let first = Election::new(&a, "elections/svc")
        .ttl(5)
        .campaign("a")
        .await
        .unwrap();
    let second = {
        let b = b.clone();
        tokio::spawn(async move {
            Election::new(&b, "elections/svc")
                .ttl(5)
                .campaign("b")
                .await
        })
    };
    let mut seen = Vec::new();
    async fn next(
        s: &mut (impl futures::Stream<Item = kvset_client::Result<kvset_client::KeyValue>> + Unpin),
    ) -> String {
        let kv = tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .expect("an observation within 20 s")
            .expect("the observation goes on")
            .expect("no error");
        kv.value_str().unwrap().to_string()
    }
    seen.push(next(&mut leaders).await);
    first.proclaim("a2").await.unwrap();
    seen.push(next(&mut leaders).await);
    assert!(!second.is_finished(), "b campaigns while a leads");
    first.resign().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(20), second)
        .await
        .expect("b leads within 20 s")
        .unwrap()
        .unwrap();
    seen.push(next(&mut leaders).await);
    assert_eq!(seen, ["a", "a2", "b"]);
    let leader = observed.leader().await.unwrap().unwrap();
    assert_eq!(
        (leader.value_str(), leader.lease),
        (Some("b"), second.lease_id())
    );
    second.resign().await.unwrap();
    assert_eq!(observed.leader().await.unwrap(), None);
}
