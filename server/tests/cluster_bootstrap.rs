//! Bootstrap in StatefulSet order, reads and writes on any member, restarts, and refusals.

mod common;

use std::time::Duration;

use common::*;
use kvset_proto::v1::{
    request_op, Consistency, GetRequest, PutRequest, RangeRequest, RequestOp, Role, TxnRequest,
};
use kvset_proto::LEADER_METADATA_KEY;
use tonic::Code;

const READY: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_bootstrap_makes_kv0_primary_and_replicates_to_all() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;

    let s0 = c.status(0).await.expect("kv-0 answers");
    assert_eq!(
        s0.role,
        Role::Leader as i32,
        "kv-0 bootstraps as the primary"
    );
    assert_eq!(s0.members.len(), 3);
    assert!(
        s0.members.iter().all(|m| m.member.as_ref().unwrap().voter),
        "all three are voters: {:?}",
        s0.members
    );
    let cluster_id = s0.header.unwrap().cluster_id;
    assert_eq!(cluster_id.len(), 32);
    for i in 1..3 {
        let s = c.status(i).await.unwrap();
        assert_eq!(s.role, Role::Follower as i32);
        assert_eq!(s.leader_id, Some(0));
        assert_eq!(
            s.header.unwrap().cluster_id,
            cluster_id,
            "one cluster id everywhere"
        );
    }

    // Write through kv-0, read from kv-2: stale (eventually) and linearizable (at once).
    let rev = put(&c, 0, "greeting", "hello").await;
    assert!(rev >= 1);
    assert_eq!(
        get(&c, 2, "greeting", Consistency::Linearizable)
            .await
            .unwrap()
            .as_deref(),
        Some("hello")
    );
    wait_stale_value(&c, 2, "greeting", "hello", Duration::from_secs(5)).await;
    let stale = c
        .kv(2)
        .get(GetRequest {
            key: "greeting".into(),
            consistency: Consistency::Stale as i32,
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let header = stale.header.unwrap();
    assert_eq!(
        header.member.unwrap().name,
        "kv-2",
        "a stale read is served by the member called"
    );
    assert!(
        header.revision >= rev,
        "and says which revision it has applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_secondary_are_forwarded_or_refused_with_the_leader() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;

    // Default: forwarded to the leader.
    let resp = c
        .kv(1)
        .put(PutRequest {
            key: "a".into(),
            value: "1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.header.unwrap().member.unwrap().name,
        "kv-0",
        "the leader applied the forwarded write"
    );
    assert_eq!(
        get(&c, 2, "a", Consistency::Linearizable)
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );

    // Forwarding off on kv-2: refused with the leader's name and address.
    c.terminate(2, Duration::from_secs(20));
    c.start_with(2, &["--forward-writes=false"]);
    c.wait_ready(2, READY).await;
    let err = c
        .kv(2)
        .put(PutRequest {
            key: "b".into(),
            value: "2".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let hint = err
        .metadata()
        .get(LEADER_METADATA_KEY)
        .expect("leader hint")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(hint, format!("kv-0={}", c.endpoint(0)));
    assert!(err.message().contains("kv-0"), "{}", err.message());
    assert_eq!(
        get(&c, 0, "b", Consistency::Linearizable).await.unwrap(),
        None,
        "a refused write is not applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_all_members_keeps_data_and_roles() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    for n in 0..20 {
        put(&c, 0, &format!("k{n}"), &format!("v{n}")).await;
    }
    let before = c.status(0).await.unwrap();
    for i in (0..3).rev() {
        c.kill(i);
    }
    // Back in StatefulSet order; kv-0 must count as ready while it waits for a quorum.
    c.start_all_ordered().await;
    assert!(
        c.wait_leader_is(0, Duration::from_secs(20)).await,
        "kv-0 is primary again"
    );
    for n in 0..20 {
        assert_eq!(
            get(&c, 2, &format!("k{n}"), Consistency::Linearizable)
                .await
                .unwrap(),
            Some(format!("v{n}"))
        );
    }
    let after = c.status(0).await.unwrap();
    assert_eq!(
        after.header.unwrap().cluster_id,
        before.header.unwrap().cluster_id
    );
    assert!(after.revision >= before.revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_of_another_member_is_refused_untouched() {
    let mut c = ProcessCluster::new(2, FAST_TIMING);
    c.start_all_ordered().await;
    c.terminate(1, Duration::from_secs(20));
    c.terminate(0, Duration::from_secs(20));
    let record = std::fs::read(c.members[0].spec.data_dir.join("kvset-volume.json")).unwrap();

    // kv-1 pointed at kv-0's volume.
    let kv0_dir = c.members[0].spec.data_dir.display().to_string();
    c.start_with(1, &[&format!("--data-dir={kv0_dir}")]);
    let code = c
        .wait_exit(1, Duration::from_secs(20))
        .expect("kv-1 must refuse to start");
    assert_ne!(code, 0);
    let log = c.log(1);
    assert!(
        log.contains("belongs to kv-0") && log.contains("not to kv-1"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(c.members[0].spec.data_dir.join("kvset-volume.json")).unwrap(),
        record
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_name_without_an_ordinal_is_a_startup_error() {
    let mut c = ProcessCluster::new(1, FAST_TIMING);
    c.start_with(0, &["--pod-name=kvset"]);
    let code = c.wait_exit(0, Duration::from_secs(20)).expect("must exit");
    assert_ne!(code, 0);
    assert!(c.log(0).contains("POD_NAME"), "{}", c.log(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_invalid_argument_and_write_nothing() {
    let mut c = ProcessCluster::new(
        1,
        &[
            "--max-value-bytes=1024",
            FAST_TIMING[0],
            FAST_TIMING[1],
            FAST_TIMING[2],
        ],
    );
    c.start_all_ordered().await;
    let mut kv = c.kv(0);
    let rev = put(&c, 0, "x", "1").await;

    let cases: Vec<(&str, tonic::Status)> = vec![
        (
            "empty key",
            kv.put(PutRequest {
                key: vec![],
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "key too big",
            kv.put(PutRequest {
                key: vec![b'k'; 5000],
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "value too big",
            kv.put(PutRequest {
                key: b"y".to_vec(),
                value: vec![0; 2000],
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "range limit",
            kv.range(RangeRequest {
                limit: 1_000_000,
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "consistency",
            kv.get(GetRequest {
                key: b"x".to_vec(),
                consistency: 9,
                revision: 0,
            })
            .await
            .unwrap_err(),
        ),
        (
            "txn ops",
            kv.txn(TxnRequest {
                success: (0..200)
                    .map(|n| RequestOp {
                        request: Some(request_op::Request::Put(PutRequest {
                            key: format!("t{n}").into(),
                            value: b"v".to_vec(),
                            ..Default::default()
                        })),
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
    ];
    for (what, status) in cases {
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status}");
        assert!(!status.message().is_empty(), "{what}: empty message");
    }
    let value_err = kv
        .put(PutRequest {
            key: b"y".to_vec(),
            value: vec![0; 2000],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        value_err.message().contains("1024") && value_err.message().contains("--max-value-bytes"),
        "{}",
        value_err.message()
    );
    let s = c.status(0).await.unwrap();
    assert_eq!(s.revision, rev, "nothing was written by rejected requests");
    assert_eq!(
        get(&c, 0, "y", Consistency::Linearizable).await.unwrap(),
        None
    );
}
