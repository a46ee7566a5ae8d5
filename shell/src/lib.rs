//! knhk-shell: the knhk server (binary `knhk`).
//!
//! gRPC with streaming over pinned kernel workers (DESIGN.md §5). The layers, in data-flow order:
//!
//! - [`server`]: tonic services (`knhk.v1.Knhk`, health, reflection), shutdown sequence.
//! - [`engine`]: workflows, the case directory, bulk batching, reply threads, watch events,
//!   the per-batch hook a journal plugs into.
//! - [`workers`]: pinned kernel worker threads, each owning a shard of cases, fed by SPSC rings.
//! - [`journal`]: the durable event log (group commit, recovery by replay, checkpoints).
//! - [`exec`]: the only calls into the kernel's case operations (beats of ≤ 8 lanes).
//! - [`workflow`]: names ↔ kernel indices, request data → registers.
//! - [`ids`]: the case id bit layout (partition, generation, slot).
//! - [`xes`]: IEEE 1849 export.
//! - [`http`], [`metrics`], [`telemetry`]: health probes and `/metrics` (axum, prometheus-client),
//!   worker counters and tick histograms, per-RPC spans, logs and OTLP export.
//! - [`client`]: the `knhk` subcommands that talk to a running server.
//!
//! Contract: no `unsafe` here; workers never allocate, lock or block; every refusal a client
//! can cause is a gRPC status with a message naming the offending element, never a panic.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod client;
pub mod engine;
pub mod error;
pub mod exec;
pub mod http;
pub mod ids;
pub mod journal;
pub mod metrics;
pub mod server;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod workers;
pub mod workflow;
pub mod xes;

/// The generated `knhk.v1` messages, server and client.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("knhk.v1");

    /// Encoded file descriptor set of `knhk.v1`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("knhk_v1_descriptor");
}

pub use engine::{BatchHook, Engine, EngineConfig};
pub use error::ShellError;
pub use server::{serve, ServerConfig};
