//! Shared helpers for the oracle tests: `pg_waldump` parsing (the clusters themselves are
//! `pg_oracle::TestPostgres`).

pub mod waldump;
