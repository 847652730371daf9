//! The SDK and `kvsetctl` over TLS against three real members, with certificates generated on
//! the fly (a throwaway CA, one member certificate naming the cluster's 127.0.0.x address, a
//! client certificate).
//!
//! - `sdk_and_kvsetctl_use_tls_to_every_member`: members serve TLS on the client port and
//!   mutual TLS between themselves. The SDK with the CA writes and reads, follows the leader from
//!   a follower, and reads from a member it only learned from the membership (a plain
//!   `host:port`, dialed with the same TLS settings). Without the CA, or with another CA, it
//!   fails with an error that says what is wrong. `kvsetctl --cacert` runs put, get, status and
//!   health.
//! - `client_certificates_are_required_when_members_ask_for_them`: members also run with
//!   `--tls-client-ca`. The SDK without a client certificate is refused at the handshake (the
//!   error says to pass `--cert` and `--key`); with one it works; so does `kvsetctl --cert --key`.
//!
//! Needs the binaries (`cargo build --bins`). The test kit's own helpers (`wait_ready`,
//! `status`) speak plain text, so readiness is polled through the SDK here: the members start in
//! ordinal order, each once the previous one reports ready over TLS.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kvset_client::{Client, Error, Pem, ReadOptions, TlsOptions};
use kvset_tests::pki::{write_pem as write, TestCa as Ca};
use kvset_tests::testkit::{kvsetctl_binary, run_kvsetctl, ProcessCluster, FAST_TIMING};

/// The PKI of one test: CA, member certificate for the cluster's address, client certificate.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    member_cert: PathBuf,
    member_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    /// A CA that signed none of these.
    rogue_ca: PathBuf,
}

fn pki(ip: IpAddr) -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("kvset test CA");
    let (cert, key) = ca.leaf(ip);
    let (client_cert, client_key) = ca.client("kvsetctl");
    Pki {
        ca: write(dir.path(), "ca.pem", &ca.pem()),
        member_cert: write(dir.path(), "member.pem", &cert),
        member_key: write(dir.path(), "member.key", &key),
        client_cert: write(dir.path(), "client.pem", &client_cert),
        client_key: write(dir.path(), "client.key", &client_key),
        rogue_ca: write(dir.path(), "rogue-ca.pem", &Ca::new("someone else").pem()),
        _dir: dir,
    }
}

/// A loopback address of its own for the cluster, fixed before the certificates naming it are
/// written.
fn cluster_ip() -> IpAddr {
    let probe = ProcessCluster::new(1, FAST_TIMING);
    probe.members[0].spec.client.ip()
}

/// Three members with TLS on the client port and mutual TLS between members, plus
/// `--tls-client-ca` when `require_client_certs`. Not started; see `ProcessCluster::start_ordered_through`.
fn tls_cluster(ip: IpAddr, pki: &Pki, require_client_certs: bool) -> ProcessCluster {
    let mut flags: Vec<String> = vec![
        format!("--tls-cert={}", pki.member_cert.display()),
        format!("--tls-key={}", pki.member_key.display()),
        format!("--tls-ca={}", pki.ca.display()),
        format!("--peer-tls-cert={}", pki.member_cert.display()),
        format!("--peer-tls-key={}", pki.member_key.display()),
        format!("--peer-tls-ca={}", pki.ca.display()),
    ];
    if require_client_certs {
        flags.push(format!("--tls-client-ca={}", pki.ca.display()));
    }
    let mut args: Vec<&str> = FAST_TIMING.to_vec();
    args.extend(flags.iter().map(String::as_str));
    ProcessCluster::new_on(ip, 3, &args)
}

fn tls_client(endpoints: &[String], tls: TlsOptions) -> Client {
    Client::builder()
        .endpoints(endpoints)
        .retry_deadline(Duration::from_secs(20))
        .tls(tls)
        .build()
        .expect("valid endpoints and TLS files")
}

/// A client that gives up quickly, for the failure cases.
fn quick_client(endpoints: &[String], tls: Option<TlsOptions>) -> Result<Client, Error> {
    Client::builder()
        .endpoints(endpoints)
        .retry_deadline(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1))
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .tls_options(tls)
        .build()
}

