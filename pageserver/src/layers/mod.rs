//! Layers: where a timeline's values live.
//!
//! - [`in_memory`]: the open layer that ingest appends to, and frozen ones waiting to be
//!   written out.
//! - [`file_format`]: Strata's immutable layer file (delta or image), `docs/formats.md`.
//! - [`residence`]: a historic layer resident on the local disk or evicted to object
//!   storage, downloaded on demand.
//!
//! Invariants:
//! - a layer file is immutable once its name exists: it is written under a temporary name,
//!   fsynced, renamed and its directory fsynced, and never written again;
//! - a file's name says its key range and LSN range ([`LayerName`]); what the file's summary
//!   says must match, or the file is not used;
//! - a delta layer's LSN range is `[start, end)`: it holds values with `start <= lsn < end`;
//!   an image layer at `lsn` holds each key's whole value as of `lsn` (range `[lsn, lsn+1)`).

pub mod file_format;
pub mod in_memory;
pub mod residence;

use std::fmt;
use std::ops::Range;

use utils::Lsn;

use crate::keyspace::Key;

/// Delta or image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerKind {
    /// Values (images and records) over an LSN range.
    Delta,
    /// Whole values at one LSN.
    Image,
}

/// What a layer covers: the part of a layer that the layer map and file names deal in.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LayerName {
    /// Delta or image.
    pub kind: LayerKind,
    /// Keys covered (end exclusive).
    pub key_range: Range<Key>,
    /// LSNs covered (end exclusive); `[lsn, lsn+1)` for an image.
    pub lsn_range: Range<Lsn>,
}

/// A file name that is not a layer's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a layer file name: {0:?}")]
pub struct LayerNameError(pub String);

impl LayerName {
    /// A delta layer's name.
    pub fn delta(key_range: Range<Key>, lsn_range: Range<Lsn>) -> LayerName {
        LayerName {
            kind: LayerKind::Delta,
            key_range,
            lsn_range,
        }
    }

    /// An image layer's name.
    pub fn image(key_range: Range<Key>, lsn: Lsn) -> LayerName {
        LayerName {
            kind: LayerKind::Image,
            key_range,
            lsn_range: lsn..Lsn(lsn.0 + 1),
        }
    }

    /// The image layer's LSN (the delta layer's start).
    pub fn lsn(&self) -> Lsn {
        self.lsn_range.start
    }

    /// Parses [`LayerName`]'s `Display` form.
    pub fn parse(name: &str) -> Result<LayerName, LayerNameError> {
        let err = || LayerNameError(name.to_string());
        let (keys, lsns) = name.split_once("__").ok_or_else(err)?;
        let (ks, ke) = keys.split_once('-').ok_or_else(err)?;
        let key_range =
            Key::from_hex(ks).map_err(|_| err())?..Key::from_hex(ke).map_err(|_| err())?;
        let lsn = |s: &str| {
            if s.len() != 16 {
                return Err(err());
            }
            u64::from_str_radix(s, 16).map(Lsn).map_err(|_| err())
        };
        let parsed = match lsns.split_once('-') {
            Some((ls, le)) => LayerName::delta(key_range, lsn(ls)?..lsn(le)?),
            None => LayerName::image(key_range, lsn(lsns)?),
        };
        if parsed.key_range.start >= parsed.key_range.end
            || parsed.lsn_range.start >= parsed.lsn_range.end
        {
            return Err(err());
        }
        Ok(parsed)
    }
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}__", self.key_range.start, self.key_range.end)?;
        match self.kind {
            LayerKind::Delta => write!(
                f,
                "{:016X}-{:016X}",
                self.lsn_range.start.0, self.lsn_range.end.0
            ),
            LayerKind::Image => write!(f, "{:016X}", self.lsn_range.start.0),
        }
    }
}

impl fmt::Debug for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let d = LayerName::delta(Key::MIN..Key::MAX, Lsn(0x100)..Lsn(0x2000));
        let i = LayerName::image(Key::MIN..Key::MAX.next(), Lsn(0x55));
        for n in [d, i] {
            assert_eq!(LayerName::parse(&n.to_string()).unwrap(), n);
        }
        for bad in [
            "metadata",
            "00-00__0000000000000001",
            "ephemeral-1",
            &format!(
                "{}-{}__00000000000000FF-0000000000000001",
                Key::MIN,
                Key::MAX
            ),
        ] {
            assert!(LayerName::parse(bad).is_err(), "{bad}");
        }
    }
}
