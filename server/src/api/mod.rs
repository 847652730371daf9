//! The public gRPC surface of a member: `kvset.v1.KV`, `kvset.v1.Cluster`, and the standard
//! `grpc.health.v1.Health` service that Kubernetes probes call.

pub mod cluster;
pub mod error;
pub mod health;
pub mod kv;
