//! The safekeeper: one acceptor of the quorum that makes WAL durable.
//!
//! This crate is laid out by the foundation issue; the issue that owns it fills it in.
