//! A member whose Raft core dies stops and comes back; it does not stay up as a zombie.
//!
//! openraft runs its core in a task of its own. When that task panics (a bug in the core, or a
//! storage implementation breaking one of its expectations; the chaos soak saw an "index out of
//! bounds" in the core's apply on a member re-joined after a scale-down), the core is gone for
//! good: every Raft call answers "panicked", the peers see the member as unreachable, but the
//! process goes on answering health probes. Nobody restarts it.
//!
//! Here kv-1 runs with the test-only fault `panic-raft-core-when=PATH`: once PATH exists, the
//! next Raft log read (a follower reads its log to apply each committed entry, on the core
//! task) panics. The member must then fail-stop like a member whose storage failed (exit 74,
//! `node::failstop`), and, started again, rejoin and serve the writes it missed.

use std::time::Duration;

use kvset_tests::testkit::{ProcessCluster, FAST_TIMING};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_raft_core_panics_stops_and_comes_back() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    let trigger = c.dir.path().join("panic-kv-1");
    let fault = format!("--fault=panic-raft-core-when={}", trigger.display());
    c.start_with(0, &[]);
    c.wait_ready(0, Duration::from_secs(60)).await;
    c.start_with(1, &[&fault]);
    c.wait_ready(1, Duration::from_secs(60)).await;
    c.start_with(2, &[]);
    c.wait_ready(2, Duration::from_secs(60)).await;
    let client = kvset_client::Client::connect(c.endpoints())
        .await
        .expect("client");
    client.put("before", "1").await.expect("put before");

    // Arm the fault; the next entries kv-1 applies make its core panic.
    std::fs::write(&trigger, b"").expect("arm the fault");
    for i in 0..20 {
        client
            .put(format!("during/{i}"), "x")
            .await
            .expect("the majority still takes writes");
    }
    let code = c.wait_exit(1, Duration::from_secs(30));
    let log = c.log(1);
    assert!(
        log.contains("injected fault panic-raft-core-when"),
        "the fault did not fire:\n{log}"
    );
    assert_eq!(
        code,
        // kvset-server's exit code for a fail-stop (`EXIT_STORAGE_FAILED`, see docs/OPERATIONS.md).
        Some(74),
        "kv-1's core panicked but the member did not stop (a zombie):\n{log}"
    );
    assert!(
        log.contains("the Raft core stopped without saying why"),
        "{log}"
    );

    // Started again (as its supervisor would), it catches up and serves what it missed.
    c.start(1);
    c.wait_ready(1, Duration::from_secs(60)).await;
    let on_kv1 = kvset_client::ReadOptions {
        member: Some("kv-1".into()),
        ..Default::default()
    };
    let got = client
        .get_with("during/19", &on_kv1)
        .await
        .expect("read on kv-1");
    assert_eq!(got.map(|kv| kv.value), Some(b"x".to_vec()));
}

/// The other side of the same check: a core that ends because the member stops in order
/// (SIGTERM) is not a failure. The member exits 0 and says nothing of a stopped core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orderly_stop_is_not_taken_for_a_dead_core() {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    for i in [2, 1] {
        let pid = c.members[i].pid().expect("running") as i32;
        // SAFETY: SIGTERM to a member this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let code = c.wait_exit(i, Duration::from_secs(30));
        let log = c.log(i);
        assert_eq!(code, Some(0), "kv-{i} did not stop cleanly:\n{log}");
        assert!(!log.contains("the Raft core stopped"), "{log}");
    }
}
