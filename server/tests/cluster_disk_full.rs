//! A full disk stops a member cleanly, and the cluster recovers without a person.
//!
//! Each member's data directory can sit on its own small tmpfs mount made by the test (root
//! needed; without root the test skips loudly, and fails under `CI=true`). Writes of 64 KiB
//! values fill the small filesystems. What must happen (and what did not, before): a member whose
//! disk is full stops serving at once (UNAVAILABLE with the cause, never a lingering zombie that
//! probes call healthy) and exits non-zero, so its supervisor restarts it; the members with room
//! keep serving; once space returns and the member restarts, it catches up and converges, and no
//! acknowledged write is lost.
//!
//! The space quota (`node/quota.rs`) keeps it from coming to that: with the default quota (a
//! share of each small filesystem), the NOSPACE alarm trips before any disk is full, writes that
//! add data are refused with RESOURCE_EXHAUSTED while reads and deletes work, and deleting keys
//! plus `kvsetctl alarm disarm` brings writes back without losing an acknowledged one.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{get, ProcessCluster, FAST_TIMING};
use kvset_proto::v1::{
    request_op, Consistency, DeleteRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use kvset_tests::testkit::run_kvsetctl;

/// The fast timing, with the space quota off (the tests of a really full disk).
fn no_quota() -> Vec<&'static str> {
    let mut args = FAST_TIMING.to_vec();
    args.push("--quota-bytes=0");
    args
}

/// A tmpfs of `mb` MiB mounted on `dir`, unmounted on drop.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, mb: u64) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs on {}", dir.display());
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Gives the filesystem more room, keeping its contents (space returns).
    fn grow(&self, mb: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={mb}m")])
            .arg(&self.dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {}", self.dir.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// True when this process may mount filesystems; else skips (or fails under CI).
fn can_mount() -> bool {
    kvset_tests::tooling::root_or_skip("the disk-full tests (tmpfs mounts)")
}

const VALUE_BYTES: usize = 64 * 1024;

fn value(i: usize) -> String {
    let mut v = format!("{i:08}-");
    v.extend(std::iter::repeat_n('x', VALUE_BYTES - v.len()));
    v
}

/// Puts `disk-{n}` through `via` until `stop` says so or `limit` puts were tried; returns the
/// indexes whose put was acknowledged. Each put has a short deadline so a stuck member does not
/// stall the loop.
async fn fill(
    c: &mut ProcessCluster,
    via: &[usize],
    limit: usize,
    mut stop: impl FnMut(&mut ProcessCluster) -> bool,
) -> Vec<usize> {
    let mut acked = Vec::new();
    for n in 0..limit {
        if stop(c) {
            break;
        }
        let i = via[n % via.len()];
        let mut kv = c.kv(i);
        let put = kv.put(PutRequest {
            key: format!("disk-{n:05}").into(),
            value: value(n).into(),
            ..Default::default()
        });
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), put).await {
            acked.push(n);
        }
    }
    acked
}

/// Every acknowledged key reads back with its value, linearizably, through member `via`.
async fn check_acked(c: &ProcessCluster, via: usize, acked: &[usize]) {
    for &n in acked {
        let key = format!("disk-{n:05}");
        let started = Instant::now();
        let got = loop {
            match get(c, via, &key, Consistency::Linearizable).await {
                Ok(v) => break v,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("get {key}: {e}"),
            }
        };
        assert_eq!(
            got.as_deref().map(|v| &v[..9]),
            Some(format!("{n:08}-").as_str()),
            "acknowledged {key} lost"
        );
    }
}

