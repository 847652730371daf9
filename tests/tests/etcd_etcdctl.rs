//! etcd's own command-line client, unchanged, against a 3-member kvset cluster: kvset serves
//! etcd's v3 gRPC API beside its own (server `api/etcd`). `etcdctl` comes from Debian's
//! `etcd-client` package (`.ci/run` installs it).
//!
//! Each test drives etcdctl the way a user would and checks its printed output: key-value
//! commands and transactions, a watch that outlives a leader kill, leases that expire only
//! without keep-alives, etcdctl's own lock and election recipes (built on Txn, Watch and
//! leases), and the member and endpoint commands.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvset_tests::testkit::{ProcessCluster, FAST_TIMING};
use kvset_tests::tooling::require_tool;

/// etcdctl, if installed (a failure in CI, a skip elsewhere).
fn have_etcdctl() -> bool {
    require_tool("etcdctl", &["version"], "apt-get install etcd-client")
}

/// Runs `etcdctl ARGS` against `endpoints`, with `stdin` fed in; returns (exit code, stdout,
/// stderr). Bounded by `timeout`.
fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new("timeout")
        .arg("30")
        .arg("etcdctl")
        .arg(format!("--endpoints={endpoints}"))
        .args(["--dial-timeout=3s", "--command-timeout=15s"])
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run etcdctl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// etcdctl that must succeed; returns its stdout.
fn ok(endpoints: &str, args: &[&str]) -> String {
    let (code, out, err) = etcdctl(endpoints, args, None);
    assert_eq!(code, 0, "etcdctl {args:?} failed: {out}{err}");
    out
}

