//! Snapshots: build on one store, install on another, survive restarts; state_hash agrees.

mod store_util;

use kvset_proto::v1::DeleteRequest;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use store_util::*;

/// Writes some keys, deletes one, and leaves a dedup entry.
async fn populate(s: &mut TestStore) {
    for i in 0..50u32 {
        s.put(format!("key/{i:03}").as_bytes(), &i.to_be_bytes())
            .await;
    }
    s.put(b"key/007", b"seven").await;
    s.delete(DeleteRequest {
        key: b"key/010".to_vec(),
        ..Default::default()
    })
    .await;
    s.apply(cmd_id(99, 1, put_cmd(b"dedup", b"once"))).await;
    // a large value goes through sled's blob files
    s.put(b"big", &vec![0xab; 300 * 1024]).await;
}

#[tokio::test]
async fn build_then_install_on_a_fresh_store_gives_the_same_state() {
    let mut a = TestStore::new();
    populate(&mut a).await;
    let want = a.sm.digest().unwrap();
    assert_eq!(want.revision, 54);
    assert_eq!(want.key_count, 51);

    let snap =
        a.sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
    assert_eq!(snap.meta.last_log_id, a.sm.last_applied());
    let current = a.sm.get_current_snapshot().await.unwrap().expect("stored");
    assert_eq!(current.meta, snap.meta);
    assert_eq!(current.snapshot.get_ref(), snap.snapshot.get_ref());
    assert_eq!(a.sm.snapshot_meta(), Some(snap.meta.clone()));

    let mut b = TestStore::new();
    b.put(b"only-on-b", b"x").await;
    let mut data = b.sm.begin_receiving_snapshot().await.unwrap();
    *data = *snap.snapshot;
    b.sm.install_snapshot(&snap.meta, data).await.unwrap();

    assert_eq!(b.sm.digest().unwrap(), want);
    assert_eq!(b.sm.state_hash().unwrap(), a.sm.state_hash().unwrap());
    assert_eq!(b.sm.get(b"only-on-b").unwrap(), None);
    assert_eq!(b.sm.key_count(), 51);
    assert_eq!(b.sm.dedup_clients(), 1);
    assert_eq!(
        b.sm.applied_state().await.unwrap(),
        a.sm.applied_state().await.unwrap()
    );

    // the dedup table came along: a retry is answered from memory on b too
    b.next_index = a.next_index;
    let retry = b.apply(cmd_id(99, 1, put_cmd(b"dedup", b"once"))).await;
    assert_eq!(retry.revision, 53);
    assert_eq!(b.sm.revision(), 54);

    // and b keeps going from there, like a would
    let (rev, _) = b.put(b"after", b"1").await;
    assert_eq!(rev, 55);

    // everything, including the current snapshot, survives a restart
    let path = b.path().to_path_buf();
    let sm_digest = b.sm.digest().unwrap();
    let TestStore { dir, store, sm, .. } = b;
    drop((store, sm));
    let reopened = reopen(&path);
    let mut sm = reopened.state_machine();
    assert_eq!(sm.digest().unwrap(), sm_digest);
    let current = sm.get_current_snapshot().await.unwrap().expect("kept");
    assert_eq!(current.meta, snap.meta);
    drop(dir);
}

#[tokio::test]
async fn the_builder_captures_the_state_at_the_time_it_was_asked_for() {
    let mut a = TestStore::new();
    populate(&mut a).await;
    let at_capture = a.sm.digest().unwrap();
    let mut builder = a.sm.get_snapshot_builder().await;
    // openraft applies concurrently with building
    a.put(b"late", b"write").await;
    let snap = builder.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id, at_capture.last_applied);

    let mut c = TestStore::new();
    c.sm.install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert_eq!(c.sm.digest().unwrap(), at_capture);
    assert_eq!(c.sm.get(b"late").unwrap(), None);
}

#[tokio::test]
async fn replicas_applying_the_same_log_agree_on_the_hash() {
    let mut a = TestStore::new();
    let mut b = TestStore::new();
    let commands: Vec<_> = (0..30u8)
        .map(|i| cmd(put_cmd(&[b'k', i % 7], &[i])))
        .collect();
    // different batching, same log
    a.apply_batch(commands.clone()).await;
    for c in commands {
        b.apply(c).await;
    }
    assert_eq!(a.sm.digest().unwrap(), b.sm.digest().unwrap());

    // one more write on a only: the hashes differ
    a.put(b"k\x00", b"different").await;
    assert_ne!(a.sm.state_hash().unwrap(), b.sm.state_hash().unwrap());
    // and the same write on b makes them equal again
    b.put(b"k\x00", b"different").await;
    assert_eq!(a.sm.state_hash().unwrap(), b.sm.state_hash().unwrap());
    assert_eq!(a.sm.state_hash().unwrap().len(), 64);
}

#[tokio::test]
async fn a_damaged_snapshot_is_refused_and_changes_nothing() {
    let mut a = TestStore::new();
    populate(&mut a).await;
    let snap =
        a.sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

    let mut b = TestStore::new();
    b.put(b"mine", b"1").await;
    let before = b.sm.digest().unwrap();
    let mut bytes = snap.snapshot.into_inner();
    bytes.truncate(bytes.len() / 2);
    let result =
        b.sm.install_snapshot(&snap.meta, Box::new(std::io::Cursor::new(bytes)))
            .await;
    assert!(result.is_err());
    assert_eq!(b.sm.digest().unwrap(), before);
    assert!(b.sm.get_current_snapshot().await.unwrap().is_none());
}
