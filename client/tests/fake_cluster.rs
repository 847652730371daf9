//! The SDK against in-process fake members (see `fake/mod.rs`). kvsetctl runs against the same
//! fake in `ctl/tests/fake_cluster.rs`.

mod fake;

use std::time::{Duration, Instant};

use fake::{closed_endpoint, Action, FakeCluster};
use futures::TryStreamExt;
use kvset_client::{
    CauseKind, Client, Error, KeyRange, RangeOptions, ReadOptions, Role, WriteOptions,
};
use kvset_proto::v1 as pb;
use tonic::Code;

/// A client with short timeouts so failure paths finish quickly.
fn client(endpoints: &[String]) -> Client {
    Client::builder()
        .endpoints(endpoints)
        .request_timeout(Duration::from_millis(300))
        .retry_deadline(Duration::from_secs(3))
        .connect_timeout(Duration::from_millis(300))
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .build()
        .unwrap()
}

#[tokio::test]
async fn leader_hint_is_followed_to_an_unlisted_endpoint() {
    let cluster = FakeCluster::start(2, &[]).await;
    let (kv0, kv1) = (&cluster.members[0], &cluster.members[1]);
    kv0.set_role(pb::Role::Follower);
    kv1.set_role(pb::Role::Leader);
    kv0.default_action("put", Action::Redirect(format!("kv-1={}", kv1.endpoint())));
    // Only kv-0 is configured: kv-1 is known only from the hint.
    let c = client(&[kv0.endpoint()]);

    let resp = c.put("a", "1").await.unwrap();
    assert_eq!(resp.header.member, "kv-1");
    assert_eq!(kv0.calls("put").len(), 1);
    assert_eq!(kv1.calls("put").len(), 1);
    let leader = c.leader().unwrap();
    assert_eq!(leader.name.as_deref(), Some("kv-1"));
    assert_eq!(leader.endpoint, Some(kv1.endpoint()));
    assert!(c.endpoints().contains(&kv1.endpoint()));

    // The next write goes straight to the remembered leader.
    c.put("b", "2").await.unwrap();
    assert_eq!(kv0.calls("put").len(), 1);
    assert_eq!(kv1.calls("put").len(), 2);
}

