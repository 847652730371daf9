//! Authorization against three real members: who may do what under a policy, and nothing
//! changed without one.
//!
//! - `every_identity_is_allowed_exactly_what_its_roles_grant`: members with TLS on the client
//!   port (client certificates optional), mutual TLS between them, a policy and a tokens file.
//!   Three identities (`cn:operator` by certificate: admin; `token:app` by bearer token: read
//!   and write under `app/`; `anonymous`: read everything) each try what their roles allow and
//!   what they do not: keys, ranges crossing the prefix's end, Txn compares and both branches,
//!   watches, leases, membership changes, backups, compaction; writes sent to a follower
//!   (forwarded over the peer port with the identity); identity metadata forged on the client
//!   port; an unknown token. A denied write leaves the revision unchanged. `kvsetctl` exits 5
//!   on a denial and answers `auth whoami` / `auth check`. A changed policy file is taken while
//!   the members run.
//! - `without_a_policy_nothing_changes_and_the_members_say_so`: a plain cluster says
//!   `authorization: off`, and every client may do everything, a token being ignored.
//!
//! Needs the binaries (`cargo build --bins`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kvset_client::{
    Client, Compare, Error, KeyRange, Pem, RangeOptions, TlsOptions, Txn, TxnOp, WatchOptions,
    WriteOptions,
};
use kvset_tests::pki::{write_pem as write, TestCa};
use kvset_tests::testkit::{run_kvsetctl, ProcessCluster, FAST_TIMING};
use sha2::{Digest, Sha256};

