//! kvsetctl, in process, against the SDK's fake members (`client/tests/fake/mod.rs`, shared by
//! path so both crates test against one fake): every command's output and exit code, without
//! spawning a process or a real cluster. The golden transcripts in `tests/golden/` cover the
//! binary against real members.

#[path = "../../client/tests/fake/mod.rs"]
mod fake;

use std::time::Duration;

use fake::{closed_endpoint, Action, FakeCluster};
use kvset_client::Client;
use kvset_proto::v1 as pb;
use kvsetctl::{Cli, Exit, Outcome};
use tonic::Code;

/// An SDK client with short timeouts, for what the test checks behind kvsetctl's back.
fn client(endpoints: &[String]) -> Client {
    Client::builder()
        .endpoints(endpoints)
        .request_timeout(Duration::from_millis(300))
        .retry_deadline(Duration::from_secs(3))
        .connect_timeout(Duration::from_millis(300))
        .backoff(Duration::from_millis(5), Duration::from_millis(50))
        .build()
        .unwrap()
}

async fn ctl(cluster_endpoints: &[String], args: &[&str]) -> Outcome {
    ctl_stdin(cluster_endpoints, args, "").await
}

async fn ctl_stdin(cluster_endpoints: &[String], args: &[&str], stdin: &str) -> Outcome {
    use clap::Parser;
    let endpoints = cluster_endpoints.join(",");
    let mut argv = vec!["kvsetctl", "--endpoints", &endpoints, "--timeout", "1s"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).unwrap();
    kvsetctl::execute(&cli, &mut stdin.as_bytes()).await
}

#[tokio::test]
async fn kvsetctl_commands_and_exit_codes() {
    let cluster = FakeCluster::start(3, &[]).await;
    let eps = cluster.endpoints();

    let out = ctl(&eps, &["put", "greeting", "hello"]).await;
    assert_eq!((out.stdout.as_str(), out.exit), ("OK\n", Exit::Ok));

    let out = ctl(&eps, &["get", "greeting"]).await;
    assert_eq!((out.stdout.as_str(), out.exit), ("hello\n", Exit::Ok));

    let out = ctl(&eps, &["get", "nope"]).await;
    assert_eq!((out.stdout.as_str(), out.exit), ("", Exit::NotFound));
    assert_eq!(out.stderr, "not found: \"nope\"\n");

    let out = ctl(
        &eps,
        &[
            "--consistency",
            "stale",
            "--member",
            "kv-1",
            "get",
            "greeting",
        ],
    )
    .await;
    assert_eq!(out.exit, Exit::Ok);
    assert_eq!(cluster.members[1].calls("get").len(), 1);

    let out = ctl(&eps, &["cas", "greeting", "hello", "hi"]).await;
    assert_eq!((out.stdout.as_str(), out.exit), ("OK\n", Exit::Ok));
    let out = ctl(&eps, &["cas", "greeting", "hello", "hey"]).await;
    assert_eq!(out.exit, Exit::NotFound);
    assert_eq!(out.stdout, "FAILED: the current value is \"hi\"\n");
    let out = ctl(&eps, &["cas", "--absent", "fresh", "1"]).await;
    assert_eq!(out.exit, Exit::Ok);
    let out = ctl(&eps, &["cas", "--absent", "fresh", "x", "y"]).await;
    assert_eq!(out.exit, Exit::InvalidInput);

    let txn = r#"{"compare":[{"key":"fresh","op":"=","value":"1"}],
                  "success":[{"put":{"key":"fresh","value":"2"}},{"get":{"key":"greeting"}}]}"#;
    let out = ctl_stdin(&eps, &["-o", "json", "txn"], txn).await;
    assert_eq!(out.exit, Exit::Ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["succeeded"], true);
    assert_eq!(v["responses"][1]["range"]["kvs"][0]["value"], "hi");
    let out = ctl_stdin(&eps, &["txn"], "{not json").await;
    assert_eq!(out.exit, Exit::InvalidInput);

    let out = ctl(&eps, &["range", "--prefix", "f", "--keys-only"]).await;
    assert_eq!(out.stdout, "KEY\nfresh\n");

    let out = ctl(&eps, &["del", "--prefix", "f"]).await;
    assert_eq!((out.stdout.as_str(), out.exit), ("1\n", Exit::Ok));

    cluster.members[0].default_action(
        "put",
        Action::Fail(Code::InvalidArgument, "value too large"),
    );
    let out = ctl(&eps, &["put", "k", "v"]).await;
    assert_eq!(out.exit, Exit::InvalidInput);
    assert_eq!(out.stderr, "error: invalid argument: value too large\n");

    let out = ctl(&eps, &["-o", "json", "status"]).await;
    assert_eq!(out.exit, Exit::Ok);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["leader"], "kv-0");
    assert_eq!(v["members"].as_array().unwrap().len(), 3);

    let out = ctl(&eps, &["members", "remove", "kv-2"]).await;
    assert_eq!(out.exit, Exit::Ok, "{}", out.stderr);
    let out = ctl(&eps, &["members", "promote", "kv-7"]).await;
    assert_eq!(out.exit, Exit::NotFound);
}

