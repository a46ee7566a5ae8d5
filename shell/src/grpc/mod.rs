//! The gRPC edge: conversion between `knhk.v1` messages and the engine's vocabulary, and the
//! mapping of engine refusals to gRPC statuses. The service itself is in [`crate::server`].

pub mod convert;
pub mod status;
