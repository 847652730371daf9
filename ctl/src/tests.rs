//! Unit tests of kvsetctl's argument parsing and rendering.

use std::time::Duration;

use clap::Parser;

use super::args::{ordinal_of, parse_duration};
use super::output::*;
use super::*;
use kvset_client::{
    ClusterStatus, GetResponse, Header, KeyValue, MemberHealth, PutResponse, RangePage, Role,
    TxnOpResponse, TxnResponse,
};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("kvsetctl").chain(args.iter().copied()))
}

#[test]
fn global_flags_and_defaults() {
    std::env::remove_var("KVSET_ENDPOINTS");
    let cli = parse(&["get", "a"]).unwrap();
    assert_eq!(
        cli.endpoints,
        "127.0.0.1:7379,127.0.0.1:7380,127.0.0.1:7381"
    );
    assert_eq!(cli.output, OutputFormat::Table);
    assert_eq!(cli.consistency, ConsistencyArg::Linearizable);
    assert_eq!(cli.timeout, Duration::from_secs(10));
    let cli = parse(&[
        "get",
        "a",
        "-o",
        "json",
        "--consistency",
        "stale",
        "--member",
        "kv-1",
        "--timeout",
        "500ms",
        "--endpoints",
        "a:1,b:2",
    ])
    .unwrap();
    assert_eq!(cli.output, OutputFormat::Json);
    assert_eq!(cli.consistency, ConsistencyArg::Stale);
    assert_eq!(cli.member.as_deref(), Some("kv-1"));
    assert_eq!(cli.timeout, Duration::from_millis(500));
    assert_eq!(cli.endpoints, "a:1,b:2");
    assert!(matches!(cli.command, Command::Get { ref key, rev: None } if key == "a"));
}

