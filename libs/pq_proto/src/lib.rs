//! The libpq wire-protocol pieces both server and client sides need.
//!
//! This crate is laid out by the foundation issue; the issue that owns it fills it in.
