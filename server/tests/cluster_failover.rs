//! Leader loss, rejoin, return of the preferred primary, and graceful hand-off.
//! Times are printed (they go into the issue notes), never asserted.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kvset_proto::v1::{Consistency, Role};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_kv0_comes_back_as_primary() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    put(&c, 0, "before", "1").await;

    let killed_at = Instant::now();
    c.kill(0);
    // Writes continue through a secondary (forwarded to whoever leads now).
    let failover = put_until_ok(&c, 1, "during", "2", Duration::from_secs(30)).await;
    let new_leader = c.wait_leader(Duration::from_secs(10)).await;
    assert_ne!(new_leader, 0);
    println!(
        "METRIC failover_ms={} new_leader=kv-{new_leader}",
        failover.as_millis()
    );
    for n in 0..50 {
        put(&c, new_leader, &format!("k{n}"), "x").await;
    }

    // kv-0 returns with its volume, catches up, and takes leadership back.
    c.start(0);
    let restarted_at = Instant::now();
    let leader_status = c.status(new_leader).await.unwrap();
    loop {
        if let Some(s) = c.status(0).await {
            if s.applied_index >= leader_status.commit_index && s.leader_id.is_some() {
                break;
            }
        }
        assert!(
            restarted_at.elapsed() < Duration::from_secs(30),
            "kv-0 did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("METRIC catch_up_ms={}", restarted_at.elapsed().as_millis());
    assert!(
        c.wait_leader_is(0, Duration::from_secs(30)).await,
        "leadership returns to kv-0"
    );
    println!(
        "METRIC primary_return_ms={}",
        restarted_at.elapsed().as_millis()
    );
    assert_eq!(
        get(&c, 0, "during", Consistency::Linearizable)
            .await
            .unwrap()
            .as_deref(),
        Some("2")
    );
    assert_eq!(
        get(&c, 0, "k49", Consistency::Stale)
            .await
            .unwrap()
            .as_deref(),
        Some("x")
    );
    let _ = killed_at;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_primary_can_be_turned_off() {
    let mut c = ProcessCluster::new(
        3,
        &[
            FAST_TIMING[0],
            FAST_TIMING[1],
            FAST_TIMING[2],
            "--prefer-ordinal-zero=false",
        ],
    );
    c.start_all_ordered().await;
    c.kill(0);
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    c.start(0);
    c.wait_ready(0, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let s = c.status(leader).await.unwrap();
    assert_eq!(s.role, Role::Leader as i32, "leadership stays where it is");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_hands_leadership_off() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    put(&c, 0, "k", "v").await;
    let took = c.terminate(0, Duration::from_secs(30));
    println!("METRIC graceful_leader_exit_ms={}", took.as_millis());
    assert!(
        took < Duration::from_secs(20),
        "exits within its grace period"
    );
    // The hand-off means a leader exists right away, with no election timeout to wait out.
    let leader = c.wait_leader(Duration::from_secs(5)).await;
    assert_ne!(leader, 0);
    let log = c.log(0);
    assert!(log.contains("leadership handed off"), "{log}");
    let write = put_until_ok(&c, leader, "after", "1", Duration::from_secs(10)).await;
    println!("METRIC write_after_graceful_exit_ms={}", write.as_millis());
}
