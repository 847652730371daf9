//! The standard gRPC health check (`grpc.health.v1.Health/Check`) of each member.
//!
//! Every member serves `grpc.health.v1` on its client port with these service names (see
//! `server/src/api/health.rs`):
//!
//! - `readiness` ([`READINESS`]): `SERVING` when the member has joined, knows a leader and has
//!   applied close to its log; `NOT_SERVING` while it joins or catches up, when no leader is
//!   known, and from the moment a graceful shutdown begins;
//! - `liveness` ([`LIVENESS`]) and `""`: `SERVING` while the process answers at all.
//!
//! [`crate::Client::health_of`] asks one endpoint once (no retries: a health check reports the
//! state *now*, and a container probe retries by itself), bounded by the request timeout.
//! [`crate::Client::health_all`] asks every endpoint the client knows, at once. A member that
//! does not answer is [`HealthStatus::Unreachable`], with the reason in
//! [`EndpointHealth::error`]; the calls themselves never fail.
//!
//! This is what `kvsetctl health` prints, and what container health checks run.

use futures::future::join_all;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::client::Client;
use crate::cluster::probe_error;
use crate::endpoint::{EndpointAddr, Route};
use crate::error::{Error, Result};
use crate::retry::{self, CallSpec, Safety};

/// Health service name of the readiness probe.
pub const READINESS: &str = "readiness";
/// Health service name of the liveness probe.
pub const LIVENESS: &str = "liveness";

/// What one endpoint said about one health service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// `SERVING`.
    Serving,
    /// `NOT_SERVING`.
    NotServing,
    /// `UNKNOWN`: the server has not set a status for the service yet.
    Unknown,
    /// The server does not know the service name (`SERVICE_UNKNOWN`, or `NOT_FOUND`).
    ServiceUnknown,
    /// No answer: the connection failed or the check timed out.
    Unreachable,
    /// The endpoint answered the check with an error (for example `UNIMPLEMENTED`: not a
    /// kvset client port).
    Error,
}

impl HealthStatus {
    /// The name printed by `kvsetctl health`: the gRPC names (`SERVING`, `NOT_SERVING`,
    /// `UNKNOWN`, `SERVICE_UNKNOWN`), plus `UNREACHABLE` and `ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Serving => "SERVING",
            HealthStatus::NotServing => "NOT_SERVING",
            HealthStatus::Unknown => "UNKNOWN",
            HealthStatus::ServiceUnknown => "SERVICE_UNKNOWN",
            HealthStatus::Unreachable => "UNREACHABLE",
            HealthStatus::Error => "ERROR",
        }
    }

    fn from_pb(status: i32) -> HealthStatus {
        match ServingStatus::try_from(status) {
            Ok(ServingStatus::Serving) => HealthStatus::Serving,
            Ok(ServingStatus::NotServing) => HealthStatus::NotServing,
            Ok(ServingStatus::ServiceUnknown) => HealthStatus::ServiceUnknown,
            Ok(ServingStatus::Unknown) | Err(_) => HealthStatus::Unknown,
        }
    }
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One endpoint's answer to a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    /// The endpoint asked (`host:port`).
    pub endpoint: String,
    /// The health service name asked for.
    pub service: String,
    /// What it answered.
    pub status: HealthStatus,
    /// Why the check failed, when it did not get a status.
    pub error: Option<String>,
}

impl EndpointHealth {
    /// True when the endpoint answered `SERVING`.
    pub fn is_serving(&self) -> bool {
        self.status == HealthStatus::Serving
    }
}

impl crate::types::HasHeader for HealthCheckResponse {
    fn header(&self) -> Option<&kvset_proto::v1::ResponseHeader> {
        None
    }
}

impl Client {
    /// Asks the member at `endpoint` (`host:port`) for the health of `service` ([`READINESS`]
    /// or [`LIVENESS`]), once, within the request timeout. `Err` only for an invalid endpoint;
    /// a member that does not answer is [`HealthStatus::Unreachable`].
    pub async fn health_of(&self, endpoint: &str, service: &str) -> Result<EndpointHealth> {
        let addr = EndpointAddr::parse(endpoint)?;
        let authority = addr.authority().to_string();
        let id = self.registry().add(addr, false);
        let spec = CallSpec {
            op: "health",
            safety: Safety::Read,
            route: Route::Pinned(id),
            timeout: self.config().request_timeout,
            max_attempts: 1,
        };
        let message = HealthCheckRequest {
            service: service.to_string(),
        };
        let result = retry::run(self.registry(), self.config(), spec, |ch, t| {
            let mut request = tonic::Request::new(message.clone());
            request.set_timeout(t);
            async move { HealthClient::new(ch).check(request).await }
        })
        .await;
        let (status, error) = match result {
            Ok((resp, _)) => (HealthStatus::from_pb(resp.status), None),
            Err(Error::NotFound(_)) => (
                HealthStatus::ServiceUnknown,
                Some(format!(
                    "the member does not know the health service {service:?}"
                )),
            ),
            Err(e @ (Error::Unavailable { .. } | Error::Timeout { .. })) => {
                (HealthStatus::Unreachable, Some(probe_error(&e)))
            }
            Err(e) => (HealthStatus::Error, Some(e.to_string())),
        };
        Ok(EndpointHealth {
            endpoint: authority,
            service: service.to_string(),
            status,
            error,
        })
    }

    /// Checks `service` on every endpoint the client knows, at once, in the order of
    /// [`Client::endpoints`].
    pub async fn health_all(&self, service: &str) -> Vec<EndpointHealth> {
        self.health_of_each(&self.endpoints(), service).await
    }

    /// Checks `service` on each of `endpoints`, at once, in the given order. An invalid
    /// endpoint is reported as [`HealthStatus::Error`].
    pub async fn health_of_each(&self, endpoints: &[String], service: &str) -> Vec<EndpointHealth> {
        join_all(endpoints.iter().map(|endpoint| async move {
            self.health_of(endpoint, service)
                .await
                .unwrap_or_else(|e| EndpointHealth {
                    endpoint: endpoint.clone(),
                    service: service.to_string(),
                    status: HealthStatus::Error,
                    error: Some(e.to_string()),
                })
        }))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_grpc_serving_statuses() {
        assert_eq!(
            HealthStatus::from_pb(ServingStatus::Serving as i32),
            HealthStatus::Serving
        );
        assert_eq!(
            HealthStatus::from_pb(ServingStatus::NotServing as i32),
            HealthStatus::NotServing
        );
        assert_eq!(
            HealthStatus::from_pb(ServingStatus::ServiceUnknown as i32),
            HealthStatus::ServiceUnknown
        );
        assert_eq!(HealthStatus::from_pb(99), HealthStatus::Unknown);
        assert_eq!(HealthStatus::NotServing.to_string(), "NOT_SERVING");
    }
}