const POLICY: &str = "\
roles:
  app:      { read: [\"app/\"], write: [\"app/\"] }
  readonly: { read: [\"\"] }
  admin:    { read: [\"\"], write: [\"\"], admin: true }
bindings:
  cn:operator: [admin]
  token:app: [app]
  anonymous: [readonly]
";

const APP_TOKEN: &str = "app-s3cret-token";

struct Setup {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    member_cert: PathBuf,
    member_key: PathBuf,
    operator_cert: PathBuf,
    operator_key: PathBuf,
    policy: PathBuf,
    tokens: PathBuf,
}

fn setup(ip: IpAddr) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("kvset auth test CA");
    let (cert, key) = ca.leaf(ip);
    let (operator_cert, operator_key) = ca.client("operator");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("app {}\n", hex(&Sha256::digest(APP_TOKEN.as_bytes()))),
    )
    .unwrap();
    Setup {
        ca: write(dir.path(), "ca.pem", &ca.pem()),
        member_cert: write(dir.path(), "member.pem", &cert),
        member_key: write(dir.path(), "member.key", &key),
        operator_cert: write(dir.path(), "operator.pem", &operator_cert),
        operator_key: write(dir.path(), "operator.key", &operator_key),
        policy,
        tokens,
        _dir: dir,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cluster_ip() -> IpAddr {
    ProcessCluster::new(1, FAST_TIMING).members[0]
        .spec
        .client
        .ip()
}

fn client(endpoints: &[String], tls: TlsOptions, token: &str) -> Client {
    Client::builder()
        .endpoints(endpoints)
        .retry_deadline(Duration::from_secs(15))
        .tls(tls)
        .token(token)
        .build()
        .expect("valid client settings")
}

fn denied<T: std::fmt::Debug>(result: Result<T, Error>, says: &str) {
    match result {
        Err(Error::PermissionDenied(message)) => {
            assert!(message.contains(says), "{message:?} should say {says:?}")
        }
        other => panic!("expected PERMISSION_DENIED saying {says:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_identity_is_allowed_exactly_what_its_roles_grant() {
    let ip = cluster_ip();
    let s = setup(ip);
    let flags: Vec<String> = vec![
        format!("--tls-cert={}", s.member_cert.display()),
        format!("--tls-key={}", s.member_key.display()),
        format!("--tls-ca={}", s.ca.display()),
        format!("--tls-client-ca={}", s.ca.display()),
        "--tls-client-certs=optional".to_string(),
        format!("--peer-tls-cert={}", s.member_cert.display()),
        format!("--peer-tls-key={}", s.member_key.display()),
        format!("--peer-tls-ca={}", s.ca.display()),
        format!("--auth-policy={}", s.policy.display()),
        format!("--auth-tokens={}", s.tokens.display()),
    ];
    let mut args: Vec<&str> = FAST_TIMING.to_vec();
    args.extend(flags.iter().map(String::as_str));
    let mut c = ProcessCluster::new_on(ip, 3, &args);
    let endpoints = c.endpoints();
    let ca = || TlsOptions::new(Pem::file(&s.ca));
    let admin = client(
        &endpoints,
        ca().identity(Pem::file(&s.operator_cert), Pem::file(&s.operator_key)),
        "",
    );
    let app = client(&endpoints, ca(), APP_TOKEN);
    let anon = client(&endpoints, ca(), "");

    // Members start in ordinal order; readiness (health) and status are open to every caller.
    c.start_ordered_through(&anon).await;

    // The members say authorization is on, and who each caller is.
    let status = anon.status().await.unwrap();
    assert!(
        status.authorization.starts_with("on (policy "),
        "{}",
        status.authorization
    );
    let me = admin.who_am_i().await.unwrap();
    assert_eq!(
        (me.identity.as_str(), me.roles.clone()),
        ("cn:operator", vec!["admin".to_string()])
    );
    let me = app.who_am_i().await.unwrap();
    assert_eq!(
        (me.identity.as_str(), me.roles.clone()),
        ("token:app", vec!["app".to_string()])
    );
    let me = anon.who_am_i().await.unwrap();
    assert_eq!(
        (me.identity.as_str(), me.roles.clone()),
        ("anonymous", vec!["readonly".to_string()])
    );
    let check = app.auth_check(&KeyRange::prefix("app/")).await.unwrap();
    assert!(check.read && check.write && !check.admin, "{check:?}");
    let check = app
        .auth_check(&KeyRange::range("app/", "apq"))
        .await
        .unwrap();
    assert!(
        !check.read && !check.write,
        "a range crossing the prefix's end: {check:?}"
    );

    // token:app reads and writes under app/, and nothing else.
    app.put("app/1", "v").await.unwrap();
    assert_eq!(app.get("app/1").await.unwrap().unwrap().value, b"v");
    let before = admin.status().await.unwrap().revision;
    denied(
        app.put("other", "x").await,
        "token:app may not write key \"other\"",
    );
    denied(
        app.put("other", "x").await,
        "its roles (app) grant write on keys with prefix \"app/\"",
    );
    assert_eq!(
        admin.status().await.unwrap().revision,
        before,
        "a denied write wrote nothing"
    );
    assert!(admin.get("other").await.unwrap().is_none());
    denied(app.get("other").await, "may not read key \"other\"");
    let page = |keys: KeyRange| {
        let app = app.clone();
        async move { app.range_page(&keys, &RangeOptions::new(), b"").await }
    };
    assert_eq!(page(KeyRange::prefix("app/")).await.unwrap().kvs.len(), 1);
    denied(
        page(KeyRange::range("app/", "apq")).await,
        "may not read keys [\"app/\", \"apq\")",
    );
    denied(page(KeyRange::all()).await, "may not read every key");
    denied(
        app.delete_prefix("ap").await,
        "may not write keys with prefix \"ap\"",
    );

    // A Txn needs read on its compares and both branches' permissions.
    let compare_other = Txn::new()
        .when([Compare::value("other").equal("x")])
        .and_then([TxnOp::put("app/2", "v")]);
    denied(app.txn(compare_other).await, "may not read key \"other\"");
    let failure_writes_other = Txn::new()
        .when([Compare::value("app/1").equal("v")])
        .and_then([TxnOp::put("app/2", "v")])
        .or_else([TxnOp::put("other", "x")]);
    denied(
        app.txn(failure_writes_other).await,
        "may not write key \"other\"",
    );
    assert_eq!(
        admin.status().await.unwrap().revision,
        before,
        "denied txns wrote nothing"
    );
    let inside = Txn::new()
        .when([Compare::value("app/1").equal("v")])
        .and_then([TxnOp::put("app/2", "v")]);
    assert!(app.txn(inside).await.unwrap().succeeded);

    // anonymous reads everything and writes nothing; it cannot grant leases or watch past its
    // rights either.
    assert_eq!(anon.get("app/2").await.unwrap().unwrap().value, b"v");
    denied(
        anon.put("app/3", "x").await,
        "anonymous may not write key \"app/3\"",
    );
    denied(anon.grant(30).await, "anonymous may not grant a lease");

    // Watches need read on the whole range.
    denied(
        app.watch(WatchOptions::prefix("")).await,
        "may not read every key",
    );
    app.watch(WatchOptions::prefix("app/")).await.unwrap();

    // Leases: token:app may grant and use them under app/, not list every lease.
    let lease = app.grant(30).await.unwrap();
    app.put_with("app/leased", "v", &WriteOptions::default().lease(lease.id))
        .await
        .unwrap();
    denied(app.leases().await, "may not list every lease (admin)");
    assert!(!admin.leases().await.unwrap().is_empty());
    app.revoke(lease.id).await.unwrap();

    // Admin operations: membership, backups, compaction.
    denied(
        app.remove(2, true).await,
        "token:app may not remove a member (admin)",
    );
    denied(
        anon.compact(before).await,
        "anonymous may not compact the history (admin)",
    );
    let backup = tempfile::tempdir().unwrap();
    denied(
        app.save_snapshot(&backup.path().join("b.snap")).await,
        "may not take a backup snapshot (admin)",
    );
    admin
        .save_snapshot(&backup.path().join("b.snap"))
        .await
        .unwrap();
    assert_eq!(
        admin.members().await.unwrap().len(),
        3,
        "the membership is untouched"
    );

    // A write sent to a follower is authorized there and forwarded with its identity.
    let leader = admin
        .status()
        .await
        .unwrap()
        .leader_name
        .unwrap_or_default();
    let follower = (0..3)
        .find(|i| format!("kv-{i}") != leader)
        .expect("a member that does not lead");
    let on_follower = Client::builder()
        .endpoints([c.endpoint(follower)])
        .follow_leader(false)
        .retry_deadline(Duration::from_secs(15))
        .tls(ca())
        .token(APP_TOKEN)
        .build()
        .unwrap();
    on_follower.put("app/forwarded", "v").await.unwrap();
    assert_eq!(
        admin.get("app/forwarded").await.unwrap().unwrap().value,
        b"v"
    );
    denied(
        on_follower.put("other", "x").await,
        "token:app may not write key \"other\"",
    );

    // Identity metadata a client writes itself counts for nothing on the client port.
    let forged = forged_put(&c.endpoint(follower), &s.ca).await;
    assert_eq!(forged.code(), tonic::Code::PermissionDenied, "{forged:?}");
    assert!(
        forged.message().contains("anonymous may not write"),
        "{forged:?}"
    );
    assert!(admin.get("forged").await.unwrap().is_none());

    // A token that is not ours is not anonymous: it is refused.
    let stranger = client(&endpoints, ca(), "guessed");
    match stranger.get("app/1").await {
        Err(Error::Unauthenticated(m)) => assert!(m.contains("--auth-tokens"), "{m}"),
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }

    // kvsetctl: exit 5 on a denial, and the auth commands.
    let ctl = |extra: &[&str]| {
        let mut a = vec![
            format!("--cacert={}", s.ca.display()),
            format!("--token={APP_TOKEN}"),
        ];
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let (code, _, err) = run_kvsetctl(
        &endpoints.join(","),
        &ctl(&["put", "other", "x"]),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("permission denied: token:app may not write key \"other\""),
        "{err}"
    );
    let (code, out, err) = run_kvsetctl(
        &endpoints.join(","),
        &ctl(&["auth", "whoami"]),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("identity: token:app\nroles: app\nauthorization: on (policy "),
        "{out}"
    );
    let (code, out, err) = run_kvsetctl(
        &endpoints.join(","),
        &ctl(&["auth", "check", "app/x", "-o", "json"]),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"identity": "token:app", "key": "app/x", "read": true, "write": true, "admin": false})
    );

    // The metric counts denials by the permission missing.
    let metrics = http_get(c.members[follower].spec.metrics, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kvset_auth_denied_total{permission=\"write\"}")),
        "{metrics}"
    );

    // A changed policy is taken while the members run: anonymous may now write under pub/.
    std::fs::write(
        &s.policy,
        POLICY.replace(
            "readonly: { read: [\"\"] }",
            "readonly: { read: [\"\"], write: [\"pub/\"] }",
        ),
    )
    .unwrap();
    let started = Instant::now();
    loop {
        match anon.put("pub/x", "v").await {
            Ok(_) => break,
            Err(Error::PermissionDenied(_)) if started.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => panic!("the new policy was not taken within 20 s: {other:?}"),
        }
    }
    // A broken policy is ignored (the last good one stays), and the status says why.
    std::fs::write(&s.policy, "roles:\n  app: { read: [\"app/\"], wrte: [] }\n").unwrap();
    let started = Instant::now();
    loop {
        let status = anon.status().await.unwrap();
        if status.authorization.contains("the last reload failed") {
            assert!(
                status.authorization.contains("line 2"),
                "{}",
                status.authorization
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            status.authorization
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anon.put("pub/y", "v").await.unwrap();
}

/// A Put with the metadata a member adds when it forwards, claiming an admin identity, sent
/// over TLS without a client certificate or token: what any client could try.
async fn forged_put(endpoint: &str, ca: &std::path::Path) -> tonic::Status {
    let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(std::fs::read(ca).unwrap()),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{endpoint}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(kvset_client::proto::v1::PutRequest {
        key: b"forged".to_vec(),
        value: b"x".to_vec(),
        ..Default::default()
    });
    request.metadata_mut().insert_bin(
        "kvset-forwarded-identity-bin",
        tonic::metadata::MetadataValue::from_bytes(b"cn:operator"),
    );
    request
        .metadata_mut()
        .insert("kvset-forwarded", "1".parse().unwrap());
    kvset_client::proto::v1::kv_client::KvClient::new(channel)
        .put(request)
        .await
        .expect_err("a forged identity must not write")
}

/// `GET path` on a plain HTTP endpoint; the whole response.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_policy_nothing_changes_and_the_members_say_so() {
    let mut c = ProcessCluster::new(1, FAST_TIMING);
    c.start_all_ordered().await;
    let client = Client::builder()
        .endpoints(c.endpoints())
        .token("ignored-without-a-policy")
        .build()
        .unwrap();
    assert_eq!(client.status().await.unwrap().authorization, "off");
    let me = client.who_am_i().await.unwrap();
    assert_eq!(
        (
            me.identity.as_str(),
            me.roles.len(),
            me.authorization.as_str()
        ),
        ("anonymous", 0, "off")
    );
    client.put("anything", "v").await.unwrap();
    let check = client.auth_check(&KeyRange::all()).await.unwrap();
    assert!(check.read && check.write && check.admin, "{check:?}");
    assert!(
        c.log(0).contains("authorization=off"),
        "the start-up log says authorization is off"
    );
    let (code, out, err) = run_kvsetctl(
        &c.endpoints().join(","),
        &["status"],
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("authorization: off"), "{out}");
}