/// Runs kvsetctl against the cluster's endpoints; returns (exit code, stdout, stderr).
async fn kvsetctl(c: &ProcessCluster, args: &[String]) -> (i32, String, String) {
    run_kvsetctl(&c.endpoints().join(","), args, Duration::from_secs(60)).await
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_and_kvsetctl_use_tls_to_every_member() {
    let ip = cluster_ip();
    let pki = pki(ip);
    let mut c = tls_cluster(ip, &pki, false);
    let client = tls_client(&c.endpoints(), TlsOptions::new(Pem::file(&pki.ca)));
    assert!(client.uses_tls());
    c.start_ordered_through(&client).await;

    // Writes and reads over TLS.
    let put = client.put("secret", "v1").await.unwrap();
    let kv = client.get("secret").await.unwrap().expect("the key exists");
    assert_eq!(kv.value, b"v1");
    assert_eq!(kv.mod_revision, put.header.revision);

    // A client that knows only kv-2, with the CA given as PEM bytes and the endpoint as
    // https://: it writes through the leader, and reads from kv-1, an address it learned from
    // the membership as plain host:port.
    let ca_pem = std::fs::read(&pki.ca).unwrap();
    let one = tls_client(
        &[format!("https://{}", c.endpoint(2))],
        TlsOptions::new(Pem::bytes(ca_pem)),
    );
    one.put("secret", "v2").await.unwrap();
    let members = one.members().await.unwrap();
    assert_eq!(members.len(), 3);
    let mut seen = None;
    for _ in 0..100 {
        let kv = one
            .get_with("secret", &ReadOptions::stale().on_member("kv-1"))
            .await
            .unwrap();
        if kv.as_ref().is_some_and(|kv| kv.value == b"v2") {
            seen = kv;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.is_some(),
        "kv-1, learned from the membership, serves over TLS"
    );
    assert!(one.endpoints().contains(&c.endpoint(1)));

    // Without TLS settings: an https:// endpoint is refused before anything is sent...
    let e = quick_client(&[format!("https://{}", c.endpoint(0))], None).unwrap_err();
    assert!(matches!(e, Error::InvalidEndpoint { .. }), "{e:?}");
    assert!(
        e.to_string().contains("https endpoint needs --cacert"),
        "{e}"
    );
    // ...and plain text to a TLS port gets no answer.
    let plain = quick_client(&c.endpoints(), None).unwrap();
    let e = plain.get("secret").await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    eprintln!("plain text against TLS members: {e}");
    assert!(
        e.to_string().contains("--cacert"),
        "the error suggests TLS: {e}"
    );
    // With a CA that did not sign the members' certificates: the handshake fails, and the
    // error says why.
    let rogue = quick_client(
        &c.endpoints(),
        Some(TlsOptions::new(Pem::file(&pki.rogue_ca))),
    )
    .unwrap();
    let e = rogue.get("secret").await.unwrap_err();
    eprintln!("another CA: {e}");
    assert!(e.is_unavailable(), "{e:?}");
    assert!(e.to_string().contains("TLS handshake failed"), "{e}");
    assert!(e.to_string().contains("--cacert"), "{e}");
    assert!(!e.may_have_applied());

    // kvsetctl --cacert, for every command.
    let ca = pki.ca.display().to_string();
    let (code, out, err) = kvsetctl(&c, &args(&["--cacert", &ca, "put", "cli", "hello"])).await;
    assert_eq!((code, out.as_str()), (0, "OK\n"), "{err}");
    let (code, out, err) = kvsetctl(&c, &args(&["--cacert", &ca, "get", "cli"])).await;
    assert_eq!((code, out.as_str()), (0, "hello\n"), "{err}");
    let (code, out, err) = kvsetctl(&c, &args(&["status", "--cacert", &ca])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.matches(" true").count(),
        3,
        "three healthy members:\n{out}"
    );
    assert!(out.contains("leader"), "{out}");
    let (code, out, err) = kvsetctl(&c, &args(&["--cacert", &ca, "health"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches("SERVING").count(), 3, "{out}");
    // The environment variable works like the flag.
    let mut cmd_env = Command::new(kvsetctl_binary());
    let out = cmd_env
        .args(["get", "cli"])
        .env("KVSET_ENDPOINTS", c.endpoints().join(","))
        .env("KVSET_CACERT", &pki.ca)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");

    // kvsetctl without --cacert: https:// needs it (exit 2); plain text finds nobody (exit 3).
    let https = c
        .endpoints()
        .iter()
        .map(|e| format!("https://{e}"))
        .collect::<Vec<_>>()
        .join(",");
    let (code, _, err) = kvsetctl(&c, &args(&["--endpoints", &https, "get", "cli"])).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("https endpoint needs --cacert"), "{err}");
    let (code, _, err) = kvsetctl(&c, &args(&["--timeout", "2s", "get", "cli"])).await;
    assert_eq!(code, 3, "{err}");
    eprintln!("kvsetctl without --cacert: {err}");
    // A CA file that does not exist: exit 2, naming the file.
    let (code, _, err) = kvsetctl(&c, &args(&["--cacert", "/nonexistent/ca.pem", "status"])).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_members_ask_for_them() {
    let ip = cluster_ip();
    let pki = pki(ip);
    let mut c = tls_cluster(ip, &pki, true);
    let with_identity = TlsOptions::new(Pem::file(&pki.ca))
        .identity(Pem::file(&pki.client_cert), Pem::file(&pki.client_key));
    let client = tls_client(&c.endpoints(), with_identity);
    c.start_ordered_through(&client).await;

    // With a client certificate: writes and reads work.
    client.put("mtls", "yes").await.unwrap();
    assert_eq!(client.get("mtls").await.unwrap().unwrap().value, b"yes");

    // Without one: refused at the handshake, and the error says what to pass. (The write may
    // be reported as possibly applied: some attempts end in a plain "broken pipe", which on its
    // own cannot tell a refused handshake from a member that died mid-request. It was not.)
    let anonymous =
        quick_client(&c.endpoints(), Some(TlsOptions::new(Pem::file(&pki.ca)))).unwrap();
    let e = anonymous.put("mtls", "no").await.unwrap_err();
    eprintln!("no client certificate: {e}");
    assert!(e.is_unavailable(), "{e:?}");
    assert!(e.to_string().contains("--cert and --key"), "{e}");
    let e = anonymous.get("mtls").await.unwrap_err();
    assert!(e.to_string().contains("--cert and --key"), "{e}");
    assert_eq!(client.get("mtls").await.unwrap().unwrap().value, b"yes");

    // kvsetctl with --cert and --key works; without them it is refused (exit 3).
    let ca = pki.ca.display().to_string();
    let cert = pki.client_cert.display().to_string();
    let key = pki.client_key.display().to_string();
    let mtls = |rest: &[&str]| {
        let mut a = args(&["--cacert", &ca, "--cert", &cert, "--key", &key]);
        a.extend(args(rest));
        a
    };
    let (code, out, err) = kvsetctl(&c, &mtls(&["put", "cli", "mutual"])).await;
    assert_eq!((code, out.as_str()), (0, "OK\n"), "{err}");
    let (code, out, err) = kvsetctl(&c, &mtls(&["get", "cli"])).await;
    assert_eq!((code, out.as_str()), (0, "mutual\n"), "{err}");
    let (code, out, err) = kvsetctl(&c, &mtls(&["status"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.matches(" true").count(), 3, "{out}");
    let (code, _, err) = kvsetctl(
        &c,
        &args(&["--cacert", &ca, "--timeout", "2s", "get", "cli"]),
    )
    .await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("--cert and --key"), "{err}");
    // --cert without --key is a usage error.
    let (code, _, err) =
        kvsetctl(&c, &args(&["--cacert", &ca, "--cert", &cert, "get", "cli"])).await;
    assert_eq!(code, 2, "{err}");
}