#[tokio::test]
async fn leader_found_behind_a_forwarding_follower() {
    // Only kv-0 is configured (like a Service address); it forwards writes to the leader kv-1
    // and answers with kv-1's header. The client learns kv-1's own address from the
    // membership and then writes to it directly.
    let cluster = FakeCluster::start(3, &[]).await;
    let (kv0, kv1) = (&cluster.members[0], &cluster.members[1]);
    kv0.set_role(pb::Role::Follower);
    kv1.set_role(pb::Role::Leader);
    *kv0.0.forwards_to.lock().unwrap() = Some(("kv-1".into(), 1));
    let c = client(&[kv0.endpoint()]);

    let resp = c.put("a", "1").await.unwrap();
    assert_eq!(resp.header.member, "kv-1");
    assert_eq!(kv0.calls("put").len(), 1);
    let deadline = Instant::now() + Duration::from_secs(2);
    while c.leader().and_then(|l| l.endpoint) != Some(kv1.endpoint()) {
        assert!(
            Instant::now() < deadline,
            "leader address not learned: {:?}",
            c.leader()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(kv0.calls("members").len(), 1, "one background refresh");
    c.put("b", "2").await.unwrap();
    assert_eq!(kv0.calls("put").len(), 1);
    assert_eq!(kv1.calls("put").len(), 1);
}

#[tokio::test]
async fn hint_is_returned_as_not_leader_when_redirects_are_off() {
    let cluster = FakeCluster::start(2, &[]).await;
    let (kv0, kv1) = (&cluster.members[0], &cluster.members[1]);
    kv0.default_action("put", Action::Redirect(format!("kv-1={}", kv1.endpoint())));
    let c = Client::builder()
        .endpoints([kv0.endpoint()])
        .follow_leader(false)
        .build()
        .unwrap();
    match c.put("a", "1").await {
        Err(Error::NotLeader { endpoint, leader }) => {
            assert_eq!(endpoint, kv0.endpoint());
            let leader = leader.unwrap();
            assert_eq!(leader.name, "kv-1");
            assert_eq!(leader.endpoint, Some(kv1.endpoint()));
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert!(kv1.calls("put").is_empty());

    // If an earlier attempt of the same write may have reached a leader, a later refusal is
    // not reported as a clean "not the leader".
    let c = Client::builder()
        .endpoints([kv1.endpoint(), kv0.endpoint()])
        .follow_leader(false)
        .build()
        .unwrap();
    kv1.script(
        "put",
        [Action::Fail(
            Code::Unavailable,
            "leader lost while forwarding",
        )],
    );
    let err = c.put("a", "1").await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.may_have_applied());
}

#[tokio::test]
async fn lost_answer_is_retried_with_the_same_request_id() {
    let cluster = FakeCluster::start(1, &[]).await;
    let kv0 = &cluster.members[0];
    kv0.script("put", [Action::ApplyThenFail(Code::Unavailable)]);
    let c = client(&cluster.endpoints());

    let resp = c.put("a", "1").await.unwrap();
    let calls = kv0.calls("put");
    assert_eq!(calls.len(), 2, "one lost answer, one retry");
    let id = calls[0]
        .request_id
        .expect("the SDK always attaches a RequestId");
    assert_ne!(id.0, 0);
    assert_eq!(calls[1].request_id, Some(id), "the retry reuses the id");
    {
        let store = cluster.store.lock().unwrap();
        assert_eq!(store.applied, vec![id], "applied exactly once");
        assert_eq!(store.revision, 1);
    }
    assert_eq!(resp.header.revision, 1);

    // The next logical write gets the next sequence of the same client id.
    c.put("b", "2").await.unwrap();
    let next = kv0.calls("put")[2].request_id.unwrap();
    assert_eq!(next, (id.0, id.1 + 1));
}

#[tokio::test]
async fn timed_out_attempt_is_retried_with_the_same_request_id() {
    let cluster = FakeCluster::start(2, &[]).await;
    let kv0 = &cluster.members[0];
    kv0.script("txn", [Action::ApplyThenHang(Duration::from_secs(5))]);
    let c = client(&cluster.endpoints());

    let started = Instant::now();
    assert!(c.cas("k", None, "v").await.unwrap(), "answered from memory");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let ids: Vec<_> = cluster
        .members
        .iter()
        .flat_map(|m| m.calls("txn"))
        .map(|c| c.request_id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
    assert_eq!(cluster.store.lock().unwrap().applied.len(), 1);
    assert_eq!(cluster.value("k").as_deref(), Some(b"v".as_slice()));
}

#[tokio::test]
async fn invalid_argument_is_not_retried() {
    let cluster = FakeCluster::start(2, &[]).await;
    let kv0 = &cluster.members[0];
    kv0.default_action(
        "put",
        Action::Fail(
            Code::InvalidArgument,
            "key is 5000 bytes, the limit is 4096",
        ),
    );
    let c = client(&cluster.endpoints());
    match c.put("a", "1").await {
        Err(Error::InvalidArgument(msg)) => assert_eq!(msg, "key is 5000 bytes, the limit is 4096"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert_eq!(kv0.calls("put").len(), 1);
    assert!(cluster.members[1].calls("put").is_empty());

    kv0.default_action(
        "remove",
        Action::Fail(Code::FailedPrecondition, "removing kv-1 would break quorum"),
    );
    assert!(matches!(
        c.remove(1, false).await,
        Err(Error::FailedPrecondition(_))
    ));
    assert_eq!(kv0.calls("remove").len(), 1);
}

#[tokio::test]
async fn reads_are_retried_until_served() {
    let cluster = FakeCluster::start(1, &[]).await;
    cluster.seed(&[("a", "1")]);
    let kv0 = &cluster.members[0];
    kv0.script(
        "get",
        [
            Action::Fail(Code::Unavailable, "no leader"),
            Action::Fail(Code::Unavailable, "no leader"),
        ],
    );
    let c = client(&cluster.endpoints());
    let kv = c.get("a").await.unwrap().unwrap();
    assert_eq!(kv.value, b"1");
    assert_eq!(kv0.calls("get").len(), 3);
    assert_eq!(c.get("missing").await.unwrap(), None);
}

#[tokio::test]
async fn requests_fail_over_from_an_unreachable_endpoint() {
    let cluster = FakeCluster::start(1, &[]).await;
    cluster.seed(&[("a", "1")]);
    let dead = closed_endpoint().await;
    let c = client(&[dead, cluster.members[0].endpoint()]);
    assert_eq!(c.get("a").await.unwrap().unwrap().value, b"1");
    c.put("b", "2").await.unwrap();
    assert_eq!(cluster.members[0].calls("put").len(), 1);
}

#[tokio::test]
async fn nothing_reachable_is_unavailable_with_an_actionable_message() {
    let (a, b) = (closed_endpoint().await, closed_endpoint().await);
    let c = Client::builder()
        .endpoints([&a, &b])
        .retry_deadline(Duration::from_millis(400))
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .build()
        .unwrap();
    let err = c.put("a", "1").await.unwrap_err();
    match &err {
        Error::Unavailable {
            endpoints,
            last_cause,
            reached_member,
            may_have_applied,
        } => {
            assert_eq!(endpoints, &vec![a.clone(), b.clone()]);
            assert_eq!(last_cause.kind, CauseKind::Connect);
            assert!(!reached_member);
            assert!(
                !may_have_applied,
                "a write that was never sent did not apply"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "no kvset member answered at {a}, {b}: connection refused; is the cluster running? (kvset-server local)"
        )
    );
}

#[tokio::test]
async fn deadline_reports_unavailable_with_the_last_cause() {
    let cluster = FakeCluster::start(2, &[]).await;
    for m in &cluster.members {
        m.default_action(
            "get",
            Action::Fail(Code::Unavailable, "no leader known (election in progress)"),
        );
    }
    let c = client(&cluster.endpoints());
    let started = Instant::now();
    let err = c
        .get_with("a", &ReadOptions::new().timeout(Duration::from_millis(500)))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    match &err {
        Error::Unavailable {
            last_cause,
            reached_member,
            may_have_applied,
            ..
        } => {
            assert_eq!(last_cause.message, "no leader known (election in progress)");
            assert_eq!(last_cause.kind, CauseKind::Refused);
            assert!(*reached_member);
            assert!(!may_have_applied);
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(err.to_string().contains("check `kvsetctl status`"));
    let calls: usize = cluster.members.iter().map(|m| m.calls("get").len()).sum();
    assert!(calls > 2, "retried across rounds, got {calls} calls");
}

#[tokio::test]
async fn deadline_reports_timeout_when_members_hang() {
    let cluster = FakeCluster::start(1, &[]).await;
    cluster.members[0].default_action("put", Action::ApplyThenHang(Duration::from_secs(10)));
    let c = client(&cluster.endpoints());
    let err = c
        .put_with(
            "a",
            "1",
            &WriteOptions::new().timeout(Duration::from_millis(700)),
        )
        .await
        .unwrap_err();
    match &err {
        Error::Timeout {
            last_cause: Some(cause),
            may_have_applied,
            ..
        } => {
            assert_eq!(cause.kind, CauseKind::TimedOut);
            assert!(may_have_applied, "the write reached the leader");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(err.may_have_applied());
    // Every attempt carried the same id, and the store applied it once.
    let calls = cluster.members[0].calls("put");
    assert!(calls.len() >= 2);
    assert!(calls.iter().all(|c| c.request_id == calls[0].request_id));
    assert_eq!(cluster.store.lock().unwrap().applied.len(), 1);
}

#[tokio::test]
async fn pagination_stream_follows_the_cursor() {
    let cluster = FakeCluster::start(1, &[]).await;
    let keys: Vec<String> = (0..7).map(|i| format!("k{i:02}")).collect();
    let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
    cluster.seed(&pairs);
    cluster.seed(&[("other", "x")]);
    let c = client(&cluster.endpoints());
    let kv0 = &cluster.members[0];

    let got: Vec<_> = c
        .range_with(KeyRange::prefix("k"), RangeOptions::new().page_size(3))
        .try_collect()
        .await
        .unwrap();
    let got_keys: Vec<String> = got
        .iter()
        .map(|kv| kv.key_str().unwrap().to_string())
        .collect();
    assert_eq!(got_keys, keys);
    let cursors: Vec<Vec<u8>> = kv0
        .calls("range")
        .iter()
        .map(|c| c.cursor.clone())
        .collect();
    assert_eq!(
        cursors,
        vec![b"".to_vec(), b"after:k02".to_vec(), b"after:k05".to_vec()]
    );

    // A total limit stops early and asks only for what is missing.
    let limited: Vec<_> = c
        .range_with(
            KeyRange::prefix("k"),
            RangeOptions::new().page_size(3).limit(5),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(limited.len(), 5);
    let limits: Vec<i64> = kv0.calls("range")[3..].iter().map(|c| c.limit).collect();
    assert_eq!(limits, vec![3, 2]);

    // Pages report the range's total count.
    let pages: Vec<_> = c
        .pages(
            KeyRange::all(),
            RangeOptions::new().page_size(5).keys_only(),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0].count, 8);
    assert!(pages[0].more && !pages[1].more);
    assert!(pages[0].kvs.iter().all(|kv| kv.value.is_empty()));
}

#[tokio::test]
async fn stale_reads_prefer_a_follower_and_can_be_pinned_by_name() {
    let cluster = FakeCluster::start(3, &[]).await;
    cluster.seed(&[("a", "1")]);
    let c = client(&cluster.endpoints());
    c.put("w", "x").await.unwrap(); // learns the leader from the header
    assert_eq!(c.leader().unwrap().name.as_deref(), Some("kv-0"));

    let stale = c.get_response("a", &ReadOptions::stale()).await.unwrap();
    assert_ne!(
        stale.header.role,
        Role::Leader,
        "a stale read goes to a secondary"
    );
    let lin = c.get_response("a", &ReadOptions::new()).await.unwrap();
    assert_eq!(lin.header.member, "kv-0");

    let pinned = c
        .get_response("a", &ReadOptions::stale().on_member("kv-2"))
        .await
        .unwrap();
    assert_eq!(pinned.header.member, "kv-2");
    let call = cluster.members[2].calls("get").pop().unwrap();
    assert_eq!(call.consistency, pb::Consistency::Stale as i32);

    let by_addr = ReadOptions::stale().on_member(cluster.members[1].endpoint());
    assert_eq!(
        c.get_response("a", &by_addr).await.unwrap().header.member,
        "kv-1"
    );
    assert!(matches!(
        c.get_with("a", &ReadOptions::stale().on_member("kv-9"))
            .await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn concurrent_writes_never_share_an_in_flight_client_id() {
    let cluster = FakeCluster::start(1, &[]).await;
    cluster.members[0].default_action("put", Action::Delay(Duration::from_millis(20)));
    let c = Client::builder()
        .endpoints(cluster.endpoints())
        .max_inflight_writes(4)
        .build()
        .unwrap();
    let writes = (0..24).map(|i| {
        let c = c.clone();
        tokio::spawn(async move { c.put(format!("k{i}"), "v").await })
    });
    for w in futures::future::join_all(writes).await {
        w.unwrap().unwrap();
    }
    let store = cluster.store.lock().unwrap();
    assert_eq!(store.applied.len(), 24);
    assert_eq!(
        store.max_inflight_per_client, 1,
        "one write in flight per client id"
    );
    assert!(
        store.stale.is_empty(),
        "no sequence ever arrived out of order"
    );
    let ids = c.client_ids();
    assert!(ids.len() > 1 && ids.len() <= 4, "{} client ids", ids.len());
}

#[tokio::test]
async fn cas_swaps_only_on_match() {
    let cluster = FakeCluster::start(1, &[]).await;
    let c = client(&cluster.endpoints());
    assert!(c.cas("a", None, "1").await.unwrap());
    assert!(!c.cas("a", None, "2").await.unwrap());
    assert!(c.cas("a", Some(b"1"), "2").await.unwrap());
    assert!(!c.cas("a", Some(b"1"), "3").await.unwrap());
    assert_eq!(cluster.value("a").as_deref(), Some(b"2".as_slice()));
}

#[tokio::test]
async fn membership_change_is_not_retried_after_an_ambiguous_failure() {
    let cluster = FakeCluster::start(2, &[]).await;
    let kv0 = &cluster.members[0];
    kv0.default_action(
        "remove",
        Action::Fail(Code::DeadlineExceeded, "timed out waiting for commit"),
    );
    let c = client(&cluster.endpoints());
    let err = c.remove(1, false).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.may_have_applied());
    assert_eq!(kv0.calls("remove").len(), 1);
    assert!(cluster.members[1].calls("remove").is_empty());

    // A refusal that names the leader provably did nothing: it is followed.
    let kv1 = &cluster.members[1];
    kv0.default_action(
        "promote",
        Action::Redirect(format!("kv-1={}", kv1.endpoint())),
    );
    c.promote(1).await.unwrap();
    assert_eq!(kv1.calls("promote").len(), 1);

    // So is a connection that could not be made.
    let dead = closed_endpoint().await;
    let c2 = client(&[dead, kv1.endpoint()]);
    let members = c2.members().await.unwrap();
    assert_eq!(members.len(), 2);
    c2.remove(1, false).await.unwrap();
}

#[tokio::test]
async fn status_all_reports_every_member() {
    // kv-2 is in the membership but not running; only kv-0 is configured (like a Service).
    let cluster = FakeCluster::start(3, &[2]).await;
    let c = client(&[cluster.members[0].endpoint()]);
    let status = c.status_all().await;
    assert_eq!(status.leader.as_deref(), Some("kv-0"));
    assert_eq!(status.members.len(), 3);
    assert_eq!(status.reachable(), 2);
    assert_eq!(
        cluster.members[1].calls("status").len(),
        1,
        "found through the membership"
    );
}

#[tokio::test]
async fn snapshot_follows_the_leader_hint_and_is_verified_before_it_is_saved() {
    let cluster = FakeCluster::start(2, &[]).await;
    let (kv0, kv1) = (&cluster.members[0], &cluster.members[1]);
    kv0.set_role(pb::Role::Follower);
    kv1.set_role(pb::Role::Leader);
    kv0.default_action(
        "snapshot",
        Action::Redirect(format!("kv-1={}", kv1.endpoint())),
    );
    // Several chunks, so the client has to put them back together.
    let data: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let sha = kvset_proto::backup::sha256_hex(&data);
    kv1.serve_snapshot(&data, 4096, &sha, 12);
    // Only kv-0 is configured: the leader is known only from the hint.
    let c = client(&[kv0.endpoint()]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backup.kvset");
    let info = c.save_snapshot(&path).await.unwrap();
    assert_eq!(kv0.calls("snapshot").len(), 1);
    assert_eq!(kv1.calls("snapshot").len(), 1);
    assert_eq!((info.keys, info.size_bytes), (12, data.len() as u64));
    assert_eq!(info.sha256, sha);
    assert_eq!(info.header.member, "kv-1");
    // The file is a backup `kvset-server restore` reads.
    let (stored, stored_data) =
        kvset_proto::backup::read(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(stored_data, data);
    assert_eq!(stored.sha256, sha);
    assert_eq!(stored.keys, 12);
    assert_eq!(
        stored.header.unwrap().member.unwrap().name,
        "kv-1",
        "the header names the member that served it"
    );

    // A damaged stream: the checksum does not match the data. An error, no file, nothing
    // left behind, and not retried (the member would send the same).
    let before = kv1.calls("snapshot").len();
    kv1.serve_snapshot(&data, 4096, &kvset_proto::backup::sha256_hex(b"other"), 12);
    let damaged = dir.path().join("damaged.kvset");
    let e = c.save_snapshot(&damaged).await.unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    assert_eq!(kv1.calls("snapshot").len(), before + 1, "not retried");
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["backup.kvset"], "no damaged or temporary file");

    // A stream that announces more data than it carries.
    kv1.serve_snapshot(&data[..100], 4096, &sha, 12);
    let e = c.save_snapshot(&damaged).await.unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    assert!(!damaged.exists());
}

#[tokio::test]
async fn snapshot_retries_a_leader_that_is_not_ready_yet() {
    let cluster = FakeCluster::start(1, &[]).await;
    let kv0 = &cluster.members[0];
    kv0.script(
        "snapshot",
        [
            Action::Fail(Code::Unavailable, "no leader yet"),
            Action::Serve,
        ],
    );
    kv0.serve_snapshot(b"abc", 2, &kvset_proto::backup::sha256_hex(b"abc"), 1);
    let snapshot = client(&cluster.endpoints()).snapshot().await.unwrap();
    assert_eq!(snapshot.data, b"abc");
    assert_eq!(kv0.calls("snapshot").len(), 2);
}

#[tokio::test]
async fn answers_from_a_member_of_another_cluster_are_refused() {
    let cluster = FakeCluster::start(2, &[]).await;
    let (kv0, kv1) = (&cluster.members[0], &cluster.members[1]);
    let c = client(&cluster.endpoints());
    // The first answer tells the client which cluster it talks to.
    c.put("a", "1").await.unwrap();

    // kv-1 now belongs to another cluster (a kv-0 that minted its own, say), and kv-0 points
    // the client there.
    kv1.set_cluster_id("other-cluster");
    kv0.set_role(pb::Role::Follower);
    kv1.set_role(pb::Role::Leader);
    kv0.default_action("put", Action::Redirect(format!("kv-1={}", kv1.endpoint())));
    let err = c.put("b", "2").await.unwrap_err();
    match &err {
        Error::ClusterMismatch {
            expected,
            got,
            endpoint,
        } => {
            assert_eq!(expected, "fake-cluster");
            assert_eq!(got, "other-cluster");
            assert_eq!(endpoint, &kv1.endpoint());
        }
        other => panic!("expected ClusterMismatch, got {other:?}"),
    }
    assert!(
        err.to_string().contains("other-cluster") && err.to_string().contains("fake-cluster"),
        "{err}"
    );
    // Reads from it are refused too, and a member of the right cluster still serves.
    kv0.default_action("put", Action::Serve);
    let err = c
        .get_with("a", &ReadOptions::stale().on_member(kv1.endpoint()))
        .await;
    assert!(matches!(err, Err(Error::ClusterMismatch { .. })), "{err:?}");
}

// ----- watch, leases, lock, election -----

/// Reads events from `stream` until `n` arrived (bounded by 5 s).
async fn take_events(
    stream: &mut kvset_client::WatchStream,
    n: usize,
) -> Vec<kvset_client::WatchEvent> {
    use futures::StreamExt;
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while events.len() < n {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!("only {} of {n} events within 5 s: {events:?}", events.len())
            })
            .expect("the stream ended")
            .expect("the stream failed");
        events.extend(batch.events);
    }
    events
}

#[tokio::test]
async fn watch_resumes_from_the_next_revision_after_a_break_without_loss_or_repeat() {
    let cluster = FakeCluster::start(3, &[]).await;
    cluster.seed(&[("other", "x")]);
    // kv-0 (the leader, where the watch goes first) breaks the stream after two responses;
    // the members that take over repeat the revision before the one asked for.
    cluster.members[0].break_watch_after([2]);
    for m in &cluster.members[1..] {
        *m.0.watch_repeats.lock().unwrap() = true;
    }
    let c = client(&cluster.endpoints());
    let mut stream = c
        .watch(kvset_client::WatchOptions::prefix("w/"))
        .await
        .unwrap();
    let mut written = Vec::new();
    for i in 0..6 {
        written.push(
            c.put(format!("w/{i}"), format!("v{i}"))
                .await
                .unwrap()
                .header
                .revision,
        );
    }
    let events = take_events(&mut stream, 6).await;
    let revisions: Vec<i64> = events.iter().map(|e| e.revision()).collect();
    assert_eq!(revisions, written, "every write once, in order");
    let keys: Vec<String> = events
        .iter()
        .map(|e| e.kv.key_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["w/0", "w/1", "w/2", "w/3", "w/4", "w/5"]);
    assert_eq!(stream.next_revision(), written[5] + 1);
    assert_eq!(stream.reconnects(), 1);
    // The first create asked for "from now"; the re-creation elsewhere for the revision after
    // the last one delivered (the second write).
    assert_eq!(cluster.members[0].watch_creates()[0].start_revision, 0);
    let resumed: Vec<i64> = cluster.members[1..]
        .iter()
        .flat_map(|m| m.watch_creates())
        .map(|c| c.start_revision)
        .collect();
    assert_eq!(
        resumed,
        [written[1] + 1],
        "one re-creation, from the next revision"
    );
}

#[tokio::test]
async fn watch_from_a_past_revision_replays_and_filters() {
    let cluster = FakeCluster::start(1, &[]).await;
    cluster.seed(&[("k", "1"), ("k", "2")]);
    let c = client(&cluster.endpoints());
    c.delete("k").await.unwrap();
    let mut all = c
        .watch(
            kvset_client::WatchOptions::key("k")
                .start_revision(1)
                .prev_kv(),
        )
        .await
        .unwrap();
    let events = take_events(&mut all, 3).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["PUT", "PUT", "DELETE"]);
    assert_eq!(events[1].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(events[2].kv.mod_revision, 3);
    let mut puts_only = c
        .watch(
            kvset_client::WatchOptions::key("k")
                .start_revision(1)
                .no_delete(),
        )
        .await
        .unwrap();
    c.put("k", "3").await.unwrap();
    let events = take_events(&mut puts_only, 3).await;
    assert!(
        events
            .iter()
            .all(|e| e.kind == kvset_client::EventType::Put),
        "{events:?}"
    );
    assert_eq!(events[2].kv.value, b"3");
    // From a key to the last key.
    let mut from_k = c
        .watch(kvset_client::WatchOptions::range(KeyRange::starting_at(
            "k",
        )))
        .await
        .unwrap();
    c.put("a", "before k").await.unwrap();
    c.put("z", "after k").await.unwrap();
    let events = take_events(&mut from_k, 1).await;
    assert_eq!(events[0].kv.key, b"z");
}

#[tokio::test]
async fn watch_of_compacted_history_is_an_error_at_once_or_when_resuming() {
    use futures::StreamExt;
    let cluster = FakeCluster::start(2, &[]).await;
    cluster.seed(&[("k", "1"), ("k", "2"), ("k", "3")]);
    cluster.compact(2);
    let c = client(&cluster.endpoints());
    // The member creates the watcher, then cancels it: the stream's first item says so.
    let mut stream = c
        .watch(kvset_client::WatchOptions::key("k").start_revision(1))
        .await
        .unwrap();
    match stream.next().await {
        Some(Err(Error::Compacted { compact_revision })) => assert_eq!(compact_revision, 2),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(stream.next().await.is_none(), "nothing after the error");
    // A live watcher: its stream breaks after the first event; the re-creation is slowed down,
    // and the history it needs is compacted meanwhile.
    cluster.members[0].break_watch_after([1]);
    cluster.members[0].script("watch", [Action::Serve]);
    cluster.members[0].default_action("watch", Action::Delay(Duration::from_millis(150)));
    cluster.members[1].default_action("watch", Action::Delay(Duration::from_millis(150)));
    let mut stream = c
        .watch(kvset_client::WatchOptions::key("k").start_revision(3))
        .await
        .unwrap();
    c.put("k", "4").await.unwrap();
    c.put("k", "5").await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.events[0].revision(), 3);
    cluster.compact(5);
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the stream ends within 5 s")
        .expect("an item before the end");
    match end {
        Err(Error::Compacted { compact_revision }) => assert_eq!(compact_revision, 5),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(stream.next().await.is_none(), "nothing after the error");
}

#[tokio::test]
async fn dropping_a_watch_stream_stops_the_watcher() {
    let cluster = FakeCluster::start(1, &[]).await;
    let c = client(&cluster.endpoints());
    let stream = c.watch(kvset_client::WatchOptions::key("k")).await.unwrap();
    let active = cluster.members[0].0.active_watchers.clone();
    assert_eq!(active.load(std::sync::atomic::Ordering::SeqCst), 1);
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(3);
    while active.load(std::sync::atomic::Ordering::SeqCst) != 0 {
        assert!(
            Instant::now() < deadline,
            "the member still serves the dropped watch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reads_at_a_revision_and_compact_map_out_of_range() {
    let cluster = FakeCluster::start(1, &[]).await;
    cluster.seed(&[("a", "1"), ("a", "2"), ("a", "3")]);
    let c = client(&cluster.endpoints());
    assert_eq!(c.compact(2).await.unwrap(), 2);
    let e = c
        .get_with("a", &ReadOptions::new().at_revision(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Compacted {
                compact_revision: 2
            }
        ),
        "{e:?}"
    );
    let e = c
        .get_with("a", &ReadOptions::new().at_revision(99))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::RevisionOutOfRange(_)), "{e:?}");
    assert!(c
        .get_with("a", &ReadOptions::new().at_revision(3))
        .await
        .unwrap()
        .is_some());
    let e: Error = c
        .range_with(
            KeyRange::all(),
            RangeOptions::new().read(ReadOptions::new().at_revision(2)),
        )
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Compacted {
                compact_revision: 2
            }
        ),
        "{e:?}"
    );
    assert!(matches!(c.compact(2).await, Err(Error::Compacted { .. })));
    assert!(matches!(c.compact(0).await, Err(Error::InvalidArgument(_))));
    let e = c
        .get_with("a", &ReadOptions::new().at_revision(-1))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
}

#[tokio::test]
async fn lease_calls_and_put_with_a_lease() {
    let cluster = FakeCluster::start(1, &[]).await;
    let c = client(&cluster.endpoints());
    let lease = c.grant(30).await.unwrap();
    assert_eq!(lease.ttl, 30);
    let opts = WriteOptions::new().lease(lease.id);
    c.put_with("svc/a", "1", &opts).await.unwrap();
    assert_eq!(c.get("svc/a").await.unwrap().unwrap().lease, lease.id);
    let ttl = c.time_to_live(lease.id, true).await.unwrap();
    assert_eq!(
        (ttl.granted_ttl, ttl.keys.clone()),
        (30, vec![b"svc/a".to_vec()])
    );
    let list = c.leases().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].id, list[0].keys), (lease.id, 1));
    assert_eq!(c.keep_alive_once(lease.id).await.unwrap(), 30);
    c.revoke(lease.id).await.unwrap();
    assert!(
        c.get("svc/a").await.unwrap().is_none(),
        "revoking deleted the key"
    );
    assert!(matches!(c.revoke(lease.id).await, Err(Error::NotFound(_))));
    assert!(matches!(
        c.time_to_live(lease.id, false).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        c.keep_alive_once(lease.id).await,
        Err(Error::NotFound(_))
    ));
    let e = c.put_with("svc/b", "1", &opts).await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    assert!(matches!(c.grant(0).await, Err(Error::InvalidArgument(_))));
    c.grant_with_id(5, 77).await.unwrap();
    assert!(matches!(
        c.grant_with_id(5, 77).await,
        Err(Error::FailedPrecondition(_))
    ));
}

#[tokio::test]
async fn keep_alive_renews_across_a_broken_stream_and_stops_on_drop_or_expiry() {
    use kvset_client::KeepAliveStatus;
    let cluster = FakeCluster::start(3, &[]).await;
    // The first stream (on the leader) breaks after two renewals.
    cluster.members[0].break_keep_alive_after([2]);
    let c = client(&cluster.endpoints());
    let lease = c.grant(1).await.unwrap();
    let task = c.keep_alive(lease.id);
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.keep_alives().len() < 6 {
        assert!(
            Instant::now() < deadline,
            "renewals: {:?}",
            cluster.keep_alives()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let members: std::collections::BTreeSet<String> =
        cluster.keep_alives().into_iter().map(|(m, _)| m).collect();
    assert!(
        members.len() >= 2,
        "re-opened on another member: {members:?}"
    );
    assert!(
        matches!(task.status(), KeepAliveStatus::Alive { ttl: 1, .. }),
        "{:?}",
        task.status()
    );
    // Renewals come every third of the TTL: 6 took about 2 s, not much less.
    drop(task);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after_drop = cluster.keep_alives().len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        cluster.keep_alives().len(),
        after_drop,
        "no renewal after the drop"
    );
    // A lease that ends: the task reports it and stops.
    let task = c.keep_alive(lease.id);
    cluster.expire(lease.id);
    let lost = tokio::time::timeout(Duration::from_secs(3), task.lost())
        .await
        .expect("the task notices within 3 s");
    assert_eq!(lost, KeepAliveStatus::Expired);
}

#[tokio::test]
async fn lock_is_mutually_exclusive_and_first_come_first_served() {
    use kvset_client::{Compare, Lock, Txn, TxnOp};
    let cluster = FakeCluster::start(1, &[]).await;
    let c = client(&cluster.endpoints());
    let first = Lock::new(&c, "locks/job").lock().await.unwrap();
    assert!(first.key().starts_with(b"locks/job/"));
    assert_eq!(
        first.key(),
        format!("locks/job/{:x}", first.lease_id()).as_bytes()
    );
    let c2 = c.clone();
    let waiter = tokio::spawn(async move { Lock::new(&c2, "locks/job").lock().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the second locker waits while the first holds it"
    );
    // A write fenced on the holder's key succeeds; one fenced on a stale revision does not.
    let fenced = Txn::new()
        .when([first.fence()])
        .and_then([TxnOp::put("job/out", "1")]);
    assert!(c.txn(fenced).await.unwrap().succeeded);
    let stale = Txn::new()
        .when([Compare::create_revision(first.key()).equal(first.revision() - 1)])
        .and_then([TxnOp::put("job/out", "2")]);
    assert!(!c.txn(stale).await.unwrap().succeeded);
    let first_key = first.key().to_vec();
    first.unlock().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .expect("the waiter gets the lock within 3 s")
        .unwrap()
        .unwrap();
    assert!(c.get(&first_key).await.unwrap().is_none());
    assert!(second.revision() > 0 && second.key() != first_key.as_slice());
    // The holder's lease dies: the next waiter gets the lock.
    let c3 = c.clone();
    let third = tokio::spawn(async move { Lock::new(&c3, "locks/job").lock().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!third.is_finished());
    cluster.expire(second.lease_id());
    let third = tokio::time::timeout(Duration::from_secs(3), third)
        .await
        .expect("the waiter gets the lock within 3 s")
        .unwrap()
        .unwrap();
    third.unlock().await.unwrap();
    assert!(Lock::new(&c, "").lock().await.is_err());
}

#[tokio::test]
async fn election_campaign_observe_proclaim_resign() {
    use futures::StreamExt;
    use kvset_client::Election;
    let cluster = FakeCluster::start(1, &[]).await;
    let c = client(&cluster.endpoints());
    let election = Election::new(&c, "elect/svc");
    assert_eq!(election.leader().await.unwrap(), None);
    let mut observed = Box::pin(election.observe());
    let a = election.campaign("a").await.unwrap();
    async fn next(
        s: &mut (impl futures::Stream<Item = kvset_client::Result<kvset_client::KeyValue>> + Unpin),
    ) -> String {
        let kv = tokio::time::timeout(Duration::from_secs(3), s.next())
            .await
            .expect("an observation within 3 s")
            .expect("the stream goes on")
            .expect("no error");
        String::from_utf8(kv.value).unwrap()
    }
    assert_eq!(next(&mut observed).await, "a");
    let c2 = c.clone();
    let b = tokio::spawn(async move { Election::new(&c2, "elect/svc").campaign("b").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!b.is_finished(), "b waits while a leads");
    a.proclaim("a2").await.unwrap();
    assert_eq!(next(&mut observed).await, "a2");
    assert_eq!(election.leader().await.unwrap().unwrap().value, b"a2");
    a.resign().await.unwrap();
    let b = tokio::time::timeout(Duration::from_secs(3), b)
        .await
        .expect("b leads within 3 s")
        .unwrap()
        .unwrap();
    assert_eq!(next(&mut observed).await, "b");
    // A leader whose key is gone cannot proclaim.
    cluster.expire(b.lease_id());
    assert!(matches!(
        b.proclaim("b2").await,
        Err(Error::FailedPrecondition(_))
    ));
}
