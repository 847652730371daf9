//! Small helpers shared by the real-process server tests.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use kvset_proto::v1::{Consistency, GetRequest, PutRequest};
#[allow(unused_imports)]
pub use kvset_tests::testkit::{ProcessCluster, FAST_TIMING};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// Puts `key=value` through member `i`; panics on error.
pub async fn put(c: &ProcessCluster, i: usize, key: &str, value: &str) -> i64 {
    let resp = c
        .kv(i)
        .put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("put {key} via {i}: {e}"));
    resp.into_inner().header.expect("header").revision
}

/// Gets `key` from member `i`.
pub async fn get(
    c: &ProcessCluster,
    i: usize,
    key: &str,
    consistency: Consistency,
) -> Result<Option<String>, tonic::Status> {
    let resp = c
        .kv(i)
        .get(GetRequest {
            key: key.into(),
            consistency: consistency as i32,
            revision: 0,
        })
        .await?;
    Ok(resp
        .into_inner()
        .kv
        .map(|kv| String::from_utf8(kv.value).expect("utf8 value")))
}

/// Retries a put through member `i` until it succeeds; returns the time it took.
pub async fn put_until_ok(
    c: &ProcessCluster,
    i: usize,
    key: &str,
    value: &str,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let r = c
            .kv(i)
            .put(PutRequest {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            })
            .await;
        match r {
            Ok(_) => return started.elapsed(),
            Err(e) if started.elapsed() < timeout => {
                assert!(
                    matches!(
                        e.code(),
                        Code::Unavailable
                            | Code::DeadlineExceeded
                            | Code::Unknown
                            | Code::Cancelled
                    ),
                    "unexpected error: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("put {key} via {i} still failing after {timeout:?}: {e}"),
        }
    }
}

/// Waits until member `i` serves `key` = `value` on a stale read.
pub async fn wait_stale_value(
    c: &ProcessCluster,
    i: usize,
    key: &str,
    value: &str,
    timeout: Duration,
) {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(Some(v)) = get(c, i, key, Consistency::Stale).await {
            if v == value {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("member {i} never served {key}={value} within {timeout:?}");
}

/// Fetches `/metrics` from a member's metrics port.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to metrics port");
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the first sample line of `body` that starts with `series`.
pub fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("series {series} not found in:\n{body}"))
}