#[test]
fn subcommands_parse() {
    match parse(&["del", "p/", "--prefix"]).unwrap().command {
        Command::Del {
            key,
            prefix,
            range_end,
            ..
        } => {
            assert_eq!((key.as_str(), prefix, range_end), ("p/", true, None))
        }
        other => panic!("{other:?}"),
    }
    assert!(parse(&["del", "a", "--prefix", "--range-end", "b"]).is_err());
    match parse(&["range", "a", "c", "--limit", "5", "--keys-only"])
        .unwrap()
        .command
    {
        Command::Range {
            start,
            end,
            prefix,
            limit,
            keys_only,
            rev,
        } => {
            assert_eq!(rev, None);
            assert_eq!(start.as_deref(), Some("a"));
            assert_eq!(end.as_deref(), Some("c"));
            assert_eq!((prefix, limit, keys_only), (None, Some(5), true));
        }
        other => panic!("{other:?}"),
    }
    assert!(parse(&["range", "a", "--prefix", "p"]).is_err());
    match parse(&["cas", "k", "old", "new"]).unwrap().command {
        Command::Cas {
            key,
            values,
            absent,
        } => {
            assert_eq!(
                (key.as_str(), values, absent),
                ("k", vec!["old".into(), "new".into()], false)
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse(&["cas", "--absent", "k", "new"]).unwrap().command,
        Command::Cas { absent: true, ref values, .. } if values.len() == 1
    ));
    assert!(parse(&["cas", "k"]).is_err());
    assert!(parse(&["cas", "k", "a", "b", "c"]).is_err());
    match parse(&[
        "members",
        "add",
        "kv-3",
        "--client-addr",
        "h:1",
        "--peer-addr",
        "h:2",
        "--no-wait",
    ])
    .unwrap()
    .command
    {
        Command::Members {
            command: MembersCommand::Add {
                name, id, no_wait, ..
            },
        } => {
            assert_eq!((name.as_str(), id, no_wait), ("kv-3", None, true))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse(&["members", "remove", "2", "--any-order"])
            .unwrap()
            .command,
        Command::Members {
            command: MembersCommand::Remove {
                any_order: true,
                ..
            }
        }
    ));
    assert!(matches!(
        parse(&["status"]).unwrap().command,
        Command::Status { watch: false, .. }
    ));
    // Usage errors exit with 2, like invalid input.
    assert_eq!(parse(&["frobnicate"]).unwrap_err().exit_code(), 2);
    assert_eq!(
        parse(&["get", "a", "-o", "yaml"]).unwrap_err().exit_code(),
        2
    );
}

#[test]
fn help_documents_exit_codes() {
    let help = parse(&["--help"]).unwrap_err().to_string();
    for needle in [
        "Exit codes:",
        "0  success",
        "1  not found",
        "2  invalid input",
        "3  unavailable",
        "4  any other",
        "KVSET_ENDPOINTS",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn durations_and_ordinals() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("5 parsecs").is_err());
    assert!(parse_duration("").is_err());
    assert_eq!(ordinal_of("kv-12"), Some(12));
    assert_eq!(ordinal_of("kv"), None);
}

#[test]
fn errors_map_to_exit_codes() {
    use kvset_client::{Cause, CauseKind};
    let cause = Cause {
        endpoint: "h:1".into(),
        kind: CauseKind::Refused,
        code: tonic::Code::Unavailable,
        message: "no leader".into(),
    };
    assert_eq!(
        Exit::for_error(&Error::InvalidArgument("x".into())),
        Exit::InvalidInput
    );
    assert_eq!(
        Exit::for_error(&Error::NotFound("x".into())),
        Exit::NotFound
    );
    assert_eq!(
        Exit::for_error(&Error::FailedPrecondition("x".into())),
        Exit::Other
    );
    assert_eq!(
        Exit::for_error(&Error::Unavailable {
            endpoints: vec![],
            last_cause: cause.clone(),
            reached_member: true,
            may_have_applied: false
        }),
        Exit::Unavailable
    );
    assert_eq!(
        Exit::for_error(&Error::Timeout {
            after: Duration::from_secs(1),
            last_cause: Some(cause),
            may_have_applied: false
        }),
        Exit::Unavailable
    );
    assert_eq!(Exit::NotFound.code(), 1);
    assert_eq!(Exit::Other.code(), 4);
    assert_eq!(
        Exit::for_error(&Error::TlsConfig("x".into())),
        Exit::InvalidInput
    );
    let file = |message: &str| (String::from("b.kvset"), message.to_string());
    let (path, message) = file("damaged");
    assert_eq!(
        Exit::for_error(&Error::Backup { path, message }),
        Exit::InvalidInput
    );
    let (path, message) = file("disk full");
    assert_eq!(Exit::for_error(&Error::Io { path, message }), Exit::Other);
    // A write refused by a NOSPACE alarm: "any other error" (4), the message on stderr.
    assert_eq!(
        Exit::for_error(&Error::NoSpace("NOSPACE alarm raised by kv-1".into())),
        Exit::Other
    );
}

#[test]
fn bytes_are_shown_escaped() {
    assert_eq!(display_bytes(b"plain"), "plain");
    assert_eq!(display_bytes("h\u{e9}".as_bytes()), "h\u{e9}");
    assert_eq!(display_bytes(b"a\xffb\xc3"), "a\\xffb\\xc3");
    assert_eq!(cell(b"two\nlines\t"), "two\\nlines\\t");
    let v = kv_json(&KeyValue {
        key: b"k\xfe".to_vec(),
        value: b"ok".to_vec(),
        ..KeyValue::default()
    });
    assert_eq!(v["key"], "k\\xfe");
    assert_eq!(v["key_hex"], "6bfe");
    assert!(v.get("value_hex").is_none());
}

fn header() -> Header {
    Header {
        cluster_id: "c1".into(),
        member: "kv-0".into(),
        ordinal: 0,
        role: Role::Leader,
        term: 2,
        revision: 17,
    }
}

#[test]
fn renders_kv_results() {
    let kv = KeyValue {
        key: b"a".to_vec(),
        value: b"x".to_vec(),
        create_revision: 3,
        mod_revision: 5,
        version: 2,
        lease: 0,
    };
    let put = PutResponse {
        header: header(),
        prev_kv: Some(kv.clone()),
    };
    assert_eq!(
        render_put(&put, OutputFormat::Table),
        "OK\nprevious value: x\n"
    );
    let get = GetResponse {
        header: header(),
        kv: Some(kv.clone()),
    };
    assert_eq!(render_get(&get, OutputFormat::Table), "x\n");
    let json: serde_json::Value =
        serde_json::from_str(&render_get(&get, OutputFormat::Json)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "header": {"cluster_id": "c1", "member": "kv-0", "ordinal": 0, "role": "leader", "term": 2, "revision": 17},
            "kv": {"key": "a", "value": "x", "create_revision": 3, "mod_revision": 5, "version": 2, "lease": 0}
        })
    );
    let missing = GetResponse {
        header: header(),
        kv: None,
    };
    assert_eq!(render_get(&missing, OutputFormat::Table), "");
    let json: serde_json::Value =
        serde_json::from_str(&render_get(&missing, OutputFormat::Json)).unwrap();
    assert!(json["kv"].is_null());

    let kvs = vec![
        kv.clone(),
        KeyValue {
            key: b"bb".to_vec(),
            value: b"y\nz".to_vec(),
            ..KeyValue::default()
        },
    ];
    let last = RangePage {
        header: header(),
        more: true,
        count: 9,
        ..RangePage::default()
    };
    assert_eq!(
        render_range(&kvs, &last, false, OutputFormat::Table),
        "KEY  VALUE\na    x\nbb   y\\nz\n(2 of 9 keys shown; raise --limit for more)\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&render_range(&kvs, &last, false, OutputFormat::Json)).unwrap();
    assert_eq!(json["count"], 9);
    assert_eq!(json["more"], true);
    assert_eq!(json["kvs"][1]["value"], "y\nz");
}

