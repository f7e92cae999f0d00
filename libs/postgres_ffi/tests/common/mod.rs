//! Shared helpers for the oracle tests: a scratch PostgreSQL cluster and `pg_waldump` parsing.

pub mod pg;
pub mod waldump;
