//! The SDK (`kvset_client::Client`) against a real three-member cluster of `kvset-server`
//! processes: the leader killed (and restarted) or leaving gracefully under a stream of writes,
//! exactly-once writes when answers are lost, stale reads from a secondary, and leader hints
//! when followers refuse writes. One ignored test reproduces a known server issue (the
//! preferred primary's return under steady writes).
//!
//! Needs the server binary (`cargo build --bins`). Times are printed as `METRIC` lines, never
//! asserted. Every member runs on its own 127.0.0.x address and temporary directory
//! ([`ProcessCluster`]), so these tests run in parallel with the rest of the suite.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvset_client::proto::v1 as pb;
use kvset_client::{Client, Error, ReadOptions, Role, Txn, TxnOp};
use kvset_tests::testkit::{ProcessCluster, FAST_TIMING};

/// Flags for every member: fast elections, plus `extra`.
fn flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    FAST_TIMING
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect()
}

/// A client of all members with the SDK's default settings, except a retry deadline long
/// enough for any failover in a loaded CI machine.
fn client_of(c: &ProcessCluster, members: &[usize]) -> Client {
    Client::builder()
        .endpoints(members.iter().map(|&i| c.endpoint(i)))
        .retry_deadline(Duration::from_secs(30))
        .build()
        .expect("valid endpoints")
}

