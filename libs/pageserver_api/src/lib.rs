//! Types shared by the pageserver, its clients and the control plane.

pub mod generation;
pub mod openapi;
pub mod reltag;
pub mod upcall;

pub use generation::Generation;
