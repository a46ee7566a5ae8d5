//! knhk-engine: the case directory over pinned kernel workers (DESIGN.md §5), in the engine's
//! own vocabulary. No network, no log format, no metrics library: the binary composes it with
//! an event log (through [`BatchHook`], the one outward seam: executed jobs go out, a refusal
//! comes back) and serves it over gRPC.
//!
//! - [`engine`]: the [`Engine`] facade: workflows, case ids, the case directory (mirror and
//!   history of every case), bulk batching, reply threads, lifecycle events and their
//!   broadcast, and the recovery API a log replays through.
//! - [`catalog`]: model bytes → a compiled, verified, sealed workflow.
//! - [`workflow`]: a registered workflow: names ↔ kernel indices, data → registers.
//! - [`command`]: the request and result vocabulary ([`Value`], [`BatchEvent`], ...).
//! - [`workers`]: pinned kernel worker threads, each owning a shard of cases, fed by SPSC rings.
//! - [`park`]: the park handshake (flag, fence, unpark) of workers and reply threads.
//! - [`exec`]: the only calls into the kernel's case operations (beats of ≤ 8 lanes).
//! - [`stats`]: what the workers count (plain atomics and per-worker tick histograms).
//! - [`ids`]: the case id bit layout.
//! - [`error`]: [`EngineError`], one variant per kind of refusal, each naming what was wrong.
//!
//! Contract: no `unsafe` here; workers never allocate, lock or block.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod archive;
pub mod catalog;
pub mod command;
pub mod engine;
pub mod error;
pub mod exec;
pub mod ids;
pub mod park;
pub mod stats;
#[cfg(feature = "testing")]
pub mod testing;
pub mod workers;
pub mod workflow;

pub use command::{BatchEvent, Data, EventKind, EventResult, TaskRef, Value};
pub use engine::{
    with_executed_note, BatchHook, Capacity, Engine, EngineConfig, ExecutedNote, Immediate,
};
pub use error::EngineError;
