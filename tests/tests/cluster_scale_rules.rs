//! The scale-down rules on real member processes, with the desired size in a file
//! (`--replicas-from=file:…`, as the local launcher does):
//!
//! - the leader removes members at or above the size that are gone (killed, so they could not
//!   leave by themselves), highest ordinal first; a member below the size that is down is never
//!   removed (that is a restart);
//! - a member at or above the size that leads hands leadership off and leaves on SIGTERM;
//! - a member whose volume says it departed comes back, when the size grows again, as a new
//!   member; one that was removed while it was dead (no departed marker: its volume still holds
//!   a voter's Raft state) never comes back as a voter: with the size unreadable it refuses to
//!   start, and once the size includes it again it marks its volume departed, exits, and its
//!   next start joins as a new member.

use std::time::{Duration, Instant};

use kvset_proto::v1::MembersRequest;
use kvset_tests::testkit::{ProcessCluster, FAST_TIMING};

fn cluster(size: u64, extra: &[&str]) -> (ProcessCluster, std::path::PathBuf) {
    let mut args: Vec<&str> = FAST_TIMING.to_vec();
    args.extend_from_slice(extra);
    let c = ProcessCluster::new(size, &args);
    let file = c.dir.path().join("replicas");
    std::fs::write(&file, format!("{size}\n")).unwrap();
    (c, file)
}

fn flag(file: &std::path::Path) -> String {
    format!("--replicas-from=file:{}", file.display())
}

async fn start_all(c: &mut ProcessCluster, file: &std::path::Path) {
    let flag = flag(file);
    for i in 0..c.members.len() {
        c.start_with(i, &[&flag]);
        c.wait_ready(i, Duration::from_secs(60)).await;
    }
}

async fn member_ids(c: &ProcessCluster, via: usize) -> Vec<u64> {
    let Ok(resp) = c.cluster(via).members(MembersRequest {}).await else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = resp.into_inner().members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    ids
}