#[test]
fn renders_txn_and_cas() {
    let failed = TxnResponse {
        header: header(),
        succeeded: false,
        responses: vec![TxnOpResponse::Range {
            kvs: vec![KeyValue {
                key: b"a".to_vec(),
                value: b"now".to_vec(),
                ..KeyValue::default()
            }],
            more: false,
            count: 1,
        }],
    };
    assert_eq!(
        render_cas(&failed, cas_current(&failed), OutputFormat::Table),
        "FAILED: the current value is \"now\"\n"
    );
    let absent = TxnResponse {
        responses: vec![TxnOpResponse::Range {
            kvs: vec![],
            more: false,
            count: 0,
        }],
        ..failed.clone()
    };
    assert_eq!(
        render_cas(&absent, cas_current(&absent), OutputFormat::Table),
        "FAILED: the key does not exist\n"
    );
    let json: serde_json::Value = serde_json::from_str(&render_cas(
        &failed,
        cas_current(&failed),
        OutputFormat::Json,
    ))
    .unwrap();
    assert_eq!(json["succeeded"], false);
    assert_eq!(json["current"]["value"], "now");

    let ok = TxnResponse {
        header: header(),
        succeeded: true,
        responses: vec![
            TxnOpResponse::Put { prev_kv: None },
            TxnOpResponse::Delete {
                deleted: 2,
                prev_kvs: vec![],
            },
        ],
    };
    assert_eq!(
        render_txn(&ok, OutputFormat::Table),
        "SUCCESS\n\nput: OK\n\ndelete: 2\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&render_txn(&ok, OutputFormat::Json)).unwrap();
    assert_eq!(
        json["responses"][0],
        serde_json::json!({"put": {"prev_kv": null}})
    );
    assert_eq!(
        json["responses"][1],
        serde_json::json!({"delete": {"deleted": 2, "prev_kvs": []}})
    );
}

fn sample_status() -> ClusterStatus {
    ClusterStatus {
        leader: Some("kv-0".into()),
        members: vec![
            MemberHealth {
                name: Some("kv-0".into()),
                ordinal: Some(0),
                endpoint: "127.0.0.1:7379".into(),
                role: Role::Leader,
                term: Some(2),
                applied: Some(17),
                revision: Some(9),
                state_hash: Some("d21df6781dfc9ecf".into()),
                lag: Some(0),
                voter: Some(true),
                reachable: true,
                ready: true,
                healthy: true,
                error: None,
            },
            MemberHealth {
                name: Some("kv-2".into()),
                ordinal: Some(2),
                endpoint: "127.0.0.1:7381".into(),
                voter: Some(true),
                error: Some("connection refused".into()),
                ..MemberHealth::default()
            },
        ],
        alarms: Vec::new(),
        ..ClusterStatus::default()
    }
}

#[test]
fn status_json_has_the_documented_shape() {
    let v = status_json(&sample_status());
    assert_eq!(
        v,
        serde_json::json!({
            "alarms": [],
            "authorization": null,
            "compact_revision": null,
            "leader": "kv-0",
            "membership": {"mode": null, "desired_replicas": null},
            "members": [
                {"name": "kv-0", "ordinal": 0, "endpoint": "127.0.0.1:7379", "role": "leader",
                 "term": 2, "applied": 17, "healthy": true, "revision": 9, "lag": 0,
                 "voter": true, "reachable": true, "ready": true, "error": null,
                 "state_hash": "d21df6781dfc9ecf"},
                {"name": "kv-2", "ordinal": 2, "endpoint": "127.0.0.1:7381", "role": "unknown",
                 "term": null, "applied": null, "healthy": false, "revision": null, "lag": null,
                 "voter": true, "reachable": false, "ready": false, "error": "connection refused",
                 "state_hash": null}
            ]
        })
    );
}

#[test]
fn status_table() {
    assert_eq!(
        render_status(&sample_status(), OutputFormat::Table),
        "NAME  ORDINAL  ENDPOINT        ROLE     TERM  APPLIED  REVISION  LAG  HEALTHY\n\
         kv-0  0        127.0.0.1:7379  leader   2     17       9         0    true\n\
         kv-2  2        127.0.0.1:7381  unknown  -     -        -         -    false\n\
         \n\
         kv-2 (127.0.0.1:7381): connection refused\n"
    );
}

/// The member's authorization setting is a line under the status table and a field of the
/// status JSON, as is the compact revision (JSON only).
#[test]
fn authorization_and_compact_revision_in_status() {
    let off = ClusterStatus {
        authorization: Some("off".into()),
        compact_revision: Some(12),
        ..sample_status()
    };
    let table = render_status(&off, OutputFormat::Table);
    assert!(
        table.contains("HEALTHY\n") && table.contains("false\nauthorization: off\n\nkv-2"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&render_status(&off, OutputFormat::Json)).unwrap();
    assert_eq!(json["authorization"], "off");
    assert_eq!(json["compact_revision"], 12);
}

/// Manual membership is a note under the status table and a field of the status JSON; a
/// membership that follows the set's size adds no line to the table.
#[test]
fn membership_mode_in_status() {
    let manual = ClusterStatus {
        membership_mode: Some("manual".into()),
        ..sample_status()
    };
    let table = render_status(&manual, OutputFormat::Table);
    assert!(
        table.contains("\n\nmembership: manual (the set's size is not known"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&render_status(&manual, OutputFormat::Json)).unwrap();
    assert_eq!(
        json["membership"],
        serde_json::json!({"mode": "manual", "desired_replicas": null})
    );
    let following = ClusterStatus {
        membership_mode: Some("statefulset".into()),
        desired_replicas: Some(3),
        ..sample_status()
    };
    assert_eq!(
        render_status(&following, OutputFormat::Table),
        render_status(&sample_status(), OutputFormat::Table)
    );
    let json: serde_json::Value =
        serde_json::from_str(&render_status(&following, OutputFormat::Json)).unwrap();
    assert_eq!(json["membership"]["desired_replicas"], 3);
}

/// An active alarm shows in the status table (first among the problems), in the status JSON
/// (an added field; nothing renamed), and in `alarm list`.
#[test]
fn alarms_in_status_and_alarm_list() {
    let mut status = sample_status();
    status.alarms = vec![kvset_client::Alarm {
        member_id: 1,
        member_name: "kv-1".into(),
        kind: kvset_client::AlarmKind::NoSpace,
        usage_bytes: 64_172_851,
        quota_bytes: 60 * 1024 * 1024,
    }];
    let table = render_status(&status, OutputFormat::Table);
    assert!(
        table.contains(
            "\nALARM NOSPACE raised by kv-1: its store used 61.2 MiB of a 60.0 MiB quota"
        ),
        "{table}"
    );
    assert!(table.contains("kvsetctl alarm disarm"), "{table}");
    let v = status_json(&status);
    assert_eq!(
        v["alarms"],
        serde_json::json!([{"alarm": "NOSPACE", "member": "kv-1", "member_id": 1,
                            "usage_bytes": 64_172_851u64, "quota_bytes": 62_914_560u64}])
    );
    assert_eq!(v["members"], status_json(&sample_status())["members"]);
    assert_eq!(
        crate::output::render_alarms(&[], OutputFormat::Table),
        "no alarms\n"
    );
    let list: serde_json::Value = serde_json::from_str(&crate::output::render_alarms(
        &status.alarms,
        OutputFormat::Json,
    ))
    .unwrap();
    assert_eq!(list["alarms"], v["alarms"]);
}

#[test]
fn members_rendering() {
    let members = vec![kvset_client::Member {
        id: 3,
        name: "kv-3".into(),
        client_addr: "h:7382".into(),
        peer_addr: "h:8382".into(),
        voter: false,
    }];
    assert_eq!(
        render_members(&members, OutputFormat::Table),
        "ID  NAME  CLIENT_ADDR  PEER_ADDR  KIND\n3   kv-3  h:7382       h:8382     learner\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(&render_members(&members, OutputFormat::Json)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"members": [{"id": 3, "name": "kv-3", "client_addr": "h:7382", "peer_addr": "h:8382", "voter": false}]})
    );
}

#[test]
fn health_parses_and_renders() {
    match parse(&[
        "health",
        "--endpoint",
        "a:1,b:2",
        "--endpoint",
        "c:3",
        "--liveness",
    ])
    .unwrap()
    .command
    {
        Command::Health { endpoint, liveness } => {
            assert_eq!(endpoint, ["a:1", "b:2", "c:3"]);
            assert!(liveness);
        }
        other => panic!("{other:?}"),
    }
    match parse(&["health"]).unwrap().command {
        Command::Health { endpoint, liveness } => assert!(endpoint.is_empty() && !liveness),
        other => panic!("{other:?}"),
    }
    use kvset_client::{EndpointHealth, HealthStatus};
    let checks = vec![
        EndpointHealth {
            endpoint: "127.0.0.1:7379".into(),
            service: "readiness".into(),
            status: HealthStatus::Serving,
            error: None,
        },
        EndpointHealth {
            endpoint: "127.0.0.1:7380".into(),
            service: "readiness".into(),
            status: HealthStatus::Unreachable,
            error: Some("connection refused".into()),
        },
    ];
    assert_eq!(
        render_health(&checks, "readiness", OutputFormat::Table),
        "ENDPOINT        SERVICE    STATUS\n\
         127.0.0.1:7379  readiness  SERVING\n\
         127.0.0.1:7380  readiness  UNREACHABLE\n\
         \n\
         127.0.0.1:7380: connection refused\n"
    );
    assert_eq!(
        health_json(&checks, "readiness"),
        serde_json::json!({
            "service": "readiness",
            "healthy": false,
            "endpoints": [
                {"endpoint": "127.0.0.1:7379", "status": "SERVING", "error": null},
                {"endpoint": "127.0.0.1:7380", "status": "UNREACHABLE", "error": "connection refused"}
            ]
        })
    );
    assert_eq!(health_json(&checks[..1], "readiness")["healthy"], true);
}

fn clear_tls_env() {
    for var in ["KVSET_CACERT", "KVSET_CERT", "KVSET_KEY"] {
        std::env::remove_var(var);
    }
}

#[test]
fn tls_flags_and_snapshot_commands_parse() {
    clear_tls_env();
    let cli = parse(&["get", "a"]).unwrap();
    assert_eq!((cli.cacert, cli.cert, cli.tls_key), (None, None, None));
    assert!(tls_options(&parse(&["status"]).unwrap()).is_none());

    // Global: before or after the command, for every command.
    let cli = parse(&["status", "--cacert", "ca.pem"]).unwrap();
    assert_eq!(cli.cacert.as_deref(), Some(std::path::Path::new("ca.pem")));
    let tls = tls_options(&cli).unwrap();
    assert_eq!(tls.ca, kvset_client::Pem::file("ca.pem"));
    assert!(tls.identity.is_none());
    let cli = parse(&[
        "--cacert", "ca.pem", "--cert", "c.pem", "--key", "c.key", "put", "k", "v",
    ])
    .unwrap();
    assert!(matches!(cli.command, Command::Put { ref key, .. } if key == "k"));
    let identity = tls_options(&cli).unwrap().identity.unwrap();
    assert_eq!(identity.cert, kvset_client::Pem::file("c.pem"));
    assert_eq!(identity.key, kvset_client::Pem::file("c.key"));
    // --cert and --key come together, and need --cacert.
    assert!(parse(&["--cacert", "ca.pem", "--cert", "c.pem", "health"]).is_err());
    assert!(parse(&["--cacert", "ca.pem", "--key", "c.key", "health"]).is_err());
    assert!(parse(&["--cert", "c.pem", "--key", "c.key", "health"]).is_err());

    match parse(&["snapshot", "save", "b.kvset"]).unwrap().command {
        Command::Snapshot {
            command: SnapshotCommand::Save { file },
        } => assert_eq!(file, std::path::Path::new("b.kvset")),
        other => panic!("{other:?}"),
    }
    match parse(&["-o", "json", "snapshot", "inspect", "b.kvset"])
        .unwrap()
        .command
    {
        Command::Snapshot {
            command: SnapshotCommand::Inspect { file },
        } => assert_eq!(file, std::path::Path::new("b.kvset")),
        other => panic!("{other:?}"),
    }
    assert!(parse(&["snapshot", "save"]).is_err());
    let help = parse(&["--help"]).unwrap_err().to_string();
    for needle in ["--cacert", "--cert", "--key", "KVSET_CACERT", "snapshot"] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
}

async fn run_cli(args: &[&str]) -> Outcome {
    let cli = parse(args).unwrap();
    execute(&cli, &mut std::io::empty()).await
}

#[tokio::test]
async fn tls_settings_are_checked_before_anything_is_sent() {
    clear_tls_env();
    let out = run_cli(&["--endpoints", "https://localhost:7379", "get", "a"]).await;
    assert_eq!(out.exit, Exit::InvalidInput, "{out:?}");
    assert!(
        out.stderr.contains("https endpoint needs --cacert"),
        "{}",
        out.stderr
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let out = run_cli(&["--cacert", missing.to_str().unwrap(), "status"]).await;
    assert_eq!(out.exit, Exit::InvalidInput, "{out:?}");
    assert!(out.stderr.contains("missing-ca.pem"), "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot read CA bundle"),
        "{}",
        out.stderr
    );

    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "junk").unwrap();
    let out = run_cli(&["--cacert", junk.to_str().unwrap(), "health"]).await;
    assert_eq!(out.exit, Exit::InvalidInput, "{out:?}");
    assert!(
        out.stderr.contains("holds no PEM certificate"),
        "{}",
        out.stderr
    );
}

fn sample_info() -> kvset_client::SnapshotInfo {
    kvset_client::SnapshotInfo {
        header: header(),
        last_log_index: 230,
        last_log_term: 2,
        revision: 221,
        size_bytes: 5432,
        format: 1,
        sha256: "ab".repeat(32),
        keys: 200,
    }
}

#[test]
fn snapshot_rendering() {
    let file = std::path::Path::new("/backups/b.kvset");
    assert_eq!(
        render_snapshot(&sample_info(), file, OutputFormat::Table),
        format!(
            "file            /backups/b.kvset\n\
             cluster_id      c1\n\
             member          kv-0\n\
             revision        221\n\
             last_log_index  230\n\
             last_log_term   2\n\
             keys            200\n\
             size_bytes      5432\n\
             format          1\n\
             sha256          {}\n",
            "ab".repeat(32)
        )
    );
    let v: serde_json::Value =
        serde_json::from_str(&render_snapshot(&sample_info(), file, OutputFormat::Json)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "file": "/backups/b.kvset",
            "header": header_json(&header()),
            "cluster_id": "c1",
            "member": "kv-0",
            "revision": 221,
            "last_log_index": 230,
            "last_log_term": 2,
            "keys": 200,
            "size_bytes": 5432,
            "format": 1,
            "sha256": "ab".repeat(32),
        })
    );
}

