//! TLS for clients and mutual TLS between members, with certificates generated on the fly.

mod common;

use std::time::Duration;

use common::*;
use kvset_proto::raft::raft_client::RaftClient;
use kvset_proto::raft::RaftMessage;
use kvset_proto::v1::kv_client::KvClient;
use kvset_proto::v1::{Consistency, GetRequest, PutRequest};
use kvset_tests::pki::{write_pem as write, TestCa as Ca};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

async fn tls_channel(
    addr: &str,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A TLS channel to a member that may still be starting (connection refused until it listens).
async fn tls_channel_when_up(endpoint: &str, ca_pem: &str) -> Channel {
    for _ in 0..300 {
        if let Ok(ch) = tls_channel(endpoint, ca_pem, None).await {
            return ch;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{endpoint} did not accept a TLS connection within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_use_tls_members_use_mutual_tls_and_strangers_are_refused() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("kvset test CA");
    let rogue_ca = Ca::new("someone else");
    let ca_file = write(pki.path(), "ca.pem", &ca.pem());

    let probe = ProcessCluster::new(3, FAST_TIMING);
    let ip = probe.members[0].spec.client.ip();
    drop(probe);
    let (cert, key) = ca.leaf(ip);
    let cert_file = write(pki.path(), "member.pem", &cert);
    let key_file = write(pki.path(), "member.key", &key);
    let flags: Vec<String> = vec![
        format!("--tls-cert={}", cert_file.display()),
        format!("--tls-key={}", key_file.display()),
        format!("--tls-ca={}", ca_file.display()),
        format!("--peer-tls-cert={}", cert_file.display()),
        format!("--peer-tls-key={}", key_file.display()),
        format!("--peer-tls-ca={}", ca_file.display()),
    ];
    let mut args: Vec<&str> = FAST_TIMING.to_vec();
    args.extend(flags.iter().map(String::as_str));
    let mut c = ProcessCluster::new_on(ip, 3, &args);
    for i in 0..3 {
        c.start(i);
    }

    // Members reach each other over mutual TLS: the cluster forms, writes replicate.
    let ca_pem = ca.pem();
    let mut kv0 = KvClient::new(tls_channel_when_up(&c.endpoint(0), &ca_pem).await);
    let mut ok = false;
    for _ in 0..300 {
        if kv0
            .put(PutRequest {
                key: b"secret".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ok,
        "writes work over TLS; logs in {}",
        c.dir.path().display()
    );
    // kv-2 may still be starting: the write above needed only kv-0 and kv-1.
    let mut kv2 = KvClient::new(tls_channel_when_up(&c.endpoint(2), &ca_pem).await);
    let mut seen = false;
    for _ in 0..300 {
        let r = kv2
            .get(GetRequest {
                key: b"secret".to_vec(),
                consistency: Consistency::Linearizable as i32,
                revision: 0,
            })
            .await;
        if matches!(r, Ok(ref r) if r.get_ref().kv.is_some()) {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "kv-2 joined over mutual TLS and serves the write");

    // A plain-text client gets nowhere on the client port.
    assert!(
        put_plain(&c.endpoint(0)).await.is_err(),
        "plain text is refused on a TLS port"
    );

    // On the peer port, a member certificate reaches the Raft service (which then refuses the
    // empty cluster id: PERMISSION_DENIED, a service-level answer)...
    let peer = c.members[0].spec.peer.to_string();
    let msg = RaftMessage {
        cluster_id: String::new(),
        from: 9,
        payload: vec![],
    };
    let member = ca.leaf(ip);
    let ch = tls_channel(&peer, &ca_pem, Some(&member))
        .await
        .expect("a member certificate connects");
    let reached = RaftClient::new(ch).vote(msg.clone()).await.unwrap_err();
    assert_eq!(reached.code(), Code::PermissionDenied, "{reached}");
    // ...while no certificate, or one from another CA, is refused at the handshake and never
    // reaches the service.
    let rogue = rogue_ca.leaf(ip);
    for (what, identity) in [
        ("no certificate", None),
        ("another CA's certificate", Some(&rogue)),
    ] {
        if let Ok(ch) = tls_channel(&peer, &ca_pem, identity).await {
            let e = RaftClient::new(ch).vote(msg.clone()).await.unwrap_err();
            assert!(
                !matches!(
                    e.code(),
                    Code::PermissionDenied | Code::FailedPrecondition | Code::InvalidArgument
                ),
                "{what}: the request reached the Raft service: {e}"
            );
        }
    }
    let log = c.log(0);
    assert!(
        log.contains("TLS handshake refused"),
        "refusals are logged:\n{log}"
    );
}

async fn put_plain(addr: &str) -> Result<(), String> {
    let ch = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    KvClient::new(ch)
        .put(PutRequest {
            key: b"x".to_vec(),
            value: b"y".to_vec(),
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_are_picked_up_without_a_restart() {
    let pki = tempfile::tempdir().unwrap();
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let probe = ProcessCluster::new(1, FAST_TIMING);
    let ip = probe.members[0].spec.client.ip();
    drop(probe);
    let (cert, key) = old_ca.leaf(ip);
    let cert_file = write(pki.path(), "member.pem", &cert);
    let key_file = write(pki.path(), "member.key", &key);
    let ca_file = write(pki.path(), "ca.pem", &old_ca.pem());
    let health = std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap();
    let flags = [
        format!("--tls-cert={}", cert_file.display()),
        format!("--tls-key={}", key_file.display()),
        format!("--tls-ca={}", ca_file.display()),
        format!("--health-listen={health}"),
    ];
    let mut args: Vec<&str> = FAST_TIMING.to_vec();
    args.extend(flags.iter().map(String::as_str));
    let mut c = ProcessCluster::new_on(ip, 1, &args);
    c.start(0);
    let endpoint = c.endpoint(0);
    let mut connected = false;
    for _ in 0..100 {
        if tls_channel(&endpoint, &old_ca.pem(), None).await.is_ok() {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(connected, "serves the old certificate");
    assert!(
        tls_channel(&endpoint, &new_ca.pem(), None).await.is_err(),
        "not yet the new one"
    );

    // Kubernetes probes cannot speak TLS: the plain-text health listener answers them.
    let ch = Endpoint::from_shared(format!("http://{health}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut hc = tonic_health::pb::health_client::HealthClient::new(ch);
    let mut serving = false;
    for _ in 0..100 {
        let req = tonic_health::pb::HealthCheckRequest {
            service: "readiness".into(),
        };
        if let Ok(r) = hc.check(req).await {
            if r.into_inner().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                serving = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        serving,
        "readiness is served in plain text on --health-listen"
    );

    // Rotate in place, as a Secret update does (key first, then the certificate).
    let (cert, key) = new_ca.leaf(ip);
    std::fs::write(&key_file, key).unwrap();
    std::fs::write(&cert_file, cert).unwrap();
    let mut rotated = false;
    for _ in 0..150 {
        if tls_channel(&endpoint, &new_ca.pem(), None).await.is_ok() {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "new connections get the rotated certificate");
    assert!(c.log(0).contains("reloaded TLS certificates"));
}
