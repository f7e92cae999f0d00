//! The synthetic-size model: pure arithmetic over a tenant's branch tree, no I/O.
//!
//! This crate is laid out by the foundation issue; the issue that owns it fills it in.
