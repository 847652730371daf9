//! Losing a volume must never fork a second cluster, and a member re-admitted after losing its
//! volume must never help lose an acknowledged write (issue #21, items 1 and 5).

mod common;

use std::time::{Duration, Instant};

use common::*;
use kvset_proto::v1::{Consistency, PutRequest};
use tonic::Code;

/// Polls member `i` until its status says ready (a leader is not required).
async fn wait_status_ready(c: &ProcessCluster, i: usize, timeout: Duration) {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if c.status(i).await.is_some_and(|s| s.ready) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "kv-{i} never reported ready within {timeout:?}; logs in {}",
        c.dir.path().display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_kv0_started_alone_waits_for_the_cluster_instead_of_minting_a_second_one() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    let original = c.status(0).await.unwrap().header.unwrap().cluster_id;
    for n in 0..20 {
        put(&c, 0, &format!("k{n}"), &format!("v{n}")).await;
    }

    // A full restart in which kv-0's volume was lost.
    for i in (0..3).rev() {
        c.kill(i);
    }
    c.wipe(0);
    c.start(0);
    // Alone for well past its one-second probe. Under OrderedReady it must count as ready, or
    // kv-1 and kv-2 are never created.
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_status_ready(&c, 0, Duration::from_secs(30)).await;
    let s0 = c.status(0).await.unwrap();
    let header = s0.header.unwrap();
    assert!(
        header.cluster_id.is_empty() || header.cluster_id == original,
        "kv-0 minted a second cluster {:?} (the cluster is {original:?})",
        header.cluster_id
    );
    let err = c
        .kv(0)
        .put(PutRequest {
            key: "during".into(),
            value: "wait".into(),
            ..Default::default()
        })
        .await
        .expect_err("kv-0 serves no client data while it waits to be re-admitted");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("re-admit"), "{err}");
    assert!(
        c.log(0).contains("waits for the existing cluster"),
        "kv-0 says what it waits for:\n{}",
        c.log(0)
    );

    // The rest come back with their data; kv-0 is re-admitted into the cluster that lived on.
    for i in 1..3 {
        c.start(i);
        c.wait_ready(i, Duration::from_secs(60)).await;
    }
    c.wait_ready(0, Duration::from_secs(60)).await;
    for i in 0..3 {
        let s = c.status(i).await.expect("member answers");
        assert_eq!(
            s.header.unwrap().cluster_id,
            original,
            "kv-{i}: one cluster id everywhere"
        );
    }
    for n in 0..20 {
        for i in 0..3 {
            assert_eq!(
                get(&c, i, &format!("k{n}"), Consistency::Linearizable)
                    .await
                    .unwrap(),
                Some(format!("v{n}")),
                "kv-{i} lost acknowledged k{n}"
            );
        }
    }
}
