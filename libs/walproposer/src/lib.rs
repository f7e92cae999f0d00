//! The proposer side of the safekeeper consensus protocol, and the walproposer sidecar.
//!
//! This crate is laid out by the foundation issue; the issue that owns it fills it in.
