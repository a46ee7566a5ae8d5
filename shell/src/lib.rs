//! knhk-shell: the knhk server (binary `knhk`).
//!
//! gRPC with streaming over pinned kernel workers (DESIGN.md §5). The layers, in data-flow order:
//!
//! - [`app`]: composes the engine with its event log (start, recover, stop).
//! - [`server`]: tonic services (`knhk.v1.Knhk`, health, reflection), shutdown sequence.
//! - [`grpc`]: `knhk.v1` ↔ engine vocabulary; engine refusals → gRPC statuses.
//! - `knhk-engine` (re-exported as [`engine`], [`workers`], [`workflow`], [`ids`]): workflows,
//!   the case directory, kernel workers, reply threads, watch events, the batch hook.
//! - [`journal`]: the durable event log (group commit, recovery by replay, checkpoints).
//! - [`xes`]: IEEE 1849 export.
//! - [`admin`] (HTTP probes, readiness, the bridge to grpc.health), [`metrics`] (the collector,
//!   the RPC layer), [`telemetry`]: health probes and `/metrics` (axum, prometheus-client),
//!   worker counters and tick histograms, per-RPC spans, logs and OTLP export.
//! - [`auth`]: bearer JWTs and client certificates → principals; roles per namespace; the
//!   RPC access table and the tower layer that enforces it.
//! - [`audit`]: the durable audit log (who did what, when, from where, with what result).
//! - [`tls`]: TLS and mTLS on the gRPC port (own accept loop, reload, CRLs), client TLS.
//! - [`client`]: the `knhk` subcommands that talk to a running server.
//! - [`cli`]: `knhk check`, `compile`, `replay`: the import library's reports printed, exit codes.
//!
//! Contract: no `unsafe` here; workers never allocate, lock or block; every refusal a client
//! can cause is a gRPC status with a message naming the offending element, never a panic.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod exporter;
pub mod grpc;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod xes;

// The engine's modules under their old paths, for the binary's modules and tests.
pub use knhk_engine::{engine, ids, workers, workflow};
/// The event log (crate `knhk-log`), under its old path.
pub use knhk_log as journal;

/// The generated `knhk.v1` messages, server and client.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("knhk.v1");

    /// Encoded file descriptor set of `knhk.v1`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("knhk_v1_descriptor");
}

pub use knhk_engine::{BatchHook, Engine, EngineConfig, EngineError};
pub use server::{serve, ServerConfig};