#[tokio::test]
async fn kvsetctl_reports_an_unreachable_cluster() {
    let dead = vec![closed_endpoint().await];
    let out = ctl(&dead, &["get", "a"]).await;
    assert_eq!(out.exit, Exit::Unavailable);
    assert!(
        out.stderr.starts_with("error: no kvset member answered at"),
        "{}",
        out.stderr
    );
    let out = ctl(&dead, &["status"]).await;
    assert_eq!(out.exit, Exit::Unavailable);
    assert!(out.stdout.contains("unknown"));
}

#[tokio::test]
async fn status_json_reports_every_member() {
    // kv-2 is in the membership but not running; only kv-0 is configured (like a Service).
    let cluster = FakeCluster::start(3, &[2]).await;
    let status = client(&[cluster.members[0].endpoint()]).status_all().await;
    let json = kvsetctl::output::status_json(&status);
    assert_eq!(json["leader"], "kv-0");
    let rows = json["members"].as_array().unwrap();
    let row0 = &rows[0];
    assert_eq!(row0["name"], "kv-0");
    assert_eq!(row0["ordinal"], 0);
    assert_eq!(row0["endpoint"], cluster.members[0].endpoint());
    assert_eq!(row0["role"], "leader");
    assert_eq!(row0["term"], 2);
    assert_eq!(row0["applied"], 3);
    assert_eq!(row0["healthy"], true);
    let row2 = &rows[2];
    assert_eq!(row2["name"], "kv-2");
    assert_eq!(row2["role"], "unknown");
    assert_eq!(row2["healthy"], false);
    assert_eq!(row2["endpoint"], cluster.members[2].endpoint());
    assert_eq!(row2["error"], "connection refused");
    assert_eq!(row2["lag"], 2, "lag as seen by the leader");
}

#[tokio::test]
async fn snapshot_save_and_inspect() {
    let cluster = FakeCluster::start(2, &[]).await;
    let (kv0, kv1) = (&cluster.members[0], &cluster.members[1]);
    kv0.set_role(pb::Role::Follower);
    kv1.set_role(pb::Role::Leader);
    kv0.default_action(
        "snapshot",
        Action::Redirect(format!("kv-1={}", kv1.endpoint())),
    );
    let data: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let sha = kvset_proto::backup::sha256_hex(&data);
    kv1.serve_snapshot(&data, 4096, &sha, 12);
    let dir = tempfile::tempdir().unwrap();

    // Saved through the leader hint, then inspected offline.
    let eps = vec![kv0.endpoint()];
    let cli_path = dir.path().join("cli.kvset");
    let out = ctl(&eps, &["snapshot", "save", cli_path.to_str().unwrap()]).await;
    assert_eq!(out.exit, Exit::Ok, "{}", out.stderr);
    assert!(out.stdout.contains(&sha), "{}", out.stdout);
    let out = ctl(
        &eps,
        &[
            "-o",
            "json",
            "snapshot",
            "inspect",
            cli_path.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.exit, Exit::Ok, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["keys"], 12);
    assert_eq!(v["sha256"], sha.as_str());
    assert_eq!(v["member"], "kv-1");

    // A damaged stream (the checksum does not match the data): exit 4, no file left behind.
    kv1.serve_snapshot(&data, 4096, &kvset_proto::backup::sha256_hex(b"other"), 12);
    let damaged = dir.path().join("damaged.kvset");
    let out = ctl(&eps, &["snapshot", "save", damaged.to_str().unwrap()]).await;
    assert_eq!(out.exit, Exit::Other, "{out:?}");
    assert!(out.stderr.contains("checksum mismatch"), "{}", out.stderr);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["cli.kvset"], "no damaged or temporary file");
}

