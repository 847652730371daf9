//! Backup and restore through the client tools: `kvsetctl snapshot save` against a real
//! three-member cluster, `kvsetctl snapshot inspect` offline, `kvset-server restore` into kv-0
//! of a fresh cluster, and the restored cluster holds the same keys, with the same metadata and
//! content hash. Damaged backups are refused by both `inspect` (exit 2) and `restore`.
//!
//! Needs the binaries (`cargo build --bins`).

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use kvset_client::{Client, KeyRange, KeyValue};
use kvset_tests::testkit::{run_kvsetctl, ProcessCluster, FAST_TIMING};
use serde_json::Value;

/// Runs kvsetctl with `endpoints`; returns (exit code, stdout, stderr).
async fn kvsetctl(endpoints: &str, args: &[&str]) -> (i32, String, String) {
    run_kvsetctl(endpoints, args, Duration::from_secs(90)).await
}

fn client_of(c: &ProcessCluster) -> Client {
    Client::builder()
        .endpoints(c.endpoints())
        .retry_deadline(Duration::from_secs(30))
        .build()
        .expect("valid endpoints")
}

/// Every key with its value and metadata, in key order.
async fn contents(client: &Client) -> Vec<KeyValue> {
    client
        .range(KeyRange::all())
        .try_collect()
        .await
        .expect("range over all keys")
}

/// Waits until all members report the same state hash at the same applied revision; returns
/// (revision, hash).
async fn converged(c: &ProcessCluster) -> (i64, String) {
    let started = Instant::now();
    loop {
        let mut statuses = Vec::new();
        for i in 0..c.members.len() {
            statuses.extend(c.status(i).await);
        }
        if statuses.len() == c.members.len()
            && statuses.iter().all(|s| {
                s.state_hash == statuses[0].state_hash && s.revision == statuses[0].revision
            })
        {
            return (statuses[0].revision, statuses[0].state_hash.clone());
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "members did not converge; logs in {}",
            c.dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvsetctl_snapshot_save_restores_into_a_fresh_cluster_with_identical_contents() {
    let mut old = ProcessCluster::new(3, FAST_TIMING);
    old.start_all_ordered().await;
    let client = client_of(&old);
    for n in 0..150 {
        client
            .put(format!("key-{n:03}"), format!("value-{n}"))
            .await
            .unwrap();
    }
    for n in 0..30 {
        client
            .put(format!("key-{n:03}"), format!("second-{n}"))
            .await
            .unwrap(); // versions > 1
    }
    for n in 140..150 {
        client.delete(format!("key-{n:03}")).await.unwrap(); // deleted keys stay deleted
    }
    client.put("bytes", [0u8, 0xff, 0x80, b'\n']).await.unwrap();
    let before = contents(&client).await;
    assert_eq!(before.len(), 141);
    let (revision, hash) = converged(&old).await;

    // Save through a follower only: the snapshot RPC refuses there with the leader hint, and
    // kvsetctl follows it to the leader.
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("backup.kvset");
    let follower = old.endpoint(2);
    let (code, out, err) = kvsetctl(
        &follower,
        &["-o", "json", "snapshot", "save", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let saved: Value = serde_json::from_str(&out).expect("JSON summary");
    assert_eq!(saved["keys"], 141, "{saved}");
    assert_eq!(saved["revision"], revision, "{saved}");
    assert_eq!(saved["member"], "kv-0", "served by the leader: {saved}");
    assert_eq!(saved["file"], file.display().to_string());
    let sha = saved["sha256"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);
    let bytes = std::fs::read(&file).unwrap();
    let (info, data) = kvset_proto::backup::read(bytes.as_slice()).expect("a valid backup");
    assert_eq!(info.sha256, sha);
    assert_eq!(saved["size_bytes"], data.len() as u64);
    let names: Vec<_> = std::fs::read_dir(backups.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file left: {names:?}");

    // The table form, from any member list.
    let second = backups.path().join("second.kvset");
    let (code, out, err) = kvsetctl(
        &old.endpoints().join(","),
        &["snapshot", "save", second.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("revision        {revision}\n")),
        "{out}"
    );
    assert!(out.contains("keys            141\n"), "{out}");

    // Inspect offline: the cluster is gone; the header is printed.
    drop(old);
    let (code, out, err) = kvsetctl(
        "127.0.0.1:1",
        &["snapshot", "inspect", file.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("sha256          {sha}\n")), "{out}");
    assert!(out.contains("member          kv-0\n"), "{out}");

    // Damaged and truncated copies are refused by inspect (exit 2) and by restore.
    let damaged = backups.path().join("damaged.kvset");
    let mut flipped = bytes.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 0x55;
    std::fs::write(&damaged, &flipped).unwrap();
    let truncated = backups.path().join("truncated.kvset");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    for (path, needle) in [(&damaged, "checksum"), (&truncated, "truncated")] {
        let (code, out, err) = kvsetctl(
            "127.0.0.1:1",
            &["snapshot", "inspect", path.to_str().unwrap()],
        )
        .await;
        assert_eq!(code, 2, "{out}{err}");
        assert!(out.is_empty(), "{out}");
        assert!(err.contains(needle), "{err}");
    }
    let mut fresh = ProcessCluster::new(3, FAST_TIMING);
    for path in [&damaged, &truncated] {
        let (code, out) = fresh.run_tool(0, &["restore", path.to_str().unwrap()]);
        assert_ne!(code, 0, "restore refuses {}: {out}", path.display());
    }

    // Restore into kv-0 of a fresh cluster, start it in StatefulSet order.
    let (code, out) = fresh.run_tool(0, &["restore", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    fresh.start_all_ordered().await;
    let (restored_revision, restored_hash) = converged(&fresh).await;
    assert_eq!(restored_revision, revision);
    assert_eq!(
        restored_hash, hash,
        "identical content hash on every member"
    );
    let after = contents(&client_of(&fresh)).await;
    assert_eq!(
        after, before,
        "same keys, values, create/mod revisions and versions"
    );
}
