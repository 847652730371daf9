//! Joining by snapshot, scale-down and scale-up, and refusals that protect quorum.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kvset_proto::v1::{Consistency, RemoveRequest};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joins_by_snapshot_after_compaction() {
    let mut c = ProcessCluster::new(
        2,
        &[
            FAST_TIMING[0],
            FAST_TIMING[1],
            FAST_TIMING[2],
            "--snapshot-every=100",
            "--keep-after-snapshot=10",
        ],
    );
    c.start(0);
    c.wait_ready(0, Duration::from_secs(60)).await;
    for n in 0..400 {
        put(&c, 0, &format!("key-{n:04}"), &format!("value-{n}")).await;
    }
    let s0 = c.status(0).await.unwrap();
    assert!(
        s0.snapshot_index > 0 && s0.first_log_index > 1,
        "kv-0 compacted its log: {s0:?}"
    );

    let started = Instant::now();
    c.start(1);
    c.wait_ready(1, Duration::from_secs(60)).await;
    println!(
        "METRIC join_by_snapshot_ms={}",
        started.elapsed().as_millis()
    );
    let s1 = c.status(1).await.unwrap();
    assert!(
        s1.snapshot_index > 0,
        "kv-1 caught up from a snapshot: {s1:?}"
    );
    assert_eq!(
        get(&c, 1, "key-0000", Consistency::Stale)
            .await
            .unwrap()
            .as_deref(),
        Some("value-0")
    );
    assert_eq!(
        get(&c, 1, "key-0399", Consistency::Linearizable)
            .await
            .unwrap()
            .as_deref(),
        Some("value-399")
    );
    let s0 = c.status(0).await.unwrap();
    let s1 = c.status(1).await.unwrap();
    assert_eq!(s0.state_hash, s1.state_hash, "replicas converge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_three_to_two_to_three() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    put(&c, 0, "k", "v1").await;

    // Highest ordinal first.
    let err = c
        .cluster(0)
        .remove(RemoveRequest {
            id: 1,
            any_order: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("kv-2"), "{}", err.message());

    // Scale down: remove kv-2 (through a secondary: forwarded), then stop it.
    let resp = c
        .cluster(1)
        .remove(RemoveRequest {
            id: 2,
            any_order: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.members.len(), 2);
    c.terminate(2, Duration::from_secs(20));
    put(&c, 0, "k", "v2").await;

    // The removed member comes back with its old volume: refused, cluster undisturbed.
    c.start(2);
    let code = c
        .wait_exit(2, Duration::from_secs(20))
        .expect("a removed member must not start");
    assert_ne!(code, 0);
    assert!(c.log(2).contains("was removed"), "{}", c.log(2));
    assert_eq!(c.status(0).await.unwrap().members.len(), 2);
    put(&c, 0, "k", "v3").await;

    // Scale up again: a fresh volume joins as a new member.
    c.wipe(2);
    c.start(2);
    c.wait_ready(2, Duration::from_secs(60)).await;
    let s = c.status(0).await.unwrap();
    assert_eq!(s.members.len(), 3);
    assert!(s.members.iter().all(|m| m.member.as_ref().unwrap().voter));
    assert_eq!(
        get(&c, 2, "k", Consistency::Linearizable)
            .await
            .unwrap()
            .as_deref(),
        Some("v3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_that_would_break_quorum_is_refused() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    c.kill(1);
    // Removing kv-2 would leave {kv-0, kv-1}: only kv-0 answers, a quorum of two needs both.
    let err = c
        .cluster(0)
        .remove(RemoveRequest {
            id: 2,
            any_order: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("quorum"), "{}", err.message());
    assert_eq!(
        c.status(0).await.unwrap().members.len(),
        3,
        "nothing changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_member_rejoins_with_a_fresh_volume() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    put(&c, 0, "k", "v").await;
    c.kill(2);
    c.wipe(2);
    put(&c, 0, "k2", "v2").await;
    c.start(2);
    c.wait_ready(2, Duration::from_secs(60)).await;
    assert_eq!(
        get(&c, 2, "k2", Consistency::Linearizable)
            .await
            .unwrap()
            .as_deref(),
        Some("v2")
    );
    let s = c.status(0).await.unwrap();
    assert_eq!(s.members.len(), 3);
    assert!(
        s.members.iter().all(|m| m.member.as_ref().unwrap().voter),
        "promoted back to voter"
    );
}
