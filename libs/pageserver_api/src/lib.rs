//! Types shared by the pageserver, its clients and the control plane.
//!
//! This crate is laid out by the foundation issue; the issue that owns it fills it in.
