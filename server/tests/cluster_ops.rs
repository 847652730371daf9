//! Operability: Prometheus metrics and health, on a real member.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_describe_raft_store_and_requests() {
    let mut c = ProcessCluster::new(2, FAST_TIMING);
    c.start_all_ordered().await;
    for n in 0..5 {
        put(&c, 1, &format!("k{n}"), "v").await; // through the follower: forwarded
    }
    let leader = scrape(c.members[0].spec.metrics).await;
    for name in [
        "kvset_raft_term",
        "kvset_raft_commit_index",
        "kvset_raft_applied_index",
        "kvset_membership_voters",
        "kvset_raft_log_entries",
        "kvset_snapshots_total",
        "kvset_store_disk_bytes",
        "kvset_request_duration_seconds_bucket",
    ] {
        assert!(leader.contains(name), "{name} missing:\n{leader}");
    }
    assert_eq!(metric(&leader, "kvset_raft_is_leader"), 1.0);
    assert_eq!(metric(&leader, "kvset_membership_voters"), 2.0);
    assert_eq!(metric(&leader, "kvset_store_keys"), 5.0);
    assert_eq!(
        metric(&leader, "kvset_requests_total{method=\"Put\",code=\"Ok\"}"),
        5.0
    );
    let follower = scrape(c.members[1].spec.metrics).await;
    assert_eq!(metric(&follower, "kvset_raft_is_leader"), 0.0);
    assert_eq!(metric(&follower, "kvset_raft_leader_id"), 0.0);
    assert_eq!(
        metric(&follower, "kvset_forwarded_requests_total{method=\"Put\"}"),
        5.0
    );
}
