//! Attachment generations: a number the control plane issues each time a tenant is
//! attached to a pageserver. Every object a pageserver writes to remote storage carries its
//! generation in the name, so a stale attachment (an older generation still running
//! somewhere) can never overwrite what the newer one wrote, and its deletions are refused
//! when the control plane validates them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A tenant's attachment generation (never 0 once issued: 0 is "none yet").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(pub u32);

impl Generation {
    /// The suffix remote object names carry: `-` and eight lowercase hex digits.
    pub fn suffix(self) -> String {
        format!("-{:08x}", self.0)
    }

    /// Parses the suffix of `name` (`<stem>-<8 hex>`), returning the stem and generation.
    pub fn split_suffix(name: &str) -> Option<(&str, Generation)> {
        let (stem, hex) = name.rsplit_once('-')?;
        if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let g = u32::from_str_radix(hex, 16).ok()?;
        Some((stem, Generation(g)))
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl FromStr for Generation {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_round_trips() {
        let g = Generation(0x1a2b);
        assert_eq!(g.suffix(), "-00001a2b");
        assert_eq!(
            Generation::split_suffix("index_part.json-00001a2b"),
            Some(("index_part.json", g))
        );
        assert_eq!(Generation::split_suffix("index_part.json-1a2b"), None);
        assert_eq!(Generation::split_suffix("index_part.json-0000zz2b"), None);
        assert_eq!(Generation::split_suffix("nosuffix"), None);
    }
}
