//! One object-storage API over local disk, S3 and Azure Blob.
//!
//! This crate is laid out by the foundation issue; the issue that owns it fills it in.
