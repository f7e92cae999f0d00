//! Types shared by the safekeeper and its clients, including proposer protocol messages.
//!
//! This crate is laid out by the foundation issue; the issue that owns it fills it in.
