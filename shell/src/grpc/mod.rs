//! The gRPC edge: the `knhk.v1.Knhk` service over the engine, conversion between `knhk.v1`
//! messages and the engine's vocabulary, and the mapping of engine refusals to gRPC statuses
//! (the only place that knows gRPC codes). The server's life cycle (health, reflection,
//! shutdown) is in `crate::server`.

pub mod codec;
pub mod convert;
pub mod service;
pub mod status;

/// The gRPC service name of `knhk.v1.Knhk` (health reports it by this name).
pub const SERVICE_NAME: &str = "knhk.v1.Knhk";

/// The gRPC health name of "new cases accepted": SERVING while the server is ready and a new
/// case has a slot (a free one, or a finished case to evict). A full engine still serves its
/// running cases (`SERVICE_NAME` stays SERVING), so this is for routing new cases, not for
/// taking the server out of service.
pub const NEW_CASES_SERVICE: &str = "knhk.v1.Knhk.CreateCase";