#[tokio::test]
async fn snapshot_inspect_verifies_offline() {
    clear_tls_env();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.kvset");
    let data = b"opaque snapshot data".to_vec();
    let mut info = sample_info();
    info.size_bytes = data.len() as u64;
    kvset_proto::backup::write(std::fs::File::create(&good).unwrap(), &info.to_pb(), &data)
        .unwrap();
    // No cluster is needed: the endpoints are not even valid.
    let out = run_cli(&[
        "--endpoints",
        "https://nowhere:1",
        "snapshot",
        "inspect",
        good.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.exit, Exit::Ok, "{out:?}");
    assert!(out.stdout.contains("keys            200"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&kvset_proto::backup::sha256_hex(&data)),
        "{}",
        out.stdout
    );

    let damaged = dir.path().join("damaged.kvset");
    let mut bytes = std::fs::read(&good).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&damaged, &bytes).unwrap();
    let truncated = dir.path().join("truncated.kvset");
    std::fs::write(&truncated, &bytes[..bytes.len() - 3]).unwrap();
    let missing = dir.path().join("missing.kvset");
    for (path, needle) in [
        (&damaged, "checksum mismatch"),
        (&truncated, "truncated"),
        (&missing, "cannot read"),
    ] {
        let out = run_cli(&["snapshot", "inspect", path.to_str().unwrap()]).await;
        assert_eq!(out.exit, Exit::InvalidInput, "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        assert!(out.stderr.starts_with("error: "), "{out:?}");
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
}

#[test]
fn history_and_lease_errors_have_their_exit_codes() {
    assert_eq!(
        Exit::for_error(&Error::Compacted {
            compact_revision: 4
        }),
        Exit::Compacted
    );
    assert_eq!(Exit::Compacted.code(), 6);
    assert_eq!(Exit::PermissionDenied.code(), 5);
    assert_eq!(
        Exit::for_error(&Error::RevisionOutOfRange("future".into())),
        Exit::InvalidInput
    );
    assert_eq!(Exit::Command(42).code(), 42);
    let help = Cli::try_parse_from(["kvsetctl", "--help"])
        .unwrap_err()
        .to_string();
    assert!(help.contains("6  compacted"), "{help}");
    assert!(help.contains("5  permission denied"), "{help}");
}

#[test]
fn watch_lease_lock_elect_and_compact_parse() {
    match parse(&[
        "watch",
        "p/",
        "--prefix",
        "--rev",
        "7",
        "--prev-kv",
        "--count",
        "2",
    ])
    .unwrap()
    .command
    {
        Command::Watch {
            key,
            prefix,
            rev,
            prev_kv,
            count,
        } => assert_eq!(
            (key.as_str(), prefix, rev, prev_kv, count),
            ("p/", true, Some(7), true, Some(2))
        ),
        other => panic!("{other:?}"),
    }
    assert!(parse(&["watch", "k", "--rev", "0"]).is_err());
    assert!(parse(&["watch", "k", "--count", "0"]).is_err());
    match parse(&["lock", "jobs", "--ttl", "5", "--", "sh", "-c", "true"])
        .unwrap()
        .command
    {
        Command::Lock { name, command, ttl } => {
            assert_eq!((name.as_str(), ttl), ("jobs", 5));
            assert_eq!(command, ["sh", "-c", "true"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(parse(&["lock", "jobs"]).is_err(), "a command is required");
    assert!(matches!(
        parse(&["elect", "e"]).unwrap().command,
        Command::Elect {
            value: None,
            ttl: 10,
            ..
        }
    ));
    assert!(matches!(
        parse(&["lease", "revoke", "0x1f"]).unwrap().command,
        Command::Lease {
            command: LeaseCommand::Revoke { id: 31 }
        }
    ));
    assert!(matches!(
        parse(&["put", "k", "v", "--lease", "9"]).unwrap().command,
        Command::Put { lease: Some(9), .. }
    ));
    assert!(matches!(
        parse(&["compact", "12"]).unwrap().command,
        Command::Compact { rev: 12 }
    ));
    for bad in [
        &["compact", "0"][..],
        &["lease", "grant", "1.5"],
        &["lease", "ttl", "x"],
        &["get", "k", "--rev", "abc"],
    ] {
        let e = parse(bad).unwrap_err().to_string();
        assert!(e.contains("give"), "{bad:?}: {e}");
    }
}

#[test]
fn renders_watch_events_and_leases() {
    use kvset_client::{EventType, LeaseGrant, LeaseStatus, WatchEvent};
    let put = WatchEvent {
        kind: EventType::Put,
        kv: KeyValue {
            key: b"k\xff".to_vec(),
            value: b"v".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            lease: 7,
        },
        prev_kv: None,
    };
    assert_eq!(
        render_watch_event(&put, false, OutputFormat::Json),
        "{\"create_revision\":2,\"key\":\"k\\\\xff\",\"key_hex\":\"6bff\",\"lease\":7,\
         \"mod_revision\":3,\"type\":\"PUT\",\"value\":\"v\",\"version\":2}\n"
    );
    assert_eq!(
        render_watch_event(&put, false, OutputFormat::Table),
        "PUT k\\xff v\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&render_watch_event(&put, true, OutputFormat::Json)).unwrap();
    assert_eq!(json["prev_kv"], serde_json::Value::Null);
    let grant = LeaseGrant {
        header: header(),
        id: 99,
        ttl: 10,
    };
    assert_eq!(render_lease_grant(&grant, OutputFormat::Table), "99\n");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&render_lease_grant(&grant, OutputFormat::Json))
            .unwrap(),
        serde_json::json!({"id": 99, "ttl": 10})
    );
    assert_eq!(
        render_keep_alive(99, 10, OutputFormat::Json),
        "{\"id\":99,\"ttl\":10}\n"
    );
    let leases = [LeaseStatus {
        id: 99,
        granted_ttl: 10,
        keys: 2,
    }];
    assert_eq!(
        render_leases(&leases, OutputFormat::Table),
        "ID  GRANTED_TTL  KEYS\n99  10s          2\n"
    );
}
