//! Backup (Cluster.Snapshot stream) and restore (`kvset-server restore`) round trip: a cluster's
//! contents survive the loss of every volume.

mod common;

use std::time::Duration;

use common::*;
use kvset_proto::v1::{Consistency, RangeRequest, SnapshotRequest};
use tonic::Code;

async fn all_keys(c: &ProcessCluster, i: usize) -> Vec<(Vec<u8>, Vec<u8>, i64, i64, i64)> {
    let resp = c
        .kv(i)
        .range(RangeRequest {
            consistency: Consistency::Linearizable as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.more);
    resp.kvs
        .into_iter()
        .map(|kv| {
            (
                kv.key,
                kv.value,
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_round_trips_through_backup_and_restore() {
    let mut old = ProcessCluster::new(3, FAST_TIMING);
    old.start_all_ordered().await;
    for n in 0..200 {
        put(&old, 0, &format!("key-{n:03}"), &format!("v{n}")).await;
    }
    for n in 0..20 {
        put(&old, 0, &format!("key-{n:03}"), &format!("second-{n}")).await; // versions > 1
    }
    let before = all_keys(&old, 0).await;
    let before_status = old.status(0).await.unwrap();

    // A follower refuses and points at the leader.
    let err = old
        .cluster(1)
        .snapshot(SnapshotRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");

    // Stream the backup from the leader and write the file.
    let mut stream = old
        .cluster(0)
        .snapshot(SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let (mut info, mut data, mut sha) = (None, Vec::new(), String::new());
    while let Some(chunk) = stream.message().await.unwrap() {
        if chunk.info.is_some() {
            info = chunk.info;
        }
        data.extend_from_slice(&chunk.data);
        if !chunk.sha256.is_empty() {
            sha = chunk.sha256;
        }
    }
    let info = info.expect("first chunk carries the info");
    assert_eq!(
        sha,
        kvset_proto::backup::sha256_hex(&data),
        "checksum matches the data"
    );
    assert_eq!(info.keys, 200);
    assert_eq!(info.revision, before_status.revision);
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("backup.kvset");
    kvset_proto::backup::write(std::fs::File::create(&backup).unwrap(), &info, &data).unwrap();
    drop(old); // every volume is gone

    // A damaged backup is refused and leaves nothing behind.
    let mut fresh = ProcessCluster::new(3, FAST_TIMING);
    let damaged = fresh.dir.path().join("damaged.kvset");
    let mut bytes = std::fs::read(&backup).unwrap();
    *bytes.last_mut().unwrap() ^= 0x55;
    std::fs::write(&damaged, bytes).unwrap();
    let (code, out) = fresh.run_tool(0, &["restore", damaged.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("checksum"), "{out}");

    // Restore into kv-0 of a new cluster, then start it in StatefulSet order.
    let (code, out) = fresh.run_tool(1, &["restore", backup.to_str().unwrap()]);
    assert_ne!(code, 0, "only kv-0 is restored: {out}");
    let (code, out) = fresh.run_tool(0, &["restore", backup.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("restored 200 keys"), "{out}");
    fresh.start_all_ordered().await;
    let after = all_keys(&fresh, 2).await;
    assert_eq!(after, before, "same keys, values and per-key metadata");
    let s0 = fresh.status(0).await.unwrap();
    assert_eq!(s0.revision, before_status.revision);
    assert_eq!(s0.members.len(), 3);
    assert_ne!(
        s0.header.as_ref().unwrap().cluster_id,
        before_status.header.unwrap().cluster_id,
        "a new cluster"
    );
    assert_eq!(
        s0.state_hash, before_status.state_hash,
        "identical content hash"
    );
    // And it takes writes that continue the revision sequence.
    let rev = put(&fresh, 0, "after-restore", "yes").await;
    assert_eq!(rev, before_status.revision + 1);
    fresh.wait_ready(2, Duration::from_secs(30)).await;
}