/// Waits until every running member has applied the leader's commit index and reports the same
/// state hash; panics after `timeout`.
async fn wait_converged(c: &ProcessCluster, members: &[usize], timeout: Duration) {
    let started = Instant::now();
    loop {
        let mut statuses = Vec::new();
        for &i in members {
            statuses.extend(c.status(i).await);
        }
        if statuses.len() == members.len() {
            let commit = statuses.iter().map(|s| s.commit_index).max().unwrap_or(0);
            let same_hash = statuses
                .iter()
                .all(|s| s.state_hash == statuses[0].state_hash);
            if same_hash && statuses.iter().all(|s| s.applied_index >= commit) {
                return;
            }
        }
        assert!(
            started.elapsed() < timeout,
            "members {members:?} did not converge within {timeout:?}; logs in {}",
            c.dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The store revision as the leader reports it.
async fn revision(client: &Client) -> i64 {
    client
        .get_response("__revision_probe__", &ReadOptions::new())
        .await
        .expect("linearizable read")
        .header
        .revision
}

/// How many write answers the members dropped on purpose (`--fault drop-write-responses`).
fn dropped_answers(c: &ProcessCluster) -> usize {
    (0..c.members.len())
        .map(|i| {
            c.log(i)
                .matches("injected fault: dropping the response")
                .count()
        })
        .sum()
}

/// One acknowledged write of a stream.
struct Acked {
    key: String,
    value: String,
    revision: i64,
    member: String,
    term: u64,
    took: Duration,
}

/// A task that writes `stream/NNNN` keys one after the other through one client.
///
/// It writes at least `writes` keys. After that it goes on while `until_served_by` names a
/// member that has not served the last write and the deadline next to it has not passed. Its
/// progress (writes acknowledged so far) is readable while it runs; it returns every
/// acknowledgement, or the first error a caller saw.
struct Stream {
    progress: Arc<AtomicUsize>,
    until_served_by: Arc<std::sync::Mutex<Option<(String, Instant)>>>,
    task: tokio::task::JoinHandle<Result<Vec<Acked>, String>>,
}

impl Stream {
    fn start(client: &Client, writes: usize) -> Stream {
        let progress = Arc::new(AtomicUsize::new(0));
        let until_served_by: Arc<std::sync::Mutex<Option<(String, Instant)>>> = Arc::default();
        let task = {
            let client = client.clone();
            let progress = progress.clone();
            let until_served_by = until_served_by.clone();
            tokio::spawn(async move {
                let mut acked: Vec<Acked> = Vec::with_capacity(writes);
                for n in 0.. {
                    let target = until_served_by.lock().unwrap().clone();
                    let go_on = target.is_some_and(|(member, deadline)| {
                        acked.last().map(|a| &a.member) != Some(&member)
                            && Instant::now() < deadline
                    });
                    if n >= writes && !go_on {
                        break;
                    }
                    let key = format!("stream/{n:04}");
                    let value = format!("value-{n}");
                    let started = Instant::now();
                    let put = client
                        .put(&key, &value)
                        .await
                        .map_err(|e| format!("put {key} failed: {e}"))?;
                    acked.push(Acked {
                        key,
                        value,
                        revision: put.header.revision,
                        member: put.header.member,
                        term: put.header.term,
                        took: started.elapsed(),
                    });
                    progress.store(n + 1, Ordering::SeqCst);
                }
                Ok(acked)
            })
        };
        Stream {
            progress,
            until_served_by,
            task,
        }
    }

    /// Writes acknowledged so far.
    fn done(&self) -> usize {
        self.progress.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` writes are acknowledged.
    async fn wait_for(&self, n: usize) {
        let started = Instant::now();
        while self.done() < n {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the writer is stuck before write {n}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// After the minimum, keep writing until `member` serves a write, at most for `wait`.
    fn continue_until_served_by(&self, member: &str, wait: Duration) {
        *self.until_served_by.lock().unwrap() = Some((member.to_string(), Instant::now() + wait));
    }

    /// Every acknowledgement; panics if an error reached the caller.
    async fn finish(self) -> Vec<Acked> {
        tokio::time::timeout(Duration::from_secs(120), self.task)
            .await
            .expect("the writer finished within 2 minutes")
            .expect("the writer did not panic")
            .unwrap_or_else(|e| panic!("an error reached the caller: {e}"))
    }
}

/// Checks that every acknowledged write of a stream was applied exactly once and in order: one
/// writer on a fresh cluster, so the revisions are consecutive (a write applied twice would
/// leave a gap, a lost one would fail the read-back), and each key reads back (linearizable)
/// with its value, its acknowledged revision and version 1.
async fn verify_stream(client: &Client, acked: &[Acked]) {
    for pair in acked.windows(2) {
        assert!(
            pair[1].revision > pair[0].revision,
            "revision went from {} ({}) to {} ({})",
            pair[0].revision,
            pair[0].key,
            pair[1].revision,
            pair[1].key
        );
    }
    let first = acked[0].revision;
    for (n, a) in acked.iter().enumerate() {
        assert_eq!(
            a.revision,
            first + n as i64,
            "{} was applied more than once or out of order",
            a.key
        );
    }
    for a in acked {
        let kv = client
            .get(&a.key)
            .await
            .unwrap_or_else(|e| panic!("read back {}: {e}", a.key))
            .unwrap_or_else(|| panic!("acknowledged write {} is missing", a.key));
        assert_eq!(kv.value_str(), Some(a.value.as_str()), "{}", a.key);
        assert_eq!(kv.mod_revision, a.revision, "{}", a.key);
        assert_eq!(kv.version, 1, "{} was applied more than once", a.key);
    }
}

/// The slowest write of `writes`: (its index, milliseconds).
fn slowest(writes: &[Acked]) -> (usize, u128) {
    writes
        .iter()
        .enumerate()
        .max_by_key(|(_, a)| a.took)
        .map(|(n, a)| (n, a.took.as_millis()))
        .unwrap_or_default()
}

/// Who served the stream, as runs of (member, term, writes):
/// `[("kv-0", 1, 103), ("kv-2", 2, 197)]`. Each new run is a leadership change.
fn served_by(acked: &[Acked]) -> Vec<(String, u64, usize)> {
    let mut served: Vec<(String, u64, usize)> = Vec::new();
    for a in acked {
        match served.last_mut() {
            Some((m, t, n)) if *m == a.member && *t == a.term => *n += 1,
            _ => served.push((a.member.clone(), a.term, 1)),
        }
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_a_stream_of_writes_is_invisible_to_the_caller() {
    const WRITES: usize = 300;
    /// After the restart of a killed kv-0, writing goes on until kv-0 (the preferred primary)
    /// leads again or this long, so its hand-off also happens under writes.
    const HANDOFF_WAIT: Duration = Duration::from_secs(15);
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    let client = client_of(&c, &[0, 1, 2]);

    let stream = Stream::start(&client, WRITES);
    stream.wait_for(WRITES / 3).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let killed_after = stream.done();
    c.kill(leader);
    stream.wait_for(2 * WRITES / 3).await;
    let restarted_after = stream.done();
    c.start(leader);
    if leader == 0 {
        stream.continue_until_served_by("kv-0", HANDOFF_WAIT);
    }
    let acked = stream.finish().await;
    assert!(acked.len() >= WRITES);
    verify_stream(&client, &acked).await;

    // The restarted member has caught up to the same state.
    c.wait_ready(leader, Duration::from_secs(30)).await;
    wait_converged(&c, &[0, 1, 2], Duration::from_secs(30)).await;

    // Whether kv-0 got leadership back in time is the server's business (not guaranteed under
    // a steady stream of writes; see the printout): reported, not asserted.
    let handed_back = leader == 0 && acked.last().is_some_and(|a| a.member == "kv-0");
    let (failover_at, failover_ms) = slowest(&acked[..restarted_after]);
    let (after_at, after_ms) = slowest(&acked[restarted_after..]);
    println!(
        "METRIC client_failover_gap_ms={failover_ms} at_write={failover_at} \
         (kv-{leader} killed after write {killed_after})"
    );
    println!(
        "METRIC client_after_restart_gap_ms={after_ms} at_write={} \
         (kv-{leader} restarted after write {restarted_after}; {} writes in all; \
         leadership back on kv-0: {handed_back})",
        restarted_after + after_at,
        acked.len()
    );
    println!("served by, in order: {:?}", served_by(&acked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_leaving_gracefully_during_a_stream_of_writes_is_invisible_to_the_caller() {
    // What a rolling update does to the primary: SIGTERM, a hand-off, exit.
    const WRITES: usize = 200;
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    let client = client_of(&c, &[0, 1, 2]);

    let stream = Stream::start(&client, WRITES);
    stream.wait_for(WRITES / 3).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let terminated_after = stream.done();
    let took = tokio::task::block_in_place(|| c.terminate(leader, Duration::from_secs(30)));
    let acked = stream.finish().await;
    verify_stream(&client, &acked).await;
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    wait_converged(&c, &others, Duration::from_secs(30)).await;
    let log = c.log(leader);
    let handed_off = log.contains("leadership handed off");
    let (gap_at, gap_ms) = slowest(&acked);
    println!(
        "METRIC client_graceful_exit_gap_ms={gap_ms} at_write={gap_at} \
         (kv-{leader} got SIGTERM after write {terminated_after}, exited in {} ms; \
         hand-off logged: {handed_off})",
        took.as_millis()
    );
    println!("served by, in order: {:?}", served_by(&acked));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_write_answers_are_retried_with_the_same_request_id_and_applied_once() {
    // Default Raft timing: this test wants no elections, only lost answers.
    let mut c = ProcessCluster::new(3, &["--fault=drop-write-responses=2"]);
    c.start_all_ordered().await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let status = c.status(leader).await.expect("leader status");
    assert_eq!(status.faults, ["drop-write-responses=2"], "the fault is on");
    let client = client_of(&c, &[0, 1, 2]);

    // 1. Puts of distinct keys: every apply bumps the global revision once, so N puts must
    //    move it by exactly N although about every second answer is lost.
    const N: i64 = 20;
    let before = revision(&client).await;
    let dropped_before = dropped_answers(&c);
    for n in 0..N {
        let put = client
            .put(format!("once/{n:02}"), format!("{n}"))
            .await
            .unwrap_or_else(|e| panic!("put once/{n:02}: {e}"));
        assert!(put.header.revision > before);
    }
    let after = revision(&client).await;
    let dropped = dropped_answers(&c) - dropped_before;
    assert!(
        dropped >= (N / 2 - 1) as usize,
        "only {dropped} answers were dropped: the fault did not bite"
    );
    assert_eq!(
        after - before,
        N,
        "{N} puts moved the revision by {}",
        after - before
    );
    for n in 0..N {
        let kv = client.get(format!("once/{n:02}")).await.unwrap().unwrap();
        assert_eq!(kv.version, 1, "once/{n:02} applied more than once");
    }

    // 2. A transaction that appends to one key: a duplicate apply would show in its version.
    const M: i64 = 10;
    let before = revision(&client).await;
    for n in 0..M {
        let r = client
            .txn(Txn::new().and_then([TxnOp::put("appended", format!("{n}"))]))
            .await
            .unwrap_or_else(|e| panic!("txn {n}: {e}"));
        assert!(r.succeeded);
    }
    let kv = client.get("appended").await.unwrap().unwrap();
    assert_eq!(kv.version, M, "{M} appends, version {}", kv.version);
    assert_eq!(kv.value_str(), Some(format!("{}", M - 1).as_str()));
    assert_eq!(revision(&client).await - before, M);
    println!(
        "METRIC exactly_once_dropped_answers={} writes={}",
        dropped_answers(&c) - dropped_before,
        N + M
    );

    // 3. The mechanism, shown with a raw client at the leader: retrying a lost answer with the
    //    same request id applies once; retrying it with a new id (what a client without
    //    request ids does) applies twice.
    let kv = c.kv(leader);
    let client_id = 0x5eed_0000_0000_0001u64;
    let mut sequence = 0u64;
    let put_raw = |key: String, sequence: u64| {
        let request = pb::PutRequest {
            key: key.into_bytes(),
            value: b"raw".to_vec(),
            prev_kv: false,
            request_id: Some(pb::RequestId {
                client_id,
                sequence,
            }),
            lease: 0,
            ignore_lease: Default::default(),
            ignore_value: Default::default(),
        };
        let mut kv = kv.clone();
        async move { kv.put(request).await }
    };
    for (reuse_id, prefix) in [(true, "raw-same-id"), (false, "raw-new-id")] {
        const K: usize = 10;
        let before = revision(&client).await;
        let mut attempts = 0i64;
        let mut lost = 0;
        for n in 0..K {
            sequence += 1;
            loop {
                attempts += 1;
                match put_raw(format!("{prefix}/{n}"), sequence).await {
                    Ok(_) => break,
                    Err(s) if s.message().contains("injected fault") => {
                        lost += 1;
                        if !reuse_id {
                            sequence += 1;
                        }
                    }
                    Err(s) => panic!("raw put failed for another reason than the fault: {s}"),
                }
            }
        }
        let moved = revision(&client).await - before;
        let mut versions = 0;
        for n in 0..K {
            versions += client
                .get(format!("{prefix}/{n}"))
                .await
                .unwrap()
                .unwrap()
                .version;
        }
        assert!(lost > 0, "{prefix}: no answer was lost");
        if reuse_id {
            assert_eq!(moved, K as i64, "{prefix}: same id, applied once");
            assert_eq!(versions, K as i64);
        } else {
            assert_eq!(moved, attempts, "{prefix}: every attempt was applied");
            assert!(versions > K as i64, "{prefix}: some key was written twice");
        }
        println!("{prefix}: {K} writes, {attempts} attempts, {lost} answers lost, revision moved by {moved}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_are_served_by_the_pinned_secondary() {
    // Default Raft timing: kv-0 must stay the leader until the test kills it.
    let mut c = ProcessCluster::new(3, &[]);
    c.start_all_ordered().await;
    assert!(
        c.wait_leader_is(0, Duration::from_secs(10)).await,
        "kv-0 leads"
    );
    let client = client_of(&c, &[0, 1, 2]);
    let stale_kv2 = ReadOptions::stale().on_member("kv-2");

    // A stale read pinned to kv-2 is served by kv-2 and sees the write once kv-2 has applied it.
    let put = client.put("color", "red").await.unwrap();
    let started = Instant::now();
    let mut polls = 0;
    loop {
        polls += 1;
        let r = client.get_response("color", &stale_kv2).await.unwrap();
        assert_eq!(r.header.member, "kv-2");
        assert_eq!(r.header.role, Role::Follower);
        if r.kv.as_ref().and_then(|kv| kv.value_str()) == Some("red") {
            assert!(r.header.revision >= put.header.revision);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "kv-2 never served the write"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "METRIC stale_read_visible_ms={} polls={polls}",
        started.elapsed().as_millis()
    );

    // A linearizable read through kv-2 sees every acknowledged write at once.
    for n in 0..20 {
        let value = format!("v{n}");
        client.put("color", &value).await.unwrap();
        let r = client
            .get_response("color", &ReadOptions::new().on_member("kv-2"))
            .await
            .unwrap();
        assert_eq!(r.header.member, "kv-2");
        assert_eq!(
            r.kv.as_ref().and_then(|kv| kv.value_str()),
            Some(value.as_str())
        );
    }

    // Unpinned stale reads go to a secondary once the leader is known.
    for _ in 0..5 {
        let r = client
            .get_response("color", &ReadOptions::stale())
            .await
            .unwrap();
        assert_ne!(r.header.role, Role::Leader, "served by {}", r.header.member);
    }

    // Without a quorum kv-2 still serves stale reads from its own state; linearizable reads
    // cannot be confirmed and fail within their deadline.
    wait_converged(&c, &[0, 1, 2], Duration::from_secs(10)).await;
    c.kill(0);
    c.kill(1);
    let r = client.get_response("color", &stale_kv2).await.unwrap();
    assert_eq!(r.header.member, "kv-2");
    assert_eq!(r.kv.as_ref().and_then(|kv| kv.value_str()), Some("v19"));
    let err = client
        .get_response(
            "color",
            &ReadOptions::new()
                .on_member("kv-2")
                .timeout(Duration::from_secs(2)),
        )
        .await
        .expect_err("no quorum, no linearizable read");
    assert!(
        matches!(err, Error::Unavailable { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_the_leader_hint_when_followers_refuse_them() {
    let mut c = ProcessCluster::new(3, &flags(&["--forward-writes=false"]));
    c.start_all_ordered().await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let follower = if leader == 2 { 1 } else { 2 };
    let leader_name = format!("kv-{leader}");

    // The follower refuses a write and names the leader.
    let refused = c
        .kv(follower)
        .put(pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("a follower with --forward-writes=false refuses writes");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    let hint = refused
        .metadata()
        .get(kvset_client::proto::LEADER_METADATA_KEY)
        .expect("kvset-leader metadata")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(hint, format!("{leader_name}={}", c.endpoint(leader)));

    // Redirects off: the refusal comes back as NotLeader, naming the leader.
    let strict = Client::builder()
        .endpoints([c.endpoint(follower)])
        .follow_leader(false)
        .build()
        .unwrap();
    match strict.put("k", "v").await {
        Err(Error::NotLeader {
            leader: Some(hint), ..
        }) => assert_eq!(hint.name, leader_name),
        other => panic!("expected NotLeader, got {other:?}"),
    }

    // A client that knows only the follower writes through the leader it learns from the hint.
    let client = client_of(&c, &[follower]);
    let put = client.put("k", "v1").await.unwrap();
    assert_eq!(put.header.member, leader_name);
    let known = client.leader().expect("leader learned from the hint");
    assert_eq!(known.name.as_deref(), Some(leader_name.as_str()));
    assert_eq!(known.endpoint, Some(c.endpoint(leader)));
    assert!(client.endpoints().contains(&c.endpoint(leader)));

    // After the leader dies, the same client finds the new one (directly or through the
    // follower's next hint) and nothing fails.
    for n in 0..10 {
        client.put(format!("before/{n}"), "x").await.unwrap();
    }
    let started = Instant::now();
    c.kill(leader);
    let mut revisions = Vec::new();
    for n in 0..10 {
        let put = client
            .put(format!("after/{n}"), "y")
            .await
            .unwrap_or_else(|e| panic!("write after failover: {e}"));
        assert_ne!(put.header.member, leader_name);
        revisions.push(put.header.revision);
        if n == 0 {
            println!(
                "METRIC hint_failover_write_ms={} new_leader={}",
                started.elapsed().as_millis(),
                put.header.member
            );
        }
    }
    assert!(revisions.windows(2).all(|w| w[1] == w[0] + 1));
    let new_leader = client.leader().and_then(|l| l.name).expect("new leader");
    assert_ne!(new_leader, leader_name);
    let kv = client.get("after/9").await.unwrap().unwrap();
    assert_eq!(kv.version, 1);
}

/// Regression test: while writes keep flowing, kv-0's return as preferred primary must take one
/// leadership change, not a storm of elections. (It used to fail: kv-0 campaigned itself while
/// the leader kept appending, which renewed the followers' lease and kept kv-0 a few entries
/// behind. Now the leader drives the transfer and pauses writes for it: see
/// `server/src/node/leadership.rs`, `transfer_to`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_primary_returns_under_steady_writes_with_one_leadership_change() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    let client = client_of(&c, &[0, 1, 2]);
    let stream = Stream::start(&client, 200);
    stream.wait_for(50).await;
    c.kill(0);
    stream.wait_for(100).await;
    let restarted_after = stream.done();
    c.start(0);
    stream.continue_until_served_by("kv-0", Duration::from_secs(30));
    let acked = stream.finish().await;
    verify_stream(&client, &acked).await;
    let after_restart = served_by(&acked[restarted_after..]);
    println!("served by after the restart, in order: {after_restart:?}");
    assert_eq!(
        acked.last().map(|a| a.member.as_str()),
        Some("kv-0"),
        "kv-0 did not lead again within 30 s of writes"
    );
    assert!(
        after_restart.len() <= 2,
        "the return of kv-0 took {} leadership changes: {after_restart:?}",
        after_restart.len() - 1
    );
}

/// A leader that gets SIGTERM while writes flow hands leadership off (a regression test: it used
/// to ask for a caught-up target once, right after it stopped taking writes, found none with
/// entries still in flight, and left without a hand-off; `server/src/server.rs`,
/// `wait_for_hand_off_target`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_hands_off_on_sigterm_even_under_writes() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    let client = client_of(&c, &[0, 1, 2]);
    let stream = Stream::start(&client, 100);
    stream.wait_for(30).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    tokio::task::block_in_place(|| c.terminate(leader, Duration::from_secs(30)));
    let acked = stream.finish().await;
    verify_stream(&client, &acked).await;
    assert!(
        c.log(leader).contains("leadership handed off"),
        "kv-{leader} exited without handing leadership off; its log ends with:\n{}",
        c.log(leader)
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