/// kv-2's disk fills while kv-0 and kv-1 have room: kv-2 stops (non-zero exit, clear log line),
/// the others keep serving, and kv-2 catches up once it has space and is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_full_disk_stops_that_member_cleanly_and_it_recovers() {
    if !can_mount() {
        return;
    }
    // The quota would stop the writes before the disk fills: off, to reach the full disk.
    let mut c = ProcessCluster::new(3, &no_quota());
    let disk = SmallDisk::mount(&c.members[2].spec.data_dir, 24);
    c.start_all_ordered().await;

    // Watch kv-2's liveness probe and Status answer while it fills.
    let probe = tokio::spawn(watch_probes(c.endpoint(2)));
    // Fill until kv-2 exits on its own; bounded by the number of puts.
    let acked = fill(&mut c, &[0, 1], 2_000, |c| !c.members[2].is_running()).await;
    let code = c.wait_exit(2, Duration::from_secs(20));
    let log = c.log(2);
    assert!(
        code.is_some_and(|code| code != 0),
        "kv-2's disk is full: it must exit non-zero so it is restarted (exit: {code:?}); log tail:\n{}",
        tail(&log)
    );
    assert!(
        log.contains("stopping: storage failure"),
        "kv-2 must say why it stops; log tail:\n{}",
        tail(&log)
    );

    let (liveness_failed, status_error) = probe.await.unwrap();
    assert!(
        liveness_failed,
        "kv-2's liveness probe must say NOT_SERVING before it exits"
    );
    let status_error = status_error.expect("Status on kv-2 answered UNAVAILABLE before it exited");
    assert!(
        status_error.contains("storage failure") && status_error.contains("No space left"),
        "Status must name the real cause: {status_error}"
    );

    // The other two keep serving writes and linearizable reads.
    let more = fill(&mut c, &[0, 1], 20, |_| false).await;
    assert_eq!(more.len(), 20, "kv-0 and kv-1 must keep taking writes");

    // Space returns; kv-2 restarts on its volume, catches up and converges.
    disk.grow(512);
    c.start(2);
    c.wait_ready(2, Duration::from_secs(60)).await;
    let last = format!("disk-{:05}", more.last().unwrap());
    common::wait_stale_value(
        &c,
        2,
        &last,
        &value(*more.last().unwrap()),
        Duration::from_secs(60),
    )
    .await;
    check_acked(&c, 2, &acked).await;
    check_acked(&c, 2, &more).await;
}

/// Every member's disk is small and fills under load: the members that run out stop cleanly
/// (once a majority has stopped, the rest can take no more writes, so their disks need not fill:
/// they stay up, not ready, with no leader); after space returns and a restart nothing
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_full_disks_stop_the_cluster_cleanly_and_nothing_acknowledged_is_lost() {
    if !can_mount() {
        return;
    }
    // The quota would stop the writes before the disk fills: off, to reach the full disk.
    let mut c = ProcessCluster::new(3, &no_quota());
    let disks: Vec<SmallDisk> = (0..3)
        .map(|i| SmallDisk::mount(&c.members[i].spec.data_dir, 24))
        .collect();
    c.start_all_ordered().await;

    // Fill until a majority has stopped (bounded).
    let deadline = Instant::now() + Duration::from_secs(120);
    let acked = fill(&mut c, &[0, 1, 2], 3_000, |c| {
        Instant::now() > deadline || (0..3).filter(|&i| !c.members[i].is_running()).count() >= 2
    })
    .await;
    assert!(!acked.is_empty(), "some writes were acknowledged first");
    let mut stopped = 0;
    for i in 0..3 {
        match c.wait_exit(i, Duration::from_secs(5)) {
            Some(code) => {
                assert_ne!(code, 0, "kv-{i} stopped on a full disk: non-zero exit");
                assert!(
                    c.log(i).contains("stopping: storage failure"),
                    "kv-{i} must say why it stops; log tail:\n{}",
                    tail(&c.log(i))
                );
                stopped += 1;
            }
            None => {
                // Still running (its disk never filled: once a majority had stopped it could
                // take no more writes). It must not acknowledge any: no quorum is left.
                let mut kv = c.kv(i);
                let put = kv.put(PutRequest {
                    key: "after-the-majority-stopped".into(),
                    value: "x".into(),
                    ..Default::default()
                });
                let answer = tokio::time::timeout(Duration::from_secs(3), put).await;
                assert!(
                    !matches!(answer, Ok(Ok(_))),
                    "kv-{i} acknowledged a write without a quorum"
                );
            }
        }
    }
    assert!(
        stopped >= 2,
        "a majority stops on full disks (stopped: {stopped})"
    );

    for d in &disks {
        d.grow(512);
    }
    // Restart every member: one still running may be in its own fail-stop drain right now (its
    // disk filled after the check above), and would exit after a check of `is_running`.
    for i in 0..3 {
        if c.members[i].is_running() {
            c.kill(i);
        }
        c.start(i);
    }
    c.wait_leader(Duration::from_secs(60)).await;
    for i in 0..3 {
        c.wait_ready(i, Duration::from_secs(60)).await;
    }
    check_acked(&c, 0, &acked).await;
}

