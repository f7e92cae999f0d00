//! Log sequence numbers.
//!
//! An [`Lsn`] is a byte position in the WAL stream, exactly as PostgreSQL's `XLogRecPtr`.
//! Its text form is PostgreSQL's `X/YYYYYYYY`: the high 32 bits and the low 32 bits in
//! upper-case hex. We print the low half zero-padded to eight digits (PostgreSQL itself
//! does not pad, and accepts both); we parse either form. Serde uses the text form, so
//! JSON APIs show the same LSN a `psql` user sees.
//!
//! Arithmetic is checked: an LSN that would wrap is a bug or corrupt input, never a value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// PostgreSQL's WAL page size (`XLOG_BLCKSZ`), fixed at 8 KiB in every build we support.
/// The one definition: it lives here because [`Lsn`]'s page arithmetic needs it and this
/// crate is below `postgres_ffi`, which re-exports it (as `usize`) for the WAL formats.
pub const XLOG_BLCKSZ: u64 = 8192;

/// PostgreSQL's `MAXALIGN`: WAL records start on 8-byte boundaries.
pub const MAXALIGN: u64 = 8;

/// A position in the WAL: a byte offset from the start of the (infinite) WAL stream.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

/// Text that is not an `X/Y` LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {input:?}: expected two hex numbers of at most 8 digits as X/Y")]
pub struct LsnParseError {
    /// The rejected text, so the caller can show it.
    pub input: String,
}

impl Lsn {
    /// `InvalidXLogRecPtr`: PostgreSQL's "no LSN".
    pub const INVALID: Lsn = Lsn(0);
    /// The largest LSN; used as "infinitely far" (e.g. sentinel page LSNs in WAL redo).
    pub const MAX: Lsn = Lsn(u64::MAX);

    /// Whether this is a real position (PostgreSQL's `XLogRecPtrIsInvalid` negated).
    pub fn is_valid(self) -> bool {
        self != Lsn::INVALID
    }

    /// `self + bytes`, or `None` on overflow.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }

    /// `self - bytes`, or `None` when it would go below zero.
    pub fn checked_sub(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_sub(bytes).map(Lsn)
    }

    /// The distance `self - other` in bytes, or `None` when `other` is ahead.
    pub fn checked_distance(self, other: Lsn) -> Option<u64> {
        self.0.checked_sub(other.0)
    }

    /// `self + bytes`, clamped at [`Lsn::MAX`].
    pub fn saturating_add(self, bytes: u64) -> Lsn {
        Lsn(self.0.saturating_add(bytes))
    }

    /// `self - bytes`, clamped at zero.
    pub fn saturating_sub(self, bytes: u64) -> Lsn {
        Lsn(self.0.saturating_sub(bytes))
    }

    /// The number of the WAL segment holding this LSN (`XLByteToSeg`).
    ///
    /// `seg_size` must be a power of two, as PostgreSQL requires of `wal_segment_size`.
    pub fn segment_number(self, seg_size: u64) -> u64 {
        debug_assert!(seg_size.is_power_of_two());
        self.0 / seg_size
    }

    /// Offset of this LSN within its segment (`XLogSegmentOffset`).
    pub fn segment_offset(self, seg_size: u64) -> u64 {
        debug_assert!(seg_size.is_power_of_two());
        self.0 % seg_size
    }

    /// The LSN at which this LSN's segment starts.
    pub fn segment_start(self, seg_size: u64) -> Lsn {
        Lsn(self.0 - self.segment_offset(seg_size))
    }

    /// The first LSN of segment `segno`, or `None` if it does not fit in 64 bits.
    pub fn from_segment(segno: u64, seg_size: u64) -> Option<Lsn> {
        segno.checked_mul(seg_size).map(Lsn)
    }

    /// Offset of this LSN within its 8 KiB WAL page.
    pub fn page_offset(self) -> u64 {
        self.0 % XLOG_BLCKSZ
    }

    /// The LSN at which this LSN's WAL page starts.
    pub fn page_start(self) -> Lsn {
        Lsn(self.0 - self.page_offset())
    }

    /// Bytes left on this LSN's WAL page (a full page when at a page start).
    pub fn remaining_in_page(self) -> u64 {
        XLOG_BLCKSZ - self.page_offset()
    }

    /// Whether the LSN is `MAXALIGN`ed, as every WAL record start is.
    pub fn is_aligned(self) -> bool {
        self.0.is_multiple_of(MAXALIGN)
    }

    /// Rounds up to the next `MAXALIGN` boundary (`MAXALIGN()` in PostgreSQL), or `None` on
    /// overflow.
    pub fn align(self) -> Option<Lsn> {
        self.0.checked_next_multiple_of(MAXALIGN).map(Lsn)
    }

