//! `grpc.health.v1` for Kubernetes probes.
//!
//! Three service names, so each probe asks exactly what it means:
//! - `""` and `liveness`: SERVING while the process answers (a wedged process fails the probe by
//!   not answering at all), NOT_SERVING from the moment its storage failed (the process is about
//!   to exit, see `node::failstop`; the probe must not call it alive meanwhile);
//! - `readiness`: SERVING only when [`Node::is_ready`] holds (joined, knows a leader, applied
//!   close to its log — or kv-0 waiting to be re-admitted after losing its volume, which the log
//!   line says), refreshed every 250 ms; NOT_SERVING from the moment shutdown begins so
//!   the Service stops routing clients here before the process leaves;
//! - `kvset.v1.KV`: mirrors `readiness`, for tools that probe by service name.

use std::sync::Arc;
use std::time::Duration;

use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::node::Node;

/// Health service name for the liveness probe.
pub const LIVENESS: &str = "liveness";
/// Health service name for the readiness (and startup) probe.
pub const READINESS: &str = "readiness";
const KV_SERVICE: &str = "kvset.v1.KV";

/// Keeps the reporter's statuses in step with the node until shutdown completes.
pub async fn report_health(node: Arc<Node>, reporter: HealthReporter) {
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    let mut last = None;
    let mut alive = true;
    loop {
        if alive && node.failure().is_some() {
            alive = false;
            reporter
                .set_service_status(LIVENESS, ServingStatus::NotServing)
                .await;
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
        }
        let ready = node.is_ready();
        if last != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status(READINESS, status).await;
            reporter.set_service_status(KV_SERVICE, status).await;
            match node.awaiting_readmission() {
                Some(cluster) => tracing::info!(
                    ready,
                    waiting_for = %format!("the existing cluster {cluster} to re-admit this member (it lost its volume); ready only so that the other members get started, serving no data"),
                    "readiness changed"
                ),
                None => tracing::info!(ready, "readiness changed"),
            }
            last = Some(ready);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