/// A long-running etcdctl whose stdout lines are collected as they come.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(endpoints: &str, args: &[&str]) -> Self {
        let mut child = Command::new("etcdctl")
            .arg(format!("--endpoints={endpoints}"))
            .arg("--dial-timeout=3s")
            .args(args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run etcdctl");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the lines so far (at most `limit`).
    fn wait_for(&self, limit: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if pred(&self.lines()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        pred(&self.lines())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn cluster() -> ProcessCluster {
    let mut c = ProcessCluster::new(3, FAST_TIMING);
    c.start_all_ordered().await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_keys_ranges_and_transactions() {
    if !have_etcdctl() {
        return;
    }
    let c = cluster().await;
    let ep = c.endpoints().join(",");
    assert_eq!(ok(&ep, &["put", "foo", "bar"]).trim(), "OK");
    assert_eq!(ok(&ep, &["get", "foo"]), "foo\nbar\n");
    for (k, v) in [("p/a", "1"), ("p/b", "2"), ("p/c", "3")] {
        ok(&ep, &["put", k, v]);
    }
    let first_rev = {
        let json = ok(&ep, &["get", "p/a", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["kvs"][0]["mod_revision"].as_i64().unwrap()
    };
    ok(&ep, &["put", "p/a", "changed"]);
    assert_eq!(
        ok(&ep, &["get", "--prefix", "p/"]),
        "p/a\nchanged\np/b\n2\np/c\n3\n"
    );
    assert_eq!(
        ok(&ep, &["get", "p/a", &format!("--rev={first_rev}")]),
        "p/a\n1\n"
    );
    assert_eq!(
        ok(&ep, &["get", "--prefix", "p/", "--keys-only"]),
        "p/a\n\np/b\n\np/c\n\n"
    );
    // The count is the whole range's, whatever the limit.
    let count = ok(&ep, &["get", "--prefix", "p/", "--limit=1", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&count).unwrap();
    assert_eq!(v["count"], 3, "{count}");
    assert_eq!(v["more"], true, "{count}");
    assert_eq!(v["kvs"].as_array().unwrap().len(), 1, "{count}");
    // Sorted by modification, newest first; and a limit.
    assert_eq!(
        ok(
            &ep,
            &[
                "get",
                "--prefix",
                "p/",
                "--sort-by=MODIFY",
                "--order=DESCEND",
                "--limit=2"
            ]
        ),
        "p/a\nchanged\np/c\n3\n"
    );
    // "\0" range end: every key from p/b on.
    assert_eq!(
        ok(&ep, &["get", "p/b", "--from-key", "--keys-only"])
            .lines()
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>(),
        vec!["p/b", "p/c"]
    );
    // A transaction from standard input (etcdctl's non-interactive format).
    let txn = "mod(\"foo\") > \"0\"\n\nput foo bar2\n\nput foo never\n\n";
    let (code, out, err) = etcdctl(&ep, &["txn"], Some(txn));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "SUCCESS\n\nOK\n", "{out}{err}");
    assert_eq!(ok(&ep, &["get", "foo", "--print-value-only"]), "bar2\n");
    let txn = "value(\"foo\") = \"nope\"\n\nput foo never\n\nget foo\n\n";
    let (code, out, _) = etcdctl(&ep, &["txn"], Some(txn));
    assert_eq!(code, 0);
    assert_eq!(out, "FAILURE\n\nfoo\nbar2\n");
    // Delete a prefix; compact; a compacted read fails with etcd's error.
    assert_eq!(ok(&ep, &["del", "--prefix", "p/"]).trim(), "3");
    assert_eq!(ok(&ep, &["get", "--prefix", "p/"]), "");
    let head: serde_json::Value =
        serde_json::from_str(&ok(&ep, &["get", "foo", "-w", "json"])).unwrap();
    let now = head["header"]["revision"].as_i64().unwrap();
    ok(&ep, &["compact", &now.to_string()]);
    let (code, out, err) = etcdctl(&ep, &["get", "foo", &format!("--rev={first_rev}")], None);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("required revision has been compacted"),
        "{err}"
    );
    // Membership and status.
    let members = ok(&ep, &["member", "list"]);
    for name in ["kv-0", "kv-1", "kv-2"] {
        assert!(members.contains(name), "{members}");
    }
    assert_eq!(members.lines().count(), 3, "{members}");
    let status = ok(&ep, &["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 3, "{status}");
    let leaders: std::collections::HashSet<_> =
        list.iter().map(|e| e["Status"]["leader"].clone()).collect();
    assert_eq!(
        leaders.len(),
        1,
        "every member names the same leader: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_survives_a_leader_kill() {
    if !have_etcdctl() {
        return;
    }
    let mut c = cluster().await;
    let ep = c.endpoints().join(",");
    let json = ok(&ep, &["put", "w/0", "v0", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let start = v["header"]["revision"].as_i64().unwrap();
    let watch = Running::start(&ep, &["watch", "--prefix", "w/", &format!("--rev={start}")]);
    assert!(
        watch.wait_for(Duration::from_secs(15), |l| l.iter().any(|x| x == "v0")),
        "the watch replays from its revision: {:?}",
        watch.lines()
    );
    for i in 1..=5 {
        ok(&ep, &["put", &format!("w/{i}"), &format!("v{i}")]);
    }
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    c.kill(leader);
    for i in 6..=10 {
        let (mut code, mut out, mut err) = (1, String::new(), String::new());
        for _ in 0..10 {
            (code, out, err) = etcdctl(&ep, &["put", &format!("w/{i}"), &format!("v{i}")], None);
            if code == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(code, 0, "put after the failover: {out}{err}");
    }
    let want: Vec<String> = (0..=10).map(|i| format!("v{i}")).collect();
    let complete = watch.wait_for(Duration::from_secs(30), |l| {
        l.iter().filter(|x| x.starts_with('v')).count() >= want.len()
    });
    let values: Vec<String> = watch
        .lines()
        .into_iter()
        .filter(|x| x.starts_with('v'))
        .collect();
    assert!(complete, "the watch saw {values:?}");
    assert_eq!(
        values, want,
        "every event once, in order, across the leader kill"
    );
    assert!(watch
        .lines()
        .iter()
        .all(|l| l == "PUT" || l.starts_with("w/") || l.starts_with('v')));
}

/// The lease id etcdctl prints in `lease NNN granted with TTL(Ns)`.
fn granted_id(out: &str) -> String {
    out.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no lease id in {out:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_leases_expire_only_without_keep_alives() {
    if !have_etcdctl() {
        return;
    }
    let c = cluster().await;
    let ep = c.endpoints().join(",");
    let out = ok(&ep, &["lease", "grant", "3"]);
    assert!(out.contains("granted with TTL(3s)"), "{out}");
    let id = granted_id(&out);
    assert_eq!(
        ok(&ep, &["put", "--lease", &id, "leased", "x"]).trim(),
        "OK"
    );
    let ttl = ok(&ep, &["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(3s)") && ttl.contains("leased"),
        "{ttl}"
    );
    assert!(ok(&ep, &["lease", "list"]).contains(&id));
    // Kept alive for longer than its TTL: the key stays.
    {
        let keep = Running::start(&ep, &["lease", "keep-alive", &id]);
        std::thread::sleep(Duration::from_secs(6));
        assert!(
            keep.lines()
                .iter()
                .any(|l| l.contains("keepalived with TTL(3)")),
            "{:?}",
            keep.lines()
        );
        assert_eq!(ok(&ep, &["get", "leased", "--print-value-only"]), "x\n");
    }
    // Without keep-alives it expires, and its key goes with it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok(&ep, &["get", "leased"]).is_empty() {
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(300));
    }
    let ttl = ok(&ep, &["lease", "timetolive", &id]);
    assert!(ttl.contains("already expired"), "{ttl}");
    // Revoke.
    let id2 = granted_id(&ok(&ep, &["lease", "grant", "60"]));
    ok(&ep, &["put", "--lease", &id2, "revoked", "y"]);
    assert!(ok(&ep, &["lease", "revoke", &id2]).contains("revoked"));
    assert_eq!(ok(&ep, &["get", "revoked"]), "");
    let (code, _, err) = etcdctl(&ep, &["put", "--lease", &id2, "k", "v"], None);
    assert_ne!(code, 0);
    assert!(err.contains("requested lease not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_and_elect_recipes_work() {
    if !have_etcdctl() {
        return;
    }
    let c = cluster().await;
    let ep = c.endpoints().join(",");
    // Two lock holders append to one file; their critical sections never interleave.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let section = |who: &str| {
        format!(
            "echo start-{who} >> {l}; sleep 1; echo end-{who} >> {l}",
            l = log.display()
        )
    };
    let spawn = |who: &str| {
        Command::new("timeout")
            .args([
                "40",
                "etcdctl",
                &format!("--endpoints={ep}"),
                "lock",
                "mutex",
                "--",
            ])
            .args(["sh", "-c", &section(who)])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a"), spawn("b"));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    for pair in lines.chunks(2) {
        let who = pair[0].trim_start_matches("start-");
        assert_eq!(
            pair[1],
            format!("end-{who}"),
            "sections interleaved: {lines:?}"
        );
    }
    // Election: a candidate wins, an observer sees its proclamation.
    let candidate = Running::start(&ep, &["elect", "election", "first"]);
    assert!(
        candidate.wait_for(Duration::from_secs(15), |l| l.iter().any(|x| x == "first")),
        "the candidate never won: {:?}",
        candidate.lines()
    );
    let observer = Running::start(&ep, &["elect", "-l", "election"]);
    assert!(
        observer.wait_for(Duration::from_secs(15), |l| l.iter().any(|x| x == "first")),
        "the observer never saw the leader: {:?}",
        observer.lines()
    );
}