    /// The high and low 32-bit halves, as PostgreSQL stores them in some structs.
    pub fn halves(self) -> (u32, u32) {
        ((self.0 >> 32) as u32, self.0 as u32)
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Lsn {
        Lsn(v)
    }
}

impl From<Lsn> for u64 {
    fn from(lsn: Lsn) -> u64 {
        lsn.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (hi, lo) = self.halves();
        write!(f, "{hi:X}/{lo:08X}")
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(s: &str) -> Result<Lsn, LsnParseError> {
        let err = || LsnParseError {
            input: s.to_string(),
        };
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let half = |part: &str| -> Result<u64, LsnParseError> {
            let valid =
                !part.is_empty() && part.len() <= 8 && part.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid {
                return Err(err());
            }
            u64::from_str_radix(part, 16).map_err(|_| err())
        };
        Ok(Lsn((half(hi)? << 32) | half(lo)?))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Lsn, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The OpenAPI pattern of an [`Lsn`]: exactly what `FromStr` accepts (two hex halves of
/// one to eight digits).
pub const LSN_PATTERN: &str = "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$";

impl utoipa::PartialSchema for Lsn {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("PostgreSQL LSN in X/Y hex form"))
            .pattern(Some(LSN_PATTERN))
            .examples([serde_json::json!("0/0169C3D8")])
            .into()
    }
}

impl utoipa::ToSchema for Lsn {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_print() {
        assert_eq!("0/16B3748".parse::<Lsn>().unwrap(), Lsn(0x16B3748));
        assert_eq!("1/0".parse::<Lsn>().unwrap(), Lsn(1 << 32));
        assert_eq!(
            "FFFFFFFF/FFFFFFFF".parse::<Lsn>().unwrap(),
            Lsn::MAX,
            "the largest LSN parses"
        );
        assert_eq!("abc/def".parse::<Lsn>().unwrap(), Lsn(0xABC_0000_0DEF));
        assert_eq!(Lsn(0x16B3748).to_string(), "0/016B3748");
        assert_eq!(Lsn(0x1_0000_0000).to_string(), "1/00000000");
        assert_eq!(Lsn::MAX.to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn parse_errors_name_the_input() {
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "0",
            "0x0/0",
            "1/2/3",
            "G/0",
            "0/123456789",
            "+1/0",
            " 0/0",
            "0/0 ",
            "-0/0",
        ] {
            let e = bad.parse::<Lsn>().unwrap_err();
            assert_eq!(e.input, bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn serde_uses_text_form() {
        let json = serde_json::to_string(&Lsn(0x2_0000_0010)).unwrap();
        assert_eq!(json, "\"2/00000010\"");
        assert_eq!(
            serde_json::from_str::<Lsn>(&json).unwrap(),
            Lsn(0x2_0000_0010)
        );
        let e = serde_json::from_str::<Lsn>("\"nope\"").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(
            serde_json::from_str::<Lsn>("17").is_err(),
            "numbers are not LSNs"
        );
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Lsn(10).checked_add(5), Some(Lsn(15)));
        assert_eq!(Lsn::MAX.checked_add(1), None);
        assert_eq!(Lsn(10).checked_sub(11), None);
        assert_eq!(Lsn(10).checked_distance(Lsn(4)), Some(6));
        assert_eq!(Lsn(4).checked_distance(Lsn(10)), None);
        assert_eq!(Lsn::MAX.saturating_add(7), Lsn::MAX);
        assert_eq!(Lsn(3).saturating_sub(7), Lsn(0));
        assert_eq!(Lsn(u64::MAX - 3).align(), None);
    }

    #[test]
    fn segment_and_page_helpers() {
        let seg = 16 * 1024 * 1024;
        let lsn = Lsn(3 * seg + 8192 * 2 + 40);
        assert_eq!(lsn.segment_number(seg), 3);
        assert_eq!(lsn.segment_offset(seg), 8192 * 2 + 40);
        assert_eq!(lsn.segment_start(seg), Lsn(3 * seg));
        assert_eq!(Lsn::from_segment(3, seg), Some(Lsn(3 * seg)));
        assert_eq!(Lsn::from_segment(u64::MAX, seg), None);
        assert_eq!(lsn.page_offset(), 40);
        assert_eq!(lsn.page_start(), Lsn(3 * seg + 8192 * 2));
        assert_eq!(lsn.remaining_in_page(), 8192 - 40);
        assert_eq!(Lsn(8192).remaining_in_page(), 8192);
        // A smaller segment size, as initdb --wal-segsize allows.
        assert_eq!(Lsn(5 * 1024 * 1024).segment_number(1024 * 1024), 5);
    }

    #[test]
    fn alignment() {
        assert!(Lsn(16).is_aligned());
        assert!(!Lsn(17).is_aligned());
        assert_eq!(Lsn(17).align(), Some(Lsn(24)));
        assert_eq!(Lsn(24).align(), Some(Lsn(24)));
        assert_eq!(Lsn(0).align(), Some(Lsn(0)));
    }

    proptest! {
        #[test]
        fn round_trip(v in any::<u64>()) {
            let lsn = Lsn(v);
            prop_assert_eq!(lsn.to_string().parse::<Lsn>().unwrap(), lsn);
            let unpadded = format!("{:X}/{:X}", v >> 32, v as u32);
            prop_assert_eq!(unpadded.parse::<Lsn>().unwrap(), lsn);
            let lower = unpadded.to_lowercase();
            prop_assert_eq!(lower.parse::<Lsn>().unwrap(), lsn);
        }
    }
}
