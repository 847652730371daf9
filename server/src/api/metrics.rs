//! The metrics endpoint: `GET /metrics` on the metrics port, OpenMetrics text.
//!
//! Each scrape asks the node for a fresh reading of its state and has the registry
//! (`crate::telemetry`) render it, so the gauges are never stale.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::node::Node;

/// Serves `GET /metrics` on `listener` until `stop` resolves.
pub async fn serve_metrics(
    node: Arc<Node>,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let node = node.clone();
            async move {
                let reading = node.state_reading().await;
                let body = node.telemetry().render(&reading);
                (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

/// The address a metrics listener bound, for logs.
pub fn describe(addr: SocketAddr) -> String {
    format!("http://{addr}/metrics")
}