#[tokio::test]
async fn kvsetctl_status_flags_a_member_of_another_cluster() {
    let cluster = FakeCluster::start(2, &[]).await;
    cluster.members[1].set_cluster_id("other-cluster");
    let out = ctl(&cluster.endpoints(), &["status"]).await;
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("answered as a member of cluster") && text.contains("refusing its answer"),
        "one of the two answers is refused as another cluster's:\n{text}"
    );
    // The refused member is listed as not healthy (whichever answered second: the probes run
    // concurrently, and the first answer decides which cluster this kvsetctl talks to).
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.trim_end().ends_with("false"))
            .count(),
        1,
        "{text}"
    );
}

/// `status --watch --count N`: N frames, each a header with the time and the status table
/// (table output), or one JSON object per line (`-o json`); a fixed clock makes the frames
/// exact.
#[tokio::test]
async fn status_watch_draws_frames() {
    use kvsetctl::watch_status::{watch, WatchOptions};
    use std::time::{Duration, UNIX_EPOCH};
    let cluster = FakeCluster::start(3, &[2]).await;
    let eps = cluster.endpoints();
    let c = client(&eps);
    let fixed = || UNIX_EPOCH + Duration::from_secs(3600 * 12 + 3);
    let table_opts = WatchOptions {
        interval: Duration::from_millis(20),
        count: Some(3),
        format: kvsetctl::OutputFormat::Table,
        clear: false,
    };
    let mut out = Vec::new();
    let frames = watch(&c, &table_opts, &mut out, &fixed, std::future::pending())
        .await
        .unwrap();
    assert_eq!(frames, 3);
    let text = String::from_utf8(out).unwrap();
    let one = kvsetctl::watch_status::frame(&c.status_all().await, &table_opts, fixed());
    assert!(
        one.starts_with("Every 20ms: kvsetctl status    12:00:03 UTC\n\nNAME  ORDINAL"),
        "{one}"
    );
    assert_eq!(text, [one.clone(), one.clone(), one].join("\n"));
    assert!(!text.contains('\x1b'), "no screen clearing into a pipe");

    // JSON lines, three of them, each a whole status object with the time.
    let json_opts = WatchOptions {
        format: kvsetctl::OutputFormat::Json,
        ..table_opts
    };
    let mut out = Vec::new();
    watch(&c, &json_opts, &mut out, &fixed, std::future::pending())
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["leader"], "kv-0");
        assert_eq!(v["members"].as_array().unwrap().len(), 3);
        assert_eq!(v["time_unix_ms"], 43_203_000u64);
    }

    // Through the command line: --count bounds it; --interval and --count need --watch.
    let out = ctl(
        &eps,
        &["status", "--watch", "--interval", "10ms", "--count", "2"],
    )
    .await;
    assert_eq!(out.exit, Exit::Ok);
    assert_eq!(out.stdout.matches("Every 10ms: kvsetctl status").count(), 2);
    use clap::Parser;
    assert!(Cli::try_parse_from(["kvsetctl", "status", "--count", "2"]).is_err());

    // Until interrupted: the stop future ends it.
    let mut out = Vec::new();
    let opts = WatchOptions {
        count: None,
        ..json_opts
    };
    let frames = watch(
        &c,
        &opts,
        &mut out,
        &fixed,
        tokio::time::sleep(Duration::from_millis(150)),
    )
    .await
    .unwrap();
    assert!((1..=20).contains(&frames), "{frames}");
}

