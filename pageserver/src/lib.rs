//! The pageserver: ingests WAL into layered storage and serves pages at any LSN.
//!
//! This crate is laid out by the foundation issue; the issue that owns it fills it in.
