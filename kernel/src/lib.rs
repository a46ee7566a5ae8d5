//! knhk-kernel: the knhk workflow kernel in safe Rust over libknhk.
//!
//! `#![no_std]` and no `alloc` by default. The firing rules live once, in C (libknhk); this
//! crate wraps them in safe types, adds the tick clock and the SPSC ring the shell uses.
//!
//! - [`Net`]: built through builder methods into caller storage, sealed once, then immutable
//!   and `Sync`.
//! - [`Case`]: 256 bytes, 64-byte aligned: marking, busy set, side words, registers, the
//!   slots of multiple-instance tasks ([`MiSpec`]).
//! - [`Net::beat`]: up to 8 (case, event) pairs in one call.
//! - [`Case::save`] / [`Case::restore`]: a case as [`CASE_BYTES`] checked bytes for a
//!   checkpoint; restore refuses bytes that do not fit the net.
//! - [`clock`]: TSC ticks; calibration behind feature `std`.
//! - [`ring`]: wait-free SPSC ring; `ring::channel` behind feature `std`.
//!
//! ```
//! use knhk_kernel::{Case, CaseState, Join, Net, Split};
//! let mut net = Box::new(Net::new());
//! let (i, o) = (net.add_condition().unwrap(), net.add_condition().unwrap());
//! let a = net.add_task(Join::Xor, Split::And).unwrap();
//! net.set_input(i).unwrap();
//! net.set_output(o).unwrap();
//! net.input_flow(i, a).unwrap();
//! net.output_flow(a, o, None, false).unwrap();
//! net.seal().unwrap();
//! let mut case = Case::new(&net).unwrap();
//! net.fire(&mut case, a).unwrap();
//! assert_eq!(net.state(&case), CaseState::Complete);
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

mod beat;
mod block;
mod case;
pub mod clock;
mod error;
mod guard;
mod mi;
mod net;
pub mod ring;

pub use beat::{Event, Op};
pub use block::{Block, BlockPath, NO_TASK};
pub use case::{flags, Case, CaseState, CASE_BYTES};
pub use error::{Element, Error, OrJoinCap, SealError};
pub use guard::{Guard, GuardOp, Operand, Term};
pub use mi::{InstanceState, Instances, MiSpec, MAX_MI_TASKS, MI_MAX_INSTANCES, MI_WINDOW};
pub use net::{Join, Net, Split, TaskView};

/// Raw bindings, for callers that need the C view.
pub use knhk_sys as sys;

/// Conditions per net.
pub const MAX_CONDITIONS: usize = knhk_sys::KNHK_MAX_CONDITIONS as usize;
/// Tasks per net.
pub const MAX_TASKS: usize = knhk_sys::KNHK_MAX_TASKS as usize;
/// Outgoing flows per task: 64, one per condition of the mask. A sealed net's widest split has
/// 63 (no flow enters the input condition), 62 when none of them is the output. AND splits
/// (a mask) and hot tasks keep their short path at any width; XOR and OR splits of more than
/// two flows take the general path, which reads a guard per flow. Incoming flows are a mask:
/// any number of the net's conditions.
pub const MAX_BRANCHES: usize = knhk_sys::KNHK_MAX_BRANCHES as usize;
/// Outgoing flows of all tasks of a net together (64 tasks x 8: every net that fitted when a
/// task held 8 flows still fits).
pub const MAX_FLOWS: usize = knhk_sys::KNHK_MAX_FLOWS as usize;
/// Data registers per case.
pub const REGISTERS: usize = knhk_sys::KNHK_REGISTERS as usize;
/// Events per beat.
pub const BEAT_LANES: usize = knhk_sys::KNHK_BEAT_LANES as usize;
/// Non-local OR-joins: states of one seal-time exploration (see [`Join::Or`]).
pub const ORJOIN_MAX_STATES: usize = knhk_sys::KNHK_ORJOIN_MAX_STATES as usize;
/// Non-local OR-joins: input conditions of one such join.
pub const ORJOIN_MAX_INPUTS: usize = knhk_sys::KNHK_ORJOIN_MAX_INPUTS as usize;
/// Non-local OR-joins: enabling keys stored for all of a net's non-local OR-joins.
pub const ORJOIN_MAX_KEYS: usize = knhk_sys::KNHK_ORJOIN_MAX_KEYS as usize;
/// Non-local OR-joins: states generated (duplicates included) by all of a net's seal-time
/// explorations together.
pub const ORJOIN_MAX_WORK: usize = knhk_sys::KNHK_ORJOIN_MAX_WORK as usize;

const _: () = assert!(core::mem::size_of::<Case>() == 256);
const _: () = assert!(core::mem::align_of::<Case>() == 64);
const _: () = assert!(core::mem::size_of::<Event>() == 16);
const _: () = assert!(core::mem::size_of::<Block>() == 896);
const _: () = assert!(core::mem::align_of::<Block>() == 64);