async fn wait_ids(c: &ProcessCluster, via: usize, want: &[u64], timeout: Duration) -> Vec<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let ids = member_ids(c, via).await;
        if ids == want || Instant::now() >= deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_removes_gone_members_above_the_size_and_never_below() {
    let (mut c, file) = cluster(5, &[]);
    start_all(&mut c, &file).await;
    assert_eq!(member_ids(&c, 0).await, [0, 1, 2, 3, 4]);

    // The set shrinks to 3. kv-3 is gone (killed, so it could not leave by itself) but kv-4,
    // the highest, still runs: it will leave by itself when stopped, and nothing is removed
    // before it (highest ordinal first).
    std::fs::write(&file, "3\n").unwrap();
    c.kill(3);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(member_ids(&c, 0).await, [0, 1, 2, 3, 4], "{}", c.log(0));

    // kv-4 is killed too: the leader removes kv-4, then kv-3 (each keeps a live quorum).
    c.kill(4);
    let ids = wait_ids(&c, 0, &[0, 1, 2], Duration::from_secs(40)).await;
    assert_eq!(ids, [0, 1, 2], "{}", c.log(0));
    let log = c.log(0);
    let kv4 = log.find("removing member member=kv-4");
    let kv3 = log.find("removing member member=kv-3");
    assert!(
        matches!((kv4, kv3), (Some(a), Some(b)) if a < b),
        "kv-4 was not removed before kv-3:\n{log}"
    );

    // kv-2 is down but below the size: a restart. It stays a member, however long it is down.
    c.kill(2);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(member_ids(&c, 0).await, [0, 1, 2], "{}", c.log(0));
    c.start_with(2, &[&flag(&file)]);
    c.wait_ready(2, Duration::from_secs(60)).await;
    assert_eq!(member_ids(&c, 0).await, [0, 1, 2]);

    // kv-4 was removed while it was dead, so its volume has no departed marker: it still holds
    // the Raft state of a voter, and must never come back as the voter it was (its votes and
    // log are from before its removal). While the set's size cannot be read (manual
    // membership), nothing says it is wanted: it refuses to start and says how to bring it back.
    std::fs::write(&file, "not a size\n").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.start_with(4, &[&flag(&file)]);
    let code = c.wait_exit(4, Duration::from_secs(60));
    let log = c.log(4);
    assert!(
        matches!(code, Some(code) if code != 0),
        "kv-4 did not refuse to start on its old volume (exit {code:?}):\n{log}"
    );
    assert!(
        log.contains("kv-4 was removed from cluster")
            && log.contains("delete its data (in Kubernetes: the PVC data-kv-4)"),
        "{log}"
    );
    assert_eq!(member_ids(&c, 0).await, [0, 1, 2], "{}", c.log(0));

    // When the set grows back to include it, no manual step: it marks its volume departed and
    // exits, and its next start (the kubelet's or the launcher's restart) joins as a new member.
    std::fs::write(&file, "5\n").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.start_with(4, &[&flag(&file)]);
    let code = c.wait_exit(4, Duration::from_secs(60));
    let log = c.log(4);
    assert!(
        matches!(code, Some(code) if code != 0)
            && log.contains("its volume is now marked departed"),
        "kv-4 did not mark its volume departed (exit {code:?}):\n{log}"
    );
    assert_eq!(member_ids(&c, 0).await, [0, 1, 2], "{}", c.log(0));
    c.start_with(4, &[&flag(&file)]);
    let ids = wait_ids(&c, 0, &[0, 1, 2, 4], Duration::from_secs(60)).await;
    assert_eq!(ids, [0, 1, 2, 4], "{}", c.log(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_away_members_leave_on_sigterm_even_when_leading_and_come_back_new() {
    // No preference for kv-0, so that leadership can sit on a member that is scaled away.
    let (mut c, file) = cluster(3, &["--prefer-ordinal-zero=false"]);
    start_all(&mut c, &file).await;
    // Move leadership off kv-0: stop it, let kv-1 or kv-2 take over, bring it back.
    c.terminate(0, Duration::from_secs(30));
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    assert_ne!(leader, 0);
    c.start_with(0, &[&flag(&file)]);
    c.wait_ready(0, Duration::from_secs(60)).await;

    // Scale to 1, highest ordinal first: each leaves on SIGTERM, the leader among them too.
    std::fs::write(&file, "1\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in [2usize, 1] {
        let was_leader = c
            .status(i)
            .await
            .is_some_and(|s| s.leader_id == Some(i as u64));
        let took = c.terminate(i, Duration::from_secs(30));
        assert!(
            took < Duration::from_secs(25),
            "kv-{i} took {took:?} to leave"
        );
        let log = c.log(i);
        assert!(
            log.contains("left the cluster (scale-down): removal committed"),
            "kv-{i} (leader: {was_leader}) did not leave:\n{log}"
        );
        assert!(c.members[i]
            .spec
            .data_dir
            .join("kvset-departed.json")
            .exists());
    }
    assert_eq!(wait_ids(&c, 0, &[0], Duration::from_secs(10)).await, [0]);

    // Grow back: the departed volumes rejoin as new members.
    std::fs::write(&file, "3\n").unwrap();
    for i in [1usize, 2] {
        c.start_with(i, &[&flag(&file)]);
        c.wait_ready(i, Duration::from_secs(60)).await;
        assert!(!c.members[i]
            .spec
            .data_dir
            .join("kvset-departed.json")
            .exists());
    }
    assert_eq!(
        wait_ids(&c, 0, &[0, 1, 2], Duration::from_secs(30)).await,
        [0, 1, 2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_readable_size_nobody_leaves() {
    let (mut c, file) = cluster(3, &[]);
    start_all(&mut c, &file).await;
    // The size cannot be read: manual membership, and `Status` says so.
    std::fs::write(&file, "garbled\n").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = c.status(2).await.expect("status");
    assert_eq!(status.membership_mode, "manual");
    c.terminate(2, Duration::from_secs(30));
    assert!(!c.log(2).contains("left the cluster"), "{}", c.log(2));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(member_ids(&c, 0).await, [0, 1, 2]);
    // Readable again: the mode says where the size comes from.
    std::fs::write(&file, "3\n").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.status(0).await.expect("status").membership_mode, "file");
}
