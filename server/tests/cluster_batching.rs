//! Group commit and coalesced ReadIndex on a real 3-member cluster: concurrent writes share log
//! entries without changing what they mean, and concurrent linearizable reads share quorum
//! rounds without becoming stale.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use kvset_proto::v1::{Consistency, GetRequest, PutRequest, RequestId};

const WRITERS: u64 = 240;

fn put_request(i: u64) -> PutRequest {
    PutRequest {
        key: format!("key-{i:04}").into_bytes(),
        value: format!("value-{i}").into_bytes(),
        request_id: Some(RequestId {
            client_id: 1000 + i,
            sequence: 1,
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_entries_and_keep_their_meaning() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;

    // Many writers at once, a quarter of them through followers (forwarded to the leader).
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let mut kv = c.kv(if i % 4 == 0 {
            1 + (i as usize / 4) % 2
        } else {
            0
        });
        tasks.push(tokio::spawn(async move {
            let resp = kv.put(put_request(i)).await;
            (
                i,
                resp.map(|r| r.into_inner().header.expect("header").revision),
            )
        }));
    }
    let mut revisions = BTreeSet::new();
    for t in tasks {
        let (i, rev) = t.await.unwrap();
        let rev = rev.unwrap_or_else(|e| panic!("write {i} failed: {e}"));
        assert!(revisions.insert(rev), "revision {rev} answered twice");
    }
    // Each write got its own revision, and together they are exactly 1..=WRITERS.
    assert_eq!(
        revisions.iter().copied().collect::<Vec<_>>(),
        (1..=WRITERS as i64).collect::<Vec<_>>()
    );

    // Batching did happen: fewer proposals than writes.
    let leader = scrape(c.members[0].spec.metrics).await;
    let proposals = metric(&leader, "kvset_write_batch_size_count");
    let batched = metric(&leader, "kvset_write_batch_size_sum");
    assert_eq!(
        batched, WRITERS as f64,
        "every write went through the batcher"
    );
    assert!(
        proposals < batched,
        "{WRITERS} concurrent writes made {proposals} proposals: nothing was batched"
    );

    // A retry of a batched write is answered from the dedup table, not applied again.
    let retried = c.kv(2).put(put_request(7)).await.unwrap().into_inner();
    assert!(revisions.contains(&retried.header.unwrap().revision));
    assert_eq!(c.status(0).await.unwrap().revision, WRITERS as i64);

    // Every replica applied the same thing.
    wait_stale_value(&c, 2, "key-0239", "value-239", Duration::from_secs(10)).await;
    wait_stale_value(&c, 1, "key-0239", "value-239", Duration::from_secs(10)).await;
    let mut hashes = Vec::new();
    for i in 0..3 {
        hashes.push(c.status(i).await.expect("status").state_hash);
    }
    assert!(hashes.iter().all(|h| h == &hashes[0]), "{hashes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_linearizable_reads_share_rounds_and_see_every_acknowledged_write() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    put(&c, 0, "counter", "0").await;

    // One writer counts up; `acked` is the last value whose write was acknowledged.
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let mut kv = c.kv(0);
        let acked = acked.clone();
        tokio::spawn(async move {
            for n in 1..=60u64 {
                // Retried while the cluster is briefly without a leader (an election under CPU
                // load): only acknowledged values raise the floor, and they only go up.
                let started = std::time::Instant::now();
                loop {
                    let put = kv.put(PutRequest {
                        key: b"counter".to_vec(),
                        value: n.to_string().into_bytes(),
                        ..Default::default()
                    });
                    match put.await {
                        Ok(_) => break,
                        Err(e) if transient(&e) && started.elapsed() < Duration::from_secs(30) => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        Err(e) => panic!("writer put {n}: {e}"),
                    }
                }
                acked.store(n, Ordering::SeqCst);
            }
        })
    };

    // Readers on every member: a linearizable read that starts after write n was acknowledged
    // must see n or later.
    let mut readers = Vec::new();
    for r in 0..24usize {
        let mut kv = c.kv(r % 3);
        let acked = acked.clone();
        readers.push(tokio::spawn(async move {
            let (mut reads, mut unavailable) = (0u64, 0u32);
            while acked.load(Ordering::SeqCst) < 60 {
                let floor = acked.load(Ordering::SeqCst);
                let answer = kv
                    .get(GetRequest {
                        key: b"counter".to_vec(),
                        consistency: Consistency::Linearizable as i32,
                        revision: 0,
                    })
                    .await;
                let got = match answer {
                    Ok(got) => got,
                    // No leader for a moment (an election under CPU load): refusing is allowed,
                    // answering stale is not. The next read takes a fresh floor.
                    Err(e) if transient(&e) => {
                        unavailable += 1;
                        assert!(unavailable < 5_000, "reader {r}: kept failing: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Err(e) => panic!("reader {r}: {e}"),
                };
                let got = got.into_inner().kv.expect("counter exists");
                let seen: u64 = String::from_utf8(got.value).unwrap().parse().unwrap();
                assert!(
                    seen >= floor,
                    "reader {r} on kv-{} read {seen} after {floor} was acknowledged",
                    r % 3
                );
                reads += 1;
            }
            reads
        }));
    }
    writer.await.unwrap();
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }

    // Followers ask the leader for a read index, so every round runs on the leader.
    let rounds = metric(
        &scrape(c.members[0].spec.metrics).await,
        "kvset_read_index_rounds_total",
    );
    assert!(reads > 0 && rounds > 0.0, "{reads} reads, {rounds} rounds");
    assert!(
        rounds < reads as f64,
        "{reads} concurrent linearizable reads took {rounds} quorum rounds: none were shared"
    );
}

/// An answer a client may get while the cluster elects a leader: retry it.
fn transient(e: &tonic::Status) -> bool {
    matches!(
        e.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
    )
}
