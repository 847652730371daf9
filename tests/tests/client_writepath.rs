//! The SDK's verdict on writes whose outcome the server cannot know, against real `kvset-server`
//! processes.
//!
//! A follower forwards a write to the leader, the leader applies it and its answer is lost
//! (`--fault drop-write-responses=1`: every answer to an applied write is dropped). The follower
//! answers "outcome unknown" with the leader hint. With redirects off, the SDK must end the call
//! with an error whose `may_have_applied()` is true: the write *was* applied, and "not the
//! leader" (`Error::NotLeader`, `may_have_applied() == false`) would tell the caller it was not.
//!
//! Needs the server binary (`cargo build --bins`).

use std::time::Duration;

use kvset_client::{Client, Error};
use kvset_tests::testkit::{ProcessCluster, FAST_TIMING};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_forwarded_answer_is_possibly_applied_with_redirects_off() {
    let flags: Vec<&str> = FAST_TIMING
        .iter()
        .copied()
        .chain(["--fault=drop-write-responses=1"])
        .collect();
    let mut c = ProcessCluster::new(3, &flags);
    c.start_all_ordered().await;
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let follower = (leader + 1) % 3;

    let strict = Client::builder()
        .endpoints([c.endpoint(follower)])
        .follow_leader(false)
        .retry_deadline(Duration::from_secs(10))
        .build()
        .expect("valid endpoints");
    let error = strict
        .put("lost", "1")
        .await
        .expect_err("the leader drops every write answer");
    assert!(
        error.may_have_applied(),
        "the write was forwarded and applied, its answer lost; the SDK said it was not applied: \
         {error:?}"
    );
    assert!(
        matches!(error, Error::Unavailable { .. }),
        "expected Unavailable (possibly applied), got {error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("may or may not have been applied"),
        "{error}"
    );

    // It was applied: read it back through the leader (reads are not affected by the fault).
    let reader = Client::builder()
        .endpoints([c.endpoint(leader)])
        .build()
        .expect("valid endpoints");
    let kv = reader.get("lost").await.expect("read").expect("the key");
    assert_eq!(kv.value, b"1");
}
