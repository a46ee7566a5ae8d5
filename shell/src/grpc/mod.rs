//! The gRPC edge: the `knhk.v1.Knhk` service over the engine, conversion between `knhk.v1`
//! messages and the engine's vocabulary, and the mapping of engine refusals to gRPC statuses
//! (the only place that knows gRPC codes). The server's life cycle (health, reflection,
//! shutdown) is in `crate::server`.

pub mod convert;
pub mod service;
pub mod status;

/// The gRPC service name of `knhk.v1.Knhk` (health reports it by this name).
pub const SERVICE_NAME: &str = "knhk.v1.Knhk";