#[tokio::test]
async fn kvsetctl_watch_prints_one_json_object_per_event() {
    let cluster = FakeCluster::start(1, &[]).await;
    let eps = cluster.endpoints();
    let c = client(&eps);
    c.put("app/a", "1").await.unwrap();
    // From revision 1: the history replays, so nothing races the watcher's creation.
    let out = ctl(
        &eps,
        &[
            "-o", "json", "watch", "app/", "--prefix", "--rev", "1", "--count", "3",
        ],
    );
    let writes = async {
        let lease = c.grant(20).await.unwrap();
        c.put_with(
            "app/b",
            "\u{ff}x",
            &kvset_client::WriteOptions::new().lease(lease.id),
        )
        .await
        .unwrap();
        c.delete("app/a").await.unwrap();
        lease.id
    };
    let (out, lease) = tokio::join!(out, writes);
    assert_eq!(out.exit, Exit::Ok, "{}", out.stderr);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![
            serde_json::json!({"type": "PUT", "key": "app/a", "value": "1", "mod_revision": 1,
                               "create_revision": 1, "version": 1, "lease": 0}),
            serde_json::json!({"type": "PUT", "key": "app/b", "value": "ÿx", "mod_revision": 2,
                               "create_revision": 2, "version": 1, "lease": lease}),
            serde_json::json!({"type": "DELETE", "key": "app/a", "value": "", "mod_revision": 3,
                               "create_revision": 0, "version": 0, "lease": 0}),
        ],
        "{}",
        out.stdout
    );
    // Table output, with previous values.
    let out = ctl(
        &eps,
        &[
            "watch",
            "app/",
            "--prefix",
            "--rev",
            "1",
            "--count",
            "3",
            "--prev-kv",
        ],
    )
    .await;
    assert_eq!(
        out.stdout,
        "PUT app/a 1 (no previous value)\nPUT app/b ÿx (no previous value)\nDELETE app/a (previous: 1)\n"
    );
    // A compacted start revision: exit 6, the compact revision named.
    cluster.compact(2);
    let out = ctl(&eps, &["watch", "app/a", "--rev", "1", "--count", "1"]).await;
    assert_eq!(out.exit, Exit::Compacted, "{}", out.stderr);
    assert!(
        out.stderr.contains("below revision 2 is compacted"),
        "{}",
        out.stderr
    );
    assert_eq!(Exit::Compacted.code(), 6);
}

#[tokio::test]
async fn kvsetctl_lease_commands_compact_and_revisions() {
    let cluster = FakeCluster::start(1, &[]).await;
    let eps = cluster.endpoints();

    let out = ctl(&eps, &["lease", "grant", "30"]).await;
    assert_eq!(out.exit, Exit::Ok, "{}", out.stderr);
    let id: i64 = out.stdout.trim_end().parse().expect("the id alone");
    assert_eq!(out.stdout, format!("{id}\n"));
    let out = ctl(&eps, &["-o", "json", "lease", "grant", "40"]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"id": id + 1, "ttl": 40}));

    let lease = id.to_string();
    let out = ctl(&eps, &["put", "svc/a", "1", "--lease", &lease]).await;
    assert_eq!((out.stdout.as_str(), out.exit), ("OK\n", Exit::Ok));
    let out = ctl(&eps, &["-o", "json", "get", "svc/a"]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["kv"]["lease"], serde_json::json!(id));
    // The hex form of the id works too.
    let hex = format!("0x{id:x}");
    let out = ctl(&eps, &["lease", "ttl", &hex, "--keys"]).await;
    assert_eq!(
        (out.stdout.as_str(), out.exit),
        (
            format!("lease {id} expires in 29s (granted 30s)\nkeys: svc/a\n").as_str(),
            Exit::Ok
        )
    );
    let out = ctl(&eps, &["-o", "json", "lease", "ttl", &lease, "--keys"]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"id": id, "ttl": 29, "granted_ttl": 30, "keys": ["svc/a"]})
    );
    let out = ctl(&eps, &["lease", "list"]).await;
    assert_eq!(
        out.stdout,
        format!(
            "ID     GRANTED_TTL  KEYS\n{id}  30s          1\n{}  40s          0\n",
            id + 1
        )
    );
    let out = ctl(&eps, &["lease", "revoke", &lease]).await;
    assert_eq!(
        (out.stdout.as_str(), out.exit),
        (format!("lease {id} revoked\n").as_str(), Exit::Ok)
    );
    assert_eq!(ctl(&eps, &["get", "svc/a"]).await.exit, Exit::NotFound);
    for args in [
        vec!["lease", "revoke", lease.as_str()],
        vec!["lease", "ttl", lease.as_str()],
        vec!["put", "k", "v", "--lease", lease.as_str()],
    ] {
        let out = ctl(&eps, &args).await;
        assert_eq!(out.exit, Exit::NotFound, "{args:?}: {}", out.stderr);
    }
    // keep-alive ends with exit 1 when the lease is gone.
    let out = ctl(&eps, &["lease", "keep-alive", &lease]).await;
    assert_eq!(out.exit, Exit::NotFound, "{}", out.stderr);
    assert!(
        out.stderr.contains("expired or was revoked"),
        "{}",
        out.stderr
    );
    // Bad ids and TTLs are usage errors.
    for bad in [
        vec!["lease", "grant", "0"],
        vec!["lease", "revoke", "abc"],
        vec!["put", "k", "v", "--lease", "-1"],
    ] {
        let mut argv = vec!["kvsetctl"];
        argv.extend(bad.iter());
        assert!(
            <Cli as clap::Parser>::try_parse_from(argv).is_err(),
            "{bad:?}"
        );
    }

    // compact and --rev.
    let c = client(&eps);
    for v in ["1", "2", "3"] {
        c.put("k", v).await.unwrap();
    }
    let now = c
        .get_response("k", &Default::default())
        .await
        .unwrap()
        .header
        .revision;
    let out = ctl(&eps, &["compact", &(now - 1).to_string()]).await;
    assert_eq!(
        (out.stdout, out.exit),
        (
            format!(
                "compacted: history at and below revision {} is gone\n",
                now - 1
            ),
            Exit::Ok
        )
    );
    let out = ctl(&eps, &["-o", "json", "compact", &(now - 1).to_string()]).await;
    assert_eq!(
        out.exit,
        Exit::Compacted,
        "already compacted: {}",
        out.stderr
    );
    let out = ctl(&eps, &["get", "k", "--rev", &(now - 2).to_string()]).await;
    assert_eq!(out.exit, Exit::Compacted, "{}", out.stderr);
    let out = ctl(
        &eps,
        &["range", "--prefix", "k", "--rev", &(now + 5).to_string()],
    )
    .await;
    assert_eq!(out.exit, Exit::InvalidInput, "{}", out.stderr);
    let out = ctl(&eps, &["get", "k", "--rev", &now.to_string()]).await;
    assert_eq!((out.stdout.as_str(), out.exit), ("3\n", Exit::Ok));
}