/// Member `i`'s Status, retried for a while: a member busy writing a snapshot on a loaded
/// machine may take longer than one attempt's 2 s.
async fn status_of(c: &ProcessCluster, i: usize) -> kvset_proto::v1::StatusResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = c.status(i).await {
            return s;
        }
        assert!(Instant::now() < deadline, "kv-{i} does not answer Status");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Usage and quota of member `i` as its Status reports them (bytes).
async fn usage_of(c: &ProcessCluster, i: usize) -> (u64, u64) {
    let s = status_of(c, i).await;
    (s.store_usage_bytes, s.quota_bytes)
}

/// `du` of each part of a member's store, for the record.
fn du_store(dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("du -sb {}/store/* | tr '\\n' ' '", dir.display()))
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Bytes used on the filesystem holding `dir` (statvfs), for the record.
fn fs_used(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=used"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

/// Each member has a small disk and the default quota: the NOSPACE alarm trips before a disk
/// is full; puts and Txns with a put are refused with RESOURCE_EXHAUSTED and a message that
/// names the usage, the quota and the way out, on every member; reads, deletes and Txns without
/// a put work. Deleting keys (the alarmed member compacts itself) and `kvsetctl alarm disarm`
/// bring writes back, and every acknowledged write that was not deleted reads back everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_space_quota_stops_growth_before_the_disk_fills_and_recovery_restores_writes() {
    if !can_mount() {
        return;
    }
    const DISK_MB: u64 = 32;
    let mut args = FAST_TIMING.to_vec();
    args.push("--quota-check-ms=300");
    let mut c = ProcessCluster::new(3, &args);
    let _disks: Vec<SmallDisk> = (0..3)
        .map(|i| SmallDisk::mount(&c.members[i].spec.data_dir, DISK_MB))
        .collect();
    c.start_all_ordered().await;
    let (_, quota) = usage_of(&c, 0).await;
    let fs = DISK_MB * 1024 * 1024;
    assert_eq!(
        quota,
        fs / 100 * 30,
        "the default quota is 30% of the data dir's filesystem"
    );

    // Fill until a put is refused for space (bounded: the disks hold about 500 values).
    let mut acked = Vec::new();
    let mut refused = None;
    for n in 0..1_000usize {
        let mut kv = c.kv(n % 2);
        let put = kv.put(PutRequest {
            key: format!("disk-{n:05}").into(),
            value: value(n).into(),
            ..Default::default()
        });
        match tokio::time::timeout(Duration::from_secs(3), put).await {
            Ok(Ok(_)) => acked.push(n),
            Ok(Err(e)) if e.code() == tonic::Code::ResourceExhausted => {
                refused = Some(e.message().to_string());
                break;
            }
            _ => {}
        }
    }
    let refused = refused.unwrap_or_else(|| {
        panic!(
            "no put was refused with RESOURCE_EXHAUSTED after {} acknowledged puts",
            acked.len()
        )
    });
    for want in [
        "NOSPACE alarm raised by kv-",
        "quota",
        "kvsetctl alarm disarm",
    ] {
        assert!(refused.contains(want), "message lacks {want:?}: {refused}");
    }
    for i in 0..3 {
        assert!(
            c.members[i].is_running(),
            "kv-{i} stopped: the quota must trip before a disk is full; log tail:
{}",
            tail(&c.log(i))
        );
    }
    let mut before = Vec::new();
    for i in 0..3 {
        let (usage, _) = usage_of(&c, i).await;
        let used = fs_used(&c.members[i].spec.data_dir);
        eprintln!(
            "kv-{i} at the alarm: quota usage {usage} B, filesystem used {used} B of {fs} B ({} \
             acknowledged 64 KiB puts); {}",
            acked.len(),
            du_store(&c.members[i].spec.data_dir)
        );
        assert!(used < fs, "kv-{i}'s disk is full");
        before.push(usage);
    }

    // Every member knows the alarm and refuses growth; reads, deletes and put-free Txns work.
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..3 {
        while status_of(&c, i).await.alarms.is_empty() {
            assert!(Instant::now() < deadline, "kv-{i} never applied the alarm");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let put = c
            .kv(i)
            .put(PutRequest {
                key: "one-more".into(),
                value: "x".into(),
                ..Default::default()
            })
            .await
            .expect_err("a put under NOSPACE");
        assert_eq!(put.code(), tonic::Code::ResourceExhausted, "kv-{i}: {put}");
        let txn_put = c
            .kv(i)
            .txn(TxnRequest {
                success: vec![RequestOp {
                    request: Some(request_op::Request::Put(PutRequest {
                        key: "one-more".into(),
                        value: "x".into(),
                        ..Default::default()
                    })),
                }],
                ..Default::default()
            })
            .await
            .expect_err("a txn with a put under NOSPACE");
        assert_eq!(txn_put.code(), tonic::Code::ResourceExhausted);
        c.kv(i)
            .txn(TxnRequest {
                success: vec![RequestOp {
                    request: Some(request_op::Request::Range(RangeRequest {
                        start: "disk-".into(),
                        prefix: true,
                        keys_only: true,
                        limit: 1,
                        ..Default::default()
                    })),
                }],
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("a read-only txn via kv-{i}: {e}"));
    }
    check_acked(&c, 2, &acked[acked.len() - 3..]).await;
    let endpoints = c.endpoints().join(",");
    let limit = Duration::from_secs(30);
    let (code, out, err) = run_kvsetctl(&endpoints, &["alarm", "list"], limit).await;
    assert_eq!(code, 0, "alarm list: {err}");
    assert!(out.contains("ALARM NOSPACE raised by kv-"), "{out}");
    let (code, _, err) = run_kvsetctl(&endpoints, &["put", "k", "v"], limit).await;
    assert_eq!(code, 4, "kvsetctl put under NOSPACE exits 4: {err}");
    assert!(err.contains("NOSPACE alarm"), "{err}");

    // Recovery: delete all but the last ten acknowledged keys; every member gets under its
    // quota (the alarmed ones compact themselves), then disarm.
    let keep = &acked[acked.len().saturating_sub(10)..];
    let deleted = c
        .kv(0)
        .delete(DeleteRequest {
            key: "disk-".into(),
            range_end: format!("disk-{:05}", keep[0]).into(),
            ..Default::default()
        })
        .await
        .expect("deletes work under NOSPACE")
        .into_inner();
    // The history still holds the deleted values: compact it to the delete's revision.
    c.kv(1)
        .compact(kvset_proto::v1::CompactRequest {
            revision: deleted.header.expect("header").revision,
        })
        .await
        .expect("compaction works under NOSPACE");
    let deleted = deleted.deleted;
    // Every acknowledged key below the kept ones, plus any put that timed out but was applied.
    let deleted = deleted as usize;
    assert!(
        deleted >= acked.len() - keep.len() && deleted <= keep[0],
        "deleted {deleted} keys"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, was) in before.iter().enumerate() {
        loop {
            // Well below (under the early-compaction mark), so that the puts after the disarm do
            // not trip it again.
            let (usage, quota) = usage_of(&c, i).await;
            if usage < quota / 10 * 7 {
                eprintln!(
                    "kv-{i} after deleting {deleted} keys: quota usage {usage} B (was {} B), \
                     filesystem used {} B; {}",
                    was,
                    fs_used(&c.members[i].spec.data_dir),
                    du_store(&c.members[i].spec.data_dir)
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kv-{i} stays over its quota after the deletes: {usage} of {quota}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (code, out, err) = run_kvsetctl(&endpoints, &["alarm", "disarm"], limit).await;
    assert_eq!(code, 0, "alarm disarm: {out}{err}");
    let mut more = Vec::new();
    for n in 5_000..5_010usize {
        let key = format!("disk-{n:05}");
        common::put_until_ok(&c, n % 3, &key, &value(n), Duration::from_secs(10)).await;
        more.push(n);
    }
    // Several checks later the alarm has not come back, and nothing acknowledged is lost.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..3 {
        let s = status_of(&c, i).await;
        assert!(
            s.alarms.is_empty(),
            "kv-{i}: the alarm came back: {:?}",
            s.alarms
        );
        check_acked(&c, i, keep).await;
        check_acked(&c, i, &more).await;
        assert_eq!(
            get(
                &c,
                i,
                &format!("disk-{:05}", acked[0]),
                Consistency::Linearizable
            )
            .await
            .unwrap(),
            None,
            "deleted keys stay deleted"
        );
    }
}

/// Polls member `endpoint`'s liveness probe and Status RPC until it stops answering (bounded);
/// returns whether liveness said NOT_SERVING and the first UNAVAILABLE message of Status.
async fn watch_probes(endpoint: String) -> (bool, Option<String>) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .unwrap()
        .timeout(Duration::from_secs(1))
        .connect_lazy();
    let mut health = HealthClient::new(channel.clone());
    let mut cluster = kvset_proto::v1::cluster_client::ClusterClient::new(channel);
    let (mut liveness_failed, mut status_error) = (false, None);
    let mut unreachable = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && unreachable < 20 {
        let check = health
            .check(HealthCheckRequest {
                service: "liveness".into(),
            })
            .await;
        match check {
            Ok(r) => {
                unreachable = 0;
                if r.into_inner().status == ServingStatus::NotServing as i32 {
                    liveness_failed = true;
                }
            }
            Err(_) => unreachable += 1,
        }
        if status_error.is_none() {
            if let Err(e) = cluster.status(kvset_proto::v1::StatusRequest {}).await {
                if e.code() == tonic::Code::Unavailable {
                    status_error = Some(e.message().to_string());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (liveness_failed, status_error)
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Writes zeros into `path` until the filesystem is full (ENOSPC); bounded by `max_mb`.
fn fill_up(path: &Path, max_mb: usize) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 1024 * 1024];
    for _ in 0..max_mb {
        if file.write_all(&chunk).is_err() {
            return;
        }
    }
    panic!("the filesystem did not fill within {max_mb} MiB");
}

#[tokio::test]
async fn a_member_does_not_open_its_store_on_a_full_volume_and_starts_once_there_is_room() {
    use kvset_server::config::ServerConfig;
    use kvset_server::identity::{PeerDirectory, PodIdentity};
    use kvset_server::server::{start, ServerError};
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("kv-0");
    let _disk = SmallDisk::mount(&data, 16);
    let config = {
        let peers = PeerDirectory::parse_static("kv-0=127.0.0.1:1/127.0.0.1:2", "kv").unwrap();
        let mut c = ServerConfig::new(PodIdentity::parse("kv-0").unwrap(), peers, data.clone());
        c.client_listen = "127.0.0.1:0".parse().unwrap();
        c.peer_listen = "127.0.0.1:0".parse().unwrap();
        c.metrics_listen = "127.0.0.1:0".parse().unwrap();
        c.cluster_record = "none".parse().unwrap();
        c.quota_bytes = Some(0);
        c
    };

    // A member with data whose volume then filled up (the filler stands for whatever filled it).
    start(config.clone())
        .await
        .expect("first start")
        .shutdown()
        .await;
    let filler = data.join("filler");
    fill_up(&filler, 64);
    let store = data.join("store");
    let before = store_files(&store);

    match start(config.clone()).await {
        Err(ServerError::StorageFailed(why)) => assert!(
            why.contains("free of") && why.contains("Free space on the volume"),
            "the refusal must say what is wrong and what to do: {why}"
        ),
        Err(other) => panic!("expected a storage failure (exit 74), got {other}"),
        Ok(_) => panic!("the member opened its store on a full volume"),
    }
    assert_eq!(
        store_files(&store),
        before,
        "a refused start must not touch the store"
    );

    // Space returns: the member starts with its data. (In one process, the first run's store
    // lock goes only once its last task has been dropped: retry while it is still held.)
    std::fs::remove_file(&filler).expect("free space");
    let deadline = Instant::now() + Duration::from_secs(20);
    let server = loop {
        match start(config.clone()).await {
            Ok(server) => break server,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("start once there is room: {e}"),
        }
    };
    server.shutdown().await;
}

/// Names and sizes of the files under `dir`, sorted.
fn store_files(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read store dir") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push((entry.path(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// `kvsetctl alarm disarm --member kv-N` clears that member's alarm only: the alarms of the
/// members still over their quota stay, and so does the refusal of growth. (The alarms are
/// raised here through `Cluster.Alarm`, as a member over its quota raises its own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disarming_one_member_leaves_the_other_alarms_in_force() {
    use kvset_proto::v1::alarm_request::AlarmAction;
    use kvset_proto::v1::{AlarmRequest, AlarmType};
    let mut c = ProcessCluster::new(3, &no_quota());
    c.start_all_ordered().await;
    for member in [1u64, 2] {
        c.cluster(0)
            .alarm(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: member,
                alarm: AlarmType::Nospace as i32,
                member_name: format!("kv-{member}"),
                usage_bytes: 2_000,
                quota_bytes: 1_000,
                ..Default::default()
            })
            .await
            .expect("raise an alarm");
    }
    let endpoints = c.endpoints().join(",");
    let limit = Duration::from_secs(30);
    let kvsetctl = |args: &'static [&'static str]| run_kvsetctl(&endpoints, args, limit);

    let (code, out, err) = kvsetctl(&["alarm", "disarm", "--member", "kv-1"]).await;
    assert_eq!(code, 0, "alarm disarm --member kv-1: {out}{err}");
    assert!(
        out.starts_with("disarmed 1 alarm(s); 1 still active"),
        "{out}"
    );
    let (code, out, _) = kvsetctl(&["alarm", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("raised by kv-2"),
        "kv-2's alarm must stay: {out}"
    );
    assert!(
        !out.contains("raised by kv-1"),
        "kv-1's alarm must be gone: {out}"
    );
    let (code, _, err) = kvsetctl(&["put", "k", "v"]).await;
    assert_eq!(
        code, 4,
        "growth is still refused while kv-2's alarm stands: {err}"
    );

    let (code, _, err) = kvsetctl(&["alarm", "disarm", "--member", "kv-x"]).await;
    assert_eq!(code, 2, "a member that is not kv-N is a usage error: {err}");
    assert!(err.contains("kv-N"), "{err}");

    let (code, out, err) = kvsetctl(&["alarm", "disarm", "--member", "2"]).await;
    assert_eq!(code, 0, "alarm disarm --member 2: {out}{err}");
    let (code, out, _) = kvsetctl(&["alarm", "list"]).await;
    assert_eq!((code, out.as_str()), (0, "no alarms\n"));
    let (code, _, err) = kvsetctl(&["put", "k", "v"]).await;
    assert_eq!(code, 0, "writes are taken again: {err}");
}
