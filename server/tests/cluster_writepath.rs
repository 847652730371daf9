//! The write path's failure answers, against real `kvset-server` processes.
//!
//! - A proposal that openraft never answers (`--fault stall-proposal=N`: the Nth proposal goes to
//!   Raft but its answer is never awaited, which is what happens when a snapshot install purges
//!   past an uncommitted entry) must not hang the member: the write fails with
//!   `DEADLINE_EXCEEDED` ("may or may not be applied") once the proposal deadline passes, and
//!   later writes, direct and forwarded, go through.
//! - A write forwarded by a follower whose answer from the leader is lost
//!   (`--fault drop-write-responses=1` on the leader) is answered as *possibly applied*
//!   (`UNAVAILABLE` with the `kvset-outcome: unknown` metadata and the leader hint), never as a
//!   plain "not the leader", which a client reads as "not applied".

mod common;

use std::time::{Duration, Instant};

use common::*;
use kvset_proto::v1::{Consistency, PutRequest};
use kvset_proto::{LEADER_METADATA_KEY, OUTCOME_METADATA_KEY, OUTCOME_UNKNOWN};
use tonic::Code;

fn flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    FAST_TIMING
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

fn put_request(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

/// Waits until member `i`'s log contains `needle`.
async fn wait_log(c: &ProcessCluster, i: usize, needle: &str, timeout: Duration) {
    let started = Instant::now();
    while !c.log(i).contains(needle) {
        assert!(
            started.elapsed() < timeout,
            "kv-{i} never logged {needle:?} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_that_is_never_answered_fails_and_later_writes_get_through() {
    // Every member would stall its own second proposal; only the leader proposes.
    let mut c = ProcessCluster::new(3, &flags(&["--fault=stall-proposal=2"]));
    c.start_all_ordered().await;
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let follower = (leader + 1) % 3;
    put(&c, leader, "first", "1").await;

    // The second proposal goes to Raft and is never answered.
    let mut kv = c.kv(leader);
    let stalled = tokio::spawn(async move {
        let started = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(60), kv.put(put_request("stalled", "2")))
            .await;
        (r, started.elapsed())
    });
    wait_log(
        &c,
        leader,
        "injected fault: this proposal's answer is never awaited",
        Duration::from_secs(10),
    )
    .await;

    // Writes behind it, through the leader and forwarded by a follower, must get answers.
    let mut direct = c.kv(leader);
    let mut forwarded = c.kv(follower);
    let bound = Duration::from_secs(30);
    let (direct, forwarded) = tokio::join!(
        tokio::time::timeout(bound, direct.put(put_request("after/direct", "3"))),
        tokio::time::timeout(bound, forwarded.put(put_request("after/forwarded", "4"))),
    );
    direct
        .unwrap_or_else(|_| panic!("a write through the leader hung behind the stalled proposal"))
        .expect("a write through the leader after the stalled proposal");
    forwarded
        .unwrap_or_else(|_| panic!("a forwarded write hung behind the stalled proposal"))
        .expect("a forwarded write after the stalled proposal");

    let (stalled, took) = stalled.await.expect("task");
    let status = stalled
        .expect("the stalled write got no answer at all")
        .expect_err("the stalled write cannot have an answer");
    println!("METRIC stalled_write_answered_ms={}", took.as_millis());
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("may or may not be applied"),
        "{status:?}"
    );
    // It was possibly applied indeed: its entry went to Raft and is committed.
    let value = get(&c, leader, "stalled", Consistency::Linearizable)
        .await
        .expect("read");
    assert_eq!(value.as_deref(), Some("2"));
    // And the member keeps taking writes.
    put(&c, leader, "last", "5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_whose_answer_is_lost_is_reported_as_possibly_applied() {
    let mut c = ProcessCluster::new(3, &flags(&["--fault=drop-write-responses=1"]));
    c.start_all_ordered().await;
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let follower = (leader + 1) % 3;
    let leader_name = format!("kv-{leader}");

    let status = c
        .kv(follower)
        .put(put_request("lost", "1"))
        .await
        .expect_err("the leader drops every write answer");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let meta = |key: &str| {
        status
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        meta(OUTCOME_METADATA_KEY).as_deref(),
        Some(OUTCOME_UNKNOWN),
        "a lost forwarded answer must be marked as an unknown outcome: {status:?}"
    );
    assert_eq!(
        meta(LEADER_METADATA_KEY),
        Some(format!("{leader_name}={}", c.endpoint(leader))),
        "{status:?}"
    );
    assert!(
        status
            .message()
            .contains("may or may not have been applied"),
        "{status:?}"
    );
    // It was applied.
    let value = get(&c, leader, "lost", Consistency::Linearizable)
        .await
        .expect("read");
    assert_eq!(value.as_deref(), Some("1"));
}
