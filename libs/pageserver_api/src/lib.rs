//! Types shared by the pageserver, its clients and the control plane.

pub mod reltag;