#[tokio::test]
async fn kvsetctl_lock_runs_the_command_and_elect_observes() {
    let cluster = FakeCluster::start(1, &[]).await;
    let eps = cluster.endpoints();
    let out = ctl(
        &eps,
        &[
            "lock",
            "jobs",
            "--",
            "sh",
            "-c",
            "echo \"$KVSET_LOCK_KEY $KVSET_LOCK_REV\" >&2; exit 3",
        ],
    )
    .await;
    assert_eq!(out.exit, Exit::Command(3), "{}", out.stderr);
    assert_eq!(out.exit.code(), 3);
    let c = client(&eps);
    let leases = c.leases().await.unwrap();
    assert!(
        leases.is_empty(),
        "the lock's lease was revoked: {leases:?}"
    );
    let keys: Vec<kvset_client::KeyValue> = futures::TryStreamExt::try_collect(c.prefix("jobs/"))
        .await
        .unwrap();
    assert!(keys.is_empty(), "the lock key is gone: {keys:?}");
    let out = ctl(&eps, &["lock", "jobs", "--", "/nonexistent/cmd"]).await;
    assert_eq!(out.exit, Exit::Command(127), "{}", out.stderr);
    assert!(c.leases().await.unwrap().is_empty());

    // elect NAME VALUE: prints the value once elected and holds the leadership until its
    // lease ends (here: expired by the cluster once the value was printed), then exits 4.
    let printed = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut live = Recorder {
        text: Vec::new(),
        printed: printed.clone(),
    };
    let elect = async {
        use clap::Parser;
        let endpoints = eps.join(",");
        let cli = Cli::try_parse_from([
            "kvsetctl",
            "--endpoints",
            &endpoints,
            "--timeout",
            "1s",
            "elect",
            "svc",
            "me",
        ])
        .unwrap();
        kvsetctl::execute_live(&cli, &mut "".as_bytes(), &mut live).await
    };
    let expire = async {
        tokio::time::timeout(Duration::from_secs(5), printed.notified())
            .await
            .expect("elected and printed within 5 s");
        let leader = kvset_client::Election::new(&c, "svc")
            .leader()
            .await
            .unwrap()
            .expect("a leader");
        assert_eq!(leader.value, b"me");
        cluster.expire(leader.lease);
    };
    let (out, ()) = tokio::join!(elect, expire);
    assert_eq!(out.exit, Exit::Other, "{}", out.stderr);
    assert_eq!(live.text, b"me\n");
    assert!(out.stderr.contains("lost the leadership"), "{}", out.stderr);
}

/// A live-output writer that records what kvsetctl printed and says when it printed.
struct Recorder {
    text: Vec<u8>,
    printed: std::sync::Arc<tokio::sync::Notify>,
}

impl std::io::Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.printed.notify_one();
        Ok(())
    }
}
