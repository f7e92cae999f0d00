//! PostgreSQL 15 on-disk and WAL formats: pages, WAL records, pg_control, CRC-32C.
//!
//! This crate is laid out by the foundation issue; the issue that owns it fills it in.
