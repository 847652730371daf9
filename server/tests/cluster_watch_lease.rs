//! Revision history, compaction, watch and leases on a real 3-member cluster: reads at past
//! revisions and pinned pagination, a compaction every member agrees on, watchers on followers
//! that see every revision once and in order, and leases that expire only when their owner
//! stops renewing them — a leader failover included.

mod common;

use std::time::Duration;

use common::*;
use kvset_proto::v1::watch_create_request::Filter;
use kvset_proto::v1::watch_request::Request as WatchOp;
use kvset_proto::v1::{
    event::EventType, request_op, CompactRequest, Consistency, DeleteRequest, GetRequest,
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, RemoveRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tonic::Code;

const HISTORY_FLAGS: &[&str] = &[
    "--heartbeat-ms=100",
    "--election-timeout-min-ms=400",
    "--election-timeout-max-ms=600",
    "--snapshot-every=10",
    "--keep-after-snapshot=2",
    "--auto-compaction-retention=0",
    "--max-watchers-per-stream=3",
];

async fn get_at(
    c: &ProcessCluster,
    i: usize,
    key: &str,
    revision: i64,
) -> Result<Option<String>, tonic::Status> {
    let resp = c
        .kv(i)
        .get(GetRequest {
            key: key.into(),
            consistency: Consistency::Stale as i32,
            revision,
        })
        .await?;
    Ok(resp
        .into_inner()
        .kv
        .map(|kv| String::from_utf8(kv.value).unwrap()))
}

async fn put_leased(
    c: &ProcessCluster,
    i: usize,
    key: &str,
    lease: i64,
) -> Result<i64, tonic::Status> {
    let resp = c
        .kv(i)
        .put(PutRequest {
            key: key.into(),
            value: b"held".to_vec(),
            lease,
            ..Default::default()
        })
        .await?;
    Ok(resp.into_inner().header.unwrap().revision)
}

/// Waits until member `i` has applied `revision` (stale reads there are then complete).
async fn await_revision(c: &ProcessCluster, i: usize, revision: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = c.status(i).await {
            if s.revision >= revision {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kv-{i} did not reach revision {revision}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_revisions_pinned_pages_and_compaction() {
    let mut c = ProcessCluster::new(3, HISTORY_FLAGS);
    c.start_all_ordered().await;

    let r1 = put(&c, 0, "a", "1").await;
    let r2 = put(&c, 1, "a", "2").await;
    let r3 = put(&c, 2, "b", "1").await;
    let deleted = c
        .kv(0)
        .delete(DeleteRequest {
            key: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let r4 = deleted.header.unwrap().revision;
    assert_eq!((r2, r3, r4), (r1 + 1, r1 + 2, r1 + 3));
    await_revision(&c, 2, r4).await;
    for member in 0..3 {
        assert_eq!(
            get_at(&c, member, "a", r1).await.unwrap().as_deref(),
            Some("1")
        );
        assert_eq!(
            get_at(&c, member, "a", r2).await.unwrap().as_deref(),
            Some("2")
        );
        assert_eq!(get_at(&c, member, "a", r4).await.unwrap(), None);
        assert_eq!(get_at(&c, member, "b", r2).await.unwrap(), None);
    }
    let future = get_at(&c, 0, "a", r4 + 100).await.unwrap_err();
    assert_eq!(future.code(), Code::OutOfRange, "{future:?}");

    // A paginated range is one snapshot: pages after the first are read at its revision.
    for i in 0..5 {
        put(&c, 0, &format!("p/{i}"), "v").await;
    }
    let page = |cursor: Vec<u8>| RangeRequest {
        start: "p/".into(),
        prefix: true,
        limit: 2,
        cursor,
        ..Default::default()
    };
    let first = c.kv(0).range(page(vec![])).await.unwrap().into_inner();
    assert_eq!(first.count, 5);
    put(&c, 0, "p/5", "new").await;
    c.kv(0)
        .delete(DeleteRequest {
            key: "p/3".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut keys: Vec<String> = first
        .kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect();
    let mut cursor = first.next_cursor.clone();
    while !cursor.is_empty() {
        let next = c.kv(0).range(page(cursor)).await.unwrap().into_inner();
        assert_eq!(next.first_page_revision, first.first_page_revision);
        assert_eq!(
            next.count, 5,
            "every page counts the range at the first page's revision"
        );
        keys.extend(
            next.kvs
                .iter()
                .map(|kv| String::from_utf8(kv.key.clone()).unwrap()),
        );
        cursor = next.next_cursor;
    }
    assert_eq!(keys, vec!["p/0", "p/1", "p/2", "p/3", "p/4"]);

    // Compaction through a follower: every member forgets the same history.
    let compacted = c
        .kv(1)
        .compact(CompactRequest { revision: r2 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(compacted.compact_revision, r2);
    let gone = get_at(&c, 0, "a", r1).await.unwrap_err();
    assert_eq!(gone.code(), Code::OutOfRange);
    assert!(
        gone.message()
            .contains(&format!("compact revision is {r2}")),
        "{}",
        gone.message()
    );
    assert_eq!(get_at(&c, 0, "a", r2).await.unwrap().as_deref(), Some("2"));
    let again = c
        .kv(0)
        .compact(CompactRequest { revision: r1 })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::OutOfRange, "{again:?}");
    let bad = c
        .kv(0)
        .compact(CompactRequest { revision: 0 })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let now = c.status(0).await.unwrap().revision;
    let beyond = c
        .kv(0)
        .compact(CompactRequest { revision: now + 10 })
        .await
        .unwrap_err();
    assert_eq!(beyond.code(), Code::OutOfRange);
    for member in 0..3 {
        await_revision(&c, member, now).await;
        assert_eq!(c.status(member).await.unwrap().compact_revision, r2);
    }

    // History survives a restart, and reaches a new member through a snapshot install.
    c.kill(1);
    c.start(1);
    c.wait_ready(1, Duration::from_secs(30)).await;
    assert_eq!(get_at(&c, 1, "a", r2).await.unwrap().as_deref(), Some("2"));
    assert_eq!(
        get_at(&c, 1, "a", r1).await.unwrap_err().code(),
        Code::OutOfRange
    );

    c.kill(2);
    c.cluster(0)
        .remove(RemoveRequest {
            id: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 0..30 {
        put(&c, 0, &format!("fill/{i}"), "x").await;
    }
    c.wipe(2);
    c.start(2);
    c.wait_ready(2, Duration::from_secs(60)).await;
    let now = c.status(0).await.unwrap().revision;
    await_revision(&c, 2, now).await;
    assert!(
        c.log(2).contains("install"),
        "kv-2 should have caught up from a snapshot"
    );
    assert_eq!(get_at(&c, 2, "a", r2).await.unwrap().as_deref(), Some("2"));
    assert_eq!(get_at(&c, 2, "a", r4).await.unwrap(), None);
    assert_eq!(c.status(2).await.unwrap().compact_revision, r2);
}

/// Automatic compaction keeps the last N revisions, and the leader moves the compact revision
/// there in steps of `--auto-compaction-step` revisions, one log command each, so that no single
/// apply deletes a whole compaction's worth of history while writes wait; every member ends at
/// the same compact revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_compaction_moves_in_steps_to_the_same_revision_everywhere() {
    let (keep, step, writes) = (20, 10, 200);
    let mut flags: Vec<&str> = HISTORY_FLAGS
        .iter()
        .copied()
        .filter(|f| !f.starts_with("--auto-compaction-retention"))
        .collect();
    flags.extend([
        "--auto-compaction-retention=20",
        "--auto-compaction-step=10",
    ]);
    let mut c = ProcessCluster::new(3, &flags);
    c.start_all_ordered().await;

    let mut last = 0;
    for i in 0..writes {
        last = put(&c, 0, &format!("c/{}", i % 7), &i.to_string()).await;
    }
    // With writes stopped, the next check compacts to exactly `keep` revisions below the last.
    let target = last - keep;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for member in 0..3 {
        loop {
            let compacted = c.status(member).await.map(|s| s.compact_revision);
            if compacted == Some(target) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "kv-{member} compacted to {compacted:?}, expected {target}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The state at the compact revision stays readable; the one before it is forgotten.
        let forgotten = get_at(&c, member, "c/0", target - 1).await.unwrap_err();
        assert_eq!(forgotten.code(), Code::OutOfRange, "{forgotten:?}");
        assert!(get_at(&c, member, "c/0", target).await.is_ok());
    }
    let steps = metric(
        &scrape(c.members[0].spec.metrics).await,
        "kvset_auto_compaction_steps_total",
    );
    assert!(
        steps >= (target / step) as f64,
        "{steps} compaction commands for {target} revisions in steps of {step}"
    );
}

/// A watch stream on member `i`: requests go in through the sender, responses come out of the
/// receiver.
async fn open_watch(
    c: &ProcessCluster,
    i: usize,
) -> (mpsc::Sender<WatchRequest>, tonic::Streaming<WatchResponse>) {
    let (tx, rx) = mpsc::channel(8);
    let stream = c
        .watch(i)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}

fn create(key: &str, prefix: bool, start_revision: i64) -> WatchRequest {
    WatchRequest {
        request: Some(WatchOp::CreateRequest(WatchCreateRequest {
            key: key.into(),
            prefix,
            start_revision,
            prev_kv: true,
            ..Default::default()
        })),
    }
}

async fn next(stream: &mut tonic::Streaming<WatchResponse>) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a watch response in time")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

/// The next answer to a create, skipping the events of the stream's other watchers.
async fn next_created(stream: &mut tonic::Streaming<WatchResponse>) -> WatchResponse {
    loop {
        let r = next(stream).await;
        if r.created {
            return r;
        }
    }
}

/// Reads responses until one whose header revision reaches `revision`; returns the events as
/// (revision, type, key, value, prev value), checking revisions strictly increase across
/// responses and each revision comes in one response.
async fn events_until(
    stream: &mut tonic::Streaming<WatchResponse>,
    revision: i64,
) -> Vec<(i64, i32, String, String, Option<String>)> {
    let mut out = Vec::new();
    let mut last = 0;
    loop {
        let r = next(stream).await;
        assert!(!r.canceled, "unexpected cancel: {r:?}");
        if r.events.is_empty() {
            continue;
        }
        let at = r.header.as_ref().unwrap().revision;
        assert!(
            at > last,
            "revision {at} after {last}: out of order or repeated"
        );
        last = at;
        for e in &r.events {
            let kv = e.kv.as_ref().unwrap();
            assert_eq!(
                kv.mod_revision, at,
                "every event of a response is of its revision"
            );
            out.push((
                kv.mod_revision,
                e.r#type,
                String::from_utf8(kv.key.clone()).unwrap(),
                String::from_utf8(kv.value.clone()).unwrap(),
                e.prev_kv
                    .as_ref()
                    .map(|p| String::from_utf8(p.value.clone()).unwrap()),
            ));
        }
        if at >= revision {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_on_followers_see_every_revision_once_and_in_order() {
    let mut c = ProcessCluster::new(3, HISTORY_FLAGS);
    c.start_all_ordered().await;
    put(&c, 0, "other", "x").await;
    let r1 = put(&c, 0, "w/a", "1").await;
    put(&c, 1, "w/a", "2").await;
    // One Txn, two keys, one revision.
    let txn = c
        .kv(2)
        .txn(TxnRequest {
            success: ["w/b", "w/c"]
                .iter()
                .map(|k| RequestOp {
                    request: Some(request_op::Request::Put(PutRequest {
                        key: (*k).into(),
                        value: b"t".to_vec(),
                        ..Default::default()
                    })),
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let r_txn = txn.header.unwrap().revision;
    put(&c, 0, "other", "y").await;
    let r_del = c
        .kv(0)
        .delete(DeleteRequest {
            key: "w/".into(),
            prefix: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;

    // From history, on a follower.
    let (tx, mut stream) = open_watch(&c, 2).await;
    tx.send(create("w/", true, r1)).await.unwrap();
    let created = next(&mut stream).await;
    assert!(created.created && !created.canceled, "{created:?}");
    let events = events_until(&mut stream, r_del).await;
    let put_t = EventType::Put as i32;
    let del_t = EventType::Delete as i32;
    assert_eq!(
        events,
        vec![
            (r1, put_t, "w/a".into(), "1".into(), None),
            (r1 + 1, put_t, "w/a".into(), "2".into(), Some("1".into())),
            (r_txn, put_t, "w/b".into(), "t".into(), None),
            (r_txn, put_t, "w/c".into(), "t".into(), None),
            (r_del, del_t, "w/a".into(), "".into(), Some("2".into())),
            (r_del, del_t, "w/b".into(), "".into(), Some("t".into())),
            (r_del, del_t, "w/c".into(), "".into(), Some("t".into())),
        ]
    );

    // Live: a second watcher on the same stream from now on, with a delete filter.
    tx.send(WatchRequest {
        request: Some(WatchOp::CreateRequest(WatchCreateRequest {
            key: "w/".into(),
            prefix: true,
            filters: vec![Filter::Nodelete as i32],
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let created = next(&mut stream).await;
    assert!(created.created);
    let live_id = created.watch_id;
    let r_live = put(&c, 1, "w/live", "1").await;
    c.kv(0)
        .delete(DeleteRequest {
            key: "w/live".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let r_last = put(&c, 0, "w/live", "2").await;
    let mut seen = Vec::new();
    while seen.iter().filter(|(id, _)| *id == live_id).count() < 2 {
        let r = next(&mut stream).await;
        for e in &r.events {
            seen.push((r.watch_id, (e.r#type, e.kv.as_ref().unwrap().mod_revision)));
        }
    }
    let live: Vec<_> = seen
        .iter()
        .filter(|(id, _)| *id == live_id)
        .map(|(_, e)| *e)
        .collect();
    assert_eq!(
        live,
        vec![(put_t, r_live), (put_t, r_last)],
        "the filter drops deletes"
    );

    // The stream's watcher limit (3) is enforced with a reason naming the flag.
    tx.send(create("x", false, 0)).await.unwrap();
    assert!(!next_created(&mut stream).await.canceled);
    tx.send(create("y", false, 0)).await.unwrap();
    let refused = next_created(&mut stream).await;
    assert!(refused.canceled, "{refused:?}");
    assert!(
        refused.cancel_reason.contains("--max-watchers-per-stream"),
        "{refused:?}"
    );

    // A watcher whose start revision is compacted is cancelled with the compact revision.
    c.kv(0)
        .compact(CompactRequest { revision: r_txn })
        .await
        .unwrap();
    await_revision(&c, 1, r_last).await;
    let (tx2, mut stream2) = open_watch(&c, 1).await;
    tx2.send(create("w/", true, r1)).await.unwrap();
    let mut answers = Vec::new();
    while !answers.iter().any(|r: &WatchResponse| r.canceled) {
        answers.push(next(&mut stream2).await);
    }
    let cancel = answers.last().unwrap();
    assert_eq!(cancel.compact_revision, r_txn, "{cancel:?}");
    assert!(
        answers.iter().all(|r| r.events.is_empty()),
        "no event from a compacted start"
    );
    // Malformed creates are refused, not fatal to the stream.
    tx2.send(create("", false, 0)).await.unwrap();
    let empty = next(&mut stream2).await;
    assert!(empty.created && empty.canceled && empty.cancel_reason.contains("key is empty"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_end_only_when_their_owner_stops_renewing() {
    let mut c = ProcessCluster::new(3, HISTORY_FLAGS);
    c.start_all_ordered().await;

    // Grants through a follower are forwarded; the cluster picks fresh, increasing ids.
    let grant = |ttl| LeaseGrantRequest { ttl, id: 0 };
    let a = c.lease(1).grant(grant(2)).await.unwrap().into_inner();
    let b = c.lease(2).grant(grant(1)).await.unwrap().into_inner();
    assert!(a.id > 0 && b.id > a.id, "{a:?} {b:?}");
    assert_eq!(b.ttl, 2, "a TTL below --min-lease-ttl is raised to it");
    let taken = c
        .lease(0)
        .grant(LeaseGrantRequest { ttl: 5, id: a.id })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::FailedPrecondition, "{taken:?}");
    let zero = c.lease(0).grant(grant(0)).await.unwrap_err();
    assert_eq!(zero.code(), Code::InvalidArgument);

    // Keys attached to a lease; an unknown lease writes nothing.
    put_leased(&c, 1, "held/1", a.id).await.unwrap();
    put_leased(&c, 2, "held/2", a.id).await.unwrap();
    let unknown = put_leased(&c, 0, "held/3", 999_999).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert_eq!(
        get(&c, 0, "held/3", Consistency::Linearizable)
            .await
            .unwrap(),
        None
    );
    let kv = c
        .kv(0)
        .get(GetRequest {
            key: "held/1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .kv
        .unwrap();
    assert_eq!(kv.lease, a.id);
    let ttl = c
        .lease(2)
        .time_to_live(LeaseTimeToLiveRequest {
            id: a.id,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ttl.granted_ttl, 2);
    assert!(ttl.ttl > 0 && ttl.ttl <= 2, "{ttl:?}");
    assert_eq!(ttl.keys, vec![b"held/1".to_vec(), b"held/2".to_vec()]);
    let listed = c
        .lease(1)
        .leases(LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.leases.len(), 2);

    // A KeepAlive stream on a follower renews through the leader.
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let via = (leader + 1) % 3;
    // A watcher (on a member that stays up) sees both keys go in one revision when the lease
    // ends.
    let (wtx, mut watch) = open_watch(&c, via).await;
    wtx.send(create("held/", true, 0)).await.unwrap();
    assert!(next(&mut watch).await.created);
    {
        let (ktx, krx) = mpsc::channel(4);
        let mut renewals = c
            .lease(via)
            .keep_alive(tokio_stream::wrappers::ReceiverStream::new(krx))
            .await
            .unwrap()
            .into_inner();
        for _ in 0..3 {
            ktx.send(LeaseKeepAliveRequest { id: a.id }).await.unwrap();
            let r = tokio::time::timeout(Duration::from_secs(5), renewals.message())
                .await
                .expect("a renewal in time")
                .unwrap()
                .unwrap();
            assert_eq!((r.id, r.ttl), (a.id, 2), "{r:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    // Keep lease a alive while the leader fails over; lease b (never renewed) expires.
    let started = std::time::Instant::now();
    let mut killed = false;
    while started.elapsed() < Duration::from_secs(8) {
        // Renewals fail while there is no leader; the next one goes to the new leader.
        let _ = c
            .lease(via)
            .keep_alive_once(LeaseKeepAliveRequest { id: a.id })
            .await;
        if !killed && started.elapsed() > Duration::from_secs(2) {
            c.kill(leader);
            killed = true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let alive = via;
    assert_eq!(
        get(&c, alive, "held/1", Consistency::Linearizable)
            .await
            .unwrap()
            .as_deref(),
        Some("held"),
        "a lease kept alive across a failover must not expire"
    );
    let gone_b = c
        .lease(alive)
        .time_to_live(LeaseTimeToLiveRequest {
            id: b.id,
            keys: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone_b.ttl, -1, "lease b was never renewed: {gone_b:?}");

    // Stop renewing: the lease expires and both keys go in one revision.
    let mut deletes = Vec::new();
    while deletes.len() < 2 {
        let r = next(&mut watch).await;
        for e in &r.events {
            if e.r#type == EventType::Delete as i32 {
                deletes.push(e.kv.as_ref().unwrap().mod_revision);
            }
        }
    }
    assert_eq!(deletes[0], deletes[1], "a lease's keys go in one revision");
    assert_eq!(
        get(&c, alive, "held/2", Consistency::Linearizable)
            .await
            .unwrap(),
        None
    );

    // Revoke: the keys go at once; a second revoke is NOT_FOUND; ids are never reused.
    let d = c.lease(alive).grant(grant(60)).await.unwrap().into_inner();
    assert!(d.id > b.id);
    put_leased(&c, alive, "held/d", d.id).await.unwrap();
    c.lease(alive)
        .revoke(LeaseRevokeRequest { id: d.id })
        .await
        .unwrap();
    assert_eq!(
        get(&c, alive, "held/d", Consistency::Linearizable)
            .await
            .unwrap(),
        None
    );
    let twice = c
        .lease(alive)
        .revoke(LeaseRevokeRequest { id: d.id })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::NotFound);
    let e = c.lease(alive).grant(grant(60)).await.unwrap().into_inner();
    assert!(e.id > d.id, "lease ids are not reused: {e:?} after {d:?}");
}
